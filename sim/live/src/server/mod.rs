//! The emulator's HTTP front (`fleetsim serve`): a thin hyper 1.x service, plain HTTP or HTTPS
//! (rustls), over the sans-IO `fleetsim_core::server::Server`.
//!
//! `start` binds (port 0 is fine), starts serving and returns a `RunningEmulator` whose
//! `base_url` is ready to use: the socket accepts connections from the moment `start` returns.
//! `serve_until` wraps that for a binary: run until a shutdown future completes, then shut down
//! gracefully.
//!
//! Code map: `driver` owns the core (mutex, parked polls, timer task), `http` turns one HTTP
//! exchange into a core call through the codec, `listen` accepts connections under the limits,
//! `conn` keeps each connection's deadlines and types hyper's own error answers, `config`
//! loads `server.toml`, `metrics` counts requests by route and status, `store` keeps the durable
//! state (`--state-dir`) with group commit.
//!
//! Architecture Invariant: this module makes no protocol decision. It decodes with
//! `codec::decode_request`, lets the core answer, and encodes with `codec::encode_response`.

pub mod config;
mod conn;
mod driver;
mod http;
mod listen;
pub mod metrics;
pub mod store;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fleetsim_core::api::EmulatorStats;
use fleetsim_core::codec::{self, ResponseContext};
use fleetsim_core::server::{Listener as Role, ServerConfig};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::tls::{self, TlsError};
pub use metrics::{BusyTotals, FrontMetrics, FrontSnapshot};

use conn::ConnTimeouts;
use driver::Core;
use http::Front;
use listen::Listener;

/// Default for `EmulatorOptions::max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default for `EmulatorOptions::connection_wait`.
pub const DEFAULT_CONNECTION_WAIT: Duration = Duration::from_millis(250);
/// Default for `EmulatorOptions::drain_timeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for `EmulatorOptions::head_timeout`: a real client sends its head (TLS included)
/// within milliseconds of connecting; ten seconds is generous on a loaded machine and bounds
/// how long a silent client holds a connection slot.
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for `EmulatorOptions::body_timeout`: a full 10 MiB body at ~350 KiB/s.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for `EmulatorOptions::keep_alive_timeout`: above the idle times of the agent's
/// HTTP stack between calls, so the server rarely closes a connection a client is about to
/// reuse (the web fronts of Azure DevOps Server keep about two minutes, as IIS does).
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default for `EmulatorOptions::max_inflight_body_bytes`: a dozen maximum-size (10 MiB)
/// bodies, or tens of thousands of the few-KiB bodies agents send, at once.
pub const DEFAULT_MAX_INFLIGHT_BODY_BYTES: usize = 128 * 1024 * 1024;

/// How the front speaks TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain HTTP.
    Plain,
    /// HTTPS with a PEM certificate chain and PEM private key.
    Files { cert: PathBuf, key: PathBuf },
    /// HTTPS with a certificate generated at start for localhost, 127.0.0.1 and ::1, written
    /// with its key as PEM into `dir` so clients can trust it (`RunningEmulator::cert_path`).
    SelfSigned { dir: PathBuf },
}

/// Everything `start` needs.
#[derive(Clone, Debug)]
pub struct EmulatorOptions {
    /// Address to bind; port 0 picks a free port.
    pub listen: SocketAddr,
    pub tls: TlsMode,
    /// The core's configuration. When `public_url` is unset, the bound base URL (plus the
    /// layout's collection path) is used.
    pub config: ServerConfig,
    /// Connections served at once; see `listen.rs` for what happens at the bound.
    pub max_connections: usize,
    /// How long a connection accepted at the bound waits for a slot before it is closed.
    pub connection_wait: Duration,
    /// How long shutdown waits for in-flight requests before closing connections.
    pub drain_timeout: Duration,
    /// From the accept to a complete first request head (TLS handshake included), and from a
    /// later request's first byte to its complete head; the connection is closed after it.
    pub head_timeout: Duration,
    /// From a request's head to the end of its body; answered 408, then the connection is
    /// closed.
    pub body_timeout: Duration,
    /// How long a connection may stay idle between requests before it is closed.
    pub keep_alive_timeout: Duration,
    /// Bytes of request bodies being received at once across all connections and listeners;
    /// beyond, a request is answered 503 (`Retry-After: 1`). Raised to `max_body_bytes` when
    /// below it, so a maximum-size body always fits.
    pub max_inflight_body_bytes: usize,
    /// The run seed: the core derives every token, id and key from it.
    pub seed: u64,
    /// Keep the durable state (pools, agents, jobs, plans) in `DIR/state.redb` and restore it
    /// at start (`fleetsim_core::server::durable`); every answer leaves after the state it
    /// shows is on disk. `None`: memory only.
    pub state_dir: Option<PathBuf>,
}

