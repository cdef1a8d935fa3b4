//! Absolute `http(s)` URLs as the protocol names them (the target's collection URL, a
//! registration's `authorizationUrl`, a job's `SystemVssConnection.url`), and [`resolve`]: the one
//! place where an [`Endpoint`] and a typed request become an origin and a `WireRequest`.
//!
//! Parsing is strict about what would route a call somewhere unintended (a scheme other than
//! `http`/`https`, user info, a missing or malformed host or port, whitespace or control
//! characters) and lenient about the rest (a trailing `/`, a fragment, which is dropped). Hosts
//! are compared case-insensitively, so they are kept lower-cased.
//!
//! Pure: no IO, no DNS. It never percent-decodes: paths are kept as the server wrote them.

use std::fmt;

use crate::api::{Endpoint, Request};
use crate::wire::WireRequest;

/// `http` or `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UrlScheme {
    Http,
    Https,
}

impl UrlScheme {
    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            UrlScheme::Http => "http",
            UrlScheme::Https => "https",
        }
    }

    /// The port a URL without one means.
    pub fn default_port(self) -> u16 {
        match self {
            UrlScheme::Http => 80,
            UrlScheme::Https => 443,
        }
    }
}

/// Where a connection goes: `scheme://host:port`. Two calls with equal origins may share a
/// connection; calls to different origins never do.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    pub scheme: UrlScheme,
    /// Lower-cased; IPv6 literals without brackets (`::1`).
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// `host:port`, IPv6 literals bracketed.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.authority())
    }
}

/// A parsed absolute URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub origin: Origin,
    /// The path as written (`""` when the URL has none; a trailing `/` is kept).
    pub path: String,
    /// The query without `?`, `""` when there is none.
    pub query: String,
}

/// Why a URL was refused. The message quotes the URL (URLs carry no credentials: user info is
/// refused before anything else is read).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("URL {url:?}: {reason}")]
pub struct UrlError {
    pub url: String,
    pub reason: &'static str,
}

