//! Telemetry as typed events. The agent (and the drivers, for transport failures) emit these;
//! the one recorder in `fleetsim-metrics` turns them into histograms, counters and reports.
//! Latency is always `done - intended`: the time an operation *should* have started, so a slow
//! driver or server cannot hide its own delay (no coordinated omission).

use crate::SimTime;
use crate::api::ErrorKind;
use crate::faults::FaultKind;
use crate::ops::{AgentState, Operation};
use crate::proto::TaskResult;

/// How a call ended, as a bounded label set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    /// A typed protocol error from the server.
    Api(ErrorKind),
    /// A non-2xx status without a recognisable error body.
    Status(u16),
    /// The connection failed (refused, reset, TLS, proxy).
    Transport(TransportError),
    /// No answer within the client timeout.
    Timeout,
    /// A 2xx whose body could not be understood.
    Protocol,
}

impl Outcome {
    pub fn is_ok(self) -> bool {
        matches!(self, Outcome::Ok)
    }
    /// Bounded label for metrics and reports.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Api(k) => k.label(),
            Outcome::Status(s) if s >= 500 => "http_5xx",
            Outcome::Status(_) => "http_4xx",
            Outcome::Transport(t) => t.label(),
            Outcome::Timeout => "timeout",
            Outcome::Protocol => "protocol",
        }
    }
}

/// Transport failures a driver reports back to an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportError {
    Connect,
    Reset,
    Tls,
    Proxy,
    /// The virtual network dropped the message (virtual time only).
    Lost,
}

impl TransportError {
    pub fn label(self) -> &'static str {
        match self {
            TransportError::Connect => "connect",
            TransportError::Reset => "reset",
            TransportError::Tls => "tls",
            TransportError::Proxy => "proxy",
            TransportError::Lost => "lost",
        }
    }
}

/// Crypto operations counted for the "encryption throughput" report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CryptoOp {
    KeyGen,
    Rs256Sign,
    Rs256Verify,
    OaepWrap,
    OaepUnwrap,
    AesEncrypt,
    AesDecrypt,
}

impl CryptoOp {
    pub const ALL: &'static [CryptoOp] = &[
        CryptoOp::KeyGen,
        CryptoOp::Rs256Sign,
        CryptoOp::Rs256Verify,
        CryptoOp::OaepWrap,
        CryptoOp::OaepUnwrap,
        CryptoOp::AesEncrypt,
        CryptoOp::AesDecrypt,
    ];
    pub fn name(self) -> &'static str {
        match self {
            CryptoOp::KeyGen => "keygen",
            CryptoOp::Rs256Sign => "rs256_sign",
            CryptoOp::Rs256Verify => "rs256_verify",
            CryptoOp::OaepWrap => "oaep_wrap",
            CryptoOp::OaepUnwrap => "oaep_unwrap",
            CryptoOp::AesEncrypt => "aes_encrypt",
            CryptoOp::AesDecrypt => "aes_decrypt",
        }
    }
}

/// Which side did the crypto.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Agents,
    Emulator,
}

/// One telemetry event.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A protocol call finished.
    Op {
        agent: u32,
        op: Operation,
        intended: SimTime,
        done: SimTime,
        outcome: Outcome,
    },
    /// The job generator queued a job (at its intended arrival time).
    JobQueued { request_id: u64, at: SimTime },
    /// An agent holds the job message (decrypted): the end of "job pickup".
    JobPickedUp {
        agent: u32,
        request_id: u64,
        at: SimTime,
    },
    /// An agent finished a job.
    JobFinished {
        agent: u32,
        request_id: u64,
        result: TaskResult,
        at: SimTime,
    },
    /// An agent changed state.
    AgentState {
        agent: u32,
        from: AgentState,
        to: AgentState,
        at: SimTime,
    },
    /// An agent rotated its job token (extension).
    TokenRotated { agent: u32, at: SimTime },
    /// Secret occurrences an agent masked before sending a log line or feed batch.
    SecretsMasked { agent: u32, count: u32 },
    /// Crypto work done; `nanos` is measured by a driver-supplied clock, 0 when modelled.
    Crypto {
        side: Side,
        op: CryptoOp,
        count: u32,
        bytes: u64,
        nanos: u64,
    },
    /// The driver applied a scheduled fault: from `start` to `end` (`None`: instant, or a crash
    /// with no recovery), hitting `agents` of this process's agents (0 for a server fault).
    /// Drivers send it once per fault, when its effect is over (or at once if it never ends).
    Fault {
        kind: FaultKind,
        start: SimTime,
        end: Option<SimTime>,
        agents: u32,
    },
}
