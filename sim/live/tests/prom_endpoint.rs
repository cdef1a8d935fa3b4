//! The metrics endpoint over real HTTP: `prom::install` binds where asked (port 0 here), serves
//! the exposition at `GET /metrics` with help texts, build info and the shard label on every
//! series, answers other paths 404,
//! rejects a second install, and keeps serving through a linger until it ends.
//! One test per process, because the `metrics` recorder is process-global.

use std::net::SocketAddr;
use std::time::Duration;

use fleetsim_core::SimTime;
use fleetsim_core::event::{Event, Outcome};
use fleetsim_core::ops::Operation;
use fleetsim_core::shard::Shard;
use fleetsim_live::prom::{self, PromError, PromSink, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer)
}

// Goal: a scrape sees what the sink recorded, as a text exposition with HELP lines, labelled
// with the process's shard; the endpoint stays up while lingering and is gone once the handle
// is finished.
#[tokio::test]
async fn endpoint_serves_metrics_then_stops_after_linger() {
    let shard = Shard::new(1, 3).unwrap();
    let handle =
        prom::install("127.0.0.1:0".parse().unwrap(), Role::Fleet, shard).expect("install");
    let addr = handle.local_addr();
    assert_eq!(
        addr.ip().to_string(),
        "127.0.0.1",
        "bound exactly where asked"
    );
    assert!(matches!(
        prom::install("127.0.0.1:0".parse().unwrap(), Role::Fleet, shard),
        Err(PromError::AlreadyInstalled)
    ));

    let mut sink = PromSink::new(1);
    sink.observe(&Event::Op {
        agent: 0,
        op: Operation::KeepAlive,
        intended: SimTime::from_millis(10),
        done: SimTime::from_millis(12),
        outcome: Outcome::Ok,
    });
    let answer = get(addr, "/metrics").await.expect("scrape");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("text/plain; version=0.0.4"), "{answer}");
    assert!(
        answer.contains("# HELP fleetsim_operations_total "),
        "{answer}"
    );
    let series = "fleetsim_operations_total{shard=\"1\",operation=\"keep_alive\",outcome=\"ok\"} 1";
    assert!(answer.contains(series), "{answer}");
    assert!(answer.contains("role=\"fleet\""), "{answer}");
    assert!(
        answer.contains("fleetsim_build_info{shard=\"1\","),
        "{answer}"
    );
    assert!(
        get(addr, "/")
            .await
            .expect("answer")
            .starts_with("HTTP/1.1 404")
    );

    // Lingering: still served; `stop` ends the linger early (here: once a scrape succeeded).
    let scrape_during_linger = async {
        let answer = get(addr, "/metrics").await.expect("scrape while lingering");
        assert!(answer.starts_with("HTTP/1.1 200"));
    };
    handle
        .linger(Duration::from_secs(60), scrape_during_linger)
        .await;
    // The listener task is aborted on drop; a new connection is refused once it is gone.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(refused, "the endpoint stops after the linger");
}
