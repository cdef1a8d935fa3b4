//! The token and scope matrix: PATs (ok, unknown, expired, missing scope), listener tokens,
//! job tokens (own plan only, revoked at completion, rotation with a grace period) and forged
//! JWT client assertions. Every refusal is a typed error that changes no state.

mod server_support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fleetsim_core::api::{ApiRequest, ApiResponse, Credential, ErrorKind, TokenGrant};
use fleetsim_core::crypto::jwt;
use fleetsim_core::proto::{EVENT_JOB_COMPLETED, JobEvent, TaskLogCreate, TaskResult};
use fleetsim_core::server::{PatConfig, SCOPE_ADMIN, SCOPE_AGENTPOOLS_READ, ServerConfig};
use server_support::*;

const READ_PAT: &str = "read-only-pat";
const EXPIRED_PAT: &str = "expired-pat";

fn matrix_config() -> ServerConfig {
    let mut c = config();
    c.pats.push(PatConfig {
        token: READ_PAT.into(),
        scopes: vec![SCOPE_AGENTPOOLS_READ.into()],
        expires_at_unix_s: None,
    });
    c.pats.push(PatConfig {
        token: EXPIRED_PAT.into(),
        scopes: vec![SCOPE_ADMIN.into()],
        expires_at_unix_s: Some(EPOCH_MS / 1000 + 60),
    });
    c
}

fn basic(password: &str) -> Credential {
    Credential::Basic {
        user: "anyone".into(),
        password: password.into(),
    }
}

fn add(name: &str) -> ApiRequest {
    ApiRequest::AddAgent {
        pool_id: 1,
        agent: Box::new(agent_body(name, &[])),
    }
}

// Goal: each PAT failure has its own status and an actionable message; nothing is registered.
#[test]
fn pat_matrix_unknown_expired_and_missing_scope() {
    let mut h = Harness::new(matrix_config());
    let e = h.expect_error(basic("nope"), add("a"), ErrorKind::Unauthorized);
    assert!(e.message.contains("not known"), "{}", e.message);
    let e = h.expect_error(basic(READ_PAT), add("a"), ErrorKind::AccessDenied);
    assert!(e.message.contains("vso.agentpools_manage"), "{}", e.message);
    h.expect_error(Credential::Anonymous, add("a"), ErrorKind::Unauthorized);
    // The read PAT may list, but not queue jobs.
    assert!(matches!(
        h.call(basic(READ_PAT), ApiRequest::ListPools { pool_name: None }),
        ApiResponse::Pools(_)
    ));
    h.expect_error(
        basic(READ_PAT),
        ApiRequest::AdminStats,
        ErrorKind::AccessDenied,
    );
    // Admin works until the PAT's expiry, then 401 with the time in the message.
    assert!(matches!(
        h.call(basic(EXPIRED_PAT), ApiRequest::AdminStats),
        ApiResponse::Stats(_)
    ));
    h.advance(Duration::from_secs(61));
    let e = h.expect_error(
        basic(EXPIRED_PAT),
        ApiRequest::AdminStats,
        ErrorKind::Unauthorized,
    );
    assert!(
        e.message.contains("expired at 2026-11-25T21:23:00"),
        "{}",
        e.message
    );
    assert_eq!(
        h.server.stats().agents,
        0,
        "no refused request registered anything"
    );
    assert!(matches!(h.call(pat(), add("a")), ApiResponse::Agent(_)));
}

