//! Whether a live run did the work it was for: a run in which no agent obtained a token, no
//! session opened, or no job completed while jobs were offered has measured nothing its user
//! owns, and must never pass — whatever its thresholds say (an unreachable token service once
//! gave 0 tokens, 0 sessions, 0 jobs and exit 0).
//!
//! Pure: it reads a finished report and names the first phase that never happened. It never
//! changes the report's numbers; the caller stores the verdict in `Report::incomplete` (JSON key
//! `incomplete`) and maps it to exit code 3.

use serde::{Deserialize, Serialize};

use crate::report::Report;
use fleetsim_core::ops::Operation;

/// The phase of the agents' work that never happened, in the order agents reach them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// No client-credentials token exchange succeeded.
    Token,
    /// No session was created.
    Session,
    /// Jobs were offered (queued by the fleet, or delivered to agents) and none completed.
    Job,
}

impl Phase {
    /// The stable name used in the report and the summary.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Token => "token",
            Phase::Session => "session",
            Phase::Job => "job",
        }
    }
}

/// Why a run is incomplete (`incomplete` in the JSON report).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incomplete {
    /// The first phase that never happened.
    pub phase: Phase,
    /// What was seen instead, for a person.
    pub reason: String,
}

/// Calls only an agent holding a session makes.
const SESSION_CALLS: [Operation; 6] = [
    Operation::PollMessage,
    Operation::PollEmpty,
    Operation::MessageAck,
    Operation::KeepAlive,
    Operation::SessionDelete,
    Operation::LockRenew,
];

/// The first phase of `report`'s run that never happened, if any. A run whose agents never got
/// as far as a token is incomplete at `token` even if registration is what failed: the reason
/// says what the agents did see.
///
/// Calls made during the warm-up are not in the report, so a later phase is taken as proof of
/// the earlier ones: a session needs a token, and a long poll, an ack or a picked-up job needs a
/// session.
pub fn check(report: &Report) -> Option<Incomplete> {
    let ok = |op: Operation| {
        report
            .operations
            .get(op.name())
            .map_or(0, |o| o.count.saturating_sub(o.errors))
    };
    let jobs = &report.jobs;
    let listened = jobs.started > 0 || SESSION_CALLS.iter().any(|&op| ok(op) > 0);
    let session = listened || ok(Operation::SessionCreate) > 0;
    let token = session || ok(Operation::TokenExchange) > 0;
    if !token {
        return Some(missing(
            report,
            Phase::Token,
            Operation::TokenExchange,
            "no agent obtained a token",
        ));
    }
    if !session {
        return Some(missing(
            report,
            Phase::Session,
            Operation::SessionCreate,
            "no agent opened a session",
        ));
    }
    let offered = jobs.queued.max(jobs.started);
    let completed = jobs.succeeded + jobs.failed + jobs.canceled;
    if offered > 0 && completed == 0 {
        return Some(Incomplete {
            phase: Phase::Job,
            reason: format!(
                "no job completed: {} queued by the fleet, {} picked up by agents, {} abandoned",
                jobs.queued, jobs.started, jobs.abandoned
            ),
        });
    }
    None
}

/// The verdict for a `phase` whose call `op` never succeeded, saying what the agents saw.
fn missing(report: &Report, phase: Phase, op: Operation, what: &str) -> Incomplete {
    let tail = match report.operations.get(op.name()).filter(|o| o.count > 0) {
        None => format!("{} was never called", op.name()),
        Some(o) => {
            let kinds: Vec<String> = o
                .errors_by_kind
                .iter()
                .map(|(k, n)| format!("{k} ×{n}"))
                .collect();
            format!(
                "{} {} calls failed ({})",
                o.count,
                op.name(),
                kinds.join(", ")
            )
        }
    };
    Incomplete {
        phase,
        reason: format!("{what}: {tail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{JobsReport, OperationReport};

    fn op(count: u64, errors: u64) -> OperationReport {
        OperationReport {
            count,
            errors,
            errors_by_kind: if errors > 0 {
                [("unauthorized".to_string(), errors)].into()
            } else {
                Default::default()
            },
            ..OperationReport::default()
        }
    }

    fn report(ops: &[(Operation, OperationReport)], jobs: JobsReport) -> Report {
        Report {
            operations: ops
                .iter()
                .map(|(o, r)| (o.name().to_string(), r.clone()))
                .collect(),
            jobs,
            ..Report::default()
        }
    }

    // Goal: the first phase that never happened is named — token, then session, then job —
    // with what was seen instead; a run that did its work, or was offered no jobs, passes.
    #[test]
    fn the_first_missing_phase_is_named() {
        let none = report(&[], JobsReport::default());
        let got = check(&none).unwrap();
        assert_eq!(got.phase, Phase::Token);
        assert!(got.reason.contains("never called"), "{}", got.reason);

        let refused = report(
            &[(Operation::TokenExchange, op(4, 4))],
            JobsReport::default(),
        );
        let got = check(&refused).unwrap();
        assert_eq!(got.phase, Phase::Token);
        assert!(got.reason.contains("unauthorized ×4"), "{}", got.reason);

        let tokens = (Operation::TokenExchange, op(4, 1));
        let no_session = report(std::slice::from_ref(&tokens), JobsReport::default());
        assert_eq!(check(&no_session).unwrap().phase, Phase::Session);

        let sessions = (Operation::SessionCreate, op(4, 0));
        let idle = report(&[tokens.clone(), sessions.clone()], JobsReport::default());
        assert_eq!(check(&idle), None, "no jobs offered: nothing was missed");

        let stuck = JobsReport {
            queued: 3,
            started: 1,
            abandoned: 1,
            ..JobsReport::default()
        };
        let got = check(&report(&[tokens.clone(), sessions.clone()], stuck)).unwrap();
        assert_eq!(got.phase, Phase::Job);
        assert_eq!(got.phase.name(), "job");

        let done = JobsReport {
            queued: 3,
            started: 1,
            failed: 1,
            ..JobsReport::default()
        };
        assert_eq!(check(&report(&[tokens, sessions], done)), None);
        let json = serde_json::to_string(&got).unwrap();
        assert!(json.starts_with(r#"{"phase":"job","reason":"#), "{json}");
    }

    // Goal: tokens and sessions made during the warm-up (absent from the report) are inferred
    // from the later phases, so a run that did its work is never called incomplete for them.
    #[test]
    fn later_phases_prove_the_earlier_ones_after_a_warm_up() {
        let polled = report(&[(Operation::PollMessage, op(3, 0))], JobsReport::default());
        assert_eq!(check(&polled), None);
        let worked = JobsReport {
            queued: 5,
            started: 5,
            succeeded: 4,
            ..JobsReport::default()
        };
        assert_eq!(check(&report(&[], worked)), None);
        let failed_polls = report(&[(Operation::PollMessage, op(3, 3))], JobsReport::default());
        assert_eq!(check(&failed_polls).unwrap().phase, Phase::Token);
    }
}
