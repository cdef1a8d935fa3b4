//! What several test binaries of the `fleetsim` binary share: a `fleetsim serve` of their own
//! on 127.0.0.1, a scratch directory, the binary's output. Each test file that uses it
//! declares `mod support;`.

// Each test binary compiles this module on its own and uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_fleetsim");

/// `fleetsim serve` on 127.0.0.1 (port 0) with PAT `pat`. Dropping it kills the process
/// (SIGKILL: a crash, nothing is flushed).
pub struct Serve {
    child: Child,
    /// The collection URL it printed, without a trailing slash.
    pub url: String,
}

impl Serve {
    pub fn start(pat: &str) -> Serve {
        Serve::start_with(pat, &["--listen", "127.0.0.1:0"])
    }

    /// `fleetsim serve ARGS` with PAT `pat` (ARGS name the address to listen on).
    pub fn start_with(pat: &str, args: &[&str]) -> Serve {
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(args)
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

/// A free port on 127.0.0.1 (bound and released: for a server that must come back on the same
/// address after a restart).
pub fn free_port() -> u16 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    socket.local_addr().expect("bound address").port()
}

/// `GET {base}{path}` with `pat` as Basic credentials: the status and the body.
pub fn get(base: &str, path: &str, pat: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let host = base.trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    let mut s = std::net::TcpStream::connect(host).expect("server accepts");
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("read timeout");
    let auth = base64(format!("fleetsim:{pat}").as_bytes());
    let prefix = base.trim_start_matches("http://").trim_start_matches(host);
    write!(
        s,
        "GET {prefix}{path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n"
    )
    .expect("request sent");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("answer read");
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// Standard base64 with padding (for a Basic credential).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
