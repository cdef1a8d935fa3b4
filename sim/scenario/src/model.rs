//! The validated scenario: what the drivers read.
//!
//! Every value here has passed validation, so the types say what is possible: a rate is never
//! negative, a fraction lies in [0, 1], a warm-up is shorter than the run, a PAT is never held
//! inline. Defaults are filled in (the real agent's timers, the emulator's settings), so a driver
//! never needs its own fallback. This module never parses text; `crate::validate` builds these
//! values from the raw mirror.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use fleetsim_core::agent::{Pacing, StepModel, TaskModel};
use fleetsim_core::dist::DurationDist;
use fleetsim_core::ops::Operation;
pub use fleetsim_core::workload::{
    Arrival, JobModel, MAX_LOG_LINES_PER_STEP, MAX_STEPS_PER_JOB, PipelineTarget, ProfilePoint,
    Source as JobSource,
};
use fleetsim_metrics::thresholds::Threshold;

/// A scenario: one run's whole description.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The file it came from, as given to `load` (or the name given to `load_str`).
    pub source: String,
    /// The `--set` overrides applied on top of the file, in order (logged with the seed so a
    /// run can be repeated exactly).
    pub overrides: Vec<String>,
    /// `[run]`: name, length, seed.
    pub run: Run,
    /// `[target]`: `None` runs against the embedded emulator.
    pub target: Option<Target>,
    /// `[fleet]`: how many agents and how they are made.
    pub fleet: Fleet,
    /// `[agent]`: the agents' timers and switches.
    pub agent: AgentSettings,
    /// `[jobs]`: the job load.
    pub jobs: Jobs,
    /// `[server]`: the embedded emulator's settings and the virtual-time capacity model.
    pub server: ServerSettings,
    /// `[network]`: latency and loss (virtual time).
    pub network: Network,
    /// `[[faults]]` (and `[[network.partitions]]`), sorted by start time, then file order.
    pub faults: Vec<Fault>,
    /// `[thresholds]`, sorted by metric name.
    pub thresholds: Vec<Threshold>,
}

/// `[run]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// Shown in reports; defaults to the file's stem.
    pub name: String,
    /// How long jobs are generated and agents run (virtual time in `simulate`).
    pub duration: Duration,
    /// The one seed every random stream derives from.
    pub seed: u64,
    /// Measurements before this point are discarded; always shorter than `duration`.
    pub warmup: Duration,
}

/// `[target]`: a compatible server somewhere else.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// Collection base URL, `http://` or `https://`, without a trailing slash or credentials.
    pub url: String,
    /// Agent pool name the fleet registers into.
    pub pool: String,
    /// Where the PAT comes from; it is never in the scenario file.
    pub pat: PatSource,
    /// How the server's TLS certificate is checked.
    pub tls: TlsTrust,
    /// The HTTP proxy, as the real agent finds one.
    pub proxy: ProxySettings,
}

/// Where a PAT is read from at run time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatSource {
    /// An environment variable's name (default `FLEETSIM_PAT`).
    Env(String),
    /// A file holding the PAT (surrounding whitespace is ignored).
    File(PathBuf),
}

/// How the target's certificate is trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsTrust {
    /// The driver's built-in roots.
    Default,
    /// Trust this PEM CA file (self-signed targets).
    CaFile(PathBuf),
    /// Accept any certificate. Only for tests against self-signed targets; named loudly.
    Insecure,
}

/// The proxy settings of `[target.proxy]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySettings {
    /// Where the proxy URL comes from.
    pub source: ProxySource,
    /// Env var holding the proxy user name (default `VSTS_HTTP_PROXY_USERNAME`).
    pub username_env: String,
    /// Env var holding the proxy password (default `VSTS_HTTP_PROXY_PASSWORD`).
    pub password_env: String,
    /// Hosts that bypass the proxy, `NO_PROXY`-style (`localhost`, `.example.com`).
    pub no_proxy: Vec<String>,
    /// Regexes, one per entry, like the agent's `.proxybypass` file.
    pub bypass: Vec<String>,
}

/// Where the proxy URL comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxySource {
    /// The environment, as the agent reads it: `VSTS_HTTP_PROXY`, then `HTTPS_PROXY` /
    /// `HTTP_PROXY` (the live driver documents the precedence). The default.
    Environment,
    /// No proxy, whatever the environment says.
    Off,
    /// This URL (`http://host:port`, Basic credentials may be in the user-info).
    Url(String),
    /// A `.proxy`-style file: line 1 the URL, an optional line `basicauth=true`.
    File(PathBuf),
}

