//! The one translation between typed protocol messages (`api`) and HTTP-shaped ones (`wire`):
//! routes, query parameters, credentials, JSON and form bodies, status codes, error bodies.
//!
//! Server side: [`decode_request`] and [`encode_response`]. Client side: [`resolve`] (where a
//! call goes: origin and request, from the agent's `api::Endpoint`), [`encode_request`] and
//! [`decode_response`]. Both sides use the same route table, so a round trip through the codec
//! is the identity (the tests check every route).
//!
//! Paths: everything before the `_apis` segment is a prefix the decoder ignores (a collection
//! such as `/DefaultCollection`), except on plan-hub routes, whose last prefix segment is the
//! `{scopeIdentifier}`, and on Pipelines and Build routes, whose last prefix segment is the
//! `{project}`. So one emulator answers under any base path.
//!
//! This module is pure: no IO, no clock, no state. Peer input never panics; it becomes a typed
//! [`ApiError`] (404 unknown route, 405 wrong method, 400 malformed, 413 too large).

pub mod locations;
pub mod text;
pub mod url;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{
    AgentInclude, AgentQuery, ApiError, ApiRequest, ApiResponse, Credential, ErrorKind, PlanScope,
    PoolQuery, Request, TokenGrant,
};
use crate::proto::{EMPTY_GUID, OAuthError, RunPipelineParameters, WrappedException};
use crate::wire::{Method, WireRequest, WireResponse};

pub use locations::{LocationSpec, locations, resource_locations};
pub use text::iso8601_utc;
pub use url::{Origin, Url, UrlError, UrlScheme, resolve};

/// The token endpoint's path below the base URL; `authorizationUrl` is the public URL + this.
pub const TOKEN_PATH: &str = "/_apis/oauth2/token";
/// Emulator extension: the admin counters route below the base URL.
pub const STATS_PATH: &str = "/_apis/fleetsim/stats";
/// Emulator extension: the token-expiry storm route below the base URL.
pub const TOKEN_EXPIRY_PATH: &str = "/_apis/fleetsim/faults/tokenExpiry";
/// `client_assertion_type` of the JWT-bearer client assertion.
pub const JWT_BEARER_ASSERTION_TYPE: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Error messages quoting peer input are cut to this many bytes.
const MESSAGE_MAX: usize = 300;

/// A base path prefix (`""` or `"/DefaultCollection"`), normalised: a leading `/`, no trailing
/// `/`. Clients put it in front of every route; the decoder accepts any prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routes {
    base_path: String,
}

impl Routes {
    /// Normalise `base_path` (`"DefaultCollection/"` → `"/DefaultCollection"`, `"/"` → `""`).
    pub fn new(base_path: &str) -> Routes {
        let trimmed = base_path.trim_matches('/');
        let base_path = if trimmed.is_empty() {
            String::new()
        } else {
            format!("/{trimmed}")
        };
        Routes { base_path }
    }

    /// The base path of a URL such as `https://host:8080/org` (`"/org"`); `""` without one.
    pub fn from_url(url: &str) -> Routes {
        let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
        let path = after_scheme.find('/').map_or("", |i| &after_scheme[i..]);
        Routes::new(path)
    }

    /// The normalised prefix.
    pub fn base_path(&self) -> &str {
        &self.base_path
    }
}

/// What the server side needs to render responses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseContext {
    /// The emulator's public base URL (no trailing slash), named in the 401 challenge.
    pub public_url: String,
    /// The token endpoint's URL when it is not `{public_url}/_apis/oauth2/token` (a token
    /// service on another host): the 401 challenge names it instead.
    pub token_url: Option<String>,
    /// Type `expires_in` in token answers as a JSON string, as some Azure DevOps answers do.
    pub expires_in_as_string: bool,
}

// =============================================================================================
// Server side: decode requests
// =============================================================================================

/// Route and decode one request. Bodies over `max_body_bytes` are refused before any parsing.
pub fn decode_request(req: &WireRequest, max_body_bytes: usize) -> Result<Request, ApiError> {
    if req.body.len() > max_body_bytes {
        return Err(ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!(
                "the request body is {} bytes; this emulator accepts at most {max_body_bytes}",
                req.body.len()
            ),
        ));
    }
    let credential = decode_credential(req.authorization.as_deref())?;
    let call = decode_call(req)?;
    Ok(Request { credential, call })
}

/// `Authorization` header → credential. Unknown schemes and broken Basic payloads are 401s: the
/// caller is not authenticated, and the challenge tells it how to be.
pub fn decode_credential(header: Option<&str>) -> Result<Credential, ApiError> {
    let Some(header) = header.map(str::trim).filter(|h| !h.is_empty()) else {
        return Ok(Credential::Anonymous);
    };
    let (scheme, payload) = header.split_once(' ').unwrap_or((header, ""));
    let payload = payload.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !payload.is_empty() {
        return Ok(Credential::Bearer(payload.to_string()));
    }
    if scheme.eq_ignore_ascii_case("basic")
        && let Some((user, password)) = text::parse_basic(payload)
    {
        return Ok(Credential::Basic { user, password });
    }
    Err(ApiError::new(
        ErrorKind::Unauthorized,
        "the Authorization header is not a valid Basic (user:PAT) or Bearer credential",
    ))
}

/// Whether a request to `path` must carry a credential that authenticates. Every route does
/// except the token endpoint (`…/_apis/oauth2/token`, spelt as `decode_request` routes it:
/// any case, percent-escapes decoded), whose client proves itself in the body with a signed
/// assertion or a job token. The emulator's front asks this with the request head alone,
/// before it reads a body (see `Server::check_head`).
pub fn needs_credential(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let Some(apis) = segments
        .iter()
        .position(|s| s.eq_ignore_ascii_case("_apis"))
    else {
        return true;
    };
    let rest: Vec<Option<String>> = segments[apis + 1..]
        .iter()
        .map(|s| text::percent_decode(s, false).map(|s| s.to_ascii_lowercase()))
        .collect();
    !matches!(rest.as_slice(), [Some(a), Some(b)] if a == "oauth2" && b == "token")
}

