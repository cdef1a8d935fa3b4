//! The HTTP proxy, found and applied the way the real agent does it (protocol.md §7).
//!
//! Where the proxy URL comes from, first match wins:
//! 1. the scenario's explicit proxy URL (`target.proxy.url`);
//! 2. a `.proxy`-style file named by the scenario: line 1 is the URL, a later line
//!    `basicauth=true` forces Basic auth (the real agent's file format);
//! 3. the environment, when the scenario allows it: `VSTS_HTTP_PROXY`, then — for `https` targets
//!    only — `HTTPS_PROXY` / `https_proxy`, then `HTTP_PROXY` / `http_proxy`. (The real agent reads
//!    only `VSTS_HTTP_PROXY` and `http_proxy`; the others are what every other HTTP tool reads.)
//!
//! Credentials, first match wins: user info in the proxy URL (`http://user:pass@host:port`,
//! percent-decoded), then the environment variables the scenario names, then
//! `VSTS_HTTP_PROXY_USERNAME` / `VSTS_HTTP_PROXY_PASSWORD`. fleetsim speaks only Basic to a proxy
//! and sends it pre-emptively on every request and CONNECT; it never tries Negotiate/NTLM.
//!
//! Bypass: a regex per line (the `.proxybypass` format, matched case-insensitively against the
//! target's absolute URL, e.g. `http://127.0.0.1:8080/`), plus `NO_PROXY` / `no_proxy` and the
//! scenario's `no_proxy` list (comma or semicolon separated host names: `*` bypasses everything,
//! `example.com` and `.example.com` match the host and its subdomains, `host:port` also pins the
//! port). Unlike .NET, loopback targets are *not* bypassed implicitly: a load test through a proxy
//! to a local emulator is a case we want to measure.
//!
//! Resolution is a pure function of its inputs and an environment lookup, so tests never touch
//! the process environment. This module never opens a socket; `client` does the CONNECT and the
//! absolute-form requests.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use regex::{Regex, RegexBuilder};
use thiserror::Error;

/// The largest `.proxy` / `.proxybypass` file read; anything larger is a mistake, not a config.
const PROXY_FILE_MAX_BYTES: u64 = 64 * 1024;
/// The most bypass patterns kept (regex lines plus `NO_PROXY` entries).
const BYPASS_MAX_ENTRIES: usize = 1_000;
/// Compiled size limit per bypass regex, so a hostile pattern cannot eat memory.
const BYPASS_REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Env vars consulted for the proxy URL, in order. The `https` ones only for `https` targets.
const ENV_VSTS_PROXY: &str = "VSTS_HTTP_PROXY";
const ENV_HTTPS_PROXY: [&str; 2] = ["HTTPS_PROXY", "https_proxy"];
const ENV_HTTP_PROXY: [&str; 2] = ["HTTP_PROXY", "http_proxy"];
const ENV_NO_PROXY: [&str; 2] = ["NO_PROXY", "no_proxy"];
/// The real agent's fallback credential variables.
pub const ENV_PROXY_USERNAME: &str = "VSTS_HTTP_PROXY_USERNAME";
/// See [`ENV_PROXY_USERNAME`].
pub const ENV_PROXY_PASSWORD: &str = "VSTS_HTTP_PROXY_PASSWORD";

/// Why a proxy configuration could not be resolved. Messages never contain a password.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProxyError {
    #[error("cannot read proxy file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("proxy file {path} is larger than {PROXY_FILE_MAX_BYTES} bytes")]
    FileTooLarge { path: PathBuf },
    #[error("proxy file {path} is empty: line 1 must be the proxy URL")]
    EmptyFile { path: PathBuf },
    #[error("invalid proxy URL from {source_name}: {reason}")]
    BadUrl { source_name: String, reason: String },
    #[error("invalid bypass pattern {pattern:?}: {reason}")]
    BadBypass { pattern: String, reason: String },
    #[error("more than {BYPASS_MAX_ENTRIES} proxy bypass entries")]
    TooManyBypassEntries,
}

/// What the scenario says about the proxy; every field optional.
#[derive(Clone, Debug, Default)]
pub struct ProxyInputs {
    /// An explicit proxy URL (highest precedence).
    pub url: Option<String>,
    /// A `.proxy`-style file: line 1 URL, optional line `basicauth=true`.
    pub proxy_file: Option<PathBuf>,
    /// A `.proxybypass`-style file: one regex per line.
    pub bypass_file: Option<PathBuf>,
    /// Bypass regexes given inline (the scenario's `bypass` list), same meaning as the file.
    pub bypass: Vec<String>,
    /// `NO_PROXY`-style host entries from the scenario.
    pub no_proxy: Vec<String>,
    /// Env var holding the proxy user name (checked before `VSTS_HTTP_PROXY_USERNAME`).
    pub username_env: Option<String>,
    /// Env var holding the proxy password (checked before `VSTS_HTTP_PROXY_PASSWORD`).
    pub password_env: Option<String>,
    /// Read `VSTS_HTTP_PROXY`, `HTTP(S)_PROXY` and `NO_PROXY` from the environment.
    pub use_env: bool,
}

