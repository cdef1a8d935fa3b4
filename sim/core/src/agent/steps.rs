//! The work of a real task step (Checkout, CmdLine, Bash, …), which a virtual agent cannot run:
//! its run time, line count, attachment and result drawn from the scenario's
//! [`StepModel`](super::StepModel), the lines it prints (shaped like the task's own output: the
//! `##[section]Starting:` banner, the task header, the task's kind of output, an
//! `##[error]`/`##[warning]` line when it fails or has issues, `##[section]Finishing:`), and the
//! step conditions the real `StepsRunner` evaluates before each step.
//!
//! Every function here is pure over its arguments and the caller's RNG. This module never
//! sends, schedules or masks anything: `job` does that with what it returns.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::Rng as _;

use super::config::{CHECKOUT_TASK_NAME, TaskModel};
use super::masking::Printable;
use crate::proto::{JobStep, SYNTHETIC_TASK_NAME, TaskResult};

/// The checkout task's id in real job messages (`reference.id`).
pub(crate) const CHECKOUT_TASK_ID: &str = "6d15af64-176c-496d-b583-fd2ae21d4df4";

/// A drawn step runs at most this long, whatever a long-tailed distribution draws (a bound on
/// one job's time on an agent; the real service cancels jobs after 60 minutes by default).
pub(crate) const STEP_DURATION_MAX: Duration = Duration::from_secs(24 * 3600);

/// Lines a step skipped by its condition prints (the skip notice and the condition's trace).
pub(crate) const SKIPPED_LINES: u32 = 3;

/// Which real output a step's lines look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Look {
    /// fleetsim's own task: numbered filler lines (`job::synthetic_line`).
    Synthetic,
    /// The checkout task: git's fetch output.
    Checkout,
    /// CmdLine, Bash, PowerShell, ShellScript: the generated script and its output.
    Script,
    /// PublishTestResults: result files read and published.
    TestResults,
    /// Any other task: a task header and generic build output.
    Generic,
    /// A step whose condition was false: the skip notice only.
    Skipped,
}

/// A step condition, as far as fleetsim evaluates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Condition {
    /// `succeeded()`, the default: the job has neither failed nor been canceled.
    Succeeded,
    /// `failed()`: an earlier step failed.
    Failed,
    /// `succeededOrFailed()`: the job has not been canceled.
    SucceededOrFailed,
    /// `always()` or `true`.
    Always,
    /// `canceled()`.
    Canceled,
    /// `false`.
    Never,
}

impl Condition {
    /// Read a step's `condition`. Expressions beyond the status functions (`and(…)`,
    /// `eq(variables[…])`, …) read as `succeeded()`, the real default: fleetsim has no
    /// variables to evaluate them against.
    pub(crate) fn parse(text: &str) -> Condition {
        let compact: String = text
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        match compact.as_str() {
            "failed()" => Condition::Failed,
            "succeededorfailed()" => Condition::SucceededOrFailed,
            "always()" | "true" => Condition::Always,
            "canceled()" | "cancelled()" => Condition::Canceled,
            "false" => Condition::Never,
            _ => Condition::Succeeded,
        }
    }

    /// The condition as fleetsim evaluated it, for the skip notice.
    pub(crate) fn text(self) -> &'static str {
        match self {
            Condition::Succeeded => "succeeded()",
            Condition::Failed => "failed()",
            Condition::SucceededOrFailed => "succeededOrFailed()",
            Condition::Always => "always()",
            Condition::Canceled => "canceled()",
            Condition::Never => "false",
        }
    }

    /// Whether a step with this condition runs when the job's result so far is `job`.
    pub(crate) fn runs(self, job: TaskResult) -> bool {
        match self {
            Condition::Succeeded => {
                matches!(job, TaskResult::Succeeded | TaskResult::SucceededWithIssues)
            }
            Condition::Failed => job == TaskResult::Failed,
            Condition::SucceededOrFailed => job != TaskResult::Canceled,
            Condition::Always => true,
            Condition::Canceled => job == TaskResult::Canceled,
            Condition::Never => false,
        }
    }
}

