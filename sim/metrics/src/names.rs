//! The one module that names metrics: report keys, threshold names and Prometheus names.
//!
//! Everything else in fleetsim refers to a metric through a constant or function here, so a
//! rename happens in one place and a dashboard, a threshold and a report key cannot drift apart.
//! Prometheus names follow observability.md §3: the `fleetsim_` prefix, base units (seconds,
//! bytes, ratios 0–1) as the last word before `_total`, labels only from bounded enums
//! (`Operation`, `AgentState`, `Side`, `CryptoOp`, the error labels below).
//!
//! This module never records or exports anything; it only holds names, help text and the
//! bounded label tables.

use fleetsim_core::api::ALL_ERROR_KINDS;
use fleetsim_core::event::{CryptoOp, Outcome, Side};

/// The report's top-level schema version; bump it when a stable key changes meaning.
pub const SCHEMA_VERSION: u32 = 1;

/// The encoding of every histogram embedded in a report.
pub const HISTOGRAM_ENCODING: &str = "hdr-v2-deflate-base64";

/// Report key (and threshold prefix) of the job pickup latency: enqueue → agent holds the job.
pub const JOB_PICKUP: &str = "job_pickup";

/// The error labels that are not an `ErrorKind`, in report order. With the `ErrorKind` labels
/// they form the closed set of error labels: `error_label_index` maps an `Outcome` into it.
const OTHER_ERROR_LABELS: &[&str] = &[
    "http_4xx", "http_5xx", "connect", "reset", "tls", "proxy", "lost", "timeout", "protocol",
    "other",
];

/// How many distinct error labels exist (`ErrorKind`s plus the other outcomes).
pub const ERROR_LABEL_COUNT: usize = ALL_ERROR_KINDS.len() + OTHER_ERROR_LABELS.len();

/// The error label with this index (see `error_label_index`).
pub fn error_label(index: usize) -> &'static str {
    if index < ALL_ERROR_KINDS.len() {
        ALL_ERROR_KINDS[index].label()
    } else {
        OTHER_ERROR_LABELS
            .get(index - ALL_ERROR_KINDS.len())
            .copied()
            .unwrap_or("other")
    }
}

/// The index of an error label, for rebuilding counters from a report; `None` if unknown.
pub fn error_label_from_name(name: &str) -> Option<usize> {
    (0..ERROR_LABEL_COUNT).find(|&i| error_label(i) == name)
}

/// The index of a failed outcome's label in `0..ERROR_LABEL_COUNT`; `None` for `Outcome::Ok`.
/// A fixed index lets the recorder count errors in an array instead of a map (no allocation on
/// the hot path).
pub fn error_label_index(outcome: Outcome) -> Option<usize> {
    let other = |label: &str| {
        let at = OTHER_ERROR_LABELS
            .iter()
            .position(|&l| l == label)
            .unwrap_or(9);
        ALL_ERROR_KINDS.len() + at
    };
    Some(match outcome {
        Outcome::Ok => return None,
        // `ErrorKind` is non-exhaustive: a kind added later without a table entry is "other".
        Outcome::Api(kind) => ALL_ERROR_KINDS
            .iter()
            .position(|&k| k == kind)
            .unwrap_or_else(|| other("other")),
        Outcome::Status(s) if s >= 500 => other("http_5xx"),
        Outcome::Status(_) => other("http_4xx"),
        Outcome::Transport(t) => other(t.label()),
        Outcome::Timeout => other("timeout"),
        Outcome::Protocol => other("protocol"),
    })
}

/// Report key of a crypto side (`crypto.<side>.<op>`).
pub fn side_name(side: Side) -> &'static str {
    match side {
        Side::Agents => "agents",
        Side::Emulator => "emulator",
    }
}

/// Every crypto side, in report order.
pub const SIDES: &[Side] = &[Side::Agents, Side::Emulator];

/// The side with this report key.
pub fn side_from_name(name: &str) -> Option<Side> {
    SIDES.iter().copied().find(|&s| side_name(s) == name)
}

/// The crypto operation with this report key.
pub fn crypto_op_from_name(name: &str) -> Option<CryptoOp> {
    CryptoOp::ALL.iter().copied().find(|&o| o.name() == name)
}