/// Parse `http(s)://host[:port][/path][?query][#fragment]`.
pub fn parse(url: &str) -> Result<Url, UrlError> {
    let bad = |reason: &'static str| UrlError {
        url: if url.contains('@') {
            // Never echo a password back into a log.
            "<URL with user info>".to_string()
        } else {
            url.chars().take(200).collect()
        },
        reason,
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("whitespace or control characters are not allowed"));
    }
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("not a URL"))?;
    let scheme = if scheme.eq_ignore_ascii_case("http") {
        UrlScheme::Http
    } else if scheme.eq_ignore_ascii_case("https") {
        UrlScheme::Https
    } else {
        return Err(bad("the scheme must be http or https"));
    };
    let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') {
        return Err(bad(
            "user info is not allowed; the PAT comes from pat_env or pat_file",
        ));
    }
    let (host, port) = split_authority(authority).ok_or_else(|| bad("bad host or port"))?;
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    Ok(Url {
        origin: Origin {
            scheme,
            host: host.to_ascii_lowercase(),
            port: port.unwrap_or(scheme.default_port()),
        },
        path: path.to_string(),
        query: query.to_string(),
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` → host (unbracketed) and port.
fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_hexdigit() || ":.".contains(c))
        {
            return None;
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (host, port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let ok = |c: char| c.is_ascii_alphanumeric() || "-._~%".contains(c);
        if host.is_empty() || !host.chars().all(ok) {
            return None;
        }
        (host, port)
    };
    let port = match port {
        None | Some("") => None,
        Some(p) if p.chars().all(|c| c.is_ascii_digit()) => Some(p.parse::<u16>().ok()?),
        Some(_) => return None,
    };
    Some((host, port))
}

/// The origin and HTTP request of `req` sent to `endpoint`, for a fleet pointed at `target`
/// (the collection URL, parsed once by the driver).
///
/// - `Collection`: the target's origin; the route under the target's path.
/// - `Base(url)`: `url`'s origin; the route under `url`'s path (its query is ignored: a
///   collection URL has none).
/// - `Exact(url)`: `url`'s origin, path and query; the route's own path is not used (the token
///   endpoint is wherever the registration says).
/// - `*OnTarget(url)`: as above, on the target's origin.
///
/// Fails only when the endpoint's URL does not parse (the agent validates the URLs it is given,
/// so a driver meets this only with a hand-built endpoint).
pub fn resolve(
    req: &Request,
    endpoint: &Endpoint,
    target: &Url,
) -> Result<(Origin, WireRequest), UrlError> {
    let (origin, base, exact) = match endpoint {
        Endpoint::Collection => (target.origin.clone(), target.path.clone(), None),
        Endpoint::Base(url) => {
            let url = parse(url)?;
            (url.origin, url.path, None)
        }
        Endpoint::BaseOnTarget(url) => (target.origin.clone(), parse(url)?.path, None),
        Endpoint::Exact(url) => {
            let url = parse(url)?;
            (url.origin.clone(), url.path.clone(), Some(url))
        }
        Endpoint::ExactOnTarget(url) => {
            let url = parse(url)?;
            (target.origin.clone(), url.path.clone(), Some(url))
        }
    };
    let mut wire = super::encode_request(req, &base);
    if let Some(url) = exact {
        wire.path = if url.path.is_empty() {
            "/".to_string()
        } else {
            url.path
        };
        wire.query = url.query;
    }
    Ok((origin, wire))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApiRequest, Credential, PlanScope, TokenGrant};
    use crate::wire::Method;
    use std::sync::Arc;

    fn origin(scheme: UrlScheme, host: &str, port: u16) -> Origin {
        Origin {
            scheme,
            host: host.into(),
            port,
        }
    }

    // Goal: every URL form the protocol meets parses into origin, path and query, with default
    // ports, IPv6 literals and case-insensitive scheme and host.
    #[test]
    fn urls_parse_into_origin_path_and_query() {
        let u = parse("https://Dev.Azure.com/org/").unwrap();
        assert_eq!(u.origin, origin(UrlScheme::Https, "dev.azure.com", 443));
        assert_eq!((u.path.as_str(), u.query.as_str()), ("/org/", ""));
        let u = parse("HTTP://[::1]:8080/tfs/_apis/oauth2/token?api-version=1#x").unwrap();
        assert_eq!(u.origin, origin(UrlScheme::Http, "::1", 8080));
        assert_eq!(u.origin.authority(), "[::1]:8080");
        assert_eq!(u.origin.to_string(), "http://[::1]:8080");
        assert_eq!(u.path, "/tfs/_apis/oauth2/token");
        assert_eq!(u.query, "api-version=1");
        let u = parse("http://127.0.0.1:9?a=b").unwrap();
        assert_eq!(
            (u.origin.port, u.path.as_str(), u.query.as_str()),
            (9, "", "a=b")
        );
        assert_eq!(parse("http://h:").unwrap().origin.port, 80);
    }

    // Goal: URLs that would send a call somewhere unintended are refused, and user info is
    // never echoed back.
    #[test]
    fn bad_urls_are_refused_without_echoing_credentials() {
        for bad in [
            "",
            "not a url",
            "ftp://h/",
            "http://",
            "http://h:99999/",
            "http://h:8x/",
            "http://[::1/",
            "http://[zz]/",
            "http://h o/",
            "http://h/\n",
            "http://a/b:c@d",
        ] {
            if bad == "http://a/b:c@d" {
                // An '@' in the path is not user info.
                assert!(parse(bad).is_ok());
                continue;
            }
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let err = parse("https://user:s3cret@h/").unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    fn token_request() -> Request {
        Request {
            credential: Credential::Anonymous,
            call: ApiRequest::Token(TokenGrant::ClientCredentials {
                client_assertion_type: "t".into(),
                client_assertion: "a".into(),
            }),
        }
    }

    fn feed_like_request() -> Request {
        Request {
            credential: Credential::Bearer("job".into()),
            call: ApiRequest::CreateLog {
                plan: PlanScope {
                    scope_identifier: "proj".into(),
                    hub: "build".into(),
                    plan_id: "p1".into(),
                },
                log: crate::proto::TaskLogCreate { path: "l".into() },
            },
        }
    }

    // Goal: each endpoint kind lands on the right origin and path: the collection under the
    // target's path, a base URL under its own path, an exact URL as written, and the on-target
    // forms keep the path but take the target's scheme, host and port.
    #[test]
    fn endpoints_resolve_to_origin_and_path() {
        let target = parse("http://127.0.0.1:8080/DefaultCollection").unwrap();
        let lo = origin(UrlScheme::Http, "127.0.0.1", 8080);

        let (o, w) = resolve(&feed_like_request(), &Endpoint::Collection, &target).unwrap();
        assert_eq!(o, lo);
        assert_eq!(
            w.path,
            "/DefaultCollection/proj/_apis/distributedtask/hubs/build/plans/p1/logs"
        );
        assert_eq!(w.authorization.as_deref(), Some("Bearer job"));

        let base = Endpoint::Base(Arc::from("https://[::1]:8443/org/"));
        let (o, w) = resolve(&feed_like_request(), &base, &target).unwrap();
        assert_eq!(o, origin(UrlScheme::Https, "::1", 8443));
        assert_eq!(
            w.path,
            "/org/proj/_apis/distributedtask/hubs/build/plans/p1/logs"
        );

        let on_target = Endpoint::BaseOnTarget(Arc::from("https://tfs.corp:443/tfs/coll"));
        let (o, w) = resolve(&feed_like_request(), &on_target, &target).unwrap();
        assert_eq!(o, lo);
        assert!(w.path.starts_with("/tfs/coll/proj/_apis/"), "{}", w.path);

        let exact = Endpoint::Exact(Arc::from(
            "https://vssps.example.com:4443/oauth/Token?tenant=x",
        ));
        let (o, w) = resolve(&token_request(), &exact, &target).unwrap();
        assert_eq!(o, origin(UrlScheme::Https, "vssps.example.com", 4443));
        assert_eq!((w.method, w.path.as_str()), (Method::Post, "/oauth/Token"));
        assert_eq!(w.query, "tenant=x");
        assert!(String::from_utf8_lossy(&w.body).contains("grant_type=client_credentials"));

        let exact =
            Endpoint::ExactOnTarget(Arc::from("http://tfs-internal/tfs/_apis/oauth2/token"));
        let (o, w) = resolve(&token_request(), &exact, &target).unwrap();
        assert_eq!(o, lo);
        assert_eq!(w.path, "/tfs/_apis/oauth2/token");

        let root = Endpoint::Exact(Arc::from("http://auth:81"));
        assert_eq!(
            resolve(&token_request(), &root, &target).unwrap().1.path,
            "/"
        );
        let broken = Endpoint::Exact(Arc::from("ftp://x"));
        assert!(resolve(&token_request(), &broken, &target).is_err());
    }
}
