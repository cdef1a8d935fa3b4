//! The protocol's JSON shapes, as the real service and agent exchange them (camelCase, lists as
//! `{count, value}`, enums as camelCase strings, byte arrays as base64 strings, GUIDs in "D"
//! form). Field lists follow `../shared/design/protocol.md`; only what fleetsim reads or writes
//! is typed, and unknown fields are ignored on input as the real client does.
//!
//! These types are the serialised wire format: changing a field name changes the protocol.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// The all-zero GUID the real agent sends as a placeholder (`sessionId`, `lockToken`).
pub const EMPTY_GUID: &str = "00000000-0000-0000-0000-000000000000";

/// A list as the service wraps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListOf<T> {
    pub count: usize,
    pub value: Vec<T>,
}

impl<T> ListOf<T> {
    pub fn new(value: Vec<T>) -> Self {
        ListOf {
            count: value.len(),
            value,
        }
    }
}

/// The error body of every non-2xx answer. The client rebuilds a typed exception from
/// `typeKey`/`typeName`, and the real agent branches on it, so these must be exact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WrappedException {
    #[serde(default)]
    pub inner_exception: Option<Box<WrappedException>>,
    pub message: String,
    pub type_name: String,
    pub type_key: String,
    #[serde(default)]
    pub error_code: i32,
    #[serde(default)]
    pub event_id: i32,
}

/// The OAuth token endpoint's error body (`VssOAuthTokenRequestException` on the client).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OAuthError {
    pub error: String,
    pub error_description: String,
}

/// The OAuth token endpoint's success body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    /// Lifetime in seconds. Read from a JSON number or a JSON string holding one: Microsoft's
    /// .NET client accepts both, and some token services send the string form.
    #[serde(deserialize_with = "seconds_number_or_string")]
    pub expires_in: u64,
    #[serde(default)]
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// A non-negative whole number of seconds, written as a JSON number (`3600`, `3600.0`) or a
/// string holding one (`"3600"`). Anything else (negative, fractional, text, null) is an error.
fn seconds_number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    use serde::de::{Error, Unexpected, Visitor};
    struct Seconds;
    impl Visitor<'_> for Seconds {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a non-negative whole number of seconds, as a number or a string")
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<u64, E> {
            if v >= 0.0 && v.fract() == 0.0 && v <= u64::MAX as f64 {
                Ok(v as u64)
            } else {
                Err(E::invalid_value(Unexpected::Float(v), &self))
            }
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<u64, E> {
            v.trim()
                .parse()
                .map_err(|_| E::invalid_value(Unexpected::Str(v), &self))
        }
    }
    d.deserialize_any(Seconds)
}

/// A field the real service may send as `null`: read as its default. Job messages are written by
/// the service's own serializer, which writes absent strings, lists and maps as `null`.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A string map whose values may be `null` (read as `""`), itself possibly `null`.
fn string_map_nulls_as_empty<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let map = Option::<BTreeMap<String, Option<String>>>::deserialize(d)?.unwrap_or_default();
    Ok(map
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Discovery
// ---------------------------------------------------------------------------------------------

/// One resource location (`OPTIONS _apis/` and `serviceDefinitions`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiResourceLocation {
    pub id: String,
    pub area: String,
    pub resource_name: String,
    pub route_template: String,
    pub resource_version: u32,
    pub min_version: String,
    pub max_version: String,
    pub released_version: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessMapping {
    pub display_name: String,
    pub moniker: String,
    pub access_point: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocationServiceData {
    pub service_owner: String,
    pub default_access_mapping_moniker: String,
    pub last_change_id: i64,
    pub last_change_id64: i64,
    pub access_mappings: Vec<AccessMapping>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    pub id: String,
    pub provider_display_name: String,
    pub is_active: bool,
}

/// `GET _apis/connectionData`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionData {
    pub authenticated_user: Identity,
    pub authorized_user: Identity,
    pub instance_id: String,
    pub deployment_id: String,
    /// `onPremises` or `hosted`; decides the client's URL-rewrite rules.
    pub deployment_type: String,
    pub location_service_data: LocationServiceData,
}

// ---------------------------------------------------------------------------------------------
// Pools and agents
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskAgentPool {
    /// Absent in a create request (the server assigns it).
    #[serde(default)]
    pub id: u32,
    pub name: String,
    #[serde(default)]
    pub is_hosted: bool,
    #[serde(default = "automation")]
    pub pool_type: String,
    #[serde(default)]
    pub size: u32,
}

fn automation() -> String {
    "automation".to_string()
}

/// An agent's RSA public key: big-endian bytes, base64.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskAgentPublicKey {
    pub exponent: String,
    pub modulus: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskAgentAuthorization {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<TaskAgentPublicKey>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AgentStatus {
    Offline,
    Online,
}

/// A job request as the agents list and the job-request routes show it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskAgentJobRequest {
    pub request_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assign_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TaskResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub demands: Vec<String>,
    /// Emulator extension: the request's state (`queued`, `assigned`, `running`, `completed`,
    /// `unmatched`), for the admin listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Emulator extension: how often the job went back to the queue after a lost lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requeue_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_agent: Option<TaskAgentReference>,
    /// `Build` for pipeline jobs (the plan's hub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_type: Option<String>,
    /// The pipeline (build definition) a pipeline job comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<TaskOrchestrationOwner>,
    /// The run (build) a pipeline job belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<TaskOrchestrationOwner>,
}

/// `TaskOrchestrationOwner`: the definition or run behind a job request, `{id, name}`.
pub type TaskOrchestrationOwner = DefinitionReference;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskAgentReference {
    #[serde(default)]
    pub id: u64,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AgentStatus>,
}

/// `TaskAgent`: what `config.sh` posts and the service returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskAgent {
    #[serde(default)]
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_description: Option<String>,
    #[serde(default = "one")]
    pub max_parallelism: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AgentStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_on: Option<String>,
    #[serde(default)]
    pub system_capabilities: BTreeMap<String, String>,
    #[serde(default)]
    pub user_capabilities: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<TaskAgentAuthorization>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_request: Option<TaskAgentJobRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_completed_request: Option<TaskAgentJobRequest>,
}

