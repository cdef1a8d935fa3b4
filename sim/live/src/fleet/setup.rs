//! Scenario → the settings of each part of a live run: the agents' `AgentConfig`, the embedded
//! emulator's `ServerConfig`, the HTTP client's options and the proxy inputs. Pure mapping, plus
//! reading the PAT from where the scenario names it.
//!
//! This module decides nothing about the protocol: every value comes from the scenario (whose
//! defaults are the real agent's) or, where the scenario is silent, from the core's defaults.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fleetsim_core::agent::AgentConfig;
use fleetsim_core::crypto::{CryptoMode, Meter};
use fleetsim_core::server::ServerConfig;
use fleetsim_scenario::{self as scenario, Scenario};

use crate::client::TlsTrust;
use crate::proxy::ProxyInputs;

/// Where common Linux distributions keep the system CA bundle (for `TlsTrust::Default`).
const SYSTEM_CA_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Monotonic nanoseconds since the first call: the clock the agents' crypto `Meter` reads.
pub(crate) fn monotonic_nanos() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    u64::try_from(ORIGIN.get_or_init(Instant::now).elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The agents' configuration: the scenario's own mapping (shared with the virtual-time driver),
/// with real crypto timed by the driver's monotonic clock.
pub fn agent_config(s: &Scenario, pat: String) -> AgentConfig {
    let mut config = s.agent_config(pat, CryptoMode::Real);
    config.meter = Meter::new(monotonic_nanos);
    config.jti_salt = jti_salt();
    config
}

/// A salt for this run's assertion ids (`AgentConfig::jti_salt`), so a re-run of the same seed
/// against the same server sends jtis it has not seen. From the OS RNG; should that fail, from
/// the wall clock and process id, which also differ between runs.
fn jti_salt() -> u128 {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_ok() {
        return u128::from_le_bytes(bytes);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    nanos ^ (u128::from(std::process::id()) << 96)
}

/// The embedded emulator's configuration: the scenario's own mapping with real crypto and one
/// PAT (generated for the run; the fleet is its only user) holding every scope.
pub fn server_config(s: &Scenario, pat: &str) -> ServerConfig {
    s.server_config(pat, CryptoMode::Real)
}

/// The proxy inputs of a `[target.proxy]` section; `None` when the proxy is switched off.
pub fn proxy_inputs(p: &scenario::ProxySettings) -> Option<ProxyInputs> {
    let mut inputs = ProxyInputs {
        no_proxy: p.no_proxy.clone(),
        bypass: p.bypass.clone(),
        username_env: Some(p.username_env.clone()),
        password_env: Some(p.password_env.clone()),
        ..ProxyInputs::default()
    };
    match &p.source {
        scenario::ProxySource::Off => return None,
        scenario::ProxySource::Environment => inputs.use_env = true,
        scenario::ProxySource::Url(url) => inputs.url = Some(url.clone()),
        scenario::ProxySource::File(path) => inputs.proxy_file = Some(path.clone()),
    }
    Some(inputs)
}

/// How the client trusts the target's certificate. `Default` means the system CA bundle.
pub fn tls_trust(t: &scenario::TlsTrust) -> Result<TlsTrust, String> {
    match t {
        scenario::TlsTrust::CaFile(path) => Ok(TlsTrust::CaFile(path.clone())),
        scenario::TlsTrust::Insecure => Ok(TlsTrust::InsecureAcceptAnyCertificate),
        scenario::TlsTrust::Default => system_ca_bundle().map(TlsTrust::CaFile).ok_or_else(|| {
            "no system CA bundle found (looked at SSL_CERT_FILE and /etc/ssl/certs/...); set \
             target.ca_file or target.insecure"
                .to_string()
        }),
    }
}

fn system_ca_bundle() -> Option<PathBuf> {
    std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(SYSTEM_CA_BUNDLES.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

/// Read the PAT from where the scenario names it. Never logged; errors name the source only.
pub fn read_pat(source: &scenario::PatSource) -> Result<String, String> {
    let pat = match source {
        scenario::PatSource::Env(name) => std::env::var(name)
            .map_err(|_| format!("the PAT variable {name} is not set (export {name}=<token>)"))?,
        scenario::PatSource::File(path) => read_pat_file(path)?,
    };
    let pat = pat.trim().to_string();
    if pat.is_empty() {
        return Err("the PAT is empty".to_string());
    }
    Ok(pat)
}

fn read_pat_file(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read PAT file {}: {e}", path.display()))?;
    if meta.len() > 64 * 1024 {
        return Err(format!("PAT file {} is larger than 64 KiB", path.display()));
    }
    std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read PAT file {}: {e}", path.display()))
}

/// A fresh PAT for the embedded emulator: 32 random bytes from the OS, hex. Not derived from the
/// run seed, so a report or trace never lets anyone recompute it.
pub fn generate_pat() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("the OS random source failed: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// How long the client waits for any call: above every client timeout the agent keeps itself
/// (the agent cancels first; this is the backstop for a call the agent forgot).
pub fn client_timeout(config: &AgentConfig) -> Duration {
    let p = &config.pacing;
    p.long_poll_timeout
        .max(p.job_call_timeout)
        .max(p.renew_timeout)
        .max(p.session_delete_timeout)
        + Duration::from_secs(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(extra: &str) -> Scenario {
        let text = format!("[run]\nduration = \"10s\"\n[fleet]\nagents = 3\n{extra}");
        let text = if text.contains("[jobs]") {
            text
        } else {
            format!("{text}[jobs]\nrate_per_s = 0\n")
        };
        fleetsim_scenario::load_str("t.toml", &text, &[]).unwrap()
    }

    // Goal: scenario timers reach the agent config, crypto is real and timed in live mode, and
    // the client's backstop timeout sits above every timeout the agent keeps itself.
    #[test]
    fn agent_config_is_real_timed_and_carries_settings() {
        let s = scenario("[agent]\nkeepalive_interval = \"7s\"\nmask_secrets = false\n");
        let c = agent_config(&s, "pat".into());
        assert_eq!(c.pacing.keepalive_interval, Duration::from_secs(7));
        assert!(!c.mask_secrets);
        assert_eq!(c.crypto_mode, CryptoMode::Real);
        assert!(c.meter.is_on());
        assert!(client_timeout(&c) > c.pacing.long_poll_timeout.max(c.pacing.job_call_timeout));
    }

    // Goal: the embedded emulator's config (pool, hold, token TTL, our PAT) validates.
    #[test]
    fn server_config_carries_pool_hold_and_pat() {
        let s = scenario(
            "[server]\npool = \"Linux\"\nlong_poll_hold = \"5s\"\n[jobs]\nrate_per_s = 0\ntoken_ttl = \"20s\"\n",
        );
        let c = server_config(&s, "abc");
        assert_eq!(c.pools[0].name, "Linux");
        assert_eq!(c.long_poll_hold, Duration::from_secs(5));
        assert_eq!(c.job_token_ttl, Duration::from_secs(20));
        assert_eq!(c.pats[0].token, "abc");
        c.validate().unwrap();
    }

    // Goal: a generated PAT is long, hex and different every time.
    #[test]
    fn generated_pats_are_fresh() {
        let (a, b) = (generate_pat().unwrap(), generate_pat().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
