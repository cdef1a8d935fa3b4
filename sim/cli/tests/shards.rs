//! `fleetsim run --shard I/N --start-at TIME`: one run split over processes that share one
//! target (`fleetsim serve` on 127.0.0.1). The shards' agents together are the single-process
//! fleet (names unique, the same names), every shard shares one run time zero and one scenario
//! digest, and together they queue exactly the jobs the unsharded run queues for the seed
//! (`fleetsim simulate` draws the same arrival sequence). The report paths are kept so a merge
//! (`fleetsim merge --scenario`) can be checked on the same run.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

mod support;

use support::{BIN, Serve};

const PAT: &str = "shards-test-pat";
const AGENTS: usize = 12;
const SHARDS: usize = 3;

/// A scratch directory of its own per test (tests run in parallel).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fleetsim-shards-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// 12 agents, jobs at 3 a second for 20 s from the emulator source, short polls.
fn scenario(dir: &Path, url: &str) -> PathBuf {
    let path = dir.join("shards.toml");
    let body = format!(
        r#"[run]
name = "shards-test"
duration = "20s"
seed = 11

[fleet]
agents = {AGENTS}
ramp_up = "2s"

[target]
url = "{url}"
pat_env = "SHARDS_TEST_PAT"
pool = "Default"

[jobs]
source = "emulator"
rate_per_s = 3.0
duration = {{ dist = "uniform", min = "300ms", max = "1s" }}
"#
    );
    std::fs::write(&path, body).expect("write scenario");
    path
}

/// Run every shard of `scenario` together, starting `lead_s` from now; the report paths in
/// shard order, with each shard's output.
fn run_shards(dir: &Path, scenario: &Path, lead_s: u64) -> Vec<(PathBuf, Output)> {
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + lead_s;
    let children: Vec<(PathBuf, Child)> = (0..SHARDS)
        .map(|i| {
            let out = dir.join(format!("shard-{i}.json"));
            let child = Command::new(BIN)
                .arg("run")
                .arg(scenario)
                .args(["--shard", &format!("{i}/{SHARDS}")])
                .args(["--start-at", &start.to_string(), "--quiet", "--out"])
                .arg(&out)
                .env("SHARDS_TEST_PAT", PAT)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("fleetsim run starts");
            (out, child)
        })
        .collect();
    children
        .into_iter()
        .map(|(out, child)| (out, child.wait_with_output().expect("shard ends")))
        .collect()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("report written"))
        .expect("report is JSON")
}

