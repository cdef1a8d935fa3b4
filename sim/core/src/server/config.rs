//! The emulator's configuration: pools, PATs with scopes and expiry, token lifetimes, long-poll
//! and lease timing, table limits, crypto mode and secret scanning.
//!
//! `ServerConfig` deserialises straight from `server.toml` (unknown keys are refused; every key
//! has a default, durations are strings with units such as `"50s"` or `"10m"`), and
//! [`ServerConfig::validate`] checks what serde cannot (unique pool ids and names, known scopes,
//! non-zero limits). This module never reads files or the environment: the front does that and
//! hands the text or the `FLEETSIM_PAT` value in.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::crypto::CryptoMode;
use crate::dist::serde_duration;

/// Scope that lets a PAT read pools and agents.
pub const SCOPE_AGENTPOOLS_READ: &str = "vso.agentpools";
/// Scope that lets a PAT register, replace and delete agents (implies read), as the real
/// "Agent Pools (read, manage)" scope does.
pub const SCOPE_AGENTPOOLS_MANAGE: &str = "vso.agentpools_manage";
/// Emulator extension: queue synthetic jobs, list job requests, read the counters.
pub const SCOPE_ADMIN: &str = "fleetsim.admin";
/// Scope that lets a PAT read pipeline runs ("Build (read)").
pub const SCOPE_BUILD_READ: &str = "vso.build";
/// Scope that lets a PAT queue and cancel pipeline runs (implies read), as the real
/// "Build (read & execute)" scope does.
pub const SCOPE_BUILD_EXECUTE: &str = "vso.build_execute";
/// Every scope the emulator knows, in the order the docs list them.
pub const ALL_SCOPES: &[&str] = &[
    SCOPE_AGENTPOOLS_READ,
    SCOPE_AGENTPOOLS_MANAGE,
    SCOPE_ADMIN,
    SCOPE_BUILD_READ,
    SCOPE_BUILD_EXECUTE,
];

/// The pool every emulator has at start.
pub const DEFAULT_POOL_ID: u32 = 1;
/// Name of [`DEFAULT_POOL_ID`].
pub const DEFAULT_POOL_NAME: &str = "Default";

/// The base URL used when the config names none and the front has not filled it in.
pub const FALLBACK_PUBLIC_URL: &str = "http://127.0.0.1:8080";

/// Everything the server state machine is configured with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Pools beyond `Default` (id 1), which always exists.
    pub pools: Vec<PoolConfig>,
    /// Personal access tokens accepted as the HTTP Basic password.
    pub pats: Vec<PatConfig>,
    /// The base URL clients reach the emulator at (`connectionData`'s public access mapping,
    /// `authorizationUrl`, the job's `SystemVssConnection.url`). `None`: the front fills in its
    /// bound address; without a front, [`FALLBACK_PUBLIC_URL`].
    pub public_url: Option<String>,
    /// Lifetime of a listener (agent OAuth) token.
    #[serde(with = "serde_duration")]
    pub listener_token_ttl: Duration,
    /// Lifetime of a job token (the `SystemVssConnection` access token).
    #[serde(with = "serde_duration")]
    pub job_token_ttl: Duration,
    /// How long a job token keeps working after it was rotated (extension).
    #[serde(with = "serde_duration")]
    pub job_token_rotation_grace: Duration,
    /// How long a `GET messages` is held when nothing is queued (the real service: ≈50 s).
    #[serde(with = "serde_duration")]
    pub long_poll_hold: Duration,
    /// `lockedUntil` = renewal time + this (the real service: 10 min).
    #[serde(with = "serde_duration")]
    pub lease_duration: Duration,
    /// Extra time after `lockedUntil` before an unrenewed job goes back to the queue.
    #[serde(with = "serde_duration")]
    pub lease_grace: Duration,
    /// A session with no poll for this long (and none parked) expires; the agent goes offline.
    #[serde(with = "serde_duration")]
    pub session_idle_timeout: Duration,
    /// Clock-skew tolerance on a JWT assertion's `nbf`/`exp`.
    #[serde(with = "serde_duration")]
    pub jwt_skew: Duration,
    /// The longest client assertion accepted: `exp − nbf` (the real agent sends exactly 5 min
    /// and the real service accepts about that). It bounds how long a `jti` must be
    /// remembered, so assertions that expire in 50 years cannot pin the replay set full.
    #[serde(with = "serde_duration")]
    pub jwt_max_lifetime: Duration,
    /// The grace a `JobCancellation` gives the agent (its `timeout`, sent as `"hh:mm:ss"`)
    /// before it must stop the job. Zero means "stop now".
    #[serde(with = "serde_duration")]
    pub job_cancel_timeout: Duration,
    /// Real RSA/AES work, or counted-but-skipped crypto for virtual-time runs.
    pub crypto_mode: CryptoMode,
    /// Scan log lines and feed batches for the job's secret values.
    pub secret_scan: bool,
    /// Table bounds.
    pub limits: Limits,
    /// Pipelines the Pipelines Runs API can run (`[[pipelines]]`).
    pub pipelines: Vec<PipelineConfig>,
    /// Where what is served: one listener (default) or the layout of Azure DevOps Services
    /// (`[layout]`: token service and plan hub on their own listeners, a collection path,
    /// `expires_in` as a string).
    pub layout: super::layout::Layout,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            pools: Vec::new(),
            pats: Vec::new(),
            public_url: None,
            listener_token_ttl: Duration::from_secs(3600),
            job_token_ttl: Duration::from_secs(6 * 3600),
            job_token_rotation_grace: Duration::from_secs(30),
            long_poll_hold: Duration::from_secs(50),
            lease_duration: Duration::from_secs(600),
            lease_grace: Duration::from_secs(60),
            session_idle_timeout: Duration::from_secs(120),
            jwt_skew: Duration::from_secs(300),
            jwt_max_lifetime: Duration::from_secs(300),
            job_cancel_timeout: Duration::from_secs(60),
            crypto_mode: CryptoMode::Real,
            secret_scan: true,
            limits: Limits::default(),
            pipelines: Vec::new(),
            layout: super::layout::Layout::default(),
        }
    }
}

