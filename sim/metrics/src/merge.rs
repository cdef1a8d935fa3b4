//! Merging the shard reports of one split run (`fleetsim run --shard I/N`) into the report one
//! process would have written: `Report::merge_shards`.
//!
//! The set is checked first, because a merge of reports that are not one run's shards would
//! be a wrong answer that looks right: every report must come from the same scenario (digest
//! and name), seed, mode and shard count; each index `0..N` must appear exactly once; and
//! sharded and whole-run reports do not mix. Each problem is a `MergeError` naming the files.
//!
//! Then the shards are rebuilt as recorders on the earliest shard's time zero (`run.
//! started_unix_us`) and added: histograms and counters add exactly, the pickup halves each
//! shard left open (`job_pickup.open`) join across shards to the microsecond, and time series
//! line up on the wall clock to the nearest second. Emulator counters are not summed (one shared
//! target): the snapshot read last is kept (`recorder::Recorder::merge`).
//!
//! A cross-shard pickup is measured on two clocks: the queueing shard's and the picking shard's,
//! each anchored at its machine's wall-clock reading of the common start. Their offset (NTP
//! keeps it to milliseconds) enters those samples; a pickup that seems to precede its queueing
//! counts as 0. Shards in one machine's processes share one clock.
//!
//! Pure: no IO, no clock. Thresholds are not judged here; the caller judges the scenario's on
//! the result (`Report::evaluate_thresholds`).

use std::fmt;

use fleetsim_core::shard::Shard;

use crate::recorder::Recorder;
use crate::report::{Report, ReportError, RunMeta};

/// What two reports of one shard set disagree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MergeField {
    /// `run.scenario_digest` (the scenario's content without its target).
    ScenarioDigest,
    /// `run.scenario` (the scenario's name).
    Scenario,
    /// `run.seed`.
    Seed,
    /// `run.mode`.
    Mode,
    /// `run.shard.count`.
    ShardCount,
}

impl fmt::Display for MergeField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MergeField::ScenarioDigest => "scenario digest",
            MergeField::Scenario => "scenario",
            MergeField::Seed => "seed",
            MergeField::Mode => "mode",
            MergeField::ShardCount => "shard count",
        })
    }
}

/// Why a set of reports is not the shards of one run, or could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MergeError {
    /// No reports were given.
    #[error("no reports to merge")]
    Empty,
    /// One report's contents did not decode.
    #[error("{label}: {source}")]
    Report {
        /// The report's label (its file name).
        label: String,
        /// What was wrong.
        source: ReportError,
    },
    /// Shard reports and whole-run reports in one set.
    #[error(
        "{sharded} is shard {shard} of a split run but {whole} is a whole run (no run.shard); \
         merge the shards of one run, or whole runs only"
    )]
    Mixed {
        /// A shard report's label.
        sharded: String,
        /// Its shard.
        shard: Shard,
        /// A whole-run report's label.
        whole: String,
    },
    /// Two reports disagree on what run they belong to.
    #[error(
        "{other} has {field} {other_value} but {first} has {field} {first_value}: they are not \
         shards of one run"
    )]
    Mismatch {
        /// What differs.
        field: MergeField,
        /// The first report's label.
        first: String,
        /// Its value.
        first_value: String,
        /// The differing report's label.
        other: String,
        /// Its value.
        other_value: String,
    },
    /// Two reports claim the same shard.
    #[error("{first} and {second} are both shard {shard}; give each shard's report once")]
    Duplicate {
        /// The shard claimed twice.
        shard: Shard,
        /// The first report claiming it.
        first: String,
        /// The second one.
        second: String,
    },
    /// Some shards of the run have no report.
    #[error("{}", missing_message(*count, missing))]
    Missing {
        /// The run's shard count.
        count: u32,
        /// The indices without a report, ascending.
        missing: Vec<u32>,
    },
    /// A report's `run.shard` is not a shard (index not below count, or count outside
    /// 1..=`MAX_SHARDS`): a file edited by hand or written by something else.
    #[error("{label}: run.shard {shard} is not a shard: {reason}")]
    Invalid {
        /// The report's label.
        label: String,
        /// What it claims.
        shard: Shard,
        /// Why that is not a shard.
        reason: fleetsim_core::shard::ShardError,
    },
    /// Some shard reports know their run time zero on the wall clock and some do not, so they
    /// cannot be put on one time line.
    #[error(
        "{with} has run.started_unix_us but {without} has none: shard reports of one run \
         either all carry their start or all share one time zero"
    )]
    Start {
        /// A report with `run.started_unix_us`.
        with: String,
        /// A report without it.
        without: String,
    },
}

