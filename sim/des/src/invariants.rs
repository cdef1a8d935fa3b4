//! Invariant checkers run after every virtual run: no job lost, never two leases on one job, no
//! secret in the server's stored logs. The checker watches the same telemetry the recorder gets
//! (plus what the driver knows about crashes) and, at the end, the server's own job listing and
//! counters.
//!
//! Each check is stated so a violation is certain, never a guess: "two leases" fires only when
//! a second agent picks up a job while the first holder's lease was provably still valid (the
//! first holder had neither finished nor stopped renewing for a whole lease). It never changes a
//! run; it only reports.

use std::collections::BTreeMap;
use std::time::Duration;

use fleetsim_core::SimTime;
use fleetsim_core::event::{Event, Outcome};
use fleetsim_core::ops::Operation;
use fleetsim_core::proto::TaskAgentJobRequest;

/// Violations are kept up to this many per kind (the counts stay exact).
const MAX_EXAMPLES: usize = 16;

/// Who holds a job, from the agents' point of view.
#[derive(Clone, Copy, Debug)]
struct Holder {
    agent: u32,
    /// A time at or before which the server last set `lockedUntil = t + lease` for this holder:
    /// the job's queue time at first, then each successful renewal's intended time.
    lease_from: SimTime,
}

/// Per-job bookkeeping.
#[derive(Clone, Copy, Debug)]
struct JobTrack {
    queued_at: SimTime,
    holder: Option<Holder>,
    finished: bool,
}

/// The result of the checks.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct InvariantReport {
    /// Jobs queued during the run.
    pub jobs_queued: u64,
    /// Jobs an agent reported finished.
    pub jobs_finished: u64,
    /// Jobs the server still tracks unfinished at the end (queued, assigned or running).
    pub jobs_in_flight: u64,
    /// Jobs neither finished nor known to the server: must be 0.
    pub jobs_lost: u64,
    /// Pickups while another agent's lease was still valid: must be 0.
    pub double_leases: u64,
    /// Secret occurrences the server found in stored logs and feeds.
    pub leaked_secrets: u64,
    /// Whether leaked secrets count as a violation (the agents mask secrets).
    pub masking_on: bool,
    /// A few examples of each violation, for people.
    pub examples: Vec<String>,
}

impl InvariantReport {
    /// True when every invariant holds.
    pub fn ok(&self) -> bool {
        self.jobs_lost == 0
            && self.double_leases == 0
            && !(self.masking_on && self.leaked_secrets > 0)
    }

    fn example(&mut self, text: String) {
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(text);
        }
    }
}

/// Watches telemetry during a run; [`InvariantChecker::finish`] produces the report.
#[derive(Debug)]
pub struct InvariantChecker {
    lease: Duration,
    jobs: BTreeMap<u64, JobTrack>,
    /// The job each agent holds (agent → request id).
    holding: BTreeMap<u32, u64>,
    report: InvariantReport,
}

impl InvariantChecker {
    /// `lease` is the server's lease duration.
    pub fn new(lease: Duration, masking_on: bool) -> Self {
        let report = InvariantReport {
            masking_on,
            ..InvariantReport::default()
        };
        InvariantChecker {
            lease,
            jobs: BTreeMap::new(),
            holding: BTreeMap::new(),
            report,
        }
    }

    /// Feed one telemetry event.
    pub fn observe(&mut self, ev: &Event) {
        match *ev {
            Event::JobQueued { request_id, at } => {
                self.report.jobs_queued += 1;
                self.jobs.insert(
                    request_id,
                    JobTrack {
                        queued_at: at,
                        holder: None,
                        finished: false,
                    },
                );
            }
            Event::JobPickedUp {
                agent,
                request_id,
                at,
            } => self.picked_up(agent, request_id, at),
            Event::JobFinished {
                agent, request_id, ..
            } => {
                if let Some(j) = self.jobs.get_mut(&request_id) {
                    if !j.finished {
                        self.report.jobs_finished += 1;
                    }
                    j.finished = true;
                    if j.holder.is_some_and(|h| h.agent == agent) {
                        j.holder = None;
                    }
                }
                if self.holding.get(&agent) == Some(&request_id) {
                    self.holding.remove(&agent);
                }
            }
            Event::Op {
                agent,
                op: Operation::LockRenew,
                intended,
                outcome: Outcome::Ok,
                ..
            } => {
                if let Some(rid) = self.holding.get(&agent)
                    && let Some(j) = self.jobs.get_mut(rid)
                    && let Some(h) = j.holder.as_mut()
                    && h.agent == agent
                {
                    h.lease_from = h.lease_from.max(intended);
                }
            }
            _ => {}
        }
    }

    /// The driver crashed `agent`: it holds nothing any more (its lease still runs out on the
    /// server, which the double-lease check keeps counting).
    pub fn agent_crashed(&mut self, agent: u32) {
        self.holding.remove(&agent);
    }