/// One extra pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub name: String,
    pub id: u32,
}

/// The steps a pipeline job runs when the config names none: what a YAML pipeline with one
/// `script` step sends (the implicit checkout, then the script).
pub const DEFAULT_PIPELINE_STEPS: &[&str] = &["Checkout", "CmdLine"];
/// Most jobs one pipeline run may have.
pub const MAX_JOBS_PER_RUN: u32 = 256;

/// One pipeline (`[[pipelines]]`): a run of it queues `jobs` job requests in `pool`, each job
/// running `steps` (task names such as `Checkout`, `CmdLine`, `PublishTestResults`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// The pipeline (definition) id, unique in the emulator.
    pub id: u32,
    pub name: String,
    /// The project the pipeline lives in (the `{project}` path segment; case-insensitive).
    pub project: String,
    /// The agent pool's name (`Default` or one of `[[pools]]`).
    pub pool: String,
    /// Jobs per run, 1..=[`MAX_JOBS_PER_RUN`].
    #[serde(default = "one_job")]
    pub jobs: u32,
    /// Task names, one step per name; the real task reference is used for known names.
    #[serde(default = "default_steps")]
    pub steps: Vec<String>,
    /// Demands every job of the run carries: `name` or `name -equals value`.
    #[serde(default)]
    pub demands: Vec<String>,
    /// The pipeline's folder; `\` (the top) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
}

fn one_job() -> u32 {
    1
}

fn default_steps() -> Vec<String> {
    DEFAULT_PIPELINE_STEPS
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// One personal access token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatConfig {
    /// The secret itself, sent as the Basic password.
    pub token: String,
    /// Scope names from [`ALL_SCOPES`].
    pub scopes: Vec<String>,
    /// Unix seconds after which the PAT is refused; `None` never expires.
    #[serde(default)]
    pub expires_at_unix_s: Option<u64>,
}

impl std::fmt::Debug for PatConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token: configs end up in logs.
        f.debug_struct("PatConfig")
            .field("token", &"<redacted>")
            .field("scopes", &self.scopes)
            .field("expires_at_unix_s", &self.expires_at_unix_s)
            .finish()
    }
}

