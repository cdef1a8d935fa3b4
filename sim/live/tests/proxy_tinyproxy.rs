// The agents' HTTP client through a real proxy: Debian's tinyproxy, started by each test on
// 127.0.0.1 with Basic auth required (`.ci/run` and `scripts/test.sh` install it). Proof that
// traffic went through the proxy comes from tinyproxy's own log; proof that Basic auth is
// required and used comes from its 407 without (or with wrong) credentials and a 200 with them.
//
// The target is a tiny hyper echo server (plain and TLS with a self-signed certificate) so these
// tests exercise transport only; the fleet tests run the protocol through the proxy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetsim_core::wire::{Method, WireRequest};
use fleetsim_live::client::{ClientError, ClientOptions, HttpClient, Target, TlsTrust};
use fleetsim_live::proxy::{ProxyConfig, ProxyInputs};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const PROXY_USER: &str = "fleet";
const PROXY_PASSWORD: &str = "s3cret-Proxy";

/// A tinyproxy child process with its own config and log in a temporary directory. Dropping it
/// kills exactly that child.
struct Tinyproxy {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Tinyproxy {
    /// Start tinyproxy on a free loopback port, requiring Basic auth, and wait until it accepts.
    async fn start(name: &str) -> Tinyproxy {
        let dir =
            std::env::temp_dir().join(format!("fleetsim-tinyproxy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Pick a free port: bind port 0, read it, release it for tinyproxy.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{log}\"\nLogLevel Info\n\
             MaxClients 64\nAllow 127.0.0.1\nBasicAuth {PROXY_USER} {PROXY_PASSWORD}\n\
             DisableViaHeader Yes\n",
            log = dir.join("tinyproxy.log").display()
        );
        let config_path = dir.join("tinyproxy.conf");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy must be installed (apt-get install -y tinyproxy; .ci/run does it)");
        let proxy = Tinyproxy { child, dir, port };
        proxy.wait_ready().await;
        proxy
    }

    /// Readiness, not synchronisation: poll until the port accepts, bounded at 10 s.
    async fn wait_ready(&self) {
        for _ in 0..500 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("tinyproxy did not start listening on {}", self.port);
    }

    fn url(&self, credentials: Option<(&str, &str)>) -> String {
        match credentials {
            Some((user, password)) => format!("http://{user}:{password}@127.0.0.1:{}", self.port),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("tinyproxy.log")).unwrap_or_default()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An echo server: answers 200 with `METHOD PATH auth=<yes|no>`.
async fn echo_server(tls: Option<Arc<rustls::ServerConfig>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let auth = if req.headers().contains_key("authorization") {
                        "yes"
                    } else {
                        "no"
                    };
                    let body = format!("{} {} auth={auth}", req.method(), req.uri());
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(
                        body,
                    ))))
                });
                let builder = hyper::server::conn::http1::Builder::new();
                match tls {
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                    }
                    Some(config) => {
                        let Ok(stream) = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await
                        else {
                            return;
                        };
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            });
        }
    });
    addr
}

fn self_signed(dir: &Path) -> (PathBuf, Arc<rustls::ServerConfig>) {
    let files = fleetsim_live::tls::write_self_signed(dir).unwrap();
    let config = fleetsim_live::tls::server_config(&files.cert_path, &files.key_path).unwrap();
    (files.cert_path, config)
}

fn get(path: &str) -> WireRequest {
    let mut req = WireRequest::new(Method::Get, path, "probe=1");
    req.authorization = Some("Bearer target-token".into());
    req
}

async fn client_via(target: &str, proxy_url: &str, tls: Option<TlsTrust>) -> Arc<HttpClient> {
    let inputs = ProxyInputs {
        url: Some(proxy_url.into()),
        ..Default::default()
    };
    let proxy = ProxyConfig::resolve(&inputs, &|_| None, target.starts_with("https")).unwrap();
    let mut opts = ClientOptions::new(Target::parse(target).unwrap());
    opts.proxy = proxy;
    opts.tls = tls;
    opts.request_timeout = Duration::from_secs(10);
    HttpClient::new(opts).await.unwrap()
}

