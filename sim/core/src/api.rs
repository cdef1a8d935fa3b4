//! Typed requests and responses: what the agent state machine emits, what the server state
//! machine consumes, and what the virtual-time driver passes between them without ever building
//! HTTP. The `codec` module is the one translation between these and `wire` messages.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::job::{QueueJobsRequest, QueueJobsResponse};
use crate::proto::*;

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// No `Authorization` header. The real agent's first listener call goes out like this and
    /// expects a 401 Bearer challenge.
    Anonymous,
    /// HTTP Basic: any user name, the PAT as the password.
    Basic { user: String, password: String },
    /// An OAuth bearer token (listener token or job token).
    Bearer(String),
}

/// The plan-hub prefix `{scopeIdentifier}/_apis/distributedtask/hubs/{hubName}/plans/{planId}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanScope {
    pub scope_identifier: String,
    pub hub: String,
    pub plan_id: String,
}

/// The OAuth token endpoint's grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenGrant {
    /// `grant_type=client_credentials` with an RS256 JWT client assertion.
    ClientCredentials {
        client_assertion_type: String,
        client_assertion: String,
    },
    /// Extension: `grant_type=refresh_token` presenting the current job token to rotate it.
    Refresh { refresh_token: String },
}

/// One protocol call, routed and decoded.
#[derive(Clone, Debug, PartialEq)]
pub enum ApiRequest {
    ConnectionData,
    /// `OPTIONS /_apis/` (`area: None`) or `OPTIONS /_apis/{area}`.
    Options {
        area: Option<String>,
    },
    /// The `Location` area's `ResourceAreas` lookup; on-premises answers an empty list.
    ResourceAreas {
        area_id: Option<String>,
    },
    ListPools {
        pool_name: Option<String>,
    },
    ListAgents {
        pool_id: u32,
        agent_name: Option<String>,
    },
    AddAgent {
        pool_id: u32,
        /// Boxed: a `TaskAgent` is ~1.1 KB and registration is rare, while every request of
        /// every kind is moved through the drivers at this enum's size.
        agent: Box<TaskAgent>,
    },
    GetAgent {
        pool_id: u32,
        agent_id: u64,
    },
    ReplaceAgent {
        pool_id: u32,
        agent_id: u64,
        agent: Box<TaskAgent>,
    },
    DeleteAgent {
        pool_id: u32,
        agent_id: u64,
    },
    /// `GET …/agents` with any of the query options Microsoft's clients send beyond
    /// `agentName` (a plain lookup by name stays `ListAgents`).
    QueryAgents {
        pool_id: u32,
        query: AgentQuery,
    },
    /// `GET …/agents/{agentId}` with `include*` options (without any it stays `GetAgent`).
    GetAgentWith {
        pool_id: u32,
        agent_id: u64,
        include: AgentInclude,
    },
    /// `PATCH …/agents/{agentId}`: a partial agent (how admins disable one).
    UpdateAgent {
        pool_id: u32,
        agent_id: u64,
        update: TaskAgentUpdate,
    },
    /// `GET _apis/distributedtask/pools/{poolId}`.
    GetPool {
        pool_id: u32,
        query: PoolQuery,
    },
    /// `GET _apis/distributedtask/pools` with options beyond `poolName`.
    QueryPools {
        query: PoolQuery,
    },
    /// `POST _apis/distributedtask/pools`.
    AddPool {
        pool: TaskAgentPoolUpdate,
    },
    /// `PATCH _apis/distributedtask/pools/{poolId}`.
    UpdatePool {
        pool_id: u32,
        pool: TaskAgentPoolUpdate,
    },
    /// `DELETE _apis/distributedtask/pools/{poolId}`.
    DeletePool {
        pool_id: u32,
    },
    Token(TokenGrant),
    CreateSession {
        pool_id: u32,
        session: TaskAgentSession,
    },
    DeleteSession {
        pool_id: u32,
        session_id: String,
    },
    GetMessage {
        pool_id: u32,
        session_id: String,
        last_message_id: Option<u64>,
    },
    DeleteMessage {
        pool_id: u32,
        message_id: u64,
        session_id: String,
    },
    /// Lock renewal (no `result`) or finish (`result` + `finishTime`).
    UpdateJobRequest {
        pool_id: u32,
        request_id: u64,
        lock_token: String,
        update: JobRequestUpdate,
    },
    /// Emulator admin: queue synthetic jobs.
    QueueJobs {
        pool_id: u32,
        request: QueueJobsRequest,
    },
    /// Emulator admin: list job requests with their state.
    ListJobRequests {
        pool_id: u32,
    },
    /// Emulator admin (extension): cancel a job request. A queued job finishes as canceled at
    /// once; an assigned one gets a `JobCancellation` message on its agent's session.
    CancelJob {
        pool_id: u32,
        request_id: u64,
    },
    /// Emulator admin: counters (leaked secrets, requeues, …).
    AdminStats,
    /// Emulator admin (extension): a token-expiry storm — the listener tokens of the selected
    /// agents expire now (`POST …/_apis/fleetsim/faults/tokenExpiry`).
    ExpireTokens(TokenExpiry),
    UpdateTimelineRecords {
        plan: PlanScope,
        timeline_id: String,
        records: ListOf<TimelineRecord>,
    },
    AppendFeed {
        plan: PlanScope,
        timeline_id: String,
        record_id: String,
        feed: TimelineRecordFeedLinesWrapper,
    },
    CreateLog {
        plan: PlanScope,
        log: TaskLogCreate,
    },
    AppendLog {
        plan: PlanScope,
        log_id: u64,
        content: Vec<u8>,
    },
    PutAttachment {
        plan: PlanScope,
        timeline_id: String,
        record_id: String,
        kind: String,
        name: String,
        content: Vec<u8>,
    },
    PostEvent {
        plan: PlanScope,
        event: JobEvent,
    },
    /// `POST {project}/_apis/pipelines/{pipelineId}/runs`: queue a run of a pipeline.
    RunPipeline {
        project: String,
        pipeline_id: u32,
        params: RunPipelineParameters,
    },
    /// `GET {project}/_apis/pipelines/{pipelineId}/runs/{runId}`.
    GetPipelineRun {
        project: String,
        pipeline_id: u32,
        run_id: u64,
    },
    /// `GET {project}/_apis/pipelines/{pipelineId}/runs`: the latest runs first.
    ListPipelineRuns {
        project: String,
        pipeline_id: u32,
    },
    /// `PATCH {project}/_apis/build/builds/{buildId}`: `{"status":"cancelling"}` cancels the
    /// run with that id.
    UpdateBuild {
        project: String,
        build_id: u64,
        update: BuildUpdate,
    },
}

