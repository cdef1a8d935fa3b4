//! `[[faults]]` in a live run, in real time, from the schedule the virtual-time driver applies
//! too (`fleetsim_core::faults::schedule`: same seed, same agents, same run times).
//!
//! - Agent faults act inside each agent's task (`driver`), which knows its own windows
//!   ([`AgentFaults`]) without asking anyone: a **crash** drops the agent's state machine and
//!   every connection (no goodbye; the server sees the sockets go and requeues its job when the
//!   lease runs out) and, when the fault has a duration, starts a new incarnation after it that
//!   registers with `--replace`, as a reinstalled agent does; a **partition** drops the agent's
//!   connections (its calls in flight fail as resets) and makes every connect fail until it
//!   ends.
//! - Server faults act on the emulator, from [`FaultTask`]: a **stall** stops the child
//!   emulator's process (SIGSTOP) and continues it (SIGCONT) after the duration — sockets stay
//!   open, nothing is answered, as a server stuck in a pause; a **token-expiry storm** calls the
//!   emulator's admin route (`POST …/_apis/fleetsim/faults/tokenExpiry`), where the core decides
//!   which listener tokens expire, so the agents meet 401 and exchange new tokens.
//! - A **server restart** kills the child emulator (SIGKILL: a crash, nothing flushed or
//!   answered) and starts it again after the duration on the same address with the same state
//!   directory (`serve --state-dir`, a private [`StateDir`] made for the run), so the agents find
//!   the same URL and the emulator its durable state; agents whose sessions or tokens did not
//!   survive create new ones, as the real agent does (`TaskAgentSessionExpiredException`, 401).
//!
//! What cannot be applied is refused before the run starts (exit 2, [`refuse`]), never ignored:
//! server faults against a foreign target (`[target]`) or in a shard of a split run (each shard
//! would apply them again), and server faults with the emulator forced into this process.
//!
//! Each fault becomes one `Event::Fault` (the report's `faults` list and the terminal summary),
//! sent when its effect is over, or at the run's end if that comes first.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetsim_core::SimTime;
use fleetsim_core::api::{ApiRequest, ApiResponse, Request, TokenExpiry};
use fleetsim_core::codec;
use fleetsim_core::event::Event;
use fleetsim_core::faults::{self, FaultKind, ScheduledFault};
use fleetsim_scenario::Scenario;
use tokio::sync::{mpsc, watch};

use super::child::ChildEmulator;
use super::driver::Clock;
use super::progress::{Placement, ProgressBoard};
use super::{FleetError, pat_credential};
use crate::client::HttpClient;

/// How long the token-storm admin call may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the run's server lives, as far as faults care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ServerKind {
    /// A `[target]`: fleetsim controls nothing on it.
    Foreign,
    /// The embedded emulator in this process: it cannot be stopped or restarted alone.
    InProcess,
    /// The embedded emulator as a child process of this one.
    Child,
}

/// The kinds that need control of the server process.
fn needs_process(kind: FaultKind) -> bool {
    kind.server_side()
}

/// The kinds that need fleetsim's emulator (its process or its admin routes).
fn needs_emulator(kind: FaultKind) -> bool {
    kind.server_side() || kind == FaultKind::TokenExpiryStorm
}

/// Does the scenario have a fault that must run the emulator in a child process?
pub(super) fn wants_child(scenario: &Scenario) -> bool {
    scenario.faults.iter().any(|f| needs_process(f.kind))
}