// Goal: a listener token works on listener routes only; a job token on its own plan only; and
// a job token stops at completion.
#[test]
fn token_kinds_are_confined_to_their_routes() {
    let mut h = Harness::new(config());
    let a = online_agent(&mut h, "a", &[]);
    let b = online_agent(&mut h, "b", &[]);
    queue(&mut h, vec![simple_job(1, 0, &[]), simple_job(1, 0, &[])]);
    let job_a = open_job(&a, &take_message(&mut h, &a));
    let job_b = open_job(&b, &take_message(&mut h, &b));
    let (token_a, token_b) = (job_token(&job_a), job_token(&job_b));
    let log = |job| ApiRequest::CreateLog {
        plan: plan_scope(job),
        log: TaskLogCreate {
            path: "logs\\1".into(),
        },
    };

    // Listener token: no plan hub, no PAT routes.
    h.expect_error(bearer(&a.token), log(&job_a), ErrorKind::PlanSecurity);
    h.expect_error(bearer(&a.token), add("x"), ErrorKind::AccessDenied);
    // PAT: no listener routes, no plan hub.
    h.expect_error(pat(), get_message(&a, None), ErrorKind::AccessDenied);
    h.expect_error(pat(), log(&job_a), ErrorKind::PlanSecurity);
    // Job token: its own plan only, never listener routes.
    assert!(matches!(
        h.call(bearer(&token_a), log(&job_a)),
        ApiResponse::Log(_)
    ));
    h.expect_error(bearer(&token_a), log(&job_b), ErrorKind::PlanSecurity);
    h.expect_error(
        bearer(&token_a),
        get_message(&a, None),
        ErrorKind::AccessDenied,
    );
    // One agent cannot use another's session.
    let steal = get_message(&b, None);
    h.expect_error(bearer(&a.token), steal, ErrorKind::AccessDenied);
    // Unknown bearer: 401 (the harness checks the Bearer challenge on every 401).
    h.expect_error(
        bearer("forged"),
        get_message(&a, None),
        ErrorKind::Unauthorized,
    );

    // Completion revokes the job token.
    let done = ApiRequest::PostEvent {
        plan: plan_scope(&job_b),
        event: JobEvent {
            name: EVENT_JOB_COMPLETED.into(),
            job_id: job_b.job_id.clone(),
            request_id: job_b.request_id,
            result: Some(TaskResult::Succeeded),
        },
    };
    assert_eq!(h.call(bearer(&token_b), done), ApiResponse::Ok);
    h.expect_error(bearer(&token_b), log(&job_b), ErrorKind::Unauthorized);
}

// Goal: rotation (extension) gives a new job token; the old one works through the grace
// period, then fails; an old token cannot be rotated again.
#[test]
fn job_token_rotation_with_grace() {
    let mut h = Harness::new(config());
    let a = online_agent(&mut h, "rotor", &[]);
    queue(&mut h, vec![simple_job(1, 0, &[])]);
    let job = open_job(&a, &take_message(&mut h, &a));
    let old = job_token(&job);
    let refresh = |t: &str| {
        ApiRequest::Token(TokenGrant::Refresh {
            refresh_token: t.into(),
        })
    };
    let ApiResponse::Token(t) = h.call(Credential::Anonymous, refresh(&old)) else {
        panic!("rotation")
    };
    let new = t.access_token;
    assert_ne!(new, old);
    let log = ApiRequest::CreateLog {
        plan: plan_scope(&job),
        log: TaskLogCreate { path: "l".into() },
    };
    assert!(matches!(
        h.call(bearer(&new), log.clone()),
        ApiResponse::Log(_)
    ));
    h.advance(Duration::from_secs(29));
    assert!(
        matches!(h.call(bearer(&old), log.clone()), ApiResponse::Log(_)),
        "inside the grace"
    );
    h.expect_error(
        Credential::Anonymous,
        refresh(&old),
        ErrorKind::OAuthInvalidGrant,
    );
    h.advance(Duration::from_secs(2));
    h.expect_error(bearer(&old), log.clone(), ErrorKind::JobTokenExpired);
    assert!(matches!(h.call(bearer(&new), log), ApiResponse::Log(_)));
    assert_eq!(h.server.stats().tokens_rotated, 1);
    // A listener token is not a refresh token.
    h.expect_error(
        Credential::Anonymous,
        refresh(&a.token),
        ErrorKind::OAuthInvalidGrant,
    );
}