/// Where one call goes, as the agent decides it. The codec's [`crate::codec::resolve`] turns an
/// endpoint, a request and the target's collection URL into an origin and an HTTP request; the
/// drivers never build URLs themselves.
///
/// The `*OnTarget` variants are the real agent's rule for on-premises servers: a URL the server
/// names keeps its path and query, but its `scheme://host:port` is replaced by the one the agent
/// was configured with (the server may know itself by a name the agent cannot reach).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Endpoint {
    /// Under the target's collection URL (the URL the fleet was pointed at): registration, the
    /// listener's calls and lock renewals.
    #[default]
    Collection,
    /// Under another collection URL the server named (a job's `SystemVssConnection.url`): the
    /// route goes below its path.
    Base(Arc<str>),
    /// `Base`'s path and query on the target's `scheme://host:port`.
    BaseOnTarget(Arc<str>),
    /// Exactly this URL, whatever the route (the registration's `authorizationUrl`).
    Exact(Arc<str>),
    /// `Exact`'s path and query on the target's `scheme://host:port`.
    ExactOnTarget(Arc<str>),
}

/// What an agent listing or lookup shows beyond the agent itself (Microsoft's `include*`
/// query options; each is off unless asked, as on the real service).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentInclude {
    /// `systemCapabilities` and `userCapabilities`.
    pub capabilities: bool,
    /// The job request the agent holds, when it holds one.
    pub assigned_request: bool,
    /// The last job request the agent finished, when there is one.
    pub last_completed_request: bool,
    /// `propertyFilters` as sent (comma-separated). The emulator keeps no custom properties,
    /// so no property is ever shown; the option is accepted, not refused.
    pub property_filters: Option<String>,
}

/// `GET …/agents` options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentQuery {
    pub agent_name: Option<String>,
    pub include: AgentInclude,
    /// Only agents whose capabilities meet every demand (`name` or `name -equals value`).
    pub demands: Vec<String>,
}

/// `GET …/pools` and `GET …/pools/{id}` options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolQuery {
    pub pool_name: Option<String>,
    /// `poolIds` (the clients' `getAgentPoolsByIds`).
    pub pool_ids: Vec<u32>,
    /// `automation` or `deployment`; every emulated pool is an automation pool.
    pub pool_type: Option<String>,
    /// `none`, `use` or `manage`: only pools the caller may use / manage.
    pub action_filter: Option<String>,
    /// `properties` as sent; the emulator keeps no pool properties.
    pub properties: Option<String>,
}

