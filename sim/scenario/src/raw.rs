//! The raw mirror of a scenario file: the TOML's shape, field for field.
//!
//! Every struct denies unknown fields and every field is optional, so a deserialization error is
//! always about one value (its span points at it) and never "missing field" for the table as a
//! whole; `crate::validate` decides what is required, fills defaults and checks ranges. The doc
//! comments here become the JSON Schema's descriptions (`fleetsim schema`). This module never
//! holds defaults or rules: those live in `crate::validate`, once.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::leaf::{RawBytes, RawDuration, RawDurationDist, RawNumberDist, RawRatio};

/// A fleetsim scenario file.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "fleetsim scenario")]
pub struct RawScenario {
    /// Name, length and seed of the run.
    pub run: Option<RawRun>,
    /// A compatible server to test; absent = the embedded emulator.
    pub target: Option<RawTarget>,
    /// The virtual agents.
    pub fleet: Option<RawFleet>,
    /// The agents' timers (defaults: the real agent's) and switches.
    pub agent: Option<RawAgent>,
    /// The job load.
    pub jobs: Option<RawJobs>,
    /// The embedded emulator's settings and the virtual-time capacity model.
    pub server: Option<RawServer>,
    /// Network model (virtual time).
    pub network: Option<RawNetwork>,
    /// What goes wrong, and when.
    pub faults: Option<Vec<RawFault>>,
    /// Pass/fail conditions: `"job_pickup.p99" = "< 2s"`.
    pub thresholds: Option<BTreeMap<String, String>>,
}

/// `[run]`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Run")]
pub struct RawRun {
    /// Shown in reports (default: the file's stem).
    pub name: Option<String>,
    /// Run length (required), e.g. "40s", "4h".
    pub duration: Option<RawDuration>,
    /// Seed of every random stream (default 1).
    pub seed: Option<u64>,
    /// Discard measurements before this time (default 0s).
    pub warmup: Option<RawDuration>,
}

/// `[target]`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Target")]
pub struct RawTarget {
    /// Collection base URL, http:// or https:// (required).
    pub url: Option<String>,
    /// Agent pool name (default "Default").
    pub pool: Option<String>,
    /// Env var that holds the PAT (default FLEETSIM_PAT). The PAT is never written inline.
    pub pat_env: Option<String>,
    /// File that holds the PAT (instead of pat_env).
    pub pat_file: Option<String>,
    /// PEM CA file to trust (self-signed targets).
    pub ca_file: Option<String>,
    /// Accept any server certificate (tests only; excludes ca_file).
    pub insecure: Option<bool>,
    /// HTTP proxy.
    pub proxy: Option<RawProxy>,
}

/// `[target.proxy]`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Proxy")]
pub struct RawProxy {
    /// Proxy URL (http://host:port).
    pub url: Option<String>,
    /// A `.proxy`-style file: line 1 the URL, optional `basicauth=true`.
    pub file: Option<String>,
    /// false = no proxy even if the environment names one (default true: read the environment).
    pub enabled: Option<bool>,
    /// Env var with the proxy user name (default VSTS_HTTP_PROXY_USERNAME).
    pub username_env: Option<String>,
    /// Env var with the proxy password (default VSTS_HTTP_PROXY_PASSWORD).
    pub password_env: Option<String>,
    /// Hosts that bypass the proxy, NO_PROXY-style.
    pub no_proxy: Option<Vec<String>>,
    /// Regexes of URLs that bypass the proxy, like `.proxybypass`.
    pub bypass: Option<Vec<String>>,
}

/// `[fleet]`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Fleet")]
pub struct RawFleet {
    /// Number of agents (default 10).
    pub agents: Option<u32>,
    /// Start agents evenly over this time (default 0s).
    pub ramp_up: Option<RawDuration>,
    /// Agent names are "{name_prefix}{index}" (default "fleetsim-agent-").
    pub name_prefix: Option<String>,
    /// User capabilities every agent advertises.
    pub capabilities: Option<BTreeMap<String, String>>,
    /// RSA key size: 2048 (default), 3072 or 4096.
    pub key_bits: Option<u32>,
    /// Distinct keys, reused round-robin (default: min(agents, 1000)).
    pub distinct_keys: Option<u32>,
    /// Key cache directory (default: the driver's).
    pub key_cache_dir: Option<String>,
    /// "per-agent" (default) or "pooled".
    pub connection_mode: Option<RawConnectionMode>,
    /// "register" (default) or "replace".
    pub register_mode: Option<RawRegisterMode>,
}

