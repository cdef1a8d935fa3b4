//! The Pipelines Runs API (api-version 7.1) over the pipelines in the config: queue a run
//! (`POST {project}/_apis/pipelines/{id}/runs`), follow it (`GET …/runs/{runId}`), list runs
//! (`GET …/runs`, latest first), and cancel it through the Build API
//! (`PATCH {project}/_apis/build/builds/{buildId}` with `{"status":"cancelling"}`; a run's id is
//! its build id).
//!
//! A run is `jobs` job requests in the pipeline's pool, queued, dispatched, leased and finished
//! like any other (`jobs`); each is sent as the `PipelineAgentJobRequest` the real service
//! sends: real task references (`Checkout`, `CmdLine`, … by name), one GUID record id per step,
//! the run's queue-time variables (secret ones flagged `isSecret` and given as `mask` hints),
//! the plan's `definition`/`owner`, the `self` repository. A run is `inProgress` while any job
//! is queued or running (`canceling` once a cancel was asked for), then `completed` with
//! `canceled` (cancel asked), else `failed` (a job failed or was abandoned), else `canceled` (a
//! job was canceled), else `succeeded`.
//!
//! `previewRun: true` creates nothing: the answer is a run with id 0, state `unknown`, no jobs
//! (the real service also returns the final YAML, which fleetsim has none of).
//!
//! Bounds: at most `limits.max_pipeline_runs` runs are kept; the oldest finished run is
//! forgotten first, and a new run is refused (429) while all kept runs are in progress. Jobs per
//! run, steps per job, variables per run and bytes per variable are bounded by the config. This
//! module never reads a clock or does IO; run names take the day from the server's wall time.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Value, json};

use super::Server;
use super::auth::Need;
use super::config::PipelineConfig;
use crate::SimTime;
use crate::api::{ApiError, ApiResponse, Credential, ErrorKind};
use crate::codec::text::percent_encode;
use crate::job::SyntheticJob;
use crate::proto::{
    AgentJobRequestMessage, Build, BuildResult, BuildStatus, BuildUpdate, DefinitionReference,
    JobStep, ListOf, MaskHint, PipelineReference, PipelineRun, RunPipelineParameters, RunResult,
    RunState, TaskOrchestrationOwner, TaskReference, TaskResult, VariableValue,
};

/// The branch a run builds when the request names none.
const DEFAULT_REF: &str = "refs/heads/main";
/// Longest `refName` accepted.
const REF_NAME_MAX: usize = 256;
/// Most `stagesToSkip` entries accepted (the emulator's pipelines have one stage).
const STAGES_TO_SKIP_MAX: usize = 64;
/// Most mask hints one job message carries (one per secret variable).
const MASK_HINTS_MAX: usize = 32;

/// (name, task GUID, version, default inputs).
type KnownTask = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// The real service's task references for the task names pipelines usually run: (name, task
/// GUID, version, inputs). The GUIDs are the tasks' own (`task.json` ids; Checkout and CmdLine
/// as in the real agent's L1 test job message).
const KNOWN_TASKS: &[KnownTask] = &[
    (
        "Checkout",
        "6d15af64-176c-496d-b583-fd2ae21d4df4",
        "1.0.0",
        &[("repository", "self")],
    ),
    (
        "CmdLine",
        "d0c4ac01-adbe-42b5-845a-b063e9213a8c",
        "2.279.1",
        &[("script", "echo Hello from fleetsim")],
    ),
    (
        "Bash",
        "6c731c3c-3c68-459a-a5c9-bde6e6595b5b",
        "3.227.0",
        &[
            ("targetType", "inline"),
            ("script", "echo Hello from fleetsim"),
        ],
    ),
    (
        "PowerShell",
        "e213ff0f-5d5c-4791-802d-52ea3e7be1f1",
        "2.247.1",
        &[("targetType", "inline"), ("script", "Write-Host Hello")],
    ),
    (
        "PublishTestResults",
        "0b0f01ed-7dde-43ff-9cbb-e48954daf9b1",
        "2.247.0",
        &[
            ("testResultsFormat", "JUnit"),
            ("testResultsFiles", "**/TEST-*.xml"),
        ],
    ),
    (
        "PublishPipelineArtifact",
        "ecdc45f6-832d-4ad9-b52b-ee49e94659be",
        "1.242.0",
        &[
            ("targetPath", "$(Pipeline.Workspace)"),
            ("artifact", "drop"),
        ],
    ),
];

