//! Where the emulator serves what: one listener for everything (the default, like Azure DevOps
//! Server), or the layout of Azure DevOps Services, whose token service is another host, whose
//! collection lives under `/{org}`, and whose job messages may name another host for the plan
//! hub (`SystemVssConnection.url`).
//!
//! `Layout` is configuration (`[layout]` in `server.toml`); [`Layout::admits`] is the one rule
//! each listener applies to a decoded request before the server sees it. It is pure: binding the
//! extra listeners and filling in their URLs (`token_url`, `plan_url`) is the front's job.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::api::{ApiError, ApiRequest, ErrorKind};

/// The Services-like layout switches. All off: one listener serves every route at any path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Layout {
    /// Serve the OAuth token endpoint on its own listener at this address (port 0: any free
    /// port). The registration's `authorization.authorizationUrl`, the JWT audience and the
    /// 401 challenge then name that listener, and the main listener answers the token route
    /// with a typed 404, as Services' collection host does.
    pub token_listen: Option<SocketAddr>,
    /// Serve the collection under this path (`"/org"`): the main and plan listeners answer
    /// only requests under it (others: typed 404), and the public URL includes it.
    pub collection_path: Option<String>,
    /// Serve the plan hub on its own listener at this address (use another 127.0.0.0/8
    /// address, e.g. `127.0.0.2:0`, to make it another host): job messages name it in
    /// `SystemVssConnection.url`.
    pub plan_listen: Option<SocketAddr>,
    /// With `plan_listen`, whether the main listener still serves plan-hub routes. Off by
    /// default, so a client that ignores `SystemVssConnection.url` fails visibly instead of
    /// passing by accident.
    pub plan_hub_on_main: bool,
    /// Type `expires_in` in token answers as a JSON string (`"3600"`), as some Azure DevOps
    /// token answers do.
    pub expires_in_as_string: bool,
    /// The token endpoint's full URL; filled in by the front once `token_listen` is bound.
    #[serde(skip)]
    pub token_url: Option<String>,
    /// The plan listener's base URL (with the collection path); filled in by the front once
    /// `plan_listen` is bound.
    #[serde(skip)]
    pub plan_url: Option<String>,
}

/// Which of the emulator's listeners a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// Everything the layout does not move elsewhere.
    Main,
    /// Only the OAuth token endpoint (`token_listen`).
    Token,
    /// Only the plan hub and discovery (`plan_listen`).
    Plan,
}

impl Layout {
    /// Whether the emulator presents itself as Azure DevOps Services: its token service or
    /// plan hub lives on another authority. Then connectionData says `deploymentType:
    /// "hosted"` and job messages carry `system.servertype = Hosted`, which is what makes the
    /// real agent use `authorizationUrl` and `SystemVssConnection.url` as given (on-premises
    /// it moves them onto its configured server URL).
    pub fn is_hosted(&self) -> bool {
        self.token_listen.is_some() || self.plan_listen.is_some()
    }

    /// The collection path normalised: `""` or `"/org"` (leading slash, none trailing).
    pub fn collection_path(&self) -> String {
        crate::codec::Routes::new(self.collection_path.as_deref().unwrap_or(""))
            .base_path()
            .to_string()
    }

    /// Whether `listener` serves `call`, which arrived at `path`. A refusal is a typed 404 that
    /// says where the route lives.
    pub fn admits(
        &self,
        listener: Listener,
        path: &str,
        call: &ApiRequest,
    ) -> Result<(), ApiError> {
        let moved = |what: &str, url: Option<&String>| {
            Err(not_here(format!(
                "{what} is not served on this host; it is at {}",
                url.map_or("another listener", String::as_str)
            )))
        };
        if listener == Listener::Token {
            return match call {
                ApiRequest::Token(_) => Ok(()),
                _ => Err(not_here(
                    "this is the token service: only POST /_apis/oauth2/token is served here"
                        .to_string(),
                )),
            };
        }
        let prefix = self.collection_path();
        if !under(path, &prefix) {
            return Err(not_here(format!(
                "no route outside the collection {prefix}; use {prefix}/_apis/…"
            )));
        }
        let plan_hub = is_plan_hub(call);
        match listener {
            Listener::Plan if !(plan_hub || is_discovery(call)) => Err(not_here(
                "this host serves the plan hub only (the job's SystemVssConnection)".to_string(),
            )),
            Listener::Main
                if self.token_listen.is_some() && matches!(call, ApiRequest::Token(_)) =>
            {
                moved("the token endpoint", self.token_url.as_ref())
            }
            Listener::Main if self.plan_listen.is_some() && !self.plan_hub_on_main && plan_hub => {
                moved("the plan hub", self.plan_url.as_ref())
            }
            _ => Ok(()),
        }
    }