/// Connection handling (live mode).
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(rename = "ConnectionMode")]
pub enum RawConnectionMode {
    /// Each agent holds its own connections.
    PerAgent,
    /// Agents share a pooled client.
    Pooled,
}

/// Registration mode.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(rename = "RegisterMode")]
pub enum RawRegisterMode {
    /// POST a new agent; an existing name is an error.
    Register,
    /// PUT over an existing agent of the same name.
    Replace,
}

/// `[agent]`: every field defaults to the real agent's value.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Agent")]
pub struct RawAgent {
    /// Agent version sent at registration (default "4.260.0").
    pub version: Option<String>,
    /// osDescription sent at registration (default "Linux 6.1 fleetsim virtual agent").
    pub os_description: Option<String>,
    /// Client timeout of listener calls, long polls included (default 100s).
    pub long_poll_timeout: Option<RawDuration>,
    /// Pause after an empty poll (default uniform 5s..15s).
    pub empty_poll_gap: Option<RawDurationDist>,
    /// Back-off after the first errors (default uniform 15s..30s).
    pub error_backoff_first: Option<RawDurationDist>,
    /// Back-off after later errors (default uniform 30s..60s).
    pub error_backoff_later: Option<RawDurationDist>,
    /// How many consecutive errors use error_backoff_first (default 5).
    pub error_backoff_first_count: Option<u32>,
    /// Keep-alive poll period after each return (default 30s).
    pub keepalive_interval: Option<RawDuration>,
    /// Run the keep-alive loop (default true).
    pub keepalive: Option<bool>,
    /// Session creation retry period (default 30s).
    pub session_retry: Option<RawDuration>,
    /// Give up on session conflicts after this much (default 4m).
    pub session_conflict_budget: Option<RawDuration>,
    /// Session DELETE timeout on shutdown (default 30s).
    pub session_delete_timeout: Option<RawDuration>,
    /// Job lock renewal period (default 60s).
    pub lock_renew_interval: Option<RawDuration>,
    /// Tries of the first renewal (default 5).
    pub first_renew_tries: Option<u32>,
    /// Pause between first-renewal tries (default uniform 1s..10s).
    pub first_renew_retry: Option<RawDurationDist>,
    /// Pause after a failed renewal (default uniform 5s..15s).
    pub renew_retry: Option<RawDurationDist>,
    /// Pause after more than 5 failed renewals (default uniform 15s..30s).
    pub renew_retry_later: Option<RawDurationDist>,
    /// Give up the job after renewals fail this long (default 15m).
    pub renew_give_up_after: Option<RawDuration>,
    /// Lock renewal client timeout (default 60s).
    pub renew_timeout: Option<RawDuration>,
    /// Timeline update period (default 500ms).
    pub timeline_interval: Option<RawDuration>,
    /// Live-log feed period at first (default 500ms).
    pub feed_interval_fast: Option<RawDuration>,
    /// Live-log feed period afterwards (default 1s).
    pub feed_interval: Option<RawDuration>,
    /// How long the fast feed period lasts (default 15s).
    pub feed_fast_period: Option<RawDuration>,
    /// Lines per feed POST at most (default 100).
    pub feed_batch_lines_max: Option<u32>,
    /// Feed POSTs per tick at most (default 5).
    pub feed_batches_per_tick_max: Option<u32>,
    /// Longer log lines are cut (default 1024).
    pub line_chars_max: Option<u32>,
    /// Log upload period (default 1s).
    pub log_upload_interval: Option<RawDuration>,
    /// Bytes per log upload at most (default "8MiB").
    pub log_page_bytes_max: Option<RawBytes>,
    /// Client timeout of job-connection calls (default 100s).
    pub job_call_timeout: Option<RawDuration>,
    /// Tries of the completion event (default 5).
    pub completion_tries: Option<u32>,
    /// Pause between completion tries (default 5s).
    pub completion_retry: Option<RawDuration>,
    /// Largest artifact a step uploads (default "64MiB").
    pub artifact_bytes_max: Option<RawBytes>,
    /// Re-mints after a 401, per call (default 3).
    pub auth_retries_max: Option<u8>,
    /// JWT client assertion lifetime (default 5m).
    pub assertion_lifetime: Option<RawDuration>,
    /// Rotate the job token this long before expiry (default: never; an extension).
    pub job_token_rotate_before: Option<RawDuration>,
    /// Mask secrets in logs (default true; false proves leak detection).
    pub mask_secrets: Option<bool>,
}

