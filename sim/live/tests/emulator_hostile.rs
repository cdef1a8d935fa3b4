//! The emulator against hostile clients over raw loopback sockets: clients that connect and say
//! nothing, send half a body, send bodies without credentials, send broken or oversized heads,
//! or fill the shared body budget. Each must be answered with a typed error or closed within
//! the front's deadlines (short ones, set through `EmulatorOptions`), and none may hold a slot
//! or memory beyond them.
//!
//! Raw sockets, not an HTTP client: the point is bytes a well-behaved client never sends. No
//! test sleeps to synchronise; each waits for the server to answer or close, bounded by
//! `WAIT_LIMIT` so a regression fails instead of hanging.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use fleetsim_core::api::ErrorKind;
use fleetsim_core::server::ServerConfig;
use fleetsim_live::server::{self, EmulatorOptions, RunningEmulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The PAT every test emulator accepts, with every scope.
const PAT: &str = "fleetsim-test-pat";
/// Longest any test waits for an answer or a close before failing instead of hanging.
const WAIT_LIMIT: Duration = Duration::from_secs(30);
/// A short head deadline, so the tests run quickly; every bound asserted is far above it.
const HEAD_TIMEOUT: Duration = Duration::from_millis(500);

fn options() -> EmulatorOptions {
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut opts = EmulatorOptions::new(listen, ServerConfig::with_env_pat(PAT));
    opts.head_timeout = HEAD_TIMEOUT;
    opts.seed = 7;
    opts
}

async fn start(opts: EmulatorOptions) -> RunningEmulator {
    server::start(opts).await.expect("emulator starts")
}

fn basic(pat: &str) -> String {
    format!("Basic {}", B64.encode(format!("u:{pat}")))
}

/// A POST head to the agent registration route announcing `length` body bytes.
fn post_head(authorization: Option<&str>, length: usize) -> String {
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    format!(
        "POST /_apis/distributedtask/pools/1/agents HTTP/1.1\r\nHost: emulator\r\n\
         Content-Type: application/json\r\n{auth}Content-Length: {length}\r\n\r\n"
    )
}

/// Everything the server sends until it closes the connection (or resets it).
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT_LIMIT, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    });
    read.await.expect("the server neither answered nor closed");
    answer
}

/// The status and the WrappedException's `typeKey` of one raw HTTP/1.1 answer.
fn status_and_type_key(answer: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(answer);
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("the answer has no JSON body ({e}): {text:?}"));
    let key = json["typeKey"].as_str().unwrap_or_default().to_string();
    (status, key)
}

/// Wait until `ok` holds for the front's counters.
async fn wait_for_front(
    emulator: &RunningEmulator,
    ok: impl Fn(&server::FrontSnapshot) -> bool,
) -> server::FrontSnapshot {
    let checked = tokio::time::timeout(WAIT_LIMIT, async {
        loop {
            let front = emulator.handle.front_metrics();
            if ok(&front) {
                return front;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    checked.await.unwrap_or_else(|_| {
        panic!(
            "front counters never reached the condition: {:?}",
            emulator.handle.front_metrics()
        )
    })
}

/// A discovery GET with the PAT, optionally asking the server to close after the answer.
fn discovery(close: bool) -> String {
    let close = if close { "Connection: close\r\n" } else { "" };
    format!(
        "GET /_apis/connectionData HTTP/1.1\r\nHost: emulator\r\nAuthorization: {}\r\n\
         {close}\r\n",
        basic(PAT)
    )
}

/// One whole answer (head and `Content-Length` body) from a connection that stays open.
async fn read_answer(stream: &mut TcpStream) -> Vec<u8> {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT_LIMIT, async {
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    return;
                }
            }
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed mid-answer: {answer:?}");
            answer.extend_from_slice(&buf[..n]);
        }
    });
    read.await.expect("no whole answer");
    answer
}

/// One GET with the PAT on a new connection; the status, or `None` when the server closed
/// the connection unserved (over the connection bound).
async fn try_discovery(addr: SocketAddr) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream.write_all(discovery(true).as_bytes()).await.ok()?;
    let answer = read_until_closed(&mut stream).await;
    String::from_utf8_lossy(&answer).get(9..12)?.parse().ok()
}

// Goal: 2,000 clients that connect and never send a byte are all closed by the server at the
// head deadline counted from the accept (before, the deadline started at the first byte and
// such sockets stayed open forever), and every slot is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_at_the_head_deadline() {
    let mut opts = options();
    opts.max_connections = 5_000;
    let emulator = start(opts).await;
    let mut silent = Vec::new();
    for _ in 0..2_000 {
        silent.push(TcpStream::connect(emulator.local_addr).await.unwrap());
    }
    for stream in &mut silent {
        assert!(
            read_until_closed(stream).await.is_empty(),
            "no answer is sent"
        );
    }
    let front = wait_for_front(&emulator, |f| f.connections_open == 0).await;
    assert_eq!(front.connections_timed_out, 2_000, "{front:?}");
    assert_eq!(try_discovery(emulator.local_addr).await, Some(200));
    emulator.handle.shutdown().await;
}