/// A request with its caller.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub credential: Credential,
    pub call: ApiRequest,
}

/// Body of the token-expiry admin route: which of the agents named `{namePrefix}{index}` are
/// hit (the fleet's fault schedule, `faults::Selection`). Bounded by the emulator: the prefix
/// by [`TOKEN_EXPIRY_PREFIX_MAX`] bytes, an index list by [`TOKEN_EXPIRY_AGENTS_MAX`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenExpiry {
    pub name_prefix: String,
    pub agents: crate::faults::Selection,
}

/// Longest `TokenExpiry::name_prefix` the emulator accepts (agent names are capped below it).
pub const TOKEN_EXPIRY_PREFIX_MAX: usize = 256;
/// Most agent indices one `TokenExpiry` may list (the scenario's fleet limit).
pub const TOKEN_EXPIRY_AGENTS_MAX: usize = 1_000_000;

/// Answer of the token-expiry admin route.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokensExpired {
    /// Listener tokens that expired.
    pub expired: u64,
}

/// The emulator's counters, readable through the admin API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmulatorStats {
    pub agents: u64,
    pub agents_online: u64,
    pub sessions: u64,
    pub parked_polls: u64,
    pub jobs_queued: u64,
    pub jobs_unmatched: u64,
    pub jobs_assigned: u64,
    /// Jobs finished with any result (canceled ones included).
    pub jobs_completed: u64,
    /// Of `jobs_completed`, those finished as canceled (admin cancel, or the agent's result).
    #[serde(default)]
    pub jobs_canceled: u64,
    pub jobs_requeued: u64,
    pub leases_active: u64,
    /// Secret values (or their base64 form) found in log lines and feed batches.
    pub leaked_secrets: u64,
    pub tokens_issued: u64,
    pub tokens_rotated: u64,
}

impl EmulatorStats {
    /// What happened between reading `start` and reading `self` from the same emulator: each
    /// counter's change (a counter that went down, a restarted emulator, counts from 0), and
    /// each gauge (agents, sessions, polls, queue, assigned jobs, leases) as `self` holds it,
    /// since a state has no change to count.
    pub fn since(&self, start: &EmulatorStats) -> EmulatorStats {
        let change = |end: u64, start: u64| if end >= start { end - start } else { end };
        EmulatorStats {
            jobs_completed: change(self.jobs_completed, start.jobs_completed),
            jobs_canceled: change(self.jobs_canceled, start.jobs_canceled),
            jobs_requeued: change(self.jobs_requeued, start.jobs_requeued),
            leaked_secrets: change(self.leaked_secrets, start.leaked_secrets),
            tokens_issued: change(self.tokens_issued, start.tokens_issued),
            tokens_rotated: change(self.tokens_rotated, start.tokens_rotated),
            ..self.clone()
        }
    }
}

/// One protocol answer. `Agent` is boxed: it is the one large variant, and every poll answer
/// would otherwise pay for its size when moved.
#[derive(Clone, Debug, PartialEq)]
pub enum ApiResponse {
    ConnectionData(ConnectionData),
    Locations(ListOf<ApiResourceLocation>),
    /// `{"count":0,"value":null}`: on-premises, use the base URL for every area.
    NoResourceAreas,
    Pools(ListOf<TaskAgentPool>),
    Pool(TaskAgentPool),
    Agents(ListOf<TaskAgent>),
    Agent(Box<TaskAgent>),
    /// 204, no body.
    NoContent,
    Token(TokenResponse),
    Session(TaskAgentSession),
    Message(TaskAgentMessage),
    /// 202 with an empty body: the long poll ended with nothing to deliver.
    NoMessage,
    /// Boxed (~420 bytes, and only lock renewals and admin calls get it): the enum is moved
    /// through the drivers at its largest variant's size.
    JobRequest(Box<TaskAgentJobRequest>),
    JobRequests(ListOf<TaskAgentJobRequest>),
    QueuedJobs(QueueJobsResponse),
    Stats(EmulatorStats),
    TokensExpired(TokensExpired),
    TimelineRecords(ListOf<TimelineRecord>),
    Log(TaskLog),
    Attachment(TaskAttachment),
    /// 200 with no meaningful body (feed, events, log append).
    Ok,
    PipelineRun(PipelineRun),
    PipelineRuns(ListOf<PipelineRun>),
    Build(Build),
    Error(ApiError),
}

/// A typed failure, rendered as a WrappedException (or an OAuth error body at the token
/// endpoint).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub kind: ErrorKind,
    /// A message a person can act on. Never contains a secret value.
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
        }
    }
}

