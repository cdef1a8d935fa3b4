//! The virtual agent's knobs: every timer of the real Azure Pipelines agent with the real agent's
//! value as the default (protocol.md §3–§5 and §10), plus the identity it registers with and the
//! fleetsim extensions (job-token rotation, masking switch), and the model of the work the steps
//! of a real job message do ([`StepModel`]).
//!
//! This module only holds data; it never samples, schedules or sends anything.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::crypto::{CryptoMode, Meter};
use crate::dist::{DurationDist, NumberDist};
use crate::mask::RegexCache;

/// What the agent does when an agent of the same name is already registered in the pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RegisterMode {
    /// `config.sh` without `--replace`: a duplicate name is fatal (`TaskAgentExistsException`).
    #[default]
    Register,
    /// `config.sh --replace`: PUT the existing agent with the new public key.
    Replace,
}

/// Every setting of one virtual agent. Shared by a whole fleet through an `Arc`.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The pool the agent registers in, looked up by name (`GET pools?poolName=`).
    pub pool_name: String,
    /// Agent names are `{name_prefix}{index}`.
    pub name_prefix: String,
    /// Agent version sent at registration and session create.
    pub version: String,
    /// `osDescription` sent at registration.
    pub os_description: String,
    /// `systemCapabilities` sent at registration and session create (job demands match these).
    pub capabilities: BTreeMap<String, String>,
    /// The PAT used for registration only, sent as Basic `VstsAgent:<pat>`.
    pub pat: String,
    /// Register new, or replace an agent that already has this name.
    pub register_mode: RegisterMode,
    /// Real crypto or a modelled cost. An agent built without a private key is always modelled.
    pub crypto_mode: CryptoMode,
    /// Times the agent's crypto with a driver-supplied clock; `Meter::off()` reports 0 ns.
    pub meter: Meter,
    /// Mask secret values in log lines before sending them (the real agent always does). Turning
    /// it off is how a test proves the emulator detects leaks.
    pub mask_secrets: bool,
    /// Mixed into every client assertion's `jti` (`rng::salted_uuid`). 0 in virtual time, so
    /// the trace stays a function of the seed; drawn from the OS in live runs, because a server
    /// remembers each jti until the assertion expires and refuses a repeat as a replay: without
    /// a salt, re-running a seed against the same server within minutes would fail every token
    /// exchange.
    pub jti_salt: u128,

    /// Extension: rotate the job token this long before it expires (`None`: never rotate, as the
    /// real agent).
    pub job_token_rotate_before: Option<Duration>,
    /// The job token's lifetime when the job message does not say (`None`: unknown, so no
    /// rotation until a rotation answer gives `expires_in`).
    pub job_token_ttl_hint: Option<Duration>,
    /// How the agent paces itself: the real agent's timers, retry counts and batch limits.
    pub pacing: Pacing,
    /// What the steps of a real job message (any task but `FleetsimSynthetic`) do: how long
    /// they run, what they print, whether they fail. Shared by the whole fleet.
    pub steps: Arc<StepModel>,
    /// The jobs' compiled regex mask hints, shared by every agent built with this configuration
    /// (and its clones): the emulator sends one hint with every job, and compiled per job it
    /// was most of a running job's memory. Sharing changes no masked line (`mask::RegexCache`).
    pub mask_regexes: RegexCache,
}

/// The work of real task steps, by task name. A job message from a real pipeline names tasks
/// (Checkout, CmdLine, Bash, …) that the virtual agent cannot run; each such step instead runs
/// for a drawn time and prints drawn log lines, so a real pipeline puts the load of its steps
/// on the server. `FleetsimSynthetic` steps never read this: their inputs carry their work.
#[derive(Clone, Debug, PartialEq)]
pub struct StepModel {
    /// The model of every task `tasks` does not name.
    pub default: TaskModel,
    /// Models by task name (`reference.name`, matched case-insensitively), in name order.
    pub tasks: BTreeMap<String, TaskModel>,
}

/// What one step of a task does.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskModel {
    /// How long the step runs.
    pub duration: DurationDist,
    /// Log lines the step prints per second of its run time (≥ 0).
    pub log_lines_per_s: f64,
    /// Lines per step that print a secret of the job (masked before they leave the agent).
    pub secret_lines: u32,
    /// Bytes attached to the step's record at its end (0 = no attachment).
    pub attachment_bytes: NumberDist,
    /// Probability that the step fails (which fails the job), 0 ..= 1.
    pub failure_rate: f64,
    /// Probability that the step succeeds with issues, 0 ..= 1 (with `failure_rate` ≤ 1).
    pub issues_rate: f64,
}

