//! Loading the emulator's configuration: `server.toml` read into the core's `ServerConfig`
//! (whose serde shape, defaults and `deny_unknown_fields` live in `fleetsim-core`), with parse
//! errors that carry `file:line:col`, and the no-file fallback to the `FLEETSIM_PAT`
//! environment variable.
//!
//! Decision: with neither a file nor `FLEETSIM_PAT`, loading fails with an error that tells the
//! user what to do, rather than inventing a PAT and printing it: a generated secret printed to
//! a terminal ends up in CI logs, and a load test that silently uses a throwaway credential is
//! harder to reproduce. With a file, the file alone decides (the variable is ignored).
//!
//! This module reads one file and never touches the network or the process environment: the
//! caller passes the variable's value in.

use std::ops::Range;
use std::path::{Path, PathBuf};

use fleetsim_core::server::{ConfigError, ServerConfig};
use serde::de::DeserializeOwned;
use thiserror::Error;

/// Largest configuration file read; a bigger one is a mistake (or not a config file).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The environment variable holding a PAT with every scope when no file is given.
pub const PAT_ENV_VAR: &str = "FLEETSIM_PAT";

/// Why the configuration could not be loaded. `Display` is meant for a person at a terminal.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is larger than {max} bytes", max = MAX_CONFIG_BYTES)]
    TooLarge { path: PathBuf },
    /// The TOML is malformed or does not fit `ServerConfig`; `line`/`col` are 1-based.
    #[error("{path}:{line}:{col}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },
    /// The TOML parsed but the values are inconsistent (duplicate pools, unknown scopes, …).
    #[error("{path}: {source}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: ConfigError,
    },
    #[error(
        "no credentials configured: set {PAT_ENV_VAR} to the personal access token agents and \
         admins will use, or pass --config server.toml with [[pats]] entries"
    )]
    NoCredentials,
}

/// Read, parse and validate `path` into a `ServerConfig`.
pub fn load(path: &Path) -> Result<ServerConfig, ConfigFileError> {
    let text = read_bounded(path)?;
    let config: ServerConfig = parse(&text, path)?;
    config
        .validate()
        .map_err(|source| ConfigFileError::Invalid {
            path: path.into(),
            source,
        })?;
    Ok(config)
}

/// The configuration `fleetsim serve` runs with: the file when one is given; otherwise a PAT
/// with every scope from `env_pat` (the value of `FLEETSIM_PAT`; empty counts as unset);
/// otherwise `ConfigFileError::NoCredentials`.
pub fn resolve(
    config_path: Option<&Path>,
    env_pat: Option<&str>,
) -> Result<ServerConfig, ConfigFileError> {
    match (config_path, env_pat.filter(|p| !p.trim().is_empty())) {
        (Some(path), _) => load(path),
        (None, Some(pat)) => Ok(ServerConfig::with_env_pat(pat.trim().to_string())),
        (None, None) => Err(ConfigFileError::NoCredentials),
    }
}

/// Parse TOML `text` (read from `path`, used only in messages) into `T`, mapping the error's
/// byte span to a line and column.
pub fn parse<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigFileError> {
    toml::from_str(text).map_err(|err| {
        let (line, col) = err.span().map_or((1, 1), |span| line_col(text, span));
        ConfigFileError::Parse {
            path: path.into(),
            line,
            col,
            message: err.message().trim_end().to_string(),
        }
    })
}

