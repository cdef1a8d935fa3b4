//! The run report: the one serialised result of a run (`--out report.json`), versioned by
//! `schema_version`, with the stable keys users script against (product.md "Reports").
//!
//! A report carries its HDR histograms in serialized form (V2 + DEFLATE, base64), so reports
//! from shards merge exactly: `Report::merge_shards` (in `merge`) checks one run's shard set,
//! rebuilds recorders from the reports, adds them and recomputes every percentile and rate;
//! `Report::merge` adds whole-run reports unchecked. Reading and writing JSON goes through any
//! `io::Read`/`io::Write` the caller opens; this module never opens files itself.

use std::collections::BTreeMap;
use std::io;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use fleetsim_core::SimTime;
use fleetsim_core::api::EmulatorStats;
use fleetsim_core::event::CryptoOp;
use fleetsim_core::ops::{AgentState, Operation};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

use crate::names;
use crate::recorder::{self, Recorder};
use crate::thresholds::{Threshold, ThresholdResult};

/// Which driver produced a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Real sockets, real clock (`fleetsim run`).
    #[default]
    Live,
    /// Discrete events in virtual time (`fleetsim simulate`).
    Virtual,
}

/// What the driver knows about the run that the events do not say.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// Live or virtual.
    pub mode: Mode,
    /// The run seed every random stream derives from.
    pub seed: u64,
    /// Wall-clock seconds the run took.
    pub wall_s: f64,
    /// The scenario's name.
    pub scenario: String,
    /// RFC 3339 wall-clock start, when the driver knows it (live mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Run-time seconds the rates divide by (virtual seconds in virtual mode). Zero means "the
    /// time of the last recorded event".
    #[serde(default)]
    pub duration_s: f64,
    /// Microseconds since the Unix epoch of run time zero (live mode): the instant every
    /// `SimTime` of this run counts from. Shards of one run share it (`--start-at`); a merge
    /// aligns time series and joins pickups across shards on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_unix_us: Option<u64>,
    /// Which shard of a split run this report is (`fleetsim run --shard I/N`); absent for a
    /// whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<fleetsim_core::shard::Shard>,
    /// `Scenario::digest` of the scenario the run ran (without its target): shards of one run
    /// carry the same digest, and a merge refuses reports whose digests differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario_digest: Option<String>,
    /// How many shard reports this report was merged from (`Report::merge_shards`); absent
    /// for a run that was not merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<u32>,
}

/// Job counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobsReport {
    /// Jobs the generator queued.
    pub queued: u64,
    /// Jobs an agent picked up (held the message).
    pub started: u64,
    /// Jobs finished as succeeded, succeeded with issues or skipped.
    pub succeeded: u64,
    /// Jobs finished as failed.
    pub failed: u64,
    /// Jobs finished as canceled.
    pub canceled: u64,
    /// Jobs an agent gave up without a result: still running when the run ended, or the agent
    /// stopped (fatal error, crash). Kept apart from `failed` so a run's end is not a failure.
    #[serde(default)]
    pub abandoned: u64,
    /// Jobs the server handed out again after a lease expired (emulator stats).
    pub requeued: u64,
    /// Jobs neither finished, running nor waiting at the end (see `Recorder::set_jobs_lost`).
    pub lost: u64,
}

/// A latency distribution summarised in seconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Samples in the histogram.
    pub count: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest sample (HDR-rounded to 3 significant digits).
    pub max: f64,
}

/// Pipeline runs of a `pipelines` job source: queued through the Runs API, followed to their
/// result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunsReport {
    /// Runs the server accepted.
    pub queued: u64,
    /// Run requests that failed.
    pub refused: u64,
    /// Arrivals not queued (the followed-runs bound, or the run stopped first).
    pub unsent: u64,
    /// Runs seen completed, by result below.
    pub completed: u64,
    /// Completed with `succeeded`.
    pub succeeded: u64,
    /// Completed with `failed`.
    pub failed: u64,
    /// Completed with `canceled`.
    pub canceled: u64,
    /// A result this client does not know.
    pub other: u64,
    /// Runs not completed when the run ended.
    pub unfinished: u64,
    /// Run cancels sent through the Build API (runs drawn as canceled).
    #[serde(default)]
    pub cancels_sent: u64,
    /// Of those, the ones that failed.
    #[serde(default)]
    pub cancel_errors: u64,
}

impl From<fleetsim_core::workload::RunStats> for RunsReport {
    fn from(r: fleetsim_core::workload::RunStats) -> Self {
        RunsReport {
            queued: r.queued,
            refused: r.refused,
            unsent: r.unsent,
            completed: r.completed,
            succeeded: r.succeeded,
            failed: r.failed,
            canceled: r.canceled,
            other: r.other,
            unfinished: r.unfinished,
            cancels_sent: r.cancels_sent,
            cancel_errors: r.cancel_errors,
        }
    }
}

impl RunsReport {
    /// Add another shard's counts.
    pub fn add(&mut self, o: &RunsReport) {
        self.queued += o.queued;
        self.refused += o.refused;
        self.unsent += o.unsent;
        self.completed += o.completed;
        self.succeeded += o.succeeded;
        self.failed += o.failed;
        self.canceled += o.canceled;
        self.other += o.other;
        self.unfinished += o.unfinished;
        self.cancels_sent += o.cancels_sent;
        self.cancel_errors += o.cancel_errors;
    }
}

