//! Pickup latency from the server's own clock, for jobs the fleet did not queue (a `server` or
//! `pipelines` source, or jobs someone else queued): the job request's `queueTime` to its
//! `receiveTime` (when the server handed the job to an agent; `assignTime` when no receive time
//! is given), as the pool's job-requests list returns them.
//!
//! Both times come from one clock (the server's), so the difference is sound whatever the skew
//! between the fleet's and the server's clocks; it never mixes the two. Pure: parses text, reads
//! no clock.

use std::time::Duration;

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

/// An ISO 8601 / RFC 3339 date-time (`2026-01-01T00:00:05.1234567Z`, `…+02:00`, or no zone =
/// UTC, as .NET writes them) as microseconds since the Unix epoch; `None` when malformed.
pub fn parse_iso8601_us(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, rest) = text.split_once(['T', 't', ' '])?;
    let mut ymd = date.splitn(3, '-');
    let year: i64 = ymd.next()?.parse().ok()?;
    let month: u32 = ymd.next()?.parse().ok()?;
    let day: u32 = ymd.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // The zone: `Z`, `+hh:mm`, `-hh:mm`, or none (UTC).
    let (clock, offset_s) = match rest.find(['Z', 'z', '+', '-']) {
        Some(i) => {
            let (clock, zone) = rest.split_at(i);
            (clock, zone_offset_s(zone)?)
        }
        None => (rest, 0),
    };
    let mut hms = clock.splitn(3, ':');
    let hour: i64 = hms.next()?.parse().ok()?;
    let minute: i64 = hms.next()?.parse().ok()?;
    let seconds = hms.next().unwrap_or("0");
    let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, ""));
    let second: i64 = whole.parse().ok()?;
    if hour > 23 || minute > 59 || second > 60 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Microseconds from the first six fraction digits (padded), the rest dropped.
    let micros: i64 = format!("{:0<6}", &fraction[..fraction.len().min(6)])
        .parse()
        .ok()?;
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_s;
    Some(secs * 1_000_000 + micros)
}

/// `Z` → 0, `+hh:mm` / `-hh:mm` / `+hhmm` → seconds east of UTC.
fn zone_offset_s(zone: &str) -> Option<i64> {
    if zone.eq_ignore_ascii_case("z") {
        return Some(0);
    }
    let sign = match zone.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: String = zone[1..].chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 {
        return None;
    }
    let hours: i64 = digits[..2].parse().ok()?;
    let minutes: i64 = digits[2..].parse().ok()?;
    Some(sign * (hours * 3_600 + minutes * 60))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the forms servers write parse to the same instant: the emulator's milliseconds,
    // .NET's seven fraction digits, offsets and no zone; nonsense is refused, not guessed.
    #[test]
    fn iso8601_forms_parse_to_the_instant() {
        let base = parse_iso8601_us("2026-11-25T21:22:03Z").unwrap();
        assert_eq!(base, 1_795_641_723 * 1_000_000);
        assert_eq!(
            parse_iso8601_us("2026-11-25T21:22:03.250Z"),
            Some(base + 250_000)
        );
        assert_eq!(
            parse_iso8601_us("2026-11-25T21:22:03.1234567Z"),
            Some(base + 123_456)
        );
        assert_eq!(parse_iso8601_us("2026-11-25T23:22:03+02:00"), Some(base));
        assert_eq!(parse_iso8601_us("2026-11-25T21:22:03"), Some(base));
        assert_eq!(
            parse_iso8601_us("2000-02-29T00:00:00Z"),
            Some(951_782_400 * 1_000_000)
        );
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-25T25:00:00Z",
        ] {
            assert_eq!(parse_iso8601_us(bad), None, "{bad}");
        }
    }

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