/// Bounds on every table. At a bound the request is refused with a typed error (429
/// `Throttled` for capacity, 413 for bodies) and no state changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Registered agents over all pools.
    pub max_agents: usize,
    /// Live sessions.
    pub max_sessions: usize,
    /// Jobs waiting for an agent (queued or unmatched).
    pub max_queued_jobs: usize,
    /// Long polls held at once.
    pub max_parked_polls: usize,
    /// Long polls held at once for one session (the real agent holds two: main + keep-alive).
    pub max_parked_polls_per_session: usize,
    /// Request body size; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Undeleted messages per session.
    pub max_messages_per_session: usize,
    /// Listener tokens kept per agent; minting one more revokes the oldest.
    pub max_listener_tokens_per_agent: usize,
    /// JWT ids remembered for replay detection (pruned as assertions expire).
    pub max_remembered_jtis: usize,
    /// JWT ids remembered per agent: past it only that agent's token exchange gets 429 until
    /// its own assertions expire, so one agent cannot lock every other agent out.
    pub max_jtis_per_agent: usize,
    /// Finished jobs (and their plans, logs) kept for inspection; the oldest go first.
    pub max_finished_jobs: usize,
    /// Bytes of log, feed and attachment content stored per plan; the rest is scanned and
    /// counted, not stored.
    pub max_plan_bytes: usize,
    /// Bytes of timeline records stored per plan (their text plus a fixed cost per record),
    /// also counted in the plan's stored bytes; an update past it → 400.
    pub max_record_bytes_per_plan: usize,
    /// Bytes the plans of finished jobs keep, all together; past it the oldest finished jobs
    /// are forgotten, so what completed jobs leave behind stays bounded.
    pub max_finished_plan_bytes: usize,
    /// Bytes of one live-console feed line (the real agent cuts lines at 1024 characters).
    pub max_feed_line_bytes: usize,
    /// Bytes of a log's path and of an attachment's type and name.
    pub max_plan_name_bytes: usize,
    /// Characters of an agent name.
    pub max_agent_name_chars: usize,
    /// Bytes of an agent's `version`, `osDescription` and `provisioningState`, each.
    pub max_agent_field_bytes: usize,
    /// Entries of an agent's system capabilities, and of its user capabilities.
    pub max_capabilities: usize,
    /// Bytes of an agent's capability names and values, system and user together.
    pub max_capability_bytes: usize,
    /// Timeline records stored per plan.
    pub max_records_per_plan: usize,
    /// Logs per plan.
    pub max_logs_per_plan: usize,
    /// Jobs one admin request may queue, and steps / secrets / demands per job.
    pub max_jobs_per_request: usize,
    pub max_steps_per_job: usize,
    pub max_secrets_per_job: usize,
    pub max_demands_per_job: usize,
    /// Telemetry events buffered for `poll_event`; beyond it new events are dropped (counted).
    pub max_pending_events: usize,
    /// Pipeline runs kept; past it the oldest finished run is forgotten, and a new run is
    /// refused (429) while every kept run is still in progress.
    pub max_pipeline_runs: usize,
    /// Queue-time variables one run may set, and bytes of one variable's name plus value.
    pub max_run_variables: usize,
    pub max_run_variable_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_agents: 100_000,
            max_sessions: 100_000,
            max_queued_jobs: 100_000,
            max_parked_polls: 250_000,
            max_parked_polls_per_session: 4,
            max_body_bytes: 10 * 1024 * 1024,
            max_messages_per_session: 16,
            max_listener_tokens_per_agent: 8,
            max_remembered_jtis: 1_000_000,
            max_jtis_per_agent: 64,
            max_finished_jobs: 10_000,
            max_plan_bytes: 1024 * 1024,
            max_record_bytes_per_plan: 256 * 1024,
            max_finished_plan_bytes: 64 * 1024 * 1024,
            max_feed_line_bytes: 4096,
            max_plan_name_bytes: 1024,
            max_agent_name_chars: 256,
            max_agent_field_bytes: 1024,
            max_capabilities: 1024,
            max_capability_bytes: 128 * 1024,
            max_records_per_plan: 1_000,
            max_logs_per_plan: 1_000,
            max_jobs_per_request: 10_000,
            max_steps_per_job: 100,
            max_secrets_per_job: 64,
            max_demands_per_job: 32,
            max_pending_events: 65_536,
            max_pipeline_runs: 10_000,
            max_run_variables: 256,
            max_run_variable_bytes: 32 * 1024,
        }
    }
}