impl StepModel {
    /// The model of task `name`: its own entry (case-insensitive), else the default.
    pub fn for_task(&self, name: &str) -> &TaskModel {
        self.tasks
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map_or(&self.default, |(_, m)| m)
    }
}

impl Default for TaskModel {
    /// A generic build step: 5–20 s, 10 lines a second, one secret line, no attachment, always
    /// succeeds.
    fn default() -> Self {
        TaskModel {
            duration: DurationDist::uniform(Duration::from_secs(5), Duration::from_secs(20)),
            log_lines_per_s: 10.0,
            secret_lines: 1,
            attachment_bytes: NumberDist::constant(0.0),
            failure_rate: 0.0,
            issues_rate: 0.0,
        }
    }
}

impl Default for StepModel {
    /// The model a run uses when the scenario has no `[jobs.tasks]`: [`TaskModel::default`] for
    /// every task, and a checkout (`Checkout`) of 2–6 s that prints 40 lines a second.
    fn default() -> Self {
        let checkout = TaskModel {
            duration: DurationDist::uniform(Duration::from_secs(2), Duration::from_secs(6)),
            log_lines_per_s: 40.0,
            ..TaskModel::default()
        };
        StepModel {
            default: TaskModel::default(),
            tasks: BTreeMap::from([(CHECKOUT_TASK_NAME.to_string(), checkout)]),
        }
    }
}

/// The name of the checkout task in real job messages (`reference.name`).
pub const CHECKOUT_TASK_NAME: &str = "Checkout";

/// How the real agent paces itself: every timer, retry count and batch limit, with the real
/// agent's value as the default. The scenario's `[agent]` section holds one of these, so the
/// defaults live here only.
///
/// Durations that the real agent draws at random are `DurationDist`s so a scenario can also pin
/// them (the M/M/c validation runs use a zero gap after an empty poll).
#[derive(Clone, Debug, PartialEq)]
pub struct Pacing {
    /// Client timeout of every listener call, long polls included (`VSTS_HTTP_TIMEOUT`, 100 s).
    pub long_poll_timeout: Duration,
    /// Pause after a long poll that ended empty (U(5,15) s since agent v3.229.0).
    pub empty_poll_gap: DurationDist,
    /// Back-off after the first `error_backoff_first_count` consecutive listener errors.
    pub error_backoff_first: DurationDist,
    /// Back-off after more consecutive errors than that.
    pub error_backoff_later: DurationDist,
    /// How many consecutive errors use `error_backoff_first` (5).
    pub error_backoff_first_count: u32,
    /// Pause between keep-alive polls, counted from each keep-alive's return (30 s).
    pub keepalive_interval: Duration,
    /// Run the parallel keep-alive loop at all (agents since v3.236.1 do).
    pub keepalive: bool,
    /// Pause between session-create attempts (30 s).
    pub session_retry: Duration,
    /// Give up (stop) once session conflicts have lasted this long (4 min).
    pub session_conflict_budget: Duration,
    /// Timeout of the session DELETE on shutdown (30 s).
    pub session_delete_timeout: Duration,
    /// Lock renewal period once the job runs (60 s).
    pub lock_renew_interval: Duration,
    /// Attempts of the first renewal before the job is given up (5).
    pub first_renew_tries: u32,
    /// Pause between first-renewal attempts (U(1,10) s).
    pub first_renew_retry: DurationDist,
    /// Pause after a failed renewal while the job runs (U(5,15) s; `renew_retry_later` after 5).
    pub renew_retry: DurationDist,
    /// Pause after more than 5 consecutive failed renewals (U(15,30) s).
    pub renew_retry_later: DurationDist,
    /// Give up the job when renewals fail for this long past the last good one (lease 10 min +
    /// 5 min).
    pub renew_give_up_after: Duration,
    /// Client timeout of a lock renewal (the job-request connection is capped at 60 s).
    pub renew_timeout: Duration,
    /// Timeline-record queue drain period (500 ms).
    pub timeline_interval: Duration,
    /// Live-console feed period for the first `feed_fast_period` of a job (500 ms).
    pub feed_interval_fast: Duration,
    /// Live-console feed period afterwards (1000 ms).
    pub feed_interval: Duration,
    /// How long the fast feed period lasts (15 s).
    pub feed_fast_period: Duration,
    /// Lines per feed POST at most (100).
    pub feed_batch_lines_max: usize,
    /// Feed POSTs per tick at most (5, i.e. ~500 lines per tick).
    pub feed_batches_per_tick_max: usize,
    /// Lines are cut to this many characters (1024).
    pub line_chars_max: usize,
    /// Log-upload queue drain period (1 s).
    pub log_upload_interval: Duration,
    /// Bytes per log upload at most (the real agent pages logs at 8 MB).
    pub log_page_bytes_max: usize,
    /// Client timeout of every worker (job connection) call (100 s).
    pub job_call_timeout: Duration,
    /// Attempts of the completion event (5).
    pub completion_tries: u32,
    /// Pause between completion attempts (5 s).
    pub completion_retry: Duration,
    /// Largest artifact one step uploads; bigger requests are cut to this (bounded memory).
    pub artifact_bytes_max: u64,
    /// 401 answers re-mint the listener token at most this often per call (3).
    pub auth_retries_max: u8,
    /// Lifetime of the JWT client assertion (5 min).
    pub assertion_lifetime: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            pool_name: "Default".to_string(),
            name_prefix: "fleetsim-agent-".to_string(),
            version: "4.260.0".to_string(),
            os_description: "Linux 6.1 fleetsim virtual agent".to_string(),
            capabilities: BTreeMap::new(),
            pat: String::new(),
            register_mode: RegisterMode::Register,
            crypto_mode: CryptoMode::Real,
            meter: Meter::off(),
            mask_secrets: true,
            jti_salt: 0,
            job_token_rotate_before: None,
            job_token_ttl_hint: None,
            pacing: Pacing::default(),
            steps: Arc::new(StepModel::default()),
            mask_regexes: RegexCache::new(),
        }
    }
}

