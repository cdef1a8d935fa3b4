//! What several test binaries of the `fleetsim` binary share: a `fleetsim serve` of their own
//! on 127.0.0.1. Each test file that uses it declares `mod support;`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

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
