//! Shards: one run split over N processes or machines (`fleetsim run --shard I/N`).
//!
//! The split is a pure function of the global indices, so every shard computes its own slice
//! with no coordination and the union of the shards is exactly the unsharded run:
//!
//! - **Agents** are interleaved: shard I runs agents I, I+N, I+2N, … Each agent keeps its
//!   global index, hence its name, key and RNG stream (`rng::stream(seed, Agent, index)`), and
//!   its ramp-up start, so the shards ramp up together and the fleet is the one a single
//!   process would run. Interleaving (not blocks) keeps every shard's load the same shape over
//!   the ramp.
//! - **Jobs** of the workload are split the same way by their arrival number: every shard draws
//!   the whole arrival sequence and every job's parameters from the run's seed (cheap: a few
//!   draws per job), and queues arrival k only when k mod N = I. The union of the shards'
//!   arrivals is therefore the single-process arrival sequence — bursts stay bursts, constant
//!   spacing stays constant — rather than N independent streams at rate/N, which would be the
//!   same only for a Poisson process and would change the trace with N.
//!
//! Indices are 0-based, as a Kubernetes Indexed Job's completion index is.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The most shards a run may be split into (bounds the `shard` metric label's values).
pub const MAX_SHARDS: u32 = 1_024;

/// Shard `index` of `count` (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Shard {
    /// This shard's number, `0..count`.
    pub index: u32,
    /// How many shards the run has.
    pub count: u32,
}

impl Shard {
    /// The whole run: shard 0 of 1.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` of `count`, or why not.
    pub fn new(index: u32, count: u32) -> Result<Shard, ShardError> {
        if count == 0 || count > MAX_SHARDS {
            return Err(ShardError::Count(count));
        }
        if index >= count {
            return Err(ShardError::Index { index, count });
        }
        Ok(Shard { index, count })
    }

    /// This is the whole run (1 shard).
    pub fn is_whole(self) -> bool {
        self.count == 1
    }

    /// Whether this shard runs the agent with global index `agent`.
    pub fn has_agent(self, agent: u32) -> bool {
        agent % self.count == self.index
    }

    /// The global indices of this shard's agents in a fleet of `agents`, ascending.
    pub fn agents(self, agents: u32) -> impl Iterator<Item = u32> {
        (self.index..agents).step_by(self.count as usize)
    }

    /// How many agents of a fleet of `agents` this shard runs.
    pub fn agent_count(self, agents: u32) -> u32 {
        agents.saturating_sub(self.index).div_ceil(self.count)
    }

    /// Whether this shard queues arrival number `seq` (0-based) of the workload.
    pub fn has_job(self, seq: u64) -> bool {
        seq % u64::from(self.count) == u64::from(self.index)
    }

    /// How many of the `n` arrivals numbered from `first` this shard queues (those for which
    /// [`Shard::has_job`] holds), counted without visiting them.
    pub fn jobs_among(self, first: u64, n: u64) -> u64 {
        // Arrivals numbered below `x` that are this shard's.
        let below = |x: u128| {
            let (count, index) = (u128::from(self.count), u128::from(self.index));
            x / count + u128::from(x % count > index)
        };
        let first = u128::from(first);
        let mine = below(first + u128::from(n)) - below(first);
        u64::try_from(mine).unwrap_or(u64::MAX)
    }
}

impl Default for Shard {
    fn default() -> Self {
        Shard::WHOLE
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Why a shard was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// Not `I/N`.
    #[error("expected I/N with whole numbers, e.g. 0/3 (shard 0 of 3), found {0:?}")]
    Syntax(String),
    /// N outside 1..=MAX_SHARDS.
    #[error("the shard count must be 1 to {MAX_SHARDS}, found {0}")]
    Count(u32),
    /// I not below N.
    #[error("shard index {index} is not below the count {count} (indices are 0-based: 0/{count} … {last}/{count})", last = count.saturating_sub(1))]
    Index {
        /// The index given.
        index: u32,
        /// The count given.
        count: u32,
    },
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Shard, ShardError> {
        let syntax = || ShardError::Syntax(s.to_string());
        let (i, n) = s.trim().split_once('/').ok_or_else(syntax)?;
        let index = i.trim().parse().map_err(|_| syntax())?;
        let count = n.trim().parse().map_err(|_| syntax())?;
        Shard::new(index, count)
    }
}

/// Most missing shard indices a message lists one by one.
const MISSING_LISTED: usize = 16;

/// Names missing shards of an `N`-shard set for an error message: `shard 1/3`,
/// `shards 0/3, 2/3`, or the first 16 then `and K more` (a 1,000-shard set with most missing
/// stays one readable line). Merges of reports and of plan sweeps say it the same way.
pub fn describe_missing(count: u32, missing: &[u32]) -> String {
    let listed: Vec<String> = missing
        .iter()
        .take(MISSING_LISTED)
        .map(|i| format!("{i}/{count}"))
        .collect();
    let more = missing.len().saturating_sub(MISSING_LISTED);
    format!(
        "shard{} {}{}",
        if missing.len() == 1 { "" } else { "s" },
        listed.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_shards_are_named_then_counted() {
        // Goal: one readable line however many shards are missing.
        assert_eq!(describe_missing(3, &[1]), "shard 1/3");
        assert_eq!(describe_missing(3, &[0, 2]), "shards 0/3, 2/3");
        let many: Vec<u32> = (0..20).collect();
        let said = describe_missing(100, &many);
        assert!(said.starts_with("shards 0/100, 1/100,"), "{said}");
        assert!(said.ends_with("15/100 and 4 more"), "{said}");
    }

    #[test]
    fn parses_and_refuses() {
        assert_eq!("2/3".parse(), Ok(Shard { index: 2, count: 3 }));
        assert_eq!("0/1".parse::<Shard>().unwrap(), Shard::WHOLE);
        assert!(matches!(
            "3/3".parse::<Shard>(),
            Err(ShardError::Index { .. })
        ));
        assert!(matches!("0/0".parse::<Shard>(), Err(ShardError::Count(0))));
        assert!(matches!("a/3".parse::<Shard>(), Err(ShardError::Syntax(_))));
        assert!(matches!("1".parse::<Shard>(), Err(ShardError::Syntax(_))));
        assert_eq!(Shard { index: 1, count: 4 }.to_string(), "1/4");
    }

    // Goal: the shards of a run partition its agents and jobs exactly (disjoint, complete).
    #[test]
    fn shards_partition_agents_and_jobs() {
        for count in 1..=7u32 {
            for agents in [0u32, 1, 5, 7, 100, 101] {
                let mut seen = vec![0u32; agents as usize];
                for index in 0..count {
                    let s = Shard::new(index, count).unwrap();
                    let mine: Vec<u32> = s.agents(agents).collect();
                    assert_eq!(mine.len() as u32, s.agent_count(agents));
                    for a in mine {
                        assert!(s.has_agent(a));
                        seen[a as usize] += 1;
                    }
                }
                assert!(
                    seen.iter().all(|&n| n == 1),
                    "count {count} agents {agents}"
                );
            }
            for seq in 0..100u64 {
                let owners = (0..count)
                    .filter(|&i| Shard::new(i, count).unwrap().has_job(seq))
                    .count();
                assert_eq!(owners, 1);
            }
        }
    }
}
