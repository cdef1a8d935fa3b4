//! Unit tests of real job messages (steps that are not `FleetsimSynthetic`) against the scripted
//! fake server of `agent::tests`: each step runs for the time its task model draws, prints the
//! drawn lines under the message's own record ids, attaches, completes with a drawn result that
//! merges into the job's, and no secret of the message leaves unmasked.
//!
//! The message is written after the real agent's job-message template (its L1 worker tests):
//! a checkout, a script, a task fleetsim knows nothing of, a regex mask hint, a secret
//! `system.accessToken`, the `SystemVssConnection` endpoint, repositories and fields fleetsim
//! does not read.

use std::collections::BTreeMap;

use rand::Rng as _;

use super::*;
use crate::dist::{DurationDist, NumberDist};
use crate::mask::LeakScanner;
use crate::proto::{TimelineRecord, TimelineRecordState};

const JOB_ID: &str = "3c1fd2a4-77e0-5b1e-9e2c-0f4d2b6e8a11";
const CHECKOUT_ID: &str = "b5a0e6c2-1f3d-5a7b-8c9d-2e4f6a8b0c1d";
const SCRIPT_ID: &str = "7e9d1c3b-5a2f-5e4d-9c8b-1a3f5e7d9b2c";
const OTHER_ID: &str = "0f2e4d6c-8b1a-5c3e-a5d7-9f1b3d5e7a9c";
const TOKEN: &str = "job-access-token-value";
const SYSTEM_TOKEN: &str = "system-access-token-secret";
const HINT: &str = "deployKeySecret";

/// A job message shaped like the real service's, with the third step's condition given.
fn real_message(third_condition: &str) -> AgentJobRequestMessage {
    let text = r#"{
      "mask": [ { "type": "regex", "value": "HINT" } ],
      "steps": [
        { "inputs": { "repository": "self" }, "type": "task",
          "reference": { "id": "6d15af64-176c-496d-b583-fd2ae21d4df4", "name": "Checkout",
                         "version": "1.0.0" },
          "condition": "true", "id": "CHECKOUT_ID", "name": "Checkout",
          "displayName": "Checkout" },
        { "inputs": { "script": "echo building\nmake all" }, "type": "task",
          "reference": { "id": "d0c4ac01-adbe-42b5-845a-b063e9213a8c", "name": "CmdLine",
                         "version": "2.279.1" },
          "id": "SCRIPT_ID", "name": "CmdLine", "displayName": "Build" },
        { "inputs": {}, "type": "task",
          "reference": { "id": "e213ff0f-5d5c-4791-802d-52ea3e7be1f1", "name": "Docker",
                         "version": "2.1.0" },
          "condition": "THIRD", "id": "OTHER_ID", "name": "Docker", "displayName": "Push" }
      ],
      "variables": {
        "system.collectionId": { "value": "4a3e2f1d-0000-4000-8000-000000000001",
                                 "isReadOnly": true },
        "system.jobId": { "value": "JOB_ID", "isReadOnly": true },
        "system.accessToken": { "value": "SYSTEM_TOKEN", "isSecret": true },
        "build.repository.name": { "value": "MyProject", "isReadOnly": true }
      },
      "messageType": "PipelineAgentJobRequest",
      "plan": { "scopeIdentifier": "6302cb6f-c9d9-44c2-ae60-84eff8845059",
                "planType": "Build", "version": 9,
                "planId": "9b8a7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d",
                "planGroup": "Build:6302cb6f:5", "artifactUri": "vstfs:///Build/Build/5",
                "artifactLocation": null,
                "definition": { "id": 2, "name": "MyProject (1)" },
                "owner": { "id": 5, "name": "20261205.1" } },
      "timeline": { "id": "9b8a7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d", "changeId": 5,
                    "location": null },
      "jobId": "JOB_ID", "jobDisplayName": "Job", "jobName": "__default",
      "jobContainer": null, "requestId": 11, "lockedUntil": "0001-01-01T00:00:00",
      "resources": {
        "endpoints": [
          { "data": { "ServerId": "4a3e2f1d-0000-4000-8000-000000000001",
                      "ServerName": "org" },
            "name": "SystemVssConnection", "url": "https://dev.example/org/",
            "authorization": { "parameters": { "AccessToken": "TOKEN" }, "scheme": "OAuth" },
            "isShared": false, "isReady": true }
        ],
        "repositories": [
          { "properties": { "id": "05bbff1a-ac43-4a40-a1c1-99f4e17e61dd", "type": "Git",
                            "name": "MyProject", "ref": "refs/heads/main" },
            "alias": "self", "endpoint": { "name": "SystemVssConnection" } }
        ]
      },
      "workspace": {}
    }"#;
    let text = text
        .replace("JOB_ID", JOB_ID)
        .replace("CHECKOUT_ID", CHECKOUT_ID)
        .replace("SCRIPT_ID", SCRIPT_ID)
        .replace("OTHER_ID", OTHER_ID)
        .replace("SYSTEM_TOKEN", SYSTEM_TOKEN)
        .replace("TOKEN", TOKEN)
        .replace("HINT", HINT)
        .replace("THIRD", third_condition);
    serde_json::from_str(&text).expect("the real message shape parses")
}

