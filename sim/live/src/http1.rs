//! One HTTP/1.1 client connection, driven inside the task that owns it.
//!
//! Why not hyper's client connection: `hyper::client::conn::http1` splits a connection into a
//! `SendRequest` handle and a driver future that must run as its own task, joined by a channel,
//! with its own read and write buffers kept for the connection's life. A virtual agent holds two
//! or three connections, most of them idle or parked on a 50 s long poll, so those parts were
//! most of an agent's memory (heap profile in docs/PERFORMANCE.md: ~54 KiB of ~91 KiB per agent).
//! The agent's task already waits on each call's future, so the exchange can run right there:
//! write the request, read the answer, and keep nothing between calls but the socket.
//!
//! What is hand-written is only the framing the protocol needs (RFC 9112): the request head, the
//! response body by `Content-Length`, `chunked` or connection close, `Connection` keep-alive
//! rules and skipped 1xx answers. Head parsing is `httparse` (the parser hyper itself uses).
//! Limits: the response head is at most [`HEAD_MAX_BYTES`] and [`MAX_HEADERS`] fields, a chunk
//! line or the trailers at most [`LINE_MAX_BYTES`], the body at most the caller's `max_body`;
//! deadlines are the caller's (the client wraps every exchange in its request timeout).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The largest response head accepted (Azure DevOps answers carry ~2 KiB of headers).
pub(crate) const HEAD_MAX_BYTES: usize = 64 * 1024;
/// The most header fields in one response head.
pub(crate) const MAX_HEADERS: usize = 128;
/// The longest chunk-size line, and the most trailer bytes, accepted.
pub(crate) const LINE_MAX_BYTES: usize = 8 * 1024;
/// How much the read buffer grows by at a time: a 204 or a small JSON answer fits in one read.
/// The buffer is taken only once the stream is readable ([`ReadReady`]), so a held long poll
/// costs no buffer at all while it waits.
const READ_CHUNK: usize = 2 * 1024;

/// A stream that tells when a read would find something (bytes, end of stream or an error),
/// before a buffer is taken for it: an agent's long poll waits up to 50 s for its answer, and a
/// buffer taken at the start of that wait is memory held by every parked agent.
pub(crate) trait ReadReady {
    /// Ready when a read may complete without waiting. A stream that cannot tell says ready at
    /// once (the read then waits in its buffer, as before).
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// The most body capacity reserved ahead of the bytes that fill it.
const EXACT_RESERVE: usize = 64 * 1024;

/// An answer as read off the wire.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    /// The header fields the caller asked to keep (lower-case names), in arrival order.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// The connection may carry another request (HTTP/1.1 without `Connection: close`, the body
    /// was framed, nothing was left over).
    pub keep_alive: bool,
}

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) enum ExchangeError {
    /// The connection failed before a single byte of the request left: safe to send again.
    Unsent(io::Error),
    /// The connection failed after the request was (partly) written. `answered_nothing`: not a
    /// byte of an answer arrived (the server may have closed an idle connection under the
    /// request; an idempotent request may go again on a fresh connection).
    Io {
        error: io::Error,
        answered_nothing: bool,
    },
    /// The peer broke HTTP/1.1 framing.
    Protocol(String),
    /// The body is larger than the caller's limit.
    TooLarge,
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExchangeError::Unsent(e) => write!(f, "{e} (request not sent)"),
            ExchangeError::Io { error, .. } => write!(f, "{error}"),
            ExchangeError::Protocol(what) => write!(f, "bad HTTP/1.1 answer: {what}"),
            ExchangeError::TooLarge => write!(f, "answer body over the limit"),
        }
    }
}

/// A connection: the stream and nothing else between calls (the read buffer lives only while an
/// answer is being read).
pub(crate) struct Http1Conn<S> {
    io: S,
}

