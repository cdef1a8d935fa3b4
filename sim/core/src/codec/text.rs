//! Small pure text helpers for the codec: percent-encoding, query and form parsing, HTTP Basic,
//! and Unix milliseconds rendered as ISO-8601 UTC (no date library needed for one format).
//!
//! Nothing here allocates without bound beyond its input, and nothing panics on any input.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Characters left as they are by [`percent_encode`] (RFC 3986 unreserved).
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Percent-encode every byte but the unreserved ones (a path segment or query value).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if is_unreserved(b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(
                char::from_digit(u32::from(b >> 4), 16)
                    .unwrap_or('0')
                    .to_ascii_uppercase(),
            );
            out.push(
                char::from_digit(u32::from(b & 15), 16)
                    .unwrap_or('0')
                    .to_ascii_uppercase(),
            );
        }
    }
    out
}

/// Decode `%XX` escapes (and `+` as a space when `plus_is_space`, as forms write it). `None`
/// for a broken escape or bytes that are not UTF-8.
pub fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    if !text.contains(['%', '+']) {
        return Some(text.to_string());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hi = (hex[0] as char).to_digit(16)?;
                let lo = (hex[1] as char).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// `a=1&b=x%20y` → pairs, decoded. `None` when an escape is broken.
pub fn parse_pairs(text: &str, plus_is_space: bool) -> Option<Vec<(String, String)>> {
    text.split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            Some((
                percent_decode(k, plus_is_space)?,
                percent_decode(v, plus_is_space)?,
            ))
        })
        .collect()
}

/// Pairs → `a=1&b=x%20y`.
pub fn join_pairs(pairs: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&percent_encode(k));
        out.push('=');
        out.push_str(&percent_encode(v));
    }
    out
}

/// The value of `name` (case-insensitive, as the service reads query parameters).
pub fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `Basic base64(user:password)` header value.
pub fn basic_header(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// The credentials of a `Basic` header's payload, if well formed.
pub fn parse_basic(payload: &str) -> Option<(String, String)> {
    let raw = STANDARD.decode(payload.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Unix milliseconds as ISO-8601 UTC with milliseconds: `2026-11-25T21:22:00.000Z`.
pub fn iso8601_utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Cut `text` to at most `max` bytes on a character boundary (error messages stay bounded).
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
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

    // Goal: encoding then decoding gives the input back for awkward text, and broken escapes
    // are refused instead of panicking.
    #[test]
    fn percent_round_trip_and_broken_escapes() {
        for s in ["plain", "a b/c?d&e=f", "ünïcødé", "100%", "+plus+", ""] {
            assert_eq!(
                percent_decode(&percent_encode(s), false).as_deref(),
                Some(s)
            );
        }
        assert_eq!(percent_decode("a+b", true).as_deref(), Some("a b"));
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
        for bad in ["%", "%4", "%zz", "%ff%fe"] {
            assert_eq!(percent_decode(bad, false), None, "{bad}");
        }
    }

    // Goal: query parameters are found case-insensitively, valueless keys read as empty.
    #[test]
    fn pairs_parse_and_join() {
        let pairs = parse_pairs("sessionId=abc&lastMessageId=7&flag", false).unwrap();
        assert_eq!(param(&pairs, "SESSIONID"), Some("abc"));
        assert_eq!(param(&pairs, "flag"), Some(""));
        assert_eq!(param(&pairs, "missing"), None);
        let joined = join_pairs(&[("a", "x y".into()), ("b", "1".into())]);
        assert_eq!(joined, "a=x%20y&b=1");
    }

    // Goal: Basic credentials round-trip, the password may contain ':'; garbage is None.
    #[test]
    fn basic_credentials_round_trip() {
        let header = basic_header("VstsAgent", "pa:ss");
        let payload = header.strip_prefix("Basic ").unwrap();
        assert_eq!(
            parse_basic(payload),
            Some(("VstsAgent".into(), "pa:ss".into()))
        );
        assert_eq!(parse_basic("!!!"), None);
        assert_eq!(parse_basic(&STANDARD.encode("nocolon")), None);
    }

    // Goal: the calendar arithmetic matches known instants, leap days included.
    #[test]
    fn iso8601_matches_known_instants() {
        assert_eq!(iso8601_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso8601_utc(1_795_641_720_000), "2026-11-25T21:22:00.000Z");
        assert_eq!(iso8601_utc(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    // Goal: truncation never splits a character.
    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
