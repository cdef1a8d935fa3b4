//! The agents' HTTP client: turns a `WireRequest` into a real HTTP/1.1 exchange and the answer
//! back into a `WireResponse`.
//!
//! Two ways to hold connections:
//! - [`Connection`] (the default, like the real agent): one HTTP/1.1 connection per agent and
//!   purpose (listener, keep-alive, job), opened lazily and re-opened when the server or a
//!   timeout closes it. The exchange runs in the caller's task on the socket itself
//!   ([`crate::http1`]): no driver task, channel or buffers are kept per connection between
//!   calls, which is what lets a fleet hold many thousands of mostly idle agents;
//! - [`Pool`] (an option for very large fleets): connections shared by all agents, bounded by a
//!   semaphore (callers wait for a slot within their request timeout) with at most that many
//!   idle connections kept. It reuses the same connect path as `Connection`, so TLS and proxies
//!   behave identically in both modes (hyper-util's legacy pool would need a second connector
//!   stack for the CONNECT tunnel and the insecure-TLS option).
//!
//! Transport: plain TCP, TLS with rustls on the aws-lc-rs provider (trusting a CA file, or — only
//! when asked by name — [`InsecureAcceptAnyCertificate`]), an HTTP proxy (absolute-form requests
//! for `http` targets, a CONNECT tunnel for `https` targets, Basic `Proxy-Authorization`), and
//! source-address spreading across 127.0.0.0/8 for loopback targets, since one source address
//! reaches one destination through only ~28k ephemeral ports.
//!
//! Limits: every call has a timeout (the real agent's HTTP timeout, 100 s, by default) covering
//! connect, proxy, TLS, request and body; response bodies over `max_response_bytes` fail the call
//! and close the connection; a CONNECT answer over 8 KiB is a proxy error.
//!
//! This module makes no protocol decisions and never retries a request that reached the server;
//! it only re-sends once when the request was never written, or when an idempotent one met a
//! reused connection the server had already closed.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use fleetsim_core::event::{Outcome, TransportError};
use fleetsim_core::wire::{Method, WireRequest, WireResponse};
use http::header::HeaderValue;
use rustls::pki_types::ServerName;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::http1::{ExchangeError, Http1Conn};
use crate::proxy::ProxyConfig;

/// An open HTTP/1.1 connection to the target (or through the proxy).
type Conn = Http1Conn<Stream>;

/// The real agent's HTTP timeout (`VstsHttpRequestTimeout`, 100 s): the long poll fits under it.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(100);
/// How long a TCP connect (plus CONNECT and TLS handshake) may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest response body accepted by default (job messages are the big ones, ~100 KiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Connections per source address before spreading moves to the next one. Linux hands out
/// ~28k ephemeral ports per (source, destination) pair; this leaves room for TIME_WAIT.
pub const DEFAULT_CONNECTIONS_PER_SOURCE: u32 = 16_000;
/// The largest CONNECT response head read from a proxy.
const CONNECT_RESPONSE_MAX_BYTES: usize = 8 * 1024;
/// What the agents call themselves in `User-Agent`.
const USER_AGENT: &str = concat!(
    "VSServices/fleetsim-",
    env!("CARGO_PKG_VERSION"),
    " (fleetsim agent)"
);

/// The most bytes of an encoded request that are not a variable field: method, `HTTP/1.1`,
/// the field names with their CRLFs, `User-Agent`, the forward proxy's `scheme://` and port, a
/// 20-digit `Content-Length` and the blank line (`encode_request` adds the variable lengths).
const ENCODED_FIXED_BYTES: usize = 192 + USER_AGENT.len();

/// Response headers copied into `WireResponse` (the codec reads no others).
const KEPT_HEADERS: [&str; 9] = [
    "content-type",
    "www-authenticate",
    "retry-after",
    "location",
    "x-ratelimit-resource",
    "x-ratelimit-delay",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
];

/// Why a call failed. Messages never contain credentials or bodies.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("bad target URL {url:?}: {reason}")]
    BadTarget { url: String, reason: String },
    #[error("TLS configuration: {0}")]
    TlsSetup(String),
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("connect to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("TLS handshake with {host} failed: {source}")]
    Tls {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("proxy: {0}")]
    Proxy(String),
    #[error("connection closed or reset: {0}")]
    Reset(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("response body larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("request cannot be encoded: {0}")]
    BadRequest(String),
    /// The server named one more origin than a run talks to (a bounded client registry).
    #[error(
        "the server named {origin}, but a run talks to at most {max} distinct origins \
         (scheme://host:port); refused so that a server naming a new host per job cannot make \
         the fleet open unbounded clients"
    )]
    TooManyOrigins { origin: String, max: usize },
}

