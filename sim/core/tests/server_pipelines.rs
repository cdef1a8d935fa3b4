//! The Pipelines Runs API on the emulator: a run queues its jobs as real-shaped
//! `PipelineAgentJobRequest` messages, its state and result follow its jobs, a preview creates
//! nothing, unknown projects/pipelines/runs are typed 404s, the Build API's PATCH cancels a
//! run, the pool's job-request list carries the server's times in order, and every bound holds.

mod server_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fleetsim_core::api::{ApiRequest, ApiResponse, Credential, ErrorKind};
use fleetsim_core::crypto;
use fleetsim_core::proto::{
    BuildStatus, BuildUpdate, EVENT_JOB_COMPLETED, JobEvent, MESSAGE_JOB_CANCELLATION,
    MESSAGE_JOB_REQUEST, PipelineRun, RunPipelineParameters, RunResult, RunState,
    SYSTEM_VSS_CONNECTION, TaskAgentJobRequest, TaskAgentMessage, TaskResult, VariableValue,
};
use fleetsim_core::server::{
    ConfigError, PatConfig, PipelineConfig, SCOPE_AGENTPOOLS_READ, SCOPE_BUILD_READ, ServerConfig,
};
use serde_json::Value;
use server_support::*;

const PROJECT: &str = "Demo";
const PIPELINE: u32 = 7;
const READER_PAT: &str = "build-reader";
const POOL_READER_PAT: &str = "pool-reader";

fn pipeline(jobs: u32) -> PipelineConfig {
    PipelineConfig {
        id: PIPELINE,
        name: "ci".into(),
        project: PROJECT.into(),
        pool: "Default".into(),
        jobs,
        steps: vec![
            "Checkout".into(),
            "CmdLine".into(),
            "PublishTestResults".into(),
        ],
        demands: Vec::new(),
        folder: None,
    }
}

/// The test config with one pipeline of `jobs` jobs and two narrow PATs.
fn pipelines_config(jobs: u32) -> ServerConfig {
    let mut c = config();
    c.pipelines = vec![pipeline(jobs)];
    for (token, scope) in [
        (READER_PAT, SCOPE_BUILD_READ),
        (POOL_READER_PAT, SCOPE_AGENTPOOLS_READ),
    ] {
        c.pats.push(PatConfig {
            token: token.into(),
            scopes: vec![scope.into()],
            expires_at_unix_s: None,
        });
    }
    c
}

fn basic(token: &str) -> Credential {
    Credential::Basic {
        user: "PAT".into(),
        password: token.into(),
    }
}

fn run_call(params: RunPipelineParameters) -> ApiRequest {
    ApiRequest::RunPipeline {
        project: PROJECT.into(),
        pipeline_id: PIPELINE,
        params,
    }
}

fn get_run_call(run_id: u64) -> ApiRequest {
    ApiRequest::GetPipelineRun {
        project: PROJECT.into(),
        pipeline_id: PIPELINE,
        run_id,
    }
}

fn start_run(h: &mut Harness, params: RunPipelineParameters) -> PipelineRun {
    match h.call(pat(), run_call(params)) {
        ApiResponse::PipelineRun(run) => run,
        other => panic!("run: {other:?}"),
    }
}

fn get_run(h: &mut Harness, run_id: u64) -> PipelineRun {
    match h.call(pat(), get_run_call(run_id)) {
        ApiResponse::PipelineRun(run) => run,
        other => panic!("get run: {other:?}"),
    }
}

fn job_requests(h: &mut Harness) -> Vec<TaskAgentJobRequest> {
    match h.call(pat(), ApiRequest::ListJobRequests { pool_id: 1 }) {
        ApiResponse::JobRequests(list) => list.value,
        other => panic!("job requests: {other:?}"),
    }
}

fn cancel_build(build_id: u64) -> ApiRequest {
    ApiRequest::UpdateBuild {
        project: PROJECT.into(),
        build_id,
        update: BuildUpdate {
            status: Some(BuildStatus::Cancelling),
        },
    }
}

/// The decrypted job message as raw JSON, to check fields the typed message does not carry.
fn open_raw(agent: &TestAgent, message: &TaskAgentMessage) -> Value {
    let key = agent.session_key.expect("real crypto session");
    let iv: [u8; 16] = STANDARD.decode(&message.iv).unwrap().try_into().unwrap();
    let body = STANDARD.decode(&message.body).unwrap();
    let plain = crypto::aes256_cbc_decrypt(&key, &iv, &body).expect("AES-CBC decrypt");
    serde_json::from_slice(&plain).expect("job message JSON")
}

