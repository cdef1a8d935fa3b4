//! Job-to-agent matching that never rebuilds anything per request. Each agent's capabilities
//! are folded once, when it registers, is replaced or is updated, into a [`CapSet`] of
//! lower-case names and values; each distinct demand set of a pool's queued jobs is interned
//! once in the [`DemandIndex`] with the number of that pool's registered agents that meet it
//! (`supporters`), kept in step as agents come, change and go.
//!
//! So "is this queued job unmatched?" is one lookup: the stats and job-list routes cost
//! O(queued jobs), never O(agents × queued jobs) under the lock every request needs. A new
//! demand set costs one pass over the pool's agents, an agent change one pass over the pool's
//! demand sets, and dispatch skips a set nobody can meet without looking at any agent.
//!
//! Matching is the real service's rule, unchanged from the emulator's first version: a demand
//! is `name` (the capability exists) or `name -equals value`, both compared ASCII
//! case-insensitively, against the agent's system capabilities with its user capabilities of
//! the same name on top.
//!
//! It never does IO and never iterates a hash map; every map here is a B-tree.

use std::cell::Cell;
use std::collections::BTreeMap;

use crate::proto::TaskAgent;

/// One demand, parsed and lower-cased.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Demand {
    name: String,
    /// `Some` for `name -equals value`.
    value: Option<String>,
}

impl Demand {
    /// Read `name` or `name -equals value` (validity is `jobs::check_demand`'s business).
    pub fn parse(demand: &str) -> Demand {
        let (name, value) = match demand.split_once(" -equals ") {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (demand.trim(), None),
        };
        Demand {
            name: name.to_ascii_lowercase(),
            value: value.map(str::to_ascii_lowercase),
        }
    }
}

/// Demands in canonical form (sorted, no repeats), so jobs that ask for the same things share
/// one entry whatever order they wrote them in.
pub(super) fn demand_set(demands: &[String]) -> Vec<Demand> {
    let mut set: Vec<Demand> = demands.iter().map(|d| Demand::parse(d)).collect();
    set.sort();
    set.dedup();
    set
}

/// An agent's capabilities, lower-cased: name → values. Names that differ only in case both
/// stay (a demand may be met by either), as the per-request map this replaces saw them.
#[derive(Default)]
pub(super) struct CapSet {
    caps: BTreeMap<String, Vec<String>>,
}

impl CapSet {
    /// The capabilities `agent` shows: system ones with user ones of the same name on top
    /// (an admin's setting wins over what the agent found on its machine).
    pub fn of(agent: &TaskAgent) -> CapSet {
        let mut merged: BTreeMap<&str, &str> = BTreeMap::new();
        for (k, v) in agent
            .system_capabilities
            .iter()
            .chain(agent.user_capabilities.iter())
        {
            merged.insert(k, v);
        }
        let mut caps: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in merged {
            caps.entry(k.to_ascii_lowercase())
                .or_default()
                .push(v.to_ascii_lowercase());
        }
        CapSet { caps }
    }

    /// Whether the agent meets `demand`.
    pub fn meets(&self, demand: &Demand) -> bool {
        self.caps.get(&demand.name).is_some_and(|values| {
            demand
                .value
                .as_ref()
                .is_none_or(|want| values.contains(want))
        })
    }

    /// Whether the agent meets every demand of `demands`.
    pub fn meets_all(&self, demands: &[Demand]) -> bool {
        demands.iter().all(|d| self.meets(d))
    }
}

/// The id of an interned demand set.
pub(super) type DemandSetId = u64;

/// One interned demand set of one pool.
struct Entry {
    demands: Vec<Demand>,
    /// Registered agents of the pool that meet every demand (enabled, online or not).
    supporters: usize,
    /// Queued jobs that carry this set; the entry is dropped when it reaches 0.
    queued: usize,
}

/// The demand sets of the queued jobs, per pool, with their supporter counts. An entry exists
/// exactly while a queued job carries it, so the index is bounded by `max_queued_jobs`.
#[derive(Default)]
pub(super) struct DemandIndex {
    ids: BTreeMap<(u32, Vec<Demand>), DemandSetId>,
    sets: BTreeMap<DemandSetId, (u32, Entry)>,
    next_id: DemandSetId,
    /// Agent × demand-set evaluations done so far. A `Cell` so the read-only dispatch scan
    /// counts too; it is what tests use to prove no read route evaluates any.
    checks: Cell<u64>,
}

