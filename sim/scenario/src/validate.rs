//! Raw mirror → validated [`Scenario`]: defaults filled in, ranges and cross-field rules checked,
//! every problem reported at the offending value (or the table that lacks a required one).
//!
//! Defaults live here and only here (the real agent's timers, the emulator's settings); the
//! docs in `docs/SCENARIOS.md` list the same values. This module never reads files, the
//! environment or the clock: a PAT is named (env var or file), never resolved.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use fleetsim_core::dist::{DurationDist, NumberDist};
use fleetsim_core::ops::Operation;
use fleetsim_core::workload::MAX_STEPS_PER_JOB;

use crate::doc::{Loader, Path, Seg};
use crate::leaf::{RawBytes, RawDuration, RawDurationDist, RawNumberDist, RawRatio};
use crate::model::*;
use crate::ranges::{MAX_ARTIFACT_BYTES, MAX_RATE_PER_S};
use crate::raw::*;

/// Default seed when neither the file nor `--set run.seed` gives one.
pub const DEFAULT_SEED: u64 = 1;
/// Default pool name (the emulator's pool with id 1).
pub const DEFAULT_POOL: &str = "Default";
/// Default env var holding the target's PAT.
pub const DEFAULT_PAT_ENV: &str = "FLEETSIM_PAT";
/// Upper bound on `fleet.agents` (the DES is designed for 10^6; a little headroom).
pub const MAX_AGENTS: u32 = 10_000_000;
/// Upper bound on workers per station and on a station's queue.
pub const MAX_STATION_SIZE: u32 = 1_000_000;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// Build a path from keys.
fn p(keys: &[&str]) -> Path {
    keys.iter().map(|k| Seg::Key((*k).to_string())).collect()
}

/// `base` + more keys.
fn pk(base: &[Seg], keys: &[&str]) -> Path {
    let mut out = base.to_vec();
    out.extend(keys.iter().map(|k| Seg::Key((*k).to_string())));
    out
}

/// Validate the raw scenario into a [`Scenario`]; `stem` is the default run name. Problems go
/// to `ld`; the returned value is meaningful only when `ld` reported none (a bad value is
/// replaced by its default so that checking can go on and find the next problem).
pub fn validate(
    raw: RawScenario,
    source: &str,
    stem: &str,
    overrides: &[String],
    ld: &mut Loader<'_>,
) -> Scenario {
    let run = run(raw.run.unwrap_or_default(), stem, ld);
    let target = raw.target.map(|t| target(t, ld));
    let fleet = fleet(raw.fleet.unwrap_or_default(), ld);
    let agent = agent(raw.agent.unwrap_or_default(), ld);
    let jobs = jobs(raw.jobs, target.is_some(), ld);
    let server = server(raw.server.unwrap_or_default(), ld);
    let (network, partitions) = network(raw.network.unwrap_or_default(), &fleet, &run, ld);
    let mut faults = faults(raw.faults.unwrap_or_default(), &fleet, &run, ld);
    faults.extend(partitions);
    // Stable: equal start times keep file order ([[faults]] before [[network.partitions]]).
    faults.sort_by_key(|f| f.at);
    let thresholds = thresholds(raw.thresholds.unwrap_or_default(), ld);
    assertion_lifetime(&agent, &server, ld);
    if target.is_some() && server.deadlines != ServerDeadlines::default() {
        ld.at(
            &p(&["server", "deadlines"]),
            "the embedded emulator's deadlines; a target keeps its own and fleetsim cannot set \
             them: remove [server.deadlines], or start the target with `fleetsim serve \
             --head-timeout/--body-timeout/--keep-alive-timeout`",
        );
    }
    if let Some(d) = agent.job_token_rotate_before
        && let Some(ttl) = jobs.token_ttl.filter(|ttl| d >= *ttl)
    {
        ld.at(
            &p(&["agent", "job_token_rotate_before"]),
            format!(
                "must be shorter than jobs.token_ttl ({}), or the token is rotated as soon as \
                 it is issued",
                fmt_d(ttl)
            ),
        );
    }
    Scenario {
        source: source.to_string(),
        overrides: overrides.to_vec(),
        run,
        target,
        fleet,
        agent,
        jobs,
        server,
        network,
        faults,
        thresholds,
    }
}

/// The emulator, like Azure DevOps, refuses a client assertion valid for longer than its
/// maximum lifetime (5 minutes) plus its clock skew (`server.jwt_skew`, which clients may use
/// to back-date `nbf`): with a longer `agent.assertion_lifetime` every token exchange fails.
fn assertion_lifetime(agent: &AgentSettings, server: &ServerSettings, ld: &mut Loader<'_>) {
    let max_lifetime = fleetsim_core::server::ServerConfig::default().jwt_max_lifetime;
    let bound = max_lifetime + server.jwt_skew;
    if agent.pacing.assertion_lifetime > bound {
        ld.at(
            &p(&["agent", "assertion_lifetime"]),
            format!(
                "must be at most {} ({} plus server.jwt_skew {}): the emulator, like Azure \
                 DevOps, refuses longer client assertions and every token exchange would fail; \
                 write \"{}\", the real agent's lifetime",
                fmt_d(bound),
                fmt_d(max_lifetime),
                fmt_d(server.jwt_skew),
                fmt_d(max_lifetime),
            ),
        );
    }
}

fn fmt_d(d: Duration) -> String {
    fleetsim_core::dist::format_duration(d)
}

fn d(v: Option<RawDuration>, default: Duration) -> Duration {
    v.map_or(default, |v| v.0)
}

fn dd(v: Option<RawDurationDist>, default: DurationDist) -> DurationDist {
    v.map_or(default, |v| v.0)
}

fn nd(v: Option<RawNumberDist>, default: NumberDist) -> NumberDist {
    v.map_or(default, |v| v.0)
}

fn ratio(v: Option<RawRatio>) -> f64 {
    v.map_or(0.0, |v| v.0)
}

/// A non-empty, trimmed name, else a diagnostic and the default.
fn name(v: Option<String>, default: &str, path: &[Seg], ld: &mut Loader<'_>) -> String {
    match v {
        Some(s) if s.trim().is_empty() => {
            ld.at(path, "must not be empty");
            default.to_string()
        }
        Some(s) => s.trim().to_string(),
        None => default.to_string(),
    }
}

