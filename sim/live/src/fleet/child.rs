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
//! For the live `server_restart` fault, [`ChildEmulator::start_with_state_dir`] starts the child
//! with `serve --state-dir DIR`, and [`ChildEmulator::restart`] kills it with SIGKILL (a crash,
//! not a shutdown: nothing is flushed or answered), waits the down time, and starts it again on
//! the same address with the same state dir, so agents find the same URL and the emulator its
//! durable state (`fleetsim_core::server::durable`).
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
/// `--listen` for a first start: any free port.
const ANY_PORT: &str = "127.0.0.1:0";
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
    /// How it was started, for [`ChildEmulator::restart`].
    // Read by `restart`, which the live `server_restart` fault drives (`fleet::faults`).
    spec: ChildSpec,
    state_dir: Option<PathBuf>,
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
        Self::launch(spec, None, ANY_PORT).await
    }

    /// Start the child with `serve --state-dir state_dir`: its pools, agents, jobs and plans
    /// survive [`ChildEmulator::restart`]. The dir is created if missing; one written with
    /// another seed is refused (the child exits and this is an error with its message).
    pub(crate) async fn start_with_state_dir(
        spec: ChildSpec,
        state_dir: PathBuf,
    ) -> Result<ChildEmulator, String> {
        Self::launch(spec, Some(state_dir), ANY_PORT).await
    }

    /// Crash and restart: SIGKILL the child (no graceful anything), wait `down_time`, then start
    /// it again on the same address with the same state dir and wait until it listens. Its
    /// `base_url` is unchanged; `pid` is the new process's. Without a state dir the new child
    /// starts empty (every registration and job is gone), as a real server without storage
    /// would. An error (the port was taken meanwhile, the child failed) leaves no child running.
    pub(crate) async fn restart(&mut self, down_time: Duration) -> Result<(), String> {
        self.kill().await;
        tokio::time::sleep(down_time).await;
        let listen = self
            .base_url
            .strip_prefix("http://")
            .or_else(|| self.base_url.strip_prefix("https://"))
            .unwrap_or(&self.base_url)
            .to_string();
        let next = Self::launch(self.spec.clone(), self.state_dir.clone(), &listen).await?;
        if next.base_url != self.base_url {
            return Err(format!(
                "the restarted emulator listens on {}, not {}",
                next.base_url, self.base_url
            ));
        }
        *self = next;
        Ok(())
    }

    /// SIGKILL the child and reap it.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = tokio::task::spawn_blocking(move || {
                let _ = child.kill();
                let _ = child.wait();
            })
            .await;
        }
        if let Some(reader) = self.stderr_reader.take() {
            let _ = tokio::task::spawn_blocking(move || reader.join()).await;
        }
    }

    async fn launch(
        spec: ChildSpec,
        state_dir: Option<PathBuf>,
        listen: &str,
    ) -> Result<ChildEmulator, String> {
        let dir = private_dir()?;
        let result = Self::start_with_config_in(&dir, spec, state_dir, listen).await;
        // The configuration holds the PAT: gone as soon as the child has read it (or failed).
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    async fn start_with_config_in(
        dir: &Path,
        spec: ChildSpec,
        state_dir: Option<PathBuf>,
        listen: &str,
    ) -> Result<ChildEmulator, String> {
        let config_path = dir.join("server.toml");
        let text = toml::to_string(&spec.config)
            .map_err(|e| format!("cannot write the emulator's configuration: {e}"))?;
        write_private(&config_path, text.as_bytes())?;
        let mut command = Command::new(&spec.program);
        command
            .arg("serve")
            .args(["--listen", listen, "--config"])
            .arg(&config_path)
            .args(["--seed", &spec.seed.to_string()])
            .args(["--max-connections", &spec.max_connections.to_string()])
            .args(deadline_args(&spec.deadlines));
        if let Some(addr) = spec.metrics_addr {
            command.args(["--metrics-addr", &addr.to_string()]);
        }
        if let Some(state_dir) = &state_dir {
            command.arg("--state-dir").arg(state_dir);
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
            spec,
            state_dir,
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
        // Once the child is gone its stderr is closed: `kill` waits for the reader to store the
        // last lines.
        self.kill().await;
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

    /// Tests that start children create private dirs; one of them counts those left over.
    static CHILD_DIRS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
        let _dirs = CHILD_DIRS.lock().await;
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

    // Goal: `restart` kills the child (SIGKILL) and starts it again on the address it had, with
    // the same state dir; the base URL stays, the process is new. A stand-in program records
    // its arguments and prints the ready line as `fleetsim serve` does.
    #[tokio::test]
    async fn restart_kills_and_starts_again_on_the_same_address_and_state_dir() {
        let _dirs = CHILD_DIRS.lock().await;
        let dir = std::env::temp_dir().join(format!("fleetsim-restart-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        DirBuilder::new().mode(0o700).create(&dir).unwrap();
        let log = dir.join("args.log");
        let program = dir.join("serve.sh");
        let script = format!(
            "#!/bin/sh\necho \"$*\" >> {log}\nlisten=127.0.0.1:45678\n\
             while [ $# -gt 0 ]; do\n  if [ \"$1\" = --listen ] && [ \"$2\" != 127.0.0.1:0 ]; then listen=$2; fi\n  shift\ndone\n\
             echo \"fleetsim: emulator listening on http://$listen\"\nexec sleep 30\n",
            log = log.display()
        );
        std::fs::write(&program, script).unwrap();
        std::fs::set_permissions(
            &program,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let spec = ChildSpec {
            program,
            config: ServerConfig::with_env_pat("p".to_string()),
            seed: 1,
            max_connections: 10,
            metrics_addr: None,
            deadlines: Default::default(),
        };
        let state = dir.join("state");
        let mut child = ChildEmulator::start_with_state_dir(spec, state.clone())
            .await
            .unwrap();
        assert_eq!(child.base_url, "http://127.0.0.1:45678");
        let first = child.pid;
        child.restart(Duration::from_millis(50)).await.unwrap();
        assert_eq!(child.base_url, "http://127.0.0.1:45678", "same address");
        assert_ne!(child.pid, first, "a new process");
        // SAFETY: signal 0 only checks whether the (reaped) first child still exists.
        let alive = unsafe { libc::kill(libc::pid_t::try_from(first).unwrap(), 0) } == 0;
        assert!(!alive, "the first child was killed");
        let args = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = args.lines().collect();
        assert_eq!(lines.len(), 2, "{args}");
        let state_arg = format!("--state-dir {}", state.display());
        assert!(lines.iter().all(|l| l.contains(&state_arg)), "{args}");
        assert!(lines[0].contains("--listen 127.0.0.1:0"), "{args}");
        assert!(lines[1].contains("--listen 127.0.0.1:45678"), "{args}");
        drop(child);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
