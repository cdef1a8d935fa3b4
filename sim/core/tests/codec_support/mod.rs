//! One call of every route, shared by the codec tests (`codec_roundtrip.rs`) and the fuzz
//! targets (`fuzz/`, which include this file by path): the fuzzers decode answers to each of
//! these calls and start from their encoded requests, so a new route is fuzzed once it is here.

// Each user compiles this module on its own and uses a part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;

use fleetsim_core::api::{AgentInclude, AgentQuery, ApiRequest, PlanScope, PoolQuery, TokenGrant};
use fleetsim_core::codec;
use fleetsim_core::job::{QueueJobsRequest, SyntheticJob, SyntheticStep};
use fleetsim_core::proto::*;

/// The plan every plan-hub call names.
pub fn plan() -> PlanScope {
    PlanScope {
        scope_identifier: "6f1e2a3b-0000-4000-8000-000000000001".into(),
        hub: "Build".into(),
        plan_id: "8c0e2a3b-0000-4000-8000-000000000002".into(),
    }
}

/// One call of every kind, with awkward values where values are free-form.
pub fn every_call() -> Vec<ApiRequest> {
    use ApiRequest as A;
    let agent = TaskAgent {
        name: "agent one".into(),
        version: "4.260.0".into(),
        system_capabilities: BTreeMap::from([("Agent.OS".into(), "Linux".into())]),
        ..Default::default()
    };
    let session = TaskAgentSession {
        session_id: EMPTY_GUID.into(),
        owner_name: "host".into(),
        agent: TaskAgentReference {
            id: 3,
            name: "a".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let job = SyntheticJob {
        steps: vec![SyntheticStep {
            duration_ms: 5,
            log_lines: 2,
            ..Default::default()
        }],
        secrets: 1,
        fail: false,
        demands: vec!["Agent.OS -equals Linux".into()],
    };
    vec![
        A::ConnectionData,
        A::Options { area: None },
        A::Options {
            area: Some("distributedtask".into()),
        },
        A::ResourceAreas { area_id: None },
        A::ResourceAreas {
            area_id: Some("a85b8835-c1a1-4aac-ae97-1c3d0ba72dbd".into()),
        },
        A::ListPools { pool_name: None },
        A::ListPools {
            pool_name: Some("My Pool & co".into()),
        },
        A::ListAgents {
            pool_id: 1,
            agent_name: Some("name with spaces".into()),
        },
        A::ListAgents {
            pool_id: 1,
            agent_name: None,
        },
        A::AddAgent {
            pool_id: 1,
            agent: Box::new(agent.clone()),
        },
        A::GetAgent {
            pool_id: 1,
            agent_id: 77,
        },
        A::ReplaceAgent {
            pool_id: 1,
            agent_id: 77,
            agent: Box::new(agent),
        },
        A::DeleteAgent {
            pool_id: 1,
            agent_id: 77,
        },
        A::QueryAgents {
            pool_id: 1,
            query: AgentQuery {
                agent_name: Some("a b".into()),
                include: AgentInclude {
                    capabilities: true,
                    assigned_request: false,
                    last_completed_request: true,
                    property_filters: Some("p1,p2".into()),
                },
                demands: vec!["Agent.OS -equals Linux".into(), "docker".into()],
            },
        },
        A::GetAgentWith {
            pool_id: 1,
            agent_id: 77,
            include: AgentInclude {
                assigned_request: true,
                ..AgentInclude::default()
            },
        },
        A::UpdateAgent {
            pool_id: 1,
            agent_id: 77,
            update: TaskAgentUpdate {
                enabled: Some(false),
                ..TaskAgentUpdate::default()
            },
        },
        A::GetPool {
            pool_id: 2,
            query: PoolQuery::default(),
        },
        A::QueryPools {
            query: PoolQuery {
                pool_name: Some("x".into()),
                pool_ids: vec![1, 2],
                pool_type: Some("automation".into()),
                action_filter: Some("manage".into()),
                properties: Some("a,b".into()),
            },
        },
        A::AddPool {
            pool: TaskAgentPoolUpdate {
                name: Some("new pool".into()),
                pool_type: None,
            },
        },
        A::UpdatePool {
            pool_id: 2,
            pool: TaskAgentPoolUpdate {
                name: Some("renamed".into()),
                pool_type: None,
            },
        },
        A::DeletePool { pool_id: 2 },
        A::Token(TokenGrant::ClientCredentials {
            client_assertion_type: codec::JWT_BEARER_ASSERTION_TYPE.into(),
            client_assertion: "aGVhZA.Y2xhaW1z.c2ln+/=".into(),
        }),
        A::Token(TokenGrant::Refresh {
            refresh_token: "tok_+/=&".into(),
        }),
        A::CreateSession {
            pool_id: 1,
            session,
        },
        A::DeleteSession {
            pool_id: 1,
            session_id: "0d4c6e0a-1111-4000-8000-000000000003".into(),
        },
        A::GetMessage {
            pool_id: 1,
            session_id: "s-1".into(),
            last_message_id: None,
        },
        A::GetMessage {
            pool_id: 1,
            session_id: "s-1".into(),
            last_message_id: Some(1119),
        },
        A::DeleteMessage {
            pool_id: 1,
            message_id: 1119,
            session_id: "s-1".into(),
        },
        A::UpdateJobRequest {
            pool_id: 1,
            request_id: 9,
            lock_token: EMPTY_GUID.into(),
            update: JobRequestUpdate {
                request_id: 9,
                ..Default::default()
            },
        },
        A::UpdateJobRequest {
            pool_id: 1,
            request_id: 9,
            lock_token: "other".into(),
            update: JobRequestUpdate {
                request_id: 9,
                finish_time: Some("2026-11-25T21:22:00.000Z".into()),
                result: Some(TaskResult::SucceededWithIssues),
            },
        },
        A::QueueJobs {
            pool_id: 1,
            request: QueueJobsRequest {
                count: 2,
                template: Some(job.clone()),
                jobs: vec![job],
            },
        },
        A::ListJobRequests { pool_id: 1 },
        A::CancelJob {
            pool_id: 1,
            request_id: 9,
        },
        A::AdminStats,
        A::ExpireTokens(fleetsim_core::api::TokenExpiry {
            name_prefix: "fleet agent-".into(),
            agents: fleetsim_core::faults::Selection::Fraction {
                fraction: 0.25,
                salt: u64::MAX,
            },
        }),
        A::ExpireTokens(fleetsim_core::api::TokenExpiry {
            name_prefix: String::new(),
            agents: fleetsim_core::faults::Selection::Agents(vec![0, 7]),
        }),
        A::UpdateTimelineRecords {
            plan: plan(),
            timeline_id: "t1".into(),
            records: ListOf::new(vec![TimelineRecord {
                id: "r1".into(),
                state: Some(TimelineRecordState::InProgress),
                ..Default::default()
            }]),
        },
        A::AppendFeed {
            plan: plan(),
            timeline_id: "t1".into(),
            record_id: "r1".into(),
            feed: TimelineRecordFeedLinesWrapper {
                step_id: "r1".into(),
                value: vec!["line ünïcødé".into()],
                count: 1,
                start_line: Some(3),
            },
        },
        A::CreateLog {
            plan: plan(),
            log: TaskLogCreate {
                path: "logs\\r1".into(),
            },
        },
        A::AppendLog {
            plan: plan(),
            log_id: 2,
            content: vec![0, 159, 146, 150, b'\n'],
        },
        A::PutAttachment {
            plan: plan(),
            timeline_id: "t1".into(),
            record_id: "r1".into(),
            kind: "DistributedTask.Core.Summary".into(),
            name: "summary file.md".into(),
            content: b"# hi".to_vec(),
        },
        A::PostEvent {
            plan: plan(),
            event: JobEvent {
                name: EVENT_JOB_COMPLETED.into(),
                job_id: "j".into(),
                request_id: 9,
                result: Some(TaskResult::Failed),
            },
        },
        A::RunPipeline {
            project: "My Project".into(),
            pipeline_id: 7,
            params: RunPipelineParameters {
                resources: Some(
                    serde_json::json!({"repositories": {"self": {"refName": "refs/heads/main"}}}),
                ),
                variables: Some(BTreeMap::from([(
                    "key".into(),
                    VariableValue {
                        value: "v/1".into(),
                        is_secret: true,
                        is_read_only: false,
                    },
                )])),
                template_parameters: Some(BTreeMap::from([("p".into(), "x".into())])),
                stages_to_skip: Some(vec!["Deploy".into()]),
                preview_run: Some(false),
            },
        },
        A::GetPipelineRun {
            project: "My Project".into(),
            pipeline_id: 7,
            run_id: 12,
        },
        A::ListPipelineRuns {
            // The run route's path, so the method matrix knows GET and POST both serve it.
            project: "My Project".into(),
            pipeline_id: 7,
        },
        A::UpdateBuild {
            project: "p".into(),
            build_id: 12,
            update: BuildUpdate {
                status: Some(BuildStatus::Cancelling),
            },
        },
    ]
}