fn positive(v: Duration, path: &[Seg], ld: &mut Loader<'_>) {
    if v.is_zero() {
        ld.at(path, "must be longer than 0s");
    }
}

fn run(raw: RawRun, stem: &str, ld: &mut Loader<'_>) -> Run {
    let duration = match raw.duration {
        Some(v) => {
            positive(v.0, &p(&["run", "duration"]), ld);
            v.0
        }
        None => {
            ld.at(
                &p(&["run", "duration"]),
                "missing; write e.g. duration = \"40s\" in [run]",
            );
            Duration::ZERO
        }
    };
    let warmup = d(raw.warmup, Duration::ZERO);
    if !duration.is_zero() && warmup >= duration {
        ld.at(
            &p(&["run", "warmup"]),
            format!("must be shorter than run.duration ({})", fmt_d(duration)),
        );
    }
    Run {
        name: name(raw.name, stem, &p(&["run", "name"]), ld),
        duration,
        seed: raw.seed.unwrap_or(DEFAULT_SEED),
        warmup,
    }
}

fn target(raw: RawTarget, ld: &mut Loader<'_>) -> Target {
    let url = match raw.url {
        Some(u) => check_url(&u, &p(&["target", "url"]), ld),
        None => {
            ld.at(
                &p(&["target", "url"]),
                "missing; write the collection's URL, or remove [target] to use the embedded \
                 emulator",
            );
            String::new()
        }
    };
    let pat = match (raw.pat_env, raw.pat_file) {
        (Some(_), Some(_)) => {
            ld.at(
                &p(&["target", "pat_file"]),
                "give either pat_env or pat_file, not both",
            );
            PatSource::Env(DEFAULT_PAT_ENV.to_string())
        }
        (Some(env), None) => PatSource::Env(env_name(env, &p(&["target", "pat_env"]), ld)),
        (None, Some(file)) => PatSource::File(path_buf(file, &p(&["target", "pat_file"]), ld)),
        (None, None) => PatSource::Env(DEFAULT_PAT_ENV.to_string()),
    };
    let tls = match (raw.ca_file, raw.insecure.unwrap_or(false)) {
        (Some(_), true) => {
            ld.at(
                &p(&["target", "insecure"]),
                "give either ca_file or insecure = true, not both",
            );
            TlsTrust::Default
        }
        (Some(f), false) => TlsTrust::CaFile(path_buf(f, &p(&["target", "ca_file"]), ld)),
        (None, true) => TlsTrust::Insecure,
        (None, false) => TlsTrust::Default,
    };
    if tls != TlsTrust::Default && url.starts_with("http://") {
        ld.at(
            &p(&["target", "url"]),
            "TLS options are set but the URL is http://",
        );
    }
    Target {
        url,
        pool: name(raw.pool, DEFAULT_POOL, &p(&["target", "pool"]), ld),
        pat,
        tls,
        proxy: proxy(raw.proxy.unwrap_or_default(), ld),
    }
}

/// An http(s) URL with a host and no credentials; returned without a trailing slash.
fn check_url(url: &str, path: &[Seg], ld: &mut Loader<'_>) -> String {
    let url = url.trim().trim_end_matches('/');
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        ld.at(path, format!("{url:?} is not an http:// or https:// URL"));
        return url.to_string();
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.contains('@') {
        ld.at(
            path,
            "credentials do not belong in the URL; use pat_env or pat_file",
        );
    } else if authority.is_empty() || authority.starts_with(':') {
        ld.at(path, format!("{url:?} has no host"));
    }
    url.to_string()
}

fn env_name(v: String, path: &[Seg], ld: &mut Loader<'_>) -> String {
    let ok = !v.is_empty()
        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !v.starts_with(|c: char| c.is_ascii_digit());
    if !ok {
        ld.at(
            path,
            format!("{v:?} is not an environment variable name (letters, digits, _)"),
        );
    }
    v
}

fn path_buf(v: String, path: &[Seg], ld: &mut Loader<'_>) -> PathBuf {
    if v.trim().is_empty() {
        ld.at(path, "must not be empty");
    }
    PathBuf::from(v)
}

fn proxy(raw: RawProxy, ld: &mut Loader<'_>) -> ProxySettings {
    let base = p(&["target", "proxy"]);
    let enabled = raw.enabled.unwrap_or(true);
    let source = match (raw.url, raw.file, enabled) {
        (Some(_), Some(_), _) => {
            ld.at(&pk(&base, &["file"]), "give either url or file, not both");
            ProxySource::Environment
        }
        (Some(_), None, false) | (None, Some(_), false) => {
            ld.at(
                &pk(&base, &["enabled"]),
                "enabled = false with a proxy url or file",
            );
            ProxySource::Off
        }
        (Some(u), None, true) => ProxySource::Url(check_url(&u, &pk(&base, &["url"]), ld)),
        (None, Some(f), true) => ProxySource::File(path_buf(f, &pk(&base, &["file"]), ld)),
        (None, None, true) => ProxySource::Environment,
        (None, None, false) => ProxySource::Off,
    };
    ProxySettings {
        source,
        username_env: raw
            .username_env
            .map_or("VSTS_HTTP_PROXY_USERNAME".into(), |v| {
                env_name(v, &pk(&base, &["username_env"]), ld)
            }),
        password_env: raw
            .password_env
            .map_or("VSTS_HTTP_PROXY_PASSWORD".into(), |v| {
                env_name(v, &pk(&base, &["password_env"]), ld)
            }),
        no_proxy: raw.no_proxy.unwrap_or_default(),
        bypass: raw.bypass.unwrap_or_default(),
    }
}