/// Where the proxy URL was found, for the run log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxySource {
    Scenario,
    File(PathBuf),
    Env(&'static str),
}

/// A proxy's address: fleetsim talks plain HTTP/1.1 to the proxy (CONNECT for `https` targets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyAddr {
    pub host: String,
    pub port: u16,
}

/// Basic credentials for the proxy. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyCredentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for ProxyCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyCredentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// One `NO_PROXY` entry, already parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum NoProxyEntry {
    /// `*`: bypass every target.
    All,
    /// A host (lower case, no leading dot) and its subdomains, optionally only on one port.
    Host { host: String, port: Option<u16> },
}

/// A resolved proxy: where it is, how to authenticate, and which targets skip it.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub addr: ProxyAddr,
    pub credentials: Option<ProxyCredentials>,
    /// The `.proxy` file said `basicauth=true` (or `VSTS_HTTP_PROXY_BASICAUTH=true`). Recorded for
    /// the run log; fleetsim uses Basic whenever it has credentials.
    pub basic_auth_forced: bool,
    pub source: ProxySource,
    bypass_regexes: Vec<Regex>,
    no_proxy: Vec<NoProxyEntry>,
}

impl ProxyConfig {
    /// Resolve the proxy from the scenario's `inputs` and an environment lookup (`std::env::var`
    /// in production, a map in tests). `target_is_https` decides whether `HTTPS_PROXY` is read.
    /// `Ok(None)`: no proxy configured anywhere.
    pub fn resolve(
        inputs: &ProxyInputs,
        env: &dyn Fn(&str) -> Option<String>,
        target_is_https: bool,
    ) -> Result<Option<ProxyConfig>, ProxyError> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let mut basic_auth_forced = inputs.use_env
            && env("VSTS_HTTP_PROXY_BASICAUTH").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let (url, source) = if let Some(url) = &inputs.url {
            (url.clone(), ProxySource::Scenario)
        } else if let Some(path) = &inputs.proxy_file {
            let file = parse_proxy_file(&read_small_file(path)?, path)?;
            basic_auth_forced |= file.basic_auth;
            (file.url, ProxySource::File(path.clone()))
        } else if inputs.use_env {
            match url_from_env(&env, target_is_https) {
                Some((url, name)) => (url, ProxySource::Env(name)),
                None => return Ok(None),
            }
        } else {
            return Ok(None);
        };
        let source_name = match &source {
            ProxySource::Scenario => "the scenario".to_string(),
            ProxySource::File(p) => p.display().to_string(),
            ProxySource::Env(name) => (*name).to_string(),
        };
        let (addr, url_credentials) =
            parse_proxy_url(&url).map_err(|reason| ProxyError::BadUrl {
                source_name,
                reason,
            })?;
        let credentials = url_credentials.or_else(|| credentials_from_env(inputs, &env));

        let mut bypass_regexes = Vec::new();
        let file_lines = match &inputs.bypass_file {
            Some(path) => read_small_file(path)?,
            None => String::new(),
        };
        let patterns = inputs
            .bypass
            .iter()
            .map(String::as_str)
            .chain(file_lines.lines());
        for pattern in patterns.map(str::trim).filter(|l| !l.is_empty()) {
            if bypass_regexes.len() >= BYPASS_MAX_ENTRIES {
                return Err(ProxyError::TooManyBypassEntries);
            }
            bypass_regexes.push(compile_bypass(pattern)?);
        }
        let mut no_proxy = Vec::new();
        let env_no_proxy = if inputs.use_env {
            ENV_NO_PROXY.iter().find_map(|n| env(n))
        } else {
            None
        };
        for list in inputs
            .no_proxy
            .iter()
            .map(String::as_str)
            .chain(env_no_proxy.as_deref())
        {
            no_proxy.extend(parse_no_proxy(list));
        }
        if bypass_regexes.len() + no_proxy.len() > BYPASS_MAX_ENTRIES {
            return Err(ProxyError::TooManyBypassEntries);
        }
        Ok(Some(ProxyConfig {
            addr,
            credentials,
            basic_auth_forced,
            source,
            bypass_regexes,
            no_proxy,
        }))
    }

    /// Whether a target skips the proxy. `scheme` is `http` or `https`, `host` as in the URL.
    pub fn bypasses(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host_lc = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let no_proxy_hit = self.no_proxy.iter().any(|entry| match entry {
            NoProxyEntry::All => true,
            NoProxyEntry::Host { host: h, port: p } => {
                let host_ok = host_lc == *h || host_lc.ends_with(&format!(".{h}"));
                host_ok && p.is_none_or(|p| p == port)
            }
        });
        if no_proxy_hit {
            return true;
        }
        // The real agent matches each regex against the target's absolute URI.
        let url = format!("{scheme}://{host}:{port}/");
        self.bypass_regexes.iter().any(|re| re.is_match(&url))
    }

    /// The `Proxy-Authorization` header value, when credentials are known.
    pub fn authorization(&self) -> Option<String> {
        self.credentials.as_ref().map(|c| {
            format!(
                "Basic {}",
                STANDARD.encode(format!("{}:{}", c.user, c.password))
            )
        })
    }
}

