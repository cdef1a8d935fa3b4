//! Matching jobs to agents costs no request O(agents × queued jobs): the stats and job-list
//! routes evaluate no capability at all, a registration evaluates each queued demand set once,
//! a new demand set each agent of its pool once, and a dispatch pass looks at the idle agents
//! at most once per demand set. Proven by counting evaluations (`Server::match_checks`), never
//! by timing.

mod server_support;

use fleetsim_core::api::{ApiRequest, ApiResponse};
use server_support::*;

fn tools(i: usize) -> String {
    format!("tool{i}")
}

// Goal: with 30 agents and 40 queued jobs no agent can take, the stats and job-list routes do
// no capability evaluation at all (they rebuilt every agent's capability map for every such
// job under the global lock: 3,000 × 3,000 made stats take 1.76 s), and still count the
// unmatched jobs right; a registration evaluates each queued demand set once.
#[test]
fn stats_and_job_lists_evaluate_no_capabilities() {
    let mut h = Harness::new(config());
    for i in 0..30 {
        register(&mut h, &format!("agent{i}"), &[("docker", "")]);
    }
    let before = h.server.match_checks();
    let jobs = (0..40)
        .map(|i| simple_job(1, 0, &[tools(i).as_str()]))
        .collect();
    queue(&mut h, jobs);
    assert!(
        h.server.match_checks() - before <= 40 * 30,
        "each new demand set looks at each agent of the pool once"
    );

    let before = h.server.match_checks();
    for _ in 0..5 {
        let ApiResponse::Stats(stats) = h.call(pat(), ApiRequest::AdminStats) else {
            panic!("stats")
        };
        assert_eq!(stats.jobs_unmatched, 40);
        let ApiResponse::JobRequests(list) =
            h.call(pat(), ApiRequest::ListJobRequests { pool_id: 1 })
        else {
            panic!("job requests")
        };
        assert!(
            list.value
                .iter()
                .all(|j| j.state.as_deref() == Some("unmatched"))
        );
    }
    assert_eq!(
        h.server.match_checks(),
        before,
        "read routes evaluate nothing"
    );

    // A new agent that can run tool7 is one evaluation per queued demand set, and matches.
    let tool7 = tools(7);
    register(&mut h, "has-tool7", &[(tool7.as_str(), "1")]);
    assert!(h.server.match_checks() - before <= 40);
    assert_eq!(h.server.stats().jobs_unmatched, 39);
}

// Goal: a dispatch pass looks at the idle agents at most once per demand set: 20 queued jobs
// that only a busy agent can run, and 10 idle agents that cannot, cost 10 evaluations when one
// more agent comes online, not 20 × 10; jobs nobody can run cost none. The right job still
// goes to the right agent.
#[test]
fn dispatch_scans_idle_agents_once_per_demand_set() {
    let mut h = Harness::new(config());
    let busy = online_agent(&mut h, "busy", &[("docker", "")]);
    queue(&mut h, vec![simple_job(1, 0, &["docker"])]);
    take_message(&mut h, &busy);
    for i in 0..10 {
        online_agent(&mut h, &format!("plain{i}"), &[]);
    }
    let mut jobs: Vec<_> = (0..20).map(|_| simple_job(1, 0, &["docker"])).collect();
    jobs.extend((0..20).map(|i| simple_job(1, 0, &[tools(i).as_str()])));
    let queued = queue(&mut h, jobs);
    let before = h.server.match_checks();
    let late = online_agent(&mut h, "late", &[]);
    let checks = h.server.match_checks() - before;
    assert!(
        checks <= 11 + 21,
        "{checks} evaluations: at most one per idle agent for the docker set, plus the new \
         agent against each queued demand set"
    );
    assert_eq!(h.server.stats().jobs_assigned, 1);

    let docker = online_agent(&mut h, "docker2", &[("docker", "")]);
    let m = take_message(&mut h, &docker);
    assert_eq!(
        open_job(&docker, &m).request_id,
        queued[0].request_id,
        "FIFO"
    );
    let _ = late;
}