fn fleet(raw: RawFleet, ld: &mut Loader<'_>) -> Fleet {
    // In range (`crate::ranges`), or left out and reported.
    let agents = raw.agents.unwrap_or(10).clamp(1, MAX_AGENTS);
    let key_bits = match raw.key_bits.unwrap_or(2048) {
        2048 => KeyBits::B2048,
        3072 => KeyBits::B3072,
        4096 => KeyBits::B4096,
        other => {
            ld.at(
                &p(&["fleet", "key_bits"]),
                format!("must be 2048, 3072 or 4096, found {other}"),
            );
            KeyBits::B2048
        }
    };
    let distinct_keys = raw.distinct_keys.unwrap_or(agents.min(1000));
    if distinct_keys == 0 || distinct_keys > agents {
        ld.at(
            &p(&["fleet", "distinct_keys"]),
            format!("must be between 1 and fleet.agents ({agents}), found {distinct_keys}"),
        );
    }
    let capabilities = raw.capabilities.unwrap_or_default();
    for k in capabilities.keys() {
        if k.trim().is_empty() || k.contains(char::is_whitespace) {
            ld.at(
                &pk(&p(&["fleet", "capabilities"]), &[k]),
                "capability names cannot contain spaces",
            );
        }
    }
    Fleet {
        agents,
        ramp_up: d(raw.ramp_up, Duration::ZERO),
        name_prefix: name(
            raw.name_prefix,
            "fleetsim-agent-",
            &p(&["fleet", "name_prefix"]),
            ld,
        ),
        capabilities,
        key_bits,
        distinct_keys: distinct_keys.clamp(1, agents),
        key_cache_dir: raw
            .key_cache_dir
            .map(|v| path_buf(v, &p(&["fleet", "key_cache_dir"]), ld)),
        connection_mode: match raw.connection_mode {
            Some(RawConnectionMode::Pooled) => ConnectionMode::Pooled,
            Some(RawConnectionMode::PerAgent) | None => ConnectionMode::PerAgent,
        },
        register_mode: match raw.register_mode {
            Some(RawRegisterMode::Replace) => RegisterMode::Replace,
            Some(RawRegisterMode::Register) | None => RegisterMode::Register,
        },
    }
}

/// The real agent's defaults (protocol.md §10), each overridable; the same values as
/// `fleetsim_core::agent::AgentConfig::default()`.
fn agent(raw: RawAgent, ld: &mut Loader<'_>) -> AgentSettings {
    let at = |k: &str| p(&["agent", k]);
    let bytes = |v: Option<RawBytes>, default: u64| v.map_or(default, |b| b.0);
    let def = Pacing::default();
    let count = |v: Option<u32>, default: usize| v.map_or(default, |n| n as usize);
    let pacing = Pacing {
        long_poll_timeout: d(raw.long_poll_timeout, def.long_poll_timeout),
        empty_poll_gap: dd(raw.empty_poll_gap, def.empty_poll_gap),
        error_backoff_first: dd(raw.error_backoff_first, def.error_backoff_first),
        error_backoff_later: dd(raw.error_backoff_later, def.error_backoff_later),
        error_backoff_first_count: raw
            .error_backoff_first_count
            .unwrap_or(def.error_backoff_first_count),
        keepalive_interval: d(raw.keepalive_interval, def.keepalive_interval),
        keepalive: raw.keepalive.unwrap_or(def.keepalive),
        session_retry: d(raw.session_retry, def.session_retry),
        session_conflict_budget: d(raw.session_conflict_budget, def.session_conflict_budget),
        session_delete_timeout: d(raw.session_delete_timeout, def.session_delete_timeout),
        lock_renew_interval: d(raw.lock_renew_interval, def.lock_renew_interval),
        first_renew_tries: raw.first_renew_tries.unwrap_or(def.first_renew_tries),
        first_renew_retry: dd(raw.first_renew_retry, def.first_renew_retry),
        renew_retry: dd(raw.renew_retry, def.renew_retry),
        renew_retry_later: dd(raw.renew_retry_later, def.renew_retry_later),
        renew_give_up_after: d(raw.renew_give_up_after, def.renew_give_up_after),
        renew_timeout: d(raw.renew_timeout, def.renew_timeout),
        timeline_interval: d(raw.timeline_interval, def.timeline_interval),
        feed_interval_fast: d(raw.feed_interval_fast, def.feed_interval_fast),
        feed_interval: d(raw.feed_interval, def.feed_interval),
        feed_fast_period: d(raw.feed_fast_period, def.feed_fast_period),
        feed_batch_lines_max: count(raw.feed_batch_lines_max, def.feed_batch_lines_max),
        feed_batches_per_tick_max: count(
            raw.feed_batches_per_tick_max,
            def.feed_batches_per_tick_max,
        ),
        line_chars_max: count(raw.line_chars_max, def.line_chars_max),
        log_upload_interval: d(raw.log_upload_interval, def.log_upload_interval),
        log_page_bytes_max: raw.log_page_bytes_max.map_or(def.log_page_bytes_max, |b| {
            usize::try_from(b.0).unwrap_or(usize::MAX)
        }),
        job_call_timeout: d(raw.job_call_timeout, def.job_call_timeout),
        completion_tries: raw.completion_tries.unwrap_or(def.completion_tries),
        completion_retry: d(raw.completion_retry, def.completion_retry),
        artifact_bytes_max: bytes(raw.artifact_bytes_max, def.artifact_bytes_max),
        auth_retries_max: raw.auth_retries_max.unwrap_or(def.auth_retries_max),
        assertion_lifetime: d(raw.assertion_lifetime, def.assertion_lifetime),
    };
    let a = AgentSettings {
        version: name(raw.version, "4.260.0", &at("version"), ld),
        os_description: name(
            raw.os_description,
            "Linux 6.1 fleetsim virtual agent",
            &at("os_description"),
            ld,
        ),
        pacing,
        job_token_rotate_before: raw.job_token_rotate_before.map(|v| v.0),
        mask_secrets: raw.mask_secrets.unwrap_or(true),
    };
    // Zero periods or timeouts would spin a timer or fail every call. (Zero counts or sizes,
    // "never try" or "never send", are out of their ranges in `crate::ranges`.)
    for (k, v) in [
        ("long_poll_timeout", a.pacing.long_poll_timeout),
        ("keepalive_interval", a.pacing.keepalive_interval),
        ("session_retry", a.pacing.session_retry),
        ("session_delete_timeout", a.pacing.session_delete_timeout),
        ("lock_renew_interval", a.pacing.lock_renew_interval),
        ("renew_timeout", a.pacing.renew_timeout),
        ("timeline_interval", a.pacing.timeline_interval),
        ("feed_interval_fast", a.pacing.feed_interval_fast),
        ("feed_interval", a.pacing.feed_interval),
        ("log_upload_interval", a.pacing.log_upload_interval),
        ("job_call_timeout", a.pacing.job_call_timeout),
        ("assertion_lifetime", a.pacing.assertion_lifetime),
    ] {
        positive(v, &at(k), ld);
    }
    a
}

