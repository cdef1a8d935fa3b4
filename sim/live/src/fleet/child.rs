//! The embedded emulator in a child process, for fleets whose connections do not fit in one
//! process's descriptor limit next to the emulator's ends of the same connections.
//!
//! Why: a loopback connection costs a descriptor at each end. With the emulator in the fleet's
//! process, 10,000 agents hold ~40,000 descriptors; with a hard limit of 20,000 that cannot
//! work, and no amount of connection frugality fixes it. In a second process each side needs
//! half. The child is this same program (`std::env::current_exe()`) running
//! `serve --listen 127.0.0.1:0 --config FILE --seed N --max-connections M`, so it is the same
//! emulator code with the same scenario-derived configuration.
//!
//! The configuration (which holds the run's generated PAT) is written to a file readable only by
//! this user (mode 0600 in a 0700 directory) and removed as soon as the child says it listens:
//! the PAT never appears on a command line, where other users could read it. The child's base
//! URL is read from its stdout (`fleetsim: emulator listening on URL`); afterwards stdout is
//! drained and the last lines of stderr kept for error messages. At the end the caller reads the
//! child's counters through the admin API, then [`ChildEmulator::stop`] sends SIGTERM (graceful
//! shutdown) and, past a deadline, kills it. The child runs in its own process group, so a
//! Ctrl-C at the terminal stops the fleet (which drains first) and not the emulator under it.
//! Dropping a `ChildEmulator` kills and reaps the child, so an error path never leaves an
//! emulator behind.
//!
//! Plain `std::process` with two reader threads, not `tokio::process`: the workspace's tokio has
//! no `process` feature, and two threads per run cost nothing.

