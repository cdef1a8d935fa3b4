//! Synthetic jobs: the work a virtual agent simulates. The emulator's admin API queues them; the
//! job message carries each step's work in the inputs of a `FleetsimSynthetic` task step so an
//! agent knows what to do without any side channel.

use serde::{Deserialize, Serialize};

use crate::proto::TaskAgentJobRequest;

/// One step's simulated work.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyntheticStep {
    /// How long the step runs, in milliseconds.
    pub duration_ms: u64,
    /// Log lines the step prints, spread over its duration.
    #[serde(default)]
    pub log_lines: u32,
    /// How many of those lines contain a secret value (which the agent must mask).
    #[serde(default)]
    pub secret_lines: u32,
    /// Bytes of artifact the step attaches at its end (0 = none).
    #[serde(default)]
    pub artifact_bytes: u64,
}

/// One synthetic job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyntheticJob {
    pub steps: Vec<SyntheticStep>,
    /// Secret variables the job carries (`isSecret: true`).
    #[serde(default)]
    pub secrets: u32,
    /// The job fails (its last step reports `failed`).
    #[serde(default)]
    pub fail: bool,
    /// Demands an agent's capabilities must meet: `name` (exists) or `name -equals value`.
    #[serde(default)]
    pub demands: Vec<String>,
}

/// Admin body of `POST _apis/distributedtask/pools/{poolId}/jobrequests` (emulator only):
/// `count` copies of `template`, plus any explicit `jobs`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueueJobsRequest {
    #[serde(default)]
    pub count: u32,
    #[serde(default)]
    pub template: Option<SyntheticJob>,
    #[serde(default)]
    pub jobs: Vec<SyntheticJob>,
}

impl QueueJobsRequest {
    /// The jobs this request asks for, in order.
    pub fn expand(&self) -> impl Iterator<Item = &SyntheticJob> {
        let copies = self
            .template
            .iter()
            .flat_map(move |t| std::iter::repeat_n(t, self.count as usize));
        copies.chain(self.jobs.iter())
    }
    pub fn len(&self) -> usize {
        self.jobs.len()
            + if self.template.is_some() {
                self.count as usize
            } else {
                0
            }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Answer to a queue request: the new job requests, in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueJobsResponse {
    pub count: usize,
    pub value: Vec<TaskAgentJobRequest>,
}

/// Keys of a synthetic step's `inputs`.
pub mod inputs {
    pub const DURATION_MS: &str = "durationMs";
    pub const LOG_LINES: &str = "logLines";
    pub const SECRET_LINES: &str = "secretLines";
    pub const ARTIFACT_BYTES: &str = "artifactBytes";
    /// `"true"` on the step that fails the job.
    pub const FAIL: &str = "fail";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_repeats_template_then_explicit_jobs() {
        let t = SyntheticJob {
            steps: vec![SyntheticStep {
                duration_ms: 5,
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = SyntheticJob {
            fail: true,
            ..Default::default()
        };
        let r = QueueJobsRequest {
            count: 2,
            template: Some(t.clone()),
            jobs: vec![e.clone()],
        };
        let all: Vec<_> = r.expand().cloned().collect();
        assert_eq!(all, vec![t.clone(), t, e]);
        assert_eq!(r.len(), 3);
    }
}