/// `[jobs]`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Jobs")]
pub struct RawJobs {
    /// Mean job arrival rate for poisson and constant arrivals (jobs per second, ≥ 0).
    pub rate_per_s: Option<f64>,
    /// "poisson" (default), "constant", { bursts = { size, every } } or
    /// { profile = [["0s", 0.5], ["10m", 4.0]] }.
    pub arrival: Option<RawArrival>,
    /// Job run time (default exponential, mean 1m).
    pub duration: Option<RawDurationDist>,
    /// Steps per job (default 3).
    pub steps: Option<RawNumberDist>,
    /// Log lines per second of step time (default 2).
    pub log_lines_per_s: Option<f64>,
    /// Secret variables per job (default 1).
    pub secrets: Option<u32>,
    /// Log lines per step that carry a secret (default 1).
    pub secret_lines: Option<u32>,
    /// Artifact bytes per job (default 0).
    pub artifact_bytes: Option<RawNumberDist>,
    /// Probability a job fails (default 0).
    pub failure_rate: Option<RawRatio>,
    /// Probability a job is canceled while running (default 0).
    pub cancel_rate: Option<RawRatio>,
    /// Demands every job carries: "name" or "name -equals value".
    pub demands: Option<Vec<String>>,
    /// Job-token lifetime (default: the emulator's).
    pub token_ttl: Option<RawDuration>,
    /// Who queues the jobs: "emulator" (fleetsim's admin extension), "pipelines" (the
    /// Pipelines Runs REST API) or "server" (someone else; the fleet only serves). Default:
    /// "emulator" without a [target]; with one, "emulator" when the section sets an arrival
    /// rate, otherwise "server".
    pub source: Option<RawJobSource>,
    /// The pipelines a "pipelines" source runs, by weight.
    pub pipelines: Option<Vec<RawJobPipeline>>,
    /// What the steps of real job messages do, by task name (`default` = any other task).
    /// Absent: the built-in model (see docs/SCENARIOS.md).
    pub tasks: Option<BTreeMap<String, RawTaskModel>>,
}

/// `[jobs] source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "JobSource")]
pub enum RawJobSource {
    /// fleetsim's emulator admin extension.
    Emulator,
    /// The Pipelines Runs REST API.
    Pipelines,
    /// Jobs are queued by someone else.
    Server,
}

/// `[[jobs.pipelines]]`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "JobPipeline")]
pub struct RawJobPipeline {
    /// The pipeline's id (required).
    pub id: Option<u32>,
    /// The project it lives in (required).
    pub project: Option<String>,
    /// Relative weight among the pipelines (default 1).
    pub weight: Option<u32>,
    /// Branch to run, e.g. "refs/heads/main" (default: the pipeline's default branch).
    pub branch: Option<String>,
}

/// `[jobs.tasks.<name>]`: the work of one task's steps; unset fields take `[jobs.tasks.default]`'s.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "TaskModel")]
pub struct RawTaskModel {
    /// Run time of one step (default uniform 5s..20s).
    pub duration: Option<RawDurationDist>,
    /// Log lines per second of run time (default 10).
    pub log_lines_per_s: Option<f64>,
    /// Lines per step that print a secret of the job, masked before they leave (default 1).
    pub secret_lines: Option<u32>,
    /// Bytes attached to the step's record at its end (default 0 = none).
    pub attachment_bytes: Option<RawNumberDist>,
    /// Probability that a step fails, which fails the job (default 0).
    pub failure_rate: Option<RawRatio>,
    /// Probability that a step succeeds with issues (default 0).
    pub issues_rate: Option<RawRatio>,
}

