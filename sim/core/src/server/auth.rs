//! Who may call what: PATs with scopes and expiry, opaque OAuth tokens (listener and job), the
//! token endpoint (JWT client assertion and the job-token refresh grant), and JWT replay
//! protection.
//!
//! Tokens are 256-bit random strings from the server's seeded stream, looked up in a table that
//! stays bounded: an agent keeps at most `max_listener_tokens_per_agent` listener tokens (the
//! oldest is revoked when it mints another), and job tokens leave the table when their job ends
//! or is requeued, or when a rotated token's grace period is over and the job rotates again.
//! This module never logs or formats a token or PAT value into an error message.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::Server;
use crate::SimTime;
use crate::api::{ApiError, ApiResponse, Credential, ErrorKind, TokenGrant};
use crate::codec::JWT_BEARER_ASSERTION_TYPE;
use crate::crypto::jwt::{self, Claims, JwtError};
use crate::event::CryptoOp;
use crate::proto::TokenResponse;

use super::config::{
    SCOPE_ADMIN, SCOPE_AGENTPOOLS_MANAGE, SCOPE_AGENTPOOLS_READ, SCOPE_BUILD_EXECUTE,
    SCOPE_BUILD_READ,
};

/// What a token is good for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum TokenKind {
    /// The agent's listener token: pools, agents (read), sessions, messages, job requests.
    Listener { agent: u64 },
    /// A job token: the plan hub of one job request's plan.
    Job { request: u64 },
}

#[derive(Clone, Debug)]
pub(super) struct TokenEntry {
    pub kind: TokenKind,
    pub expires_at: SimTime,
}

/// The token table.
#[derive(Default)]
pub(super) struct Tokens {
    /// Keyed inline: a lookup reads the bucket, not a second allocation for the key.
    map: super::fasthash::FastMap<super::fasthash::InlineKey, TokenEntry>,
}

impl Tokens {
    pub fn get(&self, token: &str) -> Option<&TokenEntry> {
        self.map.get(token.as_bytes())
    }
    pub fn insert(&mut self, token: String, entry: TokenEntry) {
        self.map
            .insert(super::fasthash::InlineKey::new(&token), entry);
    }
    pub fn remove(&mut self, token: &str) {
        self.map.remove(token.as_bytes());
    }
    pub fn shorten(&mut self, token: &str, until: SimTime) {
        if let Some(e) = self.map.get_mut(token.as_bytes()) {
            e.expires_at = e.expires_at.min(until);
        }
    }
}

/// JWT ids seen, remembered until their assertion expires (plus skew), so a replay inside the
/// validity window is caught and the set stays bounded: by time (an assertion lives at most
/// `jwt_max_lifetime`) and per agent (`max_jtis_per_agent`), so one agent cannot fill it for
/// all the others.
#[derive(Default)]
pub(super) struct JtiSet {
    seen: BTreeSet<String>,
    /// (exp, agent, jti), oldest expiry first.
    by_expiry: BTreeSet<(u64, u64, String)>,
    /// Remembered ids per agent (agents with none are absent).
    per_agent: BTreeMap<u64, usize>,
}

impl JtiSet {
    fn contains(&self, jti: &str) -> bool {
        self.seen.contains(jti)
    }
    fn prune(&mut self, now_s: u64, skew_s: u64) {
        while let Some((exp, _, _)) = self.by_expiry.first() {
            if exp.saturating_add(skew_s) > now_s {
                break;
            }
            if let Some((_, agent, jti)) = self.by_expiry.pop_first() {
                self.seen.remove(&jti);
                if let Some(n) = self.per_agent.get_mut(&agent) {
                    *n -= 1;
                    if *n == 0 {
                        self.per_agent.remove(&agent);
                    }
                }
            }
        }
    }
    fn len(&self) -> usize {
        self.seen.len()
    }
    fn of_agent(&self, agent: u64) -> usize {
        self.per_agent.get(&agent).copied().unwrap_or(0)
    }
    fn insert(&mut self, agent: u64, jti: String, exp: u64) {
        self.seen.insert(jti.clone());
        self.by_expiry.insert((exp, agent, jti));
        *self.per_agent.entry(agent).or_default() += 1;
    }
}