// Goal: an http target is reached through tinyproxy with absolute-form requests and Basic
// credentials; tinyproxy's log shows each request, and the target's own Authorization header
// still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_go_through_tinyproxy_with_basic_auth() {
    let proxy = Tinyproxy::start("http").await;
    let target = echo_server(None).await;
    let client = client_via(
        &format!("http://{target}"),
        &proxy.url(Some((PROXY_USER, PROXY_PASSWORD))),
        None,
    )
    .await;
    assert!(client.via_proxy());
    let mut conn = client.connection(0);
    for i in 0..3 {
        let resp = conn.send(&get(&format!("/probe/http/{i}"))).await.unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(
            String::from_utf8(resp.body).unwrap(),
            format!("GET /probe/http/{i}?probe=1 auth=yes")
        );
    }
    let log = proxy.log();
    for i in 0..3 {
        let line = format!("GET http://{target}/probe/http/{i}?probe=1 HTTP/1.1");
        assert!(log.contains(&line), "tinyproxy log lacks {line:?}:\n{log}");
    }
}

// Goal: Basic auth is required. Without credentials tinyproxy answers 407 to plain requests and
// to CONNECT, surfacing as proxy errors; with a wrong password it answers 401 with its own Basic
// challenge (a tinyproxy quirk: RFC 7235 says 407), which never reaches the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_refuses_missing_or_wrong_credentials() {
    let proxy = Tinyproxy::start("auth").await;
    let target = echo_server(None).await;
    let https_target = format!("https://localhost:{}", target.port());
    let insecure = || Some(TlsTrust::InsecureAcceptAnyCertificate);

    let anonymous = client_via(&format!("http://{target}"), &proxy.url(None), None).await;
    let err = anonymous
        .connection(0)
        .send(&get("/probe/anonymous"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Proxy(_)) && err.to_string().contains("407"),
        "{err}"
    );
    let anonymous_tunnel = client_via(&https_target, &proxy.url(None), insecure()).await;
    let err = anonymous_tunnel
        .connection(0)
        .send(&get("/probe/anonymous"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Proxy(_)) && err.to_string().contains("407"),
        "{err}"
    );

    let wrong = proxy.url(Some((PROXY_USER, "wrong")));
    let client = client_via(&format!("http://{target}"), &wrong, None).await;
    let resp = client
        .connection(0)
        .send(&get("/probe/wrong"))
        .await
        .unwrap();
    assert_eq!(resp.status, 401);
    assert_eq!(
        resp.header("www-authenticate"),
        Some("Basic realm=\"Tinyproxy\"")
    );
    let tunnel = client_via(&https_target, &wrong, insecure()).await;
    let err = tunnel
        .connection(0)
        .send(&get("/probe/wrong"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Proxy(_)) && err.to_string().contains("401"),
        "{err}"
    );

    let log = proxy.log();
    assert!(
        !log.contains("Established connection"),
        "a refused request reached the target:\n{log}"
    );
}