/// The label every fleetsim series carries: the index of the shard of the run that exports it
/// (`fleetsim run --shard I/N` exports `I`; an unsharded run, `serve` and `simulate` export
/// `0`). Its values are bounded by `fleetsim_core::shard::MAX_SHARDS`. The exporter adds it to
/// every series (a global label), so `PromMetric::labels` does not list it; dashboards sum over
/// it to show the whole fleet and filter on it to show one shard.
pub const PROM_SHARD_LABEL: &str = "shard";

/// Labels on every series, before each metric's own (`PromMetric::labels`).
pub const PROM_GLOBAL_LABELS: &[&str] = &[PROM_SHARD_LABEL];

/// A Prometheus metric: its name as rendered, its type and its help text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PromMetric {
    /// Full name with the `fleetsim_` prefix, unit and `_total` suffix as exposed.
    pub name: &'static str,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    /// Label names besides `PROM_GLOBAL_LABELS`; their values always come from bounded enums.
    pub labels: &'static [&'static str],
    /// One sentence for `# HELP`.
    pub help: &'static str,
}

/// Protocol calls finished, by operation and outcome label (`ok` or an error label).
pub const PROM_OPERATIONS: PromMetric = PromMetric {
    name: "fleetsim_operations_total",
    kind: "counter",
    labels: &["operation", "outcome"],
    help: "Protocol calls finished by the virtual agents, by operation and outcome.",
};

/// Latency of successful calls from their intended start, in seconds.
pub const PROM_OPERATION_DURATION: PromMetric = PromMetric {
    name: "fleetsim_operation_duration_seconds",
    kind: "histogram",
    labels: &["operation"],
    help: "Latency of successful protocol calls from their intended start, in seconds.",
};

/// Job pickup latency: enqueue → an agent holds the job message.
pub const PROM_JOB_PICKUP: PromMetric = PromMetric {
    name: "fleetsim_job_pickup_duration_seconds",
    kind: "histogram",
    labels: &[],
    help: "Time from a job being queued to an agent holding its message, in seconds.",
};

/// Jobs by lifecycle event (`queued`, `started`, `succeeded`, `failed`, `canceled`).
pub const PROM_JOBS: PromMetric = PromMetric {
    name: "fleetsim_jobs_total",
    kind: "counter",
    labels: &["event"],
    help: "Jobs queued, started and finished (by result) during the run.",
};

/// Virtual agents by state.
pub const PROM_AGENTS: PromMetric = PromMetric {
    name: "fleetsim_agents",
    kind: "gauge",
    labels: &["state"],
    help: "Virtual agents by state (registering, idle, busy, offline).",
};

/// Crypto operations done, by side and operation.
pub const PROM_CRYPTO_OPS: PromMetric = PromMetric {
    name: "fleetsim_crypto_operations_total",
    kind: "counter",
    labels: &["side", "op"],
    help: "Cryptographic operations done, by side (agents, emulator) and operation.",
};

/// Bytes processed by crypto operations.
pub const PROM_CRYPTO_BYTES: PromMetric = PromMetric {
    name: "fleetsim_crypto_bytes_total",
    kind: "counter",
    labels: &["side", "op"],
    help: "Bytes processed by cryptographic operations, by side and operation.",
};

/// Time spent in crypto operations, measured by the driver. A gauge that only goes up: the
/// `metrics` crate's counters are integers, and whole seconds would round crypto time away.
/// `rate()` it like a counter: the result is the cores busy with crypto.
pub const PROM_CRYPTO_SECONDS: PromMetric = PromMetric {
    name: "fleetsim_crypto_busy_seconds",
    kind: "gauge",
    labels: &["side", "op"],
    help: "Cumulative time spent in cryptographic operations, in seconds, by side and operation \
           (only goes up; a gauge because it is fractional).",
};

/// Secret occurrences the agents masked before sending logs.
pub const PROM_SECRETS_MASKED: PromMetric = PromMetric {
    name: "fleetsim_secrets_masked_total",
    kind: "counter",
    labels: &[],
    help: "Secret occurrences the virtual agents masked before sending log lines.",
};

/// Job-token rotations done by agents.
pub const PROM_TOKENS_ROTATED: PromMetric = PromMetric {
    name: "fleetsim_token_rotations_total",
    kind: "counter",
    labels: &[],
    help: "Job-token rotations the virtual agents performed.",
};