impl ClientError {
    /// The telemetry outcome of a call that failed this way.
    pub fn outcome(&self) -> Outcome {
        match self {
            ClientError::Timeout(_) => Outcome::Timeout,
            other => Outcome::Transport(other.transport()),
        }
    }

    /// The closest transport error for the agent state machine. A timeout maps to `Reset`: the
    /// connection is gone either way and the agent backs off the same.
    pub fn transport(&self) -> TransportError {
        match self {
            ClientError::Connect { .. }
            | ClientError::Resolve { .. }
            | ClientError::TooManyOrigins { .. } => TransportError::Connect,
            ClientError::Tls { .. } | ClientError::TlsSetup(_) => TransportError::Tls,
            ClientError::Proxy(_) => TransportError::Proxy,
            ClientError::BadTarget { .. }
            | ClientError::Reset(_)
            | ClientError::Timeout(_)
            | ClientError::BodyTooLarge(_)
            | ClientError::BadRequest(_) => TransportError::Reset,
        }
    }
}

/// `http` or `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Where the agents talk to: `scheme://host:port/base_path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub scheme: Scheme,
    /// Host as written in the URL (brackets removed from IPv6 literals).
    pub host: String,
    pub port: u16,
    /// Collection path without a trailing slash (`""` or `/DefaultCollection`).
    pub base_path: String,
}

impl Target {
    /// Parse `http(s)://host[:port][/base/path]` with the codec's URL parser (the one the
    /// agents' endpoints are resolved with). Query and fragment are refused: a collection URL
    /// has none.
    pub fn parse(url: &str) -> Result<Target, ClientError> {
        let bad = |reason: &str| ClientError::BadTarget {
            url: if url.contains('@') {
                "<URL with user info>".into()
            } else {
                url.into()
            },
            reason: reason.into(),
        };
        let parsed = fleetsim_core::codec::url::parse(url).map_err(|e| bad(e.reason))?;
        if !parsed.query.is_empty() || url.contains('?') || url.contains('#') {
            return Err(bad("a query string or fragment is not allowed"));
        }
        let mut target = Target::from_origin(&parsed.origin);
        target.base_path = parsed.path.trim_end_matches('/').to_string();
        Ok(target)
    }

    /// The root of `origin` (no base path): how a client for another origin is addressed.
    pub fn from_origin(origin: &fleetsim_core::codec::Origin) -> Target {
        Target {
            scheme: match origin.scheme {
                fleetsim_core::codec::UrlScheme::Http => Scheme::Http,
                fleetsim_core::codec::UrlScheme::Https => Scheme::Https,
            },
            host: origin.host.clone(),
            port: origin.port,
            base_path: String::new(),
        }
    }

    /// The collection URL, as agents are configured with it.
    pub fn url(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme.as_str(),
            self.authority(),
            self.base_path
        )
    }

    /// `host:port` with IPv6 literals bracketed (the `Host` header and CONNECT target).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// How a TLS target's certificate is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsTrust {
    /// Trust exactly the certificates in this PEM file (e.g. the emulator's self-signed one).
    CaFile(PathBuf),
    /// Accept any certificate. Signatures in the handshake are still checked, but anyone can
    /// impersonate the server. For throw-away self-signed targets only; the run log says so.
    InsecureAcceptAnyCertificate,
}

/// Whether connections to a loopback target spread over several source addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceSpread {
    /// Let the kernel pick the source address.
    Off,
    /// Slot `n` binds to 127.0.0.1 + n / `connections_per_address` (loopback IPv4 targets only;
    /// ignored otherwise).
    Loopback { connections_per_address: u32 },
}

/// Everything a client needs to reach its target.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub target: Target,
    /// Required for `https` targets.
    pub tls: Option<TlsTrust>,
    /// The resolved proxy; `None` or a proxy that bypasses the target means direct.
    pub proxy: Option<ProxyConfig>,
    /// Per call: connect, proxy, TLS, request and whole body.
    pub request_timeout: Duration,
    /// Per new connection: TCP connect, CONNECT tunnel and TLS handshake.
    pub connect_timeout: Duration,
    pub max_response_bytes: usize,
    pub source_spread: SourceSpread,
}