/// Every error the emulator sends, with the type the real client rebuilds from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// 401 + `WWW-Authenticate: Bearer`: missing, unknown, expired or revoked credential.
    Unauthorized,
    /// 403: the credential is valid but lacks the scope or touches another plan.
    AccessDenied,
    /// 400 at the token endpoint: `{error, error_description}` (e.g. `invalid_client`).
    OAuthInvalidClient,
    /// 400 at the token endpoint: unsupported or malformed grant.
    OAuthInvalidGrant,
    PoolNotFound,
    AgentNotFound,
    AgentExists,
    SessionConflict,
    SessionExpired,
    JobNotFound,
    JobTokenExpired,
    AccessTokenExpired,
    PlanNotFound,
    PlanSecurity,
    /// 404: the `{project}` of a Pipelines or Build route does not exist.
    ProjectNotFound,
    /// 404: no pipeline with that id in the project.
    PipelineNotFound,
    /// 404: no run (build) with that id in the pipeline or project.
    BuildNotFound,
    /// 404: no such route.
    RouteNotFound,
    /// 405: route exists, method does not.
    MethodNotAllowed,
    /// 400: malformed JSON, wrong types, bad query values.
    BadRequest,
    /// 413: body over the configured limit.
    PayloadTooLarge,
    /// 429: over a rate or queue limit.
    Throttled,
    /// 503: shed under overload.
    Unavailable,
    /// 408: the request head or body did not arrive within the front's deadline (the
    /// connection is closed after this answer).
    RequestTimeout,
    /// 431: the request head (request line and headers) is over the front's size or count
    /// limit.
    HeadTooLarge,
}

impl ErrorKind {
    /// HTTP status code.
    pub fn status(self) -> u16 {
        use ErrorKind::*;
        match self {
            Unauthorized | JobTokenExpired | AccessTokenExpired => 401,
            AccessDenied | PlanSecurity => 403,
            OAuthInvalidClient | OAuthInvalidGrant | BadRequest => 400,
            PoolNotFound | AgentNotFound | SessionExpired | JobNotFound | PlanNotFound
            | ProjectNotFound | PipelineNotFound | BuildNotFound | RouteNotFound => 404,
            MethodNotAllowed => 405,
            AgentExists | SessionConflict => 409,
            PayloadTooLarge => 413,
            Throttled => 429,
            Unavailable => 503,
            RequestTimeout => 408,
            HeadTooLarge => 431,
        }
    }