/// A `PATCH …/agents/{agentId}` body: the fields of a `TaskAgent` an update may change; absent
/// ones stay as they are. Other `TaskAgent` fields a client sends along (status, createdOn, …)
/// are read-only and ignored, as Microsoft's clients send whole objects.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskAgentUpdate {
    /// When present and not 0, must name the agent in the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `false` disables the agent: nothing is dispatched to it until it is enabled again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallelism: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_capabilities: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_capabilities: Option<BTreeMap<String, String>>,
}

/// A pool create (`POST`) or update (`PATCH`) body: the name is what the emulator keeps.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskAgentPoolUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `automation` (the only kind emulated) when present. Microsoft's node client sends the
    /// enum's number (1 automation, 2 deployment), the Python client its name: both read.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "name_or_number"
    )]
    pub pool_type: Option<String>,
}

/// An enum field as a name, or as its number rendered in decimal.
fn name_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NameOrNumber {
        Name(String),
        Number(u64),
    }
    Ok(Option::<NameOrNumber>::deserialize(d)?.map(|v| match v {
        NameOrNumber::Name(name) => name,
        NameOrNumber::Number(n) => n.to_string(),
    }))
}

fn one() -> u32 {
    1
}

/// Like the real agent's `CreateNewAgent`: one job at a time, everything else empty.
impl Default for TaskAgent {
    fn default() -> Self {
        TaskAgent {
            id: 0,
            name: String::new(),
            version: String::new(),
            os_description: None,
            max_parallelism: one(),
            provisioning_state: None,
            enabled: None,
            status: None,
            created_on: None,
            system_capabilities: BTreeMap::new(),
            user_capabilities: BTreeMap::new(),
            authorization: None,
            assigned_request: None,
            last_completed_request: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions and messages
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskAgentSessionKey {
    pub encrypted: bool,
    /// base64 of the AES key, RSA-OAEP-SHA1-wrapped when `encrypted`.
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskAgentSession {
    /// `00000000-…` on create; set by the server.
    pub session_id: String,
    #[serde(default)]
    pub owner_name: String,
    pub agent: TaskAgentReference,
    #[serde(default)]
    pub system_capabilities: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key: Option<TaskAgentSessionKey>,
}

/// `PipelineAgentJobRequest`: start a job.
pub const MESSAGE_JOB_REQUEST: &str = "PipelineAgentJobRequest";
/// `JobCancellation`: cancel a running job.
pub const MESSAGE_JOB_CANCELLATION: &str = "JobCancellation";

/// A message from the long poll. `body` is base64 of AES-256-CBC/PKCS7 over the UTF-8 JSON when
/// `iv` is non-empty, else the plain JSON text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskAgentMessage {
    pub message_id: u64,
    pub message_type: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub iv: String,
    pub body: String,
}

/// `JobCancellation` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobCancelMessage {
    pub job_id: String,
    /// Grace period, "hh:mm:ss".
    pub timeout: String,
}

// ---------------------------------------------------------------------------------------------
// The job message
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanReference {
    pub scope_identifier: String,
    pub plan_type: String,
    pub plan_id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineReference {
    pub id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub change_id: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointAuthorization {
    #[serde(default, deserialize_with = "null_as_default")]
    pub scheme: String,
    #[serde(default, deserialize_with = "string_map_nulls_as_empty")]
    pub parameters: BTreeMap<String, String>,
}

/// The endpoint that carries the job token.
pub const SYSTEM_VSS_CONNECTION: &str = "SystemVssConnection";
/// The parameter of `SystemVssConnection` that holds the job token.
pub const ACCESS_TOKEN_PARAMETER: &str = "AccessToken";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEndpoint {
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub url: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub authorization: EndpointAuthorization,
    #[serde(default, deserialize_with = "string_map_nulls_as_empty")]
    pub data: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobResources {
    #[serde(default, deserialize_with = "null_as_default")]
    pub endpoints: Vec<ServiceEndpoint>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VariableValue {
    #[serde(default, deserialize_with = "null_as_default")]
    pub value: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub is_secret: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub is_read_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskHint {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskReference {
    #[serde(default, deserialize_with = "null_as_default")]
    pub id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: String,
}

/// The task name of fleetsim's synthetic steps; their `inputs` carry the work to simulate
/// (see `job::SyntheticStep`).
pub const SYNTHETIC_TASK_NAME: &str = "FleetsimSynthetic";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStep {
    #[serde(rename = "type", default, deserialize_with = "null_as_default")]
    pub kind: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub reference: TaskReference,
    #[serde(default, deserialize_with = "string_map_nulls_as_empty")]
    pub inputs: BTreeMap<String, String>,
    pub id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub display_name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub condition: String,
}

/// `AgentJobRequestMessage`, the body of a `PipelineAgentJobRequest` message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentJobRequestMessage {
    pub message_type: String,
    pub plan: PlanReference,
    pub timeline: TimelineReference,
    pub job_id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub job_display_name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub job_name: String,
    pub request_id: u64,
    /// The emulator's lock token for this request (the real agent always sends the empty GUID
    /// back; fleetsim's agents do the same).
    #[serde(default, deserialize_with = "null_as_default")]
    pub lock_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub resources: JobResources,
    #[serde(default, deserialize_with = "null_as_default")]
    pub variables: BTreeMap<String, VariableValue>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub mask: Vec<MaskHint>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub steps: Vec<JobStep>,
}

// ---------------------------------------------------------------------------------------------
// Plan hub (worker → server)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TaskResult {
    Succeeded,
    SucceededWithIssues,
    Failed,
    Canceled,
    Skipped,
    Abandoned,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TimelineRecordState {
    Pending,
    InProgress,
    Completed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskLogReference {
    pub id: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineRecord {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TimelineRecordState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TaskResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<TaskLogReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning_count: Option<u32>,
}

/// Live-console batch: at most 100 lines.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineRecordFeedLinesWrapper {
    pub step_id: String,
    pub value: Vec<String>,
    pub count: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_line: Option<u64>,
}

/// `POST …/logs` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskLogCreate {
    pub path: String,
}

/// `POST …/logs` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskLog {
    pub id: u64,
    /// Absent from some servers' answers to a log append (only `id` and `lineCount`).
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub line_count: u64,
    #[serde(default)]
    pub location: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_on: Option<String>,
}

/// `PUT …/attachments/{type}/{name}` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskAttachment {
    // Servers differ in which fields they echo back; the agent reads none of them.
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub record_id: String,
    #[serde(default)]
    pub timeline_id: String,
}

/// The plan event that ends a job (plan version ≥ 8).
pub const EVENT_JOB_COMPLETED: &str = "JobCompleted";

/// `POST …/events` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobEvent {
    pub name: String,
    pub job_id: String,
    #[serde(default)]
    pub request_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TaskResult>,
}

/// `PATCH …/jobrequests/{id}` body: a renewal (`requestId` only) or a finish (with `result`
/// and `finishTime`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRequestUpdate {
    pub request_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TaskResult>,
}

// ---------------------------------------------------------------------------------------------
// Pipelines Runs API and the Build API's cancel (api-version 7.1)
// ---------------------------------------------------------------------------------------------

/// A run's state, as `GET {project}/_apis/pipelines/{id}/runs/{runId}` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RunState {
    InProgress,
    Canceling,
    Completed,
    /// Also what any state this client does not know reads as (last: serde's `other`).
    #[serde(other)]
    Unknown,
}

/// A finished run's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RunResult {
    Succeeded,
    Failed,
    Canceled,
    /// Also what any result this client does not know reads as (last: serde's `other`).
    #[serde(other)]
    Unknown,
}

/// The pipeline a run belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineReference {
    pub id: u32,
    #[serde(default)]
    pub name: String,
    /// The pipeline's folder, `\` at the top.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u32>,
}

