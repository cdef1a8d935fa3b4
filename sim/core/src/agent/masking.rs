//! What one job masks, built as the real worker builds its masker (protocol.md §6): every secret
//! variable, every endpoint authorization parameter except the known non-secret ones (which
//! covers the job token), and the job's mask hints. The masking itself is `mask::SecretMasker`'s.
//!
//! It also keeps the values a real step's secret lines print ([`JobSecrets::printable`]): every
//! secret the masker knows by value (secret variables, endpoint parameters such as the job's
//! `AccessToken`, literal mask hints), so a server's leak scanner can prove none leaves in clear.
//!
//! This module decides *what* is secret; it never sends or stores a line.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::mask::{RegexCache, SecretMasker};
use crate::proto::AgentJobRequestMessage;

/// Endpoint authorization parameters the real agent does not mask
/// (`Worker.cs` InitializeSecretMasker).
const NON_SECRET_PARAMETERS: &[&str] = &[
    "audience",
    "authenticationtype",
    "authorizationtype",
    "azureenvironment",
    "azurespnroleassignmentid",
    "azurespnobjectid",
    "expiresat",
    "issuedat",
    "role",
    "scope",
    "serviceprincipalid",
    "spnobjectid",
    "tenantid",
    "username",
];

/// The secrets of one job and the masker built from them.
pub(crate) struct JobSecrets {
    /// The secret variable values, in variable-name order: what the synthetic log lines print.
    pub(crate) values: Vec<String>,
    /// Every secret known by value, sorted and unique: what a real step's secret lines print.
    printable: Vec<Printable>,
    masker: Masker,
}

impl JobSecrets {
    /// Collect the job's secrets. `enabled = false` builds a masker that masks nothing (the
    /// leak-detection test switch); the values are still known so lines can print them. Regex
    /// hints are compiled once per pattern in `regexes` and shared with the fleet's other jobs.
    pub(crate) fn from_message(
        msg: &AgentJobRequestMessage,
        enabled: bool,
        regexes: &RegexCache,
    ) -> JobSecrets {
        let mut masker = Masker::new(enabled);
        let mut values = Vec::new();
        // Value → whether its base64 form is masked too (false for regex hints, which the
        // agent masks as patterns only).
        let mut printable: BTreeMap<&str, bool> = BTreeMap::new();
        for var in msg.variables.values() {
            if var.is_secret && !var.value.is_empty() {
                masker.add_value(&var.value);
                values.push(var.value.clone());
                printable.insert(var.value.as_str(), true);
            }
        }
        for endpoint in &msg.resources.endpoints {
            for (name, value) in &endpoint.authorization.parameters {
                if !NON_SECRET_PARAMETERS.contains(&name.to_ascii_lowercase().as_str()) {
                    masker.add_value(value);
                    printable.insert(value.as_str(), true);
                }
            }
        }
        for hint in &msg.mask {
            if hint.kind.eq_ignore_ascii_case("regex") {
                // A hint the masker cannot compile is skipped, as the real agent logs and skips.
                masker.add_regex(&hint.value, regexes);
                // A pattern without metacharacters matches exactly itself: printing it proves
                // the regex hint is applied.
                if regex::escape(&hint.value) == hint.value {
                    printable.entry(hint.value.as_str()).or_insert(false);
                }
            } else {
                masker.add_value(&hint.value);
                printable.insert(hint.value.as_str(), true);
            }
        }
        printable.remove("");
        let printable = printable
            .into_iter()
            .map(|(value, base64)| Printable {
                value: value.to_owned(),
                base64,
            })
            .collect();
        JobSecrets {
            values,
            printable,
            masker,
        }
    }

    /// The values a real step's secret lines print.
    pub(crate) fn printable(&self) -> &[Printable] {
        &self.printable
    }

    /// Register a value learnt later (a rotated job token).
    pub(crate) fn add_value(&mut self, value: &str) {
        self.masker.add_value(value);
    }

    /// Mask `line`; returns the text and how many occurrences were replaced.
    pub(crate) fn mask<'a>(&self, line: &'a str) -> (Cow<'a, str>, u32) {
        self.masker.mask(line)
    }
}