fn missing_message(count: u32, missing: &[u32]) -> String {
    format!(
        "{} missing: a merge needs every shard's report",
        fleetsim_core::shard::describe_missing(count, missing)
    )
}

impl Report {
    /// Merge the reports of one split run, each with a label naming it in errors (its file
    /// name), into the report of the whole run. See the module docs for what is checked and
    /// how the shards add. Whole-run reports only (no `run.shard` anywhere) merge as
    /// `Report::merge` does, unchecked, for reports of separate runs.
    ///
    /// The result has `run.shards = N` and no `run.shard`; its `run.started_unix_us` is the
    /// earliest shard's, `wall_s` the longest, and `duration_s` the span from the earliest
    /// time zero to the latest end of measurement (the longest shard's when they share a
    /// start, as `--start-at` makes them). Pickup halves still open after the join count in
    /// `job_pickup.pending` / `unmatched` and are not carried further.
    pub fn merge_shards(inputs: &[(String, Report)]) -> Result<Report, MergeError> {
        let Some((first_label, first)) = inputs.first() else {
            return Err(MergeError::Empty);
        };
        let sharded = inputs.iter().find_map(|(l, r)| Some((l, r.run.shard?)));
        let whole = inputs.iter().find(|(_, r)| r.run.shard.is_none());
        let shard = match (sharded, whole) {
            (Some((l, s)), Some((w, _))) => {
                return Err(MergeError::Mixed {
                    sharded: l.clone(),
                    shard: s,
                    whole: w.clone(),
                });
            }
            (None, _) => return merge_whole_runs(inputs),
            (Some((_, s)), None) => s,
        };
        // Reports are input: a shard read from JSON was never checked by `Shard::new`, and its
        // count sizes the table of slots below.
        for (label, r) in inputs {
            if let Some(s) = r.run.shard
                && let Err(reason) = Shard::new(s.index, s.count)
            {
                return Err(MergeError::Invalid {
                    label: label.clone(),
                    shard: s,
                    reason,
                });
            }
        }
        for (label, r) in &inputs[1..] {
            check_same(first_label, &first.run, label, &r.run)?;
        }
        let ordered = check_complete(inputs, shard.count)?;
        let earliest = check_starts(inputs)?;
        merge_ordered(&ordered, earliest, shard.count)
    }
}

/// Reports of separate whole runs add as `Report::merge` adds them; a report that does not
/// decode is named.
fn merge_whole_runs(inputs: &[(String, Report)]) -> Result<Report, MergeError> {
    for (label, r) in inputs {
        r.to_recorder().map_err(|source| MergeError::Report {
            label: label.clone(),
            source,
        })?;
    }
    let reports: Vec<Report> = inputs.iter().map(|(_, r)| r.clone()).collect();
    Report::merge(&reports).map_err(|source| MergeError::Report {
        label: inputs[0].0.clone(),
        source,
    })
}

/// The first difference between two reports' runs that makes them shards of different runs.
fn check_same(first: &str, a: &RunMeta, other: &str, b: &RunMeta) -> Result<(), MergeError> {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".to_string());
    let count = |m: &RunMeta| m.shard.map_or(1, |s| s.count);
    let checks = [
        (
            MergeField::ScenarioDigest,
            opt(&a.scenario_digest),
            opt(&b.scenario_digest),
        ),
        (
            MergeField::Scenario,
            format!("{:?}", a.scenario),
            format!("{:?}", b.scenario),
        ),
        (MergeField::Seed, a.seed.to_string(), b.seed.to_string()),
        (
            MergeField::Mode,
            format!("{:?}", a.mode).to_lowercase(),
            format!("{:?}", b.mode).to_lowercase(),
        ),
        (
            MergeField::ShardCount,
            count(a).to_string(),
            count(b).to_string(),
        ),
    ];
    for (field, first_value, other_value) in checks {
        if first_value != other_value {
            return Err(MergeError::Mismatch {
                field,
                first: first.to_string(),
                first_value,
                other: other.to_string(),
                other_value,
            });
        }
    }
    Ok(())
}