/// `Run`: the answer of the Runs API. The run id is also its build id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRun {
    pub id: u64,
    /// The build number, e.g. `20261205.1`.
    #[serde(default)]
    pub name: String,
    pub state: RunState,
    /// Set once the run completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<RunResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub pipeline: PipelineReference,
}

/// `RunPipelineParameters`: the body of `POST …/pipelines/{id}/runs`; every field optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunPipelineParameters {
    /// `{"repositories": {"self": {"refName": "refs/heads/main"}}}` and the like.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<serde_json::Value>,
    /// Queue-time variables, `{name: {value, isSecret}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variables: Option<BTreeMap<String, VariableValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_parameters: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages_to_skip: Option<Vec<String>>,
    /// Parse only: the server creates nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_run: Option<bool>,
}

/// A build's status (Build API).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BuildStatus {
    None,
    InProgress,
    Completed,
    Cancelling,
    Postponed,
    NotStarted,
    /// Any status this client does not know.
    #[serde(other)]
    Unknown,
}

/// A build's result (Build API).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BuildResult {
    None,
    Succeeded,
    PartiallySucceeded,
    Failed,
    Canceled,
    /// Any result this client does not know.
    #[serde(other)]
    Unknown,
}

/// The body of `PATCH {project}/_apis/build/builds/{buildId}`; fleetsim reads `status` only
/// (`cancelling` cancels the build, i.e. the run with that id).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<BuildStatus>,
}