/// Faults the driver applied (`[[faults]]`), by kind.
pub const PROM_FAULTS: PromMetric = PromMetric {
    name: "fleetsim_faults_total",
    kind: "counter",
    labels: &["kind"],
    help: "Scenario faults ([[faults]]) the driver applied, by kind, counted as each one's \
           effect ends.",
};

/// Run time of the latest event the exporter saw (virtual time in `simulate`).
pub const PROM_RUN_ELAPSED: PromMetric = PromMetric {
    name: "fleetsim_run_elapsed_seconds",
    kind: "gauge",
    labels: &[],
    help: "Run time of the latest event seen, in seconds (virtual time in simulate runs).",
};

/// Build metadata: always 1, the information is in the labels.
pub const PROM_BUILD_INFO: PromMetric = PromMetric {
    name: "fleetsim_build_info",
    kind: "gauge",
    labels: &["version", "role"],
    help: "Always 1; the fleetsim version and the role (fleet, emulator, simulate) as labels.",
};

/// Every Prometheus metric fleetsim's fleet side exports (`run` and `simulate`), for exporters
/// and dashboard tests.
pub const PROMETHEUS: &[PromMetric] = &[
    PROM_OPERATIONS,
    PROM_OPERATION_DURATION,
    PROM_JOB_PICKUP,
    PROM_JOBS,
    PROM_AGENTS,
    PROM_CRYPTO_OPS,
    PROM_CRYPTO_BYTES,
    PROM_CRYPTO_SECONDS,
    PROM_SECRETS_MASKED,
    PROM_TOKENS_ROTATED,
    PROM_FAULTS,
    PROM_RUN_ELAPSED,
];

/// Requests the emulator's HTTP front answered, by route template and status.
pub const PROM_EMU_REQUESTS: PromMetric = PromMetric {
    name: "fleetsim_emulator_requests_total",
    kind: "counter",
    labels: &["route", "status"],
    help: "Requests the emulator answered, by route (a fixed table, or unrouted) and HTTP status.",
};

/// Requests the emulator turned away under load (429 throttled, 503 unavailable).
pub const PROM_EMU_SHED: PromMetric = PromMetric {
    name: "fleetsim_emulator_shed_requests_total",
    kind: "counter",
    labels: &[],
    help: "Requests the emulator shed under load (answered 429 or 503).",
};

/// Long polls held open now.
pub const PROM_EMU_PARKED_POLLS: PromMetric = PromMetric {
    name: "fleetsim_emulator_parked_polls",
    kind: "gauge",
    labels: &[],
    help: "Long polls the emulator is holding open now.",
};

/// Jobs in the queue (waiting for an agent).
pub const PROM_EMU_QUEUED_JOBS: PromMetric = PromMetric {
    name: "fleetsim_emulator_queued_jobs",
    kind: "gauge",
    labels: &[],
    help: "Jobs waiting in the emulator's queue now (queue depth).",
};

/// Queued jobs no registered agent can run (demands unmet).
pub const PROM_EMU_UNMATCHED_JOBS: PromMetric = PromMetric {
    name: "fleetsim_emulator_unmatched_jobs",
    kind: "gauge",
    labels: &[],
    help: "Queued jobs whose demands no registered agent meets.",
};

/// Jobs assigned to an agent and not finished.
pub const PROM_EMU_ASSIGNED_JOBS: PromMetric = PromMetric {
    name: "fleetsim_emulator_assigned_jobs",
    kind: "gauge",
    labels: &[],
    help: "Jobs assigned to an agent and not finished yet.",
};

/// Job leases an agent has renewed at least once and still holds.
pub const PROM_EMU_LEASES: PromMetric = PromMetric {
    name: "fleetsim_emulator_active_leases",
    kind: "gauge",
    labels: &[],
    help: "Job leases held by agents that have renewed them at least once.",
};

/// Agents registered in the emulator's pools.
pub const PROM_EMU_AGENTS: PromMetric = PromMetric {
    name: "fleetsim_emulator_registered_agents",
    kind: "gauge",
    labels: &[],
    help: "Agents registered in the emulator's pools.",
};

/// Open agent sessions.
pub const PROM_EMU_SESSIONS: PromMetric = PromMetric {
    name: "fleetsim_emulator_sessions",
    kind: "gauge",
    labels: &[],
    help: "Agent sessions open now.",
};

/// Jobs the emulator saw finish.
pub const PROM_EMU_JOBS_COMPLETED: PromMetric = PromMetric {
    name: "fleetsim_emulator_jobs_completed_total",
    kind: "counter",
    labels: &[],
    help: "Jobs the emulator recorded as finished.",
};