/// What a PAT-authenticated route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Need {
    /// List/get pools and agents (read or manage scope; a listener token also passes).
    Read,
    /// Register, replace, delete agents.
    Manage,
    /// Emulator admin routes.
    Admin,
    /// Read pipeline runs (build read or execute scope).
    BuildRead,
    /// Queue and cancel pipeline runs.
    BuildExecute,
}

impl Need {
    fn satisfied_by(self, scopes: &[String]) -> bool {
        let has = |s: &str| scopes.iter().any(|x| x == s);
        match self {
            Need::Read => has(SCOPE_AGENTPOOLS_READ) || has(SCOPE_AGENTPOOLS_MANAGE),
            Need::Manage => has(SCOPE_AGENTPOOLS_MANAGE),
            Need::Admin => has(SCOPE_ADMIN),
            Need::BuildRead => has(SCOPE_BUILD_READ) || has(SCOPE_BUILD_EXECUTE),
            Need::BuildExecute => has(SCOPE_BUILD_EXECUTE),
        }
    }
    fn scope(self) -> &'static str {
        match self {
            Need::Read => SCOPE_AGENTPOOLS_READ,
            Need::Manage => SCOPE_AGENTPOOLS_MANAGE,
            Need::Admin => SCOPE_ADMIN,
            Need::BuildRead => SCOPE_BUILD_READ,
            Need::BuildExecute => SCOPE_BUILD_EXECUTE,
        }
    }
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::Unauthorized, message)
}

fn anonymous() -> ApiError {
    unauthorized(
        "this route needs credentials: HTTP Basic with a PAT as the password, or a Bearer token \
         from the token endpoint",
    )
}

fn unknown_bearer() -> ApiError {
    unauthorized(
        "the bearer token is unknown, expired or revoked; get a new one from the token endpoint",
    )
}

fn invalid_client(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::OAuthInvalidClient, message)
}

impl Server {
    /// Authentication from the request head alone, for the front to ask before it reads a
    /// body: as Azure DevOps does, a client that is not authenticated gets 401 whatever its
    /// body holds, so a body-validation answer (400) never tells an anonymous client anything
    /// and an unauthenticated upload is refused before a byte of it is buffered.
    ///
    /// Refused here: a missing or malformed `Authorization` on a route that needs one
    /// (`codec::needs_credential`), a PAT that is unknown or expired, a bearer token this
    /// server never issued or has revoked. Passed on: a known PAT whatever its scopes and a
    /// known token even when expired, so the route's own check (after the body) still answers
    /// with its specific error (403 scope, `JobTokenExpired`, …). Read-only, like every check.
    pub fn check_head(
        &self,
        now: SimTime,
        path: &str,
        authorization: Option<&str>,
    ) -> Result<(), ApiError> {
        if !crate::codec::needs_credential(path) {
            return Ok(());
        }
        match crate::codec::decode_credential(authorization)? {
            Credential::Anonymous => Err(anonymous()),
            cred @ Credential::Basic { .. } => match self.require_pat(now, &cred, Need::Read) {
                Err(e) if e.kind == ErrorKind::Unauthorized => Err(e),
                _ => Ok(()),
            },
            Credential::Bearer(token) if self.tokens.get(&token).is_none() => Err(unknown_bearer()),
            Credential::Bearer(_) => Ok(()),
        }
    }