impl Default for Pacing {
    fn default() -> Self {
        let secs = Duration::from_secs;
        Pacing {
            long_poll_timeout: secs(100),
            empty_poll_gap: DurationDist::uniform(secs(5), secs(15)),
            error_backoff_first: DurationDist::uniform(secs(15), secs(30)),
            error_backoff_later: DurationDist::uniform(secs(30), secs(60)),
            error_backoff_first_count: 5,
            keepalive_interval: secs(30),
            keepalive: true,
            session_retry: secs(30),
            session_conflict_budget: secs(4 * 60),
            session_delete_timeout: secs(30),
            lock_renew_interval: secs(60),
            first_renew_tries: 5,
            first_renew_retry: DurationDist::uniform(secs(1), secs(10)),
            renew_retry: DurationDist::uniform(secs(5), secs(15)),
            renew_retry_later: DurationDist::uniform(secs(15), secs(30)),
            renew_give_up_after: secs(15 * 60),
            renew_timeout: secs(60),
            timeline_interval: Duration::from_millis(500),
            feed_interval_fast: Duration::from_millis(500),
            feed_interval: Duration::from_millis(1000),
            feed_fast_period: secs(15),
            feed_batch_lines_max: 100,
            feed_batches_per_tick_max: 5,
            line_chars_max: 1024,
            log_upload_interval: secs(1),
            log_page_bytes_max: 8 * 1024 * 1024,
            job_call_timeout: secs(100),
            completion_tries: 5,
            completion_retry: secs(5),
            artifact_bytes_max: 64 * 1024 * 1024,
            auth_retries_max: 3,
            assertion_lifetime: secs(5 * 60),
        }
    }
}

impl AgentConfig {
    /// The name of agent `index`.
    pub fn agent_name(&self, index: u32) -> String {
        format!("{}{index}", self.name_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the defaults are the real agent's timers (protocol.md §10), so a scenario that sets
    // nothing behaves like the real agent.
    #[test]
    fn defaults_mimic_the_real_agent() {
        let c = AgentConfig::default();
        assert_eq!(c.pacing.long_poll_timeout, Duration::from_secs(100));
        assert_eq!(
            c.pacing.empty_poll_gap,
            DurationDist::uniform(Duration::from_secs(5), Duration::from_secs(15))
        );
        assert_eq!(c.pacing.keepalive_interval, Duration::from_secs(30));
        assert_eq!(c.pacing.session_retry, Duration::from_secs(30));
        assert_eq!(c.pacing.session_conflict_budget, Duration::from_secs(240));
        assert_eq!(c.pacing.lock_renew_interval, Duration::from_secs(60));
        assert_eq!(
            (c.pacing.completion_tries, c.pacing.completion_retry),
            (5, Duration::from_secs(5))
        );
        assert_eq!(
            (c.pacing.feed_batch_lines_max, c.pacing.line_chars_max),
            (100, 1024)
        );
        assert_eq!(c.job_token_rotate_before, None);
        assert!(c.mask_secrets);
        assert_eq!(c.agent_name(7), "fleetsim-agent-7");
    }

    // Goal: task models are found by name whatever its case, and unknown tasks get the default.
    #[test]
    fn task_models_match_names_case_insensitively() {
        let model = StepModel::default();
        let checkout = model.for_task("checkout");
        assert_eq!(checkout.log_lines_per_s, 40.0);
        assert!(std::ptr::eq(checkout, model.for_task("CHECKOUT")));
        assert!(std::ptr::eq(model.for_task("CmdLine"), &model.default));
    }
}
