// The agents' HTTP client on its own, against a small hyper server over loopback: connection
// reuse and re-opening, the per-call timeout, the response-size bound, HTTPS with a CA file and
// with the loudly named insecure verifier, the pooled mode, and source-address spreading.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use fleetsim_core::wire::{Method, WireRequest};
use fleetsim_live::client::{
    ClientError, ClientOptions, HttpClient, SourceSpread, Target, TlsTrust,
};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Routes: `/close` answers with `Connection: close`; `/hang` never answers; `/big` answers
/// 64 KiB; anything else echoes `METHOD PATH from=<peer ip> body=<len>`.
async fn test_server(tls: Option<Arc<rustls::ServerConfig>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                return;
            };
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| async move {
                        let path = req.uri().path().to_string();
                        let method = req.method().clone();
                        let body_len = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes().len())
                            .unwrap_or(0);
                        let mut resp = hyper::Response::new(Full::new(Bytes::new()));
                        match path.as_str() {
                            "/hang" => std::future::pending::<()>().await,
                            "/big" => {
                                *resp.body_mut() = Full::new(Bytes::from(vec![b'x'; 64 * 1024]))
                            }
                            "/close" => {
                                resp.headers_mut()
                                    .insert("connection", "close".parse().unwrap());
                            }
                            _ => {
                                let text =
                                    format!("{method} {path} from={} body={body_len}", peer.ip());
                                *resp.body_mut() = Full::new(Bytes::from(text));
                            }
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    },
                );
                let builder = hyper::server::conn::http1::Builder::new();
                match tls {
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                    }
                    Some(config) => {
                        if let Ok(s) = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await {
                            let _ = builder.serve_connection(TokioIo::new(s), service).await;
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn client(url: &str, tweak: impl FnOnce(&mut ClientOptions)) -> Arc<HttpClient> {
    let mut opts = ClientOptions::new(Target::parse(url).unwrap());
    opts.request_timeout = Duration::from_secs(10);
    tweak(&mut opts);
    HttpClient::new(opts).await.unwrap()
}

fn request(method: Method, path: &str) -> WireRequest {
    WireRequest::new(method, path, "")
}

fn text(body: Vec<u8>) -> String {
    String::from_utf8(body).unwrap()
}

// Goal: one agent connection carries many calls on one TCP connection, and re-opens by itself
// after the server closes it (no error surfaces to the agent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_is_reused_and_reopened_after_close() {
    let addr = test_server(None).await;
    let client = client(&format!("http://{addr}"), |_| {}).await;
    let mut conn = client.connection(0);
    for _ in 0..3 {
        assert_eq!(
            conn.send(&request(Method::Get, "/a")).await.unwrap().status,
            200
        );
    }
    assert_eq!(
        client.stats().connects.load(Ordering::Relaxed),
        1,
        "three calls, one connection"
    );
    conn.send(&request(Method::Get, "/close")).await.unwrap();
    assert!(
        !conn.is_open(),
        "Connection: close drops the connection at once"
    );
    let mut post = request(Method::Post, "/b");
    post.body = vec![1; 300];
    post.content_type = Some("application/json".into());
    assert_eq!(
        text(conn.send(&post).await.unwrap().body),
        "POST /b from=127.0.0.1 body=300"
    );
    assert_eq!(client.stats().connects.load(Ordering::Relaxed), 2);
}

// Goal: a call that gets no answer fails with a timeout (not a hang) and closes the connection;
// the next call succeeds on a fresh one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_call_times_out_and_the_next_succeeds() {
    let addr = test_server(None).await;
    let client = client(&format!("http://{addr}"), |o| {
        o.request_timeout = Duration::from_millis(300)
    })
    .await;
    let mut conn = client.connection(0);
    let err = conn.send(&request(Method::Get, "/hang")).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)), "{err}");
    assert!(err.outcome() == fleetsim_core::event::Outcome::Timeout);
    assert_eq!(
        conn.send(&request(Method::Get, "/ok"))
            .await
            .unwrap()
            .status,
        200
    );
}

// Goal: response bodies are bounded; an oversized one is a typed error, not an allocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_response_is_refused() {
    let addr = test_server(None).await;
    let client = client(&format!("http://{addr}"), |o| o.max_response_bytes = 1024).await;
    let err = client
        .connection(0)
        .send(&request(Method::Get, "/big"))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::BodyTooLarge(1024)), "{err}");
}