// Goal: with `--max-connections 8`, eight silent connections hold every slot only until the
// head deadline; a well-behaved client is served afterwards instead of being locked out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_lock_nobody_out_past_the_deadline() {
    let mut opts = options();
    opts.max_connections = 8;
    opts.connection_wait = Duration::from_millis(50);
    let emulator = start(opts).await;
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(emulator.local_addr).await.unwrap());
    }
    wait_for_front(&emulator, |f| f.connections_open == 8).await;
    let served = tokio::time::timeout(WAIT_LIMIT, async {
        loop {
            if let Some(status) = try_discovery(emulator.local_addr).await {
                return status;
            }
        }
    });
    assert_eq!(served.await.expect("locked out"), 200);
    // The first freed slot may serve the client before the other seven closes are counted.
    wait_for_front(&emulator, |f| f.connections_timed_out >= 8).await;
    emulator.handle.shutdown().await;
}

// Goal: a client without valid credentials that announces a 1,000,000-byte body and never
// sends it is answered 401 (typed) at once: the server neither waits for nor buffers the body
// (the body deadline here is far beyond the wait). Anonymous, a malformed header, an unknown
// PAT and an unknown bearer token alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_bodies_are_refused_before_they_are_read() {
    let mut opts = options();
    // Far beyond WAIT_LIMIT: a 401 cannot come from the body deadline.
    opts.body_timeout = Duration::from_secs(600);
    let emulator = start(opts).await;
    let unknown_pat = basic("not-a-pat");
    for auth in [
        None,
        Some("Digest x"),
        Some(&*unknown_pat),
        Some("Bearer forged"),
    ] {
        let mut stream = TcpStream::connect(emulator.local_addr).await.unwrap();
        let head = post_head(auth, 1_000_000);
        stream.write_all(head.as_bytes()).await.unwrap();
        let answer = read_answer(&mut stream).await;
        let (status, key) = status_and_type_key(&answer);
        assert_eq!(status, 401, "{auth:?}");
        assert_eq!(key, ErrorKind::Unauthorized.type_key(), "{auth:?}");
    }
    emulator.handle.shutdown().await;
}

// Goal: no body-validation oracle for unauthenticated clients: an anonymous POST with a broken
// body gets 401, as Azure DevOps answers, where an authenticated one gets the 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_bodies_tell_anonymous_clients_nothing() {
    let emulator = start(options()).await;
    let body = b"{not json";
    for (auth, want) in [(None, 401), (Some(basic(PAT)), 400)] {
        let mut stream = TcpStream::connect(emulator.local_addr).await.unwrap();
        let mut request = post_head(auth.as_deref(), body.len()).into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request).await.unwrap();
        let (status, _) = status_and_type_key(&read_answer(&mut stream).await);
        assert_eq!(status, want, "{auth:?}");
    }
    emulator.handle.shutdown().await;
}

// Goal: a body announced as 100 bytes of which 5 arrive is answered 408 (typed) at the body
// deadline and the connection closed, instead of holding its slot forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_gets_408_and_a_close() {
    let mut opts = options();
    opts.body_timeout = Duration::from_millis(300);
    let emulator = start(opts).await;
    let mut stream = TcpStream::connect(emulator.local_addr).await.unwrap();
    let mut request = post_head(Some(&basic(PAT)), 100).into_bytes();
    request.extend_from_slice(b"{\"na");
    stream.write_all(&request).await.unwrap();
    let answer = read_until_closed(&mut stream).await;
    let (status, key) = status_and_type_key(&answer);
    assert_eq!(status, 408);
    assert_eq!(key, ErrorKind::RequestTimeout.type_key());
    assert!(
        String::from_utf8_lossy(&answer).contains("connection: close"),
        "{answer:?}"
    );
    emulator.handle.shutdown().await;
}

// Goal: a connection idle after an answer is closed at the keep-alive deadline, and one whose
// next head started but never finished at the head deadline, not at the (here far longer)
// keep-alive one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed() {
    for (keep_alive, then_send) in [
        (Duration::from_millis(300), &b""[..]),
        (Duration::from_secs(600), b"GET /_apis/conn"),
    ] {
        let mut opts = options();
        opts.keep_alive_timeout = keep_alive;
        let emulator = start(opts).await;
        let mut stream = TcpStream::connect(emulator.local_addr).await.unwrap();
        stream.write_all(discovery(false).as_bytes()).await.unwrap();
        let answer = read_answer(&mut stream).await;
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
        stream.write_all(then_send).await.unwrap();
        let rest = read_until_closed(&mut stream).await;
        assert!(rest.is_empty(), "{rest:?}");
        assert_eq!(emulator.handle.front_metrics().connections_timed_out, 1);
        emulator.handle.shutdown().await;
    }
}

