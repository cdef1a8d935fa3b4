//! Unit tests of the workload machine, driven on a virtual clock against a scripted server.

use std::time::Duration;

use super::*;
use crate::dist::{DurationDist, NumberDist};
use crate::job::{QueueJobsResponse, SyntheticStep};
use crate::proto::{ListOf, RunResult, RunState, TaskAgentJobRequest, TaskAgentPool};

fn model(duration_s: u64, cancel_rate: f64) -> JobModel {
    JobModel {
        duration: DurationDist::constant(Duration::from_secs(duration_s)),
        steps: NumberDist::constant(2.0),
        log_lines_per_s: 1.0,
        secrets: 0,
        secret_lines: 0,
        artifact_bytes: NumberDist::constant(0.0),
        failure_rate: 0.0,
        cancel_rate,
        demands: Vec::new(),
    }
}

fn config(source: Source, arrival: Arrival, jobs: JobModel, duration_s: u64) -> WorkloadConfig {
    WorkloadConfig {
        source,
        arrival,
        jobs,
        pool_name: "Default".into(),
        credential: Credential::Basic {
            user: "fleetsim".into(),
            password: "pat".into(),
        },
        duration: Duration::from_secs(duration_s),
        shard: Shard::WHOLE,
    }
}

/// A scripted emulator: pool 7, request ids from 100, jobs still queued when canceled (so
/// every cancel finishes its job as canceled).
#[derive(Default)]
struct FakeServer {
    next_request: u64,
    /// Every call seen, with the time it was sent.
    calls: Vec<(SimTime, ApiRequest)>,
}

impl FakeServer {
    fn answer(&mut self, at: SimTime, call: &ApiRequest) -> ApiResponse {
        self.calls.push((at, call.clone()));
        match call {
            ApiRequest::ListPools { .. } => ApiResponse::Pools(ListOf::new(vec![TaskAgentPool {
                id: 7,
                name: "default".into(),
                is_hosted: false,
                pool_type: "automation".into(),
                size: 0,
            }])),
            ApiRequest::QueueJobs { request, .. } => {
                let value = request
                    .expand()
                    .map(|_| {
                        self.next_request += 1;
                        TaskAgentJobRequest {
                            request_id: 100 + self.next_request,
                            ..TaskAgentJobRequest::default()
                        }
                    })
                    .collect::<Vec<_>>();
                ApiResponse::QueuedJobs(QueueJobsResponse {
                    count: value.len(),
                    value,
                })
            }
            ApiRequest::RunPipeline { pipeline_id, .. } => {
                self.next_request += 1;
                self.run(self.next_request, *pipeline_id, RunState::InProgress)
            }
            ApiRequest::GetPipelineRun {
                pipeline_id,
                run_id,
                ..
            } => {
                // Completed at the second check.
                let checks = self
                    .calls
                    .iter()
                    .filter(|(_, c)| matches!(c, ApiRequest::GetPipelineRun { run_id: r, .. } if r == run_id))
                    .count();
                let state = if checks >= 2 {
                    RunState::Completed
                } else {
                    RunState::InProgress
                };
                self.run(*run_id, *pipeline_id, state)
            }
            ApiRequest::UpdateBuild { build_id, .. } => ApiResponse::Build(crate::proto::Build {
                id: *build_id,
                build_number: String::new(),
                status: Some(crate::proto::BuildStatus::Cancelling),
                result: None,
                queue_time: None,
                finish_time: None,
                url: None,
                definition: None,
            }),
            ApiRequest::CancelJob { request_id, .. } => {
                ApiResponse::JobRequest(Box::new(TaskAgentJobRequest {
                    request_id: *request_id,
                    result: Some(TaskResult::Canceled),
                    ..TaskAgentJobRequest::default()
                }))
            }
            _ => ApiResponse::Error(crate::api::ApiError::new(ErrorKind::RouteNotFound, "no")),
        }
    }
}

impl FakeServer {
    fn run(&self, id: u64, pipeline_id: u32, state: RunState) -> ApiResponse {
        ApiResponse::PipelineRun(crate::proto::PipelineRun {
            id,
            name: format!("run {id}"),
            state,
            result: (state == RunState::Completed).then_some(RunResult::Succeeded),
            created_date: None,
            finished_date: None,
            url: None,
            pipeline: crate::proto::PipelineReference {
                id: pipeline_id,
                ..Default::default()
            },
        })
    }
}

