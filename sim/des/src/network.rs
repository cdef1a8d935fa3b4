//! The virtual network between agents and the server: a one-way latency distribution, an
//! independent loss probability per message, and partitions (time windows in which a seeded
//! subset of agents cannot reach the server at all). Configured as data; all draws come from the
//! run's `Network` RNG stream, so a seed replays the same delays and losses.
//!
//! What a failure looks like to the agent: a lost message surfaces as
//! `TransportError::Lost` one latency later (the virtual equivalent of a reset), a partitioned
//! agent's request fails with `TransportError::Connect`, and a response to a partitioned agent
//! is lost. The network never inspects or changes a message.

use std::time::Duration;

use fleetsim_core::SimTime;
use fleetsim_core::dist::{DurationDist, Shape};
use fleetsim_core::rng::Rng;
use rand::Rng as _;

use fleetsim_core::faults::Selection;

/// The network's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkSpec {
    /// One-way latency of each message.
    pub latency: DurationDist,
    /// Probability that one message (request or response) is lost, in `[0, 1]`.
    pub loss: f64,
}

impl Default for NetworkSpec {
    /// A perfect network: no delay, no loss.
    fn default() -> Self {
        NetworkSpec {
            latency: DurationDist::constant(Duration::ZERO),
            loss: 0.0,
        }
    }
}

/// A partition: from `start` until `end`, the selected agents cannot reach the server.
#[derive(Clone, Debug, PartialEq)]
pub struct Partition {
    /// First instant of the cut.
    pub start: SimTime,
    /// First instant after it.
    pub end: SimTime,
    /// Who is cut off; membership is stable for the partition's lifetime.
    pub select: Selection,
}

impl Partition {
    /// Is `agent` cut off at `now`?
    pub fn cuts(&self, now: SimTime, agent: u32) -> bool {
        now >= self.start && now < self.end && self.select.contains(agent)
    }
}

/// What the network does with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transit {
    /// Delivered after this delay.
    Deliver(Duration),
    /// Lost; the sender learns after this delay.
    Lost(Duration),
    /// The agent is partitioned away from the server.
    Unreachable,
}

/// The network's state: its spec, its RNG stream and the partitions in force.
pub struct Network {
    spec: NetworkSpec,
    /// `Some` when the latency is a constant: no draw needed (and none consumed).
    constant_latency: Option<Duration>,
    rng: Rng,
    partitions: Vec<Partition>,
}

impl Network {
    /// A network following `spec`, drawing from `rng` (the run's `Network` stream).
    pub fn new(spec: NetworkSpec, rng: Rng) -> Self {
        let constant_latency = match spec.latency.0 {
            Shape::Constant(us) => Some(Duration::from_micros(us.round() as u64)),
            _ => None,
        };
        Network {
            spec,
            constant_latency,
            rng,
            partitions: Vec::new(),
        }
    }

    /// Add a partition (from the fault schedule).
    pub fn add_partition(&mut self, p: Partition) {
        self.partitions.push(p);
    }

    /// Is `agent` partitioned away at `now`?
    pub fn is_cut(&self, now: SimTime, agent: u32) -> bool {
        self.partitions.iter().any(|p| p.cuts(now, agent))
    }

    /// Decide the fate of one message between `agent` and the server, sent at `now`.
    pub fn transit(&mut self, now: SimTime, agent: u32) -> Transit {
        if self.is_cut(now, agent) {
            return Transit::Unreachable;
        }
        self.transit_uncut()
    }

    /// Decide the fate of one message that no partition can cut (latency and loss only).
    pub fn transit_uncut(&mut self) -> Transit {
        let delay = match self.constant_latency {
            Some(d) => d,
            None => self.spec.latency.sample(&mut self.rng),
        };
        if self.spec.loss > 0.0 && self.rng.random::<f64>() < self.spec.loss {
            return Transit::Lost(delay);
        }
        Transit::Deliver(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetsim_core::rng::{StreamKind, stream};

    #[test]
    fn loss_rate_and_latency_follow_the_spec() {
        // Goal: about `loss` of messages are lost (5σ), and delays follow the distribution.
        let spec = NetworkSpec {
            latency: DurationDist::uniform(Duration::from_millis(1), Duration::from_millis(3)),
            loss: 0.1,
        };
        let mut net = Network::new(spec, stream(1, StreamKind::Network, 0));
        let n = 100_000;
        let (mut lost, mut sum_us) = (0u32, 0u128);
        for _ in 0..n {
            match net.transit(SimTime::ZERO, 0) {
                Transit::Lost(d) => {
                    lost += 1;
                    sum_us += d.as_micros();
                }
                Transit::Deliver(d) => sum_us += d.as_micros(),
                Transit::Unreachable => unreachable!("no partition configured"),
            }
        }
        let p = f64::from(lost) / f64::from(n);
        assert!(
            (p - 0.1).abs() < 5.0 * (0.1f64 * 0.9 / f64::from(n)).sqrt(),
            "loss {p}"
        );
        let mean_ms = sum_us as f64 / f64::from(n) / 1e3;
        assert!((mean_ms - 2.0).abs() < 0.02, "mean latency {mean_ms} ms");
    }

    #[test]
    fn partitions_cut_a_stable_fraction_only_while_active() {
        // Goal: a 30% partition cuts ~30% of agents, the same ones throughout, and nobody
        // before its start or after its end.
        let mut net = Network::new(NetworkSpec::default(), stream(1, StreamKind::Network, 0));
        let p = Partition {
            start: SimTime::from_secs(10),
            end: SimTime::from_secs(20),
            select: Selection::Fraction {
                fraction: 0.3,
                salt: 1,
            },
        };
        net.add_partition(p);
        let cut: Vec<u32> = (0..10_000)
            .filter(|&a| net.is_cut(SimTime::from_secs(10), a))
            .collect();
        assert!((2_800..3_200).contains(&cut.len()), "{}", cut.len());
        assert!(cut.iter().all(|&a| net.is_cut(SimTime::from_secs(19), a)));
        assert!((0..10_000).all(|a| !net.is_cut(SimTime::from_secs(9), a)));
        assert!((0..10_000).all(|a| !net.is_cut(SimTime::from_secs(20), a)));
        assert_eq!(
            net.transit(SimTime::from_secs(15), cut[0]),
            Transit::Unreachable
        );
        assert_eq!(
            net.transit(SimTime::from_secs(25), cut[0]),
            Transit::Deliver(Duration::ZERO)
        );
    }
}
