//! The fault model and the fault schedule both drivers apply: which fault (`[[faults]]` in a
//! scenario file) starts and ends when, and which agents it hits. The virtual-time driver
//! (`fleetsim-des`) and the live driver (`fleetsim-live`, `fleet/faults.rs`) read one schedule,
//! so a scenario hits the same agents at the same run times in `simulate` and in `run`.
//!
//! Selection is a pure, seeded function of the agent index (no per-agent storage, no draws from
//! other streams), so adding a fault never shifts any other random draw, the same seed hits the
//! same agents, and a shard of a live run can tell which of its agents a fault hits without
//! asking anyone.
//!
//! This module decides *who* and *when* — and, for a token-expiry storm the emulator applies,
//! which registered agent a selection means (`Selection::contains_name`). What a fault does to
//! sockets, processes and the network is the driver's business.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::SimTime;
use crate::rng::{StreamKind, mix64, stream_seed};

/// Kinds of fault (the one list: scenarios, both drivers, the report).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Agents die without a goodbye (mid-job if busy); with a duration they come back after it
    /// (re-registering with `--replace`), else never.
    AgentCrash,
    /// The agents cannot reach the server for the duration: connections drop, connects fail.
    Partition,
    /// The server stops processing for the duration: requests wait, nothing is answered.
    ServerStall,
    /// The server restarts: parked polls and open connections drop, connections are refused for
    /// the duration (if given); what it keeps is what it stored durably.
    ServerRestart,
    /// The agents' listener tokens expire at once (they mint new ones on the next 401).
    TokenExpiryStorm,
}

impl FaultKind {
    /// Every kind, in declaration order.
    pub const ALL: [FaultKind; 5] = [
        FaultKind::AgentCrash,
        FaultKind::Partition,
        FaultKind::ServerStall,
        FaultKind::ServerRestart,
        FaultKind::TokenExpiryStorm,
    ];

    /// The name scenario files and reports use.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::AgentCrash => "agent_crash",
            FaultKind::Partition => "partition",
            FaultKind::ServerStall => "server_stall",
            FaultKind::ServerRestart => "server_restart",
            FaultKind::TokenExpiryStorm => "token_expiry_storm",
        }
    }

    /// The fault acts on the server (stall, restart), not on chosen agents.
    pub fn server_side(self) -> bool {
        matches!(self, FaultKind::ServerStall | FaultKind::ServerRestart)
    }
}

/// Which agents a fault hits, as a scenario writes it.
#[derive(Clone, Debug, PartialEq)]
pub enum AgentSelection {
    /// Every agent (and the server side, for server faults).
    All,
    /// This fraction of agents (0 < f < 1), chosen by a hash salted from the run's seed.
    Fraction(f64),
    /// These agent indices (each < fleet.agents), sorted and unique.
    Agents(Vec<u32>),
}

/// One fault as the scenario gives it.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// What goes wrong.
    pub kind: FaultKind,
    /// When (run time).
    pub at: Duration,
    /// How long it lasts; `None` for instant faults (a restart, a storm) or a crash with no
    /// recovery.
    pub duration: Option<Duration>,
    /// Which agents it hits (`All` for server-side faults).
    pub agents: AgentSelection,
}

/// Which agents a scheduled fault hits, resolved for the run's seed. Also the body of the
/// emulator's token-expiry admin route, so the emulator and the fleet agree on who is hit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Selection {
    All,
    /// Each agent independently with probability `fraction`, by a hash salted per fault.
    Fraction {
        fraction: f64,
        salt: u64,
    },
    /// These agent indices (sorted, unique).
    Agents(Vec<u32>),
}

impl Selection {
    /// Does this selection include `agent`?
    pub fn contains(&self, agent: u32) -> bool {
        match self {
            Selection::All => true,
            Selection::Fraction { fraction, salt } => {
                let h = mix64(salt ^ mix64(u64::from(agent)));
                // Compare in the top 53 bits so 1.0 selects everyone.
                ((h >> 11) as f64) < fraction * (1u64 << 53) as f64
            }
            Selection::Agents(list) => list.binary_search(&agent).is_ok(),
        }
    }

    /// Does this selection include the agent registered as `name`? Fleet agents are named
    /// `{prefix}{index}`; a name of another shape (an agent the fleet did not start) is never
    /// selected.
    pub fn contains_name(&self, prefix: &str, name: &str) -> bool {
        let index = name
            .strip_prefix(prefix)
            .and_then(|i| i.parse::<u32>().ok());
        index.is_some_and(|a| self.contains(a))
    }
}

/// One fault, resolved to run times.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduledFault {
    /// What goes wrong.
    pub kind: FaultKind,
    /// When it starts.
    pub start: SimTime,
    /// `None`: instant, or permanent for a crash.
    pub end: Option<SimTime>,
    /// Which agents it hits.
    pub select: Selection,
}