/// Drive `w` against `server` until it is done or `until`, every call answered `latency`
/// after it was sent. Returns every event. A step cap turns a livelock into a failure.
fn drive(
    w: &mut Workload,
    server: &mut FakeServer,
    latency: Duration,
    until: SimTime,
) -> Vec<Event> {
    let mut events = Vec::new();
    let mut now = SimTime::ZERO;
    let mut pending: Option<(SimTime, CallId, ApiResponse)> = None;
    for _ in 0..100_000 {
        while let Some(WorkloadOutput::Send { id, request, .. }) = w.poll_transmit() {
            assert!(pending.is_none(), "two calls in flight");
            let resp = server.answer(now, &request.call);
            pending = Some((now + latency, id, resp));
        }
        events.extend(std::iter::from_fn(|| w.poll_event()));
        let next = match (&pending, w.poll_timeout()) {
            (Some((at, ..)), _) => *at,
            (None, Some((at, _))) => at,
            (None, None) => return events,
        };
        if next >= until {
            w.stop(until);
            events.extend(std::iter::from_fn(|| w.poll_event()));
            return events;
        }
        now = next.max(now);
        match pending.take() {
            Some((_, id, resp)) => w.handle_response(now, id, resp),
            None => w.handle_timeout(now),
        }
    }
    panic!("the workload did not settle within the step cap");
}

fn queued_at(events: &[Event]) -> Vec<SimTime> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::JobQueued { at, .. } => Some(*at),
            _ => None,
        })
        .collect()
}

// Goal: each arrival becomes a QueueJobs call to the looked-up pool, reported at its intended
// time, with one `queue_jobs` Op per call.
#[test]
fn arrivals_become_queue_calls_at_their_intended_times() {
    let cfg = config(
        Source::Emulator,
        Arrival::Constant { rate_per_s: 2.0 },
        model(10, 0.0),
        3,
    );
    let mut w = Workload::new(cfg, 1);
    let mut server = FakeServer::default();
    let events = drive(&mut w, &mut server, Duration::ZERO, SimTime::from_secs(10));
    let want: Vec<SimTime> = (0..6).map(|i| SimTime::from_millis(500 * i)).collect();
    assert_eq!(queued_at(&events), want);
    assert!(matches!(server.calls[0].1, ApiRequest::ListPools { .. }));
    assert!(
        server.calls[1..]
            .iter()
            .all(|(_, c)| matches!(c, ApiRequest::QueueJobs { pool_id: 7, .. }))
    );
    let ops = queue_ops_ok(&events);
    assert_eq!(ops, 6);
    assert_eq!(w.stats().queued, 6);
    assert_eq!(w.stats().pool_id, Some(7));
    assert!(w.is_done());
}

// Goal: arrivals that fall due while a call is in flight go out together in the next call,
// each still reported at its own intended time (a slow server shows as pickup delay).
#[test]
fn arrivals_due_during_a_slow_call_are_batched_at_their_own_times() {
    let cfg = config(
        Source::Emulator,
        Arrival::Constant { rate_per_s: 10.0 },
        model(10, 0.0),
        1,
    );
    let mut w = Workload::new(cfg, 1);
    let mut server = FakeServer::default();
    let events = drive(
        &mut w,
        &mut server,
        Duration::from_millis(350),
        SimTime::from_secs(10),
    );
    let want: Vec<SimTime> = (0..10).map(|i| SimTime::from_millis(100 * i)).collect();
    assert_eq!(queued_at(&events), want);
    let batches: Vec<usize> = server
        .calls
        .iter()
        .filter_map(|(_, c)| match c {
            ApiRequest::QueueJobs { request, .. } => Some(request.len()),
            _ => None,
        })
        .collect();
    assert!(
        batches.len() < 10 && batches.iter().sum::<usize>() == 10,
        "{batches:?}"
    );
}