/// `[fleet]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Fleet {
    /// How many virtual agents (≥ 1).
    pub agents: u32,
    /// Agents start evenly spread over this time (0 = all at once).
    pub ramp_up: Duration,
    /// Agent names are `{name_prefix}{index}`.
    pub name_prefix: String,
    /// User capabilities every agent advertises (demands match against these).
    pub capabilities: BTreeMap<String, String>,
    /// RSA key size.
    pub key_bits: KeyBits,
    /// How many distinct keys the fleet uses, round-robin (1 ..= agents).
    pub distinct_keys: u32,
    /// Where keys are cached between runs; `None` = the driver's default directory.
    pub key_cache_dir: Option<PathBuf>,
    /// How agents hold HTTP connections (live mode).
    pub connection_mode: ConnectionMode,
    /// What an agent does when its name is already registered.
    pub register_mode: RegisterMode,
}

/// RSA key sizes the fleet can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyBits {
    /// 2048 bits, what the real agent generates.
    B2048,
    /// 3072 bits.
    B3072,
    /// 4096 bits.
    B4096,
}

impl KeyBits {
    /// The size in bits.
    pub fn bits(self) -> usize {
        match self {
            KeyBits::B2048 => 2048,
            KeyBits::B3072 => 3072,
            KeyBits::B4096 => 4096,
        }
    }
}

/// Connection handling in live mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionMode {
    /// Each agent holds its own connections (listener, keep-alive, job), as real agents do.
    PerAgent,
    /// Agents share a pooled client.
    Pooled,
}

/// What happens when an agent's name already exists in the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterMode {
    /// `POST` a new agent; an existing name is an error (as unattended `config.sh` without
    /// `--replace`).
    Register,
    /// `PUT` over an existing agent of the same name (`config.sh --replace`).
    Replace,
}

/// `[agent]`: every timer of the real agent, with its real default, plus fleetsim switches.
/// Field names and defaults are those of `fleetsim_core::agent::AgentConfig`, which
/// [`Scenario::agent_config`] fills from this.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentSettings {
    /// Agent version sent at registration and session create.
    pub version: String,
    /// `osDescription` sent at registration.
    pub os_description: String,
    /// Every timer, retry count and batch limit; unset fields keep the real agent's values
    /// (`Pacing::default()`, the one place they are written down).
    pub pacing: Pacing,
    /// Extension: rotate the job token this long before it expires; `None` = never (the real
    /// agent never rotates).
    pub job_token_rotate_before: Option<Duration>,
    /// Mask secret values in logs before sending (real: always). Off proves leak detection.
    pub mask_secrets: bool,
}

/// `[jobs]`: the job load.
#[derive(Clone, Debug, PartialEq)]
pub struct Jobs {
    /// How jobs arrive over time.
    pub arrival: Arrival,
    /// What each job is made of and how often jobs fail or are canceled (the core's model, so
    /// the workload machine draws from exactly what the scenario says).
    pub model: JobModel,
    /// Job-token lifetime; `None` = the emulator's default.
    pub token_ttl: Option<Duration>,
    /// Who queues the jobs (`[jobs] source`, with `[[jobs.pipelines]]`).
    pub source: JobSource,
    /// `[jobs.tasks]`: what the steps of real job messages (Checkout, CmdLine, …) do; the
    /// built-in `StepModel::default()` when the scenario has none. Agents get it through
    /// `Scenario::agent_config`, whatever the job source.
    pub tasks: StepModel,
}

/// `[server]`: the embedded emulator's settings and, for virtual time, its capacity.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerSettings {
    /// Pool the embedded emulator creates and the fleet registers into.
    pub pool: String,
    /// How long a long poll is held before an empty answer (real service: ≈ 50 s).
    pub long_poll_hold: Duration,
    /// Job lease length; renewals extend it (real: ≈ 10 min).
    pub lease_duration: Duration,
    /// Extra time after a lease lapses before the job is requeued.
    pub lease_grace: Duration,
    /// Clock-skew tolerance on a JWT assertion's `nbf`/`exp`.
    pub jwt_skew: Duration,
    /// Listener (OAuth) token lifetime.
    pub listener_token_ttl: Duration,
    /// How long a rotated-out job token keeps working.
    pub job_token_rotation_grace: Duration,
    /// A session with no poll for this long is dropped.
    pub session_idle_timeout: Duration,
    /// Scan received logs for the jobs' secret values.
    pub secret_scan: bool,
    /// Bounds; `None` = the emulator's default.
    pub limits: ServerLimits,
    /// Live runs: the embedded emulator's connection deadlines (`[server.deadlines]`).
    pub deadlines: ServerDeadlines,
    /// Virtual time: worker pools; empty = no server queueing at all (infinite capacity).
    pub stations: Vec<Station>,
    /// Virtual time: crypto done for real or charged as modelled cost.
    pub crypto: CryptoModel,
    /// `[[server.pipelines]]`: what the emulator's Pipelines Runs API can run (checked by the
    /// emulator's own config validation).
    pub pipelines: Vec<fleetsim_core::server::PipelineConfig>,
    /// Live runs: where the embedded emulator serves what (`[server.layout]`).
    pub layout: fleetsim_core::server::Layout,
}