fn decode_call(req: &WireRequest) -> Result<ApiRequest, ApiError> {
    let raw: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    let Some(apis) = raw.iter().position(|s| s.eq_ignore_ascii_case("_apis")) else {
        return Err(not_found(req));
    };
    let mut segs = Vec::with_capacity(raw.len());
    for s in &raw {
        segs.push(
            text::percent_decode(s, false)
                .ok_or_else(|| bad_request("the path has a broken percent-escape"))?,
        );
    }
    let query = text::parse_pairs(&req.query, true)
        .ok_or_else(|| bad_request("the query string has a broken percent-escape"))?;
    let ctx = Ctx {
        req,
        query,
        scope: apis.checked_sub(1).map(|i| segs[i].clone()),
    };
    let rest: Vec<&str> = segs[apis + 1..].iter().map(String::as_str).collect();
    let lower: Vec<String> = rest.iter().map(|s| s.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    match lower.as_slice() {
        [] => ctx.only(Method::Options, || Ok(ApiRequest::Options { area: None })),
        ["connectiondata"] => ctx.only(Method::Get, || Ok(ApiRequest::ConnectionData)),
        ["resourceareas"] => ctx.only(Method::Get, || {
            Ok(ApiRequest::ResourceAreas { area_id: None })
        }),
        ["resourceareas", _] => ctx.only(Method::Get, || {
            Ok(ApiRequest::ResourceAreas {
                area_id: Some(rest[1].to_string()),
            })
        }),
        ["oauth2", "token"] => ctx.only(Method::Post, || ctx.token_grant().map(ApiRequest::Token)),
        ["fleetsim", "stats"] => ctx.only(Method::Get, || Ok(ApiRequest::AdminStats)),
        ["fleetsim", "faults", "tokenexpiry"] => {
            ctx.only(Method::Post, || ctx.json().map(ApiRequest::ExpireTokens))
        }
        [_] => ctx.only(Method::Options, || {
            Ok(ApiRequest::Options {
                area: Some(rest[0].to_string()),
            })
        }),
        ["distributedtask", "pools"] => match req.method {
            Method::Get => ctx.pools_query(),
            Method::Post => Ok(ApiRequest::AddPool { pool: ctx.json()? }),
            _ => Err(not_allowed(req)),
        },
        ["distributedtask", "pools", _] => {
            let pool_id: u32 = parse_id("poolId", rest[2])?;
            match req.method {
                Method::Get => Ok(ApiRequest::GetPool {
                    pool_id,
                    query: ctx.pool_query()?,
                }),
                Method::Patch => Ok(ApiRequest::UpdatePool {
                    pool_id,
                    pool: ctx.json()?,
                }),
                Method::Delete => Ok(ApiRequest::DeletePool { pool_id }),
                _ => Err(not_allowed(req)),
            }
        }
        ["distributedtask", "pools", _, resource, tail @ ..] => {
            let pool_id: u32 = parse_id("poolId", rest[2])?;
            let tail_raw = &rest[4..];
            ctx.pool_route(pool_id, resource, tail, tail_raw)
        }
        ["pipelines", _, "runs", ..] | ["build", "builds", _] => ctx.project_route(&rest, &lower),
        ["distributedtask", "hubs", _, "plans", _, tail @ ..] => {
            let plan = PlanScope {
                scope_identifier: ctx.scope.clone().unwrap_or_default(),
                hub: rest[2].to_string(),
                plan_id: rest[4].to_string(),
            };
            ctx.hub_route(plan, tail, &rest[5..])
        }
        _ => Err(not_found(req)),
    }
}

/// One request being decoded.
struct Ctx<'a> {
    req: &'a WireRequest,
    query: Vec<(String, String)>,
    /// The path segment before `_apis` (the plan hub's `{scopeIdentifier}`).
    scope: Option<String>,
}