// Goal: a job drawn as canceled is canceled 20–80 % into its duration after its intended queue
// time; a cancel that finds the job still queued is reported as that job's end, canceled.
#[test]
fn cancels_go_out_inside_the_job_and_report_queued_jobs_canceled() {
    let cfg = config(
        Source::Emulator,
        Arrival::Constant { rate_per_s: 1.0 },
        model(10, 1.0),
        5,
    );
    let mut w = Workload::new(cfg, 3);
    let mut server = FakeServer::default();
    let events = drive(&mut w, &mut server, Duration::ZERO, SimTime::from_secs(60));
    let queued: Vec<(u64, SimTime)> = events
        .iter()
        .filter_map(|e| match e {
            Event::JobQueued { request_id, at } => Some((*request_id, *at)),
            _ => None,
        })
        .collect();
    assert_eq!(queued.len(), 5);
    for (request_id, at) in &queued {
        let sent = server
            .calls
            .iter()
            .find(|(_, c)| matches!(c, ApiRequest::CancelJob { request_id: r, .. } if r == request_id))
            .map(|(t, _)| *t)
            .expect("every job is canceled");
        let into = sent.saturating_since(*at);
        assert!(
            (Duration::from_secs(2)..=Duration::from_secs(8)).contains(&into),
            "cancel {into:?} into a 10 s job"
        );
        assert!(events.iter().any(|e| matches!(e,
            Event::JobFinished { agent: GENERATOR_AGENT, request_id: r, result: TaskResult::Canceled, .. }
            if r == request_id)));
    }
    let s = w.stats();
    assert_eq!(
        (s.cancels_sent, s.canceled_queued, s.cancels_unsent),
        (5, 5, 0)
    );
}

// Goal: cancels whose time falls after the run's end are counted as unsent, never sent.
#[test]
fn cancels_after_the_end_are_counted_unsent() {
    let cfg = config(
        Source::Emulator,
        Arrival::Constant { rate_per_s: 1.0 },
        model(100, 1.0),
        3,
    );
    let mut w = Workload::new(cfg, 3);
    let mut server = FakeServer::default();
    drive(&mut w, &mut server, Duration::ZERO, SimTime::from_secs(5));
    let s = w.stats();
    assert_eq!((s.queued, s.cancels_sent, s.cancels_unsent), (3, 0, 3));
    assert!(w.poll_timeout().is_none() && w.is_done());
}

// Goal: with source = "server" the workload sends nothing and asks for no wake-up, whatever
// the arrival process says.
#[test]
fn server_source_sends_nothing() {
    let cfg = config(
        Source::Server,
        Arrival::Poisson { rate_per_s: 50.0 },
        model(10, 0.5),
        60,
    );
    let mut w = Workload::new(cfg, 1);
    assert!(w.poll_transmit().is_none());
    assert!(w.poll_timeout().is_none());
    assert!(w.poll_event().is_none());
    w.handle_timeout(SimTime::from_secs(30));
    assert!(w.poll_transmit().is_none());
    assert!(w.is_done());
}