/// Refuse, before anything starts, every fault this run cannot apply (exit 2), naming it, why,
/// and what to do instead.
/// `processes`: how many processes share the run's fleet (1 unless sharded).
pub(super) fn refuse(
    scenario: &Scenario,
    server: ServerKind,
    processes: u32,
) -> Result<(), FleetError> {
    let name = |f: &fleetsim_scenario::Fault| {
        format!(
            "{} at {}",
            f.kind.name(),
            fleetsim_core::dist::format_duration(f.at)
        )
    };
    let listed = |keep: &dyn Fn(FaultKind) -> bool| -> Vec<String> {
        scenario
            .faults
            .iter()
            .filter(|f| keep(f.kind))
            .map(name)
            .collect()
    };
    let foreign = listed(&needs_emulator);
    if server == ServerKind::Foreign && !foreign.is_empty() {
        return Err(FleetError::Unsupported(format!(
            "fault {} needs control of fleetsim's emulator (stopping, restarting or its \
             token-expiry route), and the run's target is a server fleetsim does not control: \
             remove the [target] section to run against the embedded emulator, or keep only \
             agent_crash and partition faults against this target",
            foreign.join(", ")
        )));
    }
    let process = listed(&needs_process);
    if server == ServerKind::InProcess && !process.is_empty() {
        return Err(FleetError::Unsupported(format!(
            "fault {} stops or restarts the emulator, which cannot be done to an emulator running \
             inside the fleet's own process: run the emulator as a child process (`fleetsim run \
             --emulator-process`, the default placement for such scenarios)",
            process.join(", ")
        )));
    }
    let server_faults = listed(&needs_emulator);
    if processes > 1 && !server_faults.is_empty() {
        return Err(FleetError::Unsupported(format!(
            "fault {} acts on the server, and this run is split over {processes} processes: each \
             would apply it again, so the run would not be the scenario's (agent_crash and \
             partition are applied per agent and work in shards); run it without --shard or \
             --processes",
            server_faults.join(", ")
        )));
    }
    Ok(())
}

/// Does the scenario restart the server (so the child emulator keeps durable state)?
pub(super) fn wants_state(scenario: &Scenario) -> bool {
    scenario
        .faults
        .iter()
        .any(|f| f.kind == FaultKind::ServerRestart)
}

/// A private directory for the child emulator's durable state (`serve --state-dir`): mode
/// 0700 under the temp dir, new for each run (a state dir is tied to one run's seed), removed
/// with everything in it when dropped — after the child has stopped.
#[derive(Debug)]
pub(super) struct StateDir(PathBuf);

impl StateDir {
    pub(super) fn create() -> Result<StateDir, String> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("fleetsim-state-{}-{nanos}", std::process::id());
        let path = std::env::temp_dir().join(name);
        // `create`, not `create_all`: a path that already exists (someone else's) is an error.
        DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| format!("cannot create the state dir {}: {e}", path.display()))?;
        Ok(StateDir(path))
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One agent's fault windows, and where its task is in them.
#[derive(Clone, Debug, Default)]
pub(crate) struct AgentFaults {
    /// `(kind, start, end)` of each crash or partition that hits this agent.
    windows: Vec<(FaultKind, SimTime, Option<SimTime>)>,
    /// The last window edge applied: edges after it are still to come.
    applied: Option<SimTime>,
}

/// What the agent's task must be at some time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct AgentCondition {
    /// Crashed (its task holds no agent).
    pub(crate) down: bool,
    /// Cut off: connections dropped, connects fail.
    pub(crate) cut: bool,
}

impl AgentFaults {
    /// Agent `index`'s windows in `schedule`.
    pub(crate) fn new(schedule: &[ScheduledFault], index: u32) -> AgentFaults {
        AgentFaults {
            windows: faults::agent_windows(schedule, index),
            applied: None,
        }
    }

    /// The next window edge not applied yet.
    pub(crate) fn next_edge(&self) -> Option<SimTime> {
        self.windows
            .iter()
            .flat_map(|&(_, start, end)| [Some(start), end])
            .flatten()
            .filter(|&t| self.applied.is_none_or(|a| t > a))
            .min()
    }

    /// Mark every edge up to `edge` applied and say what the agent must be from then on.
    pub(crate) fn apply(&mut self, edge: SimTime) -> AgentCondition {
        self.applied = Some(edge);
        let holds = |kind: FaultKind| {
            self.windows
                .iter()
                .any(|&(k, start, end)| k == kind && start <= edge && end.is_none_or(|e| edge < e))
        };
        AgentCondition {
            down: holds(FaultKind::AgentCrash),
            cut: holds(FaultKind::Partition),
        }
    }
}

