//! Calibration profiles: what `fleetsim calibrate` measured on a live target, and the server
//! capacity model (`[[server.stations]]`) derived from it, which `fleetsim simulate --profile`
//! and `fleetsim plan --profile` put in place of a scenario's own stations.
//!
//! A profile is a small, versioned TOML file. Its content holds no date, so calibrating the same
//! target twice with the same settings differs only by measurement noise; the date is in the
//! leading comment. The model it states:
//!
//! - one station, `server`, serves every operation; its `workers` come from the utilisation law
//!   (workers = saturation throughput × mean low-load service time of the probe operation,
//!   rounded, at least 1);
//! - each operation's service time is its low-load round trip as the fleet measured it
//!   (client encode + loopback + server + decode; nothing is subtracted), fitted as a
//!   log-normal on the measured median and 90th percentile;
//! - long polls (`poll_message`, `poll_empty`) are measured with their hold, which is not
//!   service time, so they get the probe's low-load latency instead.
//!
//! Where more was measured, the stations are one per route group instead: from the emulator's
//! per-route busy time (`demand`), or from one saturation ramp per group against a target
//! (`routes`, each group's workers by the utilisation law; groups that could not be ramped are
//! listed in `unramped` and keep the single `server` station).
//!
//! Applying a profile is done with a scenario override (`server.stations=[…]`, see
//! [`Profile::overrides`]) placed before the user's own `--set`s, so the scenario's validation
//! rules check the profile's stations exactly as they check a file's, and a `--set` on
//! `server.stations[0].workers` still works on top of a profile.
//!
//! This module never measures anything and never runs a simulation.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use fleetsim_core::dist::DurationDist;
use fleetsim_core::ops::Operation;
use serde::{Deserialize, Serialize};

/// The profile format this build reads and writes.
pub const PROFILE_VERSION: u32 = 1;

/// Profiles larger than this are refused before parsing (real ones are a few KiB).
pub const MAX_PROFILE_BYTES: u64 = 1 << 20;

/// A calibration profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Format version; must be [`PROFILE_VERSION`].
    pub version: u32,
    /// The calibrated target's base URL, or `"embedded"` for the embedded emulator.
    pub target: String,
    /// The saturation ramp and what it yields.
    pub saturation: Saturation,
    /// Low-load round trips per operation (report names), as measured.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub operations: BTreeMap<String, MeasuredOp>,
    /// Server-side service demand per route group, where the target reported it (fleetsim's
    /// emulator); absent in profiles of other targets and in older profiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demand: Option<Demand>,
    /// One saturation ramp per route group (station name), where calibrate ran them against a
    /// target that reports no busy time; `registration` is the ramp of `saturation`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub routes: BTreeMap<String, Saturation>,
    /// Route groups that could not be ramped, with the reason; their operations are served
    /// by the `server` station.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unramped: BTreeMap<String, String>,
    /// The capacity model, in `[[server.stations]]` form.
    pub stations: Vec<ProfileStation>,
}

/// What each route group cost the server during the calibration's fleet run, from the
/// emulator's own per-route busy time (decode, core, encode; a long poll's hold left out).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Demand {
    /// Cores the server had (its process's available parallelism).
    pub cores: u32,
    /// Requests per second the target can answer at the measured mix: `cores / mean demand`
    /// (the demand-law bound) for a server with its cores to itself; where the clients share
    /// the server's process (the embedded emulator),
    /// `(cores_obtained − fixed_cores) / cpu_per_request_s`.
    pub capacity_per_s: f64,
    /// Cores the calibrating process obtained at the ramp's saturated step (CPU time over
    /// wall time): what a shared or busy machine actually gives, at most `cores`. Embedded
    /// emulator only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores_obtained: Option<f64>,
    /// CPU time the whole process (agents and emulator) spends per additional request at the
    /// fleet runs' mix: the slope between the low-load run and one four times busier (their
    /// steady parts). Embedded emulator only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_per_request_s: Option<f64>,
    /// Cores the process uses whatever its load (the same line's intercept). Embedded
    /// emulator only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_cores: Option<f64>,
    /// `cpu_per_request_s` over the emulator's own mean demand: what every group's demand is
    /// multiplied by when the clients' CPU comes from the same cores (1 when it does not).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub client_factor: f64,
    /// Route group (station name) → its measured demand.
    pub groups: BTreeMap<String, GroupDemand>,
}