impl EmulatorOptions {
    /// Plain HTTP on `listen` with default limits and seed 0.
    pub fn new(listen: SocketAddr, config: ServerConfig) -> Self {
        EmulatorOptions {
            listen,
            tls: TlsMode::Plain,
            config,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            connection_wait: DEFAULT_CONNECTION_WAIT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            head_timeout: DEFAULT_HEAD_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            keep_alive_timeout: DEFAULT_KEEP_ALIVE_TIMEOUT,
            max_inflight_body_bytes: DEFAULT_MAX_INFLIGHT_BODY_BYTES,
            seed: 0,
            state_dir: None,
        }
    }
}

/// Why the emulator could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("invalid server configuration: {0}")]
    Config(#[from] fleetsim_core::server::ConfigError),
    /// The state dir cannot be opened or read.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The state dir holds records this emulator must not use (another format or seed).
    #[error(transparent)]
    Restore(#[from] fleetsim_core::server::durable::RestoreError),
    /// A front limit that cannot work (a zero deadline, an impossible body budget).
    #[error("invalid emulator option: {0}")]
    Options(String),
}

/// A started emulator.
#[derive(Debug)]
pub struct RunningEmulator {
    /// `http(s)://host:port` with no trailing slash; what agents are configured with.
    pub base_url: String,
    /// The bound address (the real port when 0 was asked for).
    pub local_addr: SocketAddr,
    /// With `TlsMode::SelfSigned`, the PEM certificate clients must trust.
    pub cert_path: Option<PathBuf>,
    /// With `[layout] token_listen`: the token endpoint's URL (the `authorizationUrl`).
    pub token_url: Option<String>,
    /// With `[layout] plan_listen`: the plan hub's base URL (`SystemVssConnection.url`).
    pub plan_url: Option<String>,
    pub handle: EmulatorHandle,
}

/// Control of a running emulator. Dropping it stops the emulator too (the same graceful
/// sequence as `shutdown`, without waiting for it to finish).
#[derive(Debug)]
pub struct EmulatorHandle {
    core: Arc<Core>,
    metrics: Arc<FrontMetrics>,
    stop: watch::Sender<bool>,
    listener: JoinHandle<()>,
    timer: JoinHandle<()>,
}

impl EmulatorHandle {
    /// Graceful shutdown: stop accepting, answer parked polls, let in-flight requests finish
    /// (up to the drain timeout). Returns the core's final counters.
    pub async fn shutdown(self) -> EmulatorStats {
        let _ = self.stop.send(true);
        // A panicked task has nothing left to drain; the counters are still readable.
        let _ = self.listener.await;
        let _ = self.timer.await;
        let core = self.core.clone();
        let _ = tokio::task::spawn_blocking(move || core.stop_store()).await;
        self.core.stats()
    }

    /// The core's counters now.
    pub fn stats(&self) -> EmulatorStats {
        self.core.stats()
    }

    /// The front's counters now (requests by route and status, connections, crypto).
    pub fn front_metrics(&self) -> FrontSnapshot {
        self.metrics.snapshot()
    }
}

/// Bind, build the core and start serving. The sockets accept connections when this returns.
/// With a Services-like `[layout]`, the token service and the plan hub get listeners of their
/// own (same TLS mode, same limits each), and their URLs are written into the core's config
/// before it starts, so registrations and job messages name them.
pub async fn start(opts: EmulatorOptions) -> Result<RunningEmulator, ServeError> {
    check_options(&opts)?;
    tls::install_default_provider();
    let (acceptor, cert_path) = tls_acceptor(&opts.tls)?;
    let https = acceptor.is_some();
    let (listener, local_addr) = bind(opts.listen).await?;
    let base_url = base_url(local_addr, https);

    let mut config = opts.config;
    let collection = config.layout.collection_path();
    if config.public_url.is_none() {
        config.public_url = Some(format!("{base_url}{collection}"));
    }
    let mut extra = Vec::new();
    if let Some(addr) = config.layout.token_listen {
        let (socket, bound) = bind(addr).await?;
        let url = format!("{}{}", self::base_url(bound, https), codec::TOKEN_PATH);
        config.layout.token_url = Some(url);
        extra.push((socket, Role::Token));
    }
    if let Some(addr) = config.layout.plan_listen {
        let (socket, bound) = bind(addr).await?;
        config.layout.plan_url = Some(format!("{}{collection}", self::base_url(bound, https)));
        extra.push((socket, Role::Plan));
    }
    let ctx = ResponseContext {
        public_url: config.public_url(),
        token_url: config.layout.token_url.clone(),
        expires_in_as_string: config.layout.expires_in_as_string,
    };
    let layout = Arc::new(config.layout.clone());
    let (token_url, plan_url) = (layout.token_url.clone(), layout.plan_url.clone());
    let max_body_bytes = config.limits.max_body_bytes;
    let metrics = Arc::new(FrontMetrics::default());
    let state = match &opts.state_dir {
        Some(dir) => Some(store::Store::open(dir)?),
        None => None,
    };
    let core = Core::new(config, opts.seed, metrics.clone(), state)?;
    core.initial_commit()
        .await
        .map_err(store::StoreError::Commit)?;
    // Never below one maximum-size body, or such a body could never be accepted.
    let max_inflight_body_bytes = opts
        .max_inflight_body_bytes
        .max(max_body_bytes)
        .min(Semaphore::MAX_PERMITS);
    let inflight = Arc::new(Semaphore::new(max_inflight_body_bytes));
    let timeouts = ConnTimeouts {
        head: opts.head_timeout,
        keep_alive: opts.keep_alive_timeout,
    };

    let (stop, stop_rx) = watch::channel(false);
    let timer = tokio::spawn(core.clone().run_timer(stop_rx.clone()));
    let mut loops = Vec::new();
    for (socket, role) in std::iter::once((listener, Role::Main)).chain(extra) {
        let front = Arc::new(Front {
            core: core.clone(),
            ctx: ctx.clone(),
            max_body_bytes,
            body_timeout: opts.body_timeout,
            inflight: inflight.clone(),
            max_inflight_body_bytes,
            metrics: metrics.clone(),
            role,
            layout: layout.clone(),
        });
        let accept = Listener {
            listener: socket,
            tls: acceptor.clone(),
            front,
            max_connections: opts.max_connections,
            connection_wait: opts.connection_wait,
            drain_timeout: opts.drain_timeout,
            timeouts,
        };
        loops.push(tokio::spawn(accept.run(stop_rx.clone())));
    }
    // One handle for every accept loop: shutdown waits for all of them.
    let listener = tokio::spawn(async move {
        for accept in loops {
            let _ = accept.await;
        }
    });
    let handle = EmulatorHandle {
        core,
        metrics,
        stop,
        listener,
        timer,
    };
    Ok(RunningEmulator {
        base_url,
        local_addr,
        cert_path,
        token_url,
        plan_url,
        handle,
    })
}

/// Refuse front limits that cannot work, naming the option.
fn check_options(opts: &EmulatorOptions) -> Result<(), ServeError> {
    let timeouts = [
        ("head timeout", opts.head_timeout),
        ("body timeout", opts.body_timeout),
        ("keep-alive timeout", opts.keep_alive_timeout),
    ];
    if let Some((name, _)) = timeouts.iter().find(|(_, d)| d.is_zero()) {
        return Err(ServeError::Options(format!(
            "the {name} must be above zero"
        )));
    }
    if opts.max_inflight_body_bytes > Semaphore::MAX_PERMITS {
        return Err(ServeError::Options(format!(
            "the in-flight body budget ({} bytes) must be at most {} bytes",
            opts.max_inflight_body_bytes,
            Semaphore::MAX_PERMITS
        )));
    }
    Ok(())
}

/// Bind `addr` (port 0 picks a free port) and report the bound address.
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServeError> {
    let bind_err = |source| ServeError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
    let local = listener.local_addr().map_err(bind_err)?;
    Ok((listener, local))
}

/// Run the emulator until `shutdown` completes, then shut down gracefully. `on_ready` is
/// called once the socket accepts connections (to print the base URL, for instance). Returns
/// the core's final counters.
pub async fn serve_until(
    opts: EmulatorOptions,
    on_ready: impl FnOnce(&RunningEmulator),
    shutdown: impl Future<Output = ()>,
) -> Result<EmulatorStats, ServeError> {
    let running = start(opts).await?;
    on_ready(&running);
    shutdown.await;
    Ok(running.handle.shutdown().await)
}

/// The TLS acceptor for `mode`, and the certificate path to report for a self-signed one.
fn tls_acceptor(
    mode: &TlsMode,
) -> Result<(Option<tokio_rustls::TlsAcceptor>, Option<PathBuf>), TlsError> {
    match mode {
        TlsMode::Plain => Ok((None, None)),
        TlsMode::Files { cert, key } => Ok((Some(tls::server_config(cert, key)?.into()), None)),
        TlsMode::SelfSigned { dir } => {
            let files = tls::write_self_signed(dir)?;
            let config = tls::server_config(&files.cert_path, &files.key_path)?;
            Ok((Some(config.into()), Some(files.cert_path)))
        }
    }
}

/// `http(s)://host:port` for a bound address. An unspecified address (0.0.0.0 or ::) is shown
/// as the loopback address of its family, which is where a local client can reach it and what
/// the self-signed certificate names.
fn base_url(addr: SocketAddr, https: bool) -> String {
    let scheme = if https { "https" } else { "http" };
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("{scheme}://{}", SocketAddr::new(ip, addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: base URLs are usable by a local client: bracketed IPv6, loopback for wildcards.
    #[test]
    fn base_url_uses_scheme_and_reachable_host() {
        let v4: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(base_url(v4, false), "http://127.0.0.1:8080");
        let any: SocketAddr = "0.0.0.0:443".parse().unwrap();
        assert_eq!(base_url(any, true), "https://127.0.0.1:443");
        let v6: SocketAddr = "[::]:9000".parse().unwrap();
        assert_eq!(base_url(v6, false), "http://[::1]:9000");
    }
}