/// A configuration the server refuses to start with.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("pool id {0} is used twice (pool 1 is the built-in \"Default\")")]
    DuplicatePoolId(u32),
    #[error("pool name {0:?} is used twice (names are case-insensitive; \"Default\" is built in)")]
    DuplicatePoolName(String),
    #[error("pool id 0 is not valid; use 2 or higher")]
    ZeroPoolId,
    #[error("pool name is empty")]
    EmptyPoolName,
    #[error("PAT #{index} is empty")]
    EmptyPat { index: usize },
    #[error("PAT #{index} is listed twice")]
    DuplicatePat { index: usize },
    #[error("PAT #{index} has unknown scope {scope:?}; known scopes: {known}")]
    UnknownScope {
        index: usize,
        scope: String,
        known: String,
    },
    #[error("public_url {0:?} must start with http:// or https://")]
    BadPublicUrl(String),
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("pipeline id {0} is used twice")]
    DuplicatePipelineId(u32),
    #[error("pipeline {id} is invalid: {why}")]
    BadPipeline { id: u32, why: String },
    #[error(
        "pipeline {id} names pool {pool:?}, which does not exist; use \"Default\" or a [[pools]] name"
    )]
    UnknownPipelinePool { id: u32, pool: String },
    #[error("{0}")]
    Layout(String),
}

impl ServerConfig {
    /// The configuration used when there is no config file but `FLEETSIM_PAT` is set: defaults
    /// plus that one PAT with every scope and no expiry.
    pub fn with_env_pat(pat: impl Into<String>) -> ServerConfig {
        ServerConfig {
            pats: vec![PatConfig {
                token: pat.into(),
                scopes: ALL_SCOPES.iter().map(|s| s.to_string()).collect(),
                expires_at_unix_s: None,
            }],
            ..ServerConfig::default()
        }
    }

    /// The public URL without a trailing slash. Without a configured one: the fallback plus
    /// the layout's collection path.
    pub fn public_url(&self) -> String {
        match self.public_url.as_deref() {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("{FALLBACK_PUBLIC_URL}{}", self.layout.collection_path()),
        }
    }

    /// Check what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_pools()?;
        self.validate_pats()?;
        self.validate_pipelines()?;
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::BadPublicUrl(url.clone()));
        }
        let durations = [
            ("listener_token_ttl", self.listener_token_ttl),
            ("job_token_ttl", self.job_token_ttl),
            ("lease_duration", self.lease_duration),
            ("session_idle_timeout", self.session_idle_timeout),
            ("jwt_max_lifetime", self.jwt_max_lifetime),
        ];
        for (name, d) in durations {
            if d.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        self.layout.validate().map_err(ConfigError::Layout)?;
        self.limits.validate()
    }

    fn validate_pools(&self) -> Result<(), ConfigError> {
        let mut ids = vec![DEFAULT_POOL_ID];
        let mut names = vec![DEFAULT_POOL_NAME.to_ascii_lowercase()];
        for pool in &self.pools {
            if pool.id == 0 {
                return Err(ConfigError::ZeroPoolId);
            }
            if pool.name.trim().is_empty() {
                return Err(ConfigError::EmptyPoolName);
            }
            if ids.contains(&pool.id) {
                return Err(ConfigError::DuplicatePoolId(pool.id));
            }
            let lower = pool.name.to_ascii_lowercase();
            if names.contains(&lower) {
                return Err(ConfigError::DuplicatePoolName(pool.name.clone()));
            }
            ids.push(pool.id);
            names.push(lower);
        }
        Ok(())
    }

    /// The pool id named `name` (case-insensitive), `Default` included.
    pub fn pool_id(&self, name: &str) -> Option<u32> {
        if name.eq_ignore_ascii_case(DEFAULT_POOL_NAME) {
            return Some(DEFAULT_POOL_ID);
        }
        self.pools
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.id)
    }

    fn validate_pipelines(&self) -> Result<(), ConfigError> {
        for (i, p) in self.pipelines.iter().enumerate() {
            let bad = |why: &str| ConfigError::BadPipeline {
                id: p.id,
                why: why.to_string(),
            };
            if self.pipelines[..i].iter().any(|q| q.id == p.id) {
                return Err(ConfigError::DuplicatePipelineId(p.id));
            }
            if p.id == 0 {
                return Err(bad("id 0 is not valid; use 1 or higher"));
            }
            if p.name.trim().is_empty() || p.project.trim().is_empty() {
                return Err(bad("name and project must not be empty"));
            }
            if p.project.contains(['/', '?', '#']) {
                return Err(bad("project must be one path segment (no '/', '?' or '#')"));
            }
            if self.pool_id(&p.pool).is_none() {
                return Err(ConfigError::UnknownPipelinePool {
                    id: p.id,
                    pool: p.pool.clone(),
                });
            }
            if p.jobs == 0 || p.jobs > MAX_JOBS_PER_RUN {
                return Err(bad(&format!("jobs must be 1..={MAX_JOBS_PER_RUN}")));
            }
            if p.steps.is_empty() || p.steps.len() > self.limits.max_steps_per_job {
                return Err(bad(&format!(
                    "steps must list 1..={} task names (limits.max_steps_per_job)",
                    self.limits.max_steps_per_job
                )));
            }
            if p.steps.iter().any(|s| s.trim().is_empty() || s.len() > 128) {
                return Err(bad("a step's task name is empty or longer than 128 bytes"));
            }
            if p.demands.len() > self.limits.max_demands_per_job {
                return Err(bad("more demands than limits.max_demands_per_job"));
            }
            if !p.demands.iter().all(|d| super::jobs::demand_is_valid(d)) {
                return Err(bad("a demand is not `name` or `name -equals value`"));
            }
        }
        Ok(())
    }

    fn validate_pats(&self) -> Result<(), ConfigError> {
        for (index, pat) in self.pats.iter().enumerate() {
            if pat.token.is_empty() {
                return Err(ConfigError::EmptyPat { index });
            }
            if self.pats[..index].iter().any(|p| p.token == pat.token) {
                return Err(ConfigError::DuplicatePat { index });
            }
            if let Some(scope) = pat
                .scopes
                .iter()
                .find(|s| !ALL_SCOPES.contains(&s.as_str()))
            {
                return Err(ConfigError::UnknownScope {
                    index,
                    scope: scope.clone(),
                    known: ALL_SCOPES.join(", "),
                });
            }
        }
        Ok(())
    }
}