fn one() -> f64 {
    1.0
}

fn is_one(x: &f64) -> bool {
    *x == 1.0
}

/// One route group's measured demand.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupDemand {
    /// Requests timed.
    pub requests: u64,
    /// Mean busy time per request, seconds.
    pub mean_s: f64,
    /// Squared coefficient of variation of the busy time.
    pub scv: f64,
    /// This group's share of all busy time (the share of the cores its station is given).
    pub share: f64,
}

/// The closed-loop saturation ramp on the probe operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Saturation {
    /// The operation the ramp sent (report name).
    pub probe: String,
    /// Mean round trip of the probe with one client (the low-load service time).
    pub low_load_latency_s: f64,
    /// The highest throughput of the ramp.
    pub throughput_per_s: f64,
    /// The concurrency that reached it.
    pub concurrency: u32,
    /// `throughput_per_s × low_load_latency_s`, before rounding to `workers`.
    pub busy_workers: f64,
    /// Every step of the ramp, in order.
    #[serde(default)]
    pub ramp: Vec<RampStep>,
}

/// One step of the saturation ramp.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RampStep {
    /// Clients in closed loop.
    pub concurrency: u32,
    /// Completed requests per second.
    pub throughput_per_s: f64,
    /// Mean round trip.
    pub mean_latency_s: f64,
    /// Requests that failed (any error).
    #[serde(default)]
    pub errors: u64,
    /// Cores the calibrating process used during the step (CPU time over wall time), where
    /// clients and server share it (the embedded emulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_cores: Option<f64>,
}

/// One operation's low-load round trip.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasuredOp {
    /// Samples.
    pub count: u64,
    pub mean_s: f64,
    pub p50_s: f64,
    pub p90_s: f64,
    pub p99_s: f64,
}

/// A station, as `[[server.stations]]` spells it (operation names as strings).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileStation {
    /// Unique name.
    pub name: String,
    /// Parallel workers (≥ 1).
    pub workers: u32,
    /// Requests waiting beyond the workers; absent = unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_limit: Option<u32>,
    /// `"unavailable"` or `"throttled"`; absent = the scenario default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shed: Option<String>,
    /// Operations served; absent = every operation no other station lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<Vec<String>>,
    /// Service time of operations `service_by_op` does not name.
    pub service: DurationDist,
    /// Per-operation service times.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_by_op: BTreeMap<String, DurationDist>,
}