/// Job pickup: enqueue → an agent holds the job message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PickupReport {
    /// The latency distribution.
    pub latency_s: LatencySummary,
    /// Jobs queued but not picked up by the end of the run.
    pub pending: u64,
    /// Pickups whose queue event never arrived (or the other way round past the bound).
    pub unmatched: u64,
    /// Of the samples, those taken from the server's own times (`queueTime` → `receiveTime`
    /// of jobs the fleet did not queue); the others are on the fleet's clock, from the intended
    /// queue time.
    #[serde(default)]
    pub server_clock: u64,
    /// Shard reports only (`run.shard` set): the halves of the pickup join still open at the
    /// end, so a merge can join a job one shard queued with its pickup by another shard's
    /// agent. Absent from whole runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<OpenPickups>,
}

/// Open halves of the pickup join: `[request id, µs since run time zero]` pairs (time zero is
/// `run.started_unix_us`), sorted by id. Bounded by the recorder's pending limit
/// (`recorder::DEFAULT_PENDING_LIMIT` halves in all): a half past it was never held, and counts
/// in `unmatched` instead. Each list is also counted in `pending` (queued) or `unmatched`
/// (picked).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenPickups {
    /// Jobs queued by this shard and not picked up by any of its agents.
    pub queued: Vec<(u64, u64)>,
    /// Jobs this shard's agents picked up that this shard did not queue.
    pub picked: Vec<(u64, u64)>,
}

/// One operation's counters and latency.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OperationReport {
    /// Calls finished, successful or not.
    pub count: u64,
    /// Calls that failed.
    pub errors: u64,
    /// `errors / count` (0 when there were no calls).
    pub error_rate: f64,
    /// Calls per run second.
    pub rate_per_s: f64,
    /// Latency of the successful calls from their intended start.
    pub latency_s: LatencySummary,
    /// Failed calls by error label.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors_by_kind: BTreeMap<String, u64>,
}

/// All calls together.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestsReport {
    /// Calls finished, every operation.
    pub count: u64,
    /// Calls per run second.
    pub rate_per_s: f64,
}

/// Errors over all operations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorsReport {
    /// Failed calls.
    pub count: u64,
    /// Failed calls / all calls.
    pub rate: f64,
    /// Failed calls by error label.
    pub by_kind: BTreeMap<String, u64>,
}

/// The fleet's agents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentsReport {
    /// Agents by state at the end of the run.
    pub by_state: BTreeMap<String, u64>,
    /// The largest number of agents busy at once.
    pub peak_busy: u64,
    /// Job-token rotations.
    pub tokens_rotated: u64,
    /// Secret occurrences masked before sending logs.
    pub secrets_masked: u64,
}

/// One crypto operation on one side.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CryptoReport {
    /// Operations done.
    pub ops: u64,
    /// Bytes processed.
    pub bytes: u64,
    /// Nanoseconds spent, as measured by the driver (0 when modelled).
    pub nanos: u64,
    /// Operations per second of crypto time (one core's throughput); `None` when unmeasured.
    pub ops_per_s: Option<f64>,
    /// Megabytes (10^6 bytes) per second of crypto time; `None` when unmeasured or no bytes.
    pub mb_per_s: Option<f64>,
}

/// The discrete-event engine's own figures (virtual mode only).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineStats {
    /// Events processed.
    pub events: u64,
    /// Events per wall second.
    pub events_per_s: f64,
    /// Virtual seconds simulated.
    pub virtual_s: f64,
    /// Wall seconds the simulation took.
    pub wall_s: f64,
}

/// One second of the run, for charts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TimePoint {
    /// Start of the interval, run seconds.
    pub t_s: u64,
    /// Calls finished in the interval.
    pub requests: u64,
    /// Failed calls in the interval.
    pub errors: u64,
    /// Jobs queued in the interval.
    pub jobs_queued: u64,
    /// Jobs picked up in the interval.
    pub jobs_started: u64,
    /// Jobs finished in the interval.
    pub jobs_finished: u64,
    /// Agents by state at the end of the interval, in `AgentState::ALL` order.
    pub agents: [u64; 4],
    /// Pickup p50 of the pickups recorded in the interval, seconds.
    pub pickup_p50_s: Option<f64>,
    /// Pickup p99 of the pickups recorded in the interval, seconds.
    pub pickup_p99_s: Option<f64>,
}

/// Histograms in serialized HDR form, values in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HistogramsReport {
    /// Always `names::HISTOGRAM_ENCODING`.
    pub encoding: String,
    /// The job pickup histogram.
    pub job_pickup: String,
    /// Successful-call latency per operation (operations with no successful call are absent).
    pub operations: BTreeMap<String, String>,
}