fn jobs(raw: Option<RawJobs>, has_target: bool, ld: &mut Loader<'_>) -> Jobs {
    let present = raw.is_some();
    let raw = raw.unwrap_or_default();
    // The keys that shape fleetsim's synthetic jobs; jobs from a server or a pipeline are the
    // server's, so with those sources these keys cannot be honoured (`job_source` says so).
    let synthetic_keys: Vec<&'static str> = [
        ("duration", raw.duration.is_some()),
        ("steps", raw.steps.is_some()),
        ("log_lines_per_s", raw.log_lines_per_s.is_some()),
        ("secrets", raw.secrets.is_some()),
        ("secret_lines", raw.secret_lines.is_some()),
        ("artifact_bytes", raw.artifact_bytes.is_some()),
        ("failure_rate", raw.failure_rate.is_some()),
        ("demands", raw.demands.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect();
    let at = |k: &str| p(&["jobs", k]);
    // In range (`crate::ranges`: 0 to MAX_RATE_PER_S), or left out and reported.
    let rate = raw.rate_per_s;
    // Someone else queues the jobs of a `server` source (explicit, or the default against a
    // target when no rate is set): there is no arrival rate to ask for.
    let needs_rate = match raw.source {
        Some(RawJobSource::Server) => false,
        Some(_) => true,
        None => !has_target,
    };
    let arrival = match raw.arrival {
        None | Some(RawArrival::Poisson) | Some(RawArrival::Constant) => {
            let constant = matches!(raw.arrival, Some(RawArrival::Constant));
            match rate {
                Some(r) if r > 0.0 && constant => Arrival::Constant { rate_per_s: r },
                Some(r) if r > 0.0 => Arrival::Poisson { rate_per_s: r },
                Some(_) => Arrival::None,
                None if present && needs_rate && raw.rate_per_s.is_none() => {
                    ld.at(
                        &at("rate_per_s"),
                        "missing; write e.g. rate_per_s = 0.5 (jobs per second; 0 for no jobs)",
                    );
                    Arrival::None
                }
                None => Arrival::None,
            }
        }
        Some(other) => {
            if raw.rate_per_s.is_some() {
                ld.at(
                    &at("rate_per_s"),
                    "rate_per_s applies to poisson and constant arrivals; bursts and profiles \
                     carry their own rates",
                );
            }
            shaped_arrival(other, ld)
        }
    };
    let log_lines_per_s = raw.log_lines_per_s.unwrap_or(2.0);
    let steps = nd(raw.steps, NumberDist::constant(3.0));
    if steps.mean() < 1.0 {
        ld.at(&at("steps"), "a job has at least 1 step on average");
    }
    if steps.mean() > MAX_STEPS_PER_JOB as f64 {
        ld.at(
            &at("steps"),
            format!(
                "a job has at most {MAX_STEPS_PER_JOB} steps (the emulator's bound), found a \
                 mean of {}",
                steps.mean()
            ),
        );
    }
    let artifact_bytes = nd(raw.artifact_bytes, NumberDist::constant(0.0));
    at_most_bytes(&artifact_bytes, &at("artifact_bytes"), ld);
    // The emulator refuses bigger jobs; say so here rather than fail every queue request.
    let bounds = fleetsim_core::server::Limits::default();
    let secrets = raw.secrets.unwrap_or(1);
    if secrets as usize > bounds.max_secrets_per_job {
        let max = bounds.max_secrets_per_job;
        ld.at(
            &at("secrets"),
            format!("at most {max} secrets per job (the emulator's bound)"),
        );
    }
    let demands = raw.demands.unwrap_or_default();
    if demands.len() > bounds.max_demands_per_job {
        let max = bounds.max_demands_per_job;
        ld.at(
            &at("demands"),
            format!("at most {max} demands per job (the emulator's bound)"),
        );
    }
    for (i, dmd) in demands.iter().enumerate() {
        if dmd.trim().is_empty() {
            let mut path = at("demands");
            path.push(Seg::Index(i));
            ld.at(&path, "a demand is `name` or `name -equals value`");
        }
    }
    if let Some(ttl) = raw.token_ttl {
        positive(ttl.0, &at("token_ttl"), ld);
    }
    let cancel_rate = ratio(raw.cancel_rate);
    let source = job_source(
        raw.source,
        raw.pipelines,
        has_target,
        &arrival,
        cancel_rate,
        &synthetic_keys,
        ld,
    );
    Jobs {
        arrival,
        source,
        model: JobModel {
            duration: dd(raw.duration, DurationDist::exponential(secs(60))),
            steps,
            log_lines_per_s: log_lines_per_s.max(0.0),
            secrets,
            secret_lines: raw.secret_lines.unwrap_or(1),
            artifact_bytes,
            failure_rate: ratio(raw.failure_rate),
            cancel_rate,
            demands,
        },
        token_ttl: raw.token_ttl.map(|v| v.0),
        tasks: tasks(raw.tasks, ld),
    }
}

/// `[jobs.tasks]`: absent, the built-in model (`StepModel::default()`); present, `default`
/// over the built-in default's fields and each named task over that `default`, so a task table
/// only says how it differs.
fn tasks(raw: Option<BTreeMap<String, RawTaskModel>>, ld: &mut Loader<'_>) -> StepModel {
    let Some(mut raw) = raw else {
        return StepModel::default();
    };
    let base = p(&["jobs", "tasks"]);
    let default = match raw.remove("default") {
        Some(d) => task_model(d, &TaskModel::default(), &pk(&base, &["default"]), ld),
        None => TaskModel::default(),
    };
    let mut tasks = BTreeMap::new();
    // Lower-cased name → the name as written, to catch two spellings of one task.
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (name, model) in raw {
        let here = pk(&base, &[&name]);
        if name.trim().is_empty() || name.contains(char::is_whitespace) {
            ld.at_key(
                &here,
                "a task name is the task's `reference.name`, such as Checkout or CmdLine (no \
                 spaces)",
            );
        } else if name.eq_ignore_ascii_case("default") {
            ld.at_key(
                &here,
                format!(
                    "task names match case-insensitively, so `{name}` is the default model; \
                     write `default`"
                ),
            );
        } else if let Some(first) = seen.insert(name.to_ascii_lowercase(), name.clone()) {
            ld.at_key(
                &here,
                format!(
                    "task `{name}` is already modelled as `{first}` (task names match \
                     case-insensitively)"
                ),
            );
        }
        let model = task_model(model, &default, &here, ld);
        tasks.insert(name, model);
    }
    StepModel { default, tasks }
}

/// One task's model: the fields it sets, the rest from `base`.
fn task_model(raw: RawTaskModel, base: &TaskModel, path: &[Seg], ld: &mut Loader<'_>) -> TaskModel {
    let log_lines_per_s = raw.log_lines_per_s.unwrap_or(base.log_lines_per_s);
    let attachment_bytes = nd(raw.attachment_bytes, base.attachment_bytes.clone());
    at_most_bytes(&attachment_bytes, &pk(path, &["attachment_bytes"]), ld);
    let failure_rate = raw.failure_rate.map_or(base.failure_rate, |r| r.0);
    let issues_rate = raw.issues_rate.map_or(base.issues_rate, |r| r.0);
    if failure_rate + issues_rate > 1.0 {
        let key = if raw.issues_rate.is_some() {
            "issues_rate"
        } else {
            "failure_rate"
        };
        ld.at(
            &pk(path, &[key]),
            format!(
                "failure_rate + issues_rate is {}%, more than 100%",
                ((failure_rate + issues_rate) * 100.0).round()
            ),
        );
    }
    TaskModel {
        duration: dd(raw.duration, base.duration.clone()),
        log_lines_per_s: log_lines_per_s.max(0.0),
        secret_lines: raw.secret_lines.unwrap_or(base.secret_lines),
        attachment_bytes,
        failure_rate,
        issues_rate,
    }
}

/// A size distribution whose mean is within [`MAX_ARTIFACT_BYTES`].
fn at_most_bytes(dist: &NumberDist, path: &[Seg], ld: &mut Loader<'_>) {
    if dist.mean() > MAX_ARTIFACT_BYTES as f64 {
        ld.at(
            path,
            format!(
                "must be at most {MAX_ARTIFACT_BYTES} bytes (4 GiB) on average, found a mean of {}",
                dist.mean()
            ),
        );
    }
}

/// `[jobs] source` and `[[jobs.pipelines]]`, with the combinations no driver can honour refused:
/// arrivals or cancels with a "server" source, pipelines without the "pipelines" source.
fn job_source(
    raw: Option<RawJobSource>,
    pipelines: Option<Vec<RawJobPipeline>>,
    has_target: bool,
    arrival: &Arrival,
    cancel_rate: f64,
    synthetic_keys: &[&'static str],
    ld: &mut Loader<'_>,
) -> JobSource {
    let at = |k: &str| p(&["jobs", k]);
    let kind = raw.unwrap_or(if has_target && *arrival == Arrival::None {
        RawJobSource::Server
    } else {
        RawJobSource::Emulator
    });
    // A pipelines source reads `duration` as the runs' expected length (when its cancels come);
    // every other synthetic-job key describes jobs only fleetsim's emulator source makes.
    let (name, unused): (&str, Vec<&str>) = match kind {
        RawJobSource::Emulator => ("emulator", Vec::new()),
        RawJobSource::Server => ("server", synthetic_keys.to_vec()),
        RawJobSource::Pipelines => (
            "pipelines",
            synthetic_keys
                .iter()
                .copied()
                .filter(|k| *k != "duration")
                .collect(),
        ),
    };
    for key in unused {
        ld.at(
            &at(key),
            format!(
                "`{key}` shapes fleetsim's synthetic jobs, and with `source = \"{name}\"` the \
                 jobs are the server's: remove it (what their steps do is [jobs.tasks])"
            ),
        );
    }
    if kind != RawJobSource::Pipelines && pipelines.is_some() {
        ld.at(
            &at("pipelines"),
            "[[jobs.pipelines]] is read only with `source = \"pipelines\"`: set it, or remove \
             the pipelines",
        );
    }
    match kind {
        RawJobSource::Emulator => JobSource::Emulator,
        RawJobSource::Server => {
            if *arrival != Arrival::None {
                ld.at(
                    &at("source"),
                    "`source = \"server\"` queues no jobs (someone else does), so the arrival \
                     keys cannot be honoured: remove `rate_per_s`/`arrival`, or set `source = \
                     \"emulator\"` or `\"pipelines\"`",
                );
            }
            if cancel_rate > 0.0 {
                ld.at(
                    &at("cancel_rate"),
                    "`source = \"server\"` cancels nothing (the jobs are someone else's): \
                     remove `cancel_rate`",
                );
            }
            JobSource::Server
        }
        RawJobSource::Pipelines => {
            let list = pipelines.unwrap_or_default();
            if list.is_empty() {
                ld.at(
                    &at("source"),
                    "`source = \"pipelines\"` needs at least one [[jobs.pipelines]] with `id` \
                     and `project`",
                );
            }
            let targets = list
                .into_iter()
                .enumerate()
                .map(|(i, raw)| job_pipeline(raw, i, ld))
                .collect();
            JobSource::Pipelines(targets)
        }
    }
}

/// One `[[jobs.pipelines]]` entry.
fn job_pipeline(raw: RawJobPipeline, i: usize, ld: &mut Loader<'_>) -> PipelineTarget {
    let mut here = p(&["jobs", "pipelines"]);
    here.push(Seg::Index(i));
    let id = match raw.id {
        Some(id) if id > 0 => id,
        Some(_) => {
            ld.at(&pk(&here, &["id"]), "a pipeline id is at least 1");
            1
        }
        None => {
            ld.at(
                &pk(&here, &["id"]),
                "missing `id` (the pipeline's definition id)",
            );
            1
        }
    };
    let project = match raw.project {
        Some(p) if !p.trim().is_empty() => p,
        _ => {
            ld.at(
                &pk(&here, &["project"]),
                "missing `project` (the project's name or id)",
            );
            String::new()
        }
    };
    let weight = raw.weight.unwrap_or(1);
    if weight == 0 {
        ld.at(&pk(&here, &["weight"]), "a weight is at least 1");
    }
    if let Some(b) = raw.branch.as_ref().filter(|b| b.trim().is_empty()) {
        ld.at(
            &pk(&here, &["branch"]),
            format!("a branch is a ref such as \"refs/heads/main\", found {b:?}"),
        );
    }
    PipelineTarget {
        id,
        project,
        weight: weight.max(1),
        branch: raw.branch,
    }
}

fn shaped_arrival(raw: RawArrival, ld: &mut Loader<'_>) -> Arrival {
    let base = p(&["jobs", "arrival"]);
    match raw {
        RawArrival::Bursts(b) => {
            let bp = pk(&base, &["bursts"]);
            let size = b.size.unwrap_or_else(|| {
                ld.at(&pk(&bp, &["size"]), "missing `size` (jobs per burst)");
                1
            });
            let every = match b.every {
                Some(e) => {
                    positive(e.0, &pk(&bp, &["every"]), ld);
                    e.0
                }
                None => {
                    ld.at(
                        &pk(&bp, &["every"]),
                        "missing `every` (time between bursts)",
                    );
                    secs(1)
                }
            };
            let every = every.max(Duration::from_micros(1));
            let mean_rate = f64::from(size) / every.as_secs_f64();
            if mean_rate > MAX_RATE_PER_S {
                ld.at(
                    &pk(&bp, &["every"]),
                    format!(
                        "{size} jobs every {} is {mean_rate} jobs per second on average; at most \
                         {MAX_RATE_PER_S}: make `every` longer or `size` smaller",
                        fmt_d(every)
                    ),
                );
            }
            Arrival::Bursts {
                size: size.max(1),
                every,
            }
        }
        RawArrival::Profile(points) => {
            let pp = pk(&base, &["profile"]);
            if points.is_empty() {
                ld.at(&pp, "a profile needs at least one [at, rate_per_s] point");
            }
            let mut out: Vec<ProfilePoint> = Vec::with_capacity(points.len());
            for (i, (at, rate)) in points.into_iter().enumerate() {
                let mut here = pp.clone();
                here.push(Seg::Index(i));
                if !(0.0..=MAX_RATE_PER_S).contains(&rate) {
                    ld.at(
                        &here,
                        format!(
                            "rate must be between 0 and {MAX_RATE_PER_S} jobs per second, found \
                             {rate}"
                        ),
                    );
                }
                if let Some(prev) = out.last().filter(|prev| prev.at >= at.0) {
                    ld.at(
                        &here,
                        format!(
                            "points must be in increasing time; {} follows {}",
                            fmt_d(at.0),
                            fmt_d(prev.at)
                        ),
                    );
                }
                out.push(ProfilePoint {
                    at: at.0,
                    rate_per_s: rate.clamp(0.0, MAX_RATE_PER_S),
                });
            }
            Arrival::Profile(out)
        }
        RawArrival::Poisson | RawArrival::Constant => Arrival::None,
    }
}

fn server(raw: RawServer, ld: &mut Loader<'_>) -> ServerSettings {
    let at = |k: &str| p(&["server", k]);
    let mut s = ServerSettings {
        pool: name(raw.pool, DEFAULT_POOL, &at("pool"), ld),
        long_poll_hold: d(raw.long_poll_hold, secs(50)),
        lease_duration: d(raw.lease_duration, secs(600)),
        lease_grace: d(raw.lease_grace, secs(60)),
        jwt_skew: d(raw.jwt_skew, secs(300)),
        listener_token_ttl: d(raw.listener_token_ttl, secs(3600)),
        job_token_rotation_grace: d(raw.job_token_rotation_grace, secs(30)),
        session_idle_timeout: d(raw.session_idle_timeout, secs(120)),
        secret_scan: raw.secret_scan.unwrap_or(true),
        limits: limits(raw.limits.unwrap_or_default()),
        deadlines: deadlines(raw.deadlines.unwrap_or_default()),
        stations: stations(raw.stations.unwrap_or_default(), ld),
        crypto: crypto(raw.crypto.unwrap_or_default()),
        pipelines: Vec::new(),
        layout: layout(raw.layout.unwrap_or_default(), ld),
    };
    for (k, v) in [
        ("lease_duration", s.lease_duration),
        ("listener_token_ttl", s.listener_token_ttl),
        ("session_idle_timeout", s.session_idle_timeout),
    ] {
        positive(v, &at(k), ld);
    }
    s.pipelines = pipelines(raw.pipelines.unwrap_or_default(), &s.pool, ld);
    if s.session_idle_timeout <= s.long_poll_hold {
        ld.at(
            &at("session_idle_timeout"),
            format!(
                "must be longer than server.long_poll_hold ({}), or sessions of agents that are \
                 polling expire",
                fmt_d(s.long_poll_hold)
            ),
        );
    }
    s
}

/// `[[server.pipelines]]`: required keys here; everything else (unique ids, a known pool,
/// bounded jobs, steps and demands) by the emulator's own validation, reported at the entry.
fn pipelines(
    raw: Vec<RawPipeline>,
    pool: &str,
    ld: &mut Loader<'_>,
) -> Vec<fleetsim_core::server::PipelineConfig> {
    use fleetsim_core::server::{DEFAULT_PIPELINE_STEPS, PipelineConfig, PoolConfig, ServerConfig};
    let mut out: Vec<PipelineConfig> = Vec::with_capacity(raw.len());
    for (i, rp) in raw.into_iter().enumerate() {
        let mut base = p(&["server", "pipelines"]);
        base.push(Seg::Index(i));
        let required = |v: Option<String>, key: &str, ld: &mut Loader<'_>| match v {
            Some(s) if !s.trim().is_empty() => s.trim().to_string(),
            _ => {
                ld.at(&pk(&base, &[key]), format!("a pipeline needs a `{key}`"));
                String::new()
            }
        };
        let name = required(rp.name, "name", ld);
        let project = required(rp.project, "project", ld);
        let Some(id) = rp.id else {
            ld.at(
                &pk(&base, &["id"]),
                "a pipeline needs an `id` (1 or higher)",
            );
            continue;
        };
        let pipeline = PipelineConfig {
            id,
            name,
            project,
            pool: rp.pool.unwrap_or_else(|| pool.to_string()),
            jobs: rp.jobs.unwrap_or(1),
            steps: rp.steps.unwrap_or_else(|| {
                DEFAULT_PIPELINE_STEPS
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            }),
            demands: rp.demands.unwrap_or_default(),
            folder: rp.folder,
        };
        if pipeline.name.is_empty() || pipeline.project.is_empty() {
            continue;
        }
        // The embedded emulator serves `Default` and the scenario's pool.
        let check = ServerConfig {
            pools: (!pool.eq_ignore_ascii_case(fleetsim_core::server::DEFAULT_POOL_NAME))
                .then(|| PoolConfig {
                    name: pool.to_string(),
                    id: crate::config::SCENARIO_POOL_ID,
                })
                .into_iter()
                .collect(),
            pipelines: out.iter().cloned().chain([pipeline.clone()]).collect(),
            ..ServerConfig::default()
        };
        match check.validate() {
            Ok(()) => out.push(pipeline),
            Err(fleetsim_core::server::ConfigError::UnknownPipelinePool { pool: bad, .. }) => ld
                .at(
                    &pk(&base, &["pool"]),
                    format!(
                        "pool {bad:?} is not served by the embedded emulator; write server.pool \
                         ({pool:?}) or \"Default\", or leave `pool` out"
                    ),
                ),
            Err(e) => ld.at(&base, format!("{e}")),
        }
    }
    out
}

/// `[server.layout]` into the core's layout, each address and the path checked at its key.
fn layout(raw: RawLayout, ld: &mut Loader<'_>) -> fleetsim_core::server::Layout {
    let at = |k: &str| p(&["server", "layout", k]);
    let mut addr = |v: Option<String>, key: &str| {
        let v = v?;
        match v.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                ld.at(
                    &at(key),
                    format!("{v:?} is not an address; write \"127.0.0.1:0\" (host:port)"),
                );
                None
            }
        }
    };
    let layout = fleetsim_core::server::Layout {
        token_listen: addr(raw.token_listen, "token_listen"),
        plan_listen: addr(raw.plan_listen, "plan_listen"),
        collection_path: raw.collection_path,
        plan_hub_on_main: raw.plan_hub_on_main.unwrap_or(false),
        expires_in_as_string: raw.expires_in_as_string.unwrap_or(false),
        ..Default::default()
    };
    let check = fleetsim_core::server::ServerConfig {
        layout: layout.clone(),
        ..Default::default()
    };
    if let Err(e) = check.validate() {
        ld.at(&p(&["server", "layout"]), e.to_string());
    }
    layout
}

