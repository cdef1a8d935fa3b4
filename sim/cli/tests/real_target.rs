//! The `fleetsim` binary against a server that is not its own emulator: the in-repo test server
//! `scripts/testserver/azp_testserver.py`, written independently from Microsoft's documentation
//! and the real agent's source. It is laid out as Azure DevOps Services is: the collection under
//! `/org`, the token authority on another listener (named only by the registration's
//! `authorizationUrl`), the plan hub on a third (named only by the job's
//! `SystemVssConnection.url`), `expires_in` as a JSON string, jobs queued by the server itself
//! as real-shaped `PipelineAgentJobRequest` messages, plus `JobMetadataUpdate`, `AgentRefresh`
//! and an unknown message type that a listener must acknowledge and skip.
//!
//! The server's raw-HTTP self-check runs first (its own test), so a server bug is told apart
//! from a fleet bug. The tests need `python3` with the `cryptography` package
//! (`python3 -m pip install -r scripts/testserver/requirements.txt`; `.ci/run` does it):
//! without it they fail under `CI`, and elsewhere print why they skipped. All traffic stays on
//! 127.0.0.0/8. The server was written without reading fleetsim's emulator or codec.
//! Every wait reads a pipe or a child's exit with a deadline; nothing synchronises by sleeping.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_fleetsim");
const PAT: &str = "real-target-test-pat";
/// Jobs the server queues, one a second once the first session opens.
const JOBS: u64 = 10;
/// Agents in the fleet.
const AGENTS: u64 = 5;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn testserver_dir() -> PathBuf {
    repo().join("scripts/testserver")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fleetsim-real-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether `python3` with `cryptography` is here. Missing in CI is a failure (`.ci/run`
/// installs it); elsewhere the test prints why it skips.
fn python_ready() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import cryptography"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with `cryptography` is missing in CI \
             (.ci/run runs pip install -r scripts/testserver/requirements.txt)"
        );
        println!(
            "SKIPPED: python3 with `cryptography` is not installed \
             (pip install -r scripts/testserver/requirements.txt)"
        );
    }
    ok
}

/// Wait for a child with a deadline; past it the child is killed and the test fails.
fn wait_with_deadline(mut child: Child, deadline: Duration, what: &str) -> Output {
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    std::thread::spawn(move || {
        let read = |r: Option<Box<dyn Read + Send>>| {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        };
        let err = std::thread::spawn(move || read(stderr.map(|s| Box::new(s) as _)));
        let out = read(stdout.map(|s| Box::new(s) as _));
        let status = child.wait().expect("wait for child");
        let _ = tx.send(Output {
            status,
            stdout: out,
            stderr: err.join().unwrap_or_default(),
        });
    });
    match rx.recv_timeout(deadline) {
        Ok(out) => out,
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{what} did not finish within {deadline:?}; killed");
        }
    }
}

/// The test server as a child process. Dropping it kills the process if it still runs.
struct TestServer {
    child: Option<Child>,
    /// The start-up line: `collection_url`, `token_url`, `plan_url`, `stats_url`.
    urls: Value,
    stats_file: PathBuf,
}