    fn picked_up(&mut self, agent: u32, request_id: u64, at: SimTime) {
        let lease = self.lease;
        let Some(j) = self.jobs.get_mut(&request_id) else {
            return;
        };
        if let Some(h) = j.holder
            && h.agent != agent
            && !j.finished
            && at < h.lease_from + lease
        {
            self.report.double_leases += 1;
            let text = format!(
                "job {request_id}: agent {agent} picked it up at {at} while agent {}'s lease \
                 ran until at least {}",
                h.agent,
                h.lease_from + lease
            );
            self.report.example(text);
        }
        // The new holder's lease began at assignment: no earlier than the queue time, and for a
        // requeued job no earlier than the end of the previous holder's lease.
        let lease_from = j
            .holder
            .map_or(j.queued_at, |h| j.queued_at.max(h.lease_from + lease));
        j.holder = Some(Holder { agent, lease_from });
        self.holding.insert(agent, request_id);
    }

    /// Close the books with the server's job listing and its leak counter.
    pub fn finish(
        mut self,
        server_jobs: &[TaskAgentJobRequest],
        leaked_secrets: u64,
    ) -> InvariantReport {
        // Unfinished on the server: queued, assigned or running. Finished on the server: the
        // agent's completion answer may have been lost, but the job is not.
        let on_server: BTreeMap<u64, bool> = server_jobs
            .iter()
            .map(|r| (r.request_id, r.result.is_some() || r.finish_time.is_some()))
            .collect();
        let mut lost = Vec::new();
        for (&rid, j) in &self.jobs {
            match (j.finished, on_server.get(&rid)) {
                (true, _) | (false, Some(true)) => {}
                (false, Some(false)) => self.report.jobs_in_flight += 1,
                (false, None) => lost.push(rid),
            }
        }
        self.report.jobs_lost = lost.len() as u64;
        for rid in lost.iter().take(MAX_EXAMPLES) {
            self.report.example(format!(
                "job {rid}: queued, never finished, unknown to the server"
            ));
        }
        self.report.leaked_secrets = leaked_secrets;
        if self.report.masking_on && leaked_secrets > 0 {
            self.report.example(format!(
                "{leaked_secrets} secret occurrences in stored logs"
            ));
        }
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetsim_core::proto::TaskResult;

    const LEASE: Duration = Duration::from_secs(600);

    fn t(s: u64) -> SimTime {
        SimTime::from_secs(s)
    }

    fn renew(agent: u32, at: SimTime) -> Event {
        Event::Op {
            agent,
            op: Operation::LockRenew,
            intended: at,
            done: at,
            outcome: Outcome::Ok,
        }
    }

    fn listed(rid: u64, finished: bool) -> TaskAgentJobRequest {
        TaskAgentJobRequest {
            request_id: rid,
            result: finished.then_some(TaskResult::Succeeded),
            ..Default::default()
        }
    }

    #[test]
    fn second_pickup_inside_a_renewed_lease_is_a_double_lease() {
        // Goal: agent 2 picking up job 1 while agent 1 renewed within the lease is flagged;
        // after the lease lapsed (no renewal for a whole lease) it is a legitimate requeue.
        let mut c = InvariantChecker::new(LEASE, true);
        c.observe(&Event::JobQueued {
            request_id: 1,
            at: t(0),
        });
        c.observe(&Event::JobPickedUp {
            agent: 1,
            request_id: 1,
            at: t(1),
        });
        c.observe(&renew(1, t(500)));
        c.observe(&Event::JobPickedUp {
            agent: 2,
            request_id: 1,
            at: t(900),
        });
        let r = c.finish(&[listed(1, false)], 0);
        assert_eq!(r.double_leases, 1, "{r:?}");
        assert!(!r.ok());

        let mut c = InvariantChecker::new(LEASE, true);
        c.observe(&Event::JobQueued {
            request_id: 1,
            at: t(0),
        });
        c.observe(&Event::JobPickedUp {
            agent: 1,
            request_id: 1,
            at: t(1),
        });
        c.agent_crashed(1);
        c.observe(&Event::JobPickedUp {
            agent: 2,
            request_id: 1,
            at: t(700),
        });
        c.observe(&Event::JobFinished {
            agent: 2,
            request_id: 1,
            result: TaskResult::Succeeded,
            at: t(800),
        });
        let r = c.finish(&[], 0);
        assert_eq!(
            (r.double_leases, r.jobs_lost, r.jobs_finished),
            (0, 0, 1),
            "{r:?}"
        );
        assert!(r.ok());
    }

    #[test]
    fn a_job_neither_finished_nor_known_to_the_server_is_lost() {
        // Goal: jobs still open on the server count as in flight; finished-on-server jobs are
        // fine; a job the server forgot is lost.
        let mut c = InvariantChecker::new(LEASE, true);
        for rid in 1..=3 {
            c.observe(&Event::JobQueued {
                request_id: rid,
                at: t(0),
            });
        }
        let r = c.finish(&[listed(1, false), listed(2, true)], 0);
        assert_eq!((r.jobs_in_flight, r.jobs_lost), (1, 1), "{r:?}");
        assert!(r.examples[0].contains("job 3"));
    }

    #[test]
    fn leaks_are_violations_only_when_masking_is_on() {
        // Goal: with masking off, leaks are the expected outcome (the detection test), not a
        // failure; with masking on, any leak fails the run.
        assert!(!InvariantChecker::new(LEASE, true).finish(&[], 3).ok());
        assert!(InvariantChecker::new(LEASE, false).finish(&[], 3).ok());
    }
}