/// A secret a real step's line may print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Printable {
    pub(crate) value: String,
    /// Whether the masker also masks its base64 form (a value, not a regex hint); if not, the
    /// line prints it only raw.
    pub(crate) base64: bool,
}

/// Thin adapter over `mask::SecretMasker` with an off switch.
struct Masker {
    inner: Option<SecretMasker>,
}

impl Masker {
    fn new(enabled: bool) -> Masker {
        Masker {
            inner: enabled.then(SecretMasker::new),
        }
    }

    fn add_value(&mut self, value: &str) {
        if let Some(m) = &mut self.inner {
            // A value the masker refuses (over its bounds) stays unmasked; the emulator's leak
            // counter then shows it, which is the honest outcome.
            let _ = m.add_value(value);
        }
    }

    fn add_regex(&mut self, pattern: &str, regexes: &RegexCache) {
        if let Some(m) = &mut self.inner {
            let _ = m.add_shared_regex(pattern, regexes);
        }
    }

    fn mask<'a>(&self, line: &'a str) -> (Cow<'a, str>, u32) {
        match &self.inner {
            Some(m) => m.mask(line),
            None => (Cow::Borrowed(line), 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{MaskHint, VariableValue};

    /// A job message without secrets or hints.
    fn message() -> AgentJobRequestMessage {
        let text = r#"{"messageType": "PipelineAgentJobRequest",
            "plan": {"scopeIdentifier": "s", "planType": "Build", "planId": "p"},
            "timeline": {"id": "t"}, "jobId": "j", "jobDisplayName": "J", "jobName": "j",
            "requestId": 1, "resources": {}}"#;
        serde_json::from_str(text).expect("message")
    }

    /// A job message with one secret variable and the emulator's regex hint.
    fn job_with(secret: &str) -> AgentJobRequestMessage {
        let mut msg = message();
        msg.variables.insert(
            "fleetsim.secret0".into(),
            VariableValue {
                value: secret.into(),
                is_secret: true,
                is_read_only: false,
            },
        );
        msg.mask = vec![MaskHint {
            kind: "regex".into(),
            value: "fss_[A-Za-z0-9]{28}".into(),
        }];
        msg
    }

    // Goal: two jobs of a fleet that carry the same regex hint hold one compiled regex, and
    // each masks its lines byte for byte as a job whose hint was compiled for it alone.
    #[test]
    fn jobs_with_the_same_hint_share_one_compiled_regex() {
        let fleet = RegexCache::new();
        let secrets = ["first-job-secret", "second-job-secret"];
        let jobs: Vec<JobSecrets> = secrets
            .iter()
            .map(|s| JobSecrets::from_message(&job_with(s), true, &fleet))
            .collect();
        assert_eq!(fleet.len(), 1);
        for (secret, job) in secrets.iter().zip(&jobs) {
            let alone = JobSecrets::from_message(&job_with(secret), true, &RegexCache::new());
            for line in [
                format!("echo {secret} fss_0123456789abcdefghijABCDEFGH done"),
                "nothing secret here".to_string(),
                "first-job-secret second-job-secret".to_string(),
            ] {
                assert_eq!(job.mask(&line), alone.mask(&line), "{line}");
            }
        }
        assert_eq!(
            jobs[1]
                .mask("x fss_0123456789abcdefghijABCDEFGH second-job-secret")
                .0,
            "x *** ***"
        );
    }

    // Goal: what real steps print is every secret known by value, once, with base64 only where
    // the masker masks that form: a literal regex hint is printable raw, a pattern is not.
    #[test]
    fn printable_secrets_are_the_values_the_masker_knows() {
        let mut msg = message();
        msg.mask = vec![
            MaskHint {
                kind: "regex".into(),
                value: "literalHint".into(),
            },
            MaskHint {
                kind: "regex".into(),
                value: "ghp_[a-z]+".into(),
            },
            MaskHint {
                kind: "value".into(),
                value: "plainHint".into(),
            },
        ];
        let secrets = JobSecrets::from_message(&msg, true, &RegexCache::new());
        let got: Vec<(&str, bool)> = secrets
            .printable()
            .iter()
            .map(|p| (p.value.as_str(), p.base64))
            .collect();
        assert_eq!(got, [("literalHint", false), ("plainHint", true)]);
    }
}
