//! fleetsim-metrics: the one recorder of fleetsim's telemetry and everything that reads it.
//!
//! `names` names every metric; `Recorder` turns `fleetsim_core::event::Event`s into HDR
//! histograms (3 significant digits, microseconds, latency from the intended start) and
//! counters; `Report` is the versioned JSON result with embedded histograms so shard reports
//! merge exactly (`merge`: `Report::merge_shards` checks a shard set and joins it);
//! `thresholds` parses and checks `"job_pickup.p99" = "< 2s"`; `summary`, `html`, `junit` and
//! `compare` render a report for people, CI and regression gates; `timeline` keeps the
//! bounded per-interval figures the HTML charts draw (`charts`, inlined uPlot), and
//! `compare_html` draws a baseline beside the current run.
//!
//! Architecture Invariant: this crate depends on fleetsim-core only, does no IO beyond writing
//! to a caller-supplied `io::Write`, reads no clock, and its labels come only from bounded
//! enums.

#![warn(missing_docs)]

pub(crate) mod charts;
pub mod compare;
pub mod compare_html;
pub mod curve;
pub mod html;
pub mod incomplete;
pub mod junit;
pub mod merge;
pub mod names;
pub mod recorder;
pub mod report;
pub mod summary;
pub mod thresholds;
pub mod timeline;

pub use compare::{Comparison, compare, parse_max_regression};
pub use compare_html::render_compare_html;
pub use html::render_html;
pub use junit::render_junit;
pub use merge::{MergeError, MergeField};
pub use recorder::Recorder;
pub use report::{EngineStats, Mode, Report, ReportError, RunMeta};
pub use summary::render_summary;
pub use thresholds::{Threshold, ThresholdResult, known_metrics};