// Goal: the jobs sent are exactly the job model's draws from `Jobs` stream 1 (job, then cancel,
// per arrival): the contract that gives both drivers the same jobs for a seed.
#[test]
fn jobs_are_the_stream_one_draws() {
    let jobs = model(10, 0.3);
    let cfg = config(
        Source::Emulator,
        Arrival::Constant { rate_per_s: 4.0 },
        jobs.clone(),
        2,
    );
    let mut w = Workload::new(cfg, 11);
    let mut server = FakeServer::default();
    drive(&mut w, &mut server, Duration::ZERO, SimTime::from_secs(3));
    let sent: Vec<SyntheticJob> = server
        .calls
        .iter()
        .filter_map(|(_, c)| match c {
            ApiRequest::QueueJobs { request, .. } => Some(request.jobs.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let mut rng = rng::stream(11, StreamKind::Jobs, 1);
    let want: Vec<SyntheticJob> = (0..8)
        .map(|_| {
            let job = jobs.sample_job(&mut rng);
            let _ = jobs.sample_cancel(&mut rng);
            job
        })
        .collect();
    assert_eq!(sent, want);
}

// Goal: a pool that is not there yet is looked up again after `POOL_RETRY`; arrivals wait.
#[test]
fn pool_lookup_is_retried() {
    let cfg = config(
        Source::Emulator,
        Arrival::Constant { rate_per_s: 1.0 },
        model(10, 0.0),
        10,
    );
    let mut w = Workload::new(cfg, 1);
    let Some(WorkloadOutput::Send { id, .. }) = w.poll_transmit() else {
        panic!("the pool lookup goes out first");
    };
    w.handle_response(
        SimTime::ZERO,
        id,
        ApiResponse::Pools(ListOf::new(Vec::new())),
    );
    assert!(w.poll_transmit().is_none());
    assert_eq!(
        w.poll_timeout(),
        Some((SimTime::ZERO + POOL_RETRY, WorkloadTimer::PoolRetry))
    );
    w.handle_timeout(SimTime::ZERO + POOL_RETRY);
    assert!(matches!(
        w.poll_transmit(),
        Some(WorkloadOutput::Send {
            request: Request {
                call: ApiRequest::ListPools { .. },
                ..
            },
            ..
        })
    ));
}

// Goal: a pipelines source queues one run per arrival through the Runs API, over its
// pipelines by weight with each pipeline's branch, follows every run every `FOLLOW_EVERY`
// until it completes, and counts runs and results; it queues no synthetic jobs.
#[test]
fn pipelines_source_runs_by_weight_and_follows_runs_to_their_result() {
    let targets = vec![
        PipelineTarget {
            id: 12,
            project: "proj".into(),
            weight: 3,
            branch: Some("refs/heads/main".into()),
        },
        PipelineTarget {
            id: 4,
            project: "p2".into(),
            weight: 1,
            branch: None,
        },
    ];
    let cfg = config(
        Source::Pipelines(targets),
        Arrival::Constant { rate_per_s: 10.0 },
        model(10, 0.0),
        40,
    );
    let mut w = Workload::new(cfg, 5);
    let mut server = FakeServer::default();
    let events = drive(&mut w, &mut server, Duration::ZERO, SimTime::from_secs(600));
    let runs: Vec<&ApiRequest> = server
        .calls
        .iter()
        .map(|(_, c)| c)
        .filter(|c| matches!(c, ApiRequest::RunPipeline { .. }))
        .collect();
    assert_eq!(runs.len(), 400);
    let first = runs
        .iter()
        .filter(|c| {
            matches!(
                c,
                ApiRequest::RunPipeline {
                    pipeline_id: 12,
                    ..
                }
            )
        })
        .count();
    assert!(
        (270..=330).contains(&first),
        "{first} of 400 runs to the weight-3 pipeline"
    );
    assert!(runs.iter().all(|c| match c {
        ApiRequest::RunPipeline { pipeline_id: 12, project, params } => {
            project == "proj"
                && params.resources
                    == Some(serde_json::json!({"repositories": {"self": {"refName": "refs/heads/main"}}}))
        }
        ApiRequest::RunPipeline { pipeline_id: 4, params, .. } => params.resources.is_none(),
        _ => false,
    }));
    assert!(
        !server
            .calls
            .iter()
            .any(|(_, c)| matches!(c, ApiRequest::QueueJobs { .. }))
    );
    // Two state checks per run, FOLLOW_EVERY apart.
    let checks = server
        .calls
        .iter()
        .filter(|(_, c)| matches!(c, ApiRequest::GetPipelineRun { run_id: 1, .. }))
        .map(|(t, _)| *t)
        .collect::<Vec<_>>();
    assert_eq!(
        checks,
        [
            SimTime::ZERO + FOLLOW_EVERY,
            SimTime::ZERO + FOLLOW_EVERY * 2
        ]
    );
    let r = w.stats().runs;
    assert_eq!(
        (r.queued, r.completed, r.succeeded, r.unfinished),
        (400, 400, 400, 0)
    );
    let ops = queue_ops_ok(&events);
    assert_eq!(ops, 400, "one queue_jobs op per run request");
}

// Goal: a pipeline run drawn as canceled is canceled through the Build API (its run id as the
// build id, status cancelling) 20–80 % into a length drawn from `jobs.duration`.
#[test]
fn pipeline_runs_drawn_as_canceled_are_canceled_through_the_build_api() {
    let targets = vec![PipelineTarget {
        id: 12,
        project: "proj".into(),
        weight: 1,
        branch: None,
    }];
    let cfg = config(
        Source::Pipelines(targets),
        Arrival::Constant { rate_per_s: 1.0 },
        model(10, 1.0),
        5,
    );
    let mut w = Workload::new(cfg, 9);
    let mut server = FakeServer::default();
    drive(&mut w, &mut server, Duration::ZERO, SimTime::from_secs(600));
    for (i, (sent, call)) in server
        .calls
        .iter()
        .filter(|(_, c)| matches!(c, ApiRequest::UpdateBuild { .. }))
        .enumerate()
    {
        let ApiRequest::UpdateBuild {
            project,
            build_id,
            update,
        } = call
        else {
            unreachable!()
        };
        assert_eq!(project, "proj");
        assert_eq!(update.status, Some(crate::proto::BuildStatus::Cancelling));
        // Run n was queued at n − 1 seconds (constant rate 1/s from 0).
        let queued = SimTime::from_secs(*build_id - 1);
        let into = sent.saturating_since(queued);
        assert!(
            (Duration::from_secs(2)..=Duration::from_secs(8)).contains(&into),
            "cancel {i} {into:?} into a 10 s run"
        );
    }
    let r = w.stats().runs;
    assert_eq!((r.queued, r.cancels_sent, r.cancels_delivered), (5, 5, 5));
}

// Goal: a cancel lands inside the job (20–80 % of its duration), never at its start, and the
// same seed gives the same delays.
#[test]
fn cancel_delay_falls_inside_the_job_and_is_seeded() {
    let step = |ms| SyntheticStep {
        duration_ms: ms,
        log_lines: 0,
        secret_lines: 0,
        artifact_bytes: 0,
    };
    let job = SyntheticJob {
        steps: vec![step(4_000), step(6_000)],
        secrets: 0,
        fail: false,
        demands: Vec::new(),
    };
    let draw = || {
        let mut rng = rng::stream(3, StreamKind::Jobs, 2);
        (0..200)
            .map(|_| cancel_delay(&job, &mut rng))
            .collect::<Vec<_>>()
    };
    let delays = draw();
    assert!(
        delays
            .iter()
            .all(|d| (2_000..=8_000).contains(&d.as_millis()))
    );
    assert!(delays.iter().any(|d| d.as_millis() < 4_000));
    assert!(delays.iter().any(|d| d.as_millis() > 6_000));
    assert_eq!(delays, draw());
    let empty = SyntheticJob {
        steps: vec![step(0)],
        ..job
    };
    assert_eq!(
        cancel_delay(&empty, &mut rng::stream(3, StreamKind::Jobs, 2)),
        Duration::from_millis(1)
    );
}

/// How many `queue_jobs` operations ended well.
fn queue_ops_ok(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Op {
                    op: Operation::QueueJobs,
                    outcome: Outcome::Ok,
                    ..
                }
            )
        })
        .count()
}