/// Applies server faults and reports every fault of this process's agents.
pub(super) struct FaultTask {
    pub(super) schedule: Arc<[ScheduledFault]>,
    pub(super) clock: Clock,
    pub(super) events: mpsc::Sender<Event>,
    pub(super) stop: watch::Receiver<bool>,
    /// The emulator's process, when it runs as a child (stalls, restarts); handed back in
    /// [`FaultsDone`].
    pub(super) child: Option<ChildEmulator>,
    pub(super) http: Arc<HttpClient>,
    pub(super) base_path: Arc<str>,
    pub(super) pat: String,
    /// Agent names are `{name_prefix}{index}` (the token-storm route selects by name).
    pub(super) name_prefix: String,
    /// This process's agents, counted per fault.
    pub(super) agents: Vec<u32>,
    /// The admin call's connection slot (past the agents' and the workload's).
    pub(super) slot: u64,
    /// Where the run shows its emulator's process (a restart changes it).
    pub(super) board: Arc<ProgressBoard>,
}

/// What the fault task hands back.
pub(super) struct FaultsDone {
    /// Faults that could not be applied, and other things the operator should know.
    pub(super) warnings: Vec<String>,
    /// The emulator's child process (its pid may have changed: a restart starts a new one).
    pub(super) child: Option<ChildEmulator>,
}

/// A fault's edge in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Edge {
    Start(usize),
    End(usize),
}

impl FaultTask {
    /// Apply and report each fault at its time until the schedule is done or the run stops;
    /// on the stop, end what is still going (a stalled emulator is continued) and report it.
    pub(super) async fn run(mut self) -> FaultsDone {
        let mut warnings = Vec::new();
        let mut edges: Vec<(SimTime, Edge)> = Vec::new();
        for (i, f) in self.schedule.iter().enumerate() {
            edges.push((f.start, Edge::Start(i)));
            if let Some(end) = f.end {
                edges.push((end, Edge::End(i)));
            }
        }
        edges.sort();
        let mut started: Vec<Option<SimTime>> = vec![None; self.schedule.len()];
        let mut stall = StallGuard::default();
        for (at, edge) in edges {
            tokio::select! {
                () = tokio::time::sleep_until(self.clock.instant(at)) => {}
                _ = self.stop.wait_for(|s| *s) => break,
            }
            let now = self.clock.now();
            match edge {
                Edge::Start(i) => {
                    started[i] = Some(now);
                    let f = &self.schedule[i];
                    match f.kind {
                        FaultKind::ServerStall => {
                            stall.stop(self.child.as_ref().map(|c| c.pid), &mut warnings);
                        }
                        FaultKind::TokenExpiryStorm => {
                            if let Some(w) = self.token_storm(f).await {
                                warnings.push(w);
                            }
                        }
                        FaultKind::ServerRestart => {
                            let down = f
                                .end
                                .map_or(Duration::ZERO, |e| e.saturating_since(f.start));
                            warnings.extend(self.restart(down).await);
                            // Reported once the emulator is back: its real down time.
                            self.report(i, now, Some(self.clock.now())).await;
                            started[i] = None;
                            continue;
                        }
                        // Agent faults are applied by the agents' tasks at the same edge.
                        FaultKind::AgentCrash | FaultKind::Partition => {}
                    }
                    if f.end.is_none() {
                        self.report(i, now, None).await;
                        started[i] = None;
                    }
                }
                Edge::End(i) => {
                    if self.schedule[i].kind == FaultKind::ServerStall {
                        stall.resume();
                    }
                    if let Some(start) = started[i].take() {
                        self.report(i, start, Some(now)).await;
                    }
                }
            }
        }
        // The run ended first: what is still going ends now.
        stall.resume();
        let now = self.clock.now();
        for (i, start) in started.iter().enumerate() {
            if let Some(start) = *start {
                self.report(i, start, Some(now)).await;
            }
        }
        FaultsDone {
            warnings,
            child: self.child,
        }
    }

