//! The fault schedule of a virtual run, from the scenario's `[[faults]]`: when each fault starts
//! and ends and which agents it hits. Selection is a pure, seeded function of the agent index
//! (no per-agent storage, no draws from other streams), so adding a fault never shifts any other
//! random draw, and the same seed hits the same agents.
//!
//! This module decides *who* and *when*; the driver decides what a fault does to the agents,
//! the network and the server.

use fleetsim_core::SimTime;
use fleetsim_core::rng::{StreamKind, mix64, stream_seed};
use fleetsim_scenario as sc;

/// Which agents a fault hits.
#[derive(Clone, Debug, PartialEq)]
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
}

/// Fault kinds the driver implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Selected agents die without a goodbye (mid-job if busy); they come back after the
    /// duration (re-registering with `--replace`), or never.
    AgentCrash,
    /// Selected agents cannot reach the server for the duration.
    Partition,
    /// The server stops processing for the duration: requests queue at the stations, timers and
    /// job intake wait.
    ServerStall,
    /// The server restarts: parked polls and queued requests are dropped with connection
    /// resets, and it refuses connections for the duration.
    ServerRestart,
    /// The selected agents' listener tokens expire at once (they re-mint on the next 401).
    TokenExpiryStorm,
}

/// One fault, resolved to virtual times.
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

/// The run's faults in scenario order (sorted by start time).
pub fn schedule(s: &sc::Scenario) -> Vec<ScheduledFault> {
    s.faults
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let start = SimTime::ZERO + f.at;
            ScheduledFault {
                kind: match f.kind {
                    sc::FaultKind::AgentCrash => FaultKind::AgentCrash,
                    sc::FaultKind::Partition => FaultKind::Partition,
                    sc::FaultKind::ServerStall => FaultKind::ServerStall,
                    sc::FaultKind::ServerRestart => FaultKind::ServerRestart,
                    sc::FaultKind::TokenExpiryStorm => FaultKind::TokenExpiryStorm,
                },
                start,
                end: f.duration.map(|d| start + d),
                select: match &f.agents {
                    sc::AgentSelection::All => Selection::All,
                    sc::AgentSelection::Fraction(fraction) => Selection::Fraction {
                        fraction: *fraction,
                        salt: stream_seed(s.run.seed, StreamKind::Faults, i as u64),
                    },
                    sc::AgentSelection::Agents(list) => Selection::Agents(list.clone()),
                },
            }
        })
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
}