use std::collections::VecDeque;
use std::fs::{DirBuilder, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetsim_core::server::ServerConfig;
use parking_lot::Mutex;
use tokio::sync::oneshot;

/// What the child prints once it accepts connections (see `fleetsim serve`).
const READY_MARKER: &str = "emulator listening on ";
/// How long the child may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop may take before the child is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Lines of the child's stderr kept for messages.
pub(crate) const STDERR_TAIL: usize = 20;
/// Longest line read from the child's output; longer lines are cut.
pub(crate) const MAX_LINE: u64 = 64 * 1024;

/// A running emulator child process.
#[derive(Debug)]
pub(crate) struct ChildEmulator {
    child: Option<Child>,
    /// The child's base URL, as it printed it.
    pub(crate) base_url: String,
    /// The child's process id (for the progress display and for sampling its CPU and RSS).
    pub(crate) pid: u32,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    /// The thread that fills `stderr_tail`; it ends when the child's stderr closes.
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

/// How to start the child.
#[derive(Clone, Debug)]
pub(crate) struct ChildSpec {
    /// The program: this executable, normally.
    pub(crate) program: PathBuf,
    pub(crate) config: ServerConfig,
    pub(crate) seed: u64,
    pub(crate) max_connections: usize,
    /// `[server.deadlines]`: passed as `serve`'s deadline flags.
    pub(crate) deadlines: fleetsim_scenario::ServerDeadlines,
    /// Where the child serves its own Prometheus metrics (`serve --metrics-addr`), if anywhere.
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
}

impl ChildEmulator {
    /// Start the child and wait until it listens. Errors are phrased for the run log and carry
    /// the child's last stderr lines; they never contain the PAT.
    pub(crate) async fn start(spec: ChildSpec) -> Result<ChildEmulator, String> {
        let dir = private_dir()?;
        let result = Self::start_with_config_in(&dir, spec).await;
        // The configuration holds the PAT: gone as soon as the child has read it (or failed).
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    async fn start_with_config_in(dir: &Path, spec: ChildSpec) -> Result<ChildEmulator, String> {
        let config_path = dir.join("server.toml");
        let text = toml::to_string(&spec.config)
            .map_err(|e| format!("cannot write the emulator's configuration: {e}"))?;
        write_private(&config_path, text.as_bytes())?;
        let mut command = Command::new(&spec.program);
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--config"])
            .arg(&config_path)
            .args(["--seed", &spec.seed.to_string()])
            .args(["--max-connections", &spec.max_connections.to_string()])
            .args(deadline_args(&spec.deadlines));
        if let Some(addr) = spec.metrics_addr {
            command.args(["--metrics-addr", &addr.to_string()]);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: Ctrl-C at the terminal reaches only the fleet, which then
            // drains its agents against a still-running emulator and stops the child itself.
            .process_group(0);
        // If the fleet dies without stopping it (SIGKILL, a crash), the kernel sends the child
        // SIGTERM, so no emulator is left behind holding ports and memory.
        // SAFETY: runs in the forked child before exec; prctl is async-signal-safe and touches
        // no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {} serve: {e}", spec.program.display()))?;
        let pid = child.id();
        let stderr_tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL)));
        let stderr_reader = child.stderr.take().map(|stderr| {
            let tail = Arc::clone(&stderr_tail);
            std::thread::spawn(move || keep_tail(stderr, &tail))
        });
        let (ready_tx, ready_rx) = oneshot::channel();
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || watch_stdout(stdout, ready_tx));
        }
        let mut running = ChildEmulator {
            child: Some(child),
            base_url: String::new(),
            pid,
            stderr_tail,
            stderr_reader,
        };
        match tokio::time::timeout(START_TIMEOUT, ready_rx).await {
            Ok(Ok(url)) => {
                running.base_url = url;
                Ok(running)
            }
            Ok(Err(_)) => Err(running.failure("exited before it listened").await),
            Err(_) => Err(running
                .failure(&format!(
                    "did not listen within {}s",
                    START_TIMEOUT.as_secs()
                ))
                .await),
        }
    }

    /// Stop the child gracefully (SIGTERM), killing it if it takes longer than the deadline.
    pub(crate) async fn stop(mut self) {
        let Some(child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        tokio::task::spawn_blocking(move || {
            let mut child = child;
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                // SAFETY: kill sends a signal to our own child, which we have not reaped yet
                // (so the pid cannot have been reused).
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let deadline = std::time::Instant::now() + STOP_TIMEOUT;
            while std::time::Instant::now() < deadline {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => return,
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        })
        .await
        .ok();
    }

    /// Kill the child and describe why it failed, with its last stderr lines.
    async fn failure(&mut self, what: &str) -> String {
        if let Some(mut child) = self.child.take() {
            let _ = tokio::task::spawn_blocking(move || {
                let _ = child.kill();
                let _ = child.wait();
            })
            .await;
        }
        // The child is gone, so its stderr is closed: wait for the reader to store the last lines.
        if let Some(reader) = self.stderr_reader.take() {
            let _ = tokio::task::spawn_blocking(move || reader.join()).await;
        }
        let tail: Vec<String> = self.stderr_tail.lock().iter().cloned().collect();
        if tail.is_empty() {
            format!("the emulator child process {what}")
        } else {
            format!(
                "the emulator child process {what}; its last output:\n  {}",
                tail.join("\n  ")
            )
        }
    }
}

impl Drop for ChildEmulator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A fresh directory only this user can enter, under the temp dir.
fn private_dir() -> Result<PathBuf, String> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir =
        std::env::temp_dir().join(format!("fleetsim-emulator-{}-{nanos}", std::process::id()));
    DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Write `bytes` to a new file readable only by this user.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(bytes)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Read the child's stdout: send the base URL once it is printed, then drain to the end so the
/// child never blocks on a full pipe.
fn watch_stdout(stdout: impl Read, ready: oneshot::Sender<String>) {
    let mut ready = Some(ready);
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if let Some(url) = ready_url(&line)
            && let Some(tx) = ready.take()
        {
            let _ = tx.send(url.to_string());
        }
    }
}

/// The base URL in a `… emulator listening on URL` line.
fn ready_url(line: &str) -> Option<&str> {
    let at = line.find(READY_MARKER)?;
    let url = line[at + READY_MARKER.len()..].trim();
    (url.starts_with("http://") || url.starts_with("https://")).then_some(url)
}

