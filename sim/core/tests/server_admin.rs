//! Agent and pool administration as Microsoft's task-agent clients (`azure-devops-node-api`,
//! `azure-devops`) do it: PATCH to disable and re-enable an agent, PUT to replace it, GET with
//! the `include*` options and demands, and the pool calls (get, list by filters, create,
//! rename, delete).

mod server_support;

use std::collections::BTreeMap;

use fleetsim_core::api::{
    AgentInclude, AgentQuery, ApiRequest, ApiResponse, Credential, ErrorKind, PoolQuery,
};
use fleetsim_core::proto::{TaskAgent, TaskAgentPool, TaskAgentPoolUpdate, TaskAgentUpdate};
use fleetsim_core::server::{PatConfig, SCOPE_AGENTPOOLS_READ, ServerConfig};
use server_support::*;

fn patch(agent_id: u64, update: TaskAgentUpdate) -> ApiRequest {
    ApiRequest::UpdateAgent {
        pool_id: 1,
        agent_id,
        update,
    }
}

fn enabled(value: bool) -> TaskAgentUpdate {
    TaskAgentUpdate {
        enabled: Some(value),
        ..TaskAgentUpdate::default()
    }
}

fn agent(resp: ApiResponse) -> TaskAgent {
    match resp {
        ApiResponse::Agent(a) => *a,
        other => panic!("expected an agent, got {other:?}"),
    }
}

fn agents(resp: ApiResponse) -> Vec<TaskAgent> {
    match resp {
        ApiResponse::Agents(list) => list.value,
        other => panic!("expected agents, got {other:?}"),
    }
}

fn pool(resp: ApiResponse) -> TaskAgentPool {
    match resp {
        ApiResponse::Pool(p) => p,
        other => panic!("expected a pool, got {other:?}"),
    }
}

fn pools(h: &mut Harness, query: PoolQuery) -> Vec<String> {
    match h.call(pat(), ApiRequest::QueryPools { query }) {
        ApiResponse::Pools(list) => list.value.into_iter().map(|p| p.name).collect(),
        other => panic!("expected pools, got {other:?}"),
    }
}

// Goal: PATCH `enabled: false` disables an agent: GET shows it, a queued job is not
// dispatched to it (its parked poll stays parked) but to an enabled agent; re-enabling it with
// a job waiting hands that job to it at once.
#[test]
fn a_disabled_agent_gets_no_job_until_enabled_again() {
    let mut h = Harness::new(config());
    let quiet = online_agent(&mut h, "quiet", &[]);
    let other = online_agent(&mut h, "other", &[]);
    let updated = agent(h.call(pat(), patch(quiet.id, enabled(false))));
    assert_eq!(updated.enabled, Some(false));
    let get = ApiRequest::GetAgent {
        pool_id: 1,
        agent_id: quiet.id,
    };
    assert_eq!(agent(h.call(pat(), get.clone())).enabled, Some(false));

    let (poll, answer) = h.send(bearer(&quiet.token), get_message(&quiet, None));
    assert_eq!(answer, None, "parked");
    let first = queue(&mut h, vec![simple_job(1, 0, &[])]);
    assert_eq!(
        h.released_for(poll),
        None,
        "nothing dispatched to a disabled agent"
    );
    let owner = |h: &Harness, id| {
        h.server
            .job_request(id)
            .and_then(|v| v.reserved_agent)
            .map(|r| r.id)
    };
    assert_eq!(owner(&h, first[0].request_id), Some(other.id));

    // `other` is busy now; a second job waits until `quiet` is enabled again.
    let second = queue(&mut h, vec![simple_job(1, 0, &[])]);
    assert_eq!(owner(&h, second[0].request_id), None);
    assert_eq!(h.released_for(poll), None);
    assert_eq!(
        agent(h.call(pat(), patch(quiet.id, enabled(true)))).enabled,
        Some(true)
    );
    assert!(
        matches!(h.released_for(poll), Some(ApiResponse::Message(_))),
        "re-enabled: the parked poll takes the waiting job: {:?}",
        h.released
    );
    assert_eq!(owner(&h, second[0].request_id), Some(quiet.id));
}

