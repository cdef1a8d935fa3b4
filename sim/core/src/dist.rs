//! Durations and distributions as scenario files write them.
//!
//! Durations are strings with a unit (`"500ms"`, `"50s"`, `"2m"`, `"1h30m"`); a bare number is
//! refused because "30" is ambiguous. Distributions are tables tagged by `dist`:
//! `{ dist = "exponential", mean = "2m" }`, `{ dist = "uniform", min = "5s", max = "15s" }`,
//! `{ dist = "constant", value = "1s" }`, `{ dist = "normal", mean = "1s", stddev = "100ms" }`,
//! `{ dist = "lognormal", mean = "1s", stddev = "500ms" }`; a bare duration means constant.
//! `NumberDist` is the same with plain numbers (bytes, counts).
//!
//! Sampling uses only the caller's seeded RNG and closed-form transforms (no `rand_distr`), so a
//! seed gives the same draws on every platform this crate builds on.

use std::fmt;
use std::time::Duration;

use rand::Rng as _;
use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

/// Parse a duration with units: `us`/`µs`, `ms`, `s`, `m`, `h`, `d`, possibly compound
/// (`1h30m`) and fractional (`1.5s`). `"0"` alone is accepted.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration; write e.g. \"30s\"".to_string());
    }
    let mut total_us: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!(
                "invalid duration {text:?}: expected a number at {rest:?}"
            ));
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| {
            format!(
                "invalid duration {text:?}: bad number {:?}",
                &rest[..num_len]
            )
        })?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        let scale = match unit {
            "us" | "µs" => 1.0,
            "ms" => 1e3,
            "s" | "sec" => 1e6,
            "m" | "min" => 60e6,
            "h" => 3600e6,
            "d" => 86400e6,
            "" => {
                return Err(format!(
                    "invalid duration {text:?}: missing unit (use us, ms, s, m, h or d)"
                ));
            }
            other => {
                return Err(format!(
                    "invalid duration {text:?}: unknown unit {other:?} (use us, ms, s, m, h or d)"
                ));
            }
        };
        total_us += value * scale;
        rest = &rest[unit_len..];
    }
    if !total_us.is_finite() || total_us > u64::MAX as f64 {
        return Err(format!("invalid duration {text:?}: out of range"));
    }
    Ok(Duration::from_micros(total_us.round() as u64))
}

/// Render a duration in the shortest exact unit form `parse_duration` reads back.
pub fn format_duration(d: Duration) -> String {
    let us = d.as_micros();
    if us == 0 {
        return "0s".to_string();
    }
    for (unit, scale) in [
        ("h", 3_600_000_000u128),
        ("m", 60_000_000),
        ("s", 1_000_000),
        ("ms", 1_000),
    ] {
        if us.is_multiple_of(scale) {
            return format!("{}{unit}", us / scale);
        }
    }
    format!("{us}us")
}

/// `#[serde(with = "fleetsim_core::dist::serde_duration")]` for `Duration` fields.
pub mod serde_duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = DurationText::deserialize(d)?;
        parse_duration(&text.0).map_err(de::Error::custom)
    }
}

/// `#[serde(default, with = "fleetsim_core::dist::serde_opt_duration")]` for `Option<Duration>`.
pub mod serde_opt_duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<DurationText>::deserialize(d)?;
        text.map(|t| parse_duration(&t.0).map_err(de::Error::custom))
            .transpose()
    }
}