/// The reports in shard order, once each index `0..count` is known to appear exactly once.
fn check_complete(
    inputs: &[(String, Report)],
    count: u32,
) -> Result<Vec<&(String, Report)>, MergeError> {
    let mut slots: Vec<Option<&(String, Report)>> = vec![None; count as usize];
    for input in inputs {
        let Some(shard) = input.1.run.shard else {
            continue;
        };
        // Every shard was checked valid and of the first's count, so the index is in range.
        let slot = &mut slots[shard.index as usize];
        if let Some(earlier) = slot {
            return Err(MergeError::Duplicate {
                shard,
                first: earlier.0.clone(),
                second: input.0.clone(),
            });
        }
        *slot = Some(input);
    }
    let missing: Vec<u32> = (0..count)
        .filter(|&i| slots[i as usize].is_none())
        .collect();
    if !missing.is_empty() {
        return Err(MergeError::Missing { count, missing });
    }
    Ok(slots.into_iter().flatten().collect())
}

/// The earliest run time zero (µs since the epoch), or 0 when no report carries one (all share
/// one time zero, e.g. virtual time); a mix is an error.
fn check_starts(inputs: &[(String, Report)]) -> Result<u64, MergeError> {
    let with = inputs.iter().find(|(_, r)| r.run.started_unix_us.is_some());
    let without = inputs.iter().find(|(_, r)| r.run.started_unix_us.is_none());
    match (with, without) {
        (Some((w, _)), Some((wo, _))) => Err(MergeError::Start {
            with: w.clone(),
            without: wo.clone(),
        }),
        _ => Ok(inputs
            .iter()
            .filter_map(|(_, r)| r.run.started_unix_us)
            .min()
            .unwrap_or(0)),
    }
}

