//! The plan hub: timeline records, live-console feed, logs, attachments and events, reachable
//! only with the job token of the plan's active job; and the secret-leak scan.
//!
//! Storage is bounded per plan: at most `max_records_per_plan` records and `max_logs_per_plan`
//! logs (beyond them a typed 429, no state change), at most `max_record_bytes_per_plan` of
//! timeline records and `max_plan_name_bytes` per log path or attachment name (beyond them a
//! typed 400 that names the field and the limit), and at most `max_plan_bytes` of feed, log
//! and attachment content (beyond it content is scanned and counted but not stored, and the
//! agent still gets a success: a full store is the emulator's limit, not the agent's fault).
//! Records, log paths and attachment names count in the plan's stored bytes too, with a fixed
//! cost per stored item, so even empty lines or records are paid for. The plans of finished
//! jobs share `max_finished_plan_bytes` (`jobs::close` forgets the oldest past it).
//! Every feed line and log upload is scanned for the job's secret values and their base64
//! forms; hits add to `leaked_secrets`. Stored text is kept as the agent sent it and is never
//! printed by the emulator.

use std::collections::BTreeMap;

use super::Server;
use super::jobs::JobState;
use crate::SimTime;
use crate::api::{ApiError, ApiResponse, Credential, ErrorKind, PlanScope};
use crate::proto::{
    EVENT_JOB_COMPLETED, JobEvent, ListOf, TaskAttachment, TaskLog, TaskLogCreate, TaskResult,
    TimelineRecord, TimelineRecordFeedLinesWrapper,
};

/// Lines per feed batch the real agent never exceeds; larger batches are refused.
const FEED_LINES_MAX: usize = 1000;
/// What one stored item (feed line, record, log, attachment) costs beside its text: the
/// bookkeeping of a `String` or struct in its container, rounded up.
const ITEM_BYTES: usize = 64;

