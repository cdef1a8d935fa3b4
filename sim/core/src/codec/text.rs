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

#[cfg(test)]
mod tests {
    use super::*;

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