impl Ctx<'_> {
    /// Decode with `f` when the method is `method`, else 405.
    fn only(
        &self,
        method: Method,
        f: impl FnOnce() -> Result<ApiRequest, ApiError>,
    ) -> Result<ApiRequest, ApiError> {
        if self.req.method == method {
            f()
        } else {
            Err(not_allowed(self.req))
        }
    }

    fn param(&self, name: &str) -> Option<String> {
        text::param(&self.query, name).map(str::to_string)
    }

    fn required(&self, name: &str) -> Result<String, ApiError> {
        self.param(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| bad_request(format!("the query parameter {name} is required")))
    }

    fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.req.body).map_err(|e| {
            let detail = e.to_string();
            bad_request(format!(
                "the request body is not the expected JSON: {}",
                text::truncate(&detail, MESSAGE_MAX)
            ))
        })
    }

    fn pool_route(
        &self,
        pool_id: u32,
        resource: &str,
        tail: &[&str],
        tail_raw: &[&str],
    ) -> Result<ApiRequest, ApiError> {
        let m = self.req.method;
        match (resource, tail, m) {
            ("agents", [], Method::Get) => self.agents_query(pool_id),
            ("agents", [], Method::Post) => Ok(ApiRequest::AddAgent {
                pool_id,
                agent: self.json()?,
            }),
            ("agents", [_], Method::Get) => {
                let agent_id = parse_id("agentId", tail_raw[0])?;
                let include = self.agent_include()?;
                Ok(if include == AgentInclude::default() {
                    ApiRequest::GetAgent { pool_id, agent_id }
                } else {
                    ApiRequest::GetAgentWith {
                        pool_id,
                        agent_id,
                        include,
                    }
                })
            }
            ("agents", [_], Method::Patch) => Ok(ApiRequest::UpdateAgent {
                pool_id,
                agent_id: parse_id("agentId", tail_raw[0])?,
                update: self.json()?,
            }),
            ("agents", [_], Method::Put) => Ok(ApiRequest::ReplaceAgent {
                pool_id,
                agent_id: parse_id("agentId", tail_raw[0])?,
                agent: self.json()?,
            }),
            ("agents", [_], Method::Delete) => Ok(ApiRequest::DeleteAgent {
                pool_id,
                agent_id: parse_id("agentId", tail_raw[0])?,
            }),
            ("sessions", [], Method::Post) => Ok(ApiRequest::CreateSession {
                pool_id,
                session: self.json()?,
            }),
            ("sessions", [_], Method::Delete) => Ok(ApiRequest::DeleteSession {
                pool_id,
                session_id: tail_raw[0].to_string(),
            }),
            ("messages", [], Method::Get) => Ok(ApiRequest::GetMessage {
                pool_id,
                session_id: self.required("sessionId")?,
                last_message_id: match self.param("lastMessageId").filter(|v| !v.is_empty()) {
                    Some(v) => Some(parse_id("lastMessageId", &v)?),
                    None => None,
                },
            }),
            ("messages", [_], Method::Delete) => Ok(ApiRequest::DeleteMessage {
                pool_id,
                message_id: parse_id("messageId", tail_raw[0])?,
                session_id: self.required("sessionId")?,
            }),
            ("jobrequests", [], Method::Get) => Ok(ApiRequest::ListJobRequests { pool_id }),
            ("jobrequests", [], Method::Post) => Ok(ApiRequest::QueueJobs {
                pool_id,
                request: self.json()?,
            }),
            ("jobrequests", [_], Method::Delete) => Ok(ApiRequest::CancelJob {
                pool_id,
                request_id: parse_id("requestId", tail_raw[0])?,
            }),
            ("jobrequests", [_], Method::Patch) => Ok(ApiRequest::UpdateJobRequest {
                pool_id,
                request_id: parse_id("requestId", tail_raw[0])?,
                lock_token: self
                    .param("lockToken")
                    .unwrap_or_else(|| EMPTY_GUID.to_string()),
                update: self.json()?,
            }),
            ("agents" | "jobrequests", [] | [_], _)
            | ("sessions" | "messages", [], _)
            | ("sessions" | "messages", [_], _) => Err(not_allowed(self.req)),
            _ => Err(not_found(self.req)),
        }
    }

    /// `{project}/_apis/pipelines/{pipelineId}/runs[/{runId}]` and
    /// `{project}/_apis/build/builds/{buildId}`; the project is the segment before `_apis`.
    fn project_route(&self, raw: &[&str], lower: &[&str]) -> Result<ApiRequest, ApiError> {
        let Some(project) = self.scope.clone().filter(|p| !p.is_empty()) else {
            return Err(not_found(self.req));
        };
        let m = self.req.method;
        match (lower, m) {
            (["pipelines", _, "runs"], Method::Post) => Ok(ApiRequest::RunPipeline {
                project,
                pipeline_id: parse_id("pipelineId", raw[1])?,
                params: if self.req.body.iter().all(u8::is_ascii_whitespace) {
                    RunPipelineParameters::default()
                } else {
                    self.json()?
                },
            }),
            (["pipelines", _, "runs"], Method::Get) => Ok(ApiRequest::ListPipelineRuns {
                project,
                pipeline_id: parse_id("pipelineId", raw[1])?,
            }),
            (["pipelines", _, "runs", _], Method::Get) => Ok(ApiRequest::GetPipelineRun {
                project,
                pipeline_id: parse_id("pipelineId", raw[1])?,
                run_id: parse_id("runId", raw[3])?,
            }),
            (["build", "builds", _], Method::Patch) => Ok(ApiRequest::UpdateBuild {
                project,
                build_id: parse_id("buildId", raw[2])?,
                update: self.json()?,
            }),
            (
                ["pipelines", _, "runs"] | ["pipelines", _, "runs", _] | ["build", "builds", _],
                _,
            ) => Err(not_allowed(self.req)),
            _ => Err(not_found(self.req)),
        }
    }

    /// A boolean query option (`true`/`false`, any case); absent is `false`.
    fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.param(name).filter(|v| !v.is_empty()) {
            None => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(bad_request(format!(
                "{name} must be true or false, got {:?}",
                text::truncate(&v, 64)
            ))),
        }
    }

    /// A comma-separated list option; absent or empty is an empty list.
    fn list(&self, name: &str) -> Vec<String> {
        self.param(name)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn agent_include(&self) -> Result<AgentInclude, ApiError> {
        Ok(AgentInclude {
            capabilities: self.flag("includeCapabilities")?,
            assigned_request: self.flag("includeAssignedRequest")?,
            last_completed_request: self.flag("includeLastCompletedRequest")?,
            property_filters: self.param("propertyFilters").filter(|v| !v.is_empty()),
        })
    }

    /// `GET …/agents`: a plain name lookup (what the agent's configure step sends) stays
    /// `ListAgents`; any other option makes it `QueryAgents`.
    fn agents_query(&self, pool_id: u32) -> Result<ApiRequest, ApiError> {
        let query = AgentQuery {
            agent_name: self.param("agentName"),
            include: self.agent_include()?,
            demands: self.list("demands"),
        };
        Ok(
            if query.include == AgentInclude::default() && query.demands.is_empty() {
                ApiRequest::ListAgents {
                    pool_id,
                    agent_name: query.agent_name,
                }
            } else {
                ApiRequest::QueryAgents { pool_id, query }
            },
        )
    }

    fn pool_query(&self) -> Result<PoolQuery, ApiError> {
        let pool_ids = self
            .list("poolIds")
            .iter()
            .map(|id| parse_id("poolIds", id))
            .collect::<Result<_, _>>()?;
        let nonempty = |name| self.param(name).filter(|v| !v.is_empty());
        Ok(PoolQuery {
            pool_name: self.param("poolName"),
            pool_ids,
            pool_type: nonempty("poolType"),
            action_filter: nonempty("actionFilter"),
            properties: nonempty("properties"),
        })
    }

    /// `GET …/pools`: by name only (the agent's configure step) stays `ListPools`.
    fn pools_query(&self) -> Result<ApiRequest, ApiError> {
        let query = self.pool_query()?;
        let by_name_only = PoolQuery {
            pool_name: query.pool_name.clone(),
            ..PoolQuery::default()
        };
        Ok(if query == by_name_only {
            ApiRequest::ListPools {
                pool_name: query.pool_name,
            }
        } else {
            ApiRequest::QueryPools { query }
        })
    }

    fn hub_route(
        &self,
        plan: PlanScope,
        tail: &[&str],
        raw: &[&str],
    ) -> Result<ApiRequest, ApiError> {
        let m = self.req.method;
        let owned = |i: usize| raw[i].to_string();
        match (tail, m) {
            (["timelines", _, "records"], Method::Patch) => Ok(ApiRequest::UpdateTimelineRecords {
                plan,
                timeline_id: owned(1),
                records: self.json()?,
            }),
            (["timelines", _, "records", _, "feed"], Method::Post) => Ok(ApiRequest::AppendFeed {
                plan,
                timeline_id: owned(1),
                record_id: owned(3),
                feed: self.json()?,
            }),
            (["logs"], Method::Post) => Ok(ApiRequest::CreateLog {
                plan,
                log: self.json()?,
            }),
            (["logs", _], Method::Post) => Ok(ApiRequest::AppendLog {
                plan,
                log_id: parse_id("logId", raw[1])?,
                content: self.req.body.clone(),
            }),
            (["timelines", _, "records", _, "attachments", _, _], Method::Put) => {
                Ok(ApiRequest::PutAttachment {
                    plan,
                    timeline_id: owned(1),
                    record_id: owned(3),
                    kind: owned(5),
                    name: owned(6),
                    content: self.req.body.clone(),
                })
            }
            (["events"], Method::Post) => Ok(ApiRequest::PostEvent {
                plan,
                event: self.json()?,
            }),
            (
                ["timelines", _, "records"]
                | ["timelines", _, "records", _, "feed"]
                | ["logs"]
                | ["logs", _]
                | ["timelines", _, "records", _, "attachments", _, _]
                | ["events"],
                _,
            ) => Err(not_allowed(self.req)),
            _ => Err(not_found(self.req)),
        }
    }

    fn token_grant(&self) -> Result<TokenGrant, ApiError> {
        let body = std::str::from_utf8(&self.req.body)
            .map_err(|_| oauth_grant_error("the token request body is not UTF-8"))?;
        let form = text::parse_pairs(body, true)
            .ok_or_else(|| oauth_grant_error("the token request body is not a valid form"))?;
        let field = |name: &str| {
            text::param(&form, name)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .ok_or_else(|| oauth_grant_error(format!("the token request has no {name} field")))
        };
        match field("grant_type")?.as_str() {
            "client_credentials" => Ok(TokenGrant::ClientCredentials {
                client_assertion_type: field("client_assertion_type")?,
                client_assertion: field("client_assertion")?,
            }),
            "refresh_token" => Ok(TokenGrant::Refresh {
                refresh_token: field("refresh_token")?,
            }),
            other => Err(oauth_grant_error(format!(
                "grant_type {:?} is not supported; use client_credentials (or refresh_token \
                 to rotate a job token)",
                text::truncate(other, 64)
            ))),
        }
    }
}