/// The run report. Field order is the JSON key order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `names::SCHEMA_VERSION`.
    pub schema_version: u32,
    /// What the driver knows about the run.
    pub run: RunMeta,
    /// Job counters.
    pub jobs: JobsReport,
    /// The headline: enqueue → an agent holds the job.
    pub job_pickup: PickupReport,
    /// Per operation, keyed by `Operation::name`; operations never called are absent.
    pub operations: BTreeMap<String, OperationReport>,
    /// All calls together.
    pub requests: RequestsReport,
    /// Errors over all operations.
    pub errors: ErrorsReport,
    /// The fleet's agents.
    pub agents: AgentsReport,
    /// `crypto.<side>.<op>`.
    pub crypto: BTreeMap<String, BTreeMap<String, CryptoReport>>,
    /// Threshold results, in scenario order.
    pub thresholds: Vec<ThresholdResult>,
    /// Virtual mode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineStats>,
    /// Virtual mode only: hash of the event trace; equal seeds and commits give equal hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_hash: Option<String>,
    /// The emulator's figures for the run, when the driver could read them: each counter's
    /// change during the run (leaked secrets, completions, requeues, tokens), each gauge at its
    /// end. Thresholds on `emulator.*` judge these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emulator: Option<EmulatorStats>,
    /// The emulator's lifetime totals before (`start`) and after (`end`) the run, kept apart
    /// from the run's figures: a target may have served other runs before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emulator_lifetime: Option<recorder::EmulatorLifetime>,
    /// Pipeline runs a `[jobs] source = "pipelines"` queued, and how they ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<RunsReport>,
    /// One point per run second, for charts.
    pub timeseries: Vec<TimePoint>,
    /// Per-interval figures for the HTML charts (per-operation percentiles, errors by kind,
    /// pickup, agents by state), at most `timeline::MAX_INTERVALS` intervals. Absent from
    /// reports written before it existed (they still load, merge and compare).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<crate::timeline::TimelineReport>,
    /// Serialized HDR histograms, so reports merge exactly.
    pub histograms: HistogramsReport,
    /// Set when a live run never did part of its work (`crate::incomplete::check`): such a run
    /// fails with exit code 3 whatever its thresholds say. Absent when the run was complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<crate::incomplete::Incomplete>,
    /// The `[[faults]]` the driver applied, in the order they ended (absent: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultReport>,
}

/// One applied fault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultReport {
    /// `fleetsim_core::faults::FaultKind::name`.
    pub kind: String,
    /// Run time it started, seconds.
    pub start_s: f64,
    /// Run time it ended, seconds; absent for an instant fault or a crash with no recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_s: Option<f64>,
    /// Agents of this process it hit (0 for a server fault).
    pub agents: u64,
}

/// Why a report could not be read or merged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The JSON did not parse or did not match the report's shape.
    #[error("report JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Another schema version than this build writes.
    #[error("report schema_version {found} is not supported (this build reads {supported})")]
    Version {
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// An embedded histogram did not decode.
    #[error("histogram {name}: {reason}")]
    Histogram {
        /// `job_pickup` or the operation's name.
        name: String,
        /// What was wrong.
        reason: String,
    },
    /// `Report::merge` got an empty list.
    #[error("no reports to merge")]
    Empty,
}

impl Report {
    /// Build the report of a recorder. Thresholds, `engine` and `trace_hash` are left empty for
    /// the caller (`evaluate_thresholds`, the virtual-time driver).
    pub fn from_recorder(rec: &Recorder, mut run: RunMeta) -> Report {
        if run.duration_s <= 0.0 {
            run.duration_s = rec.last_event().as_secs_f64();
        }
        let per_s = |n: u64| {
            if run.duration_s > 0.0 {
                n as f64 / run.duration_s
            } else {
                0.0
            }
        };
        let mut operations = BTreeMap::new();
        let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
        let mut histograms = BTreeMap::new();
        for op in rec.operations_seen() {
            let stats = &rec.ops[op as usize];
            let errors = stats.error_count();
            let count = stats.ok() + errors;
            let mut errors_by_kind = BTreeMap::new();
            for (i, &n) in stats.errors.iter().enumerate().filter(|(_, n)| **n > 0) {
                errors_by_kind.insert(names::error_label(i).to_string(), n);
                *by_kind
                    .entry(names::error_label(i).to_string())
                    .or_default() += n;
            }
            if let Some(h) = &stats.latency_us {
                histograms.insert(op.name().to_string(), encode_histogram(h));
            }
            let report = OperationReport {
                count,
                errors,
                error_rate: ratio(errors, count),
                rate_per_s: per_s(count),
                latency_s: summarize(stats.latency_us.as_ref()),
                errors_by_kind,
            };
            operations.insert(op.name().to_string(), report);
        }
        let (requests, errors) = (rec.requests(), rec.errors());
        Report {
            schema_version: names::SCHEMA_VERSION,
            jobs: rec.jobs(),
            job_pickup: PickupReport {
                latency_s: summarize(Some(&rec.pickup_us)),
                pending: rec.pickups_pending(),
                unmatched: rec.pickups_unmatched(),
                server_clock: rec.pickups_server_clock(),
                open: run.shard.is_some().then(|| rec.open_pickups()),
            },
            operations,
            requests: RequestsReport {
                count: requests,
                rate_per_s: per_s(requests),
            },
            errors: ErrorsReport {
                count: errors,
                rate: ratio(errors, requests),
                by_kind,
            },
            agents: AgentsReport {
                by_state: AgentState::ALL
                    .iter()
                    .map(|&s| (s.name().to_string(), rec.agents_in(s)))
                    .collect(),
                peak_busy: rec.peak_busy,
                tokens_rotated: rec.tokens_rotated,
                secrets_masked: rec.secrets_masked,
            },
            crypto: crypto_report(rec),
            thresholds: Vec::new(),
            engine: None,
            trace_hash: None,
            emulator: rec.emulator.clone(),
            emulator_lifetime: rec.emulator_lifetime.clone(),
            runs: rec.runs,
            timeseries: timeseries(rec),
            timeline: rec.timeline.to_report(),
            histograms: HistogramsReport {
                encoding: names::HISTOGRAM_ENCODING.to_string(),
                job_pickup: encode_histogram(&rec.pickup_us),
                operations: histograms,
            },
            incomplete: None,
            faults: rec.faults.clone(),
            run,
        }
    }