/// In range already (`crate::ranges`: durations out of range were reported and left out).
fn deadlines(raw: RawDeadlines) -> ServerDeadlines {
    ServerDeadlines {
        head_timeout: raw.head_timeout.map(|d| d.0),
        body_timeout: raw.body_timeout.map(|d| d.0),
        keep_alive_timeout: raw.keep_alive_timeout.map(|d| d.0),
    }
}

fn limits(raw: RawLimits) -> ServerLimits {
    ServerLimits {
        max_agents: raw.max_agents,
        max_sessions: raw.max_sessions,
        max_queued_jobs: raw.max_queued_jobs,
        max_parked_polls: raw.max_parked_polls,
        max_body_bytes: raw.max_body_bytes.map(|b| b.0),
        max_connections: raw.max_connections,
    }
}

fn stations(raw: Vec<RawStation>, ld: &mut Loader<'_>) -> Vec<Station> {
    let mut out = Vec::with_capacity(raw.len());
    let mut names = BTreeSet::new();
    let mut claimed: BTreeMap<Operation, String> = BTreeMap::new();
    let mut rest_station: Option<String> = None;
    for (i, st) in raw.into_iter().enumerate() {
        let mut base = p(&["server", "stations"]);
        base.push(Seg::Index(i));
        let name = match st.name {
            Some(n) if !n.trim().is_empty() => n.trim().to_string(),
            _ => {
                ld.at(&pk(&base, &["name"]), "a station needs a `name`");
                format!("station-{i}")
            }
        };
        if !names.insert(name.clone()) {
            ld.at(
                &pk(&base, &["name"]),
                format!("station name {name:?} is used twice"),
            );
        }
        // Workers and queue_limit are in range (`crate::ranges`), or left out and reported.
        let workers = st.workers.unwrap_or(1);
        let ops = match st.ops {
            None => {
                if let Some(other) = rest_station.replace(name.clone()) {
                    ld.at(
                        &pk(&base, &["name"]),
                        format!(
                            "station {name:?} has no `ops` list, and neither has {other:?}; only \
                             one station may take the remaining operations"
                        ),
                    );
                }
                StationOps::Rest
            }
            Some(list) => {
                let mut ops = Vec::with_capacity(list.len());
                for (j, op_name) in list.iter().enumerate() {
                    let mut here = pk(&base, &["ops"]);
                    here.push(Seg::Index(j));
                    match Operation::from_name(op_name) {
                        Some(op) => {
                            if let Some(other) = claimed.insert(op, name.clone()) {
                                let msg = format!(
                                    "operation `{op_name}` is already served by station {other:?}"
                                );
                                ld.at(&here, msg);
                            }
                            ops.push(op);
                        }
                        None => ld.at(&here, unknown_op(op_name)),
                    }
                }
                StationOps::Only(ops)
            }
        };
        let mut service_by_op = BTreeMap::new();
        for (op_name, dist) in st.service_by_op.unwrap_or_default() {
            let here = pk(&base, &["service_by_op", &op_name]);
            match Operation::from_name(&op_name) {
                Some(op) => {
                    if let StationOps::Only(list) = &ops
                        && !list.contains(&op)
                    {
                        let msg =
                            format!("station {name:?} does not serve `{op_name}`; add it to `ops`");
                        ld.at_key(&here, msg);
                    }
                    service_by_op.insert(op, dist.0);
                }
                None => ld.at_key(&here, unknown_op(&op_name)),
            }
        }
        out.push(Station {
            name,
            workers: workers.clamp(1, MAX_STATION_SIZE),
            queue_limit: st.queue_limit,
            shed: match st.shed {
                Some(RawShed::Throttled) => Shed::Throttled,
                Some(RawShed::Unavailable) | None => Shed::Unavailable,
            },
            ops,
            service: dd(st.service, DurationDist::constant(Duration::ZERO)),
            service_by_op,
        });
    }
    out
}

