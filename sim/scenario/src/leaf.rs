//! Leaf values of the raw mirror that need more than serde's primitives: durations with units,
//! distribution tables, byte sizes, ratios.
//!
//! Each type parses while deserializing, so a bad value fails at the value itself and the TOML
//! deserializer attaches the value's span to the message; the loader then reports it with
//! file:line:col and carries on. Each also describes itself to JSON Schema by hand (the parsed
//! types from `fleetsim_core::dist` know nothing of schemars). This module never looks at other
//! fields: cross-field rules live in `crate::validate`.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use fleetsim_core::dist::{DurationDist, NumberDist, parse_duration};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::ranges::MAX_DURATION;

/// Names a distribution table may give in `dist`.
const DIST_NAMES: &[&str] = &["constant", "uniform", "exponential", "normal", "lognormal"];
/// Keys a distribution table may hold.
const DIST_KEYS: &[&str] = &["dist", "value", "min", "max", "mean", "stddev"];

/// A duration written with a unit (`"50s"`, `"500ms"`, `"1h30m"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RawDuration(#[serde(with = "fleetsim_core::dist::serde_duration")] pub Duration);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration string with a unit, such as \"30s\" or \"500ms\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                bounded_duration(v).map(RawDuration).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
                Err(E::custom(unitless(&v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Err(E::custom(unitless(&v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawDuration, E> {
                Err(E::custom(unitless(&v.to_string())))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for RawDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration with a unit: us, ms, s, m, h, d (e.g. \"30s\", \"1h30m\").",
            "pattern": "^(0|([0-9]+(\\.[0-9]+)?(us|µs|ms|s|sec|m|min|h|d))+)$"
        })
    }
}

/// A duration as written, at most [`MAX_DURATION`]: beyond it is a typo, and would overflow
/// the arithmetic of timers and run time.
fn bounded_duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d > MAX_DURATION {
        return Err(format!(
            "a duration is at most 365 days (\"365d\"), found {text:?}"
        ));
    }
    Ok(d)
}

fn unitless(number: &str) -> String {
    format!("a duration needs a unit: write \"{number}s\" or \"{number}ms\"")
}

/// A distribution of durations: a bare duration (constant) or a table such as
/// `{ dist = "exponential", mean = "2m" }`.
#[derive(Clone, Debug, PartialEq)]
pub struct RawDurationDist(pub DurationDist);

impl<'de> Deserialize<'de> for RawDurationDist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = toml::Value::deserialize(d)?;
        duration_dist(value)
            .map(RawDurationDist)
            .map_err(de::Error::custom)
    }
}

/// Check the shape of a duration distribution and say precisely what is wrong, then let
/// `DurationDist` build it (its own checks cover the parameter bounds).
fn duration_dist(value: toml::Value) -> Result<DurationDist, String> {
    match &value {
        toml::Value::String(s) => bounded_duration(s).map(DurationDist::constant),
        toml::Value::Integer(i) => Err(unitless(&i.to_string())),
        toml::Value::Float(x) => Err(unitless(&x.to_string())),
        toml::Value::Table(t) => {
            check_dist_table(t)?;
            for (k, v) in t.iter().filter(|(k, _)| *k != "dist") {
                match v {
                    toml::Value::String(s) => {
                        bounded_duration(s).map_err(|e| format!("`{k}`: {e}"))?;
                    }
                    toml::Value::Integer(_) | toml::Value::Float(_) => {
                        return Err(format!("`{k}`: {}", unitless(&v.to_string())));
                    }
                    other => return Err(format!("`{k}` must be a duration, not {}", kind(other))),
                }
            }
            DurationDist::deserialize(value).map_err(|e| e.message().to_string())
        }
        other => Err(format!(
            "expected a duration or a distribution table such as \
             {{ dist = \"exponential\", mean = \"2m\" }}, found {}",
            kind(other)
        )),
    }
}

impl JsonSchema for RawDurationDist {
    fn schema_name() -> Cow<'static, str> {
        "DurationDist".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let duration = generator.subschema_for::<RawDuration>();
        dist_schema(
            duration,
            "A duration distribution: a bare duration (constant) or a table.",
        )
    }
}

/// A distribution of plain numbers (counts, bytes): a bare number or a table of numbers. Byte
/// sizes may be written with a unit (`"64KiB"`, `"1MB"`) wherever a number is expected.
#[derive(Clone, Debug, PartialEq)]
pub struct RawNumberDist(pub NumberDist);

impl<'de> Deserialize<'de> for RawNumberDist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = toml::Value::deserialize(d)?;
        number_dist(value)
            .map(RawNumberDist)
            .map_err(de::Error::custom)
    }
}

