//! The `fleetsim` binary: flags, subcommands, exit codes and progress. It holds no business
//! logic: every subcommand parses its arguments, calls one library entry point and maps the
//! outcome to an exit code.

mod args;
mod calibrate;
mod commands;
mod merge;
mod plan;
mod processes;

use std::process::ExitCode;

use clap::Parser;

/// Process exit codes (documented in `--help` and the README).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Thresholds or the regression gate failed.
    pub const GATE_FAILED: u8 = 1;
    /// Invalid usage or scenario.
    pub const USAGE: u8 = 2;
    /// The run could not be carried out (target unreachable, I/O error, aborted), or a live run
    /// did not do its work (no token, no session, or no job completed while jobs were offered).
    pub const RUN_FAILED: u8 = 3;
}

/// A failure with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: exit::USAGE,
            error: error.into(),
        }
    }
    pub fn run(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: exit::RUN_FAILED,
            error: error.into(),
        }
    }
}

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    commands::init_tracing(cli.verbose);
    match commands::dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("fleetsim: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}