/// Keep the last [`STDERR_TAIL`] lines of the child's stderr.
pub(crate) fn keep_tail(stderr: impl Read, tail: &Mutex<VecDeque<String>>) {
    let mut reader = BufReader::new(stderr);
    let mut line = String::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut tail = tail.lock();
        if tail.len() == STDERR_TAIL {
            tail.pop_front();
        }
        tail.push_back(line.trim_end().to_string());
    }
}

/// `serve`'s flags for the deadlines the scenario sets (the others keep serve's defaults).
fn deadline_args(d: &fleetsim_scenario::ServerDeadlines) -> Vec<String> {
    [
        ("--head-timeout", d.head_timeout),
        ("--body-timeout", d.body_timeout),
        ("--keep-alive-timeout", d.keep_alive_timeout),
    ]
    .into_iter()
    .filter_map(|(flag, v)| v.map(|v| [flag.to_string(), format!("{}ms", v.as_millis())]))
    .flatten()
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the base URL is found in the serve command's ready line and nowhere else.
    #[test]
    fn ready_line_yields_the_base_url() {
        assert_eq!(
            ready_url("fleetsim: emulator listening on http://127.0.0.1:4321\n"),
            Some("http://127.0.0.1:4321")
        );
        assert_eq!(
            ready_url("fleetsim: metrics on http://127.0.0.1:9464/metrics"),
            None
        );
        assert_eq!(ready_url("emulator listening on nowhere"), None);
    }

    // Goal: the child's configuration round-trips through the TOML file it is handed (every
    // field, PAT included), so the child runs exactly the scenario's emulator.
    #[test]
    fn server_config_round_trips_through_the_config_file() {
        let mut config = ServerConfig::with_env_pat("secret-pat".to_string());
        config.long_poll_hold = Duration::from_millis(2_500);
        config.limits.max_finished_jobs = 123;
        // Not `private_dir`: the next test counts this process's private dirs.
        let dir = std::env::temp_dir().join(format!("fleetsim-roundtrip-{}", std::process::id()));
        DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&dir)
            .unwrap();
        let path = dir.join("server.toml");
        let _ = std::fs::remove_file(&path);
        write_private(&path, toml::to_string(&config).unwrap().as_bytes()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions();
        let loaded = crate::server::config::load(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        assert_eq!(loaded.unwrap(), config);
    }

    // Goal: the scenario's deadlines reach the child as `serve` flags, in milliseconds so a
    // sub-second deadline survives; those left out are not passed.
    #[test]
    fn deadlines_become_serve_flags() {
        let d = fleetsim_scenario::ServerDeadlines {
            head_timeout: Some(Duration::from_millis(100)),
            body_timeout: None,
            keep_alive_timeout: Some(Duration::from_secs(90)),
        };
        assert_eq!(
            deadline_args(&d),
            ["--head-timeout", "100ms", "--keep-alive-timeout", "90000ms"]
        );
        assert!(deadline_args(&Default::default()).is_empty());
    }

    // Goal: a child that exits without listening is an error carrying its stderr, and the
    // configuration file with the PAT is gone afterwards.
    #[tokio::test]
    async fn a_child_that_never_listens_is_reported_with_its_output() {
        let spec = ChildSpec {
            program: PathBuf::from("/bin/sh"),
            config: ServerConfig::with_env_pat("p".to_string()),
            seed: 1,
            max_connections: 10,
            deadlines: Default::default(),
            metrics_addr: None,
        };
        // `sh serve …` tries to run a script named `serve`, fails, and says so on stderr.
        let err = ChildEmulator::start(spec).await.unwrap_err();
        assert!(err.contains("exited before it listened"), "{err}");
        assert!(err.contains("serve"), "stderr is quoted: {err}");
        let leftovers = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("fleetsim-emulator-{}-", std::process::id()))
            })
            .count();
        assert_eq!(leftovers, 0, "the private config dir is removed");
    }
}