    /// Merge reports of separate whole runs exactly, unchecked: histograms add, counters add,
    /// percentiles and rates are recomputed (the shards of one split run go through
    /// `Report::merge_shards`, which checks the set and joins pickups across shards). The run
    /// takes the first report's mode, seed and scenario, the longest wall time and duration,
    /// and the earliest start. Thresholds, `engine` and `trace_hash` are dropped (re-evaluate
    /// thresholds on the result; a merge has no single trace).
    pub fn merge(reports: &[Report]) -> Result<Report, ReportError> {
        let (first, rest) = reports.split_first().ok_or(ReportError::Empty)?;
        let mut rec = first.to_recorder()?;
        let mut run = first.run.clone();
        for r in rest {
            rec.merge(&r.to_recorder()?);
            run.wall_s = run.wall_s.max(r.run.wall_s);
            run.duration_s = run.duration_s.max(r.run.duration_s);
            run.started_at = match (run.started_at.take(), &r.run.started_at) {
                (Some(a), Some(b)) => Some(a.min(b.clone())),
                (a, b) => a.or_else(|| b.clone()),
            };
        }
        Ok(Report::from_recorder(&rec, run))
    }

    /// Rebuild the recorder this report came from. A shard report's open pickup halves come
    /// back as halves; other reports carry pending and unmatched pickups only as counts.
    pub fn to_recorder(&self) -> Result<Recorder, ReportError> {
        self.to_recorder_at(0)
    }

    /// `to_recorder` on a time zero `offset_us` earlier than this report's: open pickup halves
    /// move by exactly `offset_us`, the time series by the nearest whole second.
    pub(crate) fn to_recorder_at(&self, offset_us: u64) -> Result<Recorder, ReportError> {
        let mut rec = Recorder::new();
        rec.pickup_us = decode_histogram("job_pickup", &self.histograms.job_pickup)?;
        for (name, r) in &self.operations {
            let Some(op) = Operation::from_name(name) else {
                return Err(ReportError::Histogram {
                    name: name.clone(),
                    reason: "unknown operation".to_string(),
                });
            };
            let stats = &mut rec.ops[op as usize];
            if let Some(text) = self.histograms.operations.get(name) {
                stats.latency_us = Some(decode_histogram(name, text)?);
            }
            for (label, &n) in &r.errors_by_kind {
                let other = names::error_label_from_name("other").unwrap_or(0);
                stats.errors[names::error_label_from_name(label).unwrap_or(other)] += n;
            }
        }
        let (queued, picked) = match &self.job_pickup.open {
            Some(o) => (o.queued.as_slice(), o.picked.as_slice()),
            None => (&[][..], &[][..]),
        };
        // The open halves are in the counts too; only the rest is carried as a count.
        rec.carried_pending = self.job_pickup.pending.saturating_sub(queued.len() as u64);
        rec.carried_unmatched = self
            .job_pickup
            .unmatched
            .saturating_sub(picked.len() as u64);
        rec.pickup_server_clock = self.job_pickup.server_clock;
        let j = &self.jobs;
        rec.jobs = recorder::JobCounters {
            queued: j.queued,
            started: j.started,
            succeeded: j.succeeded,
            failed: j.failed,
            canceled: j.canceled,
            abandoned: j.abandoned,
        };
        rec.jobs_requeued = j.requeued;
        rec.jobs_lost = Some(j.lost);
        rec.emulator.clone_from(&self.emulator);
        rec.emulator_lifetime.clone_from(&self.emulator_lifetime);
        rec.runs = self.runs;
        for &s in AgentState::ALL {
            let n = self.agents.by_state.get(s.name()).copied().unwrap_or(0);
            rec.agents[recorder::state_index(s)] = n as i64;
        }
        rec.peak_busy = self.agents.peak_busy;
        rec.tokens_rotated = self.agents.tokens_rotated;
        rec.secrets_masked = self.agents.secrets_masked;
        rec.faults.clone_from(&self.faults);
        for (side_name, ops) in &self.crypto {
            let Some(side) = names::side_from_name(side_name) else {
                continue;
            };
            for (op_name, c) in ops {
                let Some(op) = names::crypto_op_from_name(op_name) else {
                    continue;
                };
                let slot = &mut rec.crypto[recorder::side_index(side)][recorder::crypto_index(op)];
                *slot = recorder::CryptoCounters {
                    ops: c.ops,
                    bytes: c.bytes,
                    nanos: c.nanos,
                };
            }
        }
        rec.series = self.timeseries.iter().map(point_from_report).collect();
        if let Some(t) = &self.timeline {
            rec.timeline = crate::timeline::Timeline::from_report(t).map_err(|reason| {
                ReportError::Histogram {
                    name: "timeline".to_string(),
                    reason,
                }
            })?;
        }
        rec.delay_series(offset_us.saturating_add(500_000) as usize / 1_000_000);
        rec.restore_open(queued, picked, offset_us);
        let duration_us = (self.run.duration_s * 1e6).round() as u64;
        rec.last_event = SimTime::from_micros(duration_us.saturating_add(offset_us));
        Ok(rec)
    }