impl ClientOptions {
    /// Defaults for `target`: no TLS trust, no proxy, the real agent's 100 s timeout.
    pub fn new(target: Target) -> ClientOptions {
        ClientOptions {
            target,
            tls: None,
            proxy: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            source_spread: SourceSpread::Off,
        }
    }
}

/// Counters shared by every connection of one client (cheap relaxed atomics).
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Connections opened successfully.
    pub connects: AtomicU64,
    /// Connection attempts that failed (TCP, proxy or TLS).
    pub connect_failures: AtomicU64,
    /// Requests sent (a silent re-send counts twice).
    pub requests: AtomicU64,
    /// Re-sends after a reused connection turned out closed before the request was written.
    pub resends: AtomicU64,
}

/// How requests reach the target.
#[derive(Clone, Debug)]
enum Hop {
    /// Straight to the target.
    Direct,
    /// Through an HTTP proxy with absolute-form requests (`http` targets).
    Forward { authorization: Option<HeaderValue> },
    /// Through a CONNECT tunnel (`https` targets).
    Tunnel { authorization: Option<HeaderValue> },
}

/// One configured client: resolved destination, TLS setup, proxy route. Shared by all the
/// connections of a fleet (`Arc`).
pub struct HttpClient {
    opts: ClientOptions,
    /// Where TCP connects: the target, or the proxy; every resolved address, tried in order.
    dests: Vec<SocketAddr>,
    hop: Hop,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    host_header: HeaderValue,
    stats: ClientStats,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("target", &self.opts.target.url())
            .field("dest", &self.dests)
            .field("via_proxy", &self.via_proxy())
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// Resolve the destination (the proxy's address when the target goes through one) and build
    /// the TLS configuration. Fails for an `https` target without a [`TlsTrust`].
    pub async fn new(opts: ClientOptions) -> Result<Arc<HttpClient>, ClientError> {
        let target = &opts.target;
        let proxy = opts
            .proxy
            .as_ref()
            .filter(|p| !p.bypasses(target.scheme.as_str(), &target.host, target.port));
        let (dest_host, dest_port) = match proxy {
            Some(p) => (p.addr.host.as_str(), p.addr.port),
            None => (target.host.as_str(), target.port),
        };
        let dests = resolve(dest_host, dest_port).await?;
        let authorization = proxy
            .and_then(ProxyConfig::authorization)
            .map(|v| {
                HeaderValue::from_str(&v).map_err(|_| ClientError::Proxy("bad credentials".into()))
            })
            .transpose()?
            .map(|mut v| {
                v.set_sensitive(true);
                v
            });
        let hop = match (proxy, target.scheme) {
            (None, _) => Hop::Direct,
            (Some(_), Scheme::Http) => Hop::Forward { authorization },
            (Some(_), Scheme::Https) => Hop::Tunnel { authorization },
        };
        let tls = match target.scheme {
            Scheme::Http => None,
            Scheme::Https => Some(tls_connector(&opts)?),
        };
        let host_header = HeaderValue::from_str(&host_header_value(target)).map_err(|_| {
            ClientError::BadTarget {
                url: target.url(),
                reason: "bad host".into(),
            }
        })?;
        Ok(Arc::new(HttpClient {
            opts,
            dests,
            hop,
            tls,
            host_header,
            stats: ClientStats::default(),
        }))
    }

    /// A lazily opened connection. `slot` picks the source address under [`SourceSpread`];
    /// give every concurrently open connection its own slot (e.g. agent × 3 + purpose).
    pub fn connection(self: &Arc<Self>, slot: u64) -> Connection {
        Connection {
            client: Arc::clone(self),
            slot,
            sender: None,
        }
    }

    /// A shared pool of at most `max_connections` connections in use at once.
    pub fn pool(self: &Arc<Self>, max_connections: usize) -> Pool {
        let max_connections = max_connections.max(1);
        Pool {
            client: Arc::clone(self),
            idle: parking_lot::Mutex::new(Vec::with_capacity(max_connections.min(1024))),
            max_idle: max_connections,
            in_use: Semaphore::new(max_connections),
            next_slot: AtomicU64::new(0),
        }
    }

