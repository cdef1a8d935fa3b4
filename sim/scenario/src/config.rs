//! Scenario → the core's configuration types, in one place, so the live and the virtual-time
//! drivers configure agents and the embedded emulator identically.
//!
//! These are pure mappings: they never read the environment or files (the caller resolves the
//! PAT and passes it in) and never start anything.

use std::sync::Arc;

use fleetsim_core::agent::{AgentConfig, RegisterMode as CoreRegisterMode};
use fleetsim_core::api::Credential;
use fleetsim_core::crypto::{CryptoMode, Meter};
use fleetsim_core::mask::RegexCache;
use fleetsim_core::server::{Limits, PoolConfig, ServerConfig};
use fleetsim_core::shard::Shard;
use fleetsim_core::workload::WorkloadConfig;

use crate::model::{RegisterMode, Scenario};

/// Pool id given to a scenario pool other than the emulator's built-in `Default` (id 1).
pub const SCENARIO_POOL_ID: u32 = 2;

impl Scenario {
    /// A digest of what this scenario makes a fleet do: SHA-256 (first 16 hex digits) of every
    /// validated section except the target, the file's path and the override list (the run's name,
    /// which defaults to the file's stem, is in). Shards of one
    /// run carry it in their reports (`run.scenario_digest`) and `fleetsim merge` refuses shards
    /// whose digests differ: they ran different fleets. The target is left out because the same
    /// fleet may reach the same server by different URLs (a child of `run --processes` is given
    /// the parent's emulator), and the file name because the merge may run on another machine.
    /// The thresholds are left out too: they judge a run without shaping it, so the shards
    /// of one run can be merged and judged against stricter or looser limits afterwards
    /// (`fleetsim merge --scenario S --set thresholds…`).
    /// It is stable for one build (it hashes the validated model, not the TOML text, so
    /// formatting and key order do not matter); reports of different builds need not agree.
    pub fn digest(&self) -> String {
        use sha2::Digest as _;
        let model = format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            self.run, self.fleet, self.agent, self.jobs, self.server, self.network, self.faults,
        );
        let hash = sha2::Sha256::digest(model.as_bytes());
        hash[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The pool the fleet registers into: the target's, or the embedded emulator's.
    pub fn pool_name(&self) -> &str {
        self.target.as_ref().map_or(&self.server.pool, |t| &t.pool)
    }

    /// The configuration every agent of the fleet shares. `pat` is the resolved PAT (from
    /// `target.pat_env` / `pat_file`, or the embedded emulator's); the meter is off (drivers
    /// that time crypto set their own).
    pub fn agent_config(&self, pat: impl Into<String>, crypto_mode: CryptoMode) -> AgentConfig {
        let a = &self.agent;
        AgentConfig {
            pool_name: self.pool_name().to_string(),
            name_prefix: self.fleet.name_prefix.clone(),
            version: a.version.clone(),
            os_description: a.os_description.clone(),
            capabilities: self.fleet.capabilities.clone(),
            pat: pat.into(),
            register_mode: match self.fleet.register_mode {
                RegisterMode::Register => CoreRegisterMode::Register,
                RegisterMode::Replace => CoreRegisterMode::Replace,
            },
            crypto_mode,
            meter: Meter::off(),
            mask_secrets: a.mask_secrets,
            // Live drivers salt it per run (`AgentConfig::jti_salt`); virtual time keeps 0.
            jti_salt: 0,
            job_token_rotate_before: a.job_token_rotate_before,
            job_token_ttl_hint: self.jobs.token_ttl,
            pacing: a.pacing.clone(),
            steps: Arc::new(self.jobs.tasks.clone()),
            mask_regexes: RegexCache::new(),
        }
    }

    /// The job workload's configuration: the `[jobs]` load into the fleet's pool, every call made
    /// with `credential` (the PAT as Basic). The whole run's jobs: a sharded driver sets
    /// `shard` on the result.
    pub fn workload_config(&self, credential: Credential) -> WorkloadConfig {
        WorkloadConfig {
            source: self.jobs.source.clone(),
            arrival: self.jobs.arrival.clone(),
            jobs: self.jobs.model.clone(),
            pool_name: self.pool_name().to_string(),
            credential,
            duration: self.run.duration,
            shard: Shard::WHOLE,
        }
    }

    /// The embedded emulator's configuration: the `[server]` settings, `pat` accepted with
    /// every scope, the scenario's pool, and limits raised to fit the fleet where the scenario
    /// leaves them open (a 10^6-agent virtual run must not trip the default of 10^5 agents).
    pub fn server_config(&self, pat: impl Into<String>, crypto_mode: CryptoMode) -> ServerConfig {
        let s = &self.server;
        let base = ServerConfig::with_env_pat(pat);
        let agents = self.fleet.agents as usize;
        let fit = |set: Option<u64>, default: usize, need: usize| {
            set.map_or(default.max(need), |v| {
                usize::try_from(v).unwrap_or(usize::MAX)
            })
        };
        let d = Limits::default();
        let limits = Limits {
            max_agents: fit(s.limits.max_agents, d.max_agents, agents),
            max_sessions: fit(s.limits.max_sessions, d.max_sessions, agents),
            max_queued_jobs: fit(s.limits.max_queued_jobs, d.max_queued_jobs, 0),
            // Each agent parks two polls: the main loop's and the keep-alive's.
            max_parked_polls: fit(s.limits.max_parked_polls, d.max_parked_polls, 2 * agents),
            max_body_bytes: fit(s.limits.max_body_bytes, d.max_body_bytes, 0),
            ..d
        };
        let pools = if s.pool == fleetsim_core::server::DEFAULT_POOL_NAME {
            Vec::new()
        } else {
            vec![PoolConfig {
                name: s.pool.clone(),
                id: SCENARIO_POOL_ID,
            }]
        };
        ServerConfig {
            pools,
            listener_token_ttl: s.listener_token_ttl,
            job_token_ttl: self.jobs.token_ttl.unwrap_or(base.job_token_ttl),
            job_token_rotation_grace: s.job_token_rotation_grace,
            long_poll_hold: s.long_poll_hold,
            lease_duration: s.lease_duration,
            lease_grace: s.lease_grace,
            session_idle_timeout: s.session_idle_timeout,
            jwt_skew: s.jwt_skew,
            crypto_mode,
            secret_scan: s.secret_scan,
            limits,
            pipelines: s.pipelines.clone(),
            layout: s.layout.clone(),
            ..base
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn defaults_match_the_cores_defaults() {
        // Goal: a scenario that says nothing configures agents and the emulator exactly as the
        // core's own defaults do (one set of real-agent values, not two that drift apart).
        let s = crate::load_str("d.toml", "[run]\nduration = \"1m\"\n", &[]).unwrap();
        let mine = s.agent_config("pat", CryptoMode::Real);
        let core = AgentConfig {
            pat: "pat".into(),
            ..AgentConfig::default()
        };
        assert_eq!(format!("{mine:?}"), format!("{core:?}"));
        let server = s.server_config("pat", CryptoMode::Real);
        let core = ServerConfig::with_env_pat("pat");
        assert_eq!(format!("{server:?}"), format!("{core:?}"));
    }

    #[test]
    fn server_limits_grow_with_the_fleet() {
        // Goal: big fleets fit the emulator unless the scenario sets a limit on purpose.
        let text = "[run]\nduration = \"1m\"\n[fleet]\nagents = 1000000\n\
                    [server]\npool = \"big\"\nlong_poll_hold = \"20s\"\n\
                    [server.limits]\nmax_sessions = 10\n";
        let s = crate::load_str("b.toml", text, &[]).unwrap();
        let c = s.server_config("pat", CryptoMode::Modelled);
        assert_eq!(c.limits.max_agents, 1_000_000);
        assert_eq!(c.limits.max_sessions, 10);
        assert_eq!(c.limits.max_parked_polls, 2_000_000);
        assert_eq!(c.long_poll_hold, Duration::from_secs(20));
        assert_eq!(
            c.pools,
            vec![PoolConfig {
                name: "big".into(),
                id: SCENARIO_POOL_ID
            }]
        );
        assert_eq!(s.agent_config("pat", CryptoMode::Modelled).pool_name, "big");
        assert!(c.validate().is_ok());
    }
}
