//! From a validated `Scenario` to what a virtual run is made of: the agents' `AgentConfig` and
//! the server's `ServerConfig` (through the scenario crate's shared mappings, so live and
//! virtual runs configure the cores identically), the capacity model (stations and routes), the
//! crypto charges and the network. Pure translation with no defaults of its own beyond modelled
//! crypto, and no IO — the PAT is a fixed virtual credential, never read from the environment.

use std::time::Duration;

use fleetsim_core::agent::AgentConfig;
use fleetsim_core::crypto::CryptoMode;
use fleetsim_core::ops::Operation;
use fleetsim_core::server::{DEFAULT_POOL_ID, DEFAULT_POOL_NAME, ServerConfig};
use fleetsim_scenario as sc;

use crate::network::NetworkSpec;
use crate::station::{Routes, Shed, StationSpec};

/// The PAT of a virtual run. It never leaves the process, so it need not be secret.
pub const VIRTUAL_PAT: &str = "fleetsim-virtual-pat";

/// The pool id the scenario's pool has on the virtual server.
pub fn pool_id(s: &sc::Scenario) -> u32 {
    if s.server.pool == DEFAULT_POOL_NAME {
        DEFAULT_POOL_ID
    } else {
        sc::SCENARIO_POOL_ID
    }
}

/// The agents' configuration: the scenario's (shared with live mode), modelled crypto, the
/// virtual PAT.
pub fn agent_config(s: &sc::Scenario) -> AgentConfig {
    s.agent_config(VIRTUAL_PAT, CryptoMode::Modelled)
}

/// The server state machine's configuration: the scenario's (shared with live mode, limits
/// sized to the fleet), modelled crypto, the virtual PAT with every scope.
pub fn server_config(s: &sc::Scenario) -> ServerConfig {
    s.server_config(VIRTUAL_PAT, CryptoMode::Modelled)
}

/// The capacity model: one `StationSpec` per `[[server.stations]]` and the operation → station
/// routes (a `rest` station takes every operation no other station lists, except the
/// operator's `queue_jobs`: its calls load a station only where one names it, so a scenario's
/// catch-all station models the agents' load alone, as it always has).
pub fn stations(s: &sc::Scenario) -> (Vec<StationSpec>, Routes) {
    let mut specs = Vec::new();
    let mut routes = Routes::default();
    let mut rest = None;
    for (i, st) in s.server.stations.iter().enumerate() {
        specs.push(StationSpec {
            name: st.name.clone(),
            workers: Some(st.workers),
            queue_limit: st.queue_limit,
            shed: match st.shed {
                sc::Shed::Throttled => Shed::Throttled,
                sc::Shed::Unavailable => Shed::Unavailable,
            },
            service: st.service.clone(),
            service_by_op: st.service_by_op.clone(),
        });
        match &st.ops {
            sc::StationOps::Only(ops) => ops.iter().for_each(|&op| routes.route(op, i)),
            sc::StationOps::Rest => rest = Some(i),
        }
    }
    if let Some(i) = rest {
        for &op in Operation::ALL {
            if op != Operation::QueueJobs && routes.station(op).is_none() {
                routes.route(op, i);
            }
        }
    }
    (specs, routes)
}

/// Modelled crypto time added to a request's service at the server (`server`) and to its trip
/// on the agent's side (`agent`), per operation. Zero in `Real` mode, where the work is done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CryptoCharge {
    /// Added to the request's service time at the server.
    pub server: Duration,
    /// Added to the request's trip before it leaves the agent.
    pub agent: Duration,
}

/// The modelled crypto cost of `op`: the server verifies the RS256 assertion of a token
/// exchange and wraps the session key with RSA-OAEP; the agent signs the assertion and unwraps
/// the key. AES on message bodies is a few µs per KiB and is not charged.
pub fn crypto_charge(s: &sc::Scenario, op: Operation) -> CryptoCharge {
    if s.server.crypto.mode == sc::CryptoMode::Real {
        return CryptoCharge::default();
    }
    let c = &s.server.crypto.costs;
    match op {
        Operation::TokenExchange => CryptoCharge {
            server: c.rs256_verify,
            agent: c.rs256_sign,
        },
        Operation::SessionCreate => CryptoCharge {
            server: c.oaep_wrap,
            agent: c.oaep_unwrap,
        },
        _ => CryptoCharge::default(),
    }
}

/// The network model.
pub fn network(s: &sc::Scenario) -> NetworkSpec {
    NetworkSpec {
        latency: s.network.latency.clone(),
        loss: s.network.loss,
    }
}