    /// The options this client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// Whether requests go through a proxy.
    pub fn via_proxy(&self) -> bool {
        !matches!(self.hop, Hop::Direct)
    }

    /// The addresses TCP connects to (target or proxy), in the order they are tried.
    pub fn destinations(&self) -> &[SocketAddr] {
        &self.dests
    }

    /// Counters for the run report.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Open one connection: TCP (from the slot's source address), CONNECT when tunnelling, TLS
    /// for `https`. Nothing runs on it until the owner sends a request.
    async fn connect(&self, slot: u64) -> Result<Conn, ClientError> {
        // Boxed: connecting (TCP, CONNECT, TLS handshake) is rare next to calls on an open
        // connection, and its state is ~1.3 KiB that every call's future would otherwise carry
        // while it waits (a held long poll for 50 s).
        let connecting = Box::pin(self.connect_inner(slot));
        let result = tokio::time::timeout(self.opts.connect_timeout, connecting)
            .await
            .unwrap_or(Err(ClientError::Timeout(self.opts.connect_timeout)));
        let counter = if result.is_ok() {
            &self.stats.connects
        } else {
            &self.stats.connect_failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    async fn connect_inner(&self, slot: u64) -> Result<Conn, ClientError> {
        let mut tcp = self.tcp_connect(slot).await?;
        if let Hop::Tunnel { authorization } = &self.hop {
            connect_tunnel(
                &mut tcp,
                &self.opts.target.authority(),
                authorization.as_ref(),
            )
            .await?;
        }
        let stream = match &self.tls {
            None => Stream::Plain(tcp),
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|source| ClientError::Tls {
                        host: self.opts.target.host.clone(),
                        source,
                    })?;
                Stream::Tls(Box::new(tls))
            }
        };
        Ok(Http1Conn::new(stream))
    }

    /// TCP to the first destination address that accepts (`localhost` may resolve to `::1`
    /// before `127.0.0.1`).
    async fn tcp_connect(&self, slot: u64) -> Result<TcpStream, ClientError> {
        let mut last = None;
        for &dest in &self.dests {
            match tcp_connect_one(self.opts.source_spread, dest, slot).await {
                Ok(stream) => return Ok(stream),
                Err(source) => last = Some(ClientError::Connect { addr: dest, source }),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Resolve {
            host: self.opts.target.host.clone(),
            reason: "no address".into(),
        }))
    }

    /// Encode the request: origin-form target (absolute-form through a forward proxy), `Host`,
    /// `User-Agent`, `Accept`, `Authorization`, `Content-Type`, `Proxy-Authorization`,
    /// `Content-Length`, then the body. Field values with control characters are refused (they
    /// would split the head).
    pub fn encode(&self, req: &WireRequest) -> Result<Encoded, ClientError> {
        Ok(Encoded {
            bytes: self.encode_request(req)?,
            idempotent: matches!(req.method, Method::Get | Method::Options),
        })
    }