/// Jobs put back in the queue (lease lost, agent gone).
pub const PROM_EMU_REQUEUES: PromMetric = PromMetric {
    name: "fleetsim_emulator_job_requeues_total",
    kind: "counter",
    labels: &[],
    help: "Jobs put back in the queue after their agent lost the lease or went away.",
};

/// Secret values found in log lines and feed batches (should stay 0).
pub const PROM_EMU_LEAKED_SECRETS: PromMetric = PromMetric {
    name: "fleetsim_emulator_leaked_secrets_total",
    kind: "counter",
    labels: &[],
    help: "Secret values (or their base64 form) found in uploaded logs and feed batches.",
};

/// Access and job tokens issued.
pub const PROM_EMU_TOKENS_ISSUED: PromMetric = PromMetric {
    name: "fleetsim_emulator_tokens_issued_total",
    kind: "counter",
    labels: &[],
    help: "Access tokens the emulator issued (token exchanges).",
};

/// Job tokens rotated through the refresh grant.
pub const PROM_EMU_TOKENS_ROTATED: PromMetric = PromMetric {
    name: "fleetsim_emulator_token_rotations_total",
    kind: "counter",
    labels: &[],
    help: "Job tokens the emulator rotated through the refresh grant.",
};

/// Connections being served now.
pub const PROM_EMU_CONNECTIONS: PromMetric = PromMetric {
    name: "fleetsim_emulator_open_connections",
    kind: "gauge",
    labels: &[],
    help: "Client connections the emulator is serving now.",
};

/// Connections accepted and served.
pub const PROM_EMU_CONNECTIONS_ACCEPTED: PromMetric = PromMetric {
    name: "fleetsim_emulator_accepted_connections_total",
    kind: "counter",
    labels: &[],
    help: "Client connections the emulator accepted and served.",
};

/// Connections closed unserved at the connection bound.
pub const PROM_EMU_CONNECTIONS_REJECTED: PromMetric = PromMetric {
    name: "fleetsim_emulator_rejected_connections_total",
    kind: "counter",
    labels: &[],
    help: "Client connections closed unserved because every connection slot stayed busy.",
};

/// Connections closed at a deadline while idle.
pub const PROM_EMU_CONNECTIONS_TIMED_OUT: PromMetric = PromMetric {
    name: "fleetsim_emulator_timed_out_connections_total",
    kind: "counter",
    labels: &[],
    help: "Client connections closed because they stayed idle past a deadline: no complete \
           request head within the head timeout from accept, or idle past the keep-alive timeout.",
};

/// TLS handshakes that failed or timed out.
pub const PROM_EMU_TLS_FAILURES: PromMetric = PromMetric {
    name: "fleetsim_emulator_tls_handshake_failures_total",
    kind: "counter",
    labels: &[],
    help: "TLS handshakes with clients that failed or timed out.",
};

/// Time the emulator spent serving each route (decode, core, encode; a long poll's hold left
/// out): what `fleetsim calibrate` derives each route group's service demand from.
pub const PROM_EMU_ROUTE_BUSY: PromMetric = PromMetric {
    name: "fleetsim_emulator_route_busy_seconds",
    kind: "gauge",
    labels: &["route"],
    help: "Seconds the emulator spent serving each route since it started (decode, core, encode; long-poll holds excluded).",
};

/// Every Prometheus metric the emulator (`serve`) exports besides the shared crypto metrics
/// (`PROM_CRYPTO_*` with `side="emulator"`) and `PROM_BUILD_INFO`.
pub const PROMETHEUS_EMULATOR: &[PromMetric] = &[
    PROM_EMU_REQUESTS,
    PROM_EMU_SHED,
    PROM_EMU_PARKED_POLLS,
    PROM_EMU_QUEUED_JOBS,
    PROM_EMU_UNMATCHED_JOBS,
    PROM_EMU_ASSIGNED_JOBS,
    PROM_EMU_LEASES,
    PROM_EMU_AGENTS,
    PROM_EMU_SESSIONS,
    PROM_EMU_JOBS_COMPLETED,
    PROM_EMU_REQUEUES,
    PROM_EMU_LEAKED_SECRETS,
    PROM_EMU_TOKENS_ISSUED,
    PROM_EMU_TOKENS_ROTATED,
    PROM_EMU_CONNECTIONS,
    PROM_EMU_CONNECTIONS_ACCEPTED,
    PROM_EMU_CONNECTIONS_REJECTED,
    PROM_EMU_CONNECTIONS_TIMED_OUT,
    PROM_EMU_TLS_FAILURES,
    PROM_EMU_ROUTE_BUSY,
];