    /// Read a report, refusing another schema version.
    pub fn read_json(reader: impl io::Read) -> Result<Report, ReportError> {
        let report: Report = serde_json::from_reader(reader)?;
        if report.schema_version != names::SCHEMA_VERSION {
            return Err(ReportError::Version {
                found: report.schema_version,
                supported: names::SCHEMA_VERSION,
            });
        }
        Ok(report)
    }

    /// Write the report as pretty JSON with a trailing newline.
    pub fn write_json(&self, mut writer: impl io::Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut writer, self)?;
        writer.write_all(b"\n")
    }

    /// Evaluate thresholds and store their results (replacing earlier ones).
    pub fn evaluate_thresholds(&mut self, thresholds: &[Threshold]) {
        self.thresholds = thresholds.iter().map(|t| t.evaluate(self)).collect();
    }

    /// Whether every threshold passed (true when there are none).
    pub fn thresholds_passed(&self) -> bool {
        self.thresholds.iter().all(|t| t.passed)
    }

    /// The value of a threshold metric (`thresholds::known_metrics`) in base units; `None` for
    /// an unknown name or when the run has no data for it (a percentile without samples).
    pub fn metric_value(&self, metric: &str) -> Option<f64> {
        let parts: Vec<&str> = metric.split('.').collect();
        match parts.as_slice() {
            [p, stat] if *p == names::JOB_PICKUP => latency_stat(&self.job_pickup.latency_s, stat),
            ["operations", op, stat] => {
                let empty = OperationReport::default();
                let r = match self.operations.get(*op) {
                    Some(r) => r,
                    None if fleetsim_core::ops::Operation::from_name(op).is_some() => &empty,
                    None => return None,
                };
                match *stat {
                    "count" => Some(r.count as f64),
                    "errors" => Some(r.errors as f64),
                    "rate_per_s" => Some(r.rate_per_s),
                    "error_rate" => (r.count > 0).then_some(r.error_rate),
                    s => latency_stat(&r.latency_s, s),
                }
            }
            ["errors", "count"] => Some(self.errors.count as f64),
            ["errors", "rate"] => Some(self.errors.rate),
            ["requests", "count"] => Some(self.requests.count as f64),
            ["requests", "rate_per_s"] => Some(self.requests.rate_per_s),
            ["jobs", field] => {
                let j = &self.jobs;
                let v = match *field {
                    "queued" => j.queued,
                    "started" => j.started,
                    "succeeded" => j.succeeded,
                    "failed" => j.failed,
                    "canceled" => j.canceled,
                    "abandoned" => j.abandoned,
                    "requeued" => j.requeued,
                    "lost" => j.lost,
                    _ => return None,
                };
                Some(v as f64)
            }
            ["crypto", side, op, stat] => {
                let c = self.crypto.get(*side).and_then(|m| m.get(*op));
                match *stat {
                    "ops" => Some(c.map_or(0.0, |c| c.ops as f64)),
                    "ops_per_s" => c.and_then(|c| c.ops_per_s),
                    "mb_per_s" => c.and_then(|c| c.mb_per_s),
                    _ => None,
                }
            }
            ["emulator", "leaked_secrets"] => {
                self.emulator.as_ref().map(|e| e.leaked_secrets as f64)
            }
            _ => None,
        }
    }
}

