//! One connection's clock and the IO wrapper that feeds it, so that no client can hold a
//! connection slot longer than a deadline, whatever it sends or withholds.
//!
//! The clock knows whether a request is being served (`ConnClock::begin` … drop) and when the
//! connection last fell idle, and `ConnClock::expired` completes when an idle connection has
//! outlived its deadline; the accept loop then drops the connection (closing the socket):
//! - before the first request: the TLS handshake and the whole first request head must arrive
//!   within `head_timeout` of the accept (a client that connects and says nothing is closed);
//! - between requests (keep-alive): the next request must start within `keep_alive_timeout`
//!   of the previous answer, and once its first byte arrived (HTTP/1), its head must be
//!   complete within `head_timeout` of that byte;
//! - while a request is served (its body read, a long poll parked, the answer produced) the
//!   clock does not run: the body deadline (`http.rs`) and the core's hold bound that time.
//!
//! hyper answers a malformed or oversized HTTP/1 request head itself, before any of our code
//! runs, with a bare status and no body. `Watched` recognises that answer (the first bytes
//! hyper writes while no request is served and every earlier answer was flushed, starting with
//! `HTTP/1.`) and sends the emulator's typed JSON error in its place. Not replaced (documented
//! in docs/PROTOCOL.md): such an answer written while an earlier answer on the same connection
//! was still unflushed (a pipelining client), and HTTP/2, where h2 resets the stream or the
//! connection with an error code instead of answering.
//!
//! hyper bounds a head only by its read buffer, and that buffer may hold more than
//! `max_buf_size` once it has served a request: behind an answered request on a keep-alive
//! connection, an 80 KiB head was read whole, served, and the connection kept open. So
//! `Watched` counts each HTTP/1 head's bytes itself (from its first byte to the blank line that
//! ends it) and, past `max_head_bytes`, writes the typed 431 and ends the connection, whatever
//! hyper's buffer holds.
//!
//! This module makes no protocol decision: the replacement body comes from the codec.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use fleetsim_core::api::{ApiError, ErrorKind};
use fleetsim_core::codec::{self, ResponseContext};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The HTTP/2 connection preface starts with these bytes; an HTTP/1 request never does.
const H2_PREFACE_START: &[u8] = b"PRI ";

/// The front's deadlines for one connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnTimeouts {
    pub(crate) head: Duration,
    pub(crate) keep_alive: Duration,
}

/// Shared by a connection's task, its IO wrapper and its requests.
pub(crate) struct ConnClock {
    state: Mutex<ClockState>,
    /// Signalled when the connection falls idle, so `expired` re-arms its deadline.
    idle: Notify,
    timeouts: ConnTimeouts,
}

struct ClockState {
    /// Requests being served now (HTTP/2 may serve several at once).
    active: usize,
    /// Requests whose head hyper parsed and handed to the service.
    served: u64,
    /// The accept, or when `active` last fell to zero.
    idle_since: Instant,
    /// The first byte read while idle after an answer (HTTP/1 keep-alive).
    head_started: Option<Instant>,
    /// What the first bytes read said: `None` until decided.
    http2: Option<bool>,
    /// Bytes read before `http2` was decided (at most the preface's first 4).
    probe: Vec<u8>,
    /// No request in flight and every answer hyper wrote has been flushed: the next thing
    /// hyper writes can only be its own answer to a broken head.
    settled: bool,
    /// The HTTP/1 head being read while idle.
    head: HeadCount,
}

/// Counts one HTTP/1 request head's bytes: from its first byte (blank lines before a request
/// are skipped, as hyper does) to the blank line that ends it (CRLF CRLF, or LF LF, which
/// hyper accepts too).
#[derive(Default)]
struct HeadCount {
    /// Bytes of the head so far.
    bytes: usize,
    /// The last four bytes, newest in the low byte.
    tail: u32,
    /// The blank line was seen: what follows is body or the next request.
    complete: bool,
}