/// 1-based line and column (in characters) of the start of `span` in `text`.
fn line_col(text: &str, span: Range<usize>) -> (usize, usize) {
    let start = span.start.min(text.len());
    // A span never splits a character in practice; step back to a boundary to be safe.
    let start = (0..=start)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn read_bounded(path: &Path) -> Result<String, ConfigFileError> {
    let read_err = |source| ConfigFileError::Read {
        path: path.into(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read_err)?.len();
    if len > MAX_CONFIG_BYTES {
        return Err(ConfigFileError::TooLarge { path: path.into() });
    }
    std::fs::read_to_string(path).map_err(read_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // Fields exist to shape the parse; the tests only check errors.
    struct Sample {
        name: String,
        #[serde(default)]
        count: u32,
    }

    // Goal: positions are 1-based and count characters, not bytes, on the right line.
    #[test]
    fn line_col_counts_lines_and_characters() {
        let text = "a = 1\nbé = 2\nzz";
        assert_eq!(line_col(text, 0..1), (1, 1));
        assert_eq!(line_col(text, 6..7), (2, 1));
        let z = text.find("zz").unwrap();
        assert_eq!(line_col(text, z..z + 2), (3, 1));
        let two = text.find('2').unwrap();
        assert_eq!(line_col(text, two..two + 1), (2, 6));
        assert_eq!(line_col(text, 999..1000), (3, 3));
    }

    // Goal: an unknown key and a wrong type are reported at their own line and column, with the
    // file name first, as a person reads compiler errors.
    #[test]
    fn parse_errors_point_at_file_line_col() {
        let path = Path::new("server.toml");
        let err = parse::<Sample>("name = \"x\"\ncolour = 3\n", path).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("server.toml:2:1: "), "{text}");
        assert!(text.contains("colour"), "{text}");
        let err = parse::<Sample>("name = \"x\"\ncount = \"many\"\n", path).unwrap_err();
        assert!(err.to_string().starts_with("server.toml:2:9: "), "{err}");
    }

    // Goal: a real file loads into the core's config, and a file that parses but is
    // inconsistent is refused with the file named.
    #[test]
    fn load_reads_and_validates_a_file() {
        let dir = std::env::temp_dir().join(format!("fleetsim-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("server.toml");
        std::fs::write(
            &good,
            "long_poll_hold = \"5s\"\n[[pats]]\ntoken = \"t\"\nscopes = [\"fleetsim.admin\"]\n",
        )
        .unwrap();
        let config = load(&good).unwrap();
        assert_eq!(config.long_poll_hold, std::time::Duration::from_secs(5));
        assert_eq!(config.pats.len(), 1);
        let bad = dir.join("dup.toml");
        std::fs::write(&bad, "[[pools]]\nname = \"x\"\nid = 1\n").unwrap();
        let err = load(&bad).unwrap_err();
        assert!(matches!(err, ConfigFileError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("dup.toml"), "{err}");
        // `[[pipelines]]` load with the file; one naming an unknown pool is refused, and a
        // typo in a pipeline key points at its line.
        let pipelines = dir.join("pipelines.toml");
        let text = "[[pipelines]]\nid = 2\nname = \"ci\"\nproject = \"Demo\"\npool = \"Default\"\n\
                    jobs = 3\nsteps = [\"Checkout\", \"CmdLine\"]\n";
        std::fs::write(&pipelines, text).unwrap();
        assert_eq!(load(&pipelines).unwrap().pipelines[0].jobs, 3);
        std::fs::write(&pipelines, text.replace("Default", "gpu")).unwrap();
        let err = load(&pipelines).unwrap_err();
        assert!(err.to_string().contains("\"gpu\""), "{err}");
        std::fs::write(&pipelines, text.replace("jobs", "jbos")).unwrap();
        let err = load(&pipelines).unwrap_err();
        assert!(err.to_string().contains("pipelines.toml:6:"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    // Goal: the documented fallback order: file, then FLEETSIM_PAT, then an actionable error.
    #[test]
    fn resolve_prefers_file_then_env_then_errors() {
        let err = resolve(None, None).unwrap_err();
        assert!(matches!(err, ConfigFileError::NoCredentials));
        assert!(err.to_string().contains(PAT_ENV_VAR), "{err}");
        assert!(matches!(
            resolve(None, Some("  ")),
            Err(ConfigFileError::NoCredentials)
        ));
        assert!(resolve(None, Some("secret-pat")).is_ok());
        let missing = Path::new("/nonexistent/fleetsim/server.toml");
        let err = resolve(Some(missing), Some("secret-pat")).unwrap_err();
        assert!(matches!(err, ConfigFileError::Read { .. }), "{err}");
        assert!(!err.to_string().contains("secret-pat"));
    }
}