/// A latency statistic; `None` without samples, because "p99 = 0" would be a lie.
fn latency_stat(l: &LatencySummary, stat: &str) -> Option<f64> {
    if stat == "count" {
        return Some(l.count as f64);
    }
    if l.count == 0 {
        return None;
    }
    match stat {
        "mean" => Some(l.mean),
        "p50" => Some(l.p50),
        "p90" => Some(l.p90),
        "p95" => Some(l.p95),
        "p99" => Some(l.p99),
        "max" => Some(l.max),
        _ => None,
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn us_to_s(us: u64) -> f64 {
    us as f64 / 1e6
}

/// Summarise a µs histogram in seconds; all zero without samples.
fn summarize(h: Option<&Histogram<u64>>) -> LatencySummary {
    match h {
        Some(h) if !h.is_empty() => LatencySummary {
            count: h.len(),
            mean: h.mean() / 1e6,
            p50: us_to_s(h.value_at_quantile(0.50)),
            p90: us_to_s(h.value_at_quantile(0.90)),
            p95: us_to_s(h.value_at_quantile(0.95)),
            p99: us_to_s(h.value_at_quantile(0.99)),
            max: us_to_s(h.max()),
        },
        _ => LatencySummary::default(),
    }
}

fn crypto_report(rec: &Recorder) -> BTreeMap<String, BTreeMap<String, CryptoReport>> {
    let mut out = BTreeMap::new();
    for &side in names::SIDES {
        let mut ops = BTreeMap::new();
        for &op in CryptoOp::ALL {
            let c = rec.crypto[recorder::side_index(side)][recorder::crypto_index(op)];
            if c.ops == 0 {
                continue;
            }
            let busy_s = c.nanos as f64 / 1e9;
            let measured = c.nanos > 0;
            ops.insert(
                op.name().to_string(),
                CryptoReport {
                    ops: c.ops,
                    bytes: c.bytes,
                    nanos: c.nanos,
                    ops_per_s: measured.then(|| c.ops as f64 / busy_s),
                    mb_per_s: (measured && c.bytes > 0).then(|| c.bytes as f64 / 1e6 / busy_s),
                },
            );
        }
        if !ops.is_empty() {
            out.insert(names::side_name(side).to_string(), ops);
        }
    }
    out
}

fn timeseries(rec: &Recorder) -> Vec<TimePoint> {
    let newest = rec.series.len().saturating_sub(1);
    rec.series
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (mut p50, mut p99) = (p.pickup_p50_us, p.pickup_p99_us);
            // The newest interval is still open: read its histogram without closing it.
            if i == newest && !rec.interval_pickup.is_empty() {
                p50 = p50.max(Some(rec.interval_pickup.value_at_quantile(0.5)));
                p99 = p99.max(Some(rec.interval_pickup.value_at_quantile(0.99)));
            }
            TimePoint {
                t_s: i as u64,
                requests: p.requests,
                errors: p.errors,
                jobs_queued: p.jobs_queued,
                jobs_started: p.jobs_started,
                jobs_finished: p.jobs_finished,
                agents: p.agents,
                pickup_p50_s: p50.map(us_to_s),
                pickup_p99_s: p99.map(us_to_s),
            }
        })
        .collect()
}

fn point_from_report(t: &TimePoint) -> recorder::Point {
    let to_us = |s: Option<f64>| s.map(|s| (s * 1e6).round() as u64);
    recorder::Point {
        requests: t.requests,
        errors: t.errors,
        jobs_queued: t.jobs_queued,
        jobs_started: t.jobs_started,
        jobs_finished: t.jobs_finished,
        agents: t.agents,
        pickup_p50_us: to_us(t.pickup_p50_s),
        pickup_p99_us: to_us(t.pickup_p99_s),
    }
}

/// Serialize a histogram as V2 + DEFLATE, base64 (the form HdrHistogram tools read).
pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    // Serializing into a Vec cannot hit an IO error, and our histograms never exceed the
    // format's limits, so a failure here is a bug worth an empty string, not a crash.
    if V2DeflateSerializer::new().serialize(h, &mut bytes).is_err() {
        bytes.clear();
    }
    BASE64.encode(bytes)
}