/// Every metric fleetsim exports anywhere, in catalogue order: build info, fleet, emulator.
pub fn prometheus_all() -> impl Iterator<Item = &'static PromMetric> {
    std::iter::once(&PROM_BUILD_INFO)
        .chain(PROMETHEUS)
        .chain(PROMETHEUS_EMULATOR)
}

/// The catalogue entry of a series name as it appears in the exposition format or a query
/// (`_bucket`, `_sum` and `_count` map to their histogram); `None` if fleetsim exports no such
/// metric.
pub fn prom_metric_for_series(series: &str) -> Option<&'static PromMetric> {
    let exact = prometheus_all().find(|m| m.name == series);
    exact.or_else(|| {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| series.strip_suffix(suffix))?;
        prometheus_all().find(|m| m.name == base && m.kind == "histogram")
    })
}

/// Histogram bucket bounds (seconds) for Prometheus latency histograms: roughly geometric over
/// a load tester's range, with bounds on the usual SLO values (observability.md §3).
pub const PROM_LATENCY_BUCKETS_S: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Histogram bucket bounds (seconds) for job pickup latency: from "instant" to ten minutes, with
/// bounds on the pickup objectives people set (1 s, 5 s, 10 s, 30 s, 1 min, 5 min).
pub const PROM_PICKUP_BUCKETS_S: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// The metric catalogue as Markdown: the contents of `docs/METRICS.md`. A test fails when the
/// file differs; regenerate it with
/// `FLEETSIM_REGEN_METRICS_MD=1 cargo test -p fleetsim-metrics --lib metrics_md`.
pub fn catalogue_markdown() -> String {
    let mut out = String::from(
        "# fleetsim metrics catalogue\n\n\
         <!-- Generated from sim/metrics/src/names.rs; do not edit. Regenerate with\n     \
         FLEETSIM_REGEN_METRICS_MD=1 cargo test -p fleetsim-metrics --lib metrics_md -->\n\n\
         Served in the Prometheus text format at `GET /metrics` on `--metrics-addr` (`run`,\n\
         `simulate`, `serve`). Names are final as listed: base units (seconds, bytes), counters\n\
         end in `_total`, latency is a histogram with buckets (`_bucket{le}`, `_sum`, `_count`),\n\
         never a summary. Label values come from fixed sets only. Every series carries the\n\
         `shard` label (the shard index; `0` when the run is not sharded): dashboards sum over\n\
         it to show the whole fleet (see docs/OBSERVABILITY.md, \"Across shards\").\n\n",
    );
    let mut section = |title: &str, metrics: &mut dyn Iterator<Item = &PromMetric>| {
        out.push_str(&format!(
            "## {title}\n\n| metric | type | labels | meaning |\n|---|---|---|---|\n"
        ));
        for m in metrics {
            let labels = PROM_GLOBAL_LABELS
                .iter()
                .chain(m.labels)
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ");
            out.push_str(&format!(
                "| `{}` | {} | {labels} | {} |\n",
                m.name, m.kind, m.help
            ));
        }
        out.push('\n');
    };
    section("Every process", &mut std::iter::once(&PROM_BUILD_INFO));
    section("Fleet (`run`, `simulate`)", &mut PROMETHEUS.iter());
    section("Emulator (`serve`)", &mut PROMETHEUS_EMULATOR.iter());
    let buckets = |b: &[f64]| {
        b.iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    out.push_str(&format!(
        "## Histogram buckets (seconds)\n\n\
         - `{}`: {}\n- every other `_seconds` histogram: {}\n\n",
        PROM_JOB_PICKUP.name,
        buckets(PROM_PICKUP_BUCKETS_S),
        buckets(PROM_LATENCY_BUCKETS_S)
    ));
    out.push_str(
        "## Label values\n\n\
         - `operation`: the snake_case names of `fleetsim_core::ops::Operation`.\n\
         - `outcome`: `ok` or an error label (an `ErrorKind` label, `http_4xx`, `http_5xx`,\n  \
         `connect`, `reset`, `tls`, `proxy`, `lost`, `timeout`, `protocol`, `other`).\n\
         - `state`: `registering`, `idle`, `busy`, `offline`.\n\
         - `event`: `queued`, `started`, `succeeded`, `failed`, `canceled`.\n\
         - `side`: `agents`, `emulator`; `op`: the names of `fleetsim_core::event::CryptoOp`.\n\
         - `route`: the codec's route table (`fleetsim_core::codec::route_label`) or `unrouted`;\n  \
         `status`: the HTTP status (the codec's few codes, else its class such as `4xx`).\n\
         - `role`: `fleet`, `emulator`, `simulate`.\n",
    );
    out.push_str(&format!(
        "- `shard`: the shard index, `0` to `{}` (`fleetsim_core::shard::MAX_SHARDS` shards at\n  \
         most); `0` for an unsharded `run`, for `serve` and for `simulate`.\n\n",
        fleetsim_core::shard::MAX_SHARDS - 1
    ));
    out.push_str(
        "## Job pickup: which clock\n\n\
         Pickup latency (`job_pickup` in the report, `fleetsim_job_pickup_duration_seconds`) runs\n\
         from a job's queueing to an agent holding its message. Two clocks measure it, never mixed\n\
         in one sample:\n\n\
         - **Jobs fleetsim queued** (`[jobs] source = \"emulator\"`): the fleet's clock, from the\n  \
         job's *intended* queue time (its arrival time, not when the queue call returned) to the\n  \
         agent decrypting the message. These are all the Prometheus histogram holds.\n\
         - **Jobs fleetsim did not queue** (`source = \"server\"`, or jobs someone else queued): the\n  \
         server's clock, `queueTime` → `receiveTime` (or `assignTime`) of the job request as\n  \
         `GET …/distributedtask/pools/{poolId}/jobrequests` lists it at the end of a live run.\n  \
         They enter the report's histogram only (after the run), and\n  \
         `job_pickup.server_clock` counts them; the rest of `job_pickup.latency_s.count` is on\n  \
         the fleet's clock. A pickup with neither a fleet queue event nor server times stays\n  \
         `job_pickup.unmatched`.\n\n\
         ## Pipeline runs (report only)\n\n\
         With `[jobs] source = \"pipelines\"` the report has a `runs` section: `runs.queued`,\n\
         `runs.refused`, `runs.unsent`, `runs.completed` with `runs.succeeded`, `runs.failed`,\n\
         `runs.canceled`, `runs.other` (an unknown result), and `runs.unfinished` (not completed\n\
         when the run ended), `runs.cancels_sent` and `runs.cancel_errors` (runs drawn as canceled,\n\
         canceled through the Build API). Each run request is timed as a `queue_jobs` operation.\n\n\
         ## Emulator figures (report only)\n\n\
         With fleetsim's emulator (embedded, or a `fleetsim serve` target it can read), the\n\
         report's `emulator` section holds the run's figures: each counter (`jobsCompleted`,\n\
         `jobsCanceled`, `jobsRequeued`, `leakedSecrets`, `tokensIssued`, `tokensRotated`) as its\n\
         change during the run, read before the first agent acts and after the last one stopped\n\
         (`run --processes`: before the shards start and after they all ended), and each gauge\n\
         (`agents`, `agentsOnline`, `sessions`, `parkedPolls`, `jobsQueued`, `jobsUnmatched`,\n\
         `jobsAssigned`, `leasesActive`) at the end. `emulator_lifetime.start` and\n\
         `emulator_lifetime.end` keep the emulator's lifetime totals at those two readings, apart:\n\
         a target that served earlier runs does not fail this one's `emulator.leaked_secrets ==\n\
         0`. Thresholds on `emulator.*` and `jobs.requeued` judge the run's figures. A\n\
         virtual-time run starts with a fresh emulator, so its totals are the run's.\n\n\
         ## Faults (report only)\n\n\
         `faults` lists each `[[faults]]` entry the driver applied (absent when none): `kind`,\n\
         `start_s` and `end_s` (run seconds; no `end_s` for an instant fault or a crash with no\n\
         recovery) and `agents` (how many agents it hit; 0 for a server fault). Merged shards\n\
         list each fault once with the agents of every shard.\n",
    );
    out.push_str(&format!(
        "\n## Shard reports and merged runs (report only)\n\n\
         A shard's report (`fleetsim run --shard I/N`) has `run.shard` (`index`, `count`),\n\
         `run.started_unix_us` (µs since the epoch of run time zero) and `run.scenario_digest`,\n\
         and `job_pickup.open`: `queued` and `picked`, lists of `[request_id, t_us]` (µs since\n\
         run time zero, sorted by id) of pickup halves without their partner in this shard — a\n\
         job queued by one shard and picked up by another's agent. They are also counted in\n\
         `job_pickup.pending` / `unmatched`, and bounded by the recorder's pending limit ({}\n\
         halves; a half past it is counted in `unmatched` and not listed). `fleetsim merge` joins\n\
         them across shards, so the merged `job_pickup` histogram is the one a single process\n\
         would hold. The merged report has `run.shards` (how many) and neither `run.shard` nor\n\
         `job_pickup.open`; a run that was neither split nor merged has none of `run.shard`,\n\
         `run.shards` and `job_pickup.open`.\n",
        crate::recorder::DEFAULT_PENDING_LIMIT
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetsim_core::api::ErrorKind;
    use fleetsim_core::event::TransportError;

    // Goal: every outcome maps to a distinct, stable label that round-trips through its name.
    #[test]
    fn error_labels_are_unique_and_round_trip() {
        let mut seen: Vec<&str> = (0..ERROR_LABEL_COUNT).map(error_label).collect();
        for (i, l) in seen.iter().enumerate() {
            assert_eq!(error_label_from_name(l), Some(i), "label {l}");
        }
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), ERROR_LABEL_COUNT);
        let idx = error_label_index(Outcome::Api(ErrorKind::Throttled)).expect("error");
        assert_eq!(error_label(idx), "throttled");
        let idx = error_label_index(Outcome::Status(502)).expect("error");
        assert_eq!(error_label(idx), "http_5xx");
        let idx = error_label_index(Outcome::Transport(TransportError::Tls)).expect("error");
        assert_eq!(error_label(idx), "tls");
        assert_eq!(error_label_index(Outcome::Ok), None);
    }

    // Goal: exported names obey the naming rules (prefix, `_total` on counters, base units),
    // and no two catalogue entries share a name.
    #[test]
    fn prometheus_names_follow_conventions() {
        let mut names: Vec<&str> = prometheus_all().map(|m| m.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "duplicate metric names");
        for m in prometheus_all() {
            assert!(m.name.starts_with("fleetsim_"), "{}", m.name);
            assert_eq!(
                m.kind == "counter",
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
            assert!(!m.name.contains("_ms"), "{}: use base units", m.name);
            assert!(!m.help.is_empty());
        }
    }

    // Goal: no metric names a global label itself: the exporter would let the metric's value
    // override the process's shard, and a dashboard summing over `shard` would mix shards.
    #[test]
    fn no_metric_redefines_a_global_label() {
        for m in prometheus_all() {
            for g in PROM_GLOBAL_LABELS {
                assert!(!m.labels.contains(g), "{} lists {g}", m.name);
            }
        }
    }

    // Goal: series names from queries resolve to their catalogue entry, histogram suffixes only
    // on histograms.
    #[test]
    fn series_names_resolve_to_catalogue_entries() {
        let bucket = prom_metric_for_series("fleetsim_job_pickup_duration_seconds_bucket");
        assert_eq!(bucket, Some(&PROM_JOB_PICKUP));
        assert_eq!(
            prom_metric_for_series("fleetsim_agents"),
            Some(&PROM_AGENTS)
        );
        assert_eq!(prom_metric_for_series("fleetsim_agents_count"), None);
        assert_eq!(prom_metric_for_series("fleetsim_active_vehicles"), None);
    }

    // Goal: docs/METRICS.md is exactly what the catalogue generates, so adding a metric
    // without regenerating the doc fails `cargo test`.
    #[test]
    fn metrics_md_matches_catalogue() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/METRICS.md");
        let expected = catalogue_markdown();
        if std::env::var_os("FLEETSIM_REGEN_METRICS_MD").is_some() {
            std::fs::write(&path, &expected).expect("write docs/METRICS.md");
        }
        let actual = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            actual == expected,
            "docs/METRICS.md is stale; regenerate it with \
             FLEETSIM_REGEN_METRICS_MD=1 cargo test -p fleetsim-metrics --lib metrics_md"
        );
    }
}
