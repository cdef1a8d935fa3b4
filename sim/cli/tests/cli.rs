//! The `fleetsim` binary as a user runs it: exit codes (0 ok, 1 gate failed, 2 invalid usage or
//! scenario, 3 the run could not be carried out), the reports a run writes, and the Prometheus
//! endpoint that keeps serving the final values while it lingers. Live runs here are short (a
//! few agents for a few seconds against the embedded emulator on 127.0.0.1).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_fleetsim");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A scratch directory of its own per test (tests run in parallel).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fleetsim-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn fleetsim(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(repo())
        .output()
        .expect("fleetsim runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A live scenario small enough for a test: 3 agents, jobs every half second, 5 s.
fn tiny_scenario(dir: &Path, thresholds: &str) -> PathBuf {
    let path = dir.join("tiny.toml");
    let body = format!(
        r#"[run]
name = "cli-test"
duration = "5s"
seed = 7

[fleet]
agents = 3
ramp_up = "1s"

[jobs]
rate_per_s = 2.0
duration = {{ dist = "constant", value = "500ms" }}
log_lines_per_s = 10
secrets = 1
secret_lines = 2

[server]
long_poll_hold = "2s"

[thresholds]
{thresholds}
"#
    );
    std::fs::write(&path, body).expect("write scenario");
    path
}

// Goal: a run that meets its thresholds exits 0 and writes every report it was asked for, each
// in its format (JSON report with the operations, JUnit with one case per threshold, HTML).
#[test]
fn passing_run_exits_0_and_writes_every_report() {
    let dir = scratch("pass");
    let scenario = tiny_scenario(
        &dir,
        "\"jobs.lost\" = \"== 0\"\n\"errors.rate\" = \"< 5%\"\n",
    );
    let (json, junit, html) = (dir.join("r.json"), dir.join("r.xml"), dir.join("r.html"));
    let out = fleetsim(&[
        "run",
        scenario.to_str().unwrap(),
        "--quiet",
        "--out",
        json.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).expect("report is JSON");
    assert_eq!(report["schema_version"], 1);
    let ops = report["operations"].as_object().expect("operations");
    for op in [
        "register",
        "token_exchange",
        "session_create",
        "poll_message",
    ] {
        assert!(
            ops.contains_key(op),
            "operation {op} missing from {:?}",
            ops.keys()
        );
    }
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testcase").count(), 2, "{xml}");
    assert!(!xml.contains("<failure"), "{xml}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("<section class=\"chart") && page.contains("uPlot"),
        "charts drawn by the inlined library"
    );
    assert!(
        !page.contains(" src=") && !page.contains(" href="),
        "self-contained HTML"
    );
}

// Goal: a threshold the run cannot meet fails the gate: exit 1, the JUnit case fails, and the
// summary names the threshold.
#[test]
fn failing_threshold_exits_1() {
    let dir = scratch("fail");
    let scenario = tiny_scenario(&dir, "\"job_pickup.p50\" = \"< 1us\"\n");
    let junit = dir.join("r.xml");
    let out = fleetsim(&[
        "run",
        scenario.to_str().unwrap(),
        "--quiet",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("job_pickup.p50"), "{stdout}");
    assert!(
        std::fs::read_to_string(&junit)
            .unwrap()
            .contains("<failure")
    );
}

// Goal: bad input is exit 2 with a message a person can act on: a scenario problem points at
// file:line:col, a misspelt metric in a threshold is an error (not a silent pass), and a bad
// flag value names the flag.
#[test]
fn invalid_scenarios_and_flags_exit_2_with_positions() {
    let dir = scratch("invalid");
    let scenario = tiny_scenario(&dir, "\"job_pikup.p99\" = \"< 5s\"\n");
    let out = fleetsim(&["validate", scenario.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let body = std::fs::read_to_string(&scenario).unwrap();
    let line = 1 + body.lines().position(|l| l.contains("job_pikup")).unwrap();
    assert!(
        stderr.contains(&format!("tiny.toml:{line}:")) && stderr.contains("job_pikup"),
        "{stderr}"
    );

    let out = fleetsim(&[
        "run",
        "scenarios/quickstart.toml",
        "--set",
        "fleet.agents=-3",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("fleet.agents"));

    let out = fleetsim(&[
        "run",
        "scenarios/quickstart.toml",
        "--metrics-linger",
        "soon",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--metrics-linger"));

    let out = fleetsim(&["compare", "/nonexistent/a.json", "/nonexistent/b.json"]);
    assert_eq!(out.status.code(), Some(2));
}

// Goal: a number beyond what a server could see is refused by `validate` and by `run` (exit 2)
// with its key path and the allowed range, before anything starts: `jobs.rate_per_s=1e308`
// used to pass and then spin at 100 % CPU, deaf to Ctrl-C.
#[test]
fn absurd_rates_are_refused_with_the_allowed_range() {
    for command in ["validate", "run"] {
        let out = fleetsim(&[
            command,
            "scenarios/quickstart.toml",
            "--set",
            "jobs.rate_per_s=1e308",
            "--set",
            "run.duration=5s",
        ]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains(
                "--set jobs.rate_per_s=1e308: must be between 0 and 100000 jobs per \
                             second, found 1e308"
            ),
            "{command}: {stderr}"
        );
    }
}

// Goal: `[server.deadlines]` is refused (exit 2) where it cannot be honoured: by `run --target`
// (a foreign server keeps its own deadlines), before anything is sent, and by `simulate`
// (virtual time has no connections); `validate` of the embedded setup accepts it.
#[test]
fn server_deadlines_are_refused_where_they_cannot_be_honoured() {
    let set = ["--set", "server.deadlines.keep_alive_timeout=\"30s\""];
    let validate = fleetsim(&[&["validate", "scenarios/quickstart.toml"][..], &set].concat());
    assert_eq!(
        validate.status.code(),
        Some(0),
        "{}",
        text(&validate.stderr)
    );
    let run = [
        &["run", "scenarios/quickstart.toml", "--quiet"][..],
        &set,
        &["--target", "http://127.0.0.1:9"],
    ]
    .concat();
    let out = fleetsim(&run);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the embedded emulator's deadlines; a target keeps its own"),
        "{stderr}"
    );
    let out = fleetsim(&[&["simulate", "scenarios/quickstart.toml"][..], &set].concat());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("server.deadlines"), "{stderr}");
}

// Goal: a target that is not there is "the run could not be carried out", exit 3, not a
// threshold failure.
#[test]
fn unreachable_target_exits_3() {
    let dir = scratch("unreachable");
    let scenario = tiny_scenario(&dir, "");
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(BIN)
        .args([
            "run",
            scenario.to_str().unwrap(),
            "--quiet",
            "--target",
            &format!("http://127.0.0.1:{port}"),
        ])
        .env("FLEETSIM_PAT", "cli-test-pat")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A server on 127.0.0.1 that answers every request `401` with a Bearer challenge and issues no
/// token anywhere; serves at most `max_connections` connections, then stops.
fn refusing_server(max_connections: usize) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(max_connections) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let _ = reader.take(length as u64).read_to_end(&mut Vec::new());
            let _ = stream.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\n\
                  Content-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    port
}

// Goal: a run in which no agent obtained a token fails with exit 3 and names the phase that
// never happened in the summary and the JSON report, even with no thresholds to fail.
#[test]
fn run_without_any_token_exits_3_and_names_the_phase() {
    let dir = scratch("no-token");
    // No [jobs]: against a target the fleet serves the server's jobs (source "server"), so the
    // run starts and meets a server that never issues a token.
    let scenario = dir.join("no-jobs.toml");
    std::fs::write(
        &scenario,
        "[run]\nname = \"cli-test\"\nduration = \"5s\"\nseed = 7\n\
         [fleet]\nagents = 3\nramp_up = \"1s\"\n",
    )
    .expect("write scenario");
    let port = refusing_server(500);
    let report = dir.join("report.json");
    let out = Command::new(BIN)
        .args([
            "run",
            scenario.to_str().unwrap(),
            "--quiet",
            "--target",
            &format!("http://127.0.0.1:{port}"),
            "--set",
            "run.duration=\"2s\"",
            "--out",
            report.to_str().unwrap(),
        ])
        .env("FLEETSIM_PAT", "cli-test-pat")
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("INCOMPLETE: phase token never happened"),
        "{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["incomplete"]["phase"], "token", "{json}");
}

// Goal: `--metrics-addr` serves Prometheus text during the run and, with `--metrics-linger`,
// keeps the final values after it (the summary says where and for how long): operations,
// pickup histogram buckets, build info, and the embedded emulator's series, each labelled
// `shard="0"` (an unsharded run).
#[test]
fn metrics_endpoint_serves_the_final_values_while_it_lingers() {
    let dir = scratch("metrics");
    let scenario = tiny_scenario(&dir, "");
    let body = scrape_while_lingering(&["run", scenario.to_str().unwrap()]);
    for needle in [
        "fleetsim_build_info{shard=\"0\",",
        "role=\"fleet\"",
        "fleetsim_operations_total{shard=\"0\",operation=\"register\",outcome=\"ok\"} 3",
        "fleetsim_job_pickup_duration_seconds_bucket{shard=\"0\",le=",
        "fleetsim_emulator_requests_total{",
        "# HELP fleetsim_jobs_total",
    ] {
        assert!(body.contains(needle), "{needle} missing from:\n{body}");
    }
    assert!(!body.contains("quantile="), "histograms, never summaries");
}

// Goal: `simulate --metrics-addr` exports the virtual run through the same catalogue (this is
// what the capacity-planning dashboard reads), with run time in virtual seconds.
#[test]
fn simulate_exports_the_virtual_run_to_prometheus() {
    let body = scrape_while_lingering(&["simulate", "scenarios/quickstart.toml"]);
    for needle in [
        "role=\"simulate\"",
        "fleetsim_operations_total{shard=\"0\",operation=\"register\",outcome=\"ok\"} 20",
        "fleetsim_job_pickup_duration_seconds_count{shard=\"0\"} ",
    ] {
        assert!(body.contains(needle), "{needle} missing from:\n{body}");
    }
    // Virtual seconds of the 40 s scenario (the latest event lands just before its end).
    let elapsed: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix("fleetsim_run_elapsed_seconds{shard=\"0\"} "))
        .and_then(|v| v.parse().ok())
        .expect("the run-time gauge");
    assert!((30.0..=40.0).contains(&elapsed), "{elapsed}");
}

/// Run `fleetsim ARGS --quiet --metrics-addr 127.0.0.1:0 --metrics-linger 20s`, wait for the
/// summary to name the lingering endpoint, scrape it once, stop the process; the scrape.
fn scrape_while_lingering(args: &[&str]) -> String {
    let mut child = Command::new(BIN)
        .args(args)
        .args([
            "--quiet",
            "--metrics-addr",
            "127.0.0.1:0",
            "--metrics-linger",
            "20s",
        ])
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut url = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.split("metrics stay on http://").nth(1) {
            url = rest.split_whitespace().next().map(str::to_owned);
            break;
        }
    }
    let url = url.expect("the summary names the lingering endpoint");
    let (addr, path) = url.split_once('/').unwrap();
    let body = http_get(addr, &format!("/{path}"));
    let _ = child.kill();
    let _ = child.wait();
    body
}

/// One HTTP/1.1 GET with `Connection: close`; the body.
fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("metrics endpoint accepts");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

// Goal: `simulate` runs the same scenario file in virtual time and reports the engine figures.
#[test]
fn simulate_quickstart_exits_0_with_engine_figures() {
    let dir = scratch("simulate");
    let json = dir.join("sim.json");
    let out = fleetsim(&[
        "simulate",
        "scenarios/quickstart.toml",
        "--quiet",
        "--out",
        json.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(report["engine"]["events"].as_u64().unwrap() > 1_000);
    assert!(report["trace_hash"].is_string());
}

// Goal: when the emulator runs in a child process (big fleets, or `--emulator-process`), its own
// series are still exported — by the child, on the port after `--metrics-addr` — so the
// emulator dashboard fills; the fleet's series stay on `--metrics-addr`.
#[test]
fn child_emulator_exports_its_metrics_on_the_next_port() {
    let dir = scratch("child-metrics");
    let scenario = tiny_scenario(&dir, "");
    let port = free_port_pair();
    let mut child = Command::new(BIN)
        .args([
            "run",
            scenario.to_str().unwrap(),
            "--quiet",
            "--emulator-process",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let emulator = format!("127.0.0.1:{}", port + 1);
    let mut seen = None;
    // Poll until the child's exporter has counted the agents, or the run is over.
    while child.try_wait().unwrap().is_none() {
        if TcpStream::connect(&emulator).is_ok() {
            let body = http_get(&emulator, "/metrics");
            if body.contains("fleetsim_emulator_registered_agents{shard=\"0\"} 3") {
                seen = Some(body);
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // SIGKILL: the fleet gets no chance to stop its emulator; the kernel must (parent-death
    // signal), or the child would keep its ports and memory forever.
    let _ = child.kill();
    let _ = child.wait();
    let body = seen.expect("the child emulator served its metrics on the next port");
    assert!(body.contains("role=\"emulator\""), "{body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while TcpStream::connect(&emulator).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the child emulator outlived its killed fleet"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A port P with P and P + 1 both free on 127.0.0.1 just now.
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two adjacent free ports on 127.0.0.1");
}

/// A target that is not fleetsim's emulator: every request is answered, `GET
/// …/_apis/fleetsim/stats` with 404 (as Azure DevOps does), anything else with an empty JSON
/// object. Serves until the test process ends.
fn not_an_emulator() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            // The rest of the head; these probes carry no body.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let (status, body) = if first.contains("/_apis/fleetsim/stats") {
                ("404 Not Found", "")
            } else {
                ("200 OK", "{}")
            };
            let _ = write!(
                &stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

// Goal: `[jobs]` arrivals with the emulator source against a target that is not fleetsim's
// emulator are refused at start (exit 2) with the fix in the message, never run as a stream of
// 404s that exits 0.
#[test]
fn emulator_source_against_another_server_exits_2_with_the_fix() {
    let dir = scratch("not-emulator");
    let scenario = tiny_scenario(&dir, "");
    let port = not_an_emulator();
    let out = Command::new(BIN)
        .args([
            "run",
            scenario.to_str().unwrap(),
            "--quiet",
            "--target",
            &format!("http://127.0.0.1:{port}"),
        ])
        .env("FLEETSIM_PAT", "cli-test-pat")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}\n{stderr}",
        text(&out.stdout)
    );
    assert!(
        stderr.contains("/_apis/fleetsim/stats answered 404"),
        "{stderr}"
    );
    assert!(stderr.contains("source = \"pipelines\""), "{stderr}");
    assert!(stderr.contains("\"server\""), "{stderr}");
}

/// The soft "Max open files" limit of process `pid`, from /proc.
fn soft_nofile(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("/proc limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    line.split_whitespace()
        .nth(3)
        .and_then(|v| v.parse().ok())
        .expect("a numeric soft limit")
}

// Goal: a standalone `fleetsim serve` (a container inherits a soft limit such as 1,024) raises
// its open-file soft limit to fit --max-connections, so accepts do not fail with EMFILE long
// before its own bound. Started under a soft limit of 256 with a hard limit of 8,192, it must
// end up with at least --max-connections (4,000) descriptors.
#[cfg(target_os = "linux")]
#[test]
fn serve_raises_its_open_file_limit_to_fit_max_connections() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "prlimit (util-linux) is needed"
        );
        eprintln!("prlimit not installed: skipped");
        return;
    }
    // prlimit sets the limits on itself and then execs fleetsim: the child's pid is fleetsim's.
    let mut child = Command::new("prlimit")
        .args(["--nofile=256:8192", BIN, "serve", "--listen", "127.0.0.1:0"])
        .args(["--max-connections", "4000"])
        .env("FLEETSIM_PAT", "cli-test-pat")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("prlimit runs");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let listening = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("emulator listening on"));
    let soft = soft_nofile(child.id());
    let _ = child.kill();
    let out = child.wait_with_output().expect("serve ends");
    assert!(listening, "serve never listened: {}", text(&out.stderr));
    assert!(
        soft >= 4_000,
        "soft open-file limit {soft} after start; expected >= 4000"
    );
    assert!(soft <= 8_192, "soft limit {soft} above the hard limit");
}

// Goal: `serve --tls-self-signed` never writes its private key into a directory other users
// may write into (exit 2, no key written), and a zero connection deadline is a usage error.
#[cfg(unix)]
#[test]
fn serve_refuses_a_shared_key_directory_and_zero_deadlines() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("shared-tls");
    let shared = dir.join("tls");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-self-signed",
            "--tls-dir",
        ])
        .arg(&shared)
        .env("FLEETSIM_PAT", "cli-test-pat")
        .output()
        .expect("fleetsim runs");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("refusing to write the private key"),
        "{}",
        text(&out.stderr)
    );
    assert!(!shared.join("fleetsim-emulator-key.pem").exists());
    let out = fleetsim(&["serve", "--listen", "127.0.0.1:0", "--head-timeout", "0s"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("above zero"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