    fn encode_request(&self, req: &WireRequest) -> Result<Vec<u8>, ClientError> {
        let bad = |what: &str| ClientError::BadRequest(what.to_string());
        let method = match req.method {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Other => return Err(bad("unsupported method")),
        };
        // A request target is visible ASCII only (RFC 9112 §3.2); the codec percent-encodes.
        let visible = |v: &str| v.bytes().all(|b| b.is_ascii_graphic());
        if !visible(&req.path) || !visible(&req.query) {
            return Err(bad("request target with spaces or control characters"));
        }
        let field_ok = |v: &str| v.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f));
        // Sized for the whole request up front: a held long poll keeps these bytes for its one
        // safe resend, so slack from doubling growth (a ~1.1 KB head in a 2 KiB buffer) would be
        // held by every parked agent; and no reallocation while encoding.
        let optional = |v: &Option<String>| v.as_ref().map_or(0, String::len);
        let proxy_auth = match &self.hop {
            Hop::Forward {
                authorization: Some(auth),
            } => auth.len(),
            _ => 0,
        };
        let capacity = ENCODED_FIXED_BYTES
            + self.opts.target.host.len()
            + self.host_header.len()
            + req.path.len()
            + req.query.len()
            + optional(&req.authorization)
            + optional(&req.content_type)
            + proxy_auth
            + req.body.len();
        let mut out = Vec::with_capacity(capacity);
        let mut put = |parts: &[&[u8]]| parts.iter().for_each(|p| out.extend_from_slice(p));
        put(&[method.as_bytes(), b" "]);
        if let Hop::Forward { .. } = &self.hop {
            let t = &self.opts.target;
            put(&[
                t.scheme.as_str().as_bytes(),
                b"://",
                t.authority().as_bytes(),
            ]);
        }
        if !req.path.starts_with('/') {
            put(&[b"/"]);
        }
        put(&[req.path.as_bytes()]);
        if !req.query.is_empty() {
            put(&[b"?", req.query.as_bytes()]);
        }
        put(&[b" HTTP/1.1\r\nHost: ", self.host_header.as_bytes(), b"\r\n"]);
        put(&[
            b"User-Agent: ",
            USER_AGENT.as_bytes(),
            b"\r\nAccept: application/json\r\n",
        ]);
        if let Some(auth) = &req.authorization {
            if !field_ok(auth) {
                return Err(bad("bad Authorization"));
            }
            put(&[b"Authorization: ", auth.as_bytes(), b"\r\n"]);
        }
        if let Some(ct) = &req.content_type {
            if !field_ok(ct) {
                return Err(bad("bad Content-Type"));
            }
            put(&[b"Content-Type: ", ct.as_bytes(), b"\r\n"]);
        }
        if let Hop::Forward {
            authorization: Some(auth),
        } = &self.hop
        {
            put(&[b"Proxy-Authorization: ", auth.as_bytes(), b"\r\n"]);
        }
        let has_body = matches!(req.method, Method::Post | Method::Put | Method::Patch);
        if has_body || !req.body.is_empty() {
            let len = req.body.len().to_string();
            put(&[b"Content-Length: ", len.as_bytes(), b"\r\n"]);
        }
        put(&[b"\r\n", &req.body]);
        debug_assert!(out.len() <= capacity, "ENCODED_FIXED_BYTES is too small");
        Ok(out)
    }

    /// One request on one connection. `Ok((resp, keep))`: `keep` is false when the server said
    /// `Connection: close`, so the caller drops the connection at once instead of racing the
    /// close with its next request. `Err((e, resend))`: `resend` is true when sending again on a
    /// fresh connection is safe — hyper proved the request was never written, or an idempotent
    /// request (GET, OPTIONS) met a connection the server closed under it.
    async fn exchange(
        &self,
        conn: &mut Conn,
        req: &Encoded,
    ) -> Result<(WireResponse, bool), (ClientError, bool)> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let max = self.opts.max_response_bytes;
        let answer = match conn.exchange(&req.bytes, &KEPT_HEADERS, max, false).await {
            Ok(a) => a,
            Err(e) => {
                let idempotent = req.idempotent;
                let resend = match &e {
                    ExchangeError::Unsent(_) => true,
                    ExchangeError::Io {
                        error,
                        answered_nothing: true,
                    } => idempotent && closed_under_request(error),
                    _ => false,
                };
                let error = match e {
                    ExchangeError::TooLarge => ClientError::BodyTooLarge(max),
                    other => ClientError::Reset(other.to_string()),
                };
                return Err((error, resend));
            }
        };
        if answer.status == 407 && self.via_proxy() {
            return Err((
                ClientError::Proxy("the proxy answered 407 (credentials)".into()),
                false,
            ));
        }
        Ok((
            WireResponse {
                status: answer.status,
                headers: answer.headers,
                body: answer.body,
            },
            answer.keep_alive,
        ))
    }
}

/// A request as it goes on the wire (head and body), for one client: a caller holding a call in
/// flight keeps these bytes (for the one safe resend) instead of the request they came from.
#[derive(Debug)]
pub struct Encoded {
    bytes: Vec<u8>,
    idempotent: bool,
}

/// One agent connection (listener, keep-alive or job): opened on first use, re-opened after the
/// peer closes it or a call on it fails. Not shared: a long poll occupies it.
pub struct Connection {
    client: Arc<HttpClient>,
    slot: u64,
    sender: Option<Conn>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("slot", &self.slot)
            .field("open", &self.sender.is_some())
            .finish()
    }
}

impl Connection {
    /// Send one request and read the whole answer, within the client's request timeout. Any
    /// failure closes the connection, so the next call starts on a fresh one.
    pub async fn send(&mut self, req: &WireRequest) -> Result<WireResponse, ClientError> {
        let encoded = self.client.encode(req)?;
        self.send_encoded(&encoded).await
    }

