//! fleetsim-live: the real-time driver. It runs virtual agents over real HTTP(S) with tokio and
//! hyper (`client`, `fleet`), and serves the emulator's HTTP front over the sans-IO server core
//! (`server`). TLS, proxies, the on-disk key cache and the Prometheus endpoint live here too, and
//! `calibrate`, which measures a live target for the virtual-time capacity model.
//!
//! Architecture Invariant: this crate makes no protocol decisions. It moves bytes and time
//! between sockets and the state machines in `fleetsim-core`, through `fleetsim_core::codec`.

pub mod calibrate;
pub mod client;
pub mod cryptobench;
pub mod fleet;
mod http1;
pub mod keycache;
pub mod prom;
pub mod proxy;
pub mod server;
pub mod tls;