fn parse_id<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ApiError> {
    value.parse().map_err(|_| {
        bad_request(format!(
            "{name} must be a non-negative integer, got {:?}",
            text::truncate(value, 64)
        ))
    })
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::BadRequest, message)
}

fn oauth_grant_error(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::OAuthInvalidGrant, message)
}

fn not_found(req: &WireRequest) -> ApiError {
    ApiError::new(
        ErrorKind::RouteNotFound,
        format!(
            "no route {} {}; OPTIONS /_apis/ lists the resources this emulator serves",
            req.method.as_str(),
            text::truncate(&req.path, MESSAGE_MAX)
        ),
    )
}

fn not_allowed(req: &WireRequest) -> ApiError {
    ApiError::new(
        ErrorKind::MethodNotAllowed,
        format!(
            "{} is not supported on {}",
            req.method.as_str(),
            text::truncate(&req.path, MESSAGE_MAX)
        ),
    )
}

// =============================================================================================
// Server side: encode responses
// =============================================================================================

/// Render one answer: status, headers and body.
pub fn encode_response(resp: &ApiResponse, ctx: &ResponseContext) -> WireResponse {
    match resp {
        ApiResponse::ConnectionData(v) => ok_json(v),
        ApiResponse::Locations(v) => ok_json(v),
        ApiResponse::NoResourceAreas => {
            WireResponse::json(200, br#"{"count":0,"value":null}"#.to_vec())
        }
        ApiResponse::Pools(v) => ok_json(v),
        ApiResponse::Pool(v) => ok_json(v),
        ApiResponse::Agents(v) => ok_json(v),
        ApiResponse::Agent(v) => ok_json(v),
        ApiResponse::NoContent => WireResponse::empty(204),
        ApiResponse::Token(v) if ctx.expires_in_as_string => ok_json(&string_expiry(v)),
        ApiResponse::Token(v) => ok_json(v),
        ApiResponse::Session(v) => ok_json(v),
        ApiResponse::Message(v) => ok_json(v),
        ApiResponse::NoMessage => WireResponse::empty(202),
        ApiResponse::JobRequest(v) => ok_json(v),
        ApiResponse::JobRequests(v) => ok_json(v),
        ApiResponse::QueuedJobs(v) => ok_json(v),
        ApiResponse::Stats(v) => ok_json(v),
        ApiResponse::TokensExpired(v) => ok_json(v),
        ApiResponse::TimelineRecords(v) => ok_json(v),
        ApiResponse::Log(v) => ok_json(v),
        ApiResponse::Attachment(v) => ok_json(v),
        ApiResponse::Ok => WireResponse::empty(200),
        ApiResponse::PipelineRun(v) => ok_json(v),
        ApiResponse::PipelineRuns(v) => ok_json(v),
        ApiResponse::Build(v) => ok_json(v),
        ApiResponse::Error(e) => encode_error(e, ctx),
    }
}

/// An error as the client expects it: `{error, error_description}` for the OAuth kinds, a
/// WrappedException otherwise; 401 carries the Bearer challenge, 429/503 a `Retry-After`.
pub fn encode_error(err: &ApiError, ctx: &ResponseContext) -> WireResponse {
    let status = err.kind.status();
    let body = match oauth_error_code(err.kind) {
        Some(code) => to_json(&OAuthError {
            error: code.to_string(),
            error_description: err.message.clone(),
        }),
        None => to_json(&WrappedException {
            inner_exception: None,
            message: err.message.clone(),
            type_name: format!(
                "{}, Microsoft.VisualStudio.Services.WebApi",
                err.kind.type_name()
            ),
            type_key: err.kind.type_key().to_string(),
            error_code: 0,
            event_id: 3000,
        }),
    };
    let mut resp = WireResponse::json(status, body);
    match status {
        401 => resp.headers.push((
            "www-authenticate",
            match &ctx.token_url {
                Some(url) => format!("Bearer authorization_uri={url}"),
                None => format!("Bearer authorization_uri={}{TOKEN_PATH}", ctx.public_url),
            },
        )),
        429 | 503 => resp.headers.push(("retry-after", "1".to_string())),
        _ => {}
    }
    resp
}

/// A token answer with `expires_in` typed as a JSON string (`"3600"`).
fn string_expiry(token: &crate::proto::TokenResponse) -> serde_json::Value {
    let mut value = serde_json::to_value(token).unwrap_or_default();
    if let Some(fields) = value.as_object_mut() {
        let seconds = serde_json::Value::String(token.expires_in.to_string());
        fields.insert("expires_in".to_string(), seconds);
    }
    value
}

fn oauth_error_code(kind: ErrorKind) -> Option<&'static str> {
    match kind {
        ErrorKind::OAuthInvalidClient => Some("invalid_client"),
        ErrorKind::OAuthInvalidGrant => Some("invalid_grant"),
        _ => None,
    }
}