    /// The PAT in a Basic credential, checked for existence, expiry and scope.
    pub(super) fn require_pat(
        &self,
        now: SimTime,
        cred: &Credential,
        need: Need,
    ) -> Result<(), ApiError> {
        match cred {
            Credential::Anonymous => Err(anonymous()),
            Credential::Bearer(_) => Err(ApiError::new(
                ErrorKind::AccessDenied,
                format!(
                    "this route needs a PAT with scope {} (HTTP Basic, any user name), not a \
                     bearer token",
                    need.scope()
                ),
            )),
            Credential::Basic { password, .. } => {
                let Some(pat) = self.cfg.pats.iter().find(|p| p.token == *password) else {
                    return Err(unauthorized(
                        "the PAT (the Basic password) is not known to this emulator; use one \
                         listed in server.toml or FLEETSIM_PAT",
                    ));
                };
                let now_s = self.unix_ms(now) / 1000;
                if let Some(exp) = pat.expires_at_unix_s
                    && exp <= now_s
                {
                    return Err(unauthorized(format!(
                        "the PAT expired at {}; create a new one or extend expires_at_unix_s",
                        crate::codec::iso8601_utc(exp.saturating_mul(1000))
                    )));
                }
                if need.satisfied_by(&pat.scopes) {
                    Ok(())
                } else {
                    Err(ApiError::new(
                        ErrorKind::AccessDenied,
                        format!(
                            "the PAT lacks scope {}; add it to the PAT's scopes",
                            need.scope()
                        ),
                    ))
                }
            }
        }
    }

    /// A PAT with `need`, or (for reads) a valid listener token.
    pub(super) fn require_pat_or_listener(
        &self,
        now: SimTime,
        cred: &Credential,
        need: Need,
    ) -> Result<(), ApiError> {
        if let Credential::Bearer(_) = cred {
            self.listener_agent(now, cred).map(|_| ())
        } else {
            self.require_pat(now, cred, need)
        }
    }

    /// Any valid credential (discovery routes): a known unexpired PAT or token.
    pub(super) fn any_credential(&self, now: SimTime, cred: &Credential) -> Result<(), ApiError> {
        match cred {
            Credential::Anonymous => Err(anonymous()),
            Credential::Basic { .. } => self.require_pat(now, cred, Need::Read).or_else(|e| {
                // Any known PAT may discover, whatever its scopes.
                if e.kind == ErrorKind::AccessDenied {
                    Ok(())
                } else {
                    Err(e)
                }
            }),
            Credential::Bearer(token) => match self.tokens.get(token) {
                Some(e) if e.expires_at > now => Ok(()),
                _ => Err(unknown_bearer()),
            },
        }
    }

    /// The agent whose listener token `cred` carries.
    pub(super) fn listener_agent(&self, now: SimTime, cred: &Credential) -> Result<u64, ApiError> {
        match cred {
            Credential::Anonymous => Err(anonymous()),
            Credential::Basic { .. } => Err(ApiError::new(
                ErrorKind::AccessDenied,
                "sessions, messages and job requests need the agent's OAuth token (from the \
                 token endpoint), not a PAT",
            )),
            Credential::Bearer(token) => match self.tokens.get(token) {
                None => Err(unknown_bearer()),
                Some(e) if e.expires_at <= now => Err(unauthorized(
                    "the listener token expired; get a new one from the token endpoint",
                )),
                Some(TokenEntry {
                    kind: TokenKind::Listener { agent },
                    ..
                }) => Ok(*agent),
                Some(TokenEntry {
                    kind: TokenKind::Job { .. },
                    ..
                }) => Err(ApiError::new(
                    ErrorKind::AccessDenied,
                    "a job token only works on its plan's routes; use the agent's listener token",
                )),
            },
        }
    }

