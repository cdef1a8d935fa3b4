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

// Goal: jobs someone else queued (no `[jobs]` section with a `[target]`: source "server") are
// served, and their pickup latency comes from the server's own times (`queueTime` →
// `receiveTime`) instead of leaving them unmatched without samples.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_queued_by_someone_else_get_pickup_from_server_times() {
    use fleetsim_core::api::{ApiRequest, ApiResponse, Credential, Request};
    use fleetsim_core::job::{QueueJobsRequest, SyntheticJob, SyntheticStep};
    use fleetsim_live::client::{ClientOptions, HttpClient, Target};

    let dir = temp_dir("server-source");
    let pat = "server-source-pat-0123456789";
    let mut config = ServerConfig::with_env_pat(pat);
    config.long_poll_hold = Duration::from_secs(2);
    let emulator = server::start(EmulatorOptions::new(([127, 0, 0, 1], 0).into(), config))
        .await
        .unwrap();
    // Someone else queues three jobs before the fleet starts.
    let http = HttpClient::new(ClientOptions::new(
        Target::parse(&emulator.base_url).unwrap(),
    ))
    .await
    .unwrap();
    let job = SyntheticJob {
        steps: vec![SyntheticStep {
            duration_ms: 200,
            log_lines: 1,
            ..Default::default()
        }],
        ..Default::default()
    };
    let request = Request {
        credential: Credential::Basic {
            user: "someone".into(),
            password: pat.into(),
        },
        call: ApiRequest::QueueJobs {
            pool_id: 1,
            request: QueueJobsRequest {
                count: 3,
                template: Some(job),
                jobs: Vec::new(),
            },
        },
    };
    let wire = fleetsim_core::codec::encode_request(&request, "");
    let answer = http.connection(0).send(&wire).await.unwrap();
    let ApiResponse::QueuedJobs(queued) =
        fleetsim_core::codec::decode_response(&request.call, &answer)
    else {
        panic!("queueing failed: {answer:?}")
    };
    assert_eq!(queued.count, 3);
    let pat_file = dir.join("pat");
    std::fs::write(&pat_file, pat).unwrap();
    let text = format!(
        "[run]\nduration = \"5s\"\nseed = 3\n[target]\nurl = \"{}\"\npat_file = \"{}\"\n\
         proxy = {{ enabled = false }}\n[fleet]\nagents = 3\ndistinct_keys = 1\n\
         key_cache_dir = \"{}\"\n[agent]\nempty_poll_gap = \"300ms\"\n",
        emulator.base_url,
        pat_file.display(),
        std::env::temp_dir().join("fleetsim-test-keys").display(),
    );
    let scenario =
        fleetsim_scenario::load_str("server.toml", &text, &[]).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(scenario.jobs.source, fleetsim_scenario::JobSource::Server);
    let out = fleet::run(&scenario, RunOptions::default(), pending())
        .await
        .expect("the run is carried out");
    let pickup = &out.report.job_pickup;
    assert_eq!(out.report.jobs.queued, 0, "the fleet queued nothing itself");
    assert_eq!(out.report.jobs.started, 3, "{:?}", out.report.jobs);
    assert_eq!(pickup.server_clock, 3, "{pickup:?}");
    assert_eq!(pickup.latency_s.count, 3, "{pickup:?}");
    assert_eq!(pickup.unmatched, 0, "{pickup:?}");
    emulator.handle.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