impl<S> std::fmt::Debug for Http1Conn<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http1Conn").finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + ReadReady + Unpin> Http1Conn<S> {
    pub(crate) fn new(io: S) -> Self {
        Http1Conn { io }
    }

    /// Whether the peer has closed (or broken) the idle connection: a read that completes now
    /// means end of stream, an error, or bytes nobody asked for — the connection is unusable
    /// either way. A read that would wait means it is still open. Checked before reuse, so a
    /// request is not written into a connection the server already closed.
    pub(crate) fn peer_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(Waker::noop());
        !matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut buf),
            Poll::Pending
        )
    }

    /// Write `request` (head and body, already encoded) and read the whole answer. `keep`
    /// selects the header fields returned (lower-case names); `no_body`: the request was HEAD,
    /// whose answer has no body whatever its headers say.
    pub(crate) async fn exchange(
        &mut self,
        request: &[u8],
        keep: &[&'static str],
        max_body: usize,
        no_body: bool,
    ) -> Result<Answer, ExchangeError> {
        self.write_request(request).await?;
        let mut r = Reader {
            io: &mut self.io,
            buf: Vec::new(),
            pos: 0,
        };
        let head = loop {
            let head = r.head(keep).await?;
            // 1xx answers (100 Continue, 103 Early Hints) precede the real one; 101 would switch
            // protocols, which no agent call asks for.
            match head.status {
                101 => return Err(ExchangeError::Protocol("101 without an upgrade".into())),
                100..=199 => continue,
                _ => break head,
            }
        };
        let framing = if no_body || head.status == 204 || head.status == 304 {
            Framing::Length(0)
        } else {
            head.framing
        };
        let (body, framed) = match framing {
            Framing::Length(n) if n > max_body as u64 => return Err(ExchangeError::TooLarge),
            Framing::Length(n) => (r.exact(n as usize).await?, true),
            Framing::Chunked => (r.chunked(max_body).await?, true),
            Framing::UntilClose => (r.until_close(max_body).await?, false),
        };
        // Bytes past the answer were never asked for: the connection cannot be trusted again.
        let leftover = r.pos < r.buf.len();
        Ok(Answer {
            status: head.status,
            headers: head.kept,
            body,
            keep_alive: head.persistent && framed && !leftover,
        })
    }

    async fn write_request(&mut self, request: &[u8]) -> Result<(), ExchangeError> {
        let mut written = 0;
        while written < request.len() {
            match self.io.write(&request[written..]).await {
                Ok(0) => {
                    let error = io::Error::new(io::ErrorKind::WriteZero, "connection closed");
                    return Err(write_error(error, written));
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(write_error(e, written)),
            }
        }
        self.io.flush().await.map_err(|error| ExchangeError::Io {
            error,
            answered_nothing: true,
        })
    }
}

fn write_error(error: io::Error, written: usize) -> ExchangeError {
    if written == 0 {
        ExchangeError::Unsent(error)
    } else {
        ExchangeError::Io {
            error,
            answered_nothing: true,
        }
    }
}

/// How the answer's body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

struct Head {
    status: u16,
    kept: Vec<(&'static str, String)>,
    framing: Framing,
    /// HTTP/1.1 without `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`.
    persistent: bool,
}

/// The answer being read: `buf[pos..]` is read but not yet consumed.
struct Reader<'a, S> {
    io: &'a mut S,
    buf: Vec<u8>,
    pos: usize,
}

impl<S: AsyncRead + ReadReady + Unpin> Reader<'_, S> {
    /// Read more bytes into the buffer; end of stream is an error (`what` names where).
    async fn fill(&mut self, what: &str) -> Result<(), ExchangeError> {
        // Drop consumed bytes before growing, so a long chunked body does not pile up.
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let before_any = self.buf.is_empty() && self.pos == 0;
        if self.buf.capacity() == self.buf.len() {
            // Wait for the answer before taking memory for it (a long poll waits up to 50 s).
            std::future::poll_fn(|cx| self.io.poll_read_ready(cx))
                .await
                .map_err(|error| ExchangeError::Io {
                    error,
                    answered_nothing: before_any,
                })?;
        }
        self.buf.reserve(READ_CHUNK);
        match self.io.read_buf(&mut self.buf).await {
            Ok(0) => Err(ExchangeError::Io {
                error: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed {what}"),
                ),
                answered_nothing: before_any,
            }),
            Ok(_) => Ok(()),
            Err(error) => Err(ExchangeError::Io {
                error,
                answered_nothing: before_any,
            }),
        }
    }

    async fn head(&mut self, keep: &[&'static str]) -> Result<Head, ExchangeError> {
        loop {
            if self.pos < self.buf.len() {
                let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut resp = httparse::Response::new(&mut fields);
                match resp.parse(&self.buf[self.pos..]) {
                    Ok(httparse::Status::Complete(len)) => {
                        let head = parse_head(&resp, keep)?;
                        self.pos += len;
                        return Ok(head);
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(e) => return Err(ExchangeError::Protocol(format!("answer head: {e}"))),
                }
            }
            if self.buf.len() - self.pos > HEAD_MAX_BYTES {
                return Err(ExchangeError::Protocol(format!(
                    "answer head over {HEAD_MAX_BYTES} bytes"
                )));
            }
            self.fill("before the answer head ended").await?;
        }
    }

    /// Exactly `n` body bytes, read straight into the body (no second copy).
    async fn exact(&mut self, n: usize) -> Result<Vec<u8>, ExchangeError> {
        let have = (self.buf.len() - self.pos).min(n);
        // Capacity grows with what arrives, not with what the server announced.
        let mut body = Vec::with_capacity(have.max(n.min(EXACT_RESERVE)));
        body.extend_from_slice(&self.buf[self.pos..self.pos + have]);
        self.pos += have;
        while body.len() < n {
            // `take` keeps the read inside this answer: nothing of a next one is swallowed.
            let want = (n - body.len()) as u64;
            body.reserve((want as usize).min(EXACT_RESERVE));
            let read = (&mut *self.io)
                .take(want)
                .read_buf(&mut body)
                .await
                .map_err(|error| ExchangeError::Io {
                    error,
                    answered_nothing: false,
                })?;
            if read == 0 {
                return Err(ExchangeError::Io {
                    error: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("connection closed after {} of {n} body bytes", body.len()),
                    ),
                    answered_nothing: false,
                });
            }
        }
        Ok(body)
    }

    /// One CRLF-terminated line (without the CRLF), at most [`LINE_MAX_BYTES`].
    async fn line(&mut self) -> Result<Vec<u8>, ExchangeError> {
        loop {
            if let Some(at) = self.buf[self.pos..].windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[self.pos..self.pos + at].to_vec();
                self.pos += at + 2;
                return Ok(line);
            }
            if self.buf.len() - self.pos > LINE_MAX_BYTES {
                return Err(ExchangeError::Protocol(format!(
                    "chunk line over {LINE_MAX_BYTES} bytes"
                )));
            }
            self.fill("inside a chunked body").await?;
        }
    }

    /// A `chunked` body (RFC 9112 §7.1): size lines in hex (extensions ignored), data, CRLF;
    /// a zero size, then trailer fields (read and dropped) up to a blank line.
    async fn chunked(&mut self, max_body: usize) -> Result<Vec<u8>, ExchangeError> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await?;
            let size = chunk_size(&line)?;
            if size == 0 {
                break;
            }
            if body.len() as u64 + size > max_body as u64 {
                return Err(ExchangeError::TooLarge);
            }
            let mut left = size as usize;
            while left > 0 {
                if self.pos == self.buf.len() {
                    self.fill("inside a chunk").await?;
                }
                let take = left.min(self.buf.len() - self.pos);
                body.extend_from_slice(&self.buf[self.pos..self.pos + take]);
                self.pos += take;
                left -= take;
            }
            if !self.line().await?.is_empty() {
                return Err(ExchangeError::Protocol(
                    "chunk data longer than its size".into(),
                ));
            }
        }
        let mut trailers = 0;
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                return Ok(body);
            }
            trailers += line.len() + 2;
            if trailers > LINE_MAX_BYTES {
                return Err(ExchangeError::Protocol(format!(
                    "trailers over {LINE_MAX_BYTES} bytes"
                )));
            }
        }
    }

    /// A body that ends when the server closes the connection.
    async fn until_close(&mut self, max_body: usize) -> Result<Vec<u8>, ExchangeError> {
        let mut body = self.buf.split_off(self.pos);
        self.buf.clear();
        self.pos = 0;
        loop {
            if body.len() > max_body {
                return Err(ExchangeError::TooLarge);
            }
            body.reserve(READ_CHUNK);
            let limit = (max_body + 1 - body.len()) as u64;
            let read = (&mut *self.io)
                .take(limit)
                .read_buf(&mut body)
                .await
                .map_err(|error| ExchangeError::Io {
                    error,
                    answered_nothing: false,
                })?;
            if read == 0 {
                return Ok(body);
            }
        }
    }
}