/// The real worker's `MergeTaskResults`: the worse of two results, where Canceled, Skipped and
/// Abandoned stick once reached.
pub(crate) fn merge_results(current: TaskResult, coming: TaskResult) -> TaskResult {
    if current > TaskResult::Failed || coming <= current {
        current
    } else {
        coming
    }
}

/// How a step's lines look, from its task.
pub(crate) fn look(step: &JobStep) -> Look {
    let name = step.reference.name.as_str();
    let is = |n: &str| name.eq_ignore_ascii_case(n);
    if name == SYNTHETIC_TASK_NAME {
        Look::Synthetic
    } else if is_checkout(step) {
        Look::Checkout
    } else if is("CmdLine") || is("Bash") || is("PowerShell") || is("ShellScript") {
        Look::Script
    } else if is("PublishTestResults") {
        Look::TestResults
    } else {
        Look::Generic
    }
}

/// The name a step's task model is looked up by: the checkout task is `Checkout` whatever the
/// message calls it, every other task its `reference.name`.
pub(crate) fn model_key(step: &JobStep) -> &str {
    if is_checkout(step) {
        CHECKOUT_TASK_NAME
    } else {
        &step.reference.name
    }
}

fn is_checkout(step: &JobStep) -> bool {
    step.reference.id.eq_ignore_ascii_case(CHECKOUT_TASK_ID)
        || step.reference.name.eq_ignore_ascii_case(CHECKOUT_TASK_NAME)
}

/// The detail a step's header shows: the repository a checkout syncs, the first line of a
/// script (at most 200 characters), nothing otherwise.
pub(crate) fn detail(step: &JobStep, look: Look) -> String {
    let input = |key: &str| step.inputs.get(key).map_or("", String::as_str);
    match look {
        Look::Checkout => match input("repository") {
            "" => "self".to_string(),
            repo => repo.to_string(),
        },
        Look::Script => {
            let script = match input("script") {
                "" => input("inlineScript"),
                s => s,
            };
            let first = script.lines().next().unwrap_or("");
            first.chars().take(200).collect()
        }
        _ => String::new(),
    }
}

/// One step's work, drawn from its task model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Drawn {
    pub(crate) duration: Duration,
    pub(crate) log_lines: u32,
    pub(crate) secret_lines: u32,
    pub(crate) attachment_bytes: u64,
    pub(crate) result: TaskResult,
}

/// Draw a step's work from `model`: always the same draws in the same order (duration,
/// attachment size, result), so one step's model never shifts another step's draws.
pub(crate) fn draw(model: &TaskModel, lines_max: u32, rng: &mut crate::rng::Rng) -> Drawn {
    let duration = model.duration.sample(rng).min(STEP_DURATION_MAX);
    let lines = (duration.as_secs_f64() * model.log_lines_per_s).round();
    // `as` saturates: a negative or NaN product reads as 0 lines.
    let log_lines = (lines as u64).min(u64::from(lines_max)) as u32;
    let attachment_bytes = model.attachment_bytes.sample(rng).round() as u64;
    let u: f64 = rng.random();
    let result = if u < model.failure_rate {
        TaskResult::Failed
    } else if u < model.failure_rate + model.issues_rate {
        TaskResult::SucceededWithIssues
    } else {
        TaskResult::Succeeded
    };
    Drawn {
        duration,
        log_lines,
        secret_lines: model.secret_lines.min(log_lines),
        attachment_bytes,
        result,
    }
}

