// The live fleet against a separately started emulator (as `fleetsim serve` runs it) over HTTPS
// with a self-signed certificate trusted through a CA file: the `[target]` path of a scenario —
// PAT from a file, TLS trust, no proxy — and the end-of-run stats read through the emulator's
// admin API rather than in process.

use std::future::pending;
use std::path::PathBuf;
use std::time::Duration;

use fleetsim_core::server::ServerConfig;
use fleetsim_live::fleet::{self, RunOptions};
use fleetsim_live::server::{self, EmulatorOptions, TlsMode};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "fleetsim-fleet-remote-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// Goal: agents register, run jobs and shut down against an HTTPS emulator whose self-signed
// certificate they trust via `ca_file`; the outcome carries the remote emulator's counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_target_with_ca_file_runs_jobs() {
    let dir = temp_dir("https");
    let pat = "remote-test-pat-0123456789";
    let mut config = ServerConfig::with_env_pat(pat);
    config.long_poll_hold = Duration::from_secs(2);
    let mut opts = EmulatorOptions::new(([127, 0, 0, 1], 0).into(), config);
    opts.tls = TlsMode::SelfSigned {
        dir: dir.join("tls"),
    };
    let emulator = server::start(opts).await.unwrap();
    let cert = emulator
        .cert_path
        .clone()
        .expect("a self-signed emulator reports its certificate");
    assert!(emulator.base_url.starts_with("https://"));
    let pat_file = dir.join("pat");
    std::fs::write(&pat_file, format!("{pat}\n")).unwrap();

    let text = format!(
        r#"
[run]
duration = "6s"
seed = 11

[target]
url = "{url}"
pat_file = "{pat_file}"
ca_file = "{cert}"
proxy = {{ enabled = false }}

[fleet]
agents = 4
ramp_up = "500ms"
distinct_keys = 2
key_cache_dir = "{keys}"

[agent]
empty_poll_gap = "300ms"

[jobs]
rate_per_s = 1
arrival = "constant"
duration = "1s"
steps = 1
log_lines_per_s = 10
secrets = 1
secret_lines = 2
"#,
        url = emulator.base_url,
        pat_file = pat_file.display(),
        cert = cert.display(),
        keys = std::env::temp_dir().join("fleetsim-test-keys").display(),
    );
    let scenario =
        fleetsim_scenario::load_str("remote.toml", &text, &[]).unwrap_or_else(|d| panic!("{d}"));
    let out = fleet::run(&scenario, RunOptions::default(), pending())
        .await
        .expect("the run is carried out");

    assert!(!out.embedded);
    assert_eq!(out.target_url, emulator.base_url);
    assert!(out.report.jobs.succeeded >= 2, "{:?}", out.report.jobs);
    let stats = out
        .emulator
        .expect("stats come from the remote emulator's admin API");
    assert_eq!(
        stats,
        emulator.handle.stats(),
        "the admin API reports the emulator's own counters"
    );
    assert_eq!(stats.leaked_secrets, 0);
    assert!(stats.agents >= 4, "{stats:?}");
    emulator.handle.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

// Goal: a target the fleet cannot trust makes the run impossible with a TLS error (the
// pre-flight discovery call fails): it does not hang, start agents against nothing, or silently
// fall back to plain HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_certificate_makes_the_run_impossible() {
    let dir = temp_dir("untrusted");
    let mut opts =
        EmulatorOptions::new(([127, 0, 0, 1], 0).into(), ServerConfig::with_env_pat("p"));
    opts.tls = TlsMode::SelfSigned {
        dir: dir.join("tls"),
    };
    let emulator = server::start(opts).await.unwrap();
    let other = fleetsim_live::tls::write_self_signed(&dir.join("other")).unwrap();
    let pat_file = dir.join("pat");
    std::fs::write(&pat_file, "p").unwrap();
    let text = format!(
        "[run]\nduration = \"2s\"\n[target]\nurl = \"{}\"\npat_file = \"{}\"\nca_file = \"{}\"\n\
         proxy = {{ enabled = false }}\n[fleet]\nagents = 1\ndistinct_keys = 1\nkey_cache_dir = \"{}\"\n",
        emulator.base_url,
        pat_file.display(),
        other.cert_path.display(),
        std::env::temp_dir().join("fleetsim-test-keys").display(),
    );
    let scenario =
        fleetsim_scenario::load_str("untrusted.toml", &text, &[]).unwrap_or_else(|d| panic!("{d}"));
    let result = fleet::run(&scenario, RunOptions::default(), pending()).await;
    assert!(
        matches!(
            result,
            Err(fleet::FleetError::Client(
                fleetsim_live::client::ClientError::Tls { .. }
            ))
        ),
        "{result:?}"
    );
    let stats = emulator.handle.shutdown().await;
    assert_eq!(stats.agents, 0, "no agent ever reached the target");
    std::fs::remove_dir_all(&dir).unwrap();
}