    /// The .NET exception type name the client maps `typeKey` to.
    pub fn type_name(self) -> &'static str {
        use ErrorKind::*;
        match self {
            Unauthorized => "Microsoft.VisualStudio.Services.Common.VssUnauthorizedException",
            AccessDenied => "Microsoft.VisualStudio.Services.Security.AccessCheckException",
            OAuthInvalidClient | OAuthInvalidGrant => {
                "Microsoft.VisualStudio.Services.OAuth.VssOAuthTokenRequestException"
            }
            PoolNotFound => {
                "Microsoft.TeamFoundation.DistributedTask.WebApi.TaskAgentPoolNotFoundException"
            }
            AgentNotFound => {
                "Microsoft.TeamFoundation.DistributedTask.WebApi.TaskAgentNotFoundException"
            }
            AgentExists => {
                "Microsoft.TeamFoundation.DistributedTask.WebApi.TaskAgentExistsException"
            }
            SessionConflict => {
                "Microsoft.TeamFoundation.DistributedTask.WebApi.TaskAgentSessionConflictException"
            }
            SessionExpired => {
                "Microsoft.TeamFoundation.DistributedTask.WebApi.TaskAgentSessionExpiredException"
            }
            JobNotFound => {
                "Microsoft.TeamFoundation.DistributedTask.WebApi.TaskAgentJobNotFoundException"
            }
            JobTokenExpired => {
                "Microsoft.TeamFoundation.DistributedTask.WebApi.TaskAgentJobTokenExpiredException"
            }
            AccessTokenExpired => {
                "Microsoft.TeamFoundation.DistributedTask.WebApi.TaskAgentAccessTokenExpiredException"
            }
            PlanNotFound => {
                "Microsoft.TeamFoundation.DistributedTask.WebApi.TaskOrchestrationPlanNotFoundException"
            }
            PlanSecurity => {
                "Microsoft.TeamFoundation.DistributedTask.WebApi.TaskOrchestrationPlanSecurityException"
            }
            ProjectNotFound => {
                "Microsoft.TeamFoundation.Core.WebApi.ProjectDoesNotExistWithNameException"
            }
            PipelineNotFound => "Microsoft.Azure.Pipelines.WebApi.PipelineNotFoundException",
            BuildNotFound => "Microsoft.TeamFoundation.Build.WebApi.BuildNotFoundException",
            RouteNotFound => "Microsoft.VisualStudio.Services.WebApi.VssResourceNotFoundException",
            MethodNotAllowed => {
                "Microsoft.VisualStudio.Services.WebApi.VssMethodNotAllowedException"
            }
            BadRequest => "Microsoft.VisualStudio.Services.Common.VssServiceException",
            PayloadTooLarge => {
                "Microsoft.VisualStudio.Services.WebApi.VssRequestContentTooLargeException"
            }
            Throttled => "Microsoft.VisualStudio.Services.WebApi.RequestBlockedException",
            Unavailable => "Microsoft.VisualStudio.Services.WebApi.VssServiceUnavailableException",
            // Azure DevOps answers these from its web front without a WrappedException; the
            // emulator names them in the same family so every answer it sends is typed.
            RequestTimeout => "Microsoft.VisualStudio.Services.WebApi.VssRequestTimeoutException",
            HeadTooLarge => {
                "Microsoft.VisualStudio.Services.WebApi.VssRequestHeadersTooLargeException"
            }
        }
    }

    /// `typeKey`: the type name's last segment.
    pub fn type_key(self) -> &'static str {
        let name = self.type_name();
        name.rsplit('.').next().unwrap_or(name)
    }

    /// A short, bounded label for metrics (never derived from a message).
    pub fn label(self) -> &'static str {
        use ErrorKind::*;
        match self {
            Unauthorized => "unauthorized",
            AccessDenied => "access_denied",
            OAuthInvalidClient => "oauth_invalid_client",
            OAuthInvalidGrant => "oauth_invalid_grant",
            PoolNotFound => "pool_not_found",
            AgentNotFound => "agent_not_found",
            AgentExists => "agent_exists",
            SessionConflict => "session_conflict",
            SessionExpired => "session_expired",
            JobNotFound => "job_not_found",
            JobTokenExpired => "job_token_expired",
            AccessTokenExpired => "access_token_expired",
            PlanNotFound => "plan_not_found",
            PlanSecurity => "plan_security",
            ProjectNotFound => "project_not_found",
            PipelineNotFound => "pipeline_not_found",
            BuildNotFound => "build_not_found",
            RouteNotFound => "route_not_found",
            MethodNotAllowed => "method_not_allowed",
            BadRequest => "bad_request",
            PayloadTooLarge => "payload_too_large",
            Throttled => "throttled",
            Unavailable => "unavailable",
            RequestTimeout => "request_timeout",
            HeadTooLarge => "head_too_large",
        }
    }

    /// Inverse of `type_key`, for clients decoding a WrappedException.
    pub fn from_type_key(key: &str) -> Option<ErrorKind> {
        ALL_ERROR_KINDS
            .iter()
            .copied()
            .find(|k| k.type_key() == key)
    }
}

/// Every `ErrorKind`, for tables and tests.
pub const ALL_ERROR_KINDS: &[ErrorKind] = &[
    ErrorKind::Unauthorized,
    ErrorKind::AccessDenied,
    ErrorKind::OAuthInvalidClient,
    ErrorKind::OAuthInvalidGrant,
    ErrorKind::PoolNotFound,
    ErrorKind::AgentNotFound,
    ErrorKind::AgentExists,
    ErrorKind::SessionConflict,
    ErrorKind::SessionExpired,
    ErrorKind::JobNotFound,
    ErrorKind::JobTokenExpired,
    ErrorKind::AccessTokenExpired,
    ErrorKind::PlanNotFound,
    ErrorKind::PlanSecurity,
    ErrorKind::ProjectNotFound,
    ErrorKind::PipelineNotFound,
    ErrorKind::BuildNotFound,
    ErrorKind::RouteNotFound,
    ErrorKind::MethodNotAllowed,
    ErrorKind::BadRequest,
    ErrorKind::PayloadTooLarge,
    ErrorKind::Throttled,
    ErrorKind::Unavailable,
    ErrorKind::RequestTimeout,
    ErrorKind::HeadTooLarge,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_keys_round_trip_except_shared_oauth_type() {
        for &k in ALL_ERROR_KINDS {
            let back = ErrorKind::from_type_key(k.type_key()).unwrap();
            if k != ErrorKind::OAuthInvalidGrant {
                assert_eq!(back, k);
            }
        }
        assert_eq!(
            ErrorKind::SessionConflict.type_key(),
            "TaskAgentSessionConflictException"
        );
        assert_eq!(ErrorKind::SessionConflict.status(), 409);
    }
}