/// A job request's place in a run.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct RunJob {
    pub run_id: u64,
    /// 1-based position of the job in its run.
    pub index: u32,
}

/// One run.
#[derive(serde::Serialize, serde::Deserialize)]
struct Run {
    pipeline_id: u32,
    /// The build number, `yyyymmdd.n`.
    name: String,
    created: SimTime,
    finished: Option<SimTime>,
    ref_name: String,
    /// Queue-time variables, as the request gave them.
    variables: BTreeMap<String, VariableValue>,
    /// Its job requests, in order.
    jobs: Vec<u64>,
    open_jobs: u32,
    failed_jobs: u32,
    canceled_jobs: u32,
    cancel_requested: bool,
}

/// Every kept run, and what numbers the next ones.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Runs {
    runs: BTreeMap<u64, Run>,
    /// Finished run ids, oldest first: the eviction order.
    finished: VecDeque<u64>,
    last_id: u64,
    /// Pipeline id → (UTC day `yyyymmdd`, runs numbered that day).
    numbers: BTreeMap<u32, (String, u32)>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::BadRequest, message)
}

fn build_not_found(id: u64) -> ApiError {
    ApiError::new(
        ErrorKind::BuildNotFound,
        format!("The requested build {id} could not be found."),
    )
}

/// The `self` repository's branch from `resources.repositories.self.refName`.
fn ref_name(resources: Option<&Value>) -> Result<String, ApiError> {
    let name = resources
        .and_then(|r| r.pointer("/repositories/self/refName"))
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_REF);
    if name.is_empty() || name.len() > REF_NAME_MAX {
        return Err(bad(format!(
            "resources.repositories.self.refName must be 1..={REF_NAME_MAX} bytes"
        )));
    }
    Ok(name.to_string())
}