/// What a real step's lines are made of.
pub(crate) struct StepText<'a> {
    pub(crate) look: Look,
    /// The step's display name.
    pub(crate) display: &'a str,
    /// The task's name (`reference.name`).
    pub(crate) task: &'a str,
    /// The task's version (`reference.version`).
    pub(crate) version: &'a str,
    /// See [`detail`]; for a skipped step, its condition.
    pub(crate) detail: &'a str,
    /// How the step ends (an error or warning line before the last one).
    pub(crate) result: TaskResult,
    /// Lines in all.
    pub(crate) total: u32,
    /// Lines that print a secret (only body lines do; fewer if the body is shorter).
    pub(crate) secret_lines: u32,
}

/// Which part of a step's output line `k` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Header(u32),
    Body { index: u32, secret: Option<u64> },
    Issue,
    Finishing,
}

impl StepText<'_> {
    fn header_len(&self) -> u32 {
        match self.look {
            Look::Checkout => 9,
            Look::Script => 13,
            Look::TestResults | Look::Generic => 8,
            Look::Synthetic | Look::Skipped => 0,
        }
    }

    fn has_issue(&self) -> bool {
        matches!(
            self.result,
            TaskResult::Failed | TaskResult::SucceededWithIssues
        )
    }

    /// The layout, from the ends inwards: `##[section]Finishing:` is the last line, the issue
    /// line (if any) the one before, the header the first lines, the body what is left; secret
    /// lines are spread evenly over the body (body line b prints one when
    /// ⌊(b+1)·s/n⌋ > ⌊b·s/n⌋), and the secret's ordinal says which form it prints.
    fn part(&self, k: u32) -> Part {
        let footer = (1 + u32::from(self.has_issue())).min(self.total);
        let header = self.header_len().min(self.total - footer);
        let body = self.total - footer - header;
        if k < header {
            return Part::Header(k);
        }
        if k >= header + body {
            return if k + 1 == self.total {
                Part::Finishing
            } else {
                Part::Issue
            };
        }
        let b = u64::from(k - header);
        let (s, n) = (u64::from(self.secret_lines.min(body)), u64::from(body));
        let ordinal = (b + 1) * s / n;
        let secret = (ordinal > b * s / n).then_some(ordinal);
        Part::Body {
            index: k - header,
            secret,
        }
    }

    /// Line `k` (0-based) of the step. `secrets` are the job's printable secrets; a secret line
    /// prints one of them, raw on odd ordinals and base64 on even ones (if the masker knows
    /// that form), so the masker is exercised on both forms.
    pub(crate) fn line(&self, k: u32, secrets: &[Printable], rng: &mut crate::rng::Rng) -> String {
        if self.look == Look::Skipped {
            return match k {
                0 => "Skipping step due to condition evaluation.".to_string(),
                1 => format!("Evaluating: {}", self.detail),
                _ => "Result: False".to_string(),
            };
        }
        match self.part(k) {
            Part::Header(i) => self.header(i, rng),
            Part::Body {
                index,
                secret: Some(ordinal),
            } if !secrets.is_empty() => {
                let secret = &secrets[rng.random_range(0..secrets.len())];
                if !ordinal.is_multiple_of(2) || !secret.base64 {
                    self.secret_line(&secret.value, false)
                } else {
                    self.secret_line(&STANDARD.encode(&secret.value), true)
                }
                .unwrap_or_else(|| self.body(index, rng))
            }
            Part::Body { index, .. } => self.body(index, rng),
            Part::Issue => self.issue(),
            Part::Finishing => format!("##[section]Finishing: {}", self.display),
        }
    }

    fn header(&self, i: u32, rng: &mut crate::rng::Rng) -> String {
        const RULE: &str =
            "==============================================================================";
        let title = title(self.task);
        match (self.look, i) {
            (_, 0) => format!("##[section]Starting: {}", self.display),
            (_, 1 | 7) => RULE.to_string(),
            (Look::Checkout, 2) => "Task         : Get sources".to_string(),
            (Look::Checkout, 3) => "Description  : Get sources from a repository. Supports Git, \
                                    TfsVC, and SVN repositories."
                .to_string(),
            (Look::Checkout, 5) => "Author       : Microsoft".to_string(),
            (Look::Checkout, 6) => {
                "Help         : [More Information](https://go.microsoft.com/fwlink/?LinkId=798199)"
                    .to_string()
            }
            (Look::Checkout, 8) => format!("Syncing repository: {} (Git)", self.detail),
            (_, 2) => format!("Task         : {title}"),
            (_, 3) => format!("Description  : Run the {title} task"),
            (_, 4) => format!("Version      : {}", self.version),
            (_, 5) => "Author       : Microsoft Corporation".to_string(),
            (_, 6) => {
                "Help         : https://docs.microsoft.com/azure/devops/pipelines/tasks".to_string()
            }
            (_, 8) => "Generating script.".to_string(),
            (_, 9) => "Script contents:".to_string(),
            (_, 10) => self.detail.to_string(),
            (_, 11) => "========================== Starting Command Output \
                        ==========================="
                .to_string(),
            _ => format!(
                "/usr/bin/bash --noprofile --norc /home/vsts/work/_temp/{:08x}.sh",
                rng.random::<u32>()
            ),
        }
    }

    fn body(&self, index: u32, rng: &mut crate::rng::Rng) -> String {
        const NOUNS: [&str; 6] = ["core", "api", "cli", "codec", "server", "client"];
        let noun = NOUNS[rng.random_range(0..NOUNS.len())];
        let n: u32 = rng.random_range(1..10_000);
        let p = rng.random_range(0..=100u32);
        match (self.look, index % 3) {
            (Look::Checkout, 0) => format!("remote: Found {n} objects to send. ({} ms)", p + 3),
            (Look::Checkout, 1) => format!(
                "Receiving objects: {p:>3}% ({}/{n}), {} KiB | {}.{} MiB/s",
                n * p / 100,
                n / 4 + p,
                p / 10,
                n % 10
            ),
            (Look::Checkout, _) => format!("Resolving deltas: {p:>3}% ({}/{n})", n * p / 100),
            (Look::Script, 0) => format!("[{index}] Compiling {noun} v0.{}.{}", p / 10, n % 100),
            (Look::Script, 1) => format!("test {noun}::tests::case_{n} ... ok"),
            (Look::Script, _) => format!("   Finished {noun} in {}.{:02}s", p / 10, n % 100),
            (Look::TestResults, 0) => format!(
                "Reading test results from file '/home/vsts/work/1/s/\
                 TestResults/TEST-{noun}-{n}.xml'"
            ),
            (Look::TestResults, 1) => format!("Test results remaining: {p}. Test run id: {n}"),
            (Look::TestResults, _) => format!("Published test results for {noun} ({n} tests)"),
            _ => format!(
                "{} {noun} {n}",
                ["Processing", "Checking", "Writing"][index as usize % 3]
            ),
        }
    }

    /// A line that prints `shown` (a secret or its base64 form) the way the task would.
    fn secret_line(&self, shown: &str, base64: bool) -> Option<String> {
        Some(match (self.look, base64) {
            (Look::Checkout, false) => format!(
                "git -c http.extraheader=\"AUTHORIZATION: bearer {shown}\" fetch --force --tags \
                 --prune --prune-tags --progress --no-recurse-submodules origin"
            ),
            (Look::Checkout, true) => format!(
                "git -c http.extraheader=\"AUTHORIZATION: basic {shown}\" fetch --force --tags \
                 --prune --prune-tags --progress --no-recurse-submodules origin"
            ),
            (Look::Script, false) => format!("+ export NPM_TOKEN={shown}"),
            (Look::Script, true) => format!("+ export NPM_TOKEN_B64={shown}"),
            (Look::Synthetic | Look::Skipped, _) => return None,
            (_, false) => format!("Using credential {shown}"),
            (_, true) => format!("Using credential (base64) {shown}"),
        })
    }

    fn issue(&self) -> String {
        let title = title(self.task);
        match (self.result, self.look) {
            (TaskResult::Failed, Look::Checkout) => {
                "##[error]Git fetch failed with exit code: 128".to_string()
            }
            (TaskResult::Failed, Look::Script) => {
                format!("##[error]{title} exited with code '1'.")
            }
            (TaskResult::Failed, _) => format!("##[error]{title} failed."),
            _ => format!("##[warning]{title} completed with issues."),
        }
    }
}