/// The agent reports its job finished with `result` (plan version ≥ 8: the JobCompleted event).
fn complete(h: &mut Harness, agent: &TestAgent, message: &TaskAgentMessage, result: TaskResult) {
    let job = open_job(agent, message);
    let event = ApiRequest::PostEvent {
        plan: plan_scope(&job),
        event: JobEvent {
            name: EVENT_JOB_COMPLETED.into(),
            job_id: job.job_id.clone(),
            request_id: job.request_id,
            result: Some(result),
        },
    };
    assert_eq!(h.call(bearer(&job_token(&job)), event), ApiResponse::Ok);
}

fn is_guid(s: &str) -> bool {
    let groups: Vec<_> = s.split('-').map(str::len).collect();
    groups == [8, 4, 4, 4, 12] && s.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}

// Goal: a run queues `jobs` job requests in the pipeline's pool, and each reaches an agent as
// the message the real service sends: real task references, one GUID record id per step, the
// run's variables with the secret one flagged and masked, the job token's endpoint, the plan's
// definition/owner and the self repository at the requested branch.
#[test]
fn run_queues_real_shaped_job_messages() {
    let mut h = Harness::new(pipelines_config(3));
    let agents: Vec<_> = (0..3)
        .map(|i| online_agent(&mut h, &format!("a{i}"), &[]))
        .collect();
    let variables = BTreeMap::from([
        (
            "greeting".to_string(),
            VariableValue {
                value: "hello".into(),
                ..VariableValue::default()
            },
        ),
        (
            "deployKey".to_string(),
            VariableValue {
                value: "s3cr3t-value".into(),
                is_secret: true,
                is_read_only: false,
            },
        ),
    ]);
    let resources = serde_json::json!({"repositories": {"self": {"refName": "refs/heads/dev"}}});
    let run = start_run(
        &mut h,
        RunPipelineParameters {
            resources: Some(resources),
            variables: Some(variables),
            ..RunPipelineParameters::default()
        },
    );
    assert_eq!(run.id, 1);
    assert_eq!(run.state, RunState::InProgress);
    assert_eq!(run.result, None);
    assert_eq!((run.pipeline.id, run.pipeline.name.as_str()), (7, "ci"));
    assert_eq!(run.pipeline.folder.as_deref(), Some("\\"));
    let day = run.created_date.as_deref().unwrap()[..10].replace('-', "");
    assert_eq!(run.name, format!("{day}.1"));
    assert_eq!(
        run.url.as_deref(),
        Some("http://emulator.test/org/Demo/_apis/pipelines/7/runs/1")
    );

    let listed = job_requests(&mut h);
    assert_eq!(listed.len(), 3);
    for jr in &listed {
        assert_eq!(jr.plan_type.as_deref(), Some("Build"));
        assert_eq!(jr.definition.as_ref().map(|d| d.id), Some(7));
        assert_eq!(
            jr.owner.as_ref().map(|o| (o.id, o.name.clone())),
            Some((1, run.name.clone()))
        );
    }

    let mut record_ids = BTreeSet::new();
    let mut job_ids = BTreeSet::new();
    for agent in &agents {
        let message = take_message(&mut h, agent);
        assert_eq!(message.message_type, MESSAGE_JOB_REQUEST);
        let job = open_job(agent, &message);
        job_ids.insert(job.job_id.clone());
        assert!(job.job_name.starts_with("Job"), "{}", job.job_name);
        let names: Vec<_> = job
            .steps
            .iter()
            .map(|s| s.reference.name.as_str())
            .collect();
        assert_eq!(names, ["Checkout", "CmdLine", "PublishTestResults"]);
        assert_eq!(
            job.steps[0].reference.id,
            "6d15af64-176c-496d-b583-fd2ae21d4df4"
        );
        assert_eq!(
            job.steps[1].reference.id,
            "d0c4ac01-adbe-42b5-845a-b063e9213a8c"
        );
        assert_eq!(job.steps[0].inputs["repository"], "self");
        for step in &job.steps {
            assert_eq!(step.kind, "task");
            assert!(is_guid(&step.id), "{}", step.id);
            assert!(record_ids.insert(step.id.clone()), "step ids repeat");
        }
        assert_eq!(job.variables["greeting"].value, "hello");
        assert!(!job.variables["greeting"].is_secret);
        assert!(job.variables["deployKey"].is_secret);
        assert!(job.variables["system.accessToken"].is_secret);
        assert_eq!(job.variables["build.buildNumber"].value, run.name);
        assert_eq!(job.variables["build.sourceBranch"].value, "refs/heads/dev");
        assert!(
            job.variables
                .keys()
                .all(|k| !k.starts_with("fleetsim.secret"))
        );
        assert!(
            job.mask
                .iter()
                .any(|m| m.kind == "regex" && m.value == "s3cr3t\\-value")
        );
        let endpoint = &job.resources.endpoints[0];
        assert_eq!(endpoint.name, SYSTEM_VSS_CONNECTION);
        assert!(!job_token(&job).is_empty());

        let raw = open_raw(agent, &message);
        assert_eq!(raw["plan"]["definition"]["id"], 7);
        assert_eq!(raw["plan"]["owner"]["id"], 1);
        assert_eq!(raw["plan"]["owner"]["name"], run.name.as_str());
        assert_eq!(raw["plan"]["artifactUri"], "vstfs:///Build/Build/1");
        assert_eq!(raw["resources"]["repositories"][0]["alias"], "self");
        assert_eq!(
            raw["resources"]["repositories"][0]["properties"]["ref"],
            "refs/heads/dev"
        );
        assert_eq!(raw["requestId"], job.request_id);
        assert_eq!(raw["timeline"]["id"], job.timeline.id.as_str());
    }
    assert_eq!(job_ids.len(), 3, "each job its own job id");
}