impl Limits {
    fn validate(&self) -> Result<(), ConfigError> {
        let all = [
            ("limits.max_agents", self.max_agents),
            ("limits.max_sessions", self.max_sessions),
            ("limits.max_queued_jobs", self.max_queued_jobs),
            ("limits.max_parked_polls", self.max_parked_polls),
            (
                "limits.max_parked_polls_per_session",
                self.max_parked_polls_per_session,
            ),
            ("limits.max_body_bytes", self.max_body_bytes),
            (
                "limits.max_messages_per_session",
                self.max_messages_per_session,
            ),
            (
                "limits.max_listener_tokens_per_agent",
                self.max_listener_tokens_per_agent,
            ),
            ("limits.max_remembered_jtis", self.max_remembered_jtis),
            ("limits.max_jtis_per_agent", self.max_jtis_per_agent),
            (
                "limits.max_record_bytes_per_plan",
                self.max_record_bytes_per_plan,
            ),
            ("limits.max_feed_line_bytes", self.max_feed_line_bytes),
            ("limits.max_plan_name_bytes", self.max_plan_name_bytes),
            ("limits.max_agent_name_chars", self.max_agent_name_chars),
            ("limits.max_agent_field_bytes", self.max_agent_field_bytes),
            ("limits.max_finished_jobs", self.max_finished_jobs),
            ("limits.max_records_per_plan", self.max_records_per_plan),
            ("limits.max_logs_per_plan", self.max_logs_per_plan),
            ("limits.max_jobs_per_request", self.max_jobs_per_request),
            ("limits.max_steps_per_job", self.max_steps_per_job),
            ("limits.max_pending_events", self.max_pending_events),
            ("limits.max_pipeline_runs", self.max_pipeline_runs),
            ("limits.max_run_variable_bytes", self.max_run_variable_bytes),
        ];
        match all.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(ConfigError::Zero(name)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: an empty file is the default config, durations read with units, and unknown keys
    // are refused (typos must not silently fall back to defaults).
    #[test]
    fn toml_reads_durations_and_refuses_unknown_keys() {
        let empty: ServerConfig = toml_from("");
        assert_eq!(empty, ServerConfig::default());
        let c: ServerConfig = toml_from(
            "long_poll_hold = \"2s\"\nlease_duration = \"1m\"\ncrypto_mode = \"modelled\"\n\
             [[pools]]\nname = \"linux\"\nid = 2\n\
             [[pats]]\ntoken = \"abc\"\nscopes = [\"fleetsim.admin\"]\nexpires_at_unix_s = 5\n\
             [limits]\nmax_agents = 3\n",
        );
        assert_eq!(c.long_poll_hold, Duration::from_secs(2));
        assert_eq!(c.lease_duration, Duration::from_secs(60));
        assert_eq!(c.crypto_mode, CryptoMode::Modelled);
        assert_eq!(
            c.pools,
            vec![PoolConfig {
                name: "linux".into(),
                id: 2
            }]
        );
        assert_eq!(c.pats[0].expires_at_unix_s, Some(5));
        assert_eq!(c.limits.max_agents, 3);
        assert_eq!(c.limits.max_sessions, Limits::default().max_sessions);
        c.validate().unwrap();
        assert!(toml::from_str::<ServerConfig>("long_pol_hold = \"2s\"").is_err());
        assert!(toml::from_str::<ServerConfig>("long_poll_hold = 50").is_err());
    }

    // Goal: validation catches what serde cannot, each with its own error.
    #[test]
    fn validate_rejects_inconsistent_configs() {
        let pool = |name: &str, id| PoolConfig {
            name: name.into(),
            id,
        };
        let with_pools = |pools| ServerConfig {
            pools,
            ..ServerConfig::default()
        };
        assert_eq!(
            with_pools(vec![pool("x", 1)]).validate(),
            Err(ConfigError::DuplicatePoolId(1))
        );
        assert_eq!(
            with_pools(vec![pool("default", 2)]).validate(),
            Err(ConfigError::DuplicatePoolName("default".into()))
        );
        assert_eq!(
            with_pools(vec![pool("x", 0)]).validate(),
            Err(ConfigError::ZeroPoolId)
        );
        let mut c = ServerConfig::with_env_pat("p");
        c.pats[0].scopes.push("vso.code".into());
        assert!(matches!(
            c.validate(),
            Err(ConfigError::UnknownScope { index: 0, .. })
        ));
        let mut c = ServerConfig::with_env_pat("p");
        c.pats.push(c.pats[0].clone());
        assert_eq!(c.validate(), Err(ConfigError::DuplicatePat { index: 1 }));
        let c = ServerConfig {
            public_url: Some("ftp://x".into()),
            ..ServerConfig::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::BadPublicUrl(_))));
        let mut c = ServerConfig::default();
        c.limits.max_sessions = 0;
        assert_eq!(c.validate(), Err(ConfigError::Zero("limits.max_sessions")));
    }