// Goal: HTTPS works with the server's certificate as CA file; without trust it is a TLS error;
// the explicitly insecure verifier accepts the self-signed certificate; an https target without
// any trust setting is refused up front.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_ca_file_or_explicit_insecure_flag() {
    let dir = std::env::temp_dir().join(format!("fleetsim-transport-tls-{}", std::process::id()));
    let files = fleetsim_live::tls::write_self_signed(&dir).unwrap();
    let other = fleetsim_live::tls::write_self_signed(&dir.join("other")).unwrap();
    let config = fleetsim_live::tls::server_config(&files.cert_path, &files.key_path).unwrap();
    let addr = test_server(Some(config)).await;
    let url = format!("https://localhost:{}", addr.port());

    let trusted = client(&url, |o| {
        o.tls = Some(TlsTrust::CaFile(files.cert_path.clone()))
    })
    .await;
    assert_eq!(
        trusted
            .connection(0)
            .send(&request(Method::Get, "/s"))
            .await
            .unwrap()
            .status,
        200
    );

    let wrong_ca = client(&url, |o| {
        o.tls = Some(TlsTrust::CaFile(other.cert_path.clone()))
    })
    .await;
    let err = wrong_ca
        .connection(0)
        .send(&request(Method::Get, "/s"))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Tls { .. }), "{err}");

    let insecure = client(&url, |o| {
        o.tls = Some(TlsTrust::InsecureAcceptAnyCertificate)
    })
    .await;
    assert_eq!(
        insecure
            .connection(0)
            .send(&request(Method::Get, "/s"))
            .await
            .unwrap()
            .status,
        200
    );

    let mut opts = ClientOptions::new(Target::parse(&url).unwrap());
    opts.tls = None;
    assert!(matches!(
        HttpClient::new(opts).await,
        Err(ClientError::TlsSetup(_))
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

// Goal: the pooled mode bounds connections: 40 concurrent calls through a pool of 4 use at most
// 4 connections and all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_bounds_connections_under_concurrency() {
    let addr = test_server(None).await;
    let client = client(&format!("http://{addr}"), |_| {}).await;
    let pool = Arc::new(client.pool(4));
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..40 {
        let pool = Arc::clone(&pool);
        calls.spawn(async move { pool.send(&request(Method::Get, &format!("/p{i}"))).await });
    }
    while let Some(result) = calls.join_next().await {
        assert_eq!(result.unwrap().unwrap().status, 200);
    }
    let connects = client.stats().connects.load(Ordering::Relaxed);
    assert!(
        (1..=4).contains(&connects),
        "{connects} connections for a pool of 4"
    );
    assert!(pool.idle_connections() <= 4);
}

// Goal: with loopback spreading, slots past the first block connect from 127.0.0.2, .3, …
// (the server sees the source address), so one destination is not limited to one address's
// ephemeral ports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_source_addresses_spread_by_slot() {
    let addr = test_server(None).await;
    let spread = SourceSpread::Loopback {
        connections_per_address: 2,
    };
    let client = client(&format!("http://{addr}"), |o| o.source_spread = spread).await;
    let mut seen = Vec::new();
    for slot in [0u64, 1, 2, 5] {
        let resp = client
            .connection(slot)
            .send(&request(Method::Get, "/who"))
            .await
            .unwrap();
        seen.push(
            text(resp.body)
                .rsplit("from=")
                .next()
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(seen, ["127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.3"]);
}

/// A server whose first connection answers one request, then resets the connection (RST, not
/// FIN) when the second request arrives — the idle close racing a reused connection. Later
/// connections answer every request with `ok`.
async fn resetting_server() -> SocketAddr {
    use std::os::fd::AsRawFd;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Read one request head (these tests send no bodies); `false` at EOF.
    async fn read_head(tcp: &mut tokio::net::TcpStream) -> bool {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match tcp.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return false,
            }
        }
        true
    }
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut tcp, _)) = listener.accept().await {
            let reset_second = std::mem::take(&mut first);
            tokio::spawn(async move {
                let mut answered = 0;
                while read_head(&mut tcp).await {
                    if reset_second && answered == 1 {
                        let linger = libc::linger {
                            l_onoff: 1,
                            l_linger: 0,
                        };
                        // SAFETY: sets SO_LINGER on a socket this task owns, from a local struct.
                        unsafe {
                            libc::setsockopt(
                                tcp.as_raw_fd(),
                                libc::SOL_SOCKET,
                                libc::SO_LINGER,
                                (&linger as *const libc::linger).cast(),
                                std::mem::size_of::<libc::linger>() as libc::socklen_t,
                            );
                        }
                        return; // dropped with linger 0: RST
                    }
                    if tcp.write_all(OK).await.is_err() {
                        return;
                    }
                    answered += 1;
                }
            });
        }
    });
    addr
}

// Goal: a GET on a reused connection that the server resets under it is sent once more on a
// fresh connection (the agent sees an answer, not an error), while a POST in the same spot fails
// rather than risk running twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_is_resent_after_a_reset_on_a_reused_connection() {
    let addr = resetting_server().await;
    let get_client = client(&format!("http://{addr}"), |_| {}).await;
    let mut conn = get_client.connection(0);
    assert_eq!(
        conn.send(&request(Method::Get, "/a")).await.unwrap().status,
        200
    );
    let resp = conn.send(&request(Method::Get, "/b")).await.unwrap();
    assert_eq!((resp.status, text(resp.body).as_str()), (200, "ok"));
    assert_eq!(get_client.stats().resends.load(Ordering::Relaxed), 1);
    assert_eq!(get_client.stats().connects.load(Ordering::Relaxed), 2);

    let addr = resetting_server().await;
    let post_client = client(&format!("http://{addr}"), |_| {}).await;
    let mut conn = post_client.connection(0);
    conn.send(&request(Method::Get, "/a")).await.unwrap();
    let mut post = request(Method::Post, "/b");
    post.body = b"{}".to_vec();
    post.content_type = Some("application/json".into());
    assert!(
        matches!(conn.send(&post).await, Err(ClientError::Reset(_))),
        "a POST is never sent twice"
    );
    assert_eq!(post_client.stats().resends.load(Ordering::Relaxed), 0);
}
