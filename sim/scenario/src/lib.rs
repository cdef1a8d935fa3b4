//! fleetsim-scenario: scenario files (TOML) → a validated [`Scenario`].
//!
//! The pipeline follows ripgrep's "raw flags, then validated args": the text is parsed keeping
//! every span (module `doc`), `--set` overrides are applied to that tree, a raw mirror with
//! `deny_unknown_fields` is deserialized (`raw`, leaf values in `leaf`; every number first
//! checked against its range in `ranges`), and the raw mirror is
//! validated into types that cannot hold invalid states (`model`, rules in `validate`). Every
//! problem is reported in one pass as `file:line:col: message` ([`Diagnostics`]).
//! `Scenario::agent_config` and `Scenario::server_config` (module `config`) map a scenario onto
//! the core's `AgentConfig` and `ServerConfig`, so both drivers configure the same way.
//!
//! This crate never performs a run, reads the environment or resolves secrets: a PAT is named
//! (`pat_env`, `pat_file`), and the driver reads it. It holds no protocol logic.
//!
//! ```
//! let text = "[run]\nduration = \"40s\"\n[fleet]\nagents = 20\n";
//! let s = fleetsim_scenario::load_str("demo.toml", text, &["fleet.agents=5".into()]).unwrap();
//! assert_eq!(s.fleet.agents, 5);
//! ```

mod config;
mod diag;
mod doc;
mod leaf;
mod model;
pub mod profile;
mod ranges;
mod raw;
mod validate;

use std::path::Path;
use std::sync::OnceLock;

pub use config::SCENARIO_POOL_ID;
pub use diag::{Diagnostic, Diagnostics, Origin};
pub use doc::MAX_DIAGNOSTICS;
pub use fleetsim_core::workload::Arrivals;
pub use leaf::parse_bytes;
pub use model::*;
pub use profile::{PROFILE_VERSION, Profile, ProfileError};
pub use ranges::{
    MAX_ARTIFACT_BYTES, MAX_BURST_SIZE, MAX_DURATION, MAX_LOG_LINES_PER_S, MAX_RATE_PER_S,
};
pub use validate::{DEFAULT_PAT_ENV, DEFAULT_POOL, DEFAULT_SEED, MAX_AGENTS, MAX_STATION_SIZE};

/// Scenario files larger than this are refused before parsing (a bound; real ones are a few KiB).
pub const MAX_SCENARIO_BYTES: u64 = 1 << 20;

/// Load and validate the scenario at `path`, with `overrides` (`"KEY.PATH=VALUE"`, as
/// `--set` takes them) applied on top. All problems come back at once.
pub fn load(path: impl AsRef<Path>, overrides: &[String]) -> Result<Scenario, Diagnostics> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let whole = |message: String| Diagnostics {
        items: vec![Diagnostic {
            file: name.clone(),
            origin: Origin::Whole,
            message,
        }],
    };
    let size = std::fs::metadata(path)
        .map_err(|e| whole(format!("cannot read: {e}")))?
        .len();
    if size > MAX_SCENARIO_BYTES {
        return Err(whole(format!(
            "{size} bytes is too large for a scenario (at most 1 MiB)"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| whole(format!("cannot read: {e}")))?;
    load_str(&name, &text, overrides)
}

/// Load and validate scenario `text`; `name` is what diagnostics and reports call it (a path,
/// or any label). The run name defaults to its file stem.
pub fn load_str(name: &str, text: &str, overrides: &[String]) -> Result<Scenario, Diagnostics> {
    let mut loader = doc::Loader::new(name, text, overrides);
    let raw = loader.parse(schema_value());
    let scenario =
        raw.map(|raw| validate::validate(raw, name, &stem(name), overrides, &mut loader));
    let items = loader.finish();
    match scenario {
        Some(s) if items.is_empty() => Ok(s),
        _ => Err(Diagnostics { items }),
    }
}

/// The JSON Schema of scenario files (draft 2020-12), as `fleetsim schema` prints it.
pub fn json_schema() -> serde_json::Value {
    schema_value().clone()
}

fn schema_value() -> &'static serde_json::Value {
    static SCHEMA: OnceLock<serde_json::Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let mut schema = schemars::schema_for!(raw::RawScenario).to_value();
        drop_null(&mut schema);
        schema
    })
}

/// TOML has no null: an optional field is simply left out. schemars describes `Option<T>` as
/// "T or null"; rewrite that to plain T so editors do not offer null.
fn drop_null(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(ts)) = map.get_mut("type") {
                ts.retain(|t| t != "null");
                if ts.len() == 1 {
                    let only = ts.remove(0);
                    map.insert("type".into(), only);
                }
            }
            if let Some(Value::Array(alts)) = map.get("anyOf") {
                let rest: Vec<Value> = alts
                    .iter()
                    .filter(|a| a.get("type") != Some(&Value::from("null")))
                    .cloned()
                    .collect();
                if let [only] = rest.as_slice() {
                    map.remove("anyOf");
                    if let Value::Object(inner) = only {
                        for (k, x) in inner {
                            map.entry(k.clone()).or_insert_with(|| x.clone());
                        }
                    }
                }
            }
            map.values_mut().for_each(drop_null);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null),
        _ => {}
    }
}

/// `scenarios/steady.toml` → `steady`.
fn stem(name: &str) -> String {
    Path::new(name)
        .file_stem()
        .map_or_else(|| name.to_string(), |s| s.to_string_lossy().into_owned())
}
