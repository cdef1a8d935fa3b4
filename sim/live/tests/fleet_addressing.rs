// The fleet's addressing against a server laid out like Azure DevOps Services: the token
// service on another authority than the collection. The embedded emulator sits behind two small
// reverse forwarders written here: the *front* (the fleet's target) says `deploymentType:
// hosted` in connectionData, as Services does, and the *token authority* is the emulator's
// public URL, so the registration's `authorizationUrl` names it. Each forwarder counts what it
// carried, so the test can prove where every call went.

use std::future::pending;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetsim_core::server::ServerConfig;
use fleetsim_live::fleet::{self, RunOptions};
use fleetsim_live::server::{self, EmulatorOptions};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// `METHOD path` of every request a forwarder carried.
type Seen = Arc<parking_lot::Mutex<Vec<String>>>;

/// Forward every request on `listener` to `upstream` (one upstream connection per request),
/// recording it; with `hosted`, connectionData answers say `deploymentType: hosted`.
fn forward(listener: TcpListener, upstream: SocketAddr, hosted: bool) -> Seen {
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let record = Arc::clone(&record);
                    async move {
                        record
                            .lock()
                            .push(format!("{} {}", req.method(), req.uri().path()));
                        pass(req, upstream, hosted).await
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    seen
}

async fn pass(
    req: hyper::Request<hyper::body::Incoming>,
    upstream: SocketAddr,
    hosted: bool,
) -> Result<hyper::Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let connection_data = parts.uri.path().ends_with("/connectionData");
    let mut out = hyper::Request::from_parts(parts, Full::new(body));
    out.headers_mut()
        .insert("host", upstream.to_string().parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(upstream).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let resp = sender.send_request(out).await?;
    let (mut parts, body) = resp.into_parts();
    let mut body = body.collect().await?.to_bytes();
    if hosted && connection_data {
        let text = String::from_utf8_lossy(&body).replace(
            r#""deploymentType":"onPremises""#,
            r#""deploymentType":"hosted""#,
        );
        body = Bytes::from(text);
    }
    parts.headers.remove("content-length");
    Ok(hyper::Response::from_parts(parts, Full::new(body)))
}

// Goal: against a Services-like layout every client-credentials token is obtained from the
// registration's authorizationUrl on the second authority — the only calls that authority
// sees — while registration, sessions, polls, renewals and the plan hub stay on the target
// (the job message has no `system.servertype`, so the real agent's on-premises rule keeps its
// plan hub on the configured origin); jobs complete with 0 errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_come_from_the_authorization_url_on_another_authority() {
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_url = format!("http://{}", front.local_addr().unwrap());
    let authority_url = format!("http://{}", authority.local_addr().unwrap());

    let pat = "addressing-test-pat-0123456789";
    let mut config = ServerConfig::with_env_pat(pat);
    config.long_poll_hold = Duration::from_secs(2);
    config.public_url = Some(authority_url.clone());
    let emulator = server::start(EmulatorOptions::new(([127, 0, 0, 1], 0).into(), config))
        .await
        .unwrap();
    let upstream: SocketAddr = emulator
        .base_url
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let at_front = forward(front, upstream, true);
    let at_authority = forward(authority, upstream, false);

    let dir = std::env::temp_dir().join(format!("fleetsim-addressing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pat_file = dir.join("pat");
    std::fs::write(&pat_file, pat).unwrap();
    let text = format!(
        r#"
[run]
duration = "6s"
seed = 5

[target]
url = "{front_url}"
pat_file = "{pat_file}"
proxy = {{ enabled = false }}

[fleet]
agents = 3
ramp_up = "300ms"
distinct_keys = 1
key_cache_dir = "{keys}"

[agent]
empty_poll_gap = "300ms"

[jobs]
rate_per_s = 1
arrival = "constant"
duration = "1s"
steps = 1
log_lines_per_s = 10
"#,
        pat_file = pat_file.display(),
        keys = std::env::temp_dir().join("fleetsim-test-keys").display(),
    );
    let scenario = fleetsim_scenario::load_str("addressing.toml", &text, &[])
        .unwrap_or_else(|d| panic!("{d}"));
    let out = fleet::run(&scenario, RunOptions::default(), pending())
        .await
        .expect("the run is carried out");

    let authority_calls = at_authority.lock().clone();
    let front_calls = at_front.lock().clone();
    let tokens = out
        .report
        .operations
        .get("token_exchange")
        .map_or(0, |o| o.count);
    assert!(tokens >= 3, "every agent minted a token: {tokens}");
    assert_eq!(
        authority_calls.len() as u64,
        tokens,
        "each token came through the authority: {authority_calls:?}"
    );
    assert!(
        authority_calls
            .iter()
            .all(|c| c == "POST /_apis/oauth2/token"),
        "the authority sees token requests only: {authority_calls:?}"
    );
    assert!(
        !front_calls.iter().any(|c| c.contains("oauth2")),
        "no token request reached the target"
    );
    assert!(
        front_calls
            .iter()
            .any(|c| c.contains("/_apis/distributedtask/hubs/")),
        "the plan hub stayed on the target's origin"
    );
    assert!(out.report.jobs.succeeded >= 2, "{:?}", out.report.jobs);
    assert_eq!(out.report.errors.count, 0, "{:?}", out.report.errors);
    let stats = emulator.handle.stats();
    assert_eq!(stats.sessions, 0, "sessions deleted: {stats:?}");
    emulator.handle.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
