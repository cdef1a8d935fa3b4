//! Which idle agent gets a queued job: one whose long poll is parked takes it at once, so
//! dispatch prefers parked agents (lowest id first) over agents between polls, whose job would
//! wait for their next poll (the ~10 s live pickup p99 this guards against).

mod server_support;

use fleetsim_core::api::ApiResponse;
use server_support::*;

// Goal: with a lower-id agent idle between polls and a higher-id agent parked, a new job goes
// to the parked agent and its poll is answered with the job at once; the agent between polls
// gets nothing.
#[test]
fn a_queued_job_goes_to_a_parked_agent_before_one_between_polls() {
    let mut h = Harness::new(config());
    let between = online_agent(&mut h, "between-polls", &[]);
    let waiting = online_agent(&mut h, "waiting", &[]);
    assert!(between.id < waiting.id, "lowest id is the one not polling");
    let (poll, answer) = h.send(bearer(&waiting.token), get_message(&waiting, None));
    assert_eq!(answer, None, "parked");

    let queued = queue(&mut h, vec![simple_job(1, 0, &[])]);

    let Some(ApiResponse::Message(m)) = h.released_for(poll).cloned() else {
        panic!(
            "the parked poll was not answered with the job: {:?}",
            h.released
        )
    };
    let job = open_job(&waiting, &m);
    assert_eq!(job.request_id, queued[0].request_id);
    let view = h.server.job_request(queued[0].request_id).expect("job");
    assert_eq!(view.reserved_agent.map(|r| r.id), Some(waiting.id));
    let (_, answer) = h.send(bearer(&between.token), get_message(&between, None));
    assert_eq!(answer, None, "the agent between polls has no message");
}

// Goal: among parked agents the lowest id wins (deterministic), and with nobody parked the job
// still goes to an idle agent (lowest id) rather than waiting.
#[test]
fn parked_ties_break_by_lowest_id_and_idle_agents_still_get_work() {
    let mut h = Harness::new(config());
    let first = online_agent(&mut h, "first", &[]);
    let second = online_agent(&mut h, "second", &[]);
    let third = online_agent(&mut h, "third", &[]);
    let (poll_third, _) = h.send(bearer(&third.token), get_message(&third, None));
    let (poll_second, _) = h.send(bearer(&second.token), get_message(&second, None));

    let queued = queue(&mut h, vec![simple_job(1, 0, &[])]);
    assert!(
        matches!(h.released_for(poll_second), Some(ApiResponse::Message(_))),
        "the lower-id parked agent takes it: {:?}",
        h.released
    );
    assert_eq!(h.released_for(poll_third), None);
    let view = h.server.job_request(queued[0].request_id).expect("job");
    assert_eq!(view.reserved_agent.map(|r| r.id), Some(second.id));

    // Only `first` (never polled) and `third` (parked) are idle now; `third` is parked.
    let queued = queue(&mut h, vec![simple_job(1, 0, &[]), simple_job(1, 0, &[])]);
    assert!(matches!(
        h.released_for(poll_third),
        Some(ApiResponse::Message(_))
    ));
    let owner = |h: &Harness, i: usize| {
        h.server
            .job_request(queued[i].request_id)
            .and_then(|v| v.reserved_agent)
            .map(|r| r.id)
    };
    assert_eq!(
        owner(&h, 0),
        Some(third.id),
        "the older job to the parked agent"
    );
    assert_eq!(
        owner(&h, 1),
        Some(first.id),
        "the next to the agent between polls"
    );
    let m = take_message(&mut h, &first);
    assert_eq!(open_job(&first, &m).request_id, queued[1].request_id);
}

// Goal: an agent with its main poll and its keep-alive GET both parked ranks before an agent
// with one parked poll (which may be only the keep-alive, whose answer the agent discards):
// the job is answered on the lower-id agent's poll only when no agent has more parked.
#[test]
fn more_parked_polls_rank_first() {
    let mut h = Harness::new(config());
    let one = online_agent(&mut h, "keepalive-only", &[]);
    let two = online_agent(&mut h, "main-and-keepalive", &[]);
    let (poll_one, _) = h.send(bearer(&one.token), get_message(&one, None));
    let (main_two, _) = h.send(bearer(&two.token), get_message(&two, None));
    let (keep_two, _) = h.send(bearer(&two.token), get_message(&two, None));

    let queued = queue(&mut h, vec![simple_job(1, 0, &[])]);
    let view = h.server.job_request(queued[0].request_id).expect("job");
    assert_eq!(view.reserved_agent.map(|r| r.id), Some(two.id));
    assert!(matches!(
        h.released_for(main_two),
        Some(ApiResponse::Message(_))
    ));
    assert!(matches!(
        h.released_for(keep_two),
        Some(ApiResponse::Message(_))
    ));
    assert_eq!(h.released_for(poll_one), None);
}