// Goal: an https target is reached through a CONNECT tunnel in tinyproxy, with TLS verified
// against the target's self-signed certificate (a CA file), and the log shows the CONNECT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_requests_tunnel_through_tinyproxy() {
    let proxy = Tinyproxy::start("https").await;
    let (cert, tls) = self_signed(&proxy.dir.join("cert"));
    let target = echo_server(Some(tls)).await;
    let client = client_via(
        &format!("https://localhost:{}", target.port()),
        &proxy.url(Some((PROXY_USER, PROXY_PASSWORD))),
        Some(TlsTrust::CaFile(cert)),
    )
    .await;
    let mut conn = client.connection(0);
    let resp = conn.send(&get("/probe/https")).await.unwrap();
    assert_eq!(
        String::from_utf8(resp.body).unwrap(),
        "GET /probe/https?probe=1 auth=yes"
    );
    // The tunnel stays open: a second request reuses it without a second CONNECT.
    conn.send(&get("/probe/https2")).await.unwrap();
    let log = proxy.log();
    let connect = format!("CONNECT localhost:{} HTTP/1.1", target.port());
    assert_eq!(
        log.matches(&connect).count(),
        1,
        "expected one {connect:?} in:\n{log}"
    );
    assert_eq!(
        client
            .stats()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

// Goal: a target on the bypass list (NO_PROXY-style entry) goes direct: it succeeds and the
// proxy never sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bypassed_targets_go_direct() {
    let proxy = Tinyproxy::start("bypass").await;
    let target = echo_server(None).await;
    let inputs = ProxyInputs {
        url: Some(proxy.url(None)),
        no_proxy: vec!["localhost".into()],
        ..Default::default()
    };
    let mut opts =
        ClientOptions::new(Target::parse(&format!("http://localhost:{}", target.port())).unwrap());
    opts.proxy = ProxyConfig::resolve(&inputs, &|_| None, false).unwrap();
    let client = HttpClient::new(opts).await.unwrap();
    assert!(!client.via_proxy());
    let resp = client
        .connection(0)
        .send(&get("/probe/bypass"))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert!(
        !proxy.log().contains("/probe/bypass"),
        "the bypassed request reached the proxy"
    );
}

// Goal: a whole fleet run goes through the proxy as the real agent uses one: the proxy URL from a
// `.proxy`-style file (`basicauth=true`), Basic credentials in its user info (the env-var route
// is covered by the unit tests; setting env vars here would race other tests). tinyproxy's log
// shows the protocol calls (connectionData, token exchange, sessions, polls) and jobs succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_runs_through_tinyproxy_from_a_proxy_file() {
    use fleetsim_core::server::ServerConfig;
    use fleetsim_live::fleet::{self, RunOptions};
    use fleetsim_live::server::{self, EmulatorOptions};

    let proxy = Tinyproxy::start("fleet").await;
    let pat = "proxy-fleet-test-pat";
    let mut config = ServerConfig::with_env_pat(pat);
    config.long_poll_hold = Duration::from_secs(2);
    let emulator = server::start(EmulatorOptions::new(([127, 0, 0, 1], 0).into(), config))
        .await
        .unwrap();
    let proxy_file = proxy.dir.join(".proxy");
    let proxy_url = proxy.url(Some((PROXY_USER, PROXY_PASSWORD)));
    std::fs::write(&proxy_file, format!("{proxy_url}\nbasicauth=true\n")).unwrap();
    let pat_file = proxy.dir.join("pat");
    std::fs::write(&pat_file, pat).unwrap();
    let text = format!(
        r#"
[run]
duration = "5s"
seed = 3
[target]
url = "{url}"
pat_file = "{pat_file}"
proxy = {{ file = "{proxy_file}" }}
[fleet]
agents = 3
distinct_keys = 1
key_cache_dir = "{keys}"
[agent]
empty_poll_gap = "300ms"
[jobs]
rate_per_s = 1
arrival = "constant"
duration = "1s"
steps = 1
log_lines_per_s = 5
"#,
        url = emulator.base_url,
        pat_file = pat_file.display(),
        proxy_file = proxy_file.display(),
        keys = std::env::temp_dir().join("fleetsim-test-keys").display(),
    );
    let scenario =
        fleetsim_scenario::load_str("proxy.toml", &text, &[]).unwrap_or_else(|d| panic!("{d}"));
    let out = fleet::run(&scenario, RunOptions::default(), std::future::pending())
        .await
        .expect("the run is carried out");
    assert_eq!(
        out.proxy.as_deref(),
        Some(format!("127.0.0.1:{}", proxy.port).as_str())
    );
    assert!(out.report.jobs.succeeded >= 1, "{:?}", out.report.jobs);
    let log = proxy.log();
    let base = emulator.base_url.clone();
    for path in [
        "/_apis/connectionData",
        "/_apis/oauth2/token",
        "/sessions",
        "/messages?",
    ] {
        assert!(
            log.lines().any(|l| l.contains("Request (file descriptor")
                && l.contains(&base)
                && l.contains(path)),
            "tinyproxy never saw a request to {path}:\n{log}"
        );
    }
    emulator.handle.shutdown().await;
}