// Goal: a run is inProgress while any job is open and completes with the worst result: one
// failed job fails it, all succeeded succeeds it; finishedDate is set then, and a second run
// of the day is numbered `.2`. A synthetic job next to it is unaffected.
#[test]
fn run_state_and_result_follow_the_jobs() {
    let mut h = Harness::new(pipelines_config(2));
    let a = online_agent(&mut h, "a", &[]);
    let b = online_agent(&mut h, "b", &[]);
    let run = start_run(&mut h, RunPipelineParameters::default());
    let (ma, mb) = (take_message(&mut h, &a), take_message(&mut h, &b));
    h.advance(Duration::from_secs(5));
    complete(&mut h, &a, &ma, TaskResult::Succeeded);
    let now = get_run(&mut h, run.id);
    assert_eq!((now.state, now.result), (RunState::InProgress, None));
    assert_eq!(now.finished_date, None);
    complete(&mut h, &b, &mb, TaskResult::Failed);
    let done = get_run(&mut h, run.id);
    assert_eq!(
        (done.state, done.result),
        (RunState::Completed, Some(RunResult::Failed))
    );
    assert!(done.finished_date.unwrap() > done.created_date.unwrap());

    let second = start_run(&mut h, RunPipelineParameters::default());
    assert!(second.name.ends_with(".2"), "{}", second.name);
    let (ma, mb) = (take_message(&mut h, &a), take_message(&mut h, &b));
    complete(&mut h, &a, &ma, TaskResult::Succeeded);
    complete(&mut h, &b, &mb, TaskResult::SucceededWithIssues);
    let ok = get_run(&mut h, second.id);
    assert_eq!(ok.result, Some(RunResult::Succeeded));

    let ApiResponse::PipelineRuns(list) = h.call(
        pat(),
        ApiRequest::ListPipelineRuns {
            project: "demo".into(),
            pipeline_id: PIPELINE,
        },
    ) else {
        panic!("list")
    };
    let ids: Vec<_> = list.value.iter().map(|r| r.id).collect();
    assert_eq!(
        ids,
        [second.id, run.id],
        "latest first; project is case-insensitive"
    );
}

// Goal: previewRun creates nothing: no run, no job request; the answer has id 0.
#[test]
fn preview_run_creates_nothing() {
    let mut h = Harness::new(pipelines_config(2));
    let preview = start_run(
        &mut h,
        RunPipelineParameters {
            preview_run: Some(true),
            ..RunPipelineParameters::default()
        },
    );
    assert_eq!((preview.id, preview.state), (0, RunState::Unknown));
    assert_eq!(preview.pipeline.id, PIPELINE);
    assert!(job_requests(&mut h).is_empty());
    assert_eq!(h.server.stats().jobs_queued, 0);
    h.expect_error(pat(), get_run_call(1), ErrorKind::BuildNotFound);
}

