//! fleetsim-des: the virtual-time driver (`fleetsim simulate`, `fleetsim plan`).
//!
//! It runs the same sans-IO agent and server state machines as live mode, but in virtual time:
//! its own single-threaded next-event loop ([`engine`]) over a hierarchical timing wheel
//! ([`queue`]), a virtual network ([`network`]) and a server capacity model ([`station`]:
//! worker pools with per-operation service times, pure delays for long-poll holds, optional
//! bounded queues that shed with 429/503), faults (the schedule is `fleetsim_core::faults`) and invariant checks
//! ([`invariants`]). [`simulate`] turns a `Scenario` into the same `Report` live mode writes,
//! plus engine figures and a trace hash; [`plan`] sweeps a scenario over one key and searches
//! for the largest value that meets its thresholds; [`theory`] holds the queueing formulas the
//! validation tests hold it to.
//!
//! Architecture Invariant: no tokio, no wall clock inside a run (wall time is read only to
//! report `engine.wall_s`), no protocol decisions — the driver moves typed messages and time.
//! Given a seed and a commit, a run's `trace_hash` and numbers are identical.

pub mod driver;
pub mod engine;
pub mod invariants;
pub mod network;
pub mod plan;
pub mod queue;
pub mod setup;
pub mod station;
pub mod stats;
pub mod theory;

pub use driver::{
    DesError, EventTap, SimOptions, SimOutcome, StationSummary, simulate, simulate_observed,
};
pub use stats::{BatchMeans, LittleStats};