/// GET `url` (`http://127.0.0.1:port/path`) with the PAT, as JSON.
fn admin_get(url: &str) -> serde_json::Value {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (addr, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = TcpStream::connect(addr).expect("serve accepts");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {}\r\nConnection: close\r\n\r\n",
        base64(&format!("fleetsim:{PAT}"))
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn base64(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// Goal: three shards against one `fleetsim serve` are the single-process run split three
// ways: 12 distinct agents with the unsharded names in the pool, 4 per shard, one start and
// one digest, and together exactly the jobs `simulate` queues for the seed, none lost.
#[test]
fn three_shards_are_one_run() {
    let dir = scratch("three");
    let serve = Serve::start(PAT);
    let scenario = scenario(&dir, &serve.url);
    let shards = run_shards(&dir, &scenario, 4);
    let mut queued = 0;
    let mut started = Vec::new();
    let mut requests = 0;
    let mut starts = Vec::new();
    let mut digests = Vec::new();
    for (i, (path, out)) in shards.iter().enumerate() {
        assert!(
            out.status.success(),
            "shard {i}: {}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let r = json(path);
        assert_eq!(r["run"]["shard"]["index"], i);
        assert_eq!(r["run"]["shard"]["count"], SHARDS);
        starts.push(
            r["run"]["started_unix_us"]
                .as_u64()
                .expect("started_unix_us"),
        );
        digests.push(
            r["run"]["scenario_digest"]
                .as_str()
                .expect("digest")
                .to_string(),
        );
        queued += r["jobs"]["queued"].as_u64().expect("jobs.queued");
        started.push(r["jobs"]["started"].as_u64().expect("jobs.started"));
        requests += r["requests"]["count"].as_u64().expect("requests.count");
        assert_eq!(r["jobs"]["lost"], 0, "shard {i}");
        let agents: u64 = r["agents"]["by_state"]
            .as_object()
            .expect("agents.by_state")
            .values()
            .filter_map(serde_json::Value::as_u64)
            .sum();
        assert_eq!(agents, (AGENTS / SHARDS) as u64, "shard {i}");
    }
    assert!(starts.windows(2).all(|w| w[0] == w[1]), "{starts:?}");
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");

    let pools = admin_get(&format!("{}/_apis/distributedtask/pools", serve.url));
    let pool = pools["value"]
        .as_array()
        .and_then(|v| v.iter().find(|p| p["name"] == "Default"))
        .expect("the Default pool")["id"]
        .clone();
    let agents = admin_get(&format!(
        "{}/_apis/distributedtask/pools/{pool}/agents",
        serve.url
    ));
    let mut names: Vec<String> = agents["value"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    let mut want: Vec<String> = (0..AGENTS).map(|i| format!("fleetsim-agent-{i}")).collect();
    want.sort();
    assert_eq!(names, want);

    let sim_out = dir.join("simulate.json");
    let sim = Command::new(BIN)
        .arg("simulate")
        .arg(&scenario)
        .args(["--quiet", "--out"])
        .arg(&sim_out)
        .output()
        .expect("simulate runs");
    assert!(sim.status.success(), "{}", text(&sim.stderr));
    assert_eq!(queued, json(&sim_out)["jobs"]["queued"].as_u64().unwrap());

    // The merge is the whole run: counts are the shards' sums, and the scenario's thresholds
    // are judged on it. `jobs.started` above every single shard's passes only on the sum.
    let reports: Vec<&Path> = shards.iter().map(|(p, _)| p.as_path()).collect();
    let total: u64 = started.iter().sum();
    let best = *started.iter().max().unwrap();
    assert!(total > best, "every shard started jobs: {started:?}");
    let merged = dir.join("merged.json");
    let out = merge(&reports, &scenario, &merged, &format!(">= {total}"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let m = json(&merged);
    assert_eq!(m["run"]["shards"], SHARDS);
    assert_eq!(m["jobs"]["queued"], queued);
    assert_eq!(m["jobs"]["started"], total);
    assert_eq!(m["requests"]["count"], requests);
    assert_eq!(m["jobs"]["lost"], 0);
    let agents: u64 = m["agents"]["by_state"]
        .as_object()
        .expect("agents.by_state")
        .values()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    assert_eq!(agents, AGENTS as u64);
    let out = merge(&reports, &scenario, &merged, &format!(">= {}", total + 1));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("jobs.started"),
        "{}",
        text(&out.stdout)
    );

    // A shard missing from the set is a usage error naming it, and nothing is written.
    let _ = std::fs::remove_file(&merged);
    let out = merge(&reports[..2], &scenario, &merged, ">= 0");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("shard 2/3 missing"),
        "{}",
        text(&out.stderr)
    );
    assert!(!merged.exists());
}

/// `fleetsim merge REPORTS --scenario S --out OUT`, judging `jobs.started` by `started`.
fn merge(reports: &[&Path], scenario: &Path, out: &Path, started: &str) -> Output {
    Command::new(BIN)
        .arg("merge")
        .args(reports)
        .arg("--scenario")
        .arg(scenario)
        .args([
            "--set",
            &format!("thresholds.\"jobs.started\"=\"{started}\""),
        ])
        .arg("--out")
        .arg(out)
        .args(["--quiet"])
        .output()
        .expect("fleetsim merge runs")
}

// Goal: a shard that cannot be run is refused with exit 2 and the fix: an index not below the
// count, a malformed shard, and a shard without a shared target.
#[test]
fn bad_shards_exit_2_with_the_message() {
    let dir = scratch("bad");
    let with_target = scenario(&dir, "http://127.0.0.1:9");
    for (shard, want) in [("3/3", "not below the count"), ("x", "expected I/N")] {
        let out = Command::new(BIN)
            .arg("run")
            .arg(&with_target)
            .args(["--shard", shard, "--quiet"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{shard}");
        assert!(
            text(&out.stderr).contains(want),
            "{shard}: {}",
            text(&out.stderr)
        );
    }
    let no_target = dir.join("no-target.toml");
    std::fs::write(
        &no_target,
        "[run]\nname = \"x\"\nduration = \"5s\"\n\n[fleet]\nagents = 2\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("run")
        .arg(&no_target)
        .args(["--shard", "0/2", "--quiet"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--shard needs a target every shard shares"),
        "{}",
        text(&out.stderr)
    );
}
