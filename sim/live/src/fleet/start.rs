//! When run time zero is (`fleetsim run --start-at`): now, a wall-clock instant every shard of a
//! run shares, or an instant read from standard input once this process is ready (the barrier a
//! parent of several shards uses: it waits until every child is ready, then sends them all one
//! start time).
//!
//! A shard ready before the instant waits for it; one ready after it anchors its clock in the
//! past (run time zero stays the shared instant), so agents whose ramp-up start has passed start
//! at once, the run still ends at start + duration, and a warning says how late the shard was.
//!
//! Never reads the clock to decide anything but the anchor; never sleeps past the shutdown
//! future.

use std::future::Future;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetsim_core::codec::text::parse_iso8601_us;
use tokio::time::Instant;

/// The furthest ahead a start time may be: a typo in the date must not park a shard for a year.
pub const MAX_START_WAIT: Duration = Duration::from_secs(24 * 3_600);
/// The longest line `--start-at stdin` reads.
const MAX_LINE_BYTES: u64 = 256;

/// When run time zero is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StartAt {
    /// When this process is ready (keys loaded): a whole run's default.
    #[default]
    Ready,
    /// This many µs after the Unix epoch.
    UnixUs(u64),
    /// The instant on the first line of standard input, read once this process is ready.
    Stdin,
}

impl FromStr for StartAt {
    type Err = String;

    /// `stdin`, whole Unix seconds (`1796491200`), or RFC 3339 (`2026-12-05T15:00:00Z`, with
    /// fractional seconds and offsets).
    fn from_str(s: &str) -> Result<StartAt, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("stdin") {
            return Ok(StartAt::Stdin);
        }
        parse_instant_us(s).map(StartAt::UnixUs)
    }
}

/// An instant as µs since the Unix epoch: whole Unix seconds or RFC 3339.
pub fn parse_instant_us(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let us = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<u64>()
            .ok()
            .and_then(|secs| secs.checked_mul(1_000_000))
    } else {
        parse_iso8601_us(s).and_then(|us| u64::try_from(us).ok())
    };
    us.ok_or_else(|| {
        format!(
            "expected a start time as RFC 3339 (2026-12-05T15:00:00Z, fractional seconds and \
             offsets allowed) or whole Unix seconds (1796482800), found {s:?}"
        )
    })
}

/// Run time zero, fixed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Anchor {
    /// The monotonic instant of run time zero (in the past for a late shard).
    pub instant: Instant,
    /// The same instant as µs since the Unix epoch.
    pub unix_us: u64,
    /// How long after the asked start time this process was ready (`None`: on time, or no
    /// start time asked).
    pub late: Option<Duration>,
}

/// Why no anchor could be fixed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StartError {
    /// The shutdown future completed while waiting.
    Interrupted,
    /// A start time that cannot be honoured; the message says what to write instead.
    Refused(String),
}

/// Fix run time zero for `start`, waiting for it (or for the line on standard input) unless
/// `shutdown` completes first. `duration` is the run's length: a start time that passed longer
/// ago than that would run nothing, and is refused.
pub(crate) async fn anchor(
    start: &StartAt,
    duration: Duration,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Result<Anchor, StartError> {
    let at_us = match start {
        StartAt::Ready => {
            return Ok(Anchor {
                instant: Instant::now(),
                unix_us: unix_us(SystemTime::now()),
                late: None,
            });
        }
        StartAt::UnixUs(us) => *us,
        StartAt::Stdin => tokio::select! {
            line = read_line() => parse_instant_us(&line.map_err(StartError::Refused)?)
                .map_err(|e| StartError::Refused(format!("--start-at stdin: {e}")))?,
            () = &mut *shutdown => return Err(StartError::Interrupted),
        },
    };
    let (now, now_unix_us) = (Instant::now(), unix_us(SystemTime::now()));
    if at_us >= now_unix_us {
        let wait = Duration::from_micros(at_us - now_unix_us);
        if wait > MAX_START_WAIT {
            return Err(StartError::Refused(format!(
                "--start-at is {:.0} s away, more than the {} h a run waits: pass a start time \
                 within a day",
                wait.as_secs_f64(),
                MAX_START_WAIT.as_secs() / 3_600
            )));
        }
        let instant = now + wait;
        tokio::select! {
            () = tokio::time::sleep_until(instant) => {}
            () = &mut *shutdown => return Err(StartError::Interrupted),
        }
        return Ok(Anchor {
            instant,
            unix_us: at_us,
            late: None,
        });
    }
    let late = Duration::from_micros(now_unix_us - at_us);
    let refuse = || {
        StartError::Refused(format!(
            "--start-at passed {:.1} s ago, and the run lasts {:.1} s: nothing would run; pass a \
             later start time",
            late.as_secs_f64(),
            duration.as_secs_f64()
        ))
    };
    if late >= duration {
        return Err(refuse());
    }
    // Anchored in the past: run time is already `late` in.
    let instant = now.checked_sub(late).ok_or_else(refuse)?;
    Ok(Anchor {
        instant,
        unix_us: at_us,
        late: Some(late),
    })
}

/// The first line of standard input, at most [`MAX_LINE_BYTES`]. Read on a thread of its own,
/// detached: a blocking read cannot be cancelled, and a tokio blocking task would hold the
/// runtime's shutdown until a line came; a detached thread ends with the process.
async fn read_line() -> Result<String, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("start-at-stdin".into())
        .spawn(move || {
            use std::io::{BufRead as _, Read as _};
            let mut line = String::new();
            let read = std::io::stdin()
                .lock()
                .take(MAX_LINE_BYTES)
                .read_line(&mut line);
            let _ = tx.send(read.map(|_| line));
        })
        .map_err(|e| format!("--start-at stdin: cannot start a reader thread: {e}"))?;
    match rx.await {
        Ok(Ok(line)) if !line.is_empty() => Ok(line),
        Ok(Ok(_)) | Err(_) => {
            Err("--start-at stdin: standard input closed before a start time came".into())
        }
        Ok(Err(e)) => Err(format!("--start-at stdin: cannot read standard input: {e}")),
    }
}

fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: every documented form parses to the same instant; nonsense names what to write.
    #[test]
    fn start_times_parse_in_every_form() {
        let at = 1_796_482_800_000_000;
        for s in [
            "1796482800",
            "2026-12-05T15:00:00Z",
            "2026-12-05T16:00:00+01:00",
            " 2026-12-05T15:00:00.000000Z\n",
        ] {
            assert_eq!(s.parse::<StartAt>(), Ok(StartAt::UnixUs(at)), "{s}");
        }
        assert_eq!(
            "2026-12-05T15:00:00.25Z".parse::<StartAt>(),
            Ok(StartAt::UnixUs(at + 250_000))
        );
        assert_eq!("STDIN".parse::<StartAt>(), Ok(StartAt::Stdin));
        for bad in ["", "soon", "-5", "2026-12-05", "1.5"] {
            let e = bad.parse::<StartAt>().unwrap_err();
            assert!(e.contains("RFC 3339"), "{bad}: {e}");
        }
    }

    // Goal: a start time in the past anchors run time zero in the past (the run is already that
    // far in) and reports the lateness; one older than the run is refused; one in the future is
    // waited for; one too far ahead is refused.
    #[tokio::test(start_paused = true)]
    async fn late_early_and_absurd_start_times() {
        let mut never = std::future::pending::<()>();
        let now_us = unix_us(SystemTime::now());
        let minute = Duration::from_secs(60);
        let past = StartAt::UnixUs(now_us - 5_000_000);
        let a = anchor(&past, minute, &mut never).await.unwrap();
        let late = a.late.expect("late");
        assert!(late >= Duration::from_secs(5), "{late:?}");
        assert!(a.instant.elapsed() >= Duration::from_secs(5));
        assert_eq!(a.unix_us, now_us - 5_000_000);
        let stale = StartAt::UnixUs(now_us - 120_000_000);
        assert!(matches!(
            anchor(&stale, minute, &mut never).await,
            Err(StartError::Refused(m)) if m.contains("later start time")
        ));
        let far = StartAt::UnixUs(now_us + 2 * MAX_START_WAIT.as_micros() as u64);
        assert!(matches!(
            anchor(&far, minute, &mut never).await,
            Err(StartError::Refused(_))
        ));
        // Paused time: the wait for a future start completes by auto-advance.
        let soon = StartAt::UnixUs(unix_us(SystemTime::now()) + 30_000_000);
        let before = Instant::now();
        let a = anchor(&soon, minute, &mut never).await.unwrap();
        assert_eq!(a.late, None);
        assert!(a.instant >= before + Duration::from_secs(29));
    }

    // Goal: the shutdown future interrupts the wait for a start time.
    #[tokio::test(start_paused = true)]
    async fn shutdown_interrupts_the_wait() {
        let soon = StartAt::UnixUs(unix_us(SystemTime::now()) + 3_600_000_000);
        let mut shutdown = Box::pin(tokio::time::sleep(Duration::from_secs(1)));
        assert_eq!(
            anchor(&soon, Duration::from_secs(60), &mut shutdown)
                .await
                .unwrap_err(),
            StartError::Interrupted
        );
    }
}