    // Goal: `[[pipelines]]` read from server.toml with defaults for jobs, steps and folder;
    // a bad demand is refused.
    #[test]
    fn toml_reads_pipelines() {
        let c: ServerConfig = toml_from(
            "[[pipelines]]\nid = 3\nname = \"ci\"\nproject = \"Demo\"\npool = \"default\"\n\
             [[pipelines]]\nid = 4\nname = \"nightly\"\nproject = \"Demo\"\npool = \"Default\"\n\
             jobs = 4\nsteps = [\"Checkout\", \"Bash\"]\ndemands = [\"docker\"]\nfolder = \"\\\\ops\"\n",
        );
        assert_eq!(c.pipelines[0].jobs, 1);
        assert_eq!(c.pipelines[0].steps, ["Checkout", "CmdLine"]);
        assert_eq!(c.pipelines[1].folder.as_deref(), Some("\\ops"));
        c.validate().unwrap();
        // The fleet's child emulator gets its config as a file: it must survive a round trip.
        let text = toml::to_string(&c).expect("serialise");
        assert_eq!(toml_from(&text), c);
        let mut bad = c.clone();
        bad.pipelines[1].demands = vec!["two words".into()];
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::BadPipeline { id: 4, .. })
        ));
        assert!(toml::from_str::<ServerConfig>("[[pipelines]]\nid = 1\nname = \"x\"\n").is_err());
    }

    // Goal: the env PAT carries every scope, and Debug never prints a PAT.
    #[test]
    fn env_pat_has_every_scope_and_is_redacted() {
        let c = ServerConfig::with_env_pat("s3cret-pat");
        assert_eq!(c.pats[0].scopes.len(), ALL_SCOPES.len());
        assert!(!format!("{c:?}").contains("s3cret-pat"));
        assert_eq!(c.public_url(), FALLBACK_PUBLIC_URL);
    }

    fn toml_from(text: &str) -> ServerConfig {
        toml::from_str(text).expect("valid toml")
    }
}