fn ok_json<T: Serialize>(value: &T) -> WireResponse {
    WireResponse::json(200, to_json(value))
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // The protocol types are plain structs with string keys: serialising them cannot fail.
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

// =============================================================================================
// Client side: encode requests
// =============================================================================================

/// Build the HTTP request for `req` under `base_path` (e.g. `""` or `"/DefaultCollection"`).
pub fn encode_request(req: &Request, base_path: &str) -> WireRequest {
    let routes = Routes::new(base_path);
    let (method, path, query, body, content_type) = encode_call(&req.call);
    WireRequest {
        method,
        path: format!("{}{path}", routes.base_path()),
        query,
        authorization: match &req.credential {
            Credential::Anonymous => None,
            Credential::Basic { user, password } => Some(text::basic_header(user, password)),
            Credential::Bearer(token) => Some(format!("Bearer {token}")),
        },
        content_type: body.as_ref().map(|_| content_type.to_string()),
        body: body.unwrap_or_default(),
    }
}

const JSON: &str = "application/json; charset=utf-8";
const OCTETS: &str = "application/octet-stream";
const FORM: &str = "application/x-www-form-urlencoded";

type Encoded = (Method, String, String, Option<Vec<u8>>, &'static str);

fn encode_call(call: &ApiRequest) -> Encoded {
    use ApiRequest as A;
    let e = text::percent_encode;
    let pools = |id: u32| format!("/_apis/distributedtask/pools/{id}");
    let none = String::new;
    match call {
        A::ConnectionData => (
            Method::Get,
            "/_apis/connectionData".into(),
            "connectOptions=1&lastChangeId=-1&lastChangeId64=-1".into(),
            None,
            JSON,
        ),
        A::Options { area } => {
            let path = match area {
                None => "/_apis/".to_string(),
                Some(a) => format!("/_apis/{}", e(a)),
            };
            (Method::Options, path, none(), None, JSON)
        }
        A::ResourceAreas { area_id } => {
            let path = match area_id {
                None => "/_apis/ResourceAreas".to_string(),
                Some(id) => format!("/_apis/ResourceAreas/{}", e(id)),
            };
            (Method::Get, path, none(), None, JSON)
        }
        A::ListPools { pool_name } => {
            let q = pool_name
                .as_ref()
                .map(|n| text::join_pairs(&[("poolName", n.clone())]));
            (
                Method::Get,
                "/_apis/distributedtask/pools".into(),
                q.unwrap_or_default(),
                None,
                JSON,
            )
        }
        A::ListAgents {
            pool_id,
            agent_name,
        } => {
            let q = agent_name
                .as_ref()
                .map(|n| text::join_pairs(&[("agentName", n.clone())]));
            (
                Method::Get,
                format!("{}/agents", pools(*pool_id)),
                q.unwrap_or_default(),
                None,
                JSON,
            )
        }
        A::AddAgent { pool_id, agent } => (
            Method::Post,
            format!("{}/agents", pools(*pool_id)),
            none(),
            Some(to_json(agent)),
            JSON,
        ),
        A::GetAgent { pool_id, agent_id } => (
            Method::Get,
            format!("{}/agents/{agent_id}", pools(*pool_id)),
            none(),
            None,
            JSON,
        ),
        A::ReplaceAgent {
            pool_id,
            agent_id,
            agent,
        } => (
            Method::Put,
            format!("{}/agents/{agent_id}", pools(*pool_id)),
            none(),
            Some(to_json(agent)),
            JSON,
        ),
        A::DeleteAgent { pool_id, agent_id } => (
            Method::Delete,
            format!("{}/agents/{agent_id}", pools(*pool_id)),
            none(),
            None,
            JSON,
        ),
        A::Token(grant) => {
            let form = match grant {
                TokenGrant::ClientCredentials {
                    client_assertion_type,
                    client_assertion,
                } => text::join_pairs(&[
                    ("grant_type", "client_credentials".into()),
                    ("client_assertion_type", client_assertion_type.clone()),
                    ("client_assertion", client_assertion.clone()),
                ]),
                TokenGrant::Refresh { refresh_token } => text::join_pairs(&[
                    ("grant_type", "refresh_token".into()),
                    ("refresh_token", refresh_token.clone()),
                ]),
            };
            (
                Method::Post,
                TOKEN_PATH.into(),
                none(),
                Some(form.into_bytes()),
                FORM,
            )
        }
        A::CreateSession { pool_id, session } => (
            Method::Post,
            format!("{}/sessions", pools(*pool_id)),
            none(),
            Some(to_json(session)),
            JSON,
        ),
        A::DeleteSession {
            pool_id,
            session_id,
        } => (
            Method::Delete,
            format!("{}/sessions/{}", pools(*pool_id), e(session_id)),
            none(),
            None,
            JSON,
        ),
        A::GetMessage {
            pool_id,
            session_id,
            last_message_id,
        } => {
            let mut q = vec![("sessionId", session_id.clone())];
            if let Some(id) = last_message_id {
                q.push(("lastMessageId", id.to_string()));
            }
            (
                Method::Get,
                format!("{}/messages", pools(*pool_id)),
                text::join_pairs(&q),
                None,
                JSON,
            )
        }
        A::DeleteMessage {
            pool_id,
            message_id,
            session_id,
        } => (
            Method::Delete,
            format!("{}/messages/{message_id}", pools(*pool_id)),
            text::join_pairs(&[("sessionId", session_id.clone())]),
            None,
            JSON,
        ),
        A::UpdateJobRequest {
            pool_id,
            request_id,
            lock_token,
            update,
        } => (
            Method::Patch,
            format!("{}/jobrequests/{request_id}", pools(*pool_id)),
            text::join_pairs(&[("lockToken", lock_token.clone())]),
            Some(to_json(update)),
            JSON,
        ),
        A::QueueJobs { pool_id, request } => (
            Method::Post,
            format!("{}/jobrequests", pools(*pool_id)),
            none(),
            Some(to_json(request)),
            JSON,
        ),
        A::ListJobRequests { pool_id } => (
            Method::Get,
            format!("{}/jobrequests", pools(*pool_id)),
            none(),
            None,
            JSON,
        ),
        A::CancelJob {
            pool_id,
            request_id,
        } => (
            Method::Delete,
            format!("{}/jobrequests/{request_id}", pools(*pool_id)),
            none(),
            None,
            JSON,
        ),
        A::AdminStats => (Method::Get, STATS_PATH.into(), none(), None, JSON),
        A::ExpireTokens(body) => (
            Method::Post,
            TOKEN_EXPIRY_PATH.into(),
            none(),
            Some(to_json(body)),
            JSON,
        ),
        A::UpdateTimelineRecords {
            plan,
            timeline_id,
            records,
        } => (
            Method::Patch,
            format!("{}/timelines/{}/records", hub(plan), e(timeline_id)),
            none(),
            Some(to_json(records)),
            JSON,
        ),
        A::AppendFeed {
            plan,
            timeline_id,
            record_id,
            feed,
        } => (
            Method::Post,
            format!(
                "{}/timelines/{}/records/{}/feed",
                hub(plan),
                e(timeline_id),
                e(record_id)
            ),
            none(),
            Some(to_json(feed)),
            JSON,
        ),
        A::CreateLog { plan, log } => (
            Method::Post,
            format!("{}/logs", hub(plan)),
            none(),
            Some(to_json(log)),
            JSON,
        ),
        A::AppendLog {
            plan,
            log_id,
            content,
        } => (
            Method::Post,
            format!("{}/logs/{log_id}", hub(plan)),
            none(),
            Some(content.clone()),
            OCTETS,
        ),
        A::PutAttachment {
            plan,
            timeline_id,
            record_id,
            kind,
            name,
            content,
        } => (
            Method::Put,
            format!(
                "{}/timelines/{}/records/{}/attachments/{}/{}",
                hub(plan),
                e(timeline_id),
                e(record_id),
                e(kind),
                e(name)
            ),
            none(),
            Some(content.clone()),
            OCTETS,
        ),
        A::PostEvent { plan, event } => (
            Method::Post,
            format!("{}/events", hub(plan)),
            none(),
            Some(to_json(event)),
            JSON,
        ),
        A::RunPipeline {
            project,
            pipeline_id,
            params,
        } => (
            Method::Post,
            format!("/{}/_apis/pipelines/{pipeline_id}/runs", e(project)),
            PIPELINES_API_VERSION.into(),
            Some(to_json(params)),
            JSON,
        ),
        A::GetPipelineRun {
            project,
            pipeline_id,
            run_id,
        } => (
            Method::Get,
            format!(
                "/{}/_apis/pipelines/{pipeline_id}/runs/{run_id}",
                e(project)
            ),
            PIPELINES_API_VERSION.into(),
            None,
            JSON,
        ),
        A::ListPipelineRuns {
            project,
            pipeline_id,
        } => (
            Method::Get,
            format!("/{}/_apis/pipelines/{pipeline_id}/runs", e(project)),
            PIPELINES_API_VERSION.into(),
            None,
            JSON,
        ),
        A::UpdateBuild {
            project,
            build_id,
            update,
        } => (
            Method::Patch,
            format!("/{}/_apis/build/builds/{build_id}", e(project)),
            PIPELINES_API_VERSION.into(),
            Some(to_json(update)),
            JSON,
        ),
        A::QueryAgents { .. }
        | A::GetAgentWith { .. }
        | A::UpdateAgent { .. }
        | A::GetPool { .. }
        | A::QueryPools { .. }
        | A::AddPool { .. }
        | A::UpdatePool { .. }
        | A::DeletePool { .. } => encode_admin_call(call),
    }
}

/// The agent and pool administration calls Microsoft's SDKs make (and no agent does).
fn encode_admin_call(call: &ApiRequest) -> Encoded {
    use ApiRequest as A;
    let pools = "/_apis/distributedtask/pools";
    let agents = |pool_id: u32| format!("{pools}/{pool_id}/agents");
    match call {
        A::QueryAgents { pool_id, query } => {
            let mut q = Vec::new();
            if let Some(name) = &query.agent_name {
                q.push(("agentName", name.clone()));
            }
            q.extend(include_pairs(&query.include));
            if !query.demands.is_empty() {
                q.push(("demands", query.demands.join(",")));
            }
            let q = text::join_pairs(&q);
            (Method::Get, agents(*pool_id), q, None, JSON)
        }
        A::GetAgentWith {
            pool_id,
            agent_id,
            include,
        } => {
            let q = text::join_pairs(&include_pairs(include));
            let path = format!("{}/{agent_id}", agents(*pool_id));
            (Method::Get, path, q, None, JSON)
        }
        A::UpdateAgent {
            pool_id,
            agent_id,
            update,
        } => {
            let path = format!("{}/{agent_id}", agents(*pool_id));
            (
                Method::Patch,
                path,
                String::new(),
                Some(to_json(update)),
                JSON,
            )
        }
        A::GetPool { pool_id, query } => {
            let q = text::join_pairs(&pool_pairs(query));
            (Method::Get, format!("{pools}/{pool_id}"), q, None, JSON)
        }
        A::QueryPools { query } => {
            let q = text::join_pairs(&pool_pairs(query));
            (Method::Get, pools.to_string(), q, None, JSON)
        }
        A::AddPool { pool } => (
            Method::Post,
            pools.to_string(),
            String::new(),
            Some(to_json(pool)),
            JSON,
        ),
        A::UpdatePool { pool_id, pool } => (
            Method::Patch,
            format!("{pools}/{pool_id}"),
            String::new(),
            Some(to_json(pool)),
            JSON,
        ),
        A::DeletePool { pool_id } => (
            Method::Delete,
            format!("{pools}/{pool_id}"),
            String::new(),
            None,
            JSON,
        ),
        // Every other call is encoded by `encode_call`.
        _ => (Method::Get, "/_apis/".into(), String::new(), None, JSON),
    }
}

/// The `include*` options, written out in full so the decoder sees them all.
fn include_pairs(include: &AgentInclude) -> Vec<(&'static str, String)> {
    let mut q = vec![
        ("includeCapabilities", include.capabilities.to_string()),
        (
            "includeAssignedRequest",
            include.assigned_request.to_string(),
        ),
        (
            "includeLastCompletedRequest",
            include.last_completed_request.to_string(),
        ),
    ];
    if let Some(p) = &include.property_filters {
        q.push(("propertyFilters", p.clone()));
    }
    q
}

fn pool_pairs(query: &PoolQuery) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(name) = &query.pool_name {
        q.push(("poolName", name.clone()));
    }
    if !query.pool_ids.is_empty() {
        let ids: Vec<String> = query.pool_ids.iter().map(u32::to_string).collect();
        q.push(("poolIds", ids.join(",")));
    }
    let optional = [
        ("poolType", &query.pool_type),
        ("actionFilter", &query.action_filter),
        ("properties", &query.properties),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            q.push((name, v.clone()));
        }
    }
    q
}