/// What a workload queued, in order, in terms every shard shares (request and run ids are the
/// server's): each job's intended time and parameters with when it was canceled, and each
/// pipeline run's intended time and pipeline with when it was canceled.
#[derive(Debug, PartialEq)]
struct Queued {
    at: SimTime,
    what: String,
    canceled_at: Option<SimTime>,
}

/// Drive shard `shard` of `cfg` (seed 9) to its end and list what it queued.
fn queued_by(cfg: &WorkloadConfig, shard: Shard) -> (Vec<Queued>, WorkloadStats) {
    let mut w = Workload::new(
        WorkloadConfig {
            shard,
            ..cfg.clone()
        },
        9,
    );
    let mut server = FakeServer::default();
    let events = drive(&mut w, &mut server, Duration::ZERO, SimTime::from_secs(600));
    let canceled_at = |id: u64| {
        server.calls.iter().find_map(|(t, c)| match c {
            ApiRequest::CancelJob { request_id, .. } if *request_id == id => Some(*t),
            ApiRequest::UpdateBuild { build_id, .. } if *build_id == id => Some(*t),
            _ => None,
        })
    };
    let jobs = server.calls.iter().filter_map(|(_, c)| match c {
        ApiRequest::QueueJobs { request, .. } => Some(request.jobs.iter()),
        _ => None,
    });
    let queued_events = events.iter().filter_map(|e| match e {
        Event::JobQueued { request_id, at } => Some((*request_id, *at)),
        _ => None,
    });
    let mut out: Vec<Queued> = jobs
        .flatten()
        .zip(queued_events)
        .map(|(job, (id, at))| Queued {
            at,
            what: format!("{job:?}"),
            canceled_at: canceled_at(id),
        })
        .collect();
    // Runs: the n-th RunPipeline call is run n (the fake numbers them from 1), its intended
    // time the n-th queue_jobs op's.
    let run_ops = events.iter().filter_map(|e| match e {
        Event::Op {
            op: Operation::QueueJobs,
            intended,
            ..
        } => Some(*intended),
        _ => None,
    });
    let runs = server.calls.iter().filter_map(|(_, c)| match c {
        ApiRequest::RunPipeline { pipeline_id, .. } => Some(*pipeline_id),
        _ => None,
    });
    if matches!(cfg.source, Source::Pipelines(_)) {
        out.extend(
            runs.zip(run_ops)
                .enumerate()
                .map(|(n, (pipeline, at))| Queued {
                    at,
                    what: format!("pipeline {pipeline}"),
                    canceled_at: canceled_at(n as u64 + 1),
                }),
        );
    }
    (out, w.stats())
}

