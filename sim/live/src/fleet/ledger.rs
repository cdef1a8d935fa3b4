//! The job ledger: which jobs the run queued and which it saw end, so that at the end of a run
//! every queued job is accounted for — finished (any result; `Abandoned` when the run ended
//! under it), still queued or running on the target, or **lost**.
//!
//! The recorder task feeds every `JobQueued` and `JobFinished` into the ledger (before the
//! warm-up filter: a job queued during the warm-up can still vanish). At the end the jobs queued
//! but never seen to end are checked against the target's admin job list
//! (`GET …/jobrequests`): one listed as queued, assigned, running or canceling is still in
//! flight; one listed as finished ended on the target without an agent reporting it (its
//! completion answer was lost, or a cancel finished it); one not listed at all is lost.
//!
//! The ledger is bounded ([`MAX_TRACKED`] ids per set); past it the check is skipped and said so,
//! rather than reporting a wrong count. It never talks to the network itself.

use std::collections::{BTreeSet, HashSet};

use fleetsim_core::event::Event;
use fleetsim_core::proto::TaskAgentJobRequest;

/// Request ids remembered per set at most (about 40 MB for both sets at the bound).
pub(crate) const MAX_TRACKED: usize = 2_000_000;
/// Lost request ids kept as examples for the warning.
const MAX_EXAMPLES: usize = 5;

/// Queued and ended request ids of one run.
#[derive(Debug, Default)]
pub(crate) struct JobLedger {
    queued: HashSet<u64>,
    ended: HashSet<u64>,
    /// A set hit [`MAX_TRACKED`]: the end-of-run check cannot be trusted and is skipped.
    overflowed: bool,
}

/// Where the jobs a run queued are at its end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobAccount {
    /// Jobs queued by the run.
    pub queued: u64,
    /// Of those, jobs an agent (or the generator, for a cancel of a queued job) saw end.
    pub ended: u64,
    /// Not seen to end, but the target lists them as finished.
    pub finished_on_target: u64,
    /// Not seen to end, and the target still has them queued or running.
    pub in_flight: u64,
    /// Not seen to end and unknown to the target: vanished.
    pub lost: u64,
    /// A few lost request ids, for the operator.
    pub lost_examples: Vec<u64>,
}

impl JobLedger {
    /// Note a job event; every other event is ignored.
    pub(crate) fn record(&mut self, ev: &Event) {
        let (set, id) = match *ev {
            Event::JobQueued { request_id, .. } => (&mut self.queued, request_id),
            Event::JobFinished { request_id, .. } => (&mut self.ended, request_id),
            _ => return,
        };
        if set.len() < MAX_TRACKED || set.contains(&id) {
            set.insert(id);
        } else {
            self.overflowed = true;
        }
    }

    /// The ledger could not remember every id; `reconcile` would be wrong.
    pub(crate) fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Jobs queued but never seen to end, in id order.
    pub(crate) fn outstanding(&self) -> BTreeSet<u64> {
        self.queued
            .iter()
            .filter(|id| !self.ended.contains(id))
            .copied()
            .collect()
    }

    /// Account for every queued job against the target's job list (see the module docs).
    pub(crate) fn reconcile(&self, target_jobs: &[TaskAgentJobRequest]) -> JobAccount {
        let outstanding = self.outstanding();
        let mut account = JobAccount {
            queued: self.queued.len() as u64,
            ended: self.queued.len().saturating_sub(outstanding.len()) as u64,
            ..JobAccount::default()
        };
        let listed: std::collections::HashMap<u64, bool> = target_jobs
            .iter()
            .map(|j| (j.request_id, is_finished(j)))
            .collect();
        for id in outstanding {
            match listed.get(&id) {
                Some(true) => account.finished_on_target += 1,
                Some(false) => account.in_flight += 1,
                None => {
                    account.lost += 1;
                    if account.lost_examples.len() < MAX_EXAMPLES {
                        account.lost_examples.push(id);
                    }
                }
            }
        }
        account
    }
}

/// Whether the target lists a job as finished: a result, a finish time or the completed state.
fn is_finished(j: &TaskAgentJobRequest) -> bool {
    j.result.is_some() || j.finish_time.is_some() || j.state.as_deref() == Some("completed")
}

#[cfg(test)]
mod tests {
    use fleetsim_core::SimTime;
    use fleetsim_core::proto::TaskResult;

    use super::*;

    fn queued(id: u64) -> Event {
        Event::JobQueued {
            request_id: id,
            at: SimTime::ZERO,
        }
    }

    fn finished(id: u64, result: TaskResult) -> Event {
        Event::JobFinished {
            agent: 0,
            request_id: id,
            result,
            at: SimTime::from_secs(1),
        }
    }

    fn listed(id: u64, state: &str) -> TaskAgentJobRequest {
        TaskAgentJobRequest {
            request_id: id,
            state: Some(state.to_string()),
            result: (state == "completed").then_some(TaskResult::Succeeded),
            ..TaskAgentJobRequest::default()
        }
    }

    // Goal: every queued job lands in exactly one bucket, and a job that vanished from the
    // target without anyone seeing it end is counted lost (the check a vanished job fails).
    #[test]
    fn reconcile_finds_the_vanished_job() {
        let mut ledger = JobLedger::default();
        for id in 1..=6 {
            ledger.record(&queued(id));
        }
        // Job 1 succeeds, job 2 is abandoned at the end (ended, not lost); job 3's end reached
        // the recorder before its queue event did.
        ledger.record(&finished(1, TaskResult::Succeeded));
        ledger.record(&finished(2, TaskResult::Abandoned));
        ledger.record(&finished(3, TaskResult::Canceled));
        ledger.record(&finished(99, TaskResult::Succeeded));
        let target = [
            listed(4, "running"),
            listed(5, "completed"),
            listed(1, "completed"),
        ];
        let account = ledger.reconcile(&target);
        assert_eq!(
            account,
            JobAccount {
                queued: 6,
                ended: 3,
                finished_on_target: 1,
                in_flight: 1,
                lost: 1,
                lost_examples: vec![6],
            }
        );
        assert!(!ledger.overflowed());
    }

    // Goal: in a sharded run a job this shard queued but another shard's agent ran (so this
    // shard never saw it end) is finished on the target, not lost.
    #[test]
    fn a_job_another_shard_ran_is_not_lost() {
        let mut ledger = JobLedger::default();
        ledger.record(&queued(7));
        // This shard's agent ran a job another shard queued: an end without a queue here.
        ledger.record(&finished(8, TaskResult::Succeeded));
        let account = ledger.reconcile(&[listed(7, "completed"), listed(8, "completed")]);
        assert_eq!(
            (account.queued, account.lost, account.finished_on_target),
            (1, 0, 1)
        );
    }

    // Goal: a normal run — every job ended or still on the target — reports nothing lost.
    #[test]
    fn reconcile_of_a_clean_run_loses_nothing() {
        let mut ledger = JobLedger::default();
        for id in 1..=3 {
            ledger.record(&queued(id));
        }
        ledger.record(&finished(1, TaskResult::Failed));
        let account = ledger.reconcile(&[listed(2, "queued"), listed(3, "canceling")]);
        assert_eq!((account.lost, account.in_flight, account.ended), (0, 2, 1));
    }
}