fn number_dist(value: toml::Value) -> Result<NumberDist, String> {
    let value = match value {
        toml::Value::String(s) => toml::Value::Float(parse_bytes(&s)? as f64),
        toml::Value::Table(mut t) => {
            check_dist_table(&t)?;
            for (k, v) in t.iter_mut().filter(|(k, _)| *k != "dist") {
                match v {
                    toml::Value::String(s) => {
                        let n = parse_bytes(s).map_err(|e| format!("`{k}`: {e}"))?;
                        *v = toml::Value::Float(n as f64);
                    }
                    toml::Value::Integer(_) | toml::Value::Float(_) => {}
                    other => return Err(format!("`{k}` must be a number, not {}", kind(other))),
                }
            }
            toml::Value::Table(t)
        }
        toml::Value::Integer(_) | toml::Value::Float(_) => value,
        other => {
            return Err(format!(
                "expected a number or a distribution table such as \
                 {{ dist = \"uniform\", min = 1, max = 5 }}, found {}",
                kind(&other)
            ));
        }
    };
    NumberDist::deserialize(value).map_err(|e| e.message().to_string())
}

impl JsonSchema for RawNumberDist {
    fn schema_name() -> Cow<'static, str> {
        "NumberDist".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let number = generator.subschema_for::<RawBytes>();
        dist_schema(
            number,
            "A number distribution: a bare number (constant) or a table.",
        )
    }
}

/// The shared schema of both distribution kinds, over the schema of one parameter.
fn dist_schema(param: Schema, description: &str) -> Schema {
    json_schema!({
        "description": description,
        "oneOf": [
            param,
            {
                "type": "object",
                "additionalProperties": false,
                "required": ["dist"],
                "properties": {
                    "dist": { "type": "string", "enum": DIST_NAMES },
                    "value": param, "min": param, "max": param, "mean": param, "stddev": param
                }
            }
        ]
    })
}

/// Table-level checks shared by both kinds: known keys, a known `dist` name.
fn check_dist_table(t: &toml::Table) -> Result<(), String> {
    if let Some(k) = t.keys().find(|k| !DIST_KEYS.contains(&k.as_str())) {
        return Err(format!(
            "unknown key `{k}` in a distribution table; expected one of {}",
            DIST_KEYS.join(", ")
        ));
    }
    match t.get("dist") {
        None => Err(
            "a distribution table needs `dist` (one of constant, uniform, exponential, \
                     normal, lognormal)"
                .to_string(),
        ),
        Some(toml::Value::String(name)) if DIST_NAMES.contains(&name.as_str()) => Ok(()),
        Some(toml::Value::String(name)) => Err(format!(
            "unknown distribution {name:?}; expected one of {}",
            DIST_NAMES.join(", ")
        )),
        Some(other) => Err(format!("`dist` must be a string, not {}", kind(other))),
    }
}

/// A byte count: a non-negative integer, or a string with a unit (`B`, `KB`, `KiB`, `MB`, `MiB`,
/// `GB`, `GiB`; decimal units are powers of 1000, binary ones of 1024).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RawBytes(pub u64);

impl<'de> Deserialize<'de> for RawBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = RawBytes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a byte count: a number or a string such as \"64KiB\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawBytes, E> {
                parse_bytes(v).map(RawBytes).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawBytes, E> {
                Ok(RawBytes(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawBytes, E> {
                u64::try_from(v)
                    .map(RawBytes)
                    .map_err(|_| E::custom(format!("a byte count must be ≥ 0, found {v}")))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for RawBytes {
    fn schema_name() -> Cow<'static, str> {
        "Bytes".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A byte count: a number, or a string with a unit (\"64KiB\", \"1MB\").",
            "oneOf": [
                { "type": "number", "minimum": 0 },
                { "type": "string", "pattern": "^[0-9]+(\\.[0-9]+)? ?([KMG]i?)?B$" }
            ]
        })
    }
}

/// Parse `"64KiB"`, `"1.5 MB"`, `"512B"`; a bare numeric string is bytes.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| {
        format!("invalid byte size {text:?}: write e.g. 4096, \"64KiB\" or \"1MB\"")
    })?;
    let scale: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "KB" | "kB" => 1e3,
        "KiB" => 1024.0,
        "MB" => 1e6,
        "MiB" => 1024.0 * 1024.0,
        "GB" => 1e9,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "invalid byte size {text:?}: unknown unit {other:?} (use B, KB, KiB, MB, MiB, GB \
                 or GiB)"
            ));
        }
    };
    let bytes = value * scale;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(format!("invalid byte size {text:?}: out of range"));
    }
    Ok(bytes.round() as u64)
}