// Goal: unknown projects, pipelines and runs are typed 404s with the real service's exception
// names; scopes decide who may run, read and list.
#[test]
fn unknown_targets_are_typed_404s_and_scopes_apply() {
    let mut h = Harness::new(pipelines_config(1));
    let e = h.expect_error(
        pat(),
        ApiRequest::RunPipeline {
            project: "Nope".into(),
            pipeline_id: PIPELINE,
            params: RunPipelineParameters::default(),
        },
        ErrorKind::ProjectNotFound,
    );
    assert!(e.message.contains("Nope"), "{}", e.message);
    h.expect_error(
        pat(),
        ApiRequest::RunPipeline {
            project: PROJECT.into(),
            pipeline_id: 99,
            params: RunPipelineParameters::default(),
        },
        ErrorKind::PipelineNotFound,
    );
    h.expect_error(pat(), get_run_call(42), ErrorKind::BuildNotFound);
    h.expect_error(pat(), cancel_build(42), ErrorKind::BuildNotFound);
    assert_eq!(
        ErrorKind::PipelineNotFound.type_key(),
        "PipelineNotFoundException"
    );
    assert_eq!(
        ErrorKind::ProjectNotFound.type_key(),
        "ProjectDoesNotExistWithNameException"
    );
    assert_eq!(
        ErrorKind::BuildNotFound.type_key(),
        "BuildNotFoundException"
    );

    // Build (read) may follow a run but not queue or cancel one.
    h.expect_error(
        basic(READER_PAT),
        run_call(RunPipelineParameters::default()),
        ErrorKind::AccessDenied,
    );
    let run = start_run(&mut h, RunPipelineParameters::default());
    assert!(matches!(
        h.call(basic(READER_PAT), get_run_call(run.id)),
        ApiResponse::PipelineRun(_)
    ));
    h.expect_error(
        basic(READER_PAT),
        cancel_build(run.id),
        ErrorKind::AccessDenied,
    );
    // Agent pools (read) may list job requests, as on the real service; Build (read) may not.
    assert!(matches!(
        h.call(
            basic(POOL_READER_PAT),
            ApiRequest::ListJobRequests { pool_id: 1 }
        ),
        ApiResponse::JobRequests(_)
    ));
    h.expect_error(
        basic(READER_PAT),
        ApiRequest::ListJobRequests { pool_id: 1 },
        ErrorKind::AccessDenied,
    );
    h.expect_error(
        Credential::Anonymous,
        get_run_call(run.id),
        ErrorKind::Unauthorized,
    );
}

// Goal: PATCH build {status: cancelling} cancels the run like the admin cancel: the queued job
// finishes canceled at once, the assigned one gets a JobCancellation; the run is canceling,
// then completed/canceled once the agent reports; a repeat changes nothing.
#[test]
fn build_patch_cancels_the_run() {
    let mut h = Harness::new(pipelines_config(2));
    let a = online_agent(&mut h, "only", &[]);
    let run = start_run(&mut h, RunPipelineParameters::default());
    let job_message = take_message(&mut h, &a);
    let ack = delete_message(&a, job_message.message_id);
    assert_eq!(h.call(bearer(&a.token), ack), ApiResponse::NoContent);

    let ApiResponse::Build(build) = h.call(pat(), cancel_build(run.id)) else {
        panic!("build answer")
    };
    assert_eq!(build.id, run.id);
    assert_eq!(build.status, Some(BuildStatus::Cancelling));
    assert_eq!(build.definition.as_ref().map(|d| d.id), Some(7));
    assert_eq!(get_run(&mut h, run.id).state, RunState::Canceling);
    let stats = h.server.stats();
    assert_eq!((stats.jobs_queued, stats.jobs_canceled), (0, 1));
    let cancel = take_message(&mut h, &a);
    assert_eq!(cancel.message_type, MESSAGE_JOB_CANCELLATION);
    assert!(matches!(
        h.call(pat(), cancel_build(run.id)),
        ApiResponse::Build(_)
    ));
    complete(&mut h, &a, &job_message, TaskResult::Canceled);
    let done = get_run(&mut h, run.id);
    assert_eq!(
        (done.state, done.result),
        (RunState::Completed, Some(RunResult::Canceled))
    );
    let ApiResponse::Build(build) = h.call(pat(), cancel_build(run.id)) else {
        panic!("build answer")
    };
    assert_eq!(build.status, Some(BuildStatus::Completed));
    let bad = ApiRequest::UpdateBuild {
        project: PROJECT.into(),
        build_id: run.id,
        update: BuildUpdate {
            status: Some(BuildStatus::InProgress),
        },
    };
    h.expect_error(pat(), bad, ErrorKind::BadRequest);
}

