//! What several test binaries of the `fleetsim` binary share: a `fleetsim serve` of their own
//! on 127.0.0.1, a scratch directory, the binary's output. Each test file that uses it
//! declares `mod support;`.

// Each test binary compiles this module on its own and uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_fleetsim");

/// `fleetsim serve` on 127.0.0.1 (port 0) with PAT `pat`. Dropping it kills the process.
pub struct Serve {
    child: Child,
    /// The collection URL it printed, without a trailing slash.
    pub url: String,
}

impl Serve {
    pub fn start(pat: &str) -> Serve {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("FLEETSIM_PAT", pat)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("fleetsim serve starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = lines
            .find_map(|l| {
                l.ok()?
                    .strip_prefix("fleetsim: emulator listening on ")
                    .map(|u| u.trim_end_matches('/').to_string())
            })
            .expect("serve prints its URL");
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Serve { child, url }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private scratch directory per test: removed when the test passes, kept for inspection
/// when it fails.
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// `<tmp>/fleetsim-{suite}-{pid}-{name}`, empty.
pub fn scratch(suite: &str, name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("fleetsim-{suite}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    Scratch(dir)
}

/// Runs the binary to the end.
pub fn fleetsim(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("the binary runs")
}

/// An output for an assertion message.
pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