/// How a task's header names it.
fn title(task: &str) -> &str {
    let is = |n: &str| task.eq_ignore_ascii_case(n);
    if is("CmdLine") {
        "Command line"
    } else if is("PublishTestResults") {
        "Publish Test Results"
    } else {
        task
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::{DurationDist, NumberDist};
    use crate::proto::TaskReference;
    use crate::rng::{self, StreamKind};

    fn step(name: &str, id: &str) -> JobStep {
        JobStep {
            kind: "task".into(),
            reference: TaskReference {
                id: id.into(),
                name: name.into(),
                version: "2.0.0".into(),
            },
            id: "r".into(),
            name: name.into(),
            display_name: name.into(),
            ..Default::default()
        }
    }

    fn text(look: Look, result: TaskResult, total: u32, secret_lines: u32) -> StepText<'static> {
        StepText {
            look,
            display: "Build",
            task: "CmdLine",
            version: "2.0.0",
            detail: "make all",
            result,
            total,
            secret_lines,
        }
    }

    // Goal: the checkout task is known by its id or its name, script tasks by name, and every
    // other task is generic; the model key of a checkout is `Checkout` whatever its name.
    #[test]
    fn looks_follow_the_task() {
        assert_eq!(look(&step("Checkout", "x")), Look::Checkout);
        let renamed = step("GetSources", CHECKOUT_TASK_ID);
        assert_eq!(look(&renamed), Look::Checkout);
        assert_eq!(model_key(&renamed), "Checkout");
        assert_eq!(look(&step("bash", "x")), Look::Script);
        assert_eq!(look(&step("PublishTestResults", "x")), Look::TestResults);
        assert_eq!(look(&step("Docker", "x")), Look::Generic);
        assert_eq!(look(&step(SYNTHETIC_TASK_NAME, "x")), Look::Synthetic);
        assert_eq!(model_key(&step("Docker", "x")), "Docker");
    }

    // Goal: the status functions are evaluated as the real StepsRunner does, and any other
    // expression reads as the default, succeeded().
    #[test]
    fn conditions_follow_the_job_result() {
        use TaskResult::*;
        let cases = [
            ("", [true, true, false, false]),
            ("succeeded()", [true, true, false, false]),
            ("Failed()", [false, false, true, false]),
            ("succeededOrFailed()", [true, true, true, false]),
            ("always()", [true, true, true, true]),
            ("true", [true, true, true, true]),
            ("canceled()", [false, false, false, true]),
            ("false", [false, false, false, false]),
            (
                "and(succeeded(), eq(variables['x'], 'y'))",
                [true, true, false, false],
            ),
        ];
        for (text, want) in cases {
            let c = Condition::parse(text);
            let got = [Succeeded, SucceededWithIssues, Failed, Canceled].map(|r| c.runs(r));
            assert_eq!(got, want, "{text:?}");
        }
    }

    // Goal: results merge to the worse one, and Canceled sticks (TaskResultUtil).
    #[test]
    fn results_merge_to_the_worst() {
        use TaskResult::*;
        assert_eq!(
            merge_results(Succeeded, SucceededWithIssues),
            SucceededWithIssues
        );
        assert_eq!(merge_results(SucceededWithIssues, Failed), Failed);
        assert_eq!(merge_results(Failed, SucceededWithIssues), Failed);
        assert_eq!(merge_results(Canceled, Failed), Canceled);
    }

    // Goal: a draw follows the model (lines = duration × rate, results by rate) and is bounded.
    #[test]
    fn draws_follow_the_model_and_are_bounded() {
        let mut rng = rng::stream(3, StreamKind::Agent, 0);
        let model = TaskModel {
            duration: DurationDist::constant(Duration::from_secs(4)),
            log_lines_per_s: 25.0,
            secret_lines: 500,
            attachment_bytes: NumberDist::constant(1024.0),
            failure_rate: 1.0,
            issues_rate: 0.0,
        };
        let d = draw(&model, 100_000, &mut rng);
        assert_eq!(
            d,
            Drawn {
                duration: Duration::from_secs(4),
                log_lines: 100,
                secret_lines: 100,
                attachment_bytes: 1024,
                result: TaskResult::Failed,
            }
        );
        let issues = TaskModel {
            failure_rate: 0.0,
            issues_rate: 1.0,
            duration: DurationDist::constant(Duration::from_secs(10 * 24 * 3600)),
            ..model
        };
        let d = draw(&issues, 100_000, &mut rng);
        assert_eq!(d.result, TaskResult::SucceededWithIssues);
        assert_eq!(d.duration, STEP_DURATION_MAX);
        assert_eq!(d.log_lines, 100_000);
    }

    // Goal: a failing script step opens with the task banner and header, prints its script,
    // ends with an error line then `Finishing:`, and prints exactly the asked secret lines in
    // both forms inside the body.
    #[test]
    fn script_lines_look_like_the_task_and_carry_the_secrets() {
        let t = text(Look::Script, TaskResult::Failed, 40, 4);
        let mut rng = rng::stream(1, StreamKind::Agent, 0);
        let secrets = vec![Printable {
            value: "s3cr3t-value".to_string(),
            base64: true,
        }];
        let lines: Vec<String> = (0..40).map(|k| t.line(k, &secrets, &mut rng)).collect();
        assert_eq!(lines[0], "##[section]Starting: Build");
        assert_eq!(lines[2], "Task         : Command line");
        assert_eq!(lines[8], "Generating script.");
        assert_eq!(lines[10], "make all");
        assert_eq!(lines[38], "##[error]Command line exited with code '1'.");
        assert_eq!(lines[39], "##[section]Finishing: Build");
        let raw = lines.iter().filter(|l| l.contains("s3cr3t-value")).count();
        let b64 = STANDARD.encode("s3cr3t-value");
        let encoded = lines.iter().filter(|l| l.contains(&b64)).count();
        assert_eq!((raw, encoded), (2, 2));
        assert!(lines[13..38].iter().all(|l| !l.starts_with("##[")));
    }

    // Goal: short steps keep the last line and drop header lines first; no secrets fit in a
    // step without body lines; a skipped step prints the skip notice.
    #[test]
    fn short_steps_keep_their_ends() {
        let mut rng = rng::stream(1, StreamKind::Agent, 0);
        let secrets = vec![Printable {
            value: "s3cr3t-value".to_string(),
            base64: true,
        }];
        let one = text(Look::Checkout, TaskResult::Failed, 1, 1);
        assert_eq!(
            one.line(0, &secrets, &mut rng),
            "##[section]Finishing: Build"
        );
        let three = text(Look::Checkout, TaskResult::Succeeded, 3, 3);
        let lines: Vec<String> = (0..3).map(|k| three.line(k, &secrets, &mut rng)).collect();
        assert_eq!(lines[0], "##[section]Starting: Build");
        assert!(lines.iter().all(|l| !l.contains("s3cr3t")), "{lines:?}");
        let skipped = StepText {
            look: Look::Skipped,
            detail: "succeeded()",
            ..text(Look::Skipped, TaskResult::Skipped, SKIPPED_LINES, 0)
        };
        assert_eq!(
            skipped.line(1, &secrets, &mut rng),
            "Evaluating: succeeded()"
        );
    }
}