// Goal: PATCH changes only what the body names (name, user capabilities) and keeps the rest;
// an id in the body that is not the path's, a name another agent has, or a listener token are
// refused with typed errors and change nothing.
#[test]
fn patch_is_partial_and_checked() {
    let mut h = Harness::new(config());
    let a = register(&mut h, "a", &[("Agent.OS", "Linux")]);
    let b = register(&mut h, "b", &[]);
    let update = TaskAgentUpdate {
        name: Some("renamed".into()),
        user_capabilities: Some(BTreeMap::from([("gpu".into(), "1".into())])),
        ..TaskAgentUpdate::default()
    };
    let after = agent(h.call(pat(), patch(a.id, update)));
    assert_eq!(after.name, "renamed");
    assert_eq!(after.enabled, Some(true), "enabled untouched");
    assert_eq!(after.system_capabilities["Agent.OS"], "Linux");
    assert_eq!(after.user_capabilities["gpu"], "1");
    let by_name = ApiRequest::ListAgents {
        pool_id: 1,
        agent_name: Some("RENAMED".into()),
    };
    assert_eq!(agents(h.call(pat(), by_name))[0].id, a.id);

    let wrong_id = TaskAgentUpdate {
        id: Some(b.id),
        enabled: Some(false),
        ..TaskAgentUpdate::default()
    };
    h.expect_error(pat(), patch(a.id, wrong_id), ErrorKind::BadRequest);
    let taken = TaskAgentUpdate {
        name: Some("B".into()),
        ..TaskAgentUpdate::default()
    };
    h.expect_error(pat(), patch(a.id, taken), ErrorKind::AgentExists);
    let online = online_agent(&mut h, "online", &[]);
    h.expect_error(
        bearer(&online.token),
        patch(online.id, enabled(false)),
        ErrorKind::AccessDenied,
    );
    h.expect_error(pat(), patch(999, enabled(false)), ErrorKind::AgentNotFound);
    let get = ApiRequest::GetAgent {
        pool_id: 1,
        agent_id: a.id,
    };
    let now = agent(h.call(pat(), get));
    assert_eq!((now.name.as_str(), now.enabled), ("renamed", Some(true)));
}

// Goal: GET shows capabilities, the assigned request and the last completed request only when
// asked (`include*`), as the real service does; demands filter the listing.
#[test]
fn get_shows_only_what_is_asked_for() {
    let mut h = Harness::new(config());
    let worker = online_agent(&mut h, "worker", &[("docker", "1")]);
    let _plain = online_agent(&mut h, "plain", &[]);
    let queued = queue(&mut h, vec![simple_job(1, 0, &["docker"])]);
    let request_id = queued[0].request_id;

    let all = AgentInclude {
        capabilities: true,
        assigned_request: true,
        last_completed_request: true,
        property_filters: Some("x,y".into()),
    };
    let get = |include: AgentInclude| ApiRequest::GetAgentWith {
        pool_id: 1,
        agent_id: worker.id,
        include,
    };
    let bare = agent(h.call(
        pat(),
        ApiRequest::GetAgent {
            pool_id: 1,
            agent_id: worker.id,
        },
    ));
    assert!(bare.system_capabilities.is_empty() && bare.assigned_request.is_none());
    let full = agent(h.call(pat(), get(all.clone())));
    assert_eq!(full.system_capabilities["docker"], "1");
    assert_eq!(
        full.assigned_request.map(|r| r.request_id),
        Some(request_id)
    );
    assert_eq!(full.last_completed_request, None, "nothing finished yet");

    let message = take_message(&mut h, &worker);
    let job = open_job(&worker, &message);
    finish(&mut h, &worker, request_id, &job.lock_token);
    let done = agent(h.call(pat(), get(all)));
    assert_eq!(done.assigned_request, None, "it holds no job now");
    assert_eq!(
        done.last_completed_request.map(|r| r.request_id),
        Some(request_id)
    );

    let query = |demands: &[&str]| ApiRequest::QueryAgents {
        pool_id: 1,
        query: AgentQuery {
            demands: demands.iter().map(|d| d.to_string()).collect(),
            include: AgentInclude {
                capabilities: true,
                ..AgentInclude::default()
            },
            ..AgentQuery::default()
        },
    };
    let names: Vec<String> = agents(h.call(pat(), query(&["docker"])))
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["worker"]);
    assert_eq!(agents(h.call(pat(), query(&[]))).len(), 2);
    h.expect_error(pat(), query(&["two words"]), ErrorKind::BadRequest);
}