    /// The restart: the child emulator is killed (SIGKILL, as a crash) and started again on its
    /// address with its state dir after `down`; a warning when it did not come back.
    async fn restart(&mut self, down: Duration) -> Option<String> {
        let Some(child) = self.child.as_mut() else {
            // `refuse` lets no restart through without a child; say so if that ever breaks.
            return Some("server_restart was not applied: no emulator process to restart".into());
        };
        let old = child.pid;
        match child.restart(down).await {
            // The report lists the restart with its real down time; the summary names the
            // new process.
            Ok(()) => {
                let pid = child.pid;
                self.board
                    .update(|p| p.emulator = Some(Placement::ChildProcess { pid }));
                None
            }
            Err(e) => Some(format!(
                "server_restart: the emulator (process {old}) did not come back: {e}"
            )),
        }
    }

    /// Send fault `i`'s event: how many of this process's agents it hit.
    async fn report(&self, i: usize, start: SimTime, end: Option<SimTime>) {
        let f = &self.schedule[i];
        let agents = if f.kind.server_side() {
            0
        } else {
            self.agents
                .iter()
                .filter(|&&a| f.select.contains(a))
                .count()
        };
        let ev = Event::Fault {
            kind: f.kind,
            start,
            end,
            agents: u32::try_from(agents).unwrap_or(u32::MAX),
        };
        let _ = self.events.send(ev).await;
    }

    /// The storm: the emulator's admin route expires the selected agents' listener tokens.
    /// A failure is a warning (the run goes on; the report says the storm did not happen).
    async fn token_storm(&self, f: &ScheduledFault) -> Option<String> {
        let request = Request {
            credential: pat_credential(&self.pat),
            call: ApiRequest::ExpireTokens(TokenExpiry {
                name_prefix: self.name_prefix.clone(),
                agents: f.select.clone(),
            }),
        };
        let wire = codec::encode_request(&request, &self.base_path);
        let mut conn = self.http.connection(self.slot);
        let failed = match tokio::time::timeout(ADMIN_TIMEOUT, conn.send(&wire)).await {
            Ok(Ok(resp)) => match codec::decode_response(&request.call, &resp) {
                ApiResponse::TokensExpired(_) => return None,
                other => format!("answered {other:?}"),
            },
            Ok(Err(e)) => format!("failed: {e}"),
            Err(_) => format!("gave no answer within {}s", ADMIN_TIMEOUT.as_secs()),
        };
        Some(format!(
            "token_expiry_storm at {:.3} s was not applied: the emulator's token-expiry route \
             {failed}",
            f.start.as_secs_f64()
        ))
    }
}

/// A stopped child emulator, continued when the stall ends, the run ends, or this is dropped
/// (an emulator must never be left stopped).
#[derive(Default)]
struct StallGuard {
    /// The stopped process, and how many stalls hold it (stalls may overlap).
    stopped: Option<(libc::pid_t, u32)>,
}

impl StallGuard {
    fn stop(&mut self, pid: Option<u32>, warnings: &mut Vec<String>) {
        if let Some((_, holds)) = &mut self.stopped {
            *holds += 1;
            return;
        }
        let Some(pid) = pid.and_then(|p| libc::pid_t::try_from(p).ok()) else {
            // `refuse` lets no stall through without a child; say so if that ever breaks.
            warnings.push("server_stall was not applied: no emulator process to stop".into());
            return;
        };
        // SAFETY: `kill` has no memory effects; `pid` is our own child, alive until the run
        // stops it after this task has ended (so the pid cannot have been reused).
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        self.stopped = Some((pid, 1));
    }