/// The query of Pipelines and Build REST calls: those routes take their version in the query
/// (Microsoft's REST reference writes `?api-version=7.1`), unlike the agent's calls, which
/// send it in the `Accept` header.
const PIPELINES_API_VERSION: &str = "api-version=7.1";

/// `/{scopeIdentifier}/_apis/distributedtask/hubs/{hubName}/plans/{planId}`.
fn hub(plan: &PlanScope) -> String {
    let e = text::percent_encode;
    format!(
        "/{}/_apis/distributedtask/hubs/{}/plans/{}",
        e(&plan.scope_identifier),
        e(&plan.hub),
        e(&plan.plan_id)
    )
}

// =============================================================================================
// Client side: decode responses
// =============================================================================================

/// Read the answer to `call`. A 2xx whose body does not parse becomes a `BadRequest` error whose
/// message starts with "unreadable response"; a non-2xx without a recognisable error body is
/// typed from its status alone.
pub fn decode_response(call: &ApiRequest, resp: &WireResponse) -> ApiResponse {
    decode_answer(AnswerKind::of(call), resp)
}

/// The shape of answer a call expects: all that decoding needs of the call. A driver holding a
/// call in flight (a long poll, for 50 s) keeps this one byte instead of the whole request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerKind {
    ConnectionData,
    Locations,
    NoResourceAreas,
    Pools,
    Agents,
    Agent,
    Pool,
    NoContent,
    Token,
    Session,
    /// A message, or none (an empty body: the long poll ended without one).
    Message,
    JobRequest,
    QueuedJobs,
    JobRequests,
    Stats,
    TokensExpired,
    TimelineRecords,
    Log,
    Attachment,
    Ok,
    PipelineRun,
    PipelineRuns,
    Build,
}