/// A stable GUID-form id for a task name the table does not know, so every job of every run
/// names the same task the same way.
fn task_id_for(name: &str) -> String {
    let fnv = |seed: u64| {
        name.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let (hi, lo) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x84222325_cbf29ce4));
    let hex = format!("{hi:016x}{lo:016x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Step `i`'s timeline record id: the job id's first four groups and the step number, so
/// record ids are GUIDs, distinct within the job and stable across requeues.
fn step_record_id(job_id: &str, i: usize) -> String {
    format!("{}{:012x}", job_id.get(..24).unwrap_or(job_id), i + 1)
}

/// One task step of a pipeline job.
fn task_step(name: &str, record_id: String) -> JobStep {
    let known = KNOWN_TASKS
        .iter()
        .find(|(n, ..)| n.eq_ignore_ascii_case(name));
    let (task_name, id, version, inputs) = match known {
        Some((n, id, v, inputs)) => (n.to_string(), id.to_string(), v.to_string(), *inputs),
        None => (
            name.to_string(),
            task_id_for(name),
            "1.0.0".to_string(),
            &[][..],
        ),
    };
    JobStep {
        kind: "task".to_string(),
        reference: TaskReference {
            id,
            name: task_name.clone(),
            version,
        },
        inputs: inputs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        id: record_id,
        name: task_name.clone(),
        display_name: task_name,
        condition: "succeeded()".to_string(),
    }
}

impl Run {
    fn state(&self) -> RunState {
        match (self.open_jobs, self.cancel_requested) {
            (0, _) => RunState::Completed,
            (_, true) => RunState::Canceling,
            (_, false) => RunState::InProgress,
        }
    }

    fn result(&self) -> Option<RunResult> {
        if self.open_jobs > 0 {
            return None;
        }
        Some(if self.cancel_requested {
            RunResult::Canceled
        } else if self.failed_jobs > 0 {
            RunResult::Failed
        } else if self.canceled_jobs > 0 {
            RunResult::Canceled
        } else {
            RunResult::Succeeded
        })
    }
}

impl Server {
    // -----------------------------------------------------------------------------------------
    // Routes
    // -----------------------------------------------------------------------------------------

    /// `POST {project}/_apis/pipelines/{pipelineId}/runs`.
    pub(super) fn run_pipeline(
        &mut self,
        now: SimTime,
        cred: &Credential,
        project: &str,
        pipeline_id: u32,
        params: RunPipelineParameters,
    ) -> Result<ApiResponse, ApiError> {
        self.require_pat(now, cred, Need::BuildExecute)?;
        let pipeline = self.pipeline(project, pipeline_id)?.clone();
        let ref_name = ref_name(params.resources.as_ref())?;
        let variables = params.variables.unwrap_or_default();
        self.check_run_parameters(&variables, params.template_parameters.as_ref())?;
        if params.stages_to_skip.as_ref().map_or(0, Vec::len) > STAGES_TO_SKIP_MAX {
            return Err(bad(format!(
                "stagesToSkip lists more than {STAGES_TO_SKIP_MAX} stages"
            )));
        }
        if params.preview_run == Some(true) {
            return Ok(ApiResponse::PipelineRun(PipelineRun {
                id: 0,
                name: String::new(),
                state: RunState::Unknown,
                result: None,
                created_date: None,
                finished_date: None,
                url: None,
                pipeline: pipeline_ref(&pipeline),
            }));
        }
        self.make_room_for_run(pipeline.jobs as usize)?;
        let run_id = self.create_run(now, &pipeline, ref_name, variables);
        Ok(ApiResponse::PipelineRun(self.run_view(run_id)))
    }

    /// `GET {project}/_apis/pipelines/{pipelineId}/runs/{runId}`.
    pub(super) fn get_run(
        &self,
        now: SimTime,
        cred: &Credential,
        project: &str,
        pipeline_id: u32,
        run_id: u64,
    ) -> Result<ApiResponse, ApiError> {
        self.require_pat(now, cred, Need::BuildRead)?;
        self.pipeline(project, pipeline_id)?;
        match self.runs.runs.get(&run_id) {
            Some(run) if run.pipeline_id == pipeline_id => {
                Ok(ApiResponse::PipelineRun(self.run_view(run_id)))
            }
            _ => Err(build_not_found(run_id)),
        }
    }

    /// `GET {project}/_apis/pipelines/{pipelineId}/runs`: the kept runs, latest first.
    pub(super) fn list_runs(
        &self,
        now: SimTime,
        cred: &Credential,
        project: &str,
        pipeline_id: u32,
    ) -> Result<ApiResponse, ApiError> {
        self.require_pat(now, cred, Need::BuildRead)?;
        self.pipeline(project, pipeline_id)?;
        let value = self
            .runs
            .runs
            .iter()
            .rev()
            .filter(|(_, r)| r.pipeline_id == pipeline_id)
            .map(|(&id, _)| self.run_view(id))
            .collect();
        Ok(ApiResponse::PipelineRuns(ListOf::new(value)))
    }

    /// `PATCH {project}/_apis/build/builds/{buildId}` with `{"status":"cancelling"}`: cancel the
    /// run's jobs as the admin cancel does (queued ones finish canceled now, assigned ones get a
    /// `JobCancellation`). A completed run is answered as it stands, unchanged.
    pub(super) fn update_build(
        &mut self,
        now: SimTime,
        cred: &Credential,
        project: &str,
        build_id: u64,
        update: BuildUpdate,
    ) -> Result<ApiResponse, ApiError> {
        self.require_pat(now, cred, Need::BuildExecute)?;
        self.project_exists(project)?;
        if update.status != Some(BuildStatus::Cancelling) {
            return Err(bad(
                "this emulator's Build API only cancels: send {\"status\":\"cancelling\"}",
            ));
        }
        self.journal.runs();
        let run = self
            .runs
            .runs
            .get_mut(&build_id)
            .filter(|r| {
                self.cfg
                    .pipelines
                    .iter()
                    .any(|p| p.id == r.pipeline_id && p.project.eq_ignore_ascii_case(project))
            })
            .ok_or_else(|| build_not_found(build_id))?;
        if run.open_jobs > 0 && !run.cancel_requested {
            run.cancel_requested = true;
            for request_id in run.jobs.clone() {
                self.cancel_request(now, request_id);
            }
        }
        Ok(ApiResponse::Build(self.build_view(build_id)))
    }

    // -----------------------------------------------------------------------------------------
    // Runs
    // -----------------------------------------------------------------------------------------

    fn project_exists(&self, project: &str) -> Result<(), ApiError> {
        if self
            .cfg
            .pipelines
            .iter()
            .any(|p| p.project.eq_ignore_ascii_case(project))
        {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorKind::ProjectNotFound,
                format!(
                    "VS800075: The project with id '{}' does not exist, or you do not have \
                     permission to access it.",
                    crate::codec::text::truncate(project, 64)
                ),
            ))
        }
    }

    fn pipeline(&self, project: &str, pipeline_id: u32) -> Result<&PipelineConfig, ApiError> {
        self.project_exists(project)?;
        self.cfg
            .pipelines
            .iter()
            .find(|p| p.id == pipeline_id && p.project.eq_ignore_ascii_case(project))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorKind::PipelineNotFound,
                    format!(
                        "Pipeline with id {pipeline_id} not found in project '{}'; the \
                         emulator's [[pipelines]] list the pipelines it runs",
                        crate::codec::text::truncate(project, 64)
                    ),
                )
            })
    }

    fn check_run_parameters(
        &self,
        variables: &BTreeMap<String, VariableValue>,
        template_parameters: Option<&BTreeMap<String, String>>,
    ) -> Result<(), ApiError> {
        let limits = &self.cfg.limits;
        let params = template_parameters.into_iter().flatten();
        let pairs = variables
            .iter()
            .map(|(k, v)| (k, &v.value))
            .chain(params.clone());
        if variables.len() > limits.max_run_variables || params.count() > limits.max_run_variables {
            return Err(bad(format!(
                "a run takes at most {} variables and {0} template parameters",
                limits.max_run_variables
            )));
        }
        for (name, value) in pairs {
            if name.is_empty() || name.len() + value.len() > limits.max_run_variable_bytes {
                return Err(bad(format!(
                    "variable or parameter {:?} is empty or longer than {} bytes with its value",
                    crate::codec::text::truncate(name, 64),
                    limits.max_run_variable_bytes
                )));
            }
        }
        Ok(())
    }

    /// Forget the oldest finished runs until one more fits; refuse when every kept run is in
    /// progress, or when the run's jobs would overfill the queue.
    fn make_room_for_run(&mut self, jobs: usize) -> Result<(), ApiError> {
        let limits = &self.cfg.limits;
        if self.queue.len() + jobs > limits.max_queued_jobs {
            return Err(Self::throttled("queued jobs", limits.max_queued_jobs));
        }
        while self.runs.runs.len() >= limits.max_pipeline_runs {
            let Some(old) = self.runs.finished.pop_front() else {
                return Err(Self::throttled(
                    "pipeline runs in progress",
                    limits.max_pipeline_runs,
                ));
            };
            self.runs.runs.remove(&old);
        }
        Ok(())
    }

    fn create_run(
        &mut self,
        now: SimTime,
        pipeline: &PipelineConfig,
        ref_name: String,
        variables: BTreeMap<String, VariableValue>,
    ) -> u64 {
        self.runs.last_id += 1;
        let run_id = self.runs.last_id;
        let day: String = self
            .wall(now)
            .chars()
            .take(10)
            .filter(|c| *c != '-')
            .collect();
        let number = match self.runs.numbers.get_mut(&pipeline.id) {
            Some((d, n)) if *d == day => {
                *n += 1;
                *n
            }
            _ => {
                self.runs.numbers.insert(pipeline.id, (day.clone(), 1));
                1
            }
        };
        let secrets: Vec<String> = variables
            .values()
            .filter(|v| v.is_secret && !v.value.is_empty())
            .map(|v| v.value.clone())
            .collect();
        // Validated at config load: the pool exists.
        let pool_id = self.cfg.pool_id(&pipeline.pool).unwrap_or_default();
        let spec = SyntheticJob {
            demands: pipeline.demands.clone(),
            ..SyntheticJob::default()
        };
        let mut jobs = Vec::with_capacity(pipeline.jobs as usize);
        for index in 1..=pipeline.jobs {
            let request_id = self.new_job(now, pool_id, spec.clone());
            if let Some(job) = self.jobs.get_mut(&request_id) {
                job.secrets = secrets.clone();
                job.pipeline = Some(RunJob { run_id, index });
            }
            jobs.push(request_id);
        }
        self.journal.runs();
        self.runs.runs.insert(
            run_id,
            Run {
                pipeline_id: pipeline.id,
                name: format!("{day}.{number}"),
                created: now,
                finished: None,
                ref_name,
                variables,
                open_jobs: pipeline.jobs,
                jobs,
                failed_jobs: 0,
                canceled_jobs: 0,
                cancel_requested: false,
            },
        );
        run_id
    }

    /// A job of a run finished with `result` (called by `jobs::close`, once per job).
    pub(super) fn run_job_closed(&mut self, now: SimTime, run_job: &RunJob, result: TaskResult) {
        self.journal.runs();
        let Some(run) = self.runs.runs.get_mut(&run_job.run_id) else {
            return;
        };
        debug_assert!(run.open_jobs > 0, "a run's job closed twice");
        run.open_jobs = run.open_jobs.saturating_sub(1);
        match result {
            TaskResult::Failed | TaskResult::Abandoned => run.failed_jobs += 1,
            TaskResult::Canceled => run.canceled_jobs += 1,
            TaskResult::Succeeded | TaskResult::SucceededWithIssues | TaskResult::Skipped => {}
        }
        if run.open_jobs == 0 {
            run.finished = Some(now);
            self.runs.finished.push_back(run_job.run_id);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Views
    // -----------------------------------------------------------------------------------------

    fn pipeline_config(&self, id: u32) -> Option<&PipelineConfig> {
        self.cfg.pipelines.iter().find(|p| p.id == id)
    }

    fn run_view(&self, run_id: u64) -> PipelineRun {
        let run = &self.runs.runs[&run_id];
        let pipeline = self.pipeline_config(run.pipeline_id);
        let project = pipeline.map_or("", |p| p.project.as_str());
        PipelineRun {
            id: run_id,
            name: run.name.clone(),
            state: run.state(),
            result: run.result(),
            created_date: Some(self.wall(run.created)),
            finished_date: run.finished.map(|t| self.wall(t)),
            url: Some(format!(
                "{}/{}/_apis/pipelines/{}/runs/{run_id}",
                self.public_url,
                percent_encode(project),
                run.pipeline_id
            )),
            pipeline: pipeline.map(pipeline_ref).unwrap_or_default(),
        }
    }

    fn build_view(&self, run_id: u64) -> Build {
        let run = &self.runs.runs[&run_id];
        let pipeline = self.pipeline_config(run.pipeline_id);
        let project = pipeline.map_or("", |p| p.project.as_str());
        let status = match run.state() {
            RunState::Completed => BuildStatus::Completed,
            RunState::Canceling => BuildStatus::Cancelling,
            RunState::InProgress | RunState::Unknown => BuildStatus::InProgress,
        };
        let result = run.result().map(|r| match r {
            RunResult::Succeeded => BuildResult::Succeeded,
            RunResult::Failed => BuildResult::Failed,
            RunResult::Canceled => BuildResult::Canceled,
            RunResult::Unknown => BuildResult::None,
        });
        Build {
            id: run_id,
            build_number: run.name.clone(),
            status: Some(status),
            result,
            queue_time: Some(self.wall(run.created)),
            finish_time: run.finished.map(|t| self.wall(t)),
            url: Some(format!(
                "{}/{}/_apis/build/Builds/{run_id}",
                self.public_url,
                percent_encode(project)
            )),
            definition: pipeline.map(|p| DefinitionReference {
                id: u64::from(p.id),
                name: p.name.clone(),
            }),
        }
    }

    /// A job request's `definition` (the pipeline) and `owner` (the run), for pipeline jobs.
    pub(super) fn run_refs(
        &self,
        job: &super::jobs::Job,
    ) -> (
        Option<TaskOrchestrationOwner>,
        Option<TaskOrchestrationOwner>,
    ) {
        let Some(run_job) = &job.pipeline else {
            return (None, None);
        };
        let Some(run) = self.runs.runs.get(&run_job.run_id) else {
            return (None, None);
        };
        let definition = self
            .pipeline_config(run.pipeline_id)
            .map(|p| DefinitionReference {
                id: u64::from(p.id),
                name: p.name.clone(),
            });
        let owner = DefinitionReference {
            id: run_job.run_id,
            name: run.name.clone(),
        };
        (definition, Some(owner))
    }

    // -----------------------------------------------------------------------------------------
    // The job message
    // -----------------------------------------------------------------------------------------

    /// The `PipelineAgentJobRequest` body of a pipeline job: the synthetic job's message (plan,
    /// timeline, endpoint with the job token, system variables) with the pipeline's task steps,
    /// the run's variables and mask hints, and the plan's definition, owner and repository.
    pub(super) fn pipeline_job_body(
        &self,
        mut message: AgentJobRequestMessage,
        run_job: &RunJob,
    ) -> String {
        let run = self.runs.runs.get(&run_job.run_id);
        let pipeline = run.and_then(|r| self.pipeline_config(r.pipeline_id));
        let (Some(run), Some(pipeline)) = (run, pipeline) else {
            // A job outlives neither its run nor its pipeline; send what is known.
            return serde_json::to_string(&message).unwrap_or_default();
        };
        let job_name = if pipeline.jobs == 1 {
            "Job".to_string()
        } else {
            format!("Job{}", run_job.index)
        };
        message.job_name = job_name.clone();
        message.job_display_name = job_name.clone();
        message.steps = pipeline
            .steps
            .iter()
            .enumerate()
            .map(|(i, name)| task_step(name, step_record_id(&message.job_id, i)))
            .collect();
        message.mask = run
            .variables
            .values()
            .filter(|v| v.is_secret && !v.value.is_empty())
            .take(MASK_HINTS_MAX)
            .map(|v| MaskHint {
                kind: "regex".to_string(),
                value: regex::escape(&v.value),
            })
            .collect();
        self.pipeline_variables(&mut message.variables, run, pipeline, run_job, &job_name);
        let mut body = serde_json::to_value(&message).unwrap_or(Value::Null);
        let project_url = format!("{}/{}", self.public_url, percent_encode(&pipeline.project));
        if let Some(plan) = body.get_mut("plan").and_then(Value::as_object_mut) {
            plan.insert(
                "planGroup".into(),
                json!(format!(
                    "Build:{}:{}",
                    self.scope_identifier, run_job.run_id
                )),
            );
            plan.insert(
                "artifactUri".into(),
                json!(format!("vstfs:///Build/Build/{}", run_job.run_id)),
            );
            plan.insert(
                "definition".into(),
                json!({"id": pipeline.id, "name": pipeline.name}),
            );
            plan.insert(
                "owner".into(),
                json!({"id": run_job.run_id, "name": run.name}),
            );
        }
        if let Some(resources) = body.get_mut("resources").and_then(Value::as_object_mut) {
            let repo_url = format!("{project_url}/_git/{}", percent_encode(&pipeline.name));
            resources.insert(
                "repositories".into(),
                json!([{
                    "alias": "self",
                    "id": pipeline.project,
                    "type": "Git",
                    "version": format!("{:040x}", u128::from(run_job.run_id)),
                    "url": repo_url,
                    "endpoint": {"name": crate::proto::SYSTEM_VSS_CONNECTION},
                    "properties": {
                        "name": pipeline.name,
                        "project": self.scope_identifier,
                        "ref": run.ref_name,
                        "defaultBranch": DEFAULT_REF,
                    },
                }]),
            );
        }
        body.to_string()
    }

    /// The run's variables and the `system.*`/`build.*` ones the real service sets for a
    /// pipeline job; the synthetic job's `fleetsim.secret*` values are dropped (a pipeline
    /// job's secrets are its run's secret variables). Server values win over a run variable
    /// of the same name.
    fn pipeline_variables(
        &self,
        vars: &mut BTreeMap<String, VariableValue>,
        run: &Run,
        pipeline: &PipelineConfig,
        run_job: &RunJob,
        job_name: &str,
    ) {
        vars.retain(|k, _| !k.starts_with("fleetsim.secret"));
        let server_vars: BTreeMap<String, VariableValue> = [
            ("system", "build".to_string()),
            ("system.hosttype", "build".to_string()),
            ("system.teamProject", pipeline.project.clone()),
            ("system.definitionId", pipeline.id.to_string()),
            ("system.definitionName", pipeline.name.clone()),
            ("build.definitionName", pipeline.name.clone()),
            ("build.buildId", run_job.run_id.to_string()),
            ("build.buildNumber", run.name.clone()),
            (
                "build.buildUri",
                format!("vstfs:///Build/Build/{}", run_job.run_id),
            ),
            ("build.sourceBranch", run.ref_name.clone()),
            ("system.jobName", job_name.to_string()),
            ("system.jobDisplayName", job_name.to_string()),
            ("system.jobAttempt", "1".to_string()),
            ("system.enableAccessToken", "SecretVariable".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| {
            let value = VariableValue {
                value: v,
                is_secret: false,
                is_read_only: true,
            };
            (k.to_string(), value)
        })
        .collect();
        for (name, value) in &run.variables {
            if !vars.contains_key(name) && !server_vars.contains_key(name) {
                vars.insert(name.clone(), value.clone());
            }
        }
        vars.extend(server_vars);
    }
}

fn pipeline_ref(p: &PipelineConfig) -> PipelineReference {
    PipelineReference {
        id: p.id,
        name: p.name.clone(),
        folder: Some(p.folder.clone().unwrap_or_else(|| "\\".to_string())),
        revision: Some(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: known task names get the real task's GUID; others a stable GUID-form id.
    #[test]
    fn task_steps_use_real_references() {
        let step = task_step("checkout", "id".into());
        assert_eq!(step.reference.id, "6d15af64-176c-496d-b583-fd2ae21d4df4");
        assert_eq!(step.reference.name, "Checkout");
        assert_eq!(step.inputs["repository"], "self");
        let a = task_step("MyCustomTask", "x".into());
        let b = task_step("MyCustomTask", "y".into());
        assert_eq!(a.reference.id, b.reference.id);
        assert_eq!(a.reference.id.len(), 36);
        assert_eq!(a.reference.id.matches('-').count(), 4);
        assert_ne!(a.reference.id, task_step("Other", "z".into()).reference.id);
    }

    // Goal: step record ids are GUID-form and distinct within a job.
    #[test]
    fn step_record_ids_are_guids() {
        let job = "0123abcd-0000-4000-8000-00000000abcd";
        let ids: Vec<_> = (0..3).map(|i| step_record_id(job, i)).collect();
        assert_eq!(ids[0], "0123abcd-0000-4000-8000-000000000001");
        assert!(ids.iter().all(|id| id.len() == 36));
        assert_ne!(ids[1], ids[2]);
    }

    // Goal: refName comes from resources.repositories.self, with a default and a bound.
    #[test]
    fn ref_name_is_read_from_resources() {
        let r = json!({"repositories": {"self": {"refName": "refs/heads/dev"}}});
        assert_eq!(ref_name(Some(&r)).unwrap(), "refs/heads/dev");
        assert_eq!(ref_name(None).unwrap(), DEFAULT_REF);
        let long = json!({"repositories": {"self": {"refName": "x".repeat(300)}}});
        assert!(ref_name(Some(&long)).is_err());
    }
}