/// A duration as written: a string; a bare number gets a message that says what to write.
struct DurationText(String);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = DurationText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration string with a unit, such as \"30s\" or \"500ms\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationText, E> {
                Ok(DurationText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationText, E> {
                Err(E::custom(format!(
                    "a duration needs a unit: write \"{v}s\" or \"{v}ms\""
                )))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationText, E> {
                Err(E::custom(format!(
                    "a duration needs a unit: write \"{v}s\" or \"{v}ms\""
                )))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<DurationText, E> {
                Err(E::custom(format!(
                    "a duration needs a unit: write \"{v}s\""
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// The shape of a distribution, over plain `f64` values in base units (µs for durations).
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    Constant(f64),
    Uniform {
        min: f64,
        max: f64,
    },
    Exponential {
        mean: f64,
    },
    /// Normal, truncated at zero by resampling-free clamping.
    Normal {
        mean: f64,
        stddev: f64,
    },
    /// Log-normal given by the mean and standard deviation of the distribution itself.
    LogNormal {
        mu: f64,
        sigma: f64,
    },
}

impl Shape {
    fn check(self) -> Result<Shape, String> {
        let bad = |what: &str| Err(format!("distribution {what}"));
        match self {
            Shape::Constant(v) if v < 0.0 || !v.is_finite() => bad("value must be ≥ 0"),
            Shape::Uniform { min, max } if min < 0.0 || max < min => bad("needs 0 ≤ min ≤ max"),
            Shape::Exponential { mean } if mean <= 0.0 || !mean.is_finite() => {
                bad("mean must be > 0")
            }
            Shape::Normal { mean, stddev } if mean < 0.0 || stddev < 0.0 => {
                bad("needs mean ≥ 0 and stddev ≥ 0")
            }
            s => Ok(s),
        }
    }

    fn lognormal(mean: f64, stddev: f64) -> Result<Shape, String> {
        if mean <= 0.0 || stddev < 0.0 {
            return Err("lognormal distribution needs mean > 0 and stddev ≥ 0".to_string());
        }
        let sigma2 = (1.0 + (stddev / mean).powi(2)).ln();
        Ok(Shape::LogNormal {
            mu: mean.ln() - sigma2 / 2.0,
            sigma: sigma2.sqrt(),
        })
    }

    /// One draw (≥ 0).
    pub fn sample(&self, rng: &mut impl rand::RngCore) -> f64 {
        match *self {
            Shape::Constant(v) => v,
            Shape::Uniform { min, max } => min + (max - min) * unit(rng),
            Shape::Exponential { mean } => -mean * (1.0 - unit(rng)).ln(),
            Shape::Normal { mean, stddev } => (mean + stddev * std_normal(rng)).max(0.0),
            Shape::LogNormal { mu, sigma } => (mu + sigma * std_normal(rng)).exp(),
        }
    }

    /// The distribution's mean.
    pub fn mean(&self) -> f64 {
        match *self {
            Shape::Constant(v) => v,
            Shape::Uniform { min, max } => (min + max) / 2.0,
            Shape::Exponential { mean } => mean,
            Shape::Normal { mean, .. } => mean,
            Shape::LogNormal { mu, sigma } => (mu + sigma * sigma / 2.0).exp(),
        }
    }
}

/// A uniform draw in [0, 1) with 53 bits.
fn unit(rng: &mut impl rand::RngCore) -> f64 {
    rng.random::<f64>()
}

/// A standard normal draw (Box–Muller; one of the pair is discarded to keep draws independent of
/// call history).
pub(crate) fn std_normal(rng: &mut impl rand::RngCore) -> f64 {
    let u1 = 1.0 - unit(rng);
    let u2 = unit(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A distribution of durations.
#[derive(Clone, Debug, PartialEq)]
pub struct DurationDist(pub Shape);

impl DurationDist {
    pub fn constant(d: Duration) -> Self {
        DurationDist(Shape::Constant(d.as_micros() as f64))
    }
    pub fn uniform(min: Duration, max: Duration) -> Self {
        DurationDist(Shape::Uniform {
            min: min.as_micros() as f64,
            max: max.as_micros() as f64,
        })
    }
    pub fn exponential(mean: Duration) -> Self {
        DurationDist(Shape::Exponential {
            mean: mean.as_micros() as f64,
        })
    }
    pub fn sample(&self, rng: &mut impl rand::RngCore) -> Duration {
        Duration::from_micros(self.0.sample(rng).round() as u64)
    }
    pub fn mean(&self) -> Duration {
        Duration::from_micros(self.0.mean().round() as u64)
    }
}

/// A distribution of plain numbers (bytes, counts).
#[derive(Clone, Debug, PartialEq)]
pub struct NumberDist(pub Shape);

impl NumberDist {
    pub fn constant(v: f64) -> Self {
        NumberDist(Shape::Constant(v))
    }
    pub fn sample(&self, rng: &mut impl rand::RngCore) -> f64 {
        self.0.sample(rng)
    }
    pub fn mean(&self) -> f64 {
        self.0.mean()
    }
}

/// The table form, shared by both kinds; values stay untyped until the kind is known.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDist<V> {
    dist: String,
    value: Option<V>,
    min: Option<V>,
    max: Option<V>,
    mean: Option<V>,
    stddev: Option<V>,
}

impl<V> RawDist<V> {
    fn shape(self, conv: impl Fn(V) -> Result<f64, String>) -> Result<Shape, String> {
        let need = |v: Option<V>, name: &str| {
            v.ok_or_else(|| format!("`{}` distribution needs `{name}`", self.dist))
        };
        let shape = match self.dist.as_str() {
            "constant" => Shape::Constant(conv(need(self.value, "value")?)?),
            "uniform" => Shape::Uniform {
                min: conv(need(self.min, "min")?)?,
                max: conv(need(self.max, "max")?)?,
            },
            "exponential" => Shape::Exponential {
                mean: conv(need(self.mean, "mean")?)?,
            },
            "normal" => Shape::Normal {
                mean: conv(need(self.mean, "mean")?)?,
                stddev: conv(need(self.stddev, "stddev")?)?,
            },
            "lognormal" => Shape::lognormal(
                conv(need(self.mean, "mean")?)?,
                conv(need(self.stddev, "stddev")?)?,
            )?,
            other => {
                return Err(format!(
                    "unknown distribution {other:?} (use constant, uniform, exponential, normal \
                     or lognormal)"
                ));
            }
        };
        shape.check()
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationDistText {
    Bare(String),
    Table(RawDist<String>),
}

impl<'de> Deserialize<'de> for DurationDist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let us = |s: String| parse_duration(&s).map(|d| d.as_micros() as f64);
        let shape = match DurationDistText::deserialize(d)? {
            DurationDistText::Bare(s) => Shape::Constant(us(s).map_err(de::Error::custom)?),
            DurationDistText::Table(t) => t.shape(us).map_err(de::Error::custom)?,
        };
        Ok(DurationDist(shape))
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberDistText {
    Bare(f64),
    Table(RawDist<f64>),
}

impl<'de> Deserialize<'de> for NumberDist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let shape = match NumberDistText::deserialize(d)? {
            NumberDistText::Bare(v) => Shape::Constant(v).check().map_err(de::Error::custom)?,
            NumberDistText::Table(t) => t.shape(Ok).map_err(de::Error::custom)?,
        };
        Ok(NumberDist(shape))
    }
}

/// Serialised as the table form, durations rendered with units.
impl Serialize for DurationDist {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let f = |us: f64| format_duration(Duration::from_micros(us.round() as u64));
        serialize_shape(&self.0, f, s)
    }
}

impl Serialize for NumberDist {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_shape(&self.0, |v| v, s)
    }
}

fn serialize_shape<S: Serializer, V: Serialize>(
    shape: &Shape,
    f: impl Fn(f64) -> V,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(None)?;
    match *shape {
        Shape::Constant(v) => {
            m.serialize_entry("dist", "constant")?;
            m.serialize_entry("value", &f(v))?;
        }
        Shape::Uniform { min, max } => {
            m.serialize_entry("dist", "uniform")?;
            m.serialize_entry("min", &f(min))?;
            m.serialize_entry("max", &f(max))?;
        }
        Shape::Exponential { mean } => {
            m.serialize_entry("dist", "exponential")?;
            m.serialize_entry("mean", &f(mean))?;
        }
        Shape::Normal { mean, stddev } => {
            m.serialize_entry("dist", "normal")?;
            m.serialize_entry("mean", &f(mean))?;
            m.serialize_entry("stddev", &f(stddev))?;
        }
        Shape::LogNormal { mu, sigma } => {
            let mean = (mu + sigma * sigma / 2.0).exp();
            let sd = mean * ((sigma * sigma).exp() - 1.0).sqrt();
            m.serialize_entry("dist", "lognormal")?;
            m.serialize_entry("mean", &f(mean))?;
            m.serialize_entry("stddev", &f(sd))?;
        }
    }
    m.end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{StreamKind, stream};

    #[test]
    fn durations_parse_with_units_and_refuse_bare_numbers() {
        assert_eq!(parse_duration("50s"), Ok(Duration::from_secs(50)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("30").unwrap_err().contains("missing unit"));
        assert!(
            parse_duration("5 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn format_round_trips() {
        for s in ["2h", "90s", "1500ms", "7us", "0s", "3m"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d, "{s}");
        }
    }

    #[derive(Deserialize, Serialize, Debug, PartialEq)]
    struct T {
        #[serde(with = "serde_duration")]
        hold: Duration,
        d: DurationDist,
        n: NumberDist,
    }

    #[test]
    fn tables_deserialize_and_round_trip() {
        let t: T = serde_json::from_str(
            r#"{"hold":"50s","d":{"dist":"exponential","mean":"2m"},"n":{"dist":"uniform","min":1,"max":3}}"#,
        )
        .unwrap();
        assert_eq!(t.hold, Duration::from_secs(50));
        assert_eq!(t.d.mean(), Duration::from_secs(120));
        assert_eq!(t.n.mean(), 2.0);
        let back: T = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
        let bare: DurationDist = serde_json::from_str(r#""5s""#).unwrap();
        assert_eq!(bare, DurationDist::constant(Duration::from_secs(5)));
    }

    #[test]
    fn bad_tables_say_what_is_wrong() {
        let e = serde_json::from_str::<DurationDist>(r#"{"dist":"exponential"}"#).unwrap_err();
        assert!(e.to_string().contains("needs `mean`"), "{e}");
        let e = serde_json::from_str::<DurationDist>(r#"{"dist":"zipf","mean":"1s"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown distribution"), "{e}");
        let e = serde_json::from_str::<T>(r#"{"hold":30,"d":"1s","n":1}"#).unwrap_err();
        assert!(e.to_string().contains("needs a unit"), "{e}");
    }

    #[test]
    fn sample_means_converge() {
        // Goal: each shape's sampler has the mean it claims (5σ tolerance over 200k draws).
        let mut rng = stream(1, StreamKind::Jobs, 0);
        let shapes = [
            Shape::Uniform {
                min: 5.0,
                max: 15.0,
            },
            Shape::Exponential { mean: 10.0 },
            Shape::Normal {
                mean: 10.0,
                stddev: 2.0,
            },
            Shape::lognormal(10.0, 5.0).unwrap(),
        ];
        for s in shapes {
            let n = 200_000;
            let xs: Vec<f64> = (0..n).map(|_| s.sample(&mut rng)).collect();
            let m = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n as f64;
            let se = (var / n as f64).sqrt();
            assert!(
                (m - s.mean()).abs() < 5.0 * se,
                "{s:?}: mean {m} vs {}",
                s.mean()
            );
        }
    }
}