impl AnswerKind {
    /// What `call` is answered with.
    pub fn of(call: &ApiRequest) -> AnswerKind {
        use AnswerKind as K;
        use ApiRequest as A;
        match call {
            A::ConnectionData => K::ConnectionData,
            A::Options { .. } => K::Locations,
            A::ResourceAreas { .. } => K::NoResourceAreas,
            A::ListPools { .. } | A::QueryPools { .. } => K::Pools,
            A::ListAgents { .. } | A::QueryAgents { .. } => K::Agents,
            A::AddAgent { .. }
            | A::GetAgent { .. }
            | A::GetAgentWith { .. }
            | A::ReplaceAgent { .. }
            | A::UpdateAgent { .. } => K::Agent,
            A::GetPool { .. } | A::AddPool { .. } | A::UpdatePool { .. } => K::Pool,
            A::DeleteAgent { .. }
            | A::DeletePool { .. }
            | A::DeleteSession { .. }
            | A::DeleteMessage { .. } => K::NoContent,
            A::Token(_) => K::Token,
            A::CreateSession { .. } => K::Session,
            A::GetMessage { .. } => K::Message,
            A::UpdateJobRequest { .. } | A::CancelJob { .. } => K::JobRequest,
            A::QueueJobs { .. } => K::QueuedJobs,
            A::ListJobRequests { .. } => K::JobRequests,
            A::AdminStats => K::Stats,
            A::ExpireTokens(_) => K::TokensExpired,
            A::UpdateTimelineRecords { .. } => K::TimelineRecords,
            A::CreateLog { .. } | A::AppendLog { .. } => K::Log,
            A::PutAttachment { .. } => K::Attachment,
            A::AppendFeed { .. } | A::PostEvent { .. } => K::Ok,
            A::RunPipeline { .. } | A::GetPipelineRun { .. } => K::PipelineRun,
            A::ListPipelineRuns { .. } => K::PipelineRuns,
            A::UpdateBuild { .. } => K::Build,
        }
    }
}

/// Read an answer of the expected kind (see [`decode_response`]).
pub fn decode_answer(kind: AnswerKind, resp: &WireResponse) -> ApiResponse {
    if !(200..300).contains(&resp.status) {
        return ApiResponse::Error(decode_error(resp));
    }
    use AnswerKind as K;
    use ApiResponse as R;
    let parsed = match kind {
        K::ConnectionData => parse(resp).map(R::ConnectionData),
        K::Locations => parse(resp).map(R::Locations),
        K::NoResourceAreas => Ok(R::NoResourceAreas),
        K::Pools => parse(resp).map(R::Pools),
        K::Agents => parse(resp).map(R::Agents),
        K::Agent => parse(resp).map(R::Agent),
        K::Pool => parse(resp).map(R::Pool),
        K::NoContent => Ok(R::NoContent),
        K::Token => parse(resp).map(R::Token),
        K::Session => parse(resp).map(R::Session),
        K::Message if resp.body.iter().all(u8::is_ascii_whitespace) => Ok(R::NoMessage),
        K::Message => parse(resp).map(R::Message),
        K::JobRequest => parse(resp).map(|j| R::JobRequest(Box::new(j))),
        K::QueuedJobs => parse(resp).map(R::QueuedJobs),
        K::JobRequests => parse(resp).map(R::JobRequests),
        K::Stats => parse(resp).map(R::Stats),
        K::TokensExpired => parse(resp).map(R::TokensExpired),
        K::TimelineRecords => parse(resp).map(R::TimelineRecords),
        K::Log => parse(resp).map(R::Log),
        K::Attachment => parse(resp).map(R::Attachment),
        K::Ok => Ok(R::Ok),
        K::PipelineRun => parse(resp).map(R::PipelineRun),
        K::PipelineRuns => parse(resp).map(R::PipelineRuns),
        K::Build => parse(resp).map(R::Build),
    };
    parsed.unwrap_or_else(R::Error)
}

fn parse<T: DeserializeOwned>(resp: &WireResponse) -> Result<T, ApiError> {
    serde_json::from_slice(&resp.body).map_err(|e| {
        let detail = e.to_string();
        bad_request(format!(
            "unreadable response (status {}): {}",
            resp.status,
            text::truncate(&detail, MESSAGE_MAX)
        ))
    })
}

