//! fleetsim-core: the sans-IO heart of fleetsim.
//!
//! It holds the Azure Pipelines agent protocol as data (`proto`, `api`, `wire`), the one codec
//! between typed messages and HTTP-shaped requests (`codec`), the crypto the protocol needs
//! (`crypto`), the secret masker (`mask`), and the three state machines both drivers share: the
//! emulated server (`server`), the virtual agent (`agent`) and the workload that queues jobs
//! (`workload`). Telemetry leaves as typed `event::Event`s.
//!
//! Architecture Invariant: this crate does no IO, reads no clock and uses no global RNG. Time is
//! an argument (`SimTime`), randomness comes from seeded streams (`rng`). It knows nothing of
//! sockets, tokio, hyper or Prometheus; `clippy.toml` forbids the obvious escape hatches.

pub mod agent;
pub mod api;
pub mod codec;
pub mod crypto;
pub mod dist;
pub mod event;
pub mod faults;
pub mod job;
pub mod mask;
pub mod ops;
pub mod proto;
pub mod rng;
pub mod server;
pub mod shard;
pub mod time;
pub mod wire;
pub mod workload;

pub use time::SimTime;
