//! The accept loop: bounded connections, optional TLS, hyper's auto HTTP/1.1 + HTTP/2 serving,
//! and graceful shutdown.
//!
//! Limits, and what happens at each:
//! - Connections: at most `max_connections` are served at once (a semaphore). When all slots are
//!   busy, the loop holds the newly accepted connection for up to `connection_wait`; if no slot
//!   frees up by then the connection is closed unserved and counted as rejected. While the loop
//!   waits it accepts nothing, so further clients wait in the kernel's listen backlog.
//! - Deadlines (`conn.rs`): the TLS handshake and the first request head must arrive within
//!   `head_timeout` of the accept; between requests a connection may stay idle for
//!   `keep_alive_timeout`, and a started HTTP/1 head must be complete within `head_timeout` of
//!   its first byte. A connection past its deadline is closed without an answer and counted
//!   (`connections_timed_out`). So silent clients hold a slot for `head_timeout` at most.
//!   (hyper's own header timer is off: it would run during keep-alive idle time too.)
//! - Head size: hyper's HTTP/1 buffer (`MAX_HEAD_BYTES`) and `MAX_HEADERS` fields, answered 431
//!   (or 400 for a malformed head) with the typed body (`conn.rs` replaces hyper's bare
//!   answer); HTTP/2 header lists by `MAX_HEADER_LIST_BYTES`; HTTP/2 streams per connection by
//!   `MAX_STREAMS_PER_CONNECTION`.
//! - Bodies: see `http.rs` (credentials before the body, `max_body_bytes` answered 413, the body
//!   deadline answered 408, the shared in-flight budget answered 503).
//!
//! Shutdown: stop accepting, answer parked polls (`Core::release_parked`), ask every connection
//! to finish gracefully (HTTP/1 closes after the response in flight, HTTP/2 sends GOAWAY), wait
//! up to `drain_timeout`, then abort whatever is left.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::conn::{ConnClock, ConnTimeouts, Replacement, Watched};
use super::http::{Front, serve};
use super::metrics::FrontMetrics;

/// hyper's HTTP/1 read buffer, which bounds a request head (request line + headers).
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Header fields in one HTTP/1 request head (hyper's default, written down).
pub(crate) const MAX_HEADERS: usize = 100;
/// HTTP/2 header list limit.
const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// HTTP/2 concurrent streams per connection (each may be a parked long poll).
const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// Pause after a failed `accept` (for example out of file descriptors) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Everything the accept loop needs.
pub(crate) struct Listener {
    pub(crate) listener: TcpListener,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) front: Arc<Front>,
    pub(crate) max_connections: usize,
    pub(crate) connection_wait: Duration,
    pub(crate) drain_timeout: Duration,
    pub(crate) timeouts: ConnTimeouts,
}

impl Listener {
    /// Serve until `stop` turns true, then shut down gracefully.
    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(self.max_connections.max(1)));
        let graceful = GracefulShutdown::new();
        let mut connections = JoinSet::new();
        let builder = Arc::new(http_builder());
        // A second receiver: the loop's own is borrowed by its `select!` while a slot is awaited.
        let mut slot_stop = stop.clone();
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = self.listener.accept() => {
                    let stream = match accepted {
                        Ok((stream, _peer)) => stream,
                        Err(err) => {
                            tracing::warn!(%err, "accept failed; retrying");
                            tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                            continue;
                        }
                    };
                    let Some(permit) = self.slot(&slots, &mut slot_stop).await else {
                        self.front.metrics.connection_rejected();
                        continue; // Dropping `stream` closes it.
                    };
                    let conn = Connection {
                        front: self.front.clone(),
                        tls: self.tls.clone(),
                        builder: builder.clone(),
                        watcher: graceful.watcher(),
                        permit,
                        clock: ConnClock::new(self.timeouts),
                    };
                    connections.spawn(conn.run(stream));
                }
            }
        }
        drop(self.listener);
        self.front.core.release_parked();
        let drained = tokio::time::timeout(self.drain_timeout, async {
            graceful.shutdown().await;
            while connections.join_next().await.is_some() {}
        });
        if drained.await.is_err() {
            tracing::warn!(
                left = connections.len(),
                "drain timeout; closing remaining connections"
            );
            connections.abort_all();
            while connections.join_next().await.is_some() {}
        }
    }

    /// A connection slot: at once if one is free, else within `connection_wait`, else `None`.
    async fn slot(
        &self,
        slots: &Arc<Semaphore>,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return Some(permit);
        }
        tokio::select! {
            permit = tokio::time::timeout(self.connection_wait, slots.clone().acquire_owned()) => {
                permit.ok().and_then(Result::ok)
            }
            _ = stop.changed() => None,
        }
    }
}

/// hyper's auto (HTTP/1.1 + HTTP/2 by preface or ALPN) connection builder with our limits.
fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .max_header_list_size(MAX_HEADER_LIST_BYTES);
    builder
}

/// One accepted connection holding its slot until it ends.
struct Connection {
    front: Arc<Front>,
    tls: Option<TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
    permit: OwnedSemaphorePermit,
    /// Started at the accept: the connection's deadlines.
    clock: Arc<ConnClock>,
}

/// Keeps the open-connections gauge right however the task ends, aborts at the drain timeout
/// included.
struct OpenGauge(Arc<FrontMetrics>);

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

impl Connection {
    async fn run(self, stream: TcpStream) {
        // Small responses and long polls: latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        self.front.metrics.connection_opened();
        let _gauge = OpenGauge(self.front.metrics.clone());
        let clock = self.clock.clone();
        let metrics = self.front.metrics.clone();
        let served = async move {
            match self.tls.clone() {
                None => self.serve(stream).await,
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls) => self.serve(tls).await,
                    Err(_) => self.front.metrics.tls_handshake_failed(),
                },
            }
        };
        // Past its deadline the connection is dropped wherever it is (a handshake that never
        // finished included): the socket closes, the slot frees, and it counts as timed out.
        tokio::select! {
            () = served => {}
            () = clock.expired() => metrics.connection_timed_out(),
        }
    }

    async fn serve<S>(self, io: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            front,
            builder,
            watcher,
            permit,
            clock,
            ..
        } = self;
        let replacement = Replacement {
            ctx: front.ctx.clone(),
            max_head_bytes: MAX_HEAD_BYTES,
            max_headers: MAX_HEADERS,
        };
        let io = Watched::new(io, clock.clone(), replacement);
        let service = service_fn(move |req| serve(front.clone(), clock.clone(), req));
        let conn = builder.serve_connection(TokioIo::new(io), service);
        // Errors here are the client's (reset, malformed HTTP); hyper already answered what
        // could be answered, and such closes are not counted separately.
        let _ = watcher.watch(conn).await;
        // The slot frees only now, when the connection is gone.
        drop(permit);
    }
}