    /// The job request whose job token `cred` carries, checked against `plan_id`.
    pub(super) fn job_for_plan(
        &self,
        now: SimTime,
        cred: &Credential,
        plan_id: &str,
    ) -> Result<u64, ApiError> {
        let token = match cred {
            Credential::Anonymous => return Err(anonymous()),
            Credential::Basic { .. } => {
                return Err(ApiError::new(
                    ErrorKind::PlanSecurity,
                    "plan routes need the job's access token (SystemVssConnection), not a PAT",
                ));
            }
            Credential::Bearer(token) => token,
        };
        match self.tokens.get(token) {
            None => Err(unknown_bearer()),
            Some(TokenEntry {
                kind: TokenKind::Listener { .. },
                ..
            }) => Err(ApiError::new(
                ErrorKind::PlanSecurity,
                "plan routes need the job's access token (SystemVssConnection), not the \
                 listener token",
            )),
            Some(e) if e.expires_at <= now => Err(ApiError::new(
                ErrorKind::JobTokenExpired,
                "the job token expired (or was rotated and its grace period ended)",
            )),
            Some(TokenEntry {
                kind: TokenKind::Job { request },
                ..
            }) => {
                let same_plan = self.jobs.get(request).is_some_and(|j| j.plan_id == plan_id);
                if same_plan {
                    Ok(*request)
                } else {
                    Err(ApiError::new(
                        ErrorKind::PlanSecurity,
                        "this job token belongs to another plan",
                    ))
                }
            }
        }
    }