fn task(secs: u64, lines_per_s: f64, secret_lines: u32) -> TaskModel {
    TaskModel {
        duration: DurationDist::constant(Duration::from_secs(secs)),
        log_lines_per_s: lines_per_s,
        secret_lines,
        attachment_bytes: NumberDist::constant(0.0),
        failure_rate: 0.0,
        issues_rate: 0.0,
    }
}

/// Checkout 2 s × 40 lines/s, CmdLine 3 s × 10 lines/s with a 2 KiB attachment, anything else
/// 1 s × 5 lines/s; `tweak` adjusts the models.
fn config(tweak: impl FnOnce(&mut StepModel)) -> AgentConfig {
    let mut model = StepModel {
        default: task(1, 5.0, 0),
        tasks: BTreeMap::from([
            ("Checkout".to_string(), task(2, 40.0, 0)),
            (
                "CmdLine".to_string(),
                TaskModel {
                    attachment_bytes: NumberDist::constant(2048.0),
                    ..task(3, 10.0, 0)
                },
            ),
        ]),
    };
    tweak(&mut model);
    AgentConfig {
        steps: Arc::new(model),
        ..modelled()
    }
}

/// Run `msg` on an agent with `config` to its end.
fn run(config: AgentConfig, msg: &AgentJobRequestMessage) -> Rig {
    let mut rig = listening(config);
    answer_poll(&mut rig, job_delivery(msg));
    rig.run_until(SimTime::from_secs(120), &mut holding);
    rig
}

