//! The RS256 JWT client assertion of the OAuth client-credentials grant: header
//! `{"typ":"JWT","alg":"RS256"}`, claims iss = sub = clientId, aud = token URL, nbf, exp, jti,
//! base64url without padding. Built by hand with a key parsed once (a JWT library would re-parse
//! the key on every signature).
//!
//! SKELETON: signatures are the contract; bodies are being filled in.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{PrivateKey, PublicKey};

/// The assertion's claims. Times are Unix seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub nbf: u64,
    pub exp: u64,
    pub jti: String,
}

/// Why an assertion was rejected. The message is safe to show the caller.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwtError {
    #[error("the assertion is not a well-formed JWT")]
    Malformed,
    #[error("the assertion's algorithm {0:?} is not accepted; use RS256")]
    Algorithm(String),
    #[error("the assertion's signature does not match the agent's registered key")]
    Signature,
    #[error("the assertion's audience is not this token endpoint")]
    Audience,
    #[error("the assertion's issuer/subject is not the client id")]
    Issuer,
    #[error("the assertion is not valid yet. Current server time is {now}")]
    NotYetValid { now: u64 },
    #[error("the assertion has expired. Current server time is {now}")]
    Expired { now: u64 },
}

/// Sign `claims` as an RS256 JWT.
pub fn sign(_key: &PrivateKey, _claims: &Claims) -> String {
    todo!()
}

/// Decode a JWT's claims without verifying (to find the client id and its key).
pub fn peek_claims(_token: &str) -> Result<Claims, JwtError> {
    todo!()
}

/// Verify an RS256 assertion against `key`: algorithm, signature, audience, iss = sub, and the
/// validity window with `skew_s` tolerance at Unix time `now_s`. Replay (`jti`) is the caller's
/// check, since it needs state.
pub fn verify(
    _token: &str,
    _key: &PublicKey,
    _audience: &str,
    _now_s: u64,
    _skew_s: u64,
) -> Result<Claims, JwtError> {
    todo!()
}