    /// A fresh opaque token string.
    fn mint_token_value(&mut self) -> String {
        let bytes: [u8; 32] = self.random_bytes();
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Mint a listener token for `agent`, revoking its oldest beyond the per-agent bound.
    fn mint_listener_token(&mut self, now: SimTime, agent: u64) -> String {
        let token = self.mint_token_value();
        let expires_at = now + self.cfg.listener_token_ttl;
        self.tokens.insert(
            token.clone(),
            TokenEntry {
                kind: TokenKind::Listener { agent },
                expires_at,
            },
        );
        self.counters.tokens_issued += 1;
        let max = self.cfg.limits.max_listener_tokens_per_agent;
        self.journal.agent(agent);
        if let Some(rec) = self.agents.get_mut(&agent) {
            rec.listener_tokens.push_back(token.clone());
            while rec.listener_tokens.len() > max {
                if let Some(old) = rec.listener_tokens.pop_front() {
                    self.tokens.remove(&old);
                }
            }
        }
        token
    }

    /// Mint a job token for job request `request` (recorded on the job).
    pub(super) fn mint_job_token(&mut self, now: SimTime, request: u64) -> String {
        let token = self.mint_token_value();
        let expires_at = now + self.cfg.job_token_ttl;
        self.tokens.insert(
            token.clone(),
            TokenEntry {
                kind: TokenKind::Job { request },
                expires_at,
            },
        );
        self.counters.tokens_issued += 1;
        self.journal.job(request);
        if let Some(job) = self.jobs.get_mut(&request) {
            job.tokens.push(token.clone());
        }
        token
    }

    /// Revoke every token of an agent's listener.
    pub(super) fn revoke_listener_tokens(&mut self, agent: u64) {
        self.journal.agent(agent);
        if let Some(rec) = self.agents.get_mut(&agent) {
            for token in rec.listener_tokens.drain(..) {
                self.tokens.remove(&token);
            }
        }
    }

    /// Revoke every token of a job request.
    pub(super) fn revoke_job_tokens(&mut self, request: u64) {
        self.journal.job(request);
        if let Some(job) = self.jobs.get_mut(&request) {
            for token in job.tokens.drain(..) {
                self.tokens.remove(&token);
            }
        }
    }

    /// The token endpoint.
    pub(super) fn token(
        &mut self,
        now: SimTime,
        grant: TokenGrant,
    ) -> Result<ApiResponse, ApiError> {
        match grant {
            TokenGrant::ClientCredentials {
                client_assertion_type,
                client_assertion,
            } => {
                if client_assertion_type != JWT_BEARER_ASSERTION_TYPE {
                    return Err(invalid_client(format!(
                        "client_assertion_type must be {JWT_BEARER_ASSERTION_TYPE}"
                    )));
                }
                self.client_credentials(now, &client_assertion)
            }
            TokenGrant::Refresh { refresh_token } => self.refresh_job_token(now, &refresh_token),
        }
    }

    fn client_credentials(
        &mut self,
        now: SimTime,
        assertion: &str,
    ) -> Result<ApiResponse, ApiError> {
        let peeked = jwt::peek_claims(assertion).map_err(|e| invalid_client(e.to_string()))?;
        let Some(&agent) = self.clients.get(&peeked.iss) else {
            return Err(invalid_client(
                "the assertion's client id (iss) is not a registered agent; register it again",
            ));
        };
        let now_s = self.unix_ms(now) / 1000;
        let skew_s = self.cfg.jwt_skew.as_secs();
        // Checked before the signature (no RSA work for it): a long-lived assertion would keep
        // its jti in the replay set for as long.
        // Clients may back-date nbf by up to the skew tolerance, so that much more is allowed.
        let lifetime_s = peeked.exp.saturating_sub(peeked.nbf);
        let max_lifetime_s = self.cfg.jwt_max_lifetime.as_secs().saturating_add(skew_s);
        if lifetime_s > max_lifetime_s {
            return Err(invalid_client(format!(
                "the assertion is valid for {lifetime_s} s (exp - nbf); at most {max_lifetime_s} s \
                 (jwt_max_lifetime + jwt_skew) is accepted: set exp at most 5 minutes after now"
            )));
        }
        let claims = self.verify_assertion(agent, assertion, peeked, now_s, skew_s)?;
        if claims.jti.is_empty() || claims.jti.len() > 128 {
            return Err(invalid_client(
                "the assertion needs a jti of 1..=128 characters",
            ));
        }
        self.jtis.prune(now_s, skew_s);
        if self.jtis.contains(&claims.jti) {
            return Err(invalid_client(
                "the assertion's jti was already used; make a fresh one",
            ));
        }
        if self.jtis.len() >= self.cfg.limits.max_remembered_jtis {
            return Err(Self::throttled(
                "remembered JWT ids",
                self.cfg.limits.max_remembered_jtis,
            ));
        }
        if self.jtis.of_agent(agent) >= self.cfg.limits.max_jtis_per_agent {
            return Err(Self::throttled(
                "remembered JWT ids for this agent (its assertions are forgotten as they expire)",
                self.cfg.limits.max_jtis_per_agent,
            ));
        }
        self.jtis.insert(agent, claims.jti, claims.exp);
        let token = self.mint_listener_token(now, agent);
        Ok(ApiResponse::Token(TokenResponse {
            access_token: token,
            token_type: "Bearer".to_string(),
            expires_in: self.cfg.listener_token_ttl.as_secs(),
            scope: String::new(),
            refresh_token: None,
        }))
    }

    /// Real mode: the full RS256 check against the registered key. Modelled mode: the same
    /// claim checks without the signature (the virtual agent has no key), counted as one
    /// modelled verification.
    fn verify_assertion(
        &mut self,
        agent: u64,
        assertion: &str,
        peeked: Claims,
        now_s: u64,
        skew_s: u64,
    ) -> Result<Claims, ApiError> {
        if !self.real_crypto() {
            self.crypto_event(CryptoOp::Rs256Verify, assertion.len() as u64, 0);
            return check_claims(peeked, &self.authorization_url, now_s, skew_s)
                .map_err(|e| invalid_client(e.to_string()));
        }
        let Some(key) = self.agents.get(&agent).and_then(|a| a.public_key.clone()) else {
            return Err(invalid_client("the agent has no registered public key"));
        };
        let audience = self.authorization_url.clone();
        let (result, nanos) = self
            .meter
            .measure(|| jwt::verify(assertion, &key, &audience, now_s, skew_s));
        self.crypto_event(CryptoOp::Rs256Verify, assertion.len() as u64, nanos);
        result.map_err(|e| invalid_client(e.to_string()))
    }

    /// Extension: rotate a job token. The presented token must be the job's newest and still
    /// valid; it keeps working for `job_token_rotation_grace`, then stops.
    fn refresh_job_token(
        &mut self,
        now: SimTime,
        presented: &str,
    ) -> Result<ApiResponse, ApiError> {
        let grant_error = |m: &str| ApiError::new(ErrorKind::OAuthInvalidGrant, m);
        let request = match self.tokens.get(presented) {
            Some(TokenEntry {
                kind: TokenKind::Job { request },
                expires_at,
            }) if *expires_at > now => *request,
            Some(TokenEntry {
                kind: TokenKind::Job { .. },
                ..
            }) => {
                return Err(grant_error(
                    "the job token expired; it can no longer be rotated",
                ));
            }
            _ => return Err(grant_error("refresh_token must be a valid job token")),
        };
        let newest = self.jobs.get(&request).and_then(|j| j.tokens.last());
        if newest.map(String::as_str) != Some(presented) {
            return Err(grant_error(
                "this job token was already rotated; use the newest one",
            ));
        }
        // Forget earlier rotations whose grace is over, so a job's token list stays short.
        let expired: Vec<String> = self.jobs[&request]
            .tokens
            .iter()
            .filter(|t| self.tokens.get(t).is_none_or(|e| e.expires_at <= now))
            .cloned()
            .collect();
        for t in &expired {
            self.tokens.remove(t);
        }
        self.journal.job(request);
        if let Some(job) = self.jobs.get_mut(&request) {
            job.tokens.retain(|t| !expired.contains(t));
        }
        self.tokens
            .shorten(presented, now + self.cfg.job_token_rotation_grace);
        let token = self.mint_job_token(now, request);
        self.counters.tokens_rotated += 1;
        Ok(ApiResponse::Token(TokenResponse {
            access_token: token,
            token_type: "Bearer".to_string(),
            expires_in: self.cfg.job_token_ttl.as_secs(),
            scope: String::new(),
            refresh_token: None,
        }))
    }
}

/// Fault injection, added for the virtual-time driver's `token_expiry_storm` (owner: des).
impl Server {
    /// Every listener token of the agents whose name `select` accepts expires at `now`, as in a
    /// token-expiry storm: their next listener call meets 401 and they must mint a new token.
    /// Job tokens are left alone (an expired job token cannot be rotated, so a real service
    /// would not expire them mid-job). Returns how many tokens expired.
    pub fn expire_listener_tokens(&mut self, now: SimTime, select: impl Fn(&str) -> bool) -> usize {
        let mut expired = 0;
        for rec in self.agents.values().filter(|r| select(&r.agent.name)) {
            for token in &rec.listener_tokens {
                self.tokens.shorten(token, now);
                expired += 1;
            }
        }
        expired
    }