fn unknown_op(name: &str) -> String {
    let known: Vec<&str> = Operation::ALL.iter().map(|o| o.name()).collect();
    format!(
        "unknown operation `{name}`; expected one of {}",
        known.join(", ")
    )
}

/// Modelled costs: RSA-2048 figures measured with aws-lc-rs on the project's 2-core machine
/// (a private-key operation ≈ 280 µs); calibrate with `fleetsim crypto-bench`.
fn crypto(raw: RawCrypto) -> CryptoModel {
    CryptoModel {
        mode: match raw.mode {
            Some(RawCryptoMode::Real) => CryptoMode::Real,
            Some(RawCryptoMode::Modelled) | None => CryptoMode::Modelled,
        },
        costs: CryptoCosts {
            rsa_keygen: d(raw.rsa_keygen, ms(100)),
            rs256_sign: d(raw.rs256_sign, Duration::from_micros(280)),
            rs256_verify: d(raw.rs256_verify, Duration::from_micros(15)),
            oaep_wrap: d(raw.oaep_wrap, Duration::from_micros(15)),
            oaep_unwrap: d(raw.oaep_unwrap, Duration::from_micros(280)),
            aes_per_kib: d(raw.aes_per_kib, Duration::from_micros(1)),
        },
    }
}

fn network(
    raw: RawNetwork,
    fleet: &Fleet,
    run: &Run,
    ld: &mut Loader<'_>,
) -> (Network, Vec<Fault>) {
    let mut partitions = Vec::new();
    for (i, part) in raw.partitions.unwrap_or_default().into_iter().enumerate() {
        let mut base = p(&["network", "partitions"]);
        base.push(Seg::Index(i));
        let fault = RawFault {
            kind: Some(RawFaultKind::Partition),
            at: part.at,
            duration: part.duration,
            fraction: part.fraction,
            agents: part.agents,
        };
        if let Some(f) = one_fault(fault, &base, fleet, run, ld) {
            partitions.push(f);
        }
    }
    let network = Network {
        latency: dd(raw.latency, DurationDist::constant(Duration::ZERO)),
        loss: ratio(raw.loss),
    };
    if network.loss >= 1.0 {
        ld.at(
            &p(&["network", "loss"]),
            "a loss of 100% means no request ever arrives",
        );
    }
    (network, partitions)
}