/// Every timeline record update sent, in order.
fn records(rig: &Rig) -> Vec<TimelineRecord> {
    rig.sent
        .iter()
        .filter_map(|s| match &s.request.call {
            ApiRequest::UpdateTimelineRecords { records, .. } => Some(records.value.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The result a record was completed with.
fn completed(rig: &Rig, id: &str) -> Option<TaskResult> {
    records(rig)
        .into_iter()
        .filter(|r| r.id == id && r.state == Some(TimelineRecordState::Completed))
        .find_map(|r| r.result)
}

/// Feed lines per `stepId`, and the record ids the feeds were posted to.
fn feeds(rig: &Rig) -> (BTreeMap<String, Vec<String>>, Vec<String>) {
    let mut lines: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut targets = Vec::new();
    for s in &rig.sent {
        if let ApiRequest::AppendFeed {
            record_id, feed, ..
        } = &s.request.call
        {
            lines
                .entry(feed.step_id.clone())
                .or_default()
                .extend(feed.value.iter().cloned());
            targets.push(record_id.clone());
        }
    }
    (lines, targets)
}

fn job_result(rig: &Rig) -> Option<TaskResult> {
    rig.events.iter().find_map(|e| match e {
        Event::JobFinished { result, .. } => Some(*result),
        _ => None,
    })
}

// Goal: each real step runs for its drawn time and prints its drawn lines under the message's
// own record ids (feeds posted to the job's record, keyed by stepId); the job's record goes
// InProgress then Completed; the attachment goes to the configured step's record.
#[test]
fn real_steps_take_their_time_and_use_the_messages_record_ids() {
    let rig = run(config(|_| {}), &real_message("succeeded()"));
    let log_created: Vec<(SimTime, String)> = rig
        .sent
        .iter()
        .filter_map(|s| match &s.request.call {
            ApiRequest::CreateLog { log, .. } => Some((s.at, log.path.clone())),
            _ => None,
        })
        .collect();
    let paths: Vec<&str> = log_created.iter().map(|(_, p)| p.as_str()).collect();
    let want: Vec<String> = [CHECKOUT_ID, SCRIPT_ID, OTHER_ID]
        .iter()
        .map(|id| format!("logs\\{id}"))
        .collect();
    assert_eq!(paths, want);
    // Each step starts (creates its log) when the one before has run for its drawn time.
    assert_eq!(log_created[1].0 - log_created[0].0, Duration::from_secs(2));
    assert_eq!(log_created[2].0 - log_created[1].0, Duration::from_secs(3));

    let (lines, targets) = feeds(&rig);
    assert!(targets.iter().all(|t| t == JOB_ID), "{targets:?}");
    let counts: Vec<usize> = [CHECKOUT_ID, SCRIPT_ID, OTHER_ID]
        .iter()
        .map(|id| lines.get(*id).map_or(0, Vec::len))
        .collect();
    assert_eq!(counts, [80, 30, 5]);
    let checkout = &lines[CHECKOUT_ID];
    assert_eq!(checkout[0], "##[section]Starting: Checkout");
    assert_eq!(checkout[8], "Syncing repository: self (Git)");
    assert_eq!(checkout[79], "##[section]Finishing: Checkout");
    assert!(lines[SCRIPT_ID].contains(&"echo building".to_string()));
    assert!(lines[OTHER_ID][..2].contains(&"##[section]Starting: Push".to_string()));

    let all = records(&rig);
    let job = all
        .iter()
        .find(|r| r.id == JOB_ID)
        .expect("the job's record");
    assert_eq!(
        (job.kind.as_deref(), job.state),
        (Some("Job"), Some(TimelineRecordState::InProgress))
    );
    for id in [JOB_ID, CHECKOUT_ID, SCRIPT_ID, OTHER_ID] {
        assert_eq!(completed(&rig, id), Some(TaskResult::Succeeded), "{id}");
    }
    let step = all.iter().find(|r| r.id == SCRIPT_ID).unwrap();
    assert_eq!(step.parent_id.as_deref(), Some(JOB_ID));
    assert_eq!(step.name.as_deref(), Some("Build"));
    let attached: Vec<(&str, usize)> = rig
        .sent
        .iter()
        .filter_map(|s| match &s.request.call {
            ApiRequest::PutAttachment {
                record_id, content, ..
            } => Some((record_id.as_str(), content.len())),
            _ => None,
        })
        .collect();
    assert_eq!(attached, [(SCRIPT_ID, 2048)]);
    assert_eq!(job_result(&rig), Some(TaskResult::Succeeded));
    assert_eq!(rig.agent.state(), AgentState::Idle);
}

// Goal: a step drawn as failed fails the job; a later step with the default condition is
// skipped (its notice printed, its record completed `skipped`), one with `always()` runs; the
// job's record and JobCompleted carry `failed`.
#[test]
fn a_failed_step_fails_the_job_and_skips_what_needs_success() {
    let failing = |m: &mut StepModel| {
        if let Some(c) = m.tasks.get_mut("Checkout") {
            c.failure_rate = 1.0;
        }
    };
    let rig = run(config(failing), &real_message("always()"));
    assert_eq!(completed(&rig, CHECKOUT_ID), Some(TaskResult::Failed));
    assert_eq!(completed(&rig, SCRIPT_ID), Some(TaskResult::Skipped));
    assert_eq!(completed(&rig, OTHER_ID), Some(TaskResult::Succeeded));
    assert_eq!(completed(&rig, JOB_ID), Some(TaskResult::Failed));
    assert_eq!(job_result(&rig), Some(TaskResult::Failed));
    let (lines, _) = feeds(&rig);
    assert_eq!(
        lines[SCRIPT_ID],
        [
            "Skipping step due to condition evaluation.",
            "Evaluating: succeeded()",
            "Result: False"
        ]
    );
    let checkout = &lines[CHECKOUT_ID];
    assert_eq!(
        checkout[checkout.len() - 2],
        "##[error]Git fetch failed with exit code: 128"
    );
    let failed = records(&rig)
        .into_iter()
        .find(|r| r.id == CHECKOUT_ID && r.result == Some(TaskResult::Failed))
        .unwrap();
    assert_eq!(failed.error_count, Some(1));
    let completion = rig.sent.iter().find_map(|s| match &s.request.call {
        ApiRequest::PostEvent { event, .. } => Some(event.result),
        _ => None,
    });
    assert_eq!(completion, Some(Some(TaskResult::Failed)));

    // Without always(), nothing after the failure runs.
    let rig = run(config(failing), &real_message(""));
    assert_eq!(completed(&rig, OTHER_ID), Some(TaskResult::Skipped));
    assert_eq!(job_result(&rig), Some(TaskResult::Failed));
}

// Goal: a step drawn with issues makes the job succeededWithIssues, with a warning line and
// count.
#[test]
fn a_step_with_issues_marks_the_job() {
    let rig = run(
        config(|m| m.default.issues_rate = 1.0),
        &real_message("succeeded()"),
    );
    assert_eq!(
        completed(&rig, OTHER_ID),
        Some(TaskResult::SucceededWithIssues)
    );
    assert_eq!(completed(&rig, CHECKOUT_ID), Some(TaskResult::Succeeded));
    assert_eq!(job_result(&rig), Some(TaskResult::SucceededWithIssues));
    let (lines, _) = feeds(&rig);
    assert!(lines[OTHER_ID].contains(&"##[warning]Docker completed with issues.".to_string()));
}

// Goal: with a regex mask hint, a secret variable and the job's AccessToken, secret lines print
// each of them (raw and base64) and none leaves the agent unmasked, in feeds or in logs; with
// masking off the same run leaks them (so the lines really print the secrets).
#[test]
fn real_steps_print_the_messages_secrets_masked() {
    let secretive = |m: &mut StepModel| {
        m.default.secret_lines = 4;
        for t in m.tasks.values_mut() {
            t.secret_lines = 12;
        }
    };
    let values = [TOKEN, SYSTEM_TOKEN, HINT];
    let scanner = LeakScanner::new(values);
    let rig = run(config(secretive), &real_message("succeeded()"));
    let text = sent_text(&rig);
    assert_eq!(scanner.scan(&text), 0, "a secret left the agent:\n{text}");
    for v in values {
        assert!(!text.contains(v) && !text.contains(&STANDARD.encode(v)));
    }
    assert!(text.contains("AUTHORIZATION: bearer ***"), "{text}");
    let masked: u32 = rig
        .events
        .iter()
        .map(|e| match e {
            Event::SecretsMasked { count, .. } => *count,
            _ => 0,
        })
        .sum();
    assert_eq!(
        masked, 24,
        "12 secret lines each in the checkout and the script"
    );

    let leaky = run(
        AgentConfig {
            mask_secrets: false,
            ..config(secretive)
        },
        &real_message("succeeded()"),
    );
    let text = sent_text(&leaky);
    for v in values {
        assert!(
            text.contains(v) || text.contains(&STANDARD.encode(v)),
            "{v} never printed"
        );
    }
}

// Goal: the same seed gives the same real-step run, call for call; synthetic steps draw
// nothing from the agent's RNG (so runs of synthetic jobs replay as before).
#[test]
fn real_steps_are_deterministic_per_seed() {
    let model = |m: &mut StepModel| {
        m.default.duration =
            DurationDist::uniform(Duration::from_millis(500), Duration::from_secs(4));
        m.default.failure_rate = 0.3;
        m.default.issues_rate = 0.3;
    };
    let trace = |rig: &Rig| -> Vec<String> {
        rig.sent
            .iter()
            .map(|s| format!("{} {:?} {:?}", s.at, s.op, s.request))
            .collect()
    };
    let a = run(config(model), &real_message("always()"));
    let b = run(config(model), &real_message("always()"));
    assert_eq!(trace(&a), trace(&b));

    let mut rng = rng::stream(5, StreamKind::Agent, 0);
    let mut untouched = rng.clone();
    let msg = job_message(1_000, 10, 1, false);
    let _ = job::JobRun::start(
        &job::JobCtx {
            config: &modelled(),
            agent: 0,
            pool_id: 1,
            listener: None,
            epoch_unix_ms: 0,
        },
        SimTime::ZERO,
        msg,
        &mut rng,
    );
    assert_eq!(rng.random::<u64>(), untouched.random::<u64>());
}