/// Decode a histogram written by `encode_histogram` (an empty string is an empty histogram).
pub fn decode_histogram(name: &str, text: &str) -> Result<Histogram<u64>, ReportError> {
    let err = |reason: String| ReportError::Histogram {
        name: name.to_string(),
        reason,
    };
    if text.is_empty() {
        return Ok(recorder::new_histogram());
    }
    let bytes = BASE64
        .decode(text)
        .map_err(|e| err(format!("base64: {e}")))?;
    let decoded: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| err(format!("HDR: {e:?}")))?;
    // Re-home into the crate's bounds so later merges add bucket by bucket.
    let mut h = recorder::new_histogram();
    recorder::add_histogram(&mut h, &decoded);
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thresholds;
    use fleetsim_core::api::ErrorKind;
    use fleetsim_core::event::{Event, Outcome, Side};
    use fleetsim_core::proto::TaskResult;

    fn ms(v: u64) -> SimTime {
        SimTime::from_millis(v)
    }

    /// A small run touching every report section.
    fn recorder(shard: u64) -> Recorder {
        let mut rec = Recorder::new();
        rec.set_fleet_size(2);
        for i in 0..100 {
            let (t, id) = (i * 100, shard * 1_000 + i);
            let ok = |op, lat| Event::Op {
                agent: 0,
                op,
                intended: ms(t),
                done: ms(t + lat),
                outcome: Outcome::Ok,
            };
            rec.record(&ok(Operation::PollMessage, 5 + i));
            rec.record(&ok(Operation::PollEmpty, 50_000));
            rec.record(&Event::JobQueued {
                request_id: id,
                at: ms(t),
            });
            rec.record(&Event::JobPickedUp {
                agent: 0,
                request_id: id,
                at: ms(t + 20 + i),
            });
            let result = if i % 10 == 0 {
                TaskResult::Failed
            } else {
                TaskResult::Succeeded
            };
            rec.record(&Event::JobFinished {
                agent: 0,
                request_id: id,
                result,
                at: ms(t + 90),
            });
        }
        rec.record(&Event::Op {
            agent: 0,
            op: Operation::TokenExchange,
            intended: ms(0),
            done: ms(1),
            outcome: Outcome::Api(ErrorKind::Unauthorized),
        });
        rec.record(&Event::Crypto {
            side: Side::Agents,
            op: CryptoOp::OaepUnwrap,
            count: 100,
            bytes: 25_600,
            nanos: 50_000_000,
        });
        rec.set_server_stats(EmulatorStats {
            jobs_requeued: 1,
            ..EmulatorStats::default()
        });
        rec
    }

    fn meta() -> RunMeta {
        RunMeta {
            mode: Mode::Live,
            seed: 42,
            wall_s: 10.5,
            scenario: "quickstart".to_string(),
            started_at: Some("2026-11-25T21:00:00Z".to_string()),
            duration_s: 10.0,
            ..RunMeta::default()
        }
    }

    // Goal: the JSON keys users script against exist with the documented paths, and a report
    // reads back equal to what was written.
    #[test]
    fn report_json_round_trips_with_stable_keys() {
        let mut report = Report::from_recorder(&recorder(0), meta());
        report.evaluate_thresholds(&[thresholds::parse("job_pickup.p99", "< 2s").expect("ok")]);
        let mut bytes = Vec::new();
        report.write_json(&mut bytes).expect("write");
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        let paths = [
            "/schema_version",
            "/run/mode",
            "/run/seed",
            "/run/wall_s",
            "/run/scenario",
            "/run/started_at",
            "/jobs/queued",
            "/jobs/started",
            "/jobs/succeeded",
            "/jobs/failed",
            "/jobs/canceled",
            "/jobs/requeued",
            "/jobs/lost",
            "/job_pickup/latency_s/mean",
            "/job_pickup/latency_s/p50",
            "/job_pickup/latency_s/p90",
            "/job_pickup/latency_s/p99",
            "/job_pickup/latency_s/max",
            "/job_pickup/latency_s/count",
            "/operations/poll_message/count",
            "/operations/poll_message/errors",
            "/operations/poll_message/rate_per_s",
            "/operations/poll_message/latency_s/p50",
            "/operations/poll_message/latency_s/p90",
            "/operations/poll_message/latency_s/p99",
            "/operations/poll_message/latency_s/max",
            "/operations/poll_empty/count",
            "/errors/count",
            "/errors/rate",
            "/errors/by_kind/unauthorized",
            "/crypto/agents/oaep_unwrap/ops",
            "/crypto/agents/oaep_unwrap/ops_per_s",
            "/crypto/agents/oaep_unwrap/bytes",
            "/crypto/agents/oaep_unwrap/mb_per_s",
            "/thresholds/0/metric",
            "/thresholds/0/condition",
            "/thresholds/0/observed",
            "/thresholds/0/passed",
            "/emulator/jobsRequeued",
            "/timeseries/0/requests",
            "/histograms/job_pickup",
            "/histograms/operations/poll_message",
        ];
        for p in paths {
            assert!(json.pointer(p).is_some(), "missing key {p}");
        }
        assert_eq!(json["schema_version"], 1);
        assert_eq!(json["run"]["mode"], "live");
        assert_eq!(json["jobs"]["queued"], 100);
        assert_eq!(json["jobs"]["failed"], 10);
        assert_eq!(json["jobs"]["requeued"], 1);
        assert_eq!(json["thresholds"][0]["passed"], true);
        assert_eq!(json["crypto"]["agents"]["oaep_unwrap"]["ops_per_s"], 2000.0);
        assert!(json.get("engine").is_none() && json.get("trace_hash").is_none());
        let back = Report::read_json(bytes.as_slice()).expect("read");
        assert_eq!(back, report);
    }

    // Goal: merging reports is exact: it equals the report of the merged recorders, including
    // percentiles recomputed from the embedded histograms.
    #[test]
    fn report_merge_equals_merged_recorders() {
        let (a, b) = (recorder(1), recorder(2));
        let mut whole = a.clone();
        whole.merge(&b);
        let expected = Report::from_recorder(&whole, meta());
        let merged = Report::merge(&[
            Report::from_recorder(&a, meta()),
            Report::from_recorder(&b, meta()),
        ])
        .expect("merge");
        assert_eq!(merged.job_pickup, expected.job_pickup);
        assert_eq!(merged.operations, expected.operations);
        assert_eq!(merged.histograms, expected.histograms);
        assert_eq!(merged.jobs, expected.jobs);
        assert_eq!(merged.errors, expected.errors);
        assert_eq!(merged.crypto, expected.crypto);
        assert_eq!(merged.job_pickup.latency_s.count, 200);
        assert_eq!(merged.operations["poll_message"].count, 200);
    }

    // Goal: the timeline survives the report and merges exactly (shard by shard, interval by
    // interval); a report written before timelines existed still loads and merges.
    #[test]
    fn timelines_merge_through_reports_and_old_reports_load() {
        let (a, b) = (recorder(1), recorder(2));
        let mut whole = a.clone();
        whole.merge(&b);
        let (ra, rb) = (
            Report::from_recorder(&a, meta()),
            Report::from_recorder(&b, meta()),
        );
        let merged = Report::merge(&[ra.clone(), rb.clone()]).expect("merge");
        let expected = Report::from_recorder(&whole, meta()).timeline;
        assert!(expected.as_ref().is_some_and(|t| !t.requests.is_empty()));
        assert_eq!(merged.timeline, expected);
        let t = merged.timeline.as_ref().expect("timeline");
        let polls = &t.operations["poll_message"];
        let calls: u64 = polls.latency.count.iter().chain(&polls.errors).sum();
        assert_eq!(calls, merged.operations["poll_message"].count);

        let mut json = serde_json::to_value(&ra).expect("json");
        json.as_object_mut().expect("object").remove("timeline");
        let old = Report::read_json(json.to_string().as_bytes()).expect("an old report loads");
        assert_eq!(old.timeline, None);
        let mixed = Report::merge(&[old, rb.clone()]).expect("old and new merge");
        assert_eq!(
            mixed.timeline, rb.timeline,
            "the timeline covers what had one"
        );
    }

    // Goal: a report of another schema version or with a corrupt histogram is an error value.
    #[test]
    fn foreign_or_corrupt_reports_are_refused() {
        let mut report = Report::from_recorder(&recorder(0), meta());
        report.schema_version = 2;
        let mut bytes = Vec::new();
        report.write_json(&mut bytes).expect("write");
        let err = Report::read_json(bytes.as_slice()).expect_err("version");
        assert!(err.to_string().contains("schema_version 2"), "{err}");
        report.schema_version = names::SCHEMA_VERSION;
        report.histograms.job_pickup = "not base64!".to_string();
        let err = Report::merge(&[report]).expect_err("corrupt");
        assert!(err.to_string().contains("histogram job_pickup"), "{err}");
        assert!(matches!(Report::merge(&[]), Err(ReportError::Empty)));
    }

    // Goal: thresholds evaluate against report values in base units; missing data fails.
    #[test]
    fn thresholds_evaluate_against_the_report() {
        let report = Report::from_recorder(&recorder(0), meta());
        let check = |metric: &str, condition: &str| {
            thresholds::parse(metric, condition)
                .expect("valid")
                .evaluate(&report)
        };
        assert!(check("job_pickup.p99", "< 1s").passed);
        assert!(!check("job_pickup.p50", "< 10ms").passed);
        assert!(check("jobs.failed", "== 10").passed);
        assert!(check("jobs.requeued", "== 1").passed);
        assert!(check("errors.count", "== 1").passed);
        assert!(check("errors.rate", "< 1%").passed, "1 error in 201 calls");
        assert!(!check("errors.rate", "< 0.1%").passed);
        assert!(check("requests.rate_per_s", "> 20").passed);
        assert!(check("operations.poll_empty.p50", ">= 49s").passed);
        assert!(check("crypto.agents.oaep_unwrap.ops_per_s", "> 1000").passed);
        assert!(check("emulator.leaked_secrets", "== 0").passed);
        let missing = check("operations.register.p99", "< 1s");
        assert_eq!((missing.observed, missing.passed), (None, false));
        let observed = check("job_pickup.max", "< 1s").observed.expect("data");
        assert!((observed - 0.119).abs() < 0.001, "{observed}");
    }

    // Goal: a target that served earlier runs is judged on this run's change: 15 leaks before
    // the run and none during it pass `emulator.leaked_secrets == 0`; the lifetime totals stay
    // in the report apart (and through JSON); merged shards span the earliest start to the
    // latest end. Fails when the gate reads the lifetime total.
    #[test]
    fn emulator_gates_judge_the_change_during_the_run() {
        let reading = |leaked, completed| EmulatorStats {
            leaked_secrets: leaked,
            jobs_completed: completed,
            agents: 3,
            ..EmulatorStats::default()
        };
        let gate = thresholds::parse("emulator.leaked_secrets", "== 0").expect("valid");
        let mut rec = Recorder::new();
        rec.set_server_readings(Some(reading(15, 40)), reading(15, 52));
        let report = Report::from_recorder(&rec, meta());
        assert!(gate.evaluate(&report).passed);
        let run = report.emulator.as_ref().expect("emulator");
        assert_eq!(
            (run.leaked_secrets, run.jobs_completed, run.agents),
            (0, 12, 3)
        );
        let back: Report = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
        let lifetime = back.emulator_lifetime.clone().expect("lifetime kept");
        assert_eq!(lifetime.end.leaked_secrets, 15);
        assert_eq!(lifetime.start.map(|s| s.jobs_completed), Some(40));

        let mut leaky = Recorder::new();
        leaky.set_server_readings(Some(reading(15, 45)), reading(17, 60));
        let mut merged = back.to_recorder().expect("recorder");
        merged.merge(&leaky);
        let merged = Report::from_recorder(&merged, meta());
        let run = merged.emulator.as_ref().expect("emulator");
        assert_eq!((run.leaked_secrets, run.jobs_completed), (2, 20));
        assert!(!gate.evaluate(&merged).passed);
    }
}