    /// The token-expiry admin route: a storm on the agents `storm` selects by name, decided
    /// here so the emulator and the fleet's schedule agree on who is hit. Admin PAT only; the
    /// body's sizes are bounded (a typed 400 beyond them).
    pub(super) fn token_expiry_storm(
        &mut self,
        now: SimTime,
        cred: &Credential,
        storm: &crate::api::TokenExpiry,
    ) -> Result<ApiResponse, ApiError> {
        use crate::api::{TOKEN_EXPIRY_AGENTS_MAX, TOKEN_EXPIRY_PREFIX_MAX, TokensExpired};
        use crate::faults::Selection;
        self.require_pat(now, cred, Need::Admin)?;
        if storm.name_prefix.len() > TOKEN_EXPIRY_PREFIX_MAX {
            return Err(ApiError::new(
                ErrorKind::BadRequest,
                format!("namePrefix is longer than {TOKEN_EXPIRY_PREFIX_MAX} bytes"),
            ));
        }
        match &storm.agents {
            Selection::Agents(list) if list.len() > TOKEN_EXPIRY_AGENTS_MAX => {
                return Err(ApiError::new(
                    ErrorKind::BadRequest,
                    format!("agents lists more than {TOKEN_EXPIRY_AGENTS_MAX} indices"),
                ));
            }
            Selection::Fraction { fraction, .. } if !(0.0..=1.0).contains(fraction) => {
                return Err(ApiError::new(
                    ErrorKind::BadRequest,
                    "fraction must be within 0 ..= 1",
                ));
            }
            _ => {}
        }
        let mut select = storm.agents.clone();
        if let Selection::Agents(list) = &mut select {
            // `contains` binary-searches: a client's list need not come sorted.
            list.sort_unstable();
        }
        let prefix = &storm.name_prefix;
        let expired = self.expire_listener_tokens(now, |name| select.contains_name(prefix, name));
        Ok(ApiResponse::TokensExpired(TokensExpired {
            expired: expired as u64,
        }))
    }
}

/// The claim checks of `jwt::verify` without the signature (modelled crypto).
fn check_claims(
    claims: Claims,
    audience: &str,
    now_s: u64,
    skew_s: u64,
) -> Result<Claims, JwtError> {
    if claims.aud != audience {
        return Err(JwtError::Audience);
    }
    if claims.iss.is_empty() || claims.iss != claims.sub {
        return Err(JwtError::Issuer);
    }
    if claims.nbf > now_s.saturating_add(skew_s) {
        return Err(JwtError::NotYetValid { now: now_s });
    }
    if claims.exp.saturating_add(skew_s) <= now_s {
        return Err(JwtError::Expired { now: now_s });
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the replay set forgets an id only once its assertion can no longer be valid.
    #[test]
    fn jti_set_prunes_by_expiry_plus_skew() {
        let mut set = JtiSet::default();
        set.insert(1, "a".into(), 100);
        set.insert(1, "b".into(), 200);
        set.insert(2, "c".into(), 100);
        set.prune(150, 60);
        assert!(set.contains("a"), "100 + 60 > 150: still inside the window");
        assert_eq!((set.of_agent(1), set.of_agent(2)), (2, 1));
        set.prune(160, 60);
        assert!(!set.contains("a"));
        assert!(set.contains("b"));
        assert_eq!(set.len(), 1);
        assert_eq!((set.of_agent(1), set.of_agent(2)), (1, 0));
    }

    // Goal: scopes imply what the docs say (manage implies read; admin is separate).
    #[test]
    fn scope_implications() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(Need::Read.satisfied_by(&s(&[SCOPE_AGENTPOOLS_MANAGE])));
        assert!(!Need::Manage.satisfied_by(&s(&[SCOPE_AGENTPOOLS_READ])));
        assert!(!Need::Admin.satisfied_by(&s(&[SCOPE_AGENTPOOLS_MANAGE])));
        assert!(Need::Admin.satisfied_by(&s(&[SCOPE_ADMIN])));
    }

    // Goal: modelled-mode claim checks match the real verifier's rules.
    #[test]
    fn modelled_claim_checks() {
        let c = Claims {
            iss: "c".into(),
            sub: "c".into(),
            aud: "u".into(),
            nbf: 100,
            exp: 400,
            jti: "j".into(),
        };
        assert!(check_claims(c.clone(), "u", 200, 0).is_ok());
        assert_eq!(
            check_claims(c.clone(), "x", 200, 0),
            Err(JwtError::Audience)
        );
        assert_eq!(
            check_claims(c.clone(), "u", 50, 10),
            Err(JwtError::NotYetValid { now: 50 })
        );
        assert_eq!(
            check_claims(c.clone(), "u", 400, 0),
            Err(JwtError::Expired { now: 400 })
        );
        let other = Claims {
            sub: "d".into(),
            ..c
        };
        assert_eq!(check_claims(other, "u", 200, 0), Err(JwtError::Issuer));
    }
}