/// Add the shards (in index order) on the earliest time zero.
fn merge_ordered(
    ordered: &[&(String, Report)],
    earliest: u64,
    count: u32,
) -> Result<Report, MergeError> {
    let open: usize = ordered
        .iter()
        .filter_map(|(_, r)| r.job_pickup.open.as_ref())
        .map(|o| o.queued.len() + o.picked.len())
        .sum();
    let mut rec = Recorder::new();
    // Every half a shard held stays held until its partner comes: the inputs already hold
    // them all in memory, so this bound adds none.
    rec.reserve_pending(open);
    let first = &ordered[0].1.run;
    let mut run = RunMeta {
        shard: None,
        shards: Some(count),
        started_unix_us: first.started_unix_us.map(|_| earliest),
        wall_s: 0.0,
        duration_s: 0.0,
        ..first.clone()
    };
    for (label, r) in ordered {
        let offset_us = r.run.started_unix_us.map_or(0, |s| s - earliest);
        let shard = r
            .to_recorder_at(offset_us)
            .map_err(|source| MergeError::Report {
                label: label.clone(),
                source,
            })?;
        rec.merge(&shard);
        run.wall_s = run.wall_s.max(r.run.wall_s);
        run.duration_s = run
            .duration_s
            .max(offset_us as f64 / 1e6 + r.run.duration_s);
        run.started_at = match (run.started_at.take(), &r.run.started_at) {
            (Some(a), Some(b)) => Some(a.min(b.clone())),
            (a, b) => a.or_else(|| b.clone()),
        };
    }
    Ok(Report::from_recorder(&rec, run))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Mode;
    use fleetsim_core::SimTime;
    use fleetsim_core::api::ErrorKind;
    use fleetsim_core::event::{Event, Outcome};
    use fleetsim_core::ops::{AgentState, Operation};
    use fleetsim_core::proto::TaskResult;

    const AGENTS: u32 = 30;
    const SHARDS: u32 = 3;
    const BASE_UNIX_US: u64 = 1_796_000_000_000_000;

    /// splitmix64: a tiny seeded generator, so the test stream is the same on every machine.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Who records an event: the shard of its agent, or for a queue event the shard of the
    /// job's arrival number (`arrival` maps request ids back to it).
    fn owner(ev: &Event, arrival: &std::collections::HashMap<u64, u64>, shard: Shard) -> bool {
        match *ev {
            Event::Op { agent, .. }
            | Event::JobPickedUp { agent, .. }
            | Event::JobFinished { agent, .. }
            | Event::AgentState { agent, .. } => shard.has_agent(agent),
            Event::JobQueued { request_id, .. } => shard.has_job(arrival[&request_id]),
            _ => shard.index == 0,
        }
    }

    /// Shift an event `by_us` earlier (onto a shard's later time zero).
    fn earlier(ev: &Event, by_us: u64) -> Event {
        let t = |s: SimTime| SimTime::from_micros(s.as_micros() - by_us);
        match *ev {
            Event::Op {
                agent,
                op,
                intended,
                done,
                outcome,
            } => Event::Op {
                agent,
                op,
                intended: t(intended),
                done: t(done),
                outcome,
            },
            Event::JobQueued { request_id, at } => Event::JobQueued {
                request_id,
                at: t(at),
            },
            Event::JobPickedUp {
                agent,
                request_id,
                at,
            } => Event::JobPickedUp {
                agent,
                request_id,
                at: t(at),
            },
            Event::JobFinished {
                agent,
                request_id,
                result,
                at,
            } => Event::JobFinished {
                agent,
                request_id,
                result,
                at: t(at),
            },
            Event::AgentState {
                agent,
                from,
                to,
                at,
            } => Event::AgentState {
                agent,
                from,
                to,
                at: t(at),
            },
            ref other => other.clone(),
        }
    }

    /// A seeded fleet's events in time order, starting after `start_us`: agents come online,
    /// call operations (latencies over four decades, some errors), and pick up jobs queued by
    /// arrival number, a few never picked up and a few picked up but never queued by the fleet.
    /// Returns the events and each request id's arrival number.
    fn stream(seed: u64, start_us: u64) -> (Vec<Event>, std::collections::HashMap<u64, u64>) {
        let mut rng = Rng(seed);
        let mut timed: Vec<(u64, Event)> = Vec::new();
        let at = SimTime::from_micros;
        for agent in 0..AGENTS {
            let t = start_us + rng.below(2_000_000);
            timed.push((
                t,
                Event::AgentState {
                    agent,
                    from: AgentState::Offline,
                    to: AgentState::Idle,
                    at: at(t),
                },
            ));
        }
        let ops = [
            Operation::PollMessage,
            Operation::PollEmpty,
            Operation::TimelineUpdate,
        ];
        let horizon = start_us + 20_000_000;
        for _ in 0..6_000 {
            let intended = start_us + 2_000_000 + rng.below(17_000_000);
            let latency = 10u64.pow(2 + rng.below(4) as u32) + rng.below(5_000);
            let outcome = if rng.below(23) == 0 {
                Outcome::Api(ErrorKind::Throttled)
            } else {
                Outcome::Ok
            };
            timed.push((
                intended + latency,
                Event::Op {
                    agent: rng.below(u64::from(AGENTS)) as u32,
                    op: ops[rng.below(3) as usize],
                    intended: at(intended),
                    done: at(intended + latency),
                    outcome,
                },
            ));
        }
        let mut arrival = std::collections::HashMap::new();
        for k in 0..900u64 {
            let id = 50_000 + 7 * k;
            arrival.insert(id, k);
            let queued = start_us + 2_000_000 + k * 17_000;
            timed.push((
                queued,
                Event::JobQueued {
                    request_id: id,
                    at: at(queued),
                },
            ));
            if rng.below(20) == 0 {
                continue; // never picked up: pending
            }
            let agent = rng.below(u64::from(AGENTS)) as u32;
            let picked = queued + rng.below(3_000_000);
            let done = picked + rng.below(1_000_000);
            timed.push((
                picked,
                Event::JobPickedUp {
                    agent,
                    request_id: id,
                    at: at(picked),
                },
            ));
            timed.push((
                done.min(horizon),
                Event::JobFinished {
                    agent,
                    request_id: id,
                    result: TaskResult::Succeeded,
                    at: at(done.min(horizon)),
                },
            ));
        }
        for j in 0..15u64 {
            let t = start_us + 3_000_000 + j * 900_000;
            timed.push((
                t,
                Event::JobPickedUp {
                    agent: (j as u32) % AGENTS,
                    request_id: 9_000_000 + j,
                    at: at(t),
                },
            ));
        }
        // Ties keep generation order, as one driver's channel would.
        timed.sort_by_key(|(t, _)| *t);
        (timed.into_iter().map(|(_, e)| e).collect(), arrival)
    }

    fn meta(shard: Option<Shard>, start_unix_us: u64, duration_s: f64) -> RunMeta {
        RunMeta {
            mode: Mode::Live,
            seed: 7,
            wall_s: 30.0,
            scenario: "fleet".to_string(),
            duration_s,
            started_unix_us: Some(start_unix_us),
            shard,
            scenario_digest: Some("00112233aabbccdd".to_string()),
            ..RunMeta::default()
        }
    }

    /// Write and read back: the merge sees only what a shard's JSON file holds.
    fn through_json(report: &Report) -> Report {
        let mut bytes = Vec::new();
        report.write_json(&mut bytes).expect("write");
        Report::read_json(bytes.as_slice()).expect("read")
    }

    /// The whole run's report and its shards' reports (through JSON), shard I's time zero
    /// `offsets_us[I]` after the earliest.
    fn whole_and_shards(offsets_us: [u64; 3]) -> (Report, Vec<(String, Report)>) {
        let start = 4_000_000;
        let (events, arrival) = stream(11, start);
        let duration_s = 24.0;
        let mut whole = Recorder::new();
        whole.set_fleet_size(u64::from(AGENTS));
        events.iter().for_each(|e| whole.record(e));
        let whole = Report::from_recorder(&whole, meta(None, BASE_UNIX_US, duration_s));
        let shards = (0..SHARDS)
            .map(|i| {
                let shard = Shard::new(i, SHARDS).expect("shard");
                let off = offsets_us[i as usize];
                let mut rec = Recorder::new();
                rec.set_fleet_size(u64::from(shard.agent_count(AGENTS)));
                for e in events.iter().filter(|e| owner(e, &arrival, shard)) {
                    rec.record(&earlier(e, off));
                }
                let m = meta(
                    Some(shard),
                    BASE_UNIX_US + off,
                    duration_s - off as f64 / 1e6,
                );
                let report = Report::from_recorder(&rec, m);
                (format!("shard-{i}.json"), through_json(&report))
            })
            .collect();
        (whole, shards)
    }

    // Goal: the merged report of three shards (through their JSON files, on different time
    // zeros) holds exactly the histograms of one recorder fed every event: pickup and every
    // operation, count, p50, p99 and max alike, including jobs queued by one shard and picked up
    // by another's agent; counters and agents add; open halves join to zero pending surplus.
    #[test]
    fn merged_shards_equal_one_recorder_of_every_event() {
        let (whole, shards) = whole_and_shards([0, 1_250_000, 2_700_000]);
        let cross: u64 = shards
            .iter()
            .map(|(_, r)| r.job_pickup.open.as_ref().expect("shard").picked.len() as u64)
            .sum();
        assert!(
            cross > 300,
            "the stream must exercise cross-shard pickups: {cross}"
        );
        let shard_samples: u64 = shards
            .iter()
            .map(|(_, r)| r.job_pickup.latency_s.count)
            .sum();
        assert!(shard_samples < whole.job_pickup.latency_s.count);

        let merged = Report::merge_shards(&shards).expect("one run's shards");
        assert_eq!(merged.job_pickup.latency_s, whole.job_pickup.latency_s);
        assert_eq!(
            merged.histograms, whole.histograms,
            "HDR histograms bit for bit"
        );
        assert_eq!(merged.operations, whole.operations);
        for op in ["poll_message", "poll_empty", "timeline_update"] {
            let (m, w) = (&merged.operations[op], &whole.operations[op]);
            let key = |l: &crate::report::LatencySummary| (l.count, l.p50, l.p99, l.max);
            assert_eq!(key(&m.latency_s), key(&w.latency_s), "{op}");
        }
        let pickup = |r: &Report| {
            let p = &r.job_pickup;
            (p.latency_s.count, p.pending, p.unmatched)
        };
        assert_eq!(pickup(&merged), pickup(&whole));
        assert_eq!(merged.job_pickup.pending, 900 - whole.jobs.started + 15);
        assert_eq!(merged.job_pickup.unmatched, 15, "the never-queued pickups");
        assert_eq!(merged.job_pickup.open, None, "a merged run is whole");
        assert_eq!(merged.jobs, whole.jobs);
        assert_eq!(merged.errors, whole.errors);
        assert_eq!(merged.requests, whole.requests);
        assert_eq!(merged.agents.by_state, whole.agents.by_state);
        assert_eq!(merged.run.shards, Some(SHARDS));
        assert_eq!(
            (merged.run.shard, merged.run.started_unix_us),
            (None, Some(BASE_UNIX_US))
        );
        let total = |r: &Report| -> (u64, u64, u64) {
            r.timeseries.iter().fold((0, 0, 0), |a, p| {
                (a.0 + p.requests, a.1 + p.jobs_queued, a.2 + p.jobs_started)
            })
        };
        assert_eq!(total(&merged), total(&whole));
    }

    // Goal: with time zeros whole seconds apart, the merged per-second series and timeline are
    // the whole run's second by second (shards line up on the wall clock).
    #[test]
    fn merged_time_series_line_up_on_the_wall_clock() {
        let (whole, shards) = whole_and_shards([0, 1_000_000, 3_000_000]);
        let merged = Report::merge_shards(&shards).expect("merge");
        let counts = |r: &Report| -> Vec<(u64, u64, u64, u64, u64)> {
            r.timeseries
                .iter()
                .map(|p| {
                    (
                        p.requests,
                        p.errors,
                        p.jobs_queued,
                        p.jobs_started,
                        p.jobs_finished,
                    )
                })
                .collect()
        };
        assert_eq!(counts(&merged), counts(&whole));
        assert_eq!(merged.timeseries.len(), whole.timeseries.len());
        // The timeline too, interval by interval: per-operation sketches, errors by kind,
        // pickups joined across shards, agents by state.
        assert!(whole.timeline.is_some());
        assert_eq!(merged.timeline, whole.timeline);
    }

    fn small(label: &str, shard: Option<Shard>) -> (String, Report) {
        let mut rec = Recorder::new();
        rec.record(&Event::JobQueued {
            request_id: 1,
            at: SimTime::from_millis(5),
        });
        let report = Report::from_recorder(&rec, meta(shard, BASE_UNIX_US, 10.0));
        (label.to_string(), report)
    }

    fn three() -> Vec<(String, Report)> {
        (0..3)
            .map(|i| small(&format!("s{i}.json"), Some(Shard::new(i, 3).expect("ok"))))
            .collect()
    }

    // Goal: each way a set can fail to be one run's shards is a typed error naming the files
    // or indices, and a complete set merges.
    #[test]
    fn invalid_shard_sets_are_refused_by_name() {
        assert!(matches!(Report::merge_shards(&[]), Err(MergeError::Empty)));
        assert!(Report::merge_shards(&three()).is_ok());

        let mismatch = |edit: &dyn Fn(&mut RunMeta), want: MergeField| {
            let mut set = three();
            edit(&mut set[2].1.run);
            let err = Report::merge_shards(&set).expect_err("mismatch");
            let text = err.to_string();
            match err {
                MergeError::Mismatch {
                    field,
                    first,
                    other,
                    ..
                } => {
                    assert_eq!(
                        (field, first.as_str(), other.as_str()),
                        (want, "s0.json", "s2.json")
                    )
                }
                e => panic!("{want}: {e}"),
            }
            assert!(
                text.contains("s2.json") && text.contains("s0.json"),
                "{text}"
            );
        };
        mismatch(
            &|m| m.scenario_digest = Some("ffff".into()),
            MergeField::ScenarioDigest,
        );
        mismatch(&|m| m.scenario = "other".into(), MergeField::Scenario);
        mismatch(&|m| m.seed = 8, MergeField::Seed);
        mismatch(&|m| m.mode = Mode::Virtual, MergeField::Mode);
        mismatch(
            &|m| m.shard = Some(Shard::new(2, 4).expect("ok")),
            MergeField::ShardCount,
        );

        let mut dup = three();
        dup[2].1.run.shard = Some(Shard::new(1, 3).expect("ok"));
        let err = Report::merge_shards(&dup).expect_err("duplicate");
        assert!(matches!(err, MergeError::Duplicate { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "s1.json and s2.json are both shard 1/3; give each shard's report once"
        );

        let err = Report::merge_shards(&three()[..2]).expect_err("missing");
        assert!(
            matches!(&err, MergeError::Missing { count: 3, missing } if missing == &[2]),
            "{err}"
        );
        assert!(err.to_string().starts_with("shard 2/3 missing"), "{err}");

        let mut mixed = three();
        mixed.push(small("whole.json", None));
        let err = Report::merge_shards(&mixed).expect_err("mixed");
        assert!(matches!(err, MergeError::Mixed { .. }), "{err}");
        assert!(err.to_string().contains("whole.json"), "{err}");

        let mut no_start = three();
        no_start[1].1.run.started_unix_us = None;
        let err = Report::merge_shards(&no_start).expect_err("start");
        assert!(
            matches!(&err, MergeError::Start { without, .. } if without == "s1.json"),
            "{err}"
        );

        let mut invalid = three();
        invalid[1].1.run.shard = Some(Shard { index: 5, count: 3 });
        let err = Report::merge_shards(&invalid).expect_err("invalid");
        assert!(
            matches!(&err, MergeError::Invalid { label, .. } if label == "s1.json"),
            "{err}"
        );
        invalid[1].1.run.shard = Some(Shard {
            index: 0,
            count: u32::MAX,
        });
        let err = Report::merge_shards(&invalid).expect_err("a count past MAX_SHARDS");
        assert!(matches!(err, MergeError::Invalid { .. }), "{err}");

        let mut corrupt = three();
        corrupt[1].1.histograms.job_pickup = "not base64!".into();
        let err = Report::merge_shards(&corrupt).expect_err("corrupt");
        assert!(
            err.to_string().starts_with("s1.json: histogram job_pickup"),
            "{err}"
        );
    }

    // Goal: a shard report lists at most the recorder's pending bound of open halves; the
    // halves past it are counted in `unmatched` (not listed, not lost from the counts), and the
    // counts survive a read back and a merge.
    #[test]
    fn open_halves_stop_at_the_pending_bound() {
        let mut rec = Recorder::with_pending_limit(2);
        for id in 0..5 {
            rec.record(&Event::JobQueued {
                request_id: id,
                at: SimTime::from_millis(id),
            });
        }
        let shard = Shard::new(0, 1).expect("shard");
        let report = through_json(&Report::from_recorder(
            &rec,
            meta(Some(shard), BASE_UNIX_US, 1.0),
        ));
        let open = report.job_pickup.open.as_ref().expect("shard report");
        assert_eq!((open.queued.len(), open.picked.len()), (2, 0));
        assert_eq!(
            (report.job_pickup.pending, report.job_pickup.unmatched),
            (2, 3)
        );
        let merged = Report::merge_shards(&[("only.json".to_string(), report)]).expect("merge");
        assert_eq!(
            (merged.job_pickup.pending, merged.job_pickup.unmatched),
            (2, 3)
        );
    }

    // Goal: shards read one shared emulator's counters, so the merge keeps the last read (the
    // largest monotone counters) and `jobs.requeued` with it, instead of summing them.
    #[test]
    fn emulator_counters_keep_the_last_read() {
        let mut set = three();
        for (i, (_, r)) in set.iter_mut().enumerate() {
            let n = [5, 9, 7][i];
            r.emulator = Some(fleetsim_core::api::EmulatorStats {
                jobs_completed: n,
                jobs_requeued: n / 2,
                ..Default::default()
            });
            r.jobs.requeued = n / 2;
        }
        let merged = Report::merge_shards(&set).expect("merge");
        let kept = merged.emulator.as_ref().expect("emulator");
        assert_eq!((kept.jobs_completed, merged.jobs.requeued), (9, 4));
    }

    // Goal: reports of whole runs (no `run.shard`) still add as before, unchecked, and the
    // result says nothing about shards.
    #[test]
    fn whole_run_reports_add_unchecked() {
        let mut a = small("a.json", None);
        let b = small("b.json", None);
        a.1.run.seed = 99;
        let merged = Report::merge_shards(&[a, b]).expect("merge");
        assert_eq!(merged.jobs.queued, 2);
        assert_eq!((merged.run.shards, merged.job_pickup.open), (None, None));
    }

    // Goal: a whole run's JSON gains no key from shards (no `job_pickup.open`, no
    // `run.shards`); a shard report carries its open halves and gets them back on reading.
    #[test]
    fn only_shard_reports_carry_open_halves() {
        let (label, whole) = small("whole.json", None);
        let json = serde_json::to_value(&whole).expect("json");
        assert!(json["job_pickup"].get("open").is_none(), "{label}");
        assert!(json["run"].get("shards").is_none());
        let (_, shard) = small("s.json", Some(Shard::new(0, 2).expect("ok")));
        let json = serde_json::to_value(&shard).expect("json");
        assert_eq!(
            json["job_pickup"]["open"]["queued"],
            serde_json::json!([[1, 5_000]])
        );
        let back = through_json(&shard).to_recorder().expect("rebuild");
        let open = back.open_pickups();
        assert_eq!((open.queued, open.picked), (vec![(1, 5_000)], vec![]));
        assert_eq!(back.pickups_pending(), 1, "counted once, not twice");
    }
}