fn chunk_size(line: &[u8]) -> Result<u64, ExchangeError> {
    let bad = || ExchangeError::Protocol("bad chunk size line".into());
    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
    let digits = std::str::from_utf8(digits)
        .map_err(|_| bad())?
        .trim_matches([' ', '\t']);
    if digits.is_empty() || digits.len() > 15 {
        return Err(bad());
    }
    u64::from_str_radix(digits, 16).map_err(|_| bad())
}

fn parse_head(
    resp: &httparse::Response<'_, '_>,
    keep: &[&'static str],
) -> Result<Head, ExchangeError> {
    let protocol = |what: &str| ExchangeError::Protocol(what.to_string());
    let status = resp.code.ok_or_else(|| protocol("no status code"))?;
    let http11 = resp.version == Some(1);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = false;
    let mut keep_alive = false;
    let mut kept = Vec::new();
    for field in resp.headers.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(field.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| protocol("bad Content-Length"))?;
            if length.is_some_and(|l| l != v) {
                return Err(protocol("conflicting Content-Length fields"));
            }
            length = Some(v);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the final coding decides the framing; chunked must be it (RFC 9112 §6.1).
            let last = field
                .value
                .rsplit(|&b| b == b',')
                .next()
                .unwrap_or_default();
            chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
            if !chunked {
                return Err(protocol("a transfer coding other than chunked"));
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in field.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        if let Some(&wanted) = keep.iter().find(|k| name.eq_ignore_ascii_case(k))
            && let Ok(value) = std::str::from_utf8(field.value)
        {
            kept.push((wanted, value.to_string()));
        }
    }
    let framing = match (chunked, length) {
        // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3); such an answer may be an
        // attempt at smuggling, so the connection is not reused after it.
        (true, Some(_)) => {
            close = true;
            Framing::Chunked
        }
        (true, None) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::UntilClose,
    };
    Ok(Head {
        status,
        kept,
        framing,
        persistent: if http11 { !close } else { keep_alive && !close },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    /// The in-memory stream cannot tell readiness: its reads wait in their buffer.
    impl ReadReady for DuplexStream {
        fn poll_read_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    const KEEP: &[&str] = &["content-type", "retry-after"];

    /// Send `request` on a fresh connection whose peer answers with `answer` (then keeps the
    /// stream open, or closes it when `close`); returns the result and what the peer received.
    async fn exchange(
        answer: &[u8],
        close: bool,
        max: usize,
    ) -> (Result<Answer, ExchangeError>, Vec<u8>) {
        let (client, mut server) = duplex(256 * 1024);
        let answer = answer.to_vec();
        let peer = tokio::spawn(async move {
            let mut got = vec![0u8; 1024];
            let n = server.read(&mut got).await.unwrap();
            got.truncate(n);
            // Dribble the answer in small pieces so every parser path meets partial input.
            for piece in answer.chunks(7) {
                server.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
            if close {
                drop(server);
            } else {
                std::future::pending::<()>().await;
            }
            got
        });
        let mut conn = Http1Conn::new(client);
        let result = conn
            .exchange(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n", KEEP, max, false)
            .await;
        if close {
            let got = peer.await.unwrap();
            (result, got)
        } else {
            peer.abort();
            (result, b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n".to_vec())
        }
    }

    #[tokio::test]
    async fn content_length_body_and_kept_headers() {
        let (r, got) = exchange(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Other: 1\r\nContent-Length: 7\r\n\r\n{\"a\":1}",
            false,
            1024,
        )
        .await;
        let a = r.unwrap();
        assert_eq!(got, b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(a.status, 200);
        assert_eq!(a.body, b"{\"a\":1}");
        assert_eq!(
            a.headers,
            vec![("content-type", "application/json".to_string())]
        );
        assert!(a.keep_alive);
    }

    #[tokio::test]
    async fn chunked_body_with_extensions_and_trailers() {
        let (r, _) = exchange(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nWiki\r\n5\r\npedia\r\n0\r\nT: 1\r\n\r\n",
            false,
            1024,
        )
        .await;
        let a = r.unwrap();
        assert_eq!(a.body, b"Wikipedia");
        assert!(a.keep_alive);
    }

    #[tokio::test]
    async fn informational_answers_are_skipped_and_204_has_no_body() {
        let (r, _) = exchange(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nRetry-After: 5\r\n\r\n",
            false,
            1024,
        )
        .await;
        let a = r.unwrap();
        assert_eq!(a.status, 204);
        assert!(a.body.is_empty());
        assert_eq!(a.headers, vec![("retry-after", "5".to_string())]);
        assert!(a.keep_alive);
    }

    #[tokio::test]
    async fn close_delimited_body_and_connection_close_end_the_connection() {
        let (r, _) = exchange(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", true, 1024).await;
        let a = r.unwrap();
        assert_eq!(a.body, b"until the end");
        assert!(!a.keep_alive);
        let (r, _) = exchange(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
            false,
            1024,
        )
        .await;
        assert!(!r.unwrap().keep_alive);
        let (r, _) = exchange(
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
            false,
            1024,
        )
        .await;
        assert!(
            !r.unwrap().keep_alive,
            "HTTP/1.0 closes unless it says keep-alive"
        );
    }

    #[tokio::test]
    async fn limits_are_enforced() {
        let (r, _) = exchange(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n",
            false,
            1000,
        )
        .await;
        assert!(matches!(r, Err(ExchangeError::TooLarge)));
        let (r, _) = exchange(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n",
            false,
            1000,
        )
        .await;
        assert!(matches!(r, Err(ExchangeError::TooLarge)));
        let (r, _) = exchange(
            &[b"HTTP/1.1 200 OK\r\n\r\n".as_slice(), &[b'x'; 3000]].concat(),
            true,
            1000,
        )
        .await;
        assert!(matches!(r, Err(ExchangeError::TooLarge)));
        let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
        while huge.len() <= HEAD_MAX_BYTES + 100 {
            huge.extend_from_slice(
                b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        let (r, _) = exchange(&huge, false, 1000).await;
        assert!(matches!(r, Err(ExchangeError::Protocol(_))), "{r:?}");
    }

    #[tokio::test]
    async fn broken_framing_is_a_protocol_error() {
        for answer in [
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok".as_slice(),
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
            b"NOT HTTP\r\n\r\n",
        ] {
            let (r, _) = exchange(answer, true, 1000).await;
            assert!(
                matches!(r, Err(ExchangeError::Protocol(_))),
                "{r:?} for {answer:?}"
            );
        }
    }

    #[tokio::test]
    async fn smuggling_shapes_do_not_keep_the_connection() {
        // Both framings: chunked wins, and the connection is not trusted again.
        let (r, _) = exchange(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            false,
            1000,
        )
        .await;
        let a = r.unwrap();
        assert_eq!(a.body, b"ok");
        assert!(!a.keep_alive);
        // Bytes beyond the answer: not reused.
        let (r, _) = exchange(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
            false,
            1000,
        )
        .await;
        assert!(!r.unwrap().keep_alive);
    }

    #[tokio::test]
    async fn a_close_before_any_answer_byte_is_told_apart() {
        let (r, _) = exchange(b"", true, 1000).await;
        assert!(
            matches!(
                r,
                Err(ExchangeError::Io {
                    answered_nothing: true,
                    ..
                })
            ),
            "{r:?}"
        );
        let (r, _) = exchange(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",
            true,
            1000,
        )
        .await;
        assert!(
            matches!(
                r,
                Err(ExchangeError::Io {
                    answered_nothing: false,
                    ..
                })
            ),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn a_closed_idle_connection_is_seen_before_reuse() {
        let (client, server) = duplex(1024);
        let mut conn = Http1Conn::new(client);
        assert!(!conn.peer_closed(), "open and silent");
        drop(server);
        assert!(conn.peer_closed(), "peer gone");
    }

    #[tokio::test]
    async fn two_exchanges_on_one_connection() {
        let (client, mut server) = duplex(64 * 1024);
        let peer = tokio::spawn(async move {
            for body in ["one", "two"] {
                let mut got = [0u8; 256];
                let _ = server.read(&mut got).await.unwrap();
                let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{body}");
                server.write_all(answer.as_bytes()).await.unwrap();
            }
            std::future::pending::<()>().await;
        });
        let mut conn = Http1Conn::new(client);
        for want in [b"one", b"two"] {
            let a = conn
                .exchange(b"GET / HTTP/1.1\r\n\r\n", KEEP, 100, false)
                .await
                .unwrap();
            assert_eq!(&a.body, want);
            assert!(a.keep_alive);
            assert!(!conn.peer_closed());
        }
        peer.abort();
    }
}