// Goal: the pool's job-request list gives queue ≤ assign ≤ receive ≤ finish from the server's
// clock (the agent's message acknowledgement is the receive time), the result, and the agent
// that ran the job, also after it finished.
#[test]
fn job_request_times_are_in_order() {
    let mut h = Harness::new(pipelines_config(1));
    start_run(&mut h, RunPipelineParameters::default());
    h.advance(Duration::from_secs(3));
    let a = online_agent(&mut h, "late", &[]);
    let message = take_message(&mut h, &a);
    h.advance(Duration::from_secs(2));
    let ack = delete_message(&a, message.message_id);
    assert_eq!(h.call(bearer(&a.token), ack), ApiResponse::NoContent);
    h.advance(Duration::from_secs(4));
    complete(&mut h, &a, &message, TaskResult::Succeeded);
    let jr = job_requests(&mut h).remove(0);
    let (q, s, r, f) = (
        jr.queue_time.unwrap(),
        jr.assign_time.unwrap(),
        jr.receive_time.unwrap(),
        jr.finish_time.unwrap(),
    );
    assert!(q < s && s < r && r < f, "{q} {s} {r} {f}");
    assert!(q.ends_with('Z') && q.len() == 24, "{q}");
    assert_eq!(jr.result, Some(TaskResult::Succeeded));
    assert_eq!(jr.reserved_agent.map(|r| r.name), Some("late".to_string()));
    assert!(jr.plan_id.is_some() && jr.job_id.is_some());
}

// Goal: runs are bounded: a new run past `max_pipeline_runs` evicts the oldest finished run, is
// refused (429) while every kept run is in progress; variables and parameters are bounded;
// an inconsistent pipeline config is refused with its own error.
#[test]
fn runs_and_parameters_are_bounded() {
    let mut c = pipelines_config(1);
    c.limits.max_pipeline_runs = 2;
    c.limits.max_run_variables = 2;
    c.limits.max_run_variable_bytes = 16;
    let mut h = Harness::new(c);
    let first = start_run(&mut h, RunPipelineParameters::default());
    let second = start_run(&mut h, RunPipelineParameters::default());
    h.expect_error(
        pat(),
        run_call(RunPipelineParameters::default()),
        ErrorKind::Throttled,
    );
    let a = online_agent(&mut h, "a", &[]);
    let message = take_message(&mut h, &a);
    complete(&mut h, &a, &message, TaskResult::Succeeded);
    let third = start_run(&mut h, RunPipelineParameters::default());
    h.expect_error(pat(), get_run_call(first.id), ErrorKind::BuildNotFound);
    assert_eq!(get_run(&mut h, second.id).state, RunState::InProgress);
    assert_eq!(get_run(&mut h, third.id).id, 3);

    let var = |v: &str| VariableValue {
        value: v.into(),
        ..VariableValue::default()
    };
    let too_many = (0..3).map(|i| (format!("v{i}"), var("x"))).collect();
    let too_long = BTreeMap::from([("v".to_string(), var(&"x".repeat(16)))]);
    for variables in [too_many, too_long] {
        let params = RunPipelineParameters {
            variables: Some(variables),
            ..RunPipelineParameters::default()
        };
        h.expect_error(pat(), run_call(params), ErrorKind::BadRequest);
    }

    let with = |p: Vec<PipelineConfig>| ServerConfig {
        pipelines: p,
        ..config()
    };
    assert_eq!(
        with(vec![pipeline(1), pipeline(2)]).validate(),
        Err(ConfigError::DuplicatePipelineId(PIPELINE))
    );
    let mut unknown_pool = pipeline(1);
    unknown_pool.pool = "gpu".into();
    assert!(matches!(
        with(vec![unknown_pool]).validate(),
        Err(ConfigError::UnknownPipelinePool { id: 7, .. })
    ));
    for jobs in [0, 100_000] {
        assert!(matches!(
            with(vec![pipeline(jobs)]).validate(),
            Err(ConfigError::BadPipeline { id: 7, .. })
        ));
    }
    let mut no_steps = pipeline(1);
    no_steps.steps.clear();
    assert!(with(vec![no_steps]).validate().is_err());
}
