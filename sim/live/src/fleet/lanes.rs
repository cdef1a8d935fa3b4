//! Agent lanes: one single-threaded runtime per core, each driving a fixed share of the agents.
//!
//! Why not the process's work-stealing runtime: an agent's task is woken by its socket or its
//! timer thousands of times a second across the fleet, and on a work-stealing runtime a wake-up
//! often unparks the other worker (a futex wake and a context switch) or moves the task to it
//! (its socket, timer and state then in the other core's cache). The profile of a 5,000-agent
//! run had ~25 % of the fleet's CPU under the workers' parking (docs/PERFORMANCE.md); the same
//! run on one worker thread spent less CPU per request but could use one core only. Lanes keep
//! every agent on one thread and still use every core: agent `i` runs on lane `i mod n`.
//!
//! The generator, the fault task, telemetry and an embedded emulator stay on the process's
//! runtime; agents reach them only through channels, which work across runtimes.

use std::thread::JoinHandle;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// The lanes of one fleet. Dropping them stops each lane's runtime (any task still on it is
/// dropped) and joins its thread.
pub(crate) struct Lanes {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Lanes {
    /// `n` lanes (at least one), each a current-thread runtime with I/O and timers on its own
    /// thread.
    pub(crate) fn start(n: usize) -> std::io::Result<Lanes> {
        let mut lanes = Lanes {
            handles: Vec::new(),
            stops: Vec::new(),
            threads: Vec::new(),
        };
        for i in 0..n.max(1) {
            let rt = Builder::new_current_thread().enable_all().build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            lanes.handles.push(rt.handle().clone());
            lanes.stops.push(stop);
            let thread = std::thread::Builder::new()
                .name(format!("fleetsim-lane-{i}"))
                .spawn(move || {
                    // The lane's tasks run while this waits; a dropped sender stops it too.
                    rt.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            lanes.threads.push(thread);
        }
        Ok(lanes)
    }

    /// As many lanes as the machine has cores for this process, and no more than `agents`.
    pub(crate) fn for_fleet(agents: u32) -> std::io::Result<Lanes> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Lanes::start(cores.min(agents.max(1) as usize))
    }

    /// The lane agent `index` runs on.
    pub(crate) fn handle(&self, index: u32) -> &Handle {
        &self.handles[index as usize % self.handles.len()]
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.handles.len()
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: agents are spread round-robin over the lanes, each lane is its own thread, tasks
    // spawned on a lane run there and can be awaited from another runtime, and dropping the
    // lanes stops their threads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tasks_run_on_their_lane_and_the_lanes_stop() {
        let lanes = Lanes::start(3).unwrap();
        assert_eq!(lanes.len(), 3);
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..9u32 {
            tasks.spawn_on(
                async move {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    (index, std::thread::current().name().map(str::to_string))
                },
                lanes.handle(index),
            );
        }
        let mut seen = Vec::new();
        while let Some(done) = tasks.join_next().await {
            seen.push(done.unwrap());
        }
        seen.sort();
        for (index, thread) in seen {
            assert_eq!(thread, Some(format!("fleetsim-lane-{}", index % 3)));
        }
        drop(lanes);
    }

    #[test]
    fn a_fleet_gets_no_more_lanes_than_agents() {
        assert_eq!(Lanes::for_fleet(1).unwrap().len(), 1);
        assert!(Lanes::for_fleet(1_000).unwrap().len() >= 1);
    }
}