    /// [`Connection::send`] of a request already encoded by this connection's client.
    pub async fn send_encoded(&mut self, req: &Encoded) -> Result<WireResponse, ClientError> {
        let timeout = self.client.opts.request_timeout;
        let result = tokio::time::timeout(timeout, self.send_inner(req))
            .await
            .unwrap_or(Err(ClientError::Timeout(timeout)));
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    /// Close the connection now (it re-opens on the next `send`).
    pub fn close(&mut self) {
        self.sender = None;
    }

    /// Whether an HTTP connection is currently held open (and the peer has not closed it).
    pub fn is_open(&mut self) -> bool {
        if self.sender.as_mut().is_some_and(Conn::peer_closed) {
            self.sender = None;
        }
        self.sender.is_some()
    }

    async fn send_inner(&mut self, req: &Encoded) -> Result<WireResponse, ClientError> {
        if self.sender.as_mut().is_some_and(Conn::peer_closed) {
            self.sender = None;
        }
        let reused = self.sender.is_some();
        let sender = match &mut self.sender {
            Some(s) => s,
            None => self.sender.insert(self.client.connect(self.slot).await?),
        };
        let result = match self.client.exchange(sender, req).await {
            Err((_, true)) if reused => {
                // The server closed the idle connection under our request: one fresh
                // connection, one more try, and no further.
                self.client.stats.resends.fetch_add(1, Ordering::Relaxed);
                let sender = self.sender.insert(self.client.connect(self.slot).await?);
                self.client.exchange(sender, req).await
            }
            other => other,
        };
        match result {
            Ok((resp, keep)) => {
                if !keep {
                    self.sender = None;
                }
                Ok(resp)
            }
            Err((e, _)) => Err(e),
        }
    }
}

/// Connections shared by many agents: at most `max_connections` requests in flight (callers wait
/// for a slot within their timeout), at most as many idle connections kept for reuse.
pub struct Pool {
    client: Arc<HttpClient>,
    idle: parking_lot::Mutex<Vec<Conn>>,
    max_idle: usize,
    in_use: Semaphore,
    next_slot: AtomicU64,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle", &self.idle.lock().len())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// The client whose connections this pool holds (it encodes the pool's requests).
    pub fn client(&self) -> &HttpClient {
        &self.client
    }

    /// Send one request on a pooled connection, within the client's request timeout (waiting for
    /// a free slot counts against it).
    pub async fn send(&self, req: &WireRequest) -> Result<WireResponse, ClientError> {
        let encoded = self.client.encode(req)?;
        self.send_encoded(&encoded).await
    }

    /// [`Pool::send`] of a request already encoded by this pool's client.
    pub async fn send_encoded(&self, req: &Encoded) -> Result<WireResponse, ClientError> {
        let timeout = self.client.opts.request_timeout;
        tokio::time::timeout(timeout, self.send_inner(req))
            .await
            .unwrap_or(Err(ClientError::Timeout(timeout)))
    }

    /// Idle connections currently kept.
    pub fn idle_connections(&self) -> usize {
        self.idle.lock().len()
    }