/// Why a profile could not be read, checked or written.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProfileError {
    /// The file could not be read or written.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Larger than [`MAX_PROFILE_BYTES`].
    TooLarge { path: PathBuf, bytes: u64 },
    /// Not TOML of the profile's shape (`line:col` when known).
    Parse {
        line: usize,
        col: usize,
        message: String,
    },
    /// Written by another format version.
    Version { found: u32 },
    /// Well-formed but unusable (an unknown operation, zero workers, no station).
    Invalid(String),
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProfileError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            ProfileError::TooLarge { path, bytes } => write!(
                f,
                "{}: {bytes} bytes is too large for a profile (at most 1 MiB)",
                path.display()
            ),
            ProfileError::Parse { line, col, message } => write!(f, "{line}:{col}: {message}"),
            ProfileError::Version { found } => write!(
                f,
                "profile version {found} is not supported (this build reads version \
                 {PROFILE_VERSION}); calibrate again"
            ),
            ProfileError::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ProfileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProfileError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Profile {
    /// Read and check the profile at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Profile, ProfileError> {
        let path = path.as_ref();
        let io = |source| ProfileError::Io {
            path: path.into(),
            source,
        };
        let bytes = std::fs::metadata(path).map_err(io)?.len();
        if bytes > MAX_PROFILE_BYTES {
            return Err(ProfileError::TooLarge {
                path: path.into(),
                bytes,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Profile::from_toml(&text)
    }

    /// Parse and check profile `text`.
    pub fn from_toml(text: &str) -> Result<Profile, ProfileError> {
        // The version is read on its own first, so a future format gets the version message
        // rather than a complaint about a field this build does not know.
        #[derive(Deserialize)]
        struct Version {
            version: Option<u32>,
        }
        let parse_err = |e: toml::de::Error| {
            let (line, col) = e.span().map_or((1, 1), |s| line_col(text, s.start));
            ProfileError::Parse {
                line,
                col,
                message: e.message().trim_end().to_string(),
            }
        };
        let v: Version = toml::from_str(text).map_err(parse_err)?;
        match v.version {
            Some(PROFILE_VERSION) => {}
            Some(found) => return Err(ProfileError::Version { found }),
            None => {
                return Err(ProfileError::Invalid(
                    "not a fleetsim profile: no `version`".into(),
                ));
            }
        }
        let profile: Profile = toml::from_str(text).map_err(parse_err)?;
        profile.check()?;
        Ok(profile)
    }

    /// The file's text: a comment naming the tool and `generated` (free text, e.g. a date),
    /// then the profile.
    pub fn to_toml(&self, generated: &str) -> Result<String, ProfileError> {
        let body = toml::to_string_pretty(self)
            .map_err(|e| ProfileError::Invalid(format!("cannot render the profile: {e}")))?;
        let mut out = String::new();
        out.push_str("# fleetsim calibration profile (written by `fleetsim calibrate`");
        if !generated.is_empty() {
            out.push_str(", ");
            out.push_str(&generated.replace('\n', " "));
        }
        out.push_str(").\n# Use it with `fleetsim simulate --profile FILE` or `fleetsim plan --profile FILE`;\n");
        out.push_str("# its [[stations]] replace the scenario's [[server.stations]].\n");
        for (group, why) in &self.unramped {
            out.push_str(&format!(
                "# Route group {group:?} was not ramped ({}); its operations are served by \
                 station \"server\".\n",
                why.replace('\n', " ")
            ));
        }
        out.push('\n');
        out.push_str(&body);
        Ok(out)
    }

    /// Write the profile to `path` (see [`Profile::to_toml`]).
    pub fn save(&self, path: impl AsRef<Path>, generated: &str) -> Result<(), ProfileError> {
        let path = path.as_ref();
        let text = self.to_toml(generated)?;
        std::fs::write(path, text).map_err(|source| ProfileError::Io {
            path: path.into(),
            source,
        })
    }

    /// Everything a scenario could not catch later: the version, at least one station, known
    /// operation names, workers in range.
    pub fn check(&self) -> Result<(), ProfileError> {
        if self.version != PROFILE_VERSION {
            return Err(ProfileError::Version {
                found: self.version,
            });
        }
        if self.stations.is_empty() {
            return Err(ProfileError::Invalid(
                "the profile has no [[stations]]".into(),
            ));
        }
        let op = |name: &str, station: &str| {
            Operation::from_name(name).map(|_| ()).ok_or_else(|| {
                ProfileError::Invalid(format!("station {station:?}: unknown operation {name:?}"))
            })
        };
        for s in &self.stations {
            if s.workers == 0 || s.workers > crate::MAX_STATION_SIZE {
                return Err(ProfileError::Invalid(format!(
                    "station {:?}: workers must be between 1 and {}",
                    s.name,
                    crate::MAX_STATION_SIZE
                )));
            }
            for name in s.ops.iter().flatten().chain(s.service_by_op.keys()) {
                op(name, &s.name)?;
            }
        }
        Ok(())
    }

    /// The scenario override that installs this profile's stations: `server.stations=[…]` as
    /// one inline TOML array. Put it before the user's overrides (see [`Profile::apply`]).
    pub fn stations_override(&self) -> Result<String, ProfileError> {
        let value = toml::Value::try_from(&self.stations)
            .map_err(|e| ProfileError::Invalid(format!("cannot render the stations: {e}")))?;
        Ok(format!("server.stations={value}"))
    }

    /// `overrides` with this profile's stations override in front, ready for
    /// `fleetsim_scenario::load`.
    pub fn apply(&self, overrides: &[String]) -> Result<Vec<String>, ProfileError> {
        let mut all = Vec::with_capacity(overrides.len() + 1);
        all.push(self.stations_override()?);
        all.extend_from_slice(overrides);
        Ok(all)
    }
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = (0..=at.min(text.len()))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample() -> Profile {
        let mut by_op = BTreeMap::new();
        by_op.insert(
            "register".to_string(),
            DurationDist::exponential(Duration::from_micros(900)),
        );
        Profile {
            version: PROFILE_VERSION,
            target: "embedded".into(),
            saturation: Saturation {
                probe: "pool_lookup".into(),
                low_load_latency_s: 0.0004,
                throughput_per_s: 5000.0,
                concurrency: 8,
                busy_workers: 2.0,
                ramp: vec![RampStep {
                    concurrency: 1,
                    throughput_per_s: 2500.0,
                    mean_latency_s: 0.0004,
                    errors: 0,
                    process_cores: Some(1.5),
                }],
            },
            operations: BTreeMap::new(),
            routes: BTreeMap::new(),
            unramped: BTreeMap::from([("job".to_string(), "no job source".to_string())]),
            // The demand table round-trips too (the validation script reads its capacity).
            demand: Some(Demand {
                cores: 2,
                capacity_per_s: 40_000.0,
                cores_obtained: Some(1.5),
                cpu_per_request_s: Some(0.0001),
                fixed_cores: Some(0.01),
                client_factor: 2.0,
                groups: BTreeMap::from([(
                    "poll".to_string(),
                    GroupDemand {
                        requests: 10,
                        mean_s: 0.00005,
                        scv: 0.5,
                        share: 1.0,
                    },
                )]),
            }),
            stations: vec![ProfileStation {
                name: "server".into(),
                workers: 2,
                queue_limit: None,
                shed: None,
                ops: None,
                service: DurationDist::exponential(Duration::from_micros(400)),
                service_by_op: by_op,
            }],
        }
    }

    #[test]
    fn a_profile_round_trips_through_its_file_text() {
        // Goal: what `calibrate` writes, `simulate --profile` reads back unchanged.
        let p = sample();
        let text = p.to_toml("test").unwrap();
        assert!(text.starts_with("# fleetsim calibration profile"));
        assert_eq!(Profile::from_toml(&text).unwrap(), p);
    }

    #[test]
    fn the_stations_override_replaces_the_scenarios_stations() {
        // Goal: applying a profile gives the scenario exactly the profile's stations, checked
        // by the scenario's own rules, and a later --set still works on top.
        let text = "[run]\nduration = \"1m\"\n[[server.stations]]\nname = \"old\"\nworkers = 9\n";
        let overrides = sample()
            .apply(&["server.stations[0].workers=3".to_string()])
            .unwrap();
        let s = crate::load_str("p.toml", text, &overrides).unwrap();
        assert_eq!(s.server.stations.len(), 1);
        let st = &s.server.stations[0];
        assert_eq!((st.name.as_str(), st.workers), ("server", 3));
        assert_eq!(
            st.service_for(Operation::Register).mean(),
            Duration::from_micros(900)
        );
        assert_eq!(
            st.service_for(Operation::KeepAlive).mean(),
            Duration::from_micros(400)
        );
    }

    #[test]
    fn bad_profiles_are_typed_errors() {
        // Goal: another version, an unknown operation, zero workers and broken TOML are each
        // refused with a message that says which, never a panic.
        let good = sample().to_toml("").unwrap();
        let v2 = good.replace("version = 1", "version = 2");
        assert!(matches!(
            Profile::from_toml(&v2),
            Err(ProfileError::Version { found: 2 })
        ));
        let bad_op = good.replace("register", "regster");
        let err = Profile::from_toml(&bad_op).unwrap_err();
        assert!(
            err.to_string().contains("unknown operation \"regster\""),
            "{err}"
        );
        let zero = good.replace("workers = 2", "workers = 0");
        assert!(
            Profile::from_toml(&zero)
                .unwrap_err()
                .to_string()
                .contains("workers")
        );
        let broken = Profile::from_toml("version = 1\nstations = [").unwrap_err();
        assert!(
            matches!(broken, ProfileError::Parse { line: 2, .. }),
            "{broken}"
        );
        let none = Profile::from_toml("target = \"x\"\n").unwrap_err();
        assert!(none.to_string().contains("no `version`"), "{none}");
    }
}