impl TestServer {
    /// Start the server and read its start-up line (30 s deadline).
    fn start(dir: &Path, extra: &[&str]) -> Self {
        let stats_file = dir.join("testserver-stats.json");
        let mut child = Command::new("python3")
            .arg(testserver_dir().join("azp_testserver.py"))
            .args(["--pat", PAT, "--stats-file"])
            .arg(&stats_file)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 starts the test server");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut server = TestServer {
            child: Some(child),
            urls: Value::Null,
            stats_file,
        };
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the test server prints its URLs within 30 s");
        server.urls = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("start-up line is JSON ({e}): {line:?}"));
        server
    }

    fn url(&self, key: &str) -> String {
        self.urls[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} in {}", self.urls))
            .to_owned()
    }

    /// `GET` the tally from the test-only stats route (no auth).
    fn stats(&self) -> Value {
        let url = self.url("stats_url");
        let rest = url.strip_prefix("http://").expect("http stats URL");
        let (addr, path) = rest.split_at(rest.find('/').expect("a path"));
        let mut s = TcpStream::connect(addr).expect("stats route accepts");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read deadline");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .expect("send stats request");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("read stats answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        serde_json::from_str(body).expect("stats are JSON")
    }

    /// SIGTERM, then the exit status (10 s deadline) and the tally it wrote on the way out.
    fn stop(mut self) -> (ExitStatus, Value) {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.stdout = None;
        let out = wait_with_deadline(child, Duration::from_secs(10), "the test server's exit");
        let written = std::fs::read_to_string(&self.stats_file).unwrap_or_default();
        (
            out.status,
            serde_json::from_str(&written).unwrap_or(Value::Null),
        )
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The scenario: a few agents against the server's collection URL, realistic timers except a
/// short pause after an empty poll so that a 35 s run sees every job through.
fn scenario(dir: &Path, collection_url: &str) -> PathBuf {
    let path = dir.join("real-target.toml");
    // The server queues the jobs (`source = "server"`). The short step model matters: each
    // job has three real steps (Checkout, CmdLine, Bash), and the built-in model (5-20 s a
    // step) would not see 10 jobs on 5 agents through in 35 s.
    let body = format!(
        r#"[run]
name = "real-target"
duration = "35s"
seed = 9

[fleet]
agents = {AGENTS}
ramp_up = "2s"

[agent]
empty_poll_gap = {{ dist = "uniform", min = "500ms", max = "1s" }}

[target]
url = "{collection_url}"
pat_env = "REAL_TARGET_PAT"
pool = "Default"

[jobs]
source = "server"

[jobs.tasks.default]
duration = {{ dist = "uniform", min = "1s", max = "3s" }}
"#
    );
    std::fs::write(&path, body).expect("write scenario");
    path
}

// Goal: the test server works on its own, driven by one agent in raw HTTP (register, token at
// the other authority, session, decrypt, ack, renew, plan hub with the job token, complete,
// a deliberate leak caught), so a failure of the fleet test below is the fleet's, not the
// server's.
#[test]
fn testserver_selftest_passes() {
    if !python_ready() {
        return;
    }
    let child = Command::new("python3")
        .arg(testserver_dir().join("selftest.py"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs the self-check");
    let out = wait_with_deadline(child, Duration::from_secs(120), "selftest.py");
    assert!(
        out.status.success(),
        "the test server's self-check failed (a server bug, not a fleet bug):\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

// Goal: against an independent server laid out as Azure DevOps Services (token authority
// elsewhere, collection under a path, plan hub on another host, string `expires_in`,
// server-queued real-shaped jobs, messages to skip), the fleet serves every job: delivered,
// acked, lock renewed, timeline records with the message's own ids, feed and logs uploaded with
// 0 secret leaks, completed; every session deleted; pickup measured; 0 errors; exit 0.
#[test]
fn fleet_serves_every_job_an_independent_server_queues() {
    if !python_ready() {
        return;
    }
    let dir = scratch("fleet");
    let jobs = JOBS.to_string();
    let server = TestServer::start(
        &dir,
        &[
            "--jobs",
            &jobs,
            "--job-interval-s",
            "1",
            "--long-poll-s",
            "5",
        ],
    );
    let scenario = scenario(&dir, &server.url("collection_url"));
    let report_path = dir.join("report.json");
    let child = Command::new(BIN)
        .args(["run", scenario.to_str().expect("utf-8 path")])
        .arg("--out")
        .arg(&report_path)
        .env("REAL_TARGET_PAT", PAT)
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fleetsim starts");
    let run = wait_with_deadline(child, Duration::from_secs(180), "fleetsim run");
    let tally = server.stats();
    let (server_exit, written) = server.stop();
    let report: Value = std::fs::read_to_string(&report_path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);

    let mut failures = Vec::new();
    let mut expect = |ok: bool, what: String| {
        if !ok {
            failures.push(what);
        }
    };
    // The server's view.
    for (name, ok) in tally["checks"].as_object().expect("checks") {
        expect(
            ok == &Value::Bool(true),
            format!("server check {name} failed"),
        );
    }
    expect(
        tally["jobs"]["completed"] == JOBS,
        format!(
            "server: {} of {JOBS} jobs completed",
            tally["jobs"]["completed"]
        ),
    );
    expect(
        tally["tokens"]["issued"].as_u64() >= Some(AGENTS),
        format!("server: {} tokens issued", tally["tokens"]["issued"]),
    );
    expect(
        tally["sessions"]["deleted"].as_u64() >= Some(AGENTS),
        format!("server: {} sessions deleted", tally["sessions"]["deleted"]),
    );
    expect(
        server_exit.success() && written["jobs"] == tally["jobs"],
        format!("server exit {server_exit} / stats file on exit matches the route"),
    );
    // The fleet's view.
    expect(
        run.status.code() == Some(0),
        format!("fleetsim exit {:?}", run.status.code()),
    );
    expect(
        report["job_pickup"]["latency_s"]["count"].as_u64() >= Some(JOBS),
        format!(
            "fleet: job_pickup has {} samples",
            report["job_pickup"]["latency_s"]["count"]
        ),
    );
    expect(
        report["errors"]["count"] == 0,
        format!(
            "fleet: {} errors {}",
            report["errors"]["count"], report["errors"]["by_kind"]
        ),
    );
    expect(
        report["jobs"]["succeeded"].as_u64().unwrap_or(0)
            + report["jobs"]["failed"].as_u64().unwrap_or(0)
            >= JOBS,
        format!("fleet: jobs {}", report["jobs"]),
    );
    let mut shown = tally.clone();
    if let Some(o) = shown.as_object_mut() {
        o.remove("per_job");
    }
    assert!(
        failures.is_empty(),
        "{} problem(s):\n- {}\n\nserver tally (per-job left out):\n{}\n\nfleetsim stdout:\n{}\n\
         fleetsim stderr (tail):\n{}",
        failures.len(),
        failures.join("\n- "),
        serde_json::to_string_pretty(&shown).unwrap_or_default(),
        text(&run.stdout),
        tail(&text(&run.stderr), 40),
    );
}

/// The last `n` lines of a text.
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