    async fn send_inner(&self, req: &Encoded) -> Result<WireResponse, ClientError> {
        let _permit = self
            .in_use
            .acquire()
            .await
            .map_err(|_| ClientError::Reset("pool closed".into()))?;
        let mut attempt_fresh = false;
        loop {
            let (mut sender, reused) = match self.take_idle().filter(|_| !attempt_fresh) {
                Some(s) => (s, true),
                None => {
                    let slot = self.next_slot.fetch_add(1, Ordering::Relaxed);
                    (self.client.connect(slot).await?, false)
                }
            };
            match self.client.exchange(&mut sender, req).await {
                Ok((resp, keep)) => {
                    let mut idle = self.idle.lock();
                    if keep && idle.len() < self.max_idle {
                        idle.push(sender);
                    }
                    return Ok(resp);
                }
                Err((_, true)) if reused => {
                    self.client.stats.resends.fetch_add(1, Ordering::Relaxed);
                    attempt_fresh = true;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock();
        while let Some(mut sender) = idle.pop() {
            if !sender.peer_closed() {
                return Some(sender);
            }
        }
        None
    }
}

/// The source address for `slot`, or `None` to let the kernel choose (spreading off, a
/// non-loopback or IPv6 destination, or the first block of slots, which uses 127.0.0.1).
fn source_address(spread: SourceSpread, dest: SocketAddr, slot: u64) -> Option<Ipv4Addr> {
    let SourceSpread::Loopback {
        connections_per_address,
    } = spread
    else {
        return None;
    };
    let IpAddr::V4(v4) = dest.ip() else {
        return None;
    };
    if !v4.is_loopback() {
        return None;
    }
    let block = slot / u64::from(connections_per_address.max(1));
    if block == 0 {
        return None;
    }
    // 127.0.0.1 + block, kept inside 127.0.0.0/8 and off the .0 network address.
    let offset = (block % 0x00FF_FFFE) as u32;
    Some(Ipv4Addr::from(0x7F00_0001u32 + offset))
}

async fn tcp_connect_one(
    spread: SourceSpread,
    dest: SocketAddr,
    slot: u64,
) -> io::Result<TcpStream> {
    let stream = match source_address(spread, dest, slot) {
        None => TcpStream::connect(dest).await?,
        Some(local) => {
            let socket = TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(IpAddr::V4(local), 0))?;
            socket.connect(dest).await?
        }
    };
    // Requests are small and latency is what we measure: no Nagle delay.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Every address of `host`, at most 8 (more buys nothing and bounds the connect loop).
async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, ClientError> {
    let err = |reason: String| ClientError::Resolve {
        host: host.to_string(),
        reason,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| err(e.to_string()))?
        .take(8)
        .collect();
    if addrs.is_empty() {
        return Err(err("no address".to_string()));
    }
    Ok(addrs)
}

fn host_header_value(target: &Target) -> String {
    let default_port = match target.scheme {
        Scheme::Http => 80,
        Scheme::Https => 443,
    };
    if target.port == default_port {
        if target.host.contains(':') {
            format!("[{}]", target.host)
        } else {
            target.host.clone()
        }
    } else {
        target.authority()
    }
}

/// Open a CONNECT tunnel to `authority` through the proxy on `tcp`. Only a 2xx answer opens it;
/// 407 and anything else are proxy errors.
async fn connect_tunnel(
    tcp: &mut TcpStream,
    authority: &str,
    authorization: Option<&HeaderValue>,
) -> Result<(), ClientError> {
    let proxy_err = |what: String| ClientError::Proxy(what);
    let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(auth) = authorization {
        let auth = auth
            .to_str()
            .map_err(|_| proxy_err("bad credentials".into()))?;
        head.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes())
        .await
        .map_err(|e| proxy_err(format!("CONNECT write: {e}")))?;

    // Read the answer head. TLS speaks first after a 2xx, so the proxy sends nothing past the
    // blank line and reading in chunks cannot swallow tunnel bytes.
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > CONNECT_RESPONSE_MAX_BYTES {
            return Err(proxy_err("CONNECT answer head too large".into()));
        }
        let n = tcp
            .read(&mut chunk)
            .await
            .map_err(|e| proxy_err(format!("CONNECT read: {e}")))?;
        if n == 0 {
            return Err(proxy_err(
                "proxy closed the connection during CONNECT".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(buf.len())
        + 4;
    let status_line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let status = std::str::from_utf8(status_line)
        .ok()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| proxy_err("malformed CONNECT answer".into()))?;
    match status {
        // A refusal may carry a body; a tunnel must not (its first bytes belong to TLS).
        200..=299 if end != buf.len() => Err(proxy_err(
            "proxy sent bytes after the CONNECT answer".into(),
        )),
        200..=299 => Ok(()),
        407 => Err(proxy_err(
            "the proxy answered 407 to CONNECT (credentials)".into(),
        )),
        other => Err(proxy_err(format!("the proxy answered {other} to CONNECT"))),
    }
}

fn tls_connector(opts: &ClientOptions) -> Result<(TlsConnector, ServerName<'static>), ClientError> {
    let alpn: &[&[u8]] = &[b"http/1.1"];
    let config = match &opts.tls {
        None => {
            return Err(ClientError::TlsSetup(
                "an https target needs a CA file (ca_file) or the explicit insecure flag".into(),
            ));
        }
        Some(TlsTrust::CaFile(path)) => crate::tls::client_config_trusting(path, alpn)
            .map_err(|e| ClientError::TlsSetup(e.to_string()))?,
        Some(TlsTrust::InsecureAcceptAnyCertificate) => {
            let provider = crate::tls::provider();
            let verifier = Arc::new(InsecureAcceptAnyCertificate {
                provider: Arc::clone(&provider),
            });
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| ClientError::TlsSetup(e.to_string()))?
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Arc::new(config)
        }
    };
    let name = ServerName::try_from(opts.target.host.clone()).map_err(|_| {
        ClientError::TlsSetup(format!("{:?} is not a TLS server name", opts.target.host))
    })?;
    Ok((TlsConnector::from(config), name))
}

/// DANGER: a certificate verifier that accepts every certificate, for self-signed targets when no
/// CA file is at hand. Handshake signatures are still verified against the presented certificate
/// (so the TLS session is real), but the certificate itself is trusted blindly. Only ever built
/// from [`TlsTrust::InsecureAcceptAnyCertificate`].
#[derive(Debug)]
pub struct InsecureAcceptAnyCertificate {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for InsecureAcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TCP stream, plain or wrapped in TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

impl crate::http1::ReadReady for Stream {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Plain(s) => s.poll_read_ready(cx),
            // Decrypted bytes may already wait inside the TLS session, where the socket's
            // readiness cannot see them; the TLS session keeps its own buffers anyway.
            Stream::Tls(_) => Poll::Ready(Ok(())),
        }
    }
}

/// Whether the peer closed the connection under a written request without answering it: the
/// answer ended early, or the connection was reset or aborted. On a reused connection this is
/// the server's idle close racing the request (the emulator closes connections idle for 30 s,
/// the agent's keep-alive poll comes every 30 s), so an idempotent request may go again.
fn closed_under_request(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: collection URLs parse into scheme/host/port/base path, and the forms we refuse are
    // typed errors (user info would leak a PAT into logs).
    #[test]
    fn target_urls_parse_and_bad_ones_are_refused() {
        let t = Target::parse("https://localhost:8443/DefaultCollection/").unwrap();
        assert_eq!(t.scheme, Scheme::Https);
        assert_eq!(
            (t.host.as_str(), t.port, t.base_path.as_str()),
            ("localhost", 8443, "/DefaultCollection")
        );
        assert_eq!(t.url(), "https://localhost:8443/DefaultCollection");
        let t = Target::parse("http://[::1]").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.base_path.as_str()),
            ("::1", 80, "")
        );
        assert_eq!(t.authority(), "[::1]:80");
        assert_eq!(host_header_value(&t), "[::1]");
        for bad in ["ftp://h", "http://u:p@h", "http://h/?q=1", "not a url", ""] {
            assert!(
                matches!(Target::parse(bad), Err(ClientError::BadTarget { .. })),
                "{bad}"
            );
        }
    }

    // Goal: source spreading moves to the next loopback address every N slots, never leaves
    // 127.0.0.0/8 and never applies to non-loopback destinations.
    #[test]
    fn source_addresses_spread_across_loopback_only() {
        let spread = SourceSpread::Loopback {
            connections_per_address: 100,
        };
        let lo: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert_eq!(source_address(spread, lo, 99), None);
        assert_eq!(
            source_address(spread, lo, 100),
            Some(Ipv4Addr::new(127, 0, 0, 2))
        );
        assert_eq!(
            source_address(spread, lo, 100 * 300),
            Some(Ipv4Addr::new(127, 0, 1, 45))
        );
        let far = source_address(spread, lo, u64::MAX).unwrap();
        assert_eq!(far.octets()[0], 127);
        assert_ne!(far, Ipv4Addr::new(127, 0, 0, 0));
        assert_eq!(
            source_address(spread, "10.0.0.1:80".parse().unwrap(), 500),
            None
        );
        assert_eq!(source_address(SourceSpread::Off, lo, 500), None);
    }

    // Goal: every failure maps to a bounded telemetry outcome; a timeout stays a timeout.
    #[test]
    fn errors_map_to_bounded_outcomes() {
        assert_eq!(
            ClientError::Timeout(Duration::from_secs(1)).outcome(),
            Outcome::Timeout
        );
        assert_eq!(
            ClientError::Proxy("x".into()).outcome(),
            Outcome::Transport(TransportError::Proxy)
        );
        let refused = ClientError::Connect {
            addr: "127.0.0.1:1".parse().unwrap(),
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(refused.transport(), TransportError::Connect);
        assert_eq!(
            ClientError::BodyTooLarge(1).transport(),
            TransportError::Reset
        );
    }
}