/// A non-2xx answer → typed error: WrappedException by `typeKey`, OAuth body by `error`, else
/// by status.
pub fn decode_error(resp: &WireResponse) -> ApiError {
    if let Ok(w) = serde_json::from_slice::<WrappedException>(&resp.body)
        && let Some(kind) = ErrorKind::from_type_key(&w.type_key)
    {
        return ApiError::new(kind, w.message);
    }
    if let Ok(o) = serde_json::from_slice::<OAuthError>(&resp.body) {
        let kind = match o.error.as_str() {
            "invalid_client" => ErrorKind::OAuthInvalidClient,
            _ => ErrorKind::OAuthInvalidGrant,
        };
        return ApiError::new(kind, o.error_description);
    }
    let kind = match resp.status {
        400 => ErrorKind::BadRequest,
        401 => ErrorKind::Unauthorized,
        403 => ErrorKind::AccessDenied,
        404 => ErrorKind::RouteNotFound,
        405 => ErrorKind::MethodNotAllowed,
        408 => ErrorKind::RequestTimeout,
        409 => ErrorKind::SessionConflict,
        413 => ErrorKind::PayloadTooLarge,
        429 => ErrorKind::Throttled,
        414 | 431 => ErrorKind::HeadTooLarge,
        s if s >= 500 => ErrorKind::Unavailable,
        _ => ErrorKind::BadRequest,
    };
    ApiError::new(
        kind,
        format!("HTTP {} without a recognisable error body", resp.status),
    )
}

/// A short, bounded label for the route of `call`, for request counters.
pub fn route_label(call: &ApiRequest) -> &'static str {
    use ApiRequest as A;
    match call {
        A::ConnectionData => "connection_data",
        A::Options { .. } => "options",
        A::ResourceAreas { .. } => "resource_areas",
        A::ListPools { .. } => "list_pools",
        A::ListAgents { .. } => "list_agents",
        A::AddAgent { .. } => "add_agent",
        A::GetAgent { .. } => "get_agent",
        A::ReplaceAgent { .. } => "replace_agent",
        A::DeleteAgent { .. } => "delete_agent",
        A::QueryAgents { .. } => "query_agents",
        A::GetAgentWith { .. } => "get_agent_with",
        A::UpdateAgent { .. } => "update_agent",
        A::GetPool { .. } => "get_pool",
        A::QueryPools { .. } => "query_pools",
        A::AddPool { .. } => "add_pool",
        A::UpdatePool { .. } => "update_pool",
        A::DeletePool { .. } => "delete_pool",
        A::Token(TokenGrant::ClientCredentials { .. }) => "token",
        A::Token(TokenGrant::Refresh { .. }) => "token_refresh",
        A::CreateSession { .. } => "create_session",
        A::DeleteSession { .. } => "delete_session",
        A::GetMessage { .. } => "get_message",
        A::DeleteMessage { .. } => "delete_message",
        A::UpdateJobRequest { .. } => "update_job_request",
        A::QueueJobs { .. } => "queue_jobs",
        A::ListJobRequests { .. } => "list_job_requests",
        A::CancelJob { .. } => "cancel_job",
        A::AdminStats => "admin_stats",
        A::ExpireTokens(_) => "admin_expire_tokens",
        A::UpdateTimelineRecords { .. } => "timeline_records",
        A::AppendFeed { .. } => "feed",
        A::CreateLog { .. } => "create_log",
        A::AppendLog { .. } => "append_log",
        A::PutAttachment { .. } => "attachment",
        A::PostEvent { .. } => "event",
        A::RunPipeline { .. } => "run_pipeline",
        A::GetPipelineRun { .. } => "get_pipeline_run",
        A::ListPipelineRuns { .. } => "list_pipeline_runs",
        A::UpdateBuild { .. } => "update_build",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: base paths normalise to one form whatever the caller writes.
    #[test]
    fn routes_normalise_base_paths() {
        assert_eq!(Routes::new("").base_path(), "");
        assert_eq!(Routes::new("/").base_path(), "");
        assert_eq!(
            Routes::new("DefaultCollection/").base_path(),
            "/DefaultCollection"
        );
        assert_eq!(Routes::from_url("https://h:8080/org/").base_path(), "/org");
        assert_eq!(Routes::from_url("http://h").base_path(), "");
    }

    // Goal: only the token endpoint is open to clients without credentials, however its path
    // is spelt (case, percent-escapes, collection prefix); every other path needs one.
    #[test]
    fn only_the_token_route_is_open_without_credentials() {
        assert!(!needs_credential("/_apis/oauth2/token"));
        assert!(!needs_credential("/org/_APIs/OAuth2/Token/"));
        assert!(!needs_credential("/_apis/%6Fauth2/token"));
        assert!(needs_credential("/_apis/oauth2/token/extra"));
        assert!(needs_credential("/_apis/oauth2"));
        assert!(needs_credential("/_apis/distributedtask/pools/1/agents"));
        assert!(needs_credential("/no/apis/here"));
        assert!(needs_credential(""));
    }

    // Goal: credentials parse by scheme case-insensitively; broken ones are 401s, not panics.
    #[test]
    fn credentials_parse_or_are_unauthorized() {
        assert_eq!(decode_credential(None), Ok(Credential::Anonymous));
        assert_eq!(decode_credential(Some("  ")), Ok(Credential::Anonymous));
        assert_eq!(
            decode_credential(Some("bearer abc")),
            Ok(Credential::Bearer("abc".into()))
        );
        let basic = text::basic_header("u", "p");
        assert_eq!(
            decode_credential(Some(&basic)),
            Ok(Credential::Basic {
                user: "u".into(),
                password: "p".into()
            })
        );
        for bad in ["Bearer", "Basic ???", "Digest x", "Basic"] {
            let err = decode_credential(Some(bad)).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Unauthorized, "{bad}");
        }
    }

    // Goal: route labels are unique per call kind (they key request counters).
    #[test]
    fn route_labels_are_distinct() {
        let calls = [
            ApiRequest::ConnectionData,
            ApiRequest::AdminStats,
            ApiRequest::ExpireTokens(crate::api::TokenExpiry {
                name_prefix: "a-".into(),
                agents: crate::faults::Selection::All,
            }),
            ApiRequest::ListJobRequests { pool_id: 1 },
            ApiRequest::CancelJob {
                pool_id: 1,
                request_id: 1,
            },
            ApiRequest::Token(TokenGrant::Refresh {
                refresh_token: String::new(),
            }),
        ];
        let mut labels: Vec<_> = calls.iter().map(route_label).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), calls.len());
    }
}