/// What one plan stored.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub(super) struct PlanStore {
    pub records: BTreeMap<String, TimelineRecord>,
    pub logs: Vec<StoredLog>,
    pub feed: Vec<String>,
    pub feed_lines: u64,
    pub attachments: Vec<StoredAttachment>,
    pub events: u32,
    /// Bytes stored so far: content (bounded by `max_plan_bytes`), plus records, log paths
    /// and attachment names with their per-item cost.
    pub stored_bytes: usize,
    /// The records' share of `stored_bytes` (bounded by `max_record_bytes_per_plan`).
    pub record_bytes: usize,
    /// Content bytes received but not stored because the plan's store was full.
    pub dropped_bytes: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct StoredLog {
    pub path: String,
    pub content: Vec<u8>,
    pub line_count: u64,
    pub created_on: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct StoredAttachment {
    pub kind: String,
    pub name: String,
    pub bytes: u64,
}

/// The parts of an attachment upload.
pub(super) struct AttachmentPut {
    pub timeline_id: String,
    pub record_id: String,
    pub kind: String,
    pub name: String,
    pub content: Vec<u8>,
}

impl PlanStore {
    /// Room for `n` more content bytes? Past the bound, count and drop.
    fn admit(&mut self, n: usize, max: usize) -> bool {
        if self.stored_bytes.saturating_add(n) <= max {
            self.stored_bytes += n;
            true
        } else {
            self.dropped_bytes += n as u64;
            false
        }
    }
}

/// What a timeline record costs to store: its text plus the per-item cost.
fn record_bytes(r: &TimelineRecord) -> usize {
    let text = [
        &r.parent_id,
        &r.kind,
        &r.name,
        &r.start_time,
        &r.finish_time,
        &r.worker_name,
    ];
    ITEM_BYTES
        + r.id.len()
        + text
            .iter()
            .map(|t| t.as_ref().map_or(0, String::len))
            .sum::<usize>()
}

/// `field` within `max` bytes (`limits.max_plan_name_bytes`), or the 400 that names it.
fn check_name(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.len() > max {
        return Err(super::too_large(
            field,
            value.len(),
            "bytes",
            max,
            "max_plan_name_bytes",
        ));
    }
    Ok(())
}

impl Server {
    /// The active job of `plan` that `cred`'s job token may touch.
    fn plan_job(&self, now: SimTime, cred: &Credential, plan: &PlanScope) -> Result<u64, ApiError> {
        if !self.plans.contains_key(&plan.plan_id) && matches!(cred, Credential::Bearer(_)) {
            // Authenticate first so a stranger cannot probe which plans exist.
            self.job_for_plan(now, cred, &plan.plan_id)?;
        }
        let request = self.job_for_plan(now, cred, &plan.plan_id)?;
        match self.jobs.get(&request) {
            Some(job) if matches!(job.state, JobState::Active { .. }) => Ok(request),
            _ => Err(ApiError::new(
                ErrorKind::PlanNotFound,
                "the plan has no active job",
            )),
        }
    }

    /// Scan `text` with the job's leak scanner, if scanning is on.
    fn scan(&mut self, request: u64, text: &str) {
        if !self.cfg.secret_scan {
            return;
        }
        let hits = self
            .jobs
            .get(&request)
            .and_then(|j| j.scanner.as_ref())
            .map_or(0, |s| s.scan(text));
        self.counters.leaked_secrets += u64::from(hits);
    }

    pub(super) fn update_records(
        &mut self,
        now: SimTime,
        cred: &Credential,
        plan: &PlanScope,
        timeline_id: &str,
        records: ListOf<TimelineRecord>,
    ) -> Result<ApiResponse, ApiError> {
        let request = self.plan_job(now, cred, plan)?;
        let max = self.cfg.limits.max_records_per_plan;
        let max_bytes = self.cfg.limits.max_record_bytes_per_plan;
        self.journal.job(request);
        let job = self.jobs.get_mut(&request).ok_or_else(plan_gone)?;
        if job.timeline_id != timeline_id {
            return Err(ApiError::new(
                ErrorKind::PlanNotFound,
                "no such timeline in this plan",
            ));
        }
        let plan = &mut job.plan;
        // The records as they would be after the update, merged aside so a refusal changes
        // nothing.
        let mut merged: BTreeMap<&str, TimelineRecord> = BTreeMap::new();
        for record in &records.value {
            let stored = merged
                .entry(record.id.as_str())
                .or_insert_with(|| plan.records.get(&record.id).cloned().unwrap_or_default());
            merge_record(stored, record);
        }
        let new = merged
            .keys()
            .filter(|id| !plan.records.contains_key(**id))
            .count();
        if plan.records.len() + new > max {
            return Err(Self::throttled("timeline records for this plan", max));
        }
        let old_bytes: usize = merged
            .keys()
            .filter_map(|id| plan.records.get(*id))
            .map(record_bytes)
            .sum();
        let new_bytes: usize = merged.values().map(record_bytes).sum();
        let total = plan.record_bytes.saturating_sub(old_bytes) + new_bytes;
        if total > max_bytes {
            return Err(super::too_large(
                "the timeline records of this plan",
                total,
                "bytes",
                max_bytes,
                "max_record_bytes_per_plan",
            ));
        }
        plan.stored_bytes = plan.stored_bytes.saturating_sub(plan.record_bytes) + total;
        plan.record_bytes = total;
        for (id, record) in merged {
            if let Some(stored) = plan.records.get_mut(id) {
                *stored = record;
            } else {
                plan.records.insert(id.to_string(), record);
            }
        }
        let updated = records
            .value
            .iter()
            .filter_map(|r| plan.records.get(&r.id).cloned())
            .collect();
        Ok(ApiResponse::TimelineRecords(ListOf::new(updated)))
    }

    pub(super) fn append_feed(
        &mut self,
        now: SimTime,
        cred: &Credential,
        plan: &PlanScope,
        _timeline_id: &str,
        _record_id: &str,
        feed: TimelineRecordFeedLinesWrapper,
    ) -> Result<ApiResponse, ApiError> {
        let request = self.plan_job(now, cred, plan)?;
        if feed.value.len() > FEED_LINES_MAX {
            return Err(ApiError::new(
                ErrorKind::BadRequest,
                format!("a feed batch holds at most {FEED_LINES_MAX} lines"),
            ));
        }
        let max_line = self.cfg.limits.max_feed_line_bytes;
        if let Some((i, line)) = feed
            .value
            .iter()
            .enumerate()
            .find(|(_, l)| l.len() > max_line)
        {
            return Err(super::too_large(
                &format!("feed line {i}"),
                line.len(),
                "bytes",
                max_line,
                "max_feed_line_bytes",
            ));
        }
        for line in &feed.value {
            self.scan(request, line);
        }
        let max = self.cfg.limits.max_plan_bytes;
        self.journal.job(request);
        let job = self.jobs.get_mut(&request).ok_or_else(plan_gone)?;
        job.plan.feed_lines += feed.value.len() as u64;
        for line in feed.value {
            if job.plan.admit(ITEM_BYTES + line.len(), max) {
                job.plan.feed.push(line);
            }
        }
        Ok(ApiResponse::Ok)
    }

    pub(super) fn create_log(
        &mut self,
        now: SimTime,
        cred: &Credential,
        plan: &PlanScope,
        log: TaskLogCreate,
    ) -> Result<ApiResponse, ApiError> {
        let request = self.plan_job(now, cred, plan)?;
        let max = self.cfg.limits.max_logs_per_plan;
        check_name("path", &log.path, self.cfg.limits.max_plan_name_bytes)?;
        let created_on = self.wall(now);
        self.journal.job(request);
        let job = self.jobs.get_mut(&request).ok_or_else(plan_gone)?;
        if job.plan.logs.len() >= max {
            return Err(Self::throttled("logs for this plan", max));
        }
        // Paid for whether or not content still fits: the count and the path are bounded.
        job.plan.stored_bytes += ITEM_BYTES + log.path.len() + created_on.len();
        job.plan.logs.push(StoredLog {
            path: log.path,
            content: Vec::new(),
            line_count: 0,
            created_on,
        });
        let id = job.plan.logs.len() as u64;
        Ok(ApiResponse::Log(self.log_view(request, &plan.plan_id, id)))
    }

    pub(super) fn append_log(
        &mut self,
        now: SimTime,
        cred: &Credential,
        plan: &PlanScope,
        log_id: u64,
        content: &[u8],
    ) -> Result<ApiResponse, ApiError> {
        let request = self.plan_job(now, cred, plan)?;
        let index = log_index(&self.jobs[&request].plan, log_id)?;
        self.scan(request, &String::from_utf8_lossy(content));
        let max = self.cfg.limits.max_plan_bytes;
        self.journal.job(request);
        let job = self.jobs.get_mut(&request).ok_or_else(plan_gone)?;
        let lines = content.iter().filter(|&&b| b == b'\n').count() as u64
            + u64::from(!content.is_empty() && !content.ends_with(b"\n"));
        let admitted = job.plan.admit(content.len(), max);
        let log = &mut job.plan.logs[index];
        log.line_count += lines;
        if admitted {
            log.content.extend_from_slice(content);
        }
        Ok(ApiResponse::Log(self.log_view(
            request,
            &plan.plan_id,
            log_id,
        )))
    }

    pub(super) fn put_attachment(
        &mut self,
        now: SimTime,
        cred: &Credential,
        plan: &PlanScope,
        att: AttachmentPut,
    ) -> Result<ApiResponse, ApiError> {
        let request = self.plan_job(now, cred, plan)?;
        let max = self.cfg.limits.max_logs_per_plan;
        let max_name = self.cfg.limits.max_plan_name_bytes;
        check_name("type", &att.kind, max_name)?;
        check_name("name", &att.name, max_name)?;
        self.journal.job(request);
        let job = self.jobs.get_mut(&request).ok_or_else(plan_gone)?;
        if job.plan.attachments.len() >= max {
            return Err(Self::throttled("attachments for this plan", max));
        }
        job.plan.stored_bytes += ITEM_BYTES + att.kind.len() + att.name.len();
        // Attachments are counted, not kept: they are synthetic filler bytes, and keeping them
        // would eat the plan's storage budget for logs.
        job.plan.attachments.push(StoredAttachment {
            kind: att.kind.clone(),
            name: att.name.clone(),
            bytes: att.content.len() as u64,
        });
        Ok(ApiResponse::Attachment(TaskAttachment {
            kind: att.kind,
            name: att.name,
            record_id: att.record_id,
            timeline_id: att.timeline_id,
        }))
    }

    pub(super) fn post_event(
        &mut self,
        now: SimTime,
        cred: &Credential,
        plan: &PlanScope,
        event: JobEvent,
    ) -> Result<ApiResponse, ApiError> {
        let request = self.plan_job(now, cred, plan)?;
        self.journal.job(request);
        let job = self.jobs.get_mut(&request).ok_or_else(plan_gone)?;
        if event.name != EVENT_JOB_COMPLETED {
            job.plan.events = job.plan.events.saturating_add(1);
            return Ok(ApiResponse::Ok);
        }
        if !event.job_id.eq_ignore_ascii_case(&job.job_id)
            || (event.request_id != 0 && event.request_id != request)
        {
            return Err(ApiError::new(
                ErrorKind::BadRequest,
                "the JobCompleted event names another job of this plan",
            ));
        }
        job.plan.events = job.plan.events.saturating_add(1);
        self.finish(now, request, event.result.unwrap_or(TaskResult::Succeeded));
        Ok(ApiResponse::Ok)
    }

    fn log_view(&self, request: u64, plan_id: &str, log_id: u64) -> TaskLog {
        let log = usize::try_from(log_id)
            .ok()
            .and_then(|i| self.jobs.get(&request)?.plan.logs.get(i.checked_sub(1)?));
        TaskLog {
            id: log_id,
            path: log.map(|l| l.path.clone()).unwrap_or_default(),
            line_count: log.map_or(0, |l| l.line_count),
            location: format!(
                "{}/{}/_apis/distributedtask/hubs/build/plans/{plan_id}/logs/{log_id}",
                self.plan_url, self.scope_identifier
            ),
            created_on: log.map(|l| l.created_on.clone()),
        }
    }

    /// The stored content of log `log_id` of job request `request_id` (what the agent sent, up
    /// to the plan's storage bound), for tests and inspection.
    pub fn log_content(&self, request_id: u64, log_id: u64) -> Option<&[u8]> {
        let index = usize::try_from(log_id).ok()?.checked_sub(1)?;
        Some(&self.jobs.get(&request_id)?.plan.logs.get(index)?.content)
    }

    /// The stored feed lines of job request `request_id`, for tests and inspection.
    pub fn feed_lines(&self, request_id: u64) -> Option<&[String]> {
        Some(&self.jobs.get(&request_id)?.plan.feed)
    }

    /// The stored timeline record `record_id` of job request `request_id`.
    pub fn timeline_record(&self, request_id: u64, record_id: &str) -> Option<&TimelineRecord> {
        self.jobs.get(&request_id)?.plan.records.get(record_id)
    }

    /// The job request as the admin API shows it.
    pub fn job_request(&self, request_id: u64) -> Option<crate::proto::TaskAgentJobRequest> {
        self.jobs
            .contains_key(&request_id)
            .then(|| self.job_view(request_id))
    }

    /// Attachments stored for job request `request_id`: (type, name, bytes).
    pub fn attachments(&self, request_id: u64) -> Vec<(String, String, u64)> {
        self.jobs.get(&request_id).map_or_else(Vec::new, |j| {
            j.plan
                .attachments
                .iter()
                .map(|a| (a.kind.clone(), a.name.clone(), a.bytes))
                .collect()
        })
    }
}

fn plan_gone() -> ApiError {
    ApiError::new(ErrorKind::PlanNotFound, "the plan no longer exists")
}

fn log_index(plan: &PlanStore, log_id: u64) -> Result<usize, ApiError> {
    usize::try_from(log_id)
        .ok()
        .and_then(|i| i.checked_sub(1))
        .filter(|&i| i < plan.logs.len())
        .ok_or_else(|| {
            ApiError::new(
                ErrorKind::PlanNotFound,
                format!("log {log_id} does not exist in this plan; create it with POST …/logs"),
            )
        })
}

/// Apply the fields an update carries (`None` leaves a field as it was), as the service merges
/// record PATCHes.
fn merge_record(stored: &mut TimelineRecord, update: &TimelineRecord) {
    stored.id.clone_from(&update.id);
    macro_rules! take {
        ($($field:ident),*) => {$(
            if update.$field.is_some() {
                stored.$field.clone_from(&update.$field);
            }
        )*};
    }
    take!(
        parent_id,
        kind,
        name,
        state,
        result,
        start_time,
        finish_time,
        log,
        order,
        worker_name,
        error_count,
        warning_count
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::TimelineRecordState;

    // Goal: a PATCH that omits a field keeps the stored value; one that sets it wins.
    #[test]
    fn record_merge_keeps_unset_fields() {
        let mut stored = TimelineRecord {
            id: "r".into(),
            name: Some("step".into()),
            state: Some(TimelineRecordState::InProgress),
            ..TimelineRecord::default()
        };
        let update = TimelineRecord {
            id: "r".into(),
            state: Some(TimelineRecordState::Completed),
            result: Some(TaskResult::Succeeded),
            ..TimelineRecord::default()
        };
        merge_record(&mut stored, &update);
        assert_eq!(stored.name.as_deref(), Some("step"));
        assert_eq!(stored.state, Some(TimelineRecordState::Completed));
        assert_eq!(stored.result, Some(TaskResult::Succeeded));
    }

    // Goal: the plan store stops storing at its bound but keeps counting.
    #[test]
    fn plan_store_admits_up_to_the_bound() {
        let mut p = PlanStore::default();
        assert!(p.admit(6, 10));
        assert!(!p.admit(6, 10));
        assert!(p.admit(4, 10));
        assert_eq!((p.stored_bytes, p.dropped_bytes), (10, 6));
    }
}
