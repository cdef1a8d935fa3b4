//! Pickup latency from the server's own clock, for jobs the fleet did not queue (a `server` or
//! `pipelines` source, or jobs someone else queued): the job request's `queueTime` to its
//! `receiveTime` (when the server handed the job to an agent; `assignTime` when no receive time
//! is given), as the pool's job-requests list returns them.
//!
//! Both times come from one clock (the server's), so the difference is sound whatever the skew
//! between the fleet's and the server's clocks; it never mixes the two. Pure: parses text, reads
//! no clock.

use std::time::Duration;

use crate::codec::text::parse_iso8601_us;
use crate::proto::TaskAgentJobRequest;

/// The pickup latency the server's times give for `job`, if it has a queue time and a receive
/// (or assign) time, in order.
pub fn server_pickup(job: &TaskAgentJobRequest) -> Option<Duration> {
    let queued = parse_iso8601_us(job.queue_time.as_deref()?)?;
    let end = job.receive_time.as_deref().or(job.assign_time.as_deref())?;
    let picked = parse_iso8601_us(end)?;
    let us = picked.checked_sub(queued)?;
    u64::try_from(us).ok().map(Duration::from_micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the server pickup is receive − queue (assign when there is no receive time), and a
    // job without both times, or with them out of order, gives none.
    #[test]
    fn server_pickup_uses_the_servers_times() {
        let job = |q: Option<&str>, a: Option<&str>, r: Option<&str>| TaskAgentJobRequest {
            queue_time: q.map(Into::into),
            assign_time: a.map(Into::into),
            receive_time: r.map(Into::into),
            ..TaskAgentJobRequest::default()
        };
        let q = Some("2026-01-01T00:00:01.000Z");
        assert_eq!(
            server_pickup(&job(
                q,
                Some("2026-01-01T00:00:02Z"),
                Some("2026-01-01T00:00:03.5Z")
            )),
            Some(Duration::from_millis(2_500))
        );
        assert_eq!(
            server_pickup(&job(q, Some("2026-01-01T00:00:02Z"), None)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(server_pickup(&job(q, None, None)), None);
        assert_eq!(
            server_pickup(&job(None, None, Some("2026-01-01T00:00:02Z"))),
            None
        );
        assert_eq!(
            server_pickup(&job(q, None, Some("2026-01-01T00:00:00Z"))),
            None
        );
    }
}