impl HeadCount {
    /// Count `bytes`; whether the head is now over `max_bytes`.
    fn count(&mut self, bytes: &[u8], max_bytes: usize) -> bool {
        for &b in bytes {
            if self.complete {
                break;
            }
            if self.bytes == 0 && (b == b'\r' || b == b'\n') {
                continue;
            }
            self.bytes += 1;
            self.tail = (self.tail << 8) | u32::from(b);
            self.complete =
                self.tail == u32::from_be_bytes(*b"\r\n\r\n") || self.tail & 0xffff == 0x0a0a;
        }
        self.bytes > max_bytes
    }
}

impl ConnClock {
    /// The clock of a connection accepted now.
    pub(crate) fn new(timeouts: ConnTimeouts) -> Arc<ConnClock> {
        Arc::new(ConnClock {
            state: Mutex::new(ClockState {
                active: 0,
                served: 0,
                idle_since: Instant::now(),
                head_started: None,
                http2: None,
                probe: Vec::new(),
                settled: true,
                head: HeadCount::default(),
            }),
            idle: Notify::new(),
            timeouts,
        })
    }

    /// A request's head arrived and is being served; the clock stops until the returned guard
    /// is dropped (the answer was produced or the request abandoned).
    pub(crate) fn begin(self: &Arc<Self>) -> Activity {
        let mut st = self.state.lock();
        st.active += 1;
        st.served += 1;
        st.head_started = None;
        st.settled = false;
        st.head = HeadCount::default();
        Activity(self.clone())
    }

    /// Completes when the connection has been idle past its deadline.
    pub(crate) async fn expired(&self) {
        loop {
            let notified = self.idle.notified();
            let deadline = self.state.lock().deadline(self.timeouts);
            match deadline {
                None => notified.await,
                Some(at) if at <= Instant::now() => return,
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = notified => {}
                    }
                }
            }
        }
    }

    /// Note bytes read; whether they made the HTTP/1 head being read longer than
    /// `max_head_bytes`.
    fn on_read(&self, bytes: &[u8], max_head_bytes: usize) -> bool {
        if bytes.is_empty() {
            return false;
        }
        let mut st = self.state.lock();
        if st.http2.is_none() {
            let want = H2_PREFACE_START.len() - st.probe.len();
            st.probe.extend_from_slice(&bytes[..want.min(bytes.len())]);
            if !H2_PREFACE_START.starts_with(&st.probe) {
                st.http2 = Some(false);
            } else if st.probe.len() == H2_PREFACE_START.len() {
                st.http2 = Some(true);
            }
        }
        // HTTP/2 reads frames (pings, window updates) while idle; only an HTTP/1 byte after
        // an answer starts the next request.
        // Bytes read while a request is served are its body, or a pipelined request's head that
        // hyper's buffer bounds.
        let over = st.active == 0 && st.http2 != Some(true) && st.head.count(bytes, max_head_bytes);
        if st.active == 0 && st.served > 0 && st.head_started.is_none() && st.http2 == Some(false) {
            st.head_started = Some(Instant::now());
            drop(st);
            // The head deadline may come before the keep-alive one: re-arm.
            self.idle.notify_one();
        }
        over
    }
}

impl ClockState {
    /// When this connection is closed if nothing changes; `None` while a request is served.
    fn deadline(&self, t: ConnTimeouts) -> Option<Instant> {
        if self.active > 0 {
            return None;
        }
        Some(match (self.served, self.head_started) {
            (0, _) => self.idle_since + t.head,
            (_, Some(first_byte)) => first_byte + t.head,
            (_, None) => self.idle_since + t.keep_alive,
        })
    }
}

/// A request being served; dropping it restarts the connection's idle clock.
pub(crate) struct Activity(Arc<ConnClock>);

impl Drop for Activity {
    fn drop(&mut self) {
        let mut st = self.0.state.lock();
        st.active -= 1;
        if st.active == 0 {
            st.idle_since = Instant::now();
            st.head_started = None;
            drop(st);
            self.0.idle.notify_one();
        }
    }
}

/// The IO under hyper: reports reads to the clock and replaces hyper's bare answer to a
/// broken HTTP/1 head with the typed one.
pub(crate) struct Watched<S> {
    inner: S,
    clock: Arc<ConnClock>,
    replacement: Replacement,
    /// The typed answer being written in place of hyper's, and how much of it is out.
    pending: Option<(Bytes, usize)>,
    /// A head over the limit was read: once the typed 431 is out, reads end (EOF) so hyper
    /// drops the connection.
    refused_head: bool,
}