impl DemandIndex {
    /// Intern `demands` for `pool`, counting its supporters among `agents` (the pool's
    /// registered agents' capabilities) once.
    pub fn intern<'a>(
        &mut self,
        pool: u32,
        demands: Vec<Demand>,
        agents: impl Iterator<Item = &'a CapSet>,
    ) -> DemandSetId {
        let key = (pool, demands);
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let supporters = agents.filter(|caps| self.check(caps, &key.1)).count();
        let id = self.next_id;
        self.next_id += 1;
        let entry = Entry {
            demands: key.1.clone(),
            supporters,
            queued: 0,
        };
        self.ids.insert(key, id);
        self.sets.insert(id, (pool, entry));
        id
    }

    /// One more queued job carries set `id`.
    pub fn add_queued(&mut self, id: DemandSetId) {
        if let Some((_, e)) = self.sets.get_mut(&id) {
            e.queued += 1;
        }
    }

    /// One queued job carrying set `id` left the queue; the last one takes the entry along.
    pub fn remove_queued(&mut self, id: DemandSetId) {
        let Some((pool, e)) = self.sets.get_mut(&id) else {
            return;
        };
        e.queued = e.queued.saturating_sub(1);
        if e.queued == 0 {
            let pool = *pool;
            if let Some((_, e)) = self.sets.remove(&id) {
                self.ids.remove(&(pool, e.demands));
            }
        }
    }

    /// No registered agent of the pool meets set `id`.
    pub fn unmet(&self, id: DemandSetId) -> bool {
        self.sets.get(&id).is_some_and(|(_, e)| e.supporters == 0)
    }

    /// Whether `caps` meets set `id` (counted).
    pub fn meets(&self, caps: &CapSet, id: DemandSetId) -> bool {
        self.sets
            .get(&id)
            .is_some_and(|(_, e)| self.check(caps, &e.demands))
    }

    /// An agent of `pool` changed from `old` to `new` capabilities (`None`: not registered
    /// before / any more): move it between the supporters of each of the pool's sets.
    pub fn agent_changed(&mut self, pool: u32, old: Option<&CapSet>, new: Option<&CapSet>) {
        let ids: Vec<DemandSetId> = self
            .ids
            .range((pool, Vec::new())..)
            .take_while(|((p, _), _)| *p == pool)
            .map(|(_, &id)| id)
            .collect();
        for id in ids {
            let Some((_, e)) = self.sets.get(&id) else {
                continue;
            };
            let was = old.is_some_and(|c| self.check(c, &e.demands));
            let is = new.is_some_and(|c| self.check(c, &e.demands));
            if let Some((_, e)) = self.sets.get_mut(&id) {
                match (was, is) {
                    (false, true) => e.supporters += 1,
                    (true, false) => e.supporters = e.supporters.saturating_sub(1),
                    _ => {}
                }
            }
        }
    }

    /// Agent × demand-set evaluations done so far.
    pub fn checks(&self) -> u64 {
        self.checks.get()
    }

    fn check(&self, caps: &CapSet, demands: &[Demand]) -> bool {
        self.checks.set(self.checks.get() + 1);
        caps.meets_all(demands)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(system: &[(&str, &str)], user: &[(&str, &str)]) -> TaskAgent {
        let map = |caps: &[(&str, &str)]| {
            caps.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        TaskAgent {
            system_capabilities: map(system),
            user_capabilities: map(user),
            ..TaskAgent::default()
        }
    }

    fn meets(caps: &CapSet, demand: &str) -> bool {
        caps.meets(&Demand::parse(demand))
    }

    // Goal: demands read as the real service writes them, case-insensitively.
    #[test]
    fn demands_exist_and_equals() {
        let caps = CapSet::of(&agent(&[("Agent.OS", "Linux"), ("docker", "")], &[]));
        assert!(meets(&caps, "docker"));
        assert!(meets(&caps, "agent.os -equals linux"));
        assert!(meets(&caps, "  Agent.OS -equals  LINUX "));
        assert!(!meets(&caps, "Agent.OS -equals Windows_NT"));
        assert!(!meets(&caps, "java"));
    }

    // Goal: user capabilities override system ones of the same name (admins win), and names
    // differing only in case each still meet a demand.
    #[test]
    fn user_capabilities_override_system_ones() {
        let caps = CapSet::of(&agent(
            &[("a", "1"), ("b", "2"), ("C", "x")],
            &[("b", "user"), ("c", "y")],
        ));
        assert!(meets(&caps, "a -equals 1"));
        assert!(meets(&caps, "b -equals user"));
        assert!(!meets(&caps, "b -equals 2"));
        assert!(meets(&caps, "c -equals x") && meets(&caps, "c -equals y"));
    }

    // Goal: a demand set is canonical (order and repeats do not matter), and the index keeps
    // supporter counts in step with agents coming, changing and going.
    #[test]
    fn index_counts_supporters_incrementally() {
        let docker = CapSet::of(&agent(&[("docker", "")], &[]));
        let plain = CapSet::of(&agent(&[], &[]));
        let a = demand_set(&["docker".into(), "Docker".into()]);
        assert_eq!(a, demand_set(&["DOCKER".into()]));
        let mut index = DemandIndex::default();
        let id = index.intern(1, a.clone(), [&plain].into_iter());
        index.add_queued(id);
        assert!(index.unmet(id));
        assert_eq!(
            index.intern(1, a.clone(), [&docker].into_iter()),
            id,
            "interned once"
        );
        index.agent_changed(1, Some(&plain), Some(&docker));
        assert!(!index.unmet(id));
        index.agent_changed(2, None, Some(&plain));
        assert!(!index.unmet(id), "another pool's agent does not count");
        index.agent_changed(1, Some(&docker), None);
        assert!(index.unmet(id));
        index.remove_queued(id);
        let again = index.intern(1, a, std::iter::empty());
        assert_ne!(again, id, "the last queued job took the set along");
    }
}