/// Arrival process.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "Arrival")]
pub enum RawArrival {
    /// A Poisson process at rate_per_s.
    Poisson,
    /// Evenly spaced, at rate_per_s.
    Constant,
    /// size jobs at once, every `every`.
    Bursts(RawBursts),
    /// Piecewise-constant Poisson rate: [[at, rate_per_s], ...].
    Profile(Vec<(RawDuration, f64)>),
}

/// `{ bursts = { size = 50, every = "1m" } }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Bursts")]
pub struct RawBursts {
    /// Jobs per burst.
    pub size: Option<u32>,
    /// Time between bursts.
    pub every: Option<RawDuration>,
}

/// `[server]`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Server")]
pub struct RawServer {
    /// Pool the embedded emulator serves (default "Default").
    pub pool: Option<String>,
    /// Long-poll hold before an empty answer (default 50s).
    pub long_poll_hold: Option<RawDuration>,
    /// Job lease length (default 10m).
    pub lease_duration: Option<RawDuration>,
    /// Grace after a lapsed lease before requeue (default 1m).
    pub lease_grace: Option<RawDuration>,
    /// Clock-skew tolerance on JWT assertions (default 5m).
    pub jwt_skew: Option<RawDuration>,
    /// Listener token lifetime (default 1h).
    pub listener_token_ttl: Option<RawDuration>,
    /// How long a rotated-out job token still works (default 30s).
    pub job_token_rotation_grace: Option<RawDuration>,
    /// Drop sessions idle this long (default 2m).
    pub session_idle_timeout: Option<RawDuration>,
    /// Scan logs for leaked secrets (default true).
    pub secret_scan: Option<bool>,
    /// Emulator bounds (default: the emulator's).
    pub limits: Option<RawLimits>,
    /// The embedded emulator's connection deadlines (default: the emulator's).
    pub deadlines: Option<RawDeadlines>,
    /// Worker pools of the capacity model (virtual time); none = infinite capacity.
    pub stations: Option<Vec<RawStation>>,
    /// Crypto in virtual time.
    pub crypto: Option<RawCrypto>,
    /// Pipelines the embedded emulator's Pipelines Runs API can run.
    pub pipelines: Option<Vec<RawPipeline>>,
    /// Where the embedded emulator serves what (the layout of Azure DevOps Services).
    pub layout: Option<RawLayout>,
}

/// `[[server.pipelines]]`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Pipeline")]
pub struct RawPipeline {
    /// Pipeline (definition) id, unique (required).
    pub id: Option<u32>,
    /// Pipeline name (required).
    pub name: Option<String>,
    /// Project, the `{project}` of the runs URL (required).
    pub project: Option<String>,
    /// Pool its jobs run in (default: server.pool).
    pub pool: Option<String>,
    /// Jobs per run (default 1).
    pub jobs: Option<u32>,
    /// Task names, one step each (default ["Checkout", "CmdLine"]).
    pub steps: Option<Vec<String>>,
    /// Demands every job carries: "name" or "name -equals value".
    pub demands: Option<Vec<String>>,
    /// Folder (default "\\").
    pub folder: Option<String>,
}

/// `[server.layout]`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Layout")]
pub struct RawLayout {
    /// Token service on its own listener at this address, e.g. "127.0.0.1:0" (authorizationUrl
    /// names it; the main listener no longer serves tokens).
    pub token_listen: Option<String>,
    /// Serve the collection under this path, e.g. "/org".
    pub collection_path: Option<String>,
    /// Plan hub on its own listener at this address, e.g. "127.0.0.2:0" (named in the job's
    /// SystemVssConnection.url; the main listener refuses plan-hub routes).
    pub plan_listen: Option<String>,
    /// With plan_listen, still serve the plan hub on the main listener too (default false).
    pub plan_hub_on_main: Option<bool>,
    /// Type expires_in in token answers as a JSON string (default false).
    pub expires_in_as_string: Option<bool>,
}

/// `[server.deadlines]`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Deadlines")]
pub struct RawDeadlines {
    /// From the accept to a complete first request head, and from a later request's first
    /// byte to its complete head; the connection is closed after it (default 10s).
    pub head_timeout: Option<RawDuration>,
    /// From a request's head to the end of its body; answered 408 and closed (default 30s).
    pub body_timeout: Option<RawDuration>,
    /// Idle time between requests before a connection is closed (default 120s).
    pub keep_alive_timeout: Option<RawDuration>,
}