/// The contents of a `.proxy` file.
struct ProxyFile {
    url: String,
    basic_auth: bool,
}

fn parse_proxy_file(text: &str, path: &Path) -> Result<ProxyFile, ProxyError> {
    let mut lines = text.lines().map(str::trim);
    let url = lines
        .next()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| ProxyError::EmptyFile { path: path.into() })?;
    let basic_auth = lines.any(|l| {
        l.split_once('=').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("basicauth") && v.trim().eq_ignore_ascii_case("true")
        })
    });
    Ok(ProxyFile {
        url: url.to_string(),
        basic_auth,
    })
}

fn read_small_file(path: &Path) -> Result<String, ProxyError> {
    let io_err = |source| ProxyError::Io {
        path: path.into(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io_err)?.len();
    if len > PROXY_FILE_MAX_BYTES {
        return Err(ProxyError::FileTooLarge { path: path.into() });
    }
    std::fs::read_to_string(path).map_err(io_err)
}

fn url_from_env(
    env: &dyn Fn(&str) -> Option<String>,
    target_is_https: bool,
) -> Option<(String, &'static str)> {
    let https: &[&'static str] = if target_is_https {
        &ENV_HTTPS_PROXY
    } else {
        &[]
    };
    std::iter::once(ENV_VSTS_PROXY)
        .chain(https.iter().copied())
        .chain(ENV_HTTP_PROXY)
        .find_map(|name| env(name).map(|v| (v, name)))
}

fn credentials_from_env(
    inputs: &ProxyInputs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<ProxyCredentials> {
    let named = inputs.username_env.as_deref().and_then(env).map(|user| {
        let password = inputs
            .password_env
            .as_deref()
            .and_then(env)
            .unwrap_or_default();
        ProxyCredentials { user, password }
    });
    named.or_else(|| {
        if !inputs.use_env {
            return None;
        }
        let user = env(ENV_PROXY_USERNAME)?;
        Some(ProxyCredentials {
            user,
            password: env(ENV_PROXY_PASSWORD).unwrap_or_default(),
        })
    })
}

/// Parse `[http://][user[:pass]@]host[:port][/]`. An `https://` proxy is refused: fleetsim speaks
/// plain HTTP to proxies, like the agent's default handler. The port defaults to 80.
fn parse_proxy_url(url: &str) -> Result<(ProxyAddr, Option<ProxyCredentials>), String> {
    let url = url.trim();
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "scheme {scheme:?} is not supported (use an http:// proxy)"
            ));
        }
        None => url,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (host, port) = split_host_port(hostport)?;
    let credentials = match userinfo {
        Some(info) => {
            let (user, password) = info.split_once(':').unwrap_or((info, ""));
            Some(ProxyCredentials {
                user: percent_decode(user)?,
                password: percent_decode(password)?,
            })
        }
        None => None,
    };
    Ok((
        ProxyAddr {
            host,
            port: port.unwrap_or(80),
        },
        credentials,
    ))
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(hostport: &str) -> Result<(String, Option<u16>), String> {
    if hostport.is_empty() {
        return Err("no host".to_string());
    }
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or("unclosed '[' in host")?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("no host".to_string());
    }
    if host.contains([':', '@', ' ']) && !hostport.starts_with('[') {
        return Err(format!(
            "bad host {host:?} (bracket IPv6 addresses: [::1]:8080)"
        ));
    }
    let port = port
        .map(|p| p.parse::<u16>().map_err(|_| format!("bad port {p:?}")))
        .transpose()?;
    Ok((host.to_string(), port))
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .ok_or("truncated %-escape in user info")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad %-escape in user info")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "user info is not UTF-8 after %-decoding".to_string())
}