/// A probability or fraction in [0, 1]: a number (`0.05`) or a percentage string (`"5%"`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct RawRatio(pub f64);

impl<'de> Deserialize<'de> for RawRatio {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = RawRatio;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a fraction between 0 and 1, or a percentage such as \"5%\"")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawRatio, E> {
                ratio(v, &v.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawRatio, E> {
                ratio(v as f64, &v.to_string()).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawRatio, E> {
                ratio(v as f64, &v.to_string()).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawRatio, E> {
                let pct = v.trim().strip_suffix('%').ok_or_else(|| {
                    E::custom(format!("invalid fraction {v:?}: write 0.05 or \"5%\""))
                })?;
                let x: f64 = pct
                    .trim()
                    .parse()
                    .map_err(|_| E::custom(format!("invalid percentage {v:?}")))?;
                ratio(x / 100.0, v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

fn ratio(v: f64, written: &str) -> Result<RawRatio, String> {
    if (0.0..=1.0).contains(&v) {
        Ok(RawRatio(v))
    } else {
        Err(format!(
            "must be between 0 and 1 (or 0% and 100%), found {written}"
        ))
    }
}

impl JsonSchema for RawRatio {
    fn schema_name() -> Cow<'static, str> {
        "Ratio".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A fraction in [0, 1] or a percentage string such as \"5%\".",
            "oneOf": [
                { "type": "number", "minimum": 0, "maximum": 1 },
                { "type": "string", "pattern": "^[0-9]+(\\.[0-9]+)? ?%$" }
            ]
        })
    }
}

/// "a string", "an integer", … for messages.
pub(crate) fn kind(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dur_dist(text: &str) -> Result<DurationDist, String> {
        let v: toml::Value =
            toml::from_str::<toml::Table>(&format!("x = {text}")).unwrap()["x"].clone();
        duration_dist(v)
    }

    #[test]
    fn duration_dists_accept_bare_and_table_forms() {
        // Goal: both written forms give the distribution the text says.
        assert_eq!(
            dur_dist("\"5s\"").unwrap(),
            DurationDist::constant(Duration::from_secs(5))
        );
        let e = dur_dist("{ dist = \"exponential\", mean = \"2m\" }").unwrap();
        assert_eq!(e, DurationDist::exponential(Duration::from_secs(120)));
    }

    #[test]
    fn duration_dist_errors_name_the_problem() {
        // Goal: each kind of mistake gets a message that says what to write instead.
        let cases = [
            ("30", "a duration needs a unit: write \"30s\" or \"30ms\""),
            (
                "{ dist = \"exponential\" }",
                "`exponential` distribution needs `mean`",
            ),
            (
                "{ dist = \"zipf\", mean = \"1s\" }",
                "unknown distribution \"zipf\"",
            ),
            (
                "{ dist = \"uniform\", min = \"1s\", max = \"5 parsecs\" }",
                "`max`: invalid duration",
            ),
            (
                "{ dist = \"constant\", value = 3 }",
                "`value`: a duration needs a unit",
            ),
            (
                "{ dist = \"constant\", vale = \"1s\" }",
                "unknown key `vale`",
            ),
            ("{ mean = \"1s\" }", "needs `dist`"),
            ("true", "found a boolean"),
        ];
        for (text, want) in cases {
            let err = dur_dist(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn number_dists_read_byte_units() {
        // Goal: artifact sizes can be written with units inside and outside tables.
        let v = |t: &str| toml::from_str::<toml::Table>(&format!("x = {t}")).unwrap()["x"].clone();
        assert_eq!(number_dist(v("\"64KiB\"")).unwrap().mean(), 65536.0);
        let u = number_dist(v("{ dist = \"uniform\", min = \"1KB\", max = 3000 }")).unwrap();
        assert_eq!(u.mean(), 2000.0);
        assert!(number_dist(v("-1")).unwrap_err().contains("≥ 0"));
    }

    #[test]
    fn bytes_and_ratios_parse_units() {
        // Goal: the unit tables are what the docs say.
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("1.5 KB"), Ok(1500));
        assert_eq!(parse_bytes("42"), Ok(42));
        assert!(
            parse_bytes("3 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        let r: RawRatio = toml::from_str::<Wrap>("x = \"5%\"").unwrap().x;
        assert!((r.0 - 0.05).abs() < 1e-12);
        let e = toml::from_str::<Wrap>("x = 1.5").unwrap_err();
        assert!(e.message().contains("between 0 and 1"), "{e}");
    }

    #[derive(Debug, Deserialize)]
    struct Wrap {
        x: RawRatio,
    }
}