/// `[server.limits]`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Limits")]
pub struct RawLimits {
    /// Registered agents at most.
    pub max_agents: Option<u64>,
    /// Live sessions at most.
    pub max_sessions: Option<u64>,
    /// Jobs waiting for an agent at most (running jobs do not count).
    pub max_queued_jobs: Option<u64>,
    /// Long polls held at once at most.
    pub max_parked_polls: Option<u64>,
    /// Request body size at most, e.g. "4MiB".
    pub max_body_bytes: Option<RawBytes>,
    /// Open connections at most.
    pub max_connections: Option<u64>,
}

/// `[[server.stations]]`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Station")]
pub struct RawStation {
    /// Unique name (required).
    pub name: Option<String>,
    /// Parallel workers (default 1).
    pub workers: Option<u32>,
    /// Waiting room beyond the workers; absent = unbounded. Full → shed.
    pub queue_limit: Option<u32>,
    /// "unavailable" (503, default) or "throttled" (429).
    pub shed: Option<RawShed>,
    /// Operations served (names as in reports); absent = every operation no station lists.
    pub ops: Option<Vec<String>>,
    /// Service time of this station's operations (default constant 0s).
    pub service: Option<RawDurationDist>,
    /// Service time per operation name.
    pub service_by_op: Option<BTreeMap<String, RawDurationDist>>,
}

/// Answer to a shed request.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "Shed")]
pub enum RawShed {
    /// HTTP 503.
    Unavailable,
    /// HTTP 429.
    Throttled,
}

/// `[server.crypto]`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Crypto")]
pub struct RawCrypto {
    /// "modelled" (default) or "real".
    pub mode: Option<RawCryptoMode>,
    /// RSA key generation (default 100ms).
    pub rsa_keygen: Option<RawDuration>,
    /// RS256 signature (default 280us).
    pub rs256_sign: Option<RawDuration>,
    /// RS256 verification (default 15us).
    pub rs256_verify: Option<RawDuration>,
    /// OAEP wrap, public key (default 15us).
    pub oaep_wrap: Option<RawDuration>,
    /// OAEP unwrap, private key (default 280us).
    pub oaep_unwrap: Option<RawDuration>,
    /// AES-CBC cost per KiB (default 1us).
    pub aes_per_kib: Option<RawDuration>,
}

/// Crypto mode in virtual time.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "CryptoMode")]
pub enum RawCryptoMode {
    /// Charge the modelled costs.
    Modelled,
    /// Do the real operations.
    Real,
}

/// `[network]`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Network")]
pub struct RawNetwork {
    /// One-way latency (default 0s).
    pub latency: Option<RawDurationDist>,
    /// Probability a request is lost (default 0).
    pub loss: Option<RawRatio>,
    /// Partitions; shorthand for [[faults]] of kind "partition".
    pub partitions: Option<Vec<RawPartition>>,
}

/// `[[network.partitions]]`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Partition")]
pub struct RawPartition {
    /// Start (required).
    pub at: Option<RawDuration>,
    /// Length (required).
    pub duration: Option<RawDuration>,
    /// Fraction of agents cut off (default: all).
    pub fraction: Option<RawRatio>,
    /// Agent indices cut off (instead of fraction).
    pub agents: Option<Vec<u32>>,
}

/// `[[faults]]`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Fault")]
pub struct RawFault {
    /// What goes wrong (required).
    pub kind: Option<RawFaultKind>,
    /// When (required).
    pub at: Option<RawDuration>,
    /// How long (partition, server_stall: required; agent_crash: until restart;
    /// server_restart: downtime).
    pub duration: Option<RawDuration>,
    /// Fraction of agents hit (agent faults; default: all).
    pub fraction: Option<RawRatio>,
    /// Agent indices hit (instead of fraction).
    pub agents: Option<Vec<u32>>,
}

/// Fault kinds.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "FaultKind")]
pub enum RawFaultKind {
    /// Agents die mid-job; with a duration they come back after it.
    AgentCrash,
    /// Agents are cut off from the server for `duration`.
    Partition,
    /// The server stops answering for `duration`.
    ServerStall,
    /// The server restarts, losing sessions and held polls.
    ServerRestart,
    /// Every chosen agent's tokens expire at once.
    TokenExpiryStorm,
}