fn compile_bypass(pattern: &str) -> Result<Regex, ProxyError> {
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(BYPASS_REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| ProxyError::BadBypass {
            pattern: pattern.to_string(),
            reason: e.to_string(),
        })
}

/// Split a `NO_PROXY` list (commas or semicolons) into entries; blanks are skipped.
fn parse_no_proxy(list: &str) -> impl Iterator<Item = NoProxyEntry> + '_ {
    list.split([',', ';'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            if entry == "*" {
                return NoProxyEntry::All;
            }
            let entry = entry
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .to_ascii_lowercase();
            match split_host_port(&entry) {
                Ok((host, port)) => NoProxyEntry::Host { host, port },
                // A malformed port keeps the whole text as a host: it then simply never matches.
                Err(_) => NoProxyEntry::Host {
                    host: entry,
                    port: None,
                },
            }
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn temp_file(name: &str, contents: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("fleetsim-proxy-{name}-{}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn with_env() -> ProxyInputs {
        ProxyInputs {
            use_env: true,
            ..Default::default()
        }
    }

    // Goal: the documented precedence — scenario URL, then file, then VSTS_HTTP_PROXY, then
    // HTTPS_PROXY (https targets only), then HTTP_PROXY.
    #[test]
    fn url_precedence_follows_the_documented_order() {
        let env = env_of(&[
            ("VSTS_HTTP_PROXY", "http://vsts:1"),
            ("HTTPS_PROXY", "http://https:2"),
            ("HTTP_PROXY", "http://plain:3"),
        ]);
        let file = temp_file("prec", "http://file:4\n");
        let mut inputs = ProxyInputs {
            url: Some("http://scenario:5".into()),
            proxy_file: Some(file.clone()),
            ..with_env()
        };
        let host = |i: &ProxyInputs, https| {
            ProxyConfig::resolve(i, &env, https)
                .unwrap()
                .map(|p| p.addr.host)
        };
        assert_eq!(host(&inputs, false).as_deref(), Some("scenario"));
        inputs.url = None;
        assert_eq!(host(&inputs, false).as_deref(), Some("file"));
        inputs.proxy_file = None;
        assert_eq!(host(&inputs, false).as_deref(), Some("vsts"));
        let env2 = env_of(&[
            ("https_proxy", "http://https:2"),
            ("http_proxy", "http://plain:3"),
        ]);
        let resolve2 = |https| {
            ProxyConfig::resolve(&inputs, &env2, https)
                .unwrap()
                .map(|p| p.addr.host)
        };
        assert_eq!(resolve2(true).as_deref(), Some("https"));
        assert_eq!(resolve2(false).as_deref(), Some("plain"));
        inputs.use_env = false;
        assert!(
            ProxyConfig::resolve(&inputs, &env, false)
                .unwrap()
                .is_none()
        );
        std::fs::remove_file(file).unwrap();
    }

    // Goal: credentials come from URL user info first (percent-decoded), then the scenario's named
    // env vars, then VSTS_HTTP_PROXY_USERNAME/PASSWORD; the header is Basic base64(user:pass).
    #[test]
    fn credentials_precedence_and_basic_header() {
        let env = env_of(&[
            ("VSTS_HTTP_PROXY_USERNAME", "vu"),
            ("VSTS_HTTP_PROXY_PASSWORD", "vp"),
            ("MY_USER", "mu"),
            ("MY_PASS", "mp"),
        ]);
        let mut inputs = ProxyInputs {
            url: Some("http://a%40b:p%3Ass@proxy:3128".into()),
            ..with_env()
        };
        let p = ProxyConfig::resolve(&inputs, &env, false).unwrap().unwrap();
        let c = p.credentials.clone().unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("a@b", "p:ss"));
        assert_eq!(
            p.authorization().unwrap(),
            format!("Basic {}", STANDARD.encode("a@b:p:ss"))
        );
        assert_eq!(
            p.addr,
            ProxyAddr {
                host: "proxy".into(),
                port: 3128
            }
        );
        assert!(
            !format!("{p:?}").contains("p:ss"),
            "Debug must not show the password"
        );

        inputs.url = Some("http://proxy:3128".into());
        inputs.username_env = Some("MY_USER".into());
        inputs.password_env = Some("MY_PASS".into());
        let c = ProxyConfig::resolve(&inputs, &env, false)
            .unwrap()
            .unwrap()
            .credentials
            .unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("mu", "mp"));
        inputs.username_env = None;
        let c = ProxyConfig::resolve(&inputs, &env, false)
            .unwrap()
            .unwrap()
            .credentials
            .unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("vu", "vp"));
    }

    // Goal: the `.proxy` file format — URL on line 1, `basicauth=true` on a later line.
    #[test]
    fn proxy_file_reads_url_and_basicauth_flag() {
        let file = temp_file("file", "http://127.0.0.1:8888\nbasicauth=true\n");
        let inputs = ProxyInputs {
            proxy_file: Some(file.clone()),
            ..Default::default()
        };
        let p = ProxyConfig::resolve(&inputs, &env_of(&[]), false)
            .unwrap()
            .unwrap();
        assert_eq!(
            p.addr,
            ProxyAddr {
                host: "127.0.0.1".into(),
                port: 8888
            }
        );
        assert!(p.basic_auth_forced);
        assert_eq!(p.source, ProxySource::File(file.clone()));
        std::fs::write(&file, "\n").unwrap();
        let err = ProxyConfig::resolve(&inputs, &env_of(&[]), false).unwrap_err();
        assert!(matches!(err, ProxyError::EmptyFile { .. }), "{err}");
        std::fs::remove_file(file).unwrap();
    }

    // Goal: NO_PROXY host/suffix/port/star semantics and `.proxybypass` regexes against the URL.
    #[test]
    fn bypass_list_and_no_proxy_match_as_documented() {
        let bypass = temp_file("bypass", "^https://internal\\.corp:443/\n\n");
        let inputs = ProxyInputs {
            url: Some("proxy:8080".into()),
            bypass_file: Some(bypass.clone()),
            bypass: vec!["^http://inline\\.example:81/$".into()],
            no_proxy: vec!["example.com; .svc.local, pinned:9000".into()],
            ..with_env()
        };
        let env = env_of(&[("NO_PROXY", "envhost")]);
        let p = ProxyConfig::resolve(&inputs, &env, false).unwrap().unwrap();
        assert_eq!(p.addr.port, 8080);
        assert!(p.bypasses("http", "example.com", 80));
        assert!(p.bypasses("http", "API.Example.com", 80));
        assert!(!p.bypasses("http", "notexample.com", 80));
        assert!(p.bypasses("http", "a.svc.local", 80));
        assert!(p.bypasses("http", "pinned", 9000));
        assert!(!p.bypasses("http", "pinned", 9001));
        assert!(p.bypasses("http", "envhost", 1));
        assert!(p.bypasses("https", "INTERNAL.corp", 443));
        assert!(!p.bypasses("http", "internal.corp", 443));
        assert!(p.bypasses("http", "inline.example", 81));
        assert!(!p.bypasses("http", "inline.example", 82));
        assert!(
            !p.bypasses("http", "127.0.0.1", 8080),
            "loopback is not bypassed implicitly"
        );
        let all = ProxyInputs {
            no_proxy: vec!["*".into()],
            ..inputs.clone()
        };
        assert!(
            ProxyConfig::resolve(&all, &env, false)
                .unwrap()
                .unwrap()
                .bypasses("http", "x", 1)
        );
        std::fs::remove_file(bypass).unwrap();
    }

    // Goal: bad input is a typed error naming its source, never a panic or a silent default.
    #[test]
    fn bad_urls_and_patterns_are_typed_errors() {
        for bad in [
            "https://proxy:1",
            "socks5://p:1",
            "http://:80",
            "http://h:notaport",
            "http://[::1",
        ] {
            let inputs = ProxyInputs {
                url: Some(bad.into()),
                ..Default::default()
            };
            let err = ProxyConfig::resolve(&inputs, &env_of(&[]), false).unwrap_err();
            assert!(matches!(err, ProxyError::BadUrl { .. }), "{bad}: {err}");
        }
        let bypass = temp_file("badre", "(unclosed\n");
        let inputs = ProxyInputs {
            url: Some("http://p:1".into()),
            bypass_file: Some(bypass.clone()),
            ..Default::default()
        };
        let err = ProxyConfig::resolve(&inputs, &env_of(&[]), false).unwrap_err();
        assert!(matches!(err, ProxyError::BadBypass { .. }), "{err}");
        std::fs::remove_file(bypass).unwrap();
        let env = env_of(&[("VSTS_HTTP_PROXY", "http://user:secretpw@p:1:2")]);
        let err = ProxyConfig::resolve(&with_env(), &env, false).unwrap_err();
        assert!(err.to_string().contains("VSTS_HTTP_PROXY"), "{err}");
        assert!(!err.to_string().contains("secretpw"), "{err}");
    }
}