fn faults(raw: Vec<RawFault>, fleet: &Fleet, run: &Run, ld: &mut Loader<'_>) -> Vec<Fault> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, f) in raw.into_iter().enumerate() {
        let mut base = p(&["faults"]);
        base.push(Seg::Index(i));
        if let Some(f) = one_fault(f, &base, fleet, run, ld) {
            out.push(f);
        }
    }
    out
}

fn one_fault(
    raw: RawFault,
    base: &[Seg],
    fleet: &Fleet,
    run: &Run,
    ld: &mut Loader<'_>,
) -> Option<Fault> {
    let Some(kind) = raw.kind else {
        ld.at(
            &pk(base, &["kind"]),
            "missing `kind` (agent_crash, partition, server_stall, server_restart or \
             token_expiry_storm)",
        );
        return None;
    };
    let kind = match kind {
        RawFaultKind::AgentCrash => FaultKind::AgentCrash,
        RawFaultKind::Partition => FaultKind::Partition,
        RawFaultKind::ServerStall => FaultKind::ServerStall,
        RawFaultKind::ServerRestart => FaultKind::ServerRestart,
        RawFaultKind::TokenExpiryStorm => FaultKind::TokenExpiryStorm,
    };
    let Some(at) = raw.at else {
        ld.at(
            &pk(base, &["at"]),
            format!("missing `at` (when the {} happens)", kind.name()),
        );
        return None;
    };
    if !run.duration.is_zero() && at.0 >= run.duration {
        ld.at(
            &pk(base, &["at"]),
            format!(
                "{} is not within the run ({})",
                fmt_d(at.0),
                fmt_d(run.duration)
            ),
        );
    }
    let duration = raw.duration.map(|v| v.0);
    let needs_duration = matches!(kind, FaultKind::Partition | FaultKind::ServerStall);
    match duration {
        None if needs_duration => {
            ld.at(
                &pk(base, &["duration"]),
                format!("a {} needs a `duration`", kind.name()),
            );
        }
        Some(_) if kind == FaultKind::TokenExpiryStorm => {
            ld.at(
                &pk(base, &["duration"]),
                "a token_expiry_storm is instant; remove `duration`",
            );
        }
        Some(v) => positive(v, &pk(base, &["duration"]), ld),
        None => {}
    }
    let server_side = matches!(kind, FaultKind::ServerStall | FaultKind::ServerRestart);
    let agents = match (raw.fraction, raw.agents) {
        (Some(_), Some(_)) => {
            ld.at(
                &pk(base, &["agents"]),
                "give either fraction or agents, not both",
            );
            AgentSelection::All
        }
        (Some(_), None) | (None, Some(_)) if server_side => {
            let key = if raw.fraction.is_some() {
                "fraction"
            } else {
                "agents"
            };
            ld.at(
                &pk(base, &[key]),
                format!("a {} hits the server, not chosen agents", kind.name()),
            );
            AgentSelection::All
        }
        (Some(f), None) => {
            if f.0 <= 0.0 {
                ld.at(&pk(base, &["fraction"]), "must be more than 0");
            }
            if f.0 >= 1.0 {
                AgentSelection::All
            } else {
                AgentSelection::Fraction(f.0)
            }
        }
        (None, Some(list)) => {
            let mut list = list;
            list.sort_unstable();
            list.dedup();
            if list.is_empty() {
                ld.at(&pk(base, &["agents"]), "list at least one agent index");
            }
            if let Some(bad) = list.iter().find(|a| **a >= fleet.agents) {
                ld.at(
                    &pk(base, &["agents"]),
                    format!(
                        "agent index {bad} is out of range (fleet.agents = {})",
                        fleet.agents
                    ),
                );
            }
            AgentSelection::Agents(list)
        }
        (None, None) => AgentSelection::All,
    };
    Some(Fault {
        kind,
        at: at.0,
        duration,
        agents,
    })
}

fn thresholds(
    raw: BTreeMap<String, String>,
    ld: &mut Loader<'_>,
) -> Vec<fleetsim_metrics::thresholds::Threshold> {
    let mut out = Vec::with_capacity(raw.len());
    for (metric, condition) in raw {
        let path = p(&["thresholds", &metric]);
        match fleetsim_metrics::thresholds::parse(&metric, &condition) {
            Ok(t) => out.push(t),
            Err(message) => {
                // A wrong name is the key's fault; a wrong condition the value's.
                if fleetsim_metrics::thresholds::kind_of(metric.trim()).is_none() {
                    ld.at_key(&path, message);
                } else {
                    ld.at(&path, message);
                }
            }
        }
    }
    out
}
