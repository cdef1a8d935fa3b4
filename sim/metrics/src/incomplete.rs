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

/// The first phase of `report`'s run that never happened, if any. A run whose agents never got
/// as far as a token is incomplete at `token` even if registration is what failed: the reason
/// says what the agents did see.
pub fn check(report: &Report) -> Option<Incomplete> {
    let succeeded = |op: Operation| {
        report
            .operations
            .get(op.name())
            .map_or((0, 0, String::new()), |o| {
                let kinds: Vec<String> = o
                    .errors_by_kind
                    .iter()
                    .map(|(k, n)| format!("{k} ×{n}"))
                    .collect();
                (o.count.saturating_sub(o.errors), o.count, kinds.join(", "))
            })
    };
    let phases = [
        (
            Phase::Token,
            Operation::TokenExchange,
            "no agent obtained a token",
        ),
        (
            Phase::Session,
            Operation::SessionCreate,
            "no agent opened a session",
        ),
    ];
    for (phase, op, what) in phases {
        let (ok, count, kinds) = succeeded(op);
        if ok == 0 {
            let tail = if count == 0 {
                format!("{} was never called", op.name())
            } else {
                format!("{count} {} calls failed ({kinds})", op.name())
            };
            return Some(Incomplete {
                phase,
                reason: format!("{what}: {tail}"),
            });
        }
    }
    let jobs = &report.jobs;
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
}