/// A build definition (pipeline) or build as a reference: `{id, name}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DefinitionReference {
    pub id: u64,
    #[serde(default)]
    pub name: String,
}

/// `Build`, as the Build API answers a PATCH (the fields fleetsim fills).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Build {
    pub id: u64,
    #[serde(default)]
    pub build_number: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<BuildStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<BuildResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<DefinitionReference>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_round_trips_in_camel_case() {
        let a = TaskAgent {
            name: "agent-1".into(),
            version: "4.260.0".into(),
            authorization: Some(TaskAgentAuthorization {
                public_key: Some(TaskAgentPublicKey {
                    exponent: "AQAB".into(),
                    modulus: "xx".into(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.contains("\"maxParallelism\":1"), "{json}");
        assert!(
            json.contains("\"publicKey\":{\"exponent\":\"AQAB\""),
            "{json}"
        );
        let back: TaskAgent = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn results_and_lists_use_the_services_shapes() {
        assert_eq!(
            serde_json::to_string(&TaskResult::SucceededWithIssues).unwrap(),
            "\"succeededWithIssues\""
        );
        let l = ListOf::new(vec![1, 2]);
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            r#"{"count":2,"value":[1,2]}"#
        );
    }

    // Goal: a token answer's expires_in is read from a JSON number or a JSON string holding one
    // (Microsoft's .NET client accepts both); anything else is a typed decode error.
    #[test]
    fn token_expires_in_reads_numbers_and_numeric_strings_only() {
        let read = |v: &str| {
            serde_json::from_str::<TokenResponse>(&format!(
                r#"{{"access_token":"t","token_type":"jwt-bearer","expires_in":{v}}}"#
            ))
            .map(|t| t.expires_in)
        };
        assert_eq!(read("3599").unwrap(), 3599);
        assert_eq!(read("3599.0").unwrap(), 3599);
        assert_eq!(read(r#""3599""#).unwrap(), 3599);
        assert_eq!(read(r#"" 60 ""#).unwrap(), 60);
        for bad in ["-1", "1.5", r#""soon""#, r#""""#, "null", "true", "[]"] {
            assert!(read(bad).is_err(), "{bad}");
        }
        let resp = crate::wire::WireResponse {
            status: 200,
            headers: vec![],
            body: br#"{"access_token":"t","token_type":"b","expires_in":"x"}"#.to_vec(),
        };
        let call = crate::api::ApiRequest::Token(crate::api::TokenGrant::Refresh {
            refresh_token: "r".into(),
        });
        let crate::api::ApiResponse::Error(e) = crate::codec::decode_response(&call, &resp) else {
            panic!("a bad expires_in is an error")
        };
        assert_eq!(e.kind, crate::api::ErrorKind::BadRequest);
        assert!(
            e.message.starts_with("unreadable response"),
            "{}",
            e.message
        );
    }
}