impl ScheduledFault {
    /// Is `agent` hit by this fault at run time `now`? (A permanent crash lasts forever; an
    /// instant fault hits nobody "during" it.)
    pub fn holds(&self, agent: u32, now: SimTime) -> bool {
        let ended = match self.end {
            Some(end) => now >= end,
            None => self.kind != FaultKind::AgentCrash,
        };
        now >= self.start && !ended && self.select.contains(agent)
    }
}

/// The run's faults in the order given (scenarios sort them by start time). Fault `i`'s
/// fraction salt is the run seed's `Faults` stream `i`.
pub fn schedule(seed: u64, faults: &[Fault]) -> Vec<ScheduledFault> {
    faults
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let start = SimTime::ZERO + f.at;
            ScheduledFault {
                kind: f.kind,
                start,
                end: f.duration.map(|d| start + d),
                select: match &f.agents {
                    AgentSelection::All => Selection::All,
                    AgentSelection::Fraction(fraction) => Selection::Fraction {
                        fraction: *fraction,
                        salt: stream_seed(seed, StreamKind::Faults, i as u64),
                    },
                    AgentSelection::Agents(list) => Selection::Agents(list.clone()),
                },
            }
        })
        .collect()
}

/// The windows during which `agent` is down or cut off, from the schedule: `(kind, start,
/// end)` for each crash or partition that hits it (`end` = `None`: never comes back).
pub fn agent_windows(
    schedule: &[ScheduledFault],
    agent: u32,
) -> Vec<(FaultKind, SimTime, Option<SimTime>)> {
    schedule
        .iter()
        .filter(|f| matches!(f.kind, FaultKind::AgentCrash | FaultKind::Partition))
        .filter(|f| f.select.contains(agent))
        .map(|f| (f.kind, f.start, f.end))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fraction_selects_about_that_share_and_is_stable() {
        // Goal: a 25% selection hits ~25% of agents, the same ones every time; a different salt
        // hits a different set; 0 and 1 select nobody and everybody.
        let sel = Selection::Fraction {
            fraction: 0.25,
            salt: 42,
        };
        let hit: Vec<u32> = (0..40_000).filter(|&a| sel.contains(a)).collect();
        assert!((9_600..10_400).contains(&hit.len()), "{}", hit.len());
        assert!(hit.iter().all(|&a| sel.contains(a)));
        let other = Selection::Fraction {
            fraction: 0.25,
            salt: 43,
        };
        assert_ne!(
            hit,
            (0..40_000)
                .filter(|&a| other.contains(a))
                .collect::<Vec<_>>()
        );
        let none = Selection::Fraction {
            fraction: 0.0,
            salt: 1,
        };
        let all = Selection::Fraction {
            fraction: 1.0,
            salt: 1,
        };
        assert!((0..10_000).all(|a| !none.contains(a) && all.contains(a)));
        let list = Selection::Agents(vec![3, 7]);
        assert!(list.contains(7) && !list.contains(4));
    }

    #[test]
    fn names_select_by_their_index_and_strangers_never() {
        // Goal: the emulator resolves a selection by agent name exactly as the fleet does by
        // index; names the fleet did not give are not hit, even by `All`.
        let sel = Selection::Agents(vec![2, 10]);
        assert!(sel.contains_name("fleetsim-agent-", "fleetsim-agent-10"));
        assert!(!sel.contains_name("fleetsim-agent-", "fleetsim-agent-3"));
        assert!(!Selection::All.contains_name("fleetsim-agent-", "build-box-1"));
        assert!(!Selection::All.contains_name("fleetsim-agent-", "fleetsim-agent-x"));
    }

    #[test]
    fn schedule_salts_each_fault_and_windows_follow_the_selection() {
        // Goal: both drivers get the same schedule from (seed, faults): two equal fraction
        // faults get different salts, the same seed gives the same salts, and an agent's
        // windows list exactly the crashes and partitions that select it.
        let fault = |kind, at_s, agents| Fault {
            kind,
            at: Duration::from_secs(at_s),
            duration: Some(Duration::from_secs(5)),
            agents,
        };
        let faults = vec![
            fault(FaultKind::AgentCrash, 1, AgentSelection::Fraction(0.5)),
            fault(FaultKind::Partition, 2, AgentSelection::Fraction(0.5)),
            fault(FaultKind::ServerStall, 3, AgentSelection::All),
            fault(FaultKind::Partition, 4, AgentSelection::Agents(vec![1])),
        ];
        let a = schedule(9, &faults);
        assert_eq!(a, schedule(9, &faults));
        assert_ne!(a[0].select, a[1].select);
        assert_eq!(a[3].end, Some(SimTime::ZERO + Duration::from_secs(9)));
        let w = agent_windows(&a, 1);
        assert!(w.iter().all(|(k, ..)| *k != FaultKind::ServerStall));
        assert!(w.iter().any(|(_, start, _)| *start == a[3].start));
        assert!(
            agent_windows(&a, 0)
                .iter()
                .all(|(_, s, _)| *s != a[3].start)
        );
        assert!(a[3].holds(1, SimTime::ZERO + Duration::from_secs(5)));
        assert!(!a[3].holds(1, SimTime::ZERO + Duration::from_secs(9)));
    }
}