/// A JWT with an arbitrary header and signature.
fn forge(header: &str, claims: &jwt::Claims, signature: &[u8]) -> String {
    let claims = serde_json::to_vec(claims).unwrap();
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

// Goal: every forged or stale assertion is refused with invalid_client, and a refused one does
// not burn its jti (the genuine assertion still works after).
#[test]
fn forged_assertions_are_refused() {
    let mut h = Harness::new(config());
    let agent = register(&mut h, "target", &[]);
    let now_s = h.now_s();
    let claims = jwt::Claims {
        iss: agent.client_id.clone(),
        sub: agent.client_id.clone(),
        aud: agent.authorization_url.clone(),
        nbf: now_s,
        exp: now_s + 300,
        jti: "jti-1".into(),
    };
    let with = |f: &dyn Fn(&mut jwt::Claims)| {
        let mut c = claims.clone();
        f(&mut c);
        c
    };
    let forged = [
        (
            "alg none",
            forge(r#"{"typ":"JWT","alg":"none"}"#, &claims, b""),
        ),
        (
            "HS256",
            forge(r#"{"typ":"JWT","alg":"HS256"}"#, &claims, &[7; 32]),
        ),
        ("wrong key", jwt::sign(other_key(), &claims)),
        (
            "wrong audience",
            jwt::sign(key(), &with(&|c| c.aud = "https://evil/token".into())),
        ),
        (
            "expired",
            jwt::sign(
                key(),
                &with(&|c| (c.nbf, c.exp) = (now_s - 3600, now_s - 1200)),
            ),
        ),
        (
            "not yet valid",
            jwt::sign(key(), &with(&|c| c.nbf = now_s + 3600)),
        ),
        (
            "iss != sub",
            jwt::sign(key(), &with(&|c| c.sub = "someone-else".into())),
        ),
        (
            "unknown client",
            jwt::sign(key(), &with(&|c| (c.iss, c.sub) = ("x".into(), "x".into()))),
        ),
        ("garbage", "not.a.jwt".to_string()),
    ];
    for (what, assertion) in forged {
        let e = h.expect_error(
            Credential::Anonymous,
            client_credentials(assertion),
            ErrorKind::OAuthInvalidClient,
        );
        assert!(!e.message.is_empty(), "{what}");
    }
    let wrong_type = ApiRequest::Token(TokenGrant::ClientCredentials {
        client_assertion_type: "password".into(),
        client_assertion: jwt::sign(key(), &claims),
    });
    h.expect_error(
        Credential::Anonymous,
        wrong_type,
        ErrorKind::OAuthInvalidClient,
    );
    assert_eq!(h.server.stats().tokens_issued, 0);

    // The genuine assertion works once; its replay is refused.
    let genuine = jwt::sign(key(), &claims);
    assert!(matches!(
        h.call(Credential::Anonymous, client_credentials(genuine.clone())),
        ApiResponse::Token(_)
    ));
    let e = h.expect_error(
        Credential::Anonymous,
        client_credentials(genuine),
        ErrorKind::OAuthInvalidClient,
    );
    assert!(e.message.contains("already used"), "{}", e.message);
}

// Goal: an expired listener token is a 401 (the agent re-mints); a fresh one works again.
#[test]
fn listener_token_expiry_forces_a_new_exchange() {
    let mut c = config();
    c.listener_token_ttl = Duration::from_secs(60);
    c.session_idle_timeout = Duration::from_secs(600);
    let mut h = Harness::new(c);
    let mut a = online_agent(&mut h, "short", &[]);
    h.advance(Duration::from_secs(61));
    h.expect_error(
        bearer(&a.token),
        get_message(&a, Some(0)),
        ErrorKind::Unauthorized,
    );
    fetch_token(&mut h, &mut a);
    let (_, answer) = h.send(bearer(&a.token), get_message(&a, Some(0)));
    assert_eq!(answer, None, "the new token polls again (held)");
}

// Goal: deleting an agent revokes its tokens, answers its parked poll, and requeues its job;
// replacing keeps the id and user capabilities and takes the new key.
#[test]
fn delete_revokes_and_replace_keeps_identity() {
    let mut h = Harness::new(config());
    let a = online_agent(&mut h, "doomed", &[]);
    let (poll, _) = h.send(bearer(&a.token), get_message(&a, None));
    let delete = ApiRequest::DeleteAgent {
        pool_id: 1,
        agent_id: a.id,
    };
    assert_eq!(h.call(pat(), delete.clone()), ApiResponse::NoContent);
    assert!(matches!(
        h.released_for(poll),
        Some(ApiResponse::Error(e)) if e.kind == ErrorKind::AccessTokenExpired
    ));
    h.expect_error(
        bearer(&a.token),
        get_message(&a, None),
        ErrorKind::Unauthorized,
    );
    h.expect_error(pat(), delete, ErrorKind::AgentNotFound);

    let b = register(&mut h, "phoenix", &[("old", "1")]);
    let mut body = agent_body("phoenix", &[("new", "2")]);
    body.user_capabilities.insert("ignored".into(), "x".into());
    let replace = ApiRequest::ReplaceAgent {
        pool_id: 1,
        agent_id: b.id,
        agent: Box::new(body),
    };
    let ApiResponse::Agent(r) = h.call(pat(), replace) else {
        panic!("replace")
    };
    assert_eq!(r.id, b.id);
    assert_eq!(
        r.authorization.and_then(|x| x.client_id),
        Some(b.client_id.clone())
    );
    assert!(
        r.system_capabilities.contains_key("new") && !r.system_capabilities.contains_key("old")
    );
    assert!(
        r.user_capabilities.is_empty(),
        "user capabilities are the server's, not the PUT's"
    );
    h.expect_error(pat(), add("phoenix"), ErrorKind::AgentExists);
}

// Goal: the head-only check the front runs before reading a body refuses exactly the clients
// that are not authenticated (anonymous, malformed header, unknown or expired PAT, a token never
// issued) with 401 on every route but the token endpoint, and passes a known credential
// whatever its scopes or expiry so the route's own, more specific answer still comes after.
#[test]
fn head_check_refuses_unauthenticated_clients_before_the_body() {
    let mut h = Harness::new(matrix_config());
    let agents = "/org/_apis/distributedtask/pools/1/agents";
    let head = |h: &Harness, path: &str, auth: Option<&str>| {
        h.server.check_head(h.now, path, auth).map_err(|e| e.kind)
    };
    let basic_header = |pat: &str| fleetsim_core::codec::text::basic_header("u", pat);
    let unauthorized = Err(ErrorKind::Unauthorized);
    assert_eq!(head(&h, agents, None), unauthorized);
    assert_eq!(head(&h, agents, Some("Digest x")), unauthorized);
    assert_eq!(head(&h, agents, Some(&basic_header("nope"))), unauthorized);
    assert_eq!(head(&h, agents, Some("Bearer never-issued")), unauthorized);
    assert_eq!(head(&h, "/org/_apis/no/such/route", None), unauthorized);
    // The token endpoint's client proves itself in the body.
    assert_eq!(head(&h, "/org/_apis/oauth2/token", None), Ok(()));
    assert_eq!(head(&h, agents, Some(&basic_header(PAT))), Ok(()));
    // A PAT without the route's scope is authenticated: the route answers 403 later.
    assert_eq!(head(&h, agents, Some(&basic_header(READ_PAT))), Ok(()));
    let mut agent = register(&mut h, "head-check", &[]);
    fetch_token(&mut h, &mut agent);
    let bearer_header = format!("Bearer {}", agent.token);
    assert_eq!(head(&h, agents, Some(&bearer_header)), Ok(()));
    h.advance(Duration::from_secs(120));
    assert_eq!(
        head(&h, agents, Some(&basic_header(EXPIRED_PAT))),
        unauthorized
    );
}

// Goal: the token-expiry admin route (a live token-expiry storm) expires the listener tokens of
// exactly the agents its selection names — by the fleet's `{prefix}{index}` names — so their
// next listener call meets 401; others keep working; only the admin PAT may call it, and an
// oversized body is a typed 400 that changes nothing.
#[test]
fn token_expiry_route_expires_the_selected_agents_tokens_only() {
    use fleetsim_core::api::{TOKEN_EXPIRY_PREFIX_MAX, TokenExpiry};
    use fleetsim_core::faults::Selection;
    let mut h = Harness::new(matrix_config());
    let mut hit = online_agent(&mut h, "fleet-1", &[]);
    let spared = online_agent(&mut h, "fleet-2", &[]);
    let storm = |agents| {
        ApiRequest::ExpireTokens(TokenExpiry {
            name_prefix: "fleet-".into(),
            agents,
        })
    };
    h.expect_error(
        basic(READ_PAT),
        storm(Selection::All),
        ErrorKind::AccessDenied,
    );
    let long = ApiRequest::ExpireTokens(TokenExpiry {
        name_prefix: "x".repeat(TOKEN_EXPIRY_PREFIX_MAX + 1),
        agents: Selection::All,
    });
    h.expect_error(pat(), long, ErrorKind::BadRequest);
    match h.call(pat(), storm(Selection::Agents(vec![1]))) {
        ApiResponse::TokensExpired(t) => assert_eq!(t.expired, 1),
        other => panic!("storm: {other:?}"),
    }
    h.expect_error(
        bearer(&hit.token),
        get_message(&hit, None),
        ErrorKind::Unauthorized,
    );
    let (_, spared_poll) = h.send(bearer(&spared.token), get_message(&spared, None));
    assert!(
        !matches!(spared_poll, Some(ApiResponse::Error(_))),
        "the spared agent's token still works: {spared_poll:?}"
    );
    // A new token (the agent's answer to the 401) works again.
    h.advance(Duration::from_secs(1));
    fetch_token(&mut h, &mut hit);
    let (_, poll) = h.send(bearer(&hit.token), get_message(&hit, None));
    assert!(!matches!(poll, Some(ApiResponse::Error(_))), "{poll:?}");
}