// Goal: PUT replaces the agent as the real agent's `--replace` does: same id, new name and
// capabilities, the old install's session ends.
#[test]
fn put_replaces_and_ends_the_old_session() {
    let mut h = Harness::new(config());
    let old = online_agent(&mut h, "old", &[("old", "1")]);
    let replace = ApiRequest::ReplaceAgent {
        pool_id: 1,
        agent_id: old.id,
        agent: Box::new(agent_body("new", &[("new", "1")])),
    };
    let new = agent(h.call(pat(), replace));
    assert_eq!((new.id, new.name.as_str()), (old.id, "new"));
    assert_eq!(
        new.system_capabilities.get("new").map(String::as_str),
        Some("1")
    );
    h.expect_error(
        bearer(&old.token),
        get_message(&old, None),
        ErrorKind::Unauthorized,
    );
}

// Goal: pools as the clients manage them: get by id, list by name / ids / type /
// actionFilter, create with the next id, rename, delete only when empty; a read-only PAT sees
// no pool with `actionFilter=manage`.
#[test]
fn pools_are_listed_created_renamed_and_deleted() {
    let mut h = Harness::new(config_with_reader());
    let get = |pool_id| ApiRequest::GetPool {
        pool_id,
        query: PoolQuery::default(),
    };
    assert_eq!(pool(h.call(pat(), get(1))).name, "Default");
    h.expect_error(pat(), get(77), ErrorKind::PoolNotFound);

    let add = |name: &str| ApiRequest::AddPool {
        pool: TaskAgentPoolUpdate {
            name: Some(name.into()),
            pool_type: Some("automation".into()),
        },
    };
    let created = pool(h.call(pat(), add("linux")));
    assert!(created.id > 1 && created.pool_type == "automation");
    h.expect_error(pat(), add("LINUX"), ErrorKind::BadRequest);
    let deployment = ApiRequest::AddPool {
        pool: TaskAgentPoolUpdate {
            name: Some("deploy".into()),
            pool_type: Some("deployment".into()),
        },
    };
    h.expect_error(pat(), deployment, ErrorKind::BadRequest);

    let by_ids = PoolQuery {
        pool_ids: vec![created.id],
        ..PoolQuery::default()
    };
    assert_eq!(pools(&mut h, by_ids), ["linux"]);
    let deployment_pools = PoolQuery {
        pool_type: Some("deployment".into()),
        ..PoolQuery::default()
    };
    assert!(pools(&mut h, deployment_pools).is_empty());
    let manage = PoolQuery {
        action_filter: Some("manage".into()),
        ..PoolQuery::default()
    };
    assert_eq!(pools(&mut h, manage.clone()).len(), 2);
    let reader = Credential::Basic {
        user: "admin".into(),
        password: READER_PAT.into(),
    };
    match h.call(reader, ApiRequest::QueryPools { query: manage }) {
        ApiResponse::Pools(list) => assert!(list.value.is_empty(), "{list:?}"),
        other => panic!("{other:?}"),
    }

    let rename = ApiRequest::UpdatePool {
        pool_id: created.id,
        pool: TaskAgentPoolUpdate {
            name: Some("linux-x64".into()),
            pool_type: None,
        },
    };
    assert_eq!(pool(h.call(pat(), rename)).name, "linux-x64");

    // An agent in it blocks deletion; once it is gone the pool can go.
    let body = agent_body("in-pool", &[]);
    let added = agent(h.call(
        pat(),
        ApiRequest::AddAgent {
            pool_id: created.id,
            agent: Box::new(body),
        },
    ));
    let delete = ApiRequest::DeletePool {
        pool_id: created.id,
    };
    h.expect_error(pat(), delete.clone(), ErrorKind::BadRequest);
    let remove = ApiRequest::DeleteAgent {
        pool_id: created.id,
        agent_id: added.id,
    };
    assert_eq!(h.call(pat(), remove), ApiResponse::NoContent);
    assert_eq!(h.call(pat(), delete), ApiResponse::NoContent);
    h.expect_error(pat(), get(created.id), ErrorKind::PoolNotFound);
}

/// A PAT with the pools-read scope only.
const READER_PAT: &str = "reader-pat";

/// The harness config plus [`READER_PAT`].
fn config_with_reader() -> ServerConfig {
    let mut config = config();
    config.pats.push(PatConfig {
        token: READER_PAT.into(),
        scopes: vec![SCOPE_AGENTPOOLS_READ.into()],
        expires_at_unix_s: None,
    });
    config
}