// Goal: heads hyper refuses before any emulator code runs (a broken request line, a head over
// the buffer, too many header fields) get the typed JSON error, not hyper's bare status: as
// the first request of a connection and after an answered one (keep-alive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_and_oversized_heads_get_typed_answers() {
    let emulator = start(options()).await;
    let huge = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(80 * 1024));
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
    let cases = [
        ("GARBAGE\r\n\r\n".to_string(), 400, ErrorKind::BadRequest),
        (
            "GET / HTTP/1.1\r\nBad Header\r\n\r\n".into(),
            400,
            ErrorKind::BadRequest,
        ),
        (huge, 431, ErrorKind::HeadTooLarge),
        (many, 431, ErrorKind::HeadTooLarge),
    ];
    for (bad, status, kind) in &cases {
        for after_good in [false, true] {
            let mut stream = TcpStream::connect(emulator.local_addr).await.unwrap();
            if after_good {
                stream.write_all(discovery(false).as_bytes()).await.unwrap();
                let first = read_answer(&mut stream).await;
                assert!(first.starts_with(b"HTTP/1.1 200"), "{first:?}");
            }
            // The peer may close before the whole oversized head is written.
            let _ = stream.write_all(bad.as_bytes()).await;
            let answer = read_until_closed(&mut stream).await;
            let (got, key) = status_and_type_key(&answer);
            let what = format!(
                "{:?} (after an answer: {after_good})",
                &bad[..bad.len().min(20)]
            );
            assert_eq!(got, *status, "{what}");
            assert_eq!(key, kind.type_key(), "{what}");
        }
    }
    emulator.handle.shutdown().await;
}

// Goal: bodies being received share one byte budget: while one client holds most of it with an
// unfinished body, another's body is answered 503 with Retry-After (typed); once the first
// client is gone the budget is whole again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_body_budget_answers_503_when_spent() {
    let mut config = ServerConfig::with_env_pat(PAT);
    config.limits.max_body_bytes = 64 * 1024;
    let mut opts = options();
    opts.config = config;
    opts.max_inflight_body_bytes = 64 * 1024;
    opts.body_timeout = Duration::from_secs(600);
    let emulator = start(opts).await;
    // Holds most of the budget: 50 KiB of a 60 KiB body, never finished.
    let open_holder = || async move {
        let mut holder = TcpStream::connect(emulator.local_addr).await.unwrap();
        let mut request = post_head(Some(&basic(PAT)), 60 * 1024).into_bytes();
        request.extend_from_slice(&[b' '; 50 * 1024]);
        holder.write_all(&request).await.unwrap();
        holder
    };
    // One 20 KiB body from another client: its status, answer and typeKey.
    let other = || async move {
        let mut stream = TcpStream::connect(emulator.local_addr).await.unwrap();
        let mut request = post_head(Some(&basic(PAT)), 20 * 1024).into_bytes();
        request.extend_from_slice(&[b' '; 20 * 1024]);
        let _ = stream.write_all(&request).await;
        let answer = read_answer(&mut stream).await;
        let (got, key) = status_and_type_key(&answer);
        (got, answer, key)
    };
    let mut holder = open_holder().await;
    // Until the holder's bytes have been read the other body may still fit, and while the other
    // body holds its share the holder's own later bytes may be the ones refused (503 and a
    // close): retry until the other is refused, opening a new holder whenever the old one was
    // answered.
    let bounded = tokio::time::timeout(WAIT_LIMIT, async {
        loop {
            let (got, answer, key) = other().await;
            if got == 503 {
                return (answer, key);
            }
            let mut probe = [0u8; 1];
            if !matches!(holder.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            {
                holder = open_holder().await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let (answer, key) = bounded.await.expect("the other body was never refused");
    assert_eq!(key, ErrorKind::Unavailable.type_key());
    assert!(
        String::from_utf8_lossy(&answer).contains("retry-after: 1"),
        "{answer:?}"
    );
    drop(holder);
    // A body of blanks is not JSON: 400 means it was read in full, the budget is free again.
    let bounded = tokio::time::timeout(WAIT_LIMIT, async {
        loop {
            let (got, _, key) = other().await;
            if got == 400 {
                return key;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let key = bounded.await.expect("the budget was never whole again");
    assert_eq!(key, ErrorKind::BadRequest.type_key());
    emulator.handle.shutdown().await;
}