    /// Check what serde cannot.
    pub(super) fn validate(&self) -> Result<(), String> {
        if let Some(path) = &self.collection_path {
            let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
            let bad = segments.is_empty()
                || segments.iter().any(|s| {
                    s.eq_ignore_ascii_case("_apis")
                        || !s
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.~".contains(c))
                });
            if bad {
                return Err(format!(
                    "layout.collection_path {path:?} must be a path such as \"/org\": \
                     letters, digits, - _ . ~, and no _apis segment"
                ));
            }
        }
        if self.plan_hub_on_main && self.plan_listen.is_none() {
            return Err("layout.plan_hub_on_main needs layout.plan_listen".to_string());
        }
        Ok(())
    }
}

fn not_here(message: String) -> ApiError {
    ApiError::new(ErrorKind::RouteNotFound, message)
}

/// `path` is `prefix` or below it (segment-wise, case-insensitive as the real service).
fn under(path: &str, prefix: &str) -> bool {
    if prefix.is_empty() {
        return true;
    }
    let Some(head) = path.get(..prefix.len()) else {
        return false;
    };
    head.eq_ignore_ascii_case(prefix)
        && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
}

fn is_plan_hub(call: &ApiRequest) -> bool {
    use ApiRequest as A;
    matches!(
        call,
        A::UpdateTimelineRecords { .. }
            | A::AppendFeed { .. }
            | A::CreateLog { .. }
            | A::AppendLog { .. }
            | A::PutAttachment { .. }
            | A::PostEvent { .. }
    )
}

/// What any Azure DevOps client asks a host before calling it.
fn is_discovery(call: &ApiRequest) -> bool {
    use ApiRequest as A;
    matches!(
        call,
        A::ConnectionData | A::Options { .. } | A::ResourceAreas { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TokenGrant;

    fn token() -> ApiRequest {
        ApiRequest::Token(TokenGrant::Refresh {
            refresh_token: "t".into(),
        })
    }

    // Goal: with the Services layout each listener serves only its part, and the main one
    // refuses what moved elsewhere; without it everything is served everywhere.
    #[test]
    fn each_listener_serves_its_part() {
        let plain = Layout::default();
        assert!(
            plain
                .admits(Listener::Main, "/_apis/oauth2/token", &token())
                .is_ok()
        );
        let layout = Layout {
            token_listen: Some("127.0.0.1:0".parse().unwrap()),
            collection_path: Some("org/".into()),
            plan_listen: Some("127.0.0.2:0".parse().unwrap()),
            token_url: Some("http://127.0.0.1:9/_apis/oauth2/token".into()),
            ..Layout::default()
        };
        let conn = ApiRequest::ConnectionData;
        assert!(
            layout
                .admits(Listener::Token, "/_apis/oauth2/token", &token())
                .is_ok()
        );
        assert!(
            layout
                .admits(Listener::Token, "/org/_apis/connectionData", &conn)
                .is_err()
        );
        let err = layout
            .admits(Listener::Main, "/org/_apis/oauth2/token", &token())
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::RouteNotFound);
        assert!(
            err.message.contains("http://127.0.0.1:9/"),
            "{}",
            err.message
        );
        assert!(
            layout
                .admits(Listener::Main, "/ORG/_apis/connectionData", &conn)
                .is_ok()
        );
        assert!(
            layout
                .admits(Listener::Main, "/_apis/connectionData", &conn)
                .is_err()
        );
        assert!(
            layout
                .admits(Listener::Main, "/organ/_apis/connectionData", &conn)
                .is_err()
        );
        assert!(
            layout
                .admits(Listener::Plan, "/org/_apis/connectionData", &conn)
                .is_ok()
        );
        let list = ApiRequest::ListPools { pool_name: None };
        assert!(
            layout
                .admits(Listener::Plan, "/org/_apis/distributedtask/pools", &list)
                .is_err()
        );
    }

    // Goal: collection paths that cannot be a collection are refused at start.
    #[test]
    fn collection_paths_are_checked() {
        let with = |p: &str| Layout {
            collection_path: Some(p.into()),
            ..Layout::default()
        };
        assert!(with("/org").validate().is_ok());
        assert!(with("/a/b").validate().is_ok());
        assert!(with("/").validate().is_err());
        assert!(with("/org/_apis").validate().is_err());
        assert!(with("/o?rg").validate().is_err());
    }
}
