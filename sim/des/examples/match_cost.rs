//! Measurement (not a test): what one stats call and one job-list call cost the emulator's
//! state machine with many agents and many queued jobs that no agent can run (issue 12: 3,000
//! agents × 3,000 unmatched jobs made stats take 1.76 s under the lock every request needs).
//!
//! It registers `AGENTS` agents (10 capabilities each) and queues `JOBS` jobs, each demanding
//! a tool no agent has, in a `Server` with modelled crypto, then times `stats()` and the
//! job-request list. For comparison it also times the matching those calls did before the
//! capability index: for each unmatched job, each agent's capability map built again and the
//! demands checked against it (the old `is_unmatched`, reproduced here on the same data).
//!
//! Run: `cargo run --release -p fleetsim-des --example match_cost -- [AGENTS] [JOBS]`
//! (default 3000 3000).

use std::collections::BTreeMap;
use std::time::Instant;

use fleetsim_core::SimTime;
use fleetsim_core::api::{ApiRequest, ApiResponse, Credential, Request};
use fleetsim_core::crypto::CryptoMode;
use fleetsim_core::job::{QueueJobsRequest, SyntheticJob};
use fleetsim_core::proto::TaskAgent;
use fleetsim_core::server::{Handled, Server, ServerConfig};

const PAT: &str = "match-cost-pat";

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let agents = args.first().copied().unwrap_or(3000);
    let jobs = args.get(1).copied().unwrap_or(3000);

    let mut config = ServerConfig::with_env_pat(PAT);
    config.crypto_mode = CryptoMode::Modelled;
    let mut server = Server::new(config, 1, 0).expect("valid config");
    let cred = Credential::Basic {
        user: "u".into(),
        password: PAT.into(),
    };
    let call = |server: &mut Server, id: u64, call: ApiRequest| {
        let req = Request {
            credential: cred.clone(),
            call,
        };
        match server.handle_request(SimTime::ZERO, id, req) {
            Handled::Respond(ApiResponse::Error(e)) => panic!("{e:?}"),
            Handled::Respond(r) => r,
            Handled::Parked => panic!("parked"),
        }
    };
    let bodies: Vec<TaskAgent> = (0..agents).map(agent).collect();
    for (i, body) in bodies.iter().enumerate() {
        let add = ApiRequest::AddAgent {
            pool_id: 1,
            agent: Box::new(body.clone()),
        };
        call(&mut server, i as u64, add);
    }
    let specs: Vec<SyntheticJob> = (0..jobs)
        .map(|i| SyntheticJob {
            demands: vec![format!("missing-tool-{i}")],
            ..SyntheticJob::default()
        })
        .collect();
    let demands: Vec<Vec<String>> = specs.iter().map(|s| s.demands.clone()).collect();
    let queue = QueueJobsRequest {
        count: 0,
        template: None,
        jobs: specs,
    };
    let started = Instant::now();
    call(
        &mut server,
        u64::MAX - 1,
        ApiRequest::QueueJobs {
            pool_id: 1,
            request: queue,
        },
    );
    let queue_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let stats = server.stats();
    let stats_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    call(
        &mut server,
        u64::MAX,
        ApiRequest::ListJobRequests { pool_id: 1 },
    );
    let list_s = started.elapsed().as_secs_f64();
    assert_eq!(stats.jobs_unmatched, jobs as u64);

    let started = Instant::now();
    let old_unmatched = demands
        .iter()
        .filter(|d| !bodies.iter().any(|a| old_meets(a, d)))
        .count();
    let old_s = started.elapsed().as_secs_f64();
    assert_eq!(old_unmatched, jobs);

    println!("{agents} agents × {jobs} unmatched queued jobs (release build)");
    println!(
        "  queue the jobs (one request):       {:>10.3} ms",
        queue_s * 1e3
    );
    println!(
        "  stats():                            {:>10.3} ms",
        stats_s * 1e3
    );
    println!(
        "  job-request list:                   {:>10.3} ms",
        list_s * 1e3
    );
    println!(
        "  the old per-call matching (stats):  {:>10.3} ms",
        old_s * 1e3
    );
}

/// A registration with ten capabilities, as a small real agent sends.
fn agent(i: usize) -> TaskAgent {
    let system_capabilities: BTreeMap<String, String> = [
        ("Agent.Name", format!("agent-{i}")),
        ("Agent.OS", "Linux".into()),
        ("Agent.OSArchitecture", "X64".into()),
        ("Agent.Version", "4.260.0".into()),
        ("HOME", "/home/agent".into()),
        ("LANG", "C.UTF-8".into()),
        ("PATH", "/usr/local/bin:/usr/bin:/bin".into()),
        ("docker", "24.0.7".into()),
        ("git", "2.43.0".into()),
        ("node", "20.11.0".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    TaskAgent {
        name: format!("agent-{i}"),
        version: "4.260.0".into(),
        system_capabilities,
        ..TaskAgent::default()
    }
}

/// What the emulator did per agent and job before the capability index: build the agent's
/// capability map (system, then user on top) and check each demand against it.
fn old_meets(agent: &TaskAgent, demands: &[String]) -> bool {
    let mut caps: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in agent
        .system_capabilities
        .iter()
        .chain(agent.user_capabilities.iter())
    {
        caps.insert(k, v);
    }
    demands.iter().all(|demand| {
        let (name, value) = match demand.split_once(" -equals ") {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (demand.trim(), None),
        };
        caps.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case(name) && value.is_none_or(|want| v.eq_ignore_ascii_case(want))
        })
    })
}