    fn resume(&mut self) {
        match &mut self.stopped {
            Some((_, holds)) if *holds > 1 => *holds -= 1,
            Some((pid, _)) => {
                // SAFETY: as in `stop`.
                unsafe { libc::kill(*pid, libc::SIGCONT) };
                self.stopped = None;
            }
            None => {}
        }
    }
}

impl Drop for StallGuard {
    fn drop(&mut self) {
        if let Some((pid, _)) = self.stopped.take() {
            // SAFETY: as in `stop`.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetsim_core::faults::Selection;

    fn at(s: u64) -> SimTime {
        SimTime::from_micros(s * 1_000_000)
    }

    fn scenario(faults: &str) -> Scenario {
        let text = format!("[run]\nduration = \"10s\"\n[fleet]\nagents = 4\n{faults}");
        fleetsim_scenario::load_str("t.toml", &text, &[]).expect("scenario")
    }

    // Goal: each placement refuses exactly the faults it cannot apply, naming them: agent
    // faults go everywhere (any target, shards); emulator faults need fleetsim's emulator;
    // process faults need it out of this process; server faults are not repeated per shard.
    #[test]
    fn refusals_follow_what_each_placement_can_do() {
        let agent = scenario(
            "[[faults]]\nkind = \"agent_crash\"\nat = \"1s\"\n\
             [[faults]]\nkind = \"partition\"\nat = \"2s\"\nduration = \"1s\"\n",
        );
        let storm = scenario("[[faults]]\nkind = \"token_expiry_storm\"\nat = \"3s\"\n");
        let stall =
            scenario("[[faults]]\nkind = \"server_stall\"\nat = \"4s\"\nduration = \"1s\"\n");
        let refused = |s: &Scenario, kind, processes| match refuse(s, kind, processes) {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        };
        for kind in [
            ServerKind::Foreign,
            ServerKind::InProcess,
            ServerKind::Child,
        ] {
            assert_eq!(refused(&agent, kind, 1), "");
            assert_eq!(refused(&agent, kind, 3), "");
        }
        assert!(refused(&storm, ServerKind::Foreign, 1).contains("token_expiry_storm at 3s"));
        assert_eq!(refused(&storm, ServerKind::InProcess, 1), "");
        assert!(refused(&storm, ServerKind::Child, 2).contains("split over 2 processes"));
        assert!(refused(&stall, ServerKind::Foreign, 1).contains("does not control"));
        assert!(refused(&stall, ServerKind::InProcess, 1).contains("--emulator-process"));
        assert_eq!(refused(&stall, ServerKind::Child, 1), "");
        assert!(wants_child(&stall) && !wants_child(&storm) && !wants_child(&agent));
    }

    // Goal: an agent's task walks its own windows edge by edge: down during a crash, back at
    // its end; cut during a partition; a crash with no end keeps it down for good; faults that
    // do not select it leave it alone.
    #[test]
    fn agent_windows_walk_edge_by_edge() {
        let fault = |kind, start, end: Option<u64>, select| ScheduledFault {
            kind,
            start: at(start),
            end: end.map(at),
            select,
        };
        let schedule = vec![
            fault(FaultKind::Partition, 1, Some(3), Selection::Agents(vec![4])),
            fault(
                FaultKind::AgentCrash,
                2,
                Some(5),
                Selection::Agents(vec![4]),
            ),
            fault(FaultKind::AgentCrash, 6, None, Selection::All),
            fault(FaultKind::Partition, 1, Some(9), Selection::Agents(vec![5])),
        ];
        let mut f = AgentFaults::new(&schedule, 4);
        let mut seen = Vec::new();
        while let Some(edge) = f.next_edge() {
            seen.push((edge, f.apply(edge)));
        }
        let c = |down, cut| AgentCondition { down, cut };
        assert_eq!(
            seen,
            vec![
                (at(1), c(false, true)),
                (at(2), c(true, true)),
                (at(3), c(true, false)),
                (at(5), c(false, false)),
                (at(6), c(true, false)),
            ]
        );
        assert_eq!(AgentFaults::new(&schedule[..2], 7).next_edge(), None);
    }
}
