//! The process's open-file limit: a fleet holds up to three connections per agent (and the
//! embedded emulator as many again), so 10,000 agents need far more than the usual soft limit
//! of 1,024 descriptors.
//!
//! `raise_nofile` lifts the soft limit to the hard one, and — when the process may (as root) —
//! the hard limit too, up to the kernel's `fs.nr_open`. It never lowers a limit.

use std::io;

/// The descriptor limit after `raise_nofile`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit now in force.
    pub soft: u64,
    /// The hard limit now in force.
    pub hard: u64,
    /// The soft limit before, when it was raised.
    pub raised_from: Option<u64>,
}

impl FdLimit {
    /// A warning when `needed` descriptors do not fit, phrased for the run log.
    pub fn shortfall(&self, needed: u64) -> Option<String> {
        (needed > self.soft).then(|| {
            format!(
                "the fleet may need ~{needed} file descriptors but the limit is {} (hard {}); \
                 connections beyond it will fail (raise it with `ulimit -n`)",
                self.soft, self.hard
            )
        })
    }
}

/// The most descriptors a process may have, from `/proc/sys/fs/nr_open` (Linux), if readable.
fn nr_open() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Raise `RLIMIT_NOFILE` so that at least `wanted` descriptors fit, as far as allowed: the soft
/// limit to the hard limit, and the hard limit itself when permitted (root) up to `fs.nr_open`.
// `rlim_t` is `u64` on Linux but not on every Unix: the casts are needed in general.
#[allow(clippy::unnecessary_cast)]
pub fn raise_nofile(wanted: u64) -> io::Result<FdLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = lim.rlim_cur as u64;
    let hard = lim.rlim_max as u64;
    if before >= wanted {
        return Ok(FdLimit {
            soft: before,
            hard,
            raised_from: None,
        });
    }
    // First try to lift the hard limit too (only root may); fall back to soft = hard.
    let ceiling = nr_open().unwrap_or(hard).max(hard);
    let target = wanted.min(ceiling).max(before);
    if target > hard {
        let raised = libc::rlimit {
            rlim_cur: target as libc::rlim_t,
            rlim_max: target as libc::rlim_t,
        };
        // SAFETY: setrlimit reads the struct we pass and changes only this process's limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(FdLimit {
                soft: target,
                hard: target,
                raised_from: Some(before),
            });
        }
    }
    let soft = target.min(hard);
    if soft > before {
        let raised = libc::rlimit {
            rlim_cur: soft as libc::rlim_t,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        return Ok(FdLimit {
            soft,
            hard,
            raised_from: Some(before),
        });
    }
    Ok(FdLimit {
        soft: before,
        hard,
        raised_from: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: raising never lowers the limit, asking for what is already there changes nothing,
    // and a shortfall is reported in words.
    #[test]
    fn raise_never_lowers_and_reports_shortfall() {
        let first = raise_nofile(64).unwrap();
        assert!(first.soft >= 64);
        assert_eq!(
            first.raised_from, None,
            "64 descriptors are always allowed already"
        );
        let again = raise_nofile(first.soft + 1).unwrap();
        assert!(again.soft >= first.soft);
        assert!(
            again
                .shortfall(u64::MAX)
                .unwrap()
                .contains("file descriptors")
        );
        assert_eq!(again.shortfall(1), None);
    }
}