/// What the typed replacement answers say.
#[derive(Clone)]
pub(crate) struct Replacement {
    pub(crate) ctx: ResponseContext,
    pub(crate) max_head_bytes: usize,
    pub(crate) max_headers: usize,
}

impl<S> Watched<S> {
    pub(crate) fn new(inner: S, clock: Arc<ConnClock>, replacement: Replacement) -> Self {
        Watched {
            inner,
            clock,
            replacement,
            pending: None,
            refused_head: false,
        }
    }

    /// Whether `first` (the start of what hyper writes now) is hyper's own error answer.
    fn is_bare_error(&self, first: &[u8]) -> bool {
        let st = self.clock.state.lock();
        self.pending.is_none() && st.settled && st.active == 0 && first.starts_with(b"HTTP/1.")
    }

    /// Start replacing hyper's answer whose status line begins `first`.
    fn replace(&mut self, first: &[u8]) {
        let status = first
            .get(9..12)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse::<u16>().ok());
        self.answer_broken_head(status);
    }

    /// Start writing the typed answer to a broken head (`status` 414 or 431: too large).
    fn answer_broken_head(&mut self, status: Option<u16>) {
        let r = &self.replacement;
        let err = match status {
            Some(414 | 431) => ApiError::new(
                ErrorKind::HeadTooLarge,
                format!(
                    "the request head is over the emulator's limit of {} bytes (request line and \
                     headers) or {} header fields",
                    r.max_head_bytes, r.max_headers
                ),
            ),
            _ => ApiError::new(
                ErrorKind::BadRequest,
                "the request head is not valid HTTP/1.1 (request line, header names or values)",
            ),
        };
        self.pending = Some((render(&codec::encode_error(&err, &r.ctx)), 0));
    }

    /// Write out what is left of the replacement; `Ready` once all of it is out.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>
    where
        S: AsyncWrite + Unpin,
    {
        while let Some((bytes, written)) = &mut self.pending {
            if *written == bytes.len() {
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }

    /// Write the typed 431 to an over-long head and flush it; `Ready` once it is out.
    fn poll_refuse_head(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>
    where
        S: AsyncWrite + Unpin,
    {
        if !self.refused_head {
            self.refused_head = true;
            self.answer_broken_head(Some(431));
        }
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }
}

/// An HTTP/1.1 answer that closes the connection, from the codec's wire response.
fn render(wire: &fleetsim_core::wire::WireResponse) -> Bytes {
    let reason = http::StatusCode::from_u16(wire.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let mut out = format!("HTTP/1.1 {} {reason}\r\n", wire.status);
    for (name, value) in &wire.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        wire.body.len()
    ));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&wire.body);
    Bytes::from(bytes)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.refused_head {
            // The rest of the 431, then end of input: hyper sees a head cut short and drops
            // the connection without answering.
            ready!(this.poll_refuse_head(cx))?;
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let max_head_bytes = this.replacement.max_head_bytes;
        if this.clock.on_read(&buf.filled()[before..], max_head_bytes) {
            // hyper never sees the bytes past the limit.
            buf.set_filled(before);
            ready!(this.poll_refuse_head(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.is_some() {
            // hyper's answer is swallowed: the typed one goes out instead.
            ready!(this.poll_pending(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        if this.is_bare_error(buf) {
            this.replace(buf);
            ready!(this.poll_pending(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        this.clock.state.lock().settled = false;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total = bufs.iter().map(|b| b.len()).sum();
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        if this.pending.is_some() {
            ready!(this.poll_pending(cx))?;
            return Poll::Ready(Ok(total));
        }
        if this.is_bare_error(first) {
            this.replace(first);
            ready!(this.poll_pending(cx))?;
            return Poll::Ready(Ok(total));
        }
        this.clock.state.lock().settled = false;
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        let mut st = this.clock.state.lock();
        if st.active == 0 {
            st.settled = true;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A head limit no test head reaches.
    const LIMIT: usize = 1 << 20;

    fn timeouts() -> ConnTimeouts {
        ConnTimeouts {
            head: Duration::from_secs(10),
            keep_alive: Duration::from_secs(100),
        }
    }

    // Goal: the deadline counts from the accept for the first head, stops while a request is
    // served, counts the keep-alive time after an answer, and switches to the head deadline
    // once the first byte of the next HTTP/1 request arrived.
    #[tokio::test(start_paused = true)]
    async fn deadline_follows_the_connection_phases() {
        let clock = ConnClock::new(timeouts());
        let accepted = Instant::now();
        let deadline = || clock.state.lock().deadline(timeouts());
        assert_eq!(deadline(), Some(accepted + Duration::from_secs(10)));
        clock.on_read(b"GET / HTTP/1.1\r\n\r\n", LIMIT);
        assert_eq!(deadline(), Some(accepted + Duration::from_secs(10)));
        let activity = clock.begin();
        assert_eq!(deadline(), None, "no deadline while a request is served");
        tokio::time::advance(Duration::from_secs(30)).await;
        drop(activity);
        let answered = Instant::now();
        assert_eq!(deadline(), Some(answered + Duration::from_secs(100)));
        tokio::time::advance(Duration::from_secs(50)).await;
        clock.on_read(b"G", LIMIT);
        assert_eq!(deadline(), Some(Instant::now() + Duration::from_secs(10)));
    }

    // Goal: an HTTP/2 connection is recognised by its preface, and frames read while no
    // stream is open never cut its keep-alive time down to the head deadline.
    #[tokio::test(start_paused = true)]
    async fn http2_frames_keep_the_keep_alive_deadline() {
        let clock = ConnClock::new(timeouts());
        clock.on_read(b"PR", LIMIT);
        clock.on_read(b"I * HTTP/2.0\r\n\r\nSM\r\n\r\n", LIMIT);
        drop(clock.begin());
        let answered = Instant::now();
        clock.on_read(b"\0\0\x08\x06\0\0\0\0\0ping-frm", LIMIT);
        assert_eq!(
            clock.state.lock().deadline(timeouts()),
            Some(answered + Duration::from_secs(100))
        );
    }

    // Goal: `expired` completes at the deadline and not while a request is served.
    #[tokio::test(start_paused = true)]
    async fn expired_waits_for_idle_and_the_deadline() {
        let clock = ConnClock::new(timeouts());
        let activity = clock.begin();
        let waiting = tokio::time::timeout(Duration::from_secs(1000), clock.expired());
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_secs(500), &mut waiting)
                .await
                .is_err()
        );
        drop(activity);
        let idle_at = Instant::now();
        assert!(waiting.await.is_ok());
        let waited = Instant::now() - idle_at;
        assert!(
            waited >= Duration::from_secs(100) && waited < Duration::from_secs(101),
            "{waited:?}"
        );
    }

    // Goal: a head's bytes are counted from its first byte to the blank line that ends it
    // (blank lines before it and body bytes after it are not), against the limit, and a
    // request being served resets the count for the next head.
    #[tokio::test(start_paused = true)]
    async fn head_bytes_are_counted_to_the_blank_line() {
        let clock = ConnClock::new(timeouts());
        let head = b"GET / HTTP/1.1\r\nX: y\r\n\r\n";
        assert!(!clock.on_read(b"\r\n", head.len()));
        assert!(!clock.on_read(head, head.len()));
        assert!(
            !clock.on_read(&[b'b'; 4096], head.len()),
            "body bytes are not head bytes"
        );
        drop(clock.begin());
        assert!(!clock.on_read(b"GET / HTTP/1.1\n", 20));
        assert!(clock.on_read(b"X: yy\n\n", 20), "22 bytes are over 20");
        drop(clock.begin());
        assert!(!clock.on_read(b"GET / HTTP/1.1\n\n", 16));
    }

    // Goal: the replacement is a complete HTTP/1.1 answer with the typed body that closes the
    // connection.
    #[test]
    fn replacement_is_a_typed_closing_answer() {
        let wire = codec::encode_error(
            &ApiError::new(ErrorKind::HeadTooLarge, "too big"),
            &ResponseContext::default(),
        );
        let text = String::from_utf8(render(&wire).to_vec()).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{text}"
        );
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(text.ends_with("}"), "{text}");
        assert!(
            text.contains("VssRequestHeadersTooLargeException"),
            "{text}"
        );
    }
}