/// Emulator bounds; `None` leaves the emulator's default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerLimits {
    /// Registered agents at most.
    pub max_agents: Option<u64>,
    /// Live sessions at most.
    pub max_sessions: Option<u64>,
    /// Jobs waiting for an agent at most (running jobs do not count); beyond it queueing fails.
    pub max_queued_jobs: Option<u64>,
    /// Long polls held at once at most.
    pub max_parked_polls: Option<u64>,
    /// Request body size at most (413 beyond).
    pub max_body_bytes: Option<u64>,
    /// Open connections at most (the HTTP front).
    pub max_connections: Option<u64>,
}

/// The embedded emulator's connection deadlines, as `fleetsim serve` takes them as flags;
/// `None` leaves the emulator's default. Only the HTTP front has them: `simulate` and a target
/// (whose deadlines are its own) refuse them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerDeadlines {
    /// From the accept to a complete first request head, and from a later request's first
    /// byte to its complete head.
    pub head_timeout: Option<Duration>,
    /// From a request's head to the end of its body (408 after it).
    pub body_timeout: Option<Duration>,
    /// Idle time between requests before the connection is closed.
    pub keep_alive_timeout: Option<Duration>,
}

/// A worker pool of the capacity model (virtual time).
#[derive(Clone, Debug, PartialEq)]
pub struct Station {
    /// Unique name, used in reports (utilisation per station).
    pub name: String,
    /// Parallel workers (≥ 1).
    pub workers: u32,
    /// Requests waiting beyond the workers; `None` = unbounded. At the bound a request is shed.
    pub queue_limit: Option<u32>,
    /// What a shed request gets back.
    pub shed: Shed,
    /// Which operations this station serves.
    pub ops: StationOps,
    /// Service time of its operations unless `service_by_op` names one.
    pub service: DurationDist,
    /// Per-operation service times.
    pub service_by_op: BTreeMap<Operation, DurationDist>,
}

impl Station {
    /// The service-time distribution for `op` at this station.
    pub fn service_for(&self, op: Operation) -> &DurationDist {
        self.service_by_op.get(&op).unwrap_or(&self.service)
    }
}

/// The operations a station serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StationOps {
    /// Exactly these.
    Only(Vec<Operation>),
    /// Every operation no other station lists (at most one station per scenario).
    Rest,
}

/// The answer to a request shed at a full queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shed {
    /// HTTP 503 (`ErrorKind::Unavailable`), which the agent's HTTP stack retries.
    Unavailable,
    /// HTTP 429 (`ErrorKind::Throttled`), which the agent does not retry.
    Throttled,
}

/// Crypto in virtual time.
#[derive(Clone, Debug, PartialEq)]
pub struct CryptoModel {
    /// Do the real math, or charge the costs below as service time.
    pub mode: CryptoMode,
    /// Modelled costs (calibrate with `fleetsim crypto-bench`).
    pub costs: CryptoCosts,
}

/// Crypto mode in virtual time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CryptoMode {
    /// Charge modelled costs (the default: fast, deterministic).
    Modelled,
    /// Do the real operations (to check that the model agrees).
    Real,
}

/// Modelled crypto costs, per operation.
#[derive(Clone, Debug, PartialEq)]
pub struct CryptoCosts {
    /// One RSA key pair generated (agents, once per distinct key).
    pub rsa_keygen: Duration,
    /// One RS256 signature (the agent's JWT client assertion).
    pub rs256_sign: Duration,
    /// One RS256 verification (the server checks an assertion).
    pub rs256_verify: Duration,
    /// One OAEP wrap of a session key (server, public key).
    pub oaep_wrap: Duration,
    /// One OAEP unwrap of a session key (agent, private key).
    pub oaep_unwrap: Duration,
    /// AES-CBC per KiB of message body.
    pub aes_per_kib: Duration,
}

/// `[network]` (virtual time).
#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    /// One-way latency of each message.
    pub latency: DurationDist,
    /// Probability a request is lost (the client sees a timeout), 0 ..= 1.
    pub loss: f64,
}

/// `[[faults]]`: the fault model is the core's (one `FaultKind` for scenarios, both drivers and
/// reports; `fleetsim_core::faults::schedule` resolves it for a run).
pub use fleetsim_core::faults::{AgentSelection, Fault, FaultKind};