// Goal: for 1 to 4 shards, the shards' queued jobs (intended times, job parameters, cancel
// times) and pipeline runs (pipeline picks, cancel times) are disjoint and together are, in
// order, exactly what the unsharded workload queues; each shard counts only its own. Fails if
// a shard skipped another's draws (its jobs would differ) or queued another's arrivals.
#[test]
fn shards_queue_a_partition_of_the_unsharded_jobs() {
    let mut jobs = model(10, 0.3);
    jobs.duration = DurationDist::uniform(Duration::from_secs(1), Duration::from_secs(30));
    let targets = vec![
        PipelineTarget {
            id: 12,
            project: "proj".into(),
            weight: 3,
            branch: None,
        },
        PipelineTarget {
            id: 4,
            project: "p2".into(),
            weight: 1,
            branch: None,
        },
    ];
    let arrival = Arrival::Poisson { rate_per_s: 3.0 };
    for source in [Source::Emulator, Source::Pipelines(targets)] {
        let cfg = config(source, arrival.clone(), jobs.clone(), 40);
        let (whole, whole_stats) = queued_by(&cfg, Shard::WHOLE);
        assert!(whole.len() > 60, "{} arrivals", whole.len());
        assert!(whole.iter().any(|q| q.canceled_at.is_some()));
        for count in 1..=4u32 {
            let shards: Vec<(Vec<Queued>, WorkloadStats)> = (0..count)
                .map(|i| queued_by(&cfg, Shard::new(i, count).unwrap()))
                .collect();
            // Arrival k belongs to shard k mod N: interleave the shards back into one list.
            let mut cursors: Vec<_> = shards.iter().map(|(q, _)| q.iter()).collect();
            let union: Vec<&Queued> = (0..whole.len())
                .filter_map(|k| cursors[k % count as usize].next())
                .collect();
            assert_eq!(union, whole.iter().collect::<Vec<_>>(), "{count} shards");
            assert!(
                cursors.iter_mut().all(|c| c.next().is_none()),
                "{count} shards queued more than the whole run"
            );
            let queued: u64 = shards.iter().map(|(_, s)| s.queued + s.runs.queued).sum();
            assert_eq!(queued, whole_stats.queued + whole_stats.runs.queued);
        }
    }
}

// Goal: a shard with no arrivals of its own (more shards than arrivals) looks up no pool and
// sends nothing, as a run without jobs does.
#[test]
fn a_shard_without_arrivals_sends_nothing() {
    let mut cfg = config(
        Source::Emulator,
        Arrival::Bursts {
            size: 2,
            every: Duration::from_secs(100),
        },
        model(10, 0.0),
        50,
    );
    cfg.shard = Shard::new(2, 3).unwrap();
    let mut w = Workload::new(cfg, 1);
    assert!(w.poll_transmit().is_none());
    assert!(w.poll_timeout().is_none());
    assert!(w.is_done());
}

// Goal: the arrivals still due when the run stops are counted, not stepped through: 10^12 of
// them (one per µs for 10^6 s, none sent because the pool lookup is never answered) give
// exactly 10^12 unsent, a third of them (by number) for shard 1 of 3, and a rate of 1e308 (every
// gap 0 µs, endless arrivals) ends with a saturated count. Stepping through them one at a time
// never returns.
#[test]
fn unsent_arrivals_are_counted_without_visiting_them() {
    let huge = |arrival, duration_s, shard| {
        let mut cfg = config(Source::Emulator, arrival, model(10, 0.0), duration_s);
        cfg.shard = shard;
        let mut w = Workload::new(cfg, 1);
        // The pool lookup is in flight and never answered: nothing is ever queued.
        assert!(matches!(
            w.poll_transmit(),
            Some(WorkloadOutput::Send {
                request: Request {
                    call: ApiRequest::ListPools { .. },
                    ..
                },
                ..
            })
        ));
        w.stop(SimTime::from_secs(duration_s));
        assert!(w.poll_transmit().is_none());
        w.stats().unsent
    };
    let per_us = Arrival::Constant {
        rate_per_s: 1_000_000.0,
    };
    assert_eq!(
        huge(per_us.clone(), 1_000_000, Shard::WHOLE),
        1_000_000_000_000
    );
    let shard = Shard::new(1, 3).unwrap();
    assert_eq!(huge(per_us, 1_000_000, shard), 333_333_333_333);
    let absurd = Arrival::Poisson { rate_per_s: 1e308 };
    assert_eq!(huge(absurd, 5, Shard::WHOLE), u64::MAX);
}
