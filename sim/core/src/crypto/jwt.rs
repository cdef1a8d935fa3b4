//! The RS256 JWT client assertion of the OAuth client-credentials grant: header
//! `{"typ":"JWT","alg":"RS256"}`, claims iss = sub = clientId, aud = token URL, nbf, exp, jti,
//! base64url without padding. Built by hand with a key parsed once (a JWT library would re-parse
//! the key on every signature).
//!
//! Verification is strict and ordered so that an unsigned or foreign-algorithm token never
//! reaches the signature check: size and shape, then the header's `alg` (only `RS256`; `none`,
//! `HS256` and everything else are refused), then the signature, then the claims (audience,
//! iss = sub, validity window with skew). It never reads a clock: `now_s` is an argument. It
//! never checks `jti` replay either, which needs state the caller owns.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{PrivateKey, PublicKey};

/// The largest assertion accepted: a 4096-bit signature plus generous claims is ~1.5 KB.
pub const TOKEN_LEN_MAX: usize = 8 * 1024;

/// The header every assertion carries, in the field order the real agent writes.
const HEADER_JSON: &str = r#"{"typ":"JWT","alg":"RS256"}"#;

/// The assertion's claims. Times are Unix seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: the agent's client id.
    pub iss: String,
    /// Subject: the agent's client id again.
    pub sub: String,
    /// Audience: the token endpoint URL (`authorizationUrl`).
    pub aud: String,
    /// Not before (Unix seconds).
    pub nbf: u64,
    /// Expiry (Unix seconds); the real agent uses nbf + 5 min.
    pub exp: u64,
    /// A fresh GUID per assertion (replay protection is the server's job).
    pub jti: String,
}

/// Why an assertion was rejected. The message is safe to show the caller.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwtError {
    /// Not three base64url parts of JSON, or too long.
    #[error("the assertion is not a well-formed JWT")]
    Malformed,
    /// The header names an algorithm other than RS256 (the string is truncated to 16 chars).
    #[error("the assertion's algorithm {0:?} is not accepted; use RS256")]
    Algorithm(String),
    /// The signature does not verify under the registered key.
    #[error("the assertion's signature does not match the agent's registered key")]
    Signature,
    /// `aud` is not this token endpoint.
    #[error("the assertion's audience is not this token endpoint")]
    Audience,
    /// `iss` and `sub` differ (or are empty).
    #[error("the assertion's issuer/subject is not the client id")]
    Issuer,
    /// `nbf` is later than now plus the allowed skew. The text matches the phrase the real
    /// agent looks for to diagnose clock skew.
    #[error("the assertion is not valid yet. Current server time is {now}")]
    NotYetValid {
        /// The server's Unix time.
        now: u64,
    },
    /// `exp` is earlier than now minus the allowed skew.
    #[error("the assertion has expired. Current server time is {now}")]
    Expired {
        /// The server's Unix time.
        now: u64,
    },
}

/// The only header field verification looks at.
#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// Sign `claims` as an RS256 JWT.
pub fn sign(key: &PrivateKey, claims: &Claims) -> String {
    // Claims are plain strings and integers: serialisation cannot fail.
    let claims_json = serde_json::to_vec(claims).expect("claims serialise to JSON");
    let mut token = String::with_capacity(64 + claims_json.len() * 4 / 3 + 344);
    URL_SAFE_NO_PAD.encode_string(HEADER_JSON, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&claims_json, &mut token);
    let signature = key.sign_rs256(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
    token
}

/// Decode a JWT's claims without verifying (to find the client id and its key).
pub fn peek_claims(token: &str) -> Result<Claims, JwtError> {
    let parts = split(token)?;
    decode_json(parts.claims)
}

/// Verify an RS256 assertion against `key`: algorithm, signature, audience, iss = sub, and the
/// validity window with `skew_s` tolerance at Unix time `now_s`. Replay (`jti`) is the caller's
/// check, since it needs state.
pub fn verify(
    token: &str,
    key: &PublicKey,
    audience: &str,
    now_s: u64,
    skew_s: u64,
) -> Result<Claims, JwtError> {
    let parts = split(token)?;
    let header: Header = decode_json(parts.header)?;
    if header.alg != "RS256" {
        return Err(JwtError::Algorithm(header.alg.chars().take(16).collect()));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(parts.signature)
        .map_err(|_| JwtError::Malformed)?;
    key.verify_rs256(parts.signing_input.as_bytes(), &signature)
        .map_err(|_| JwtError::Signature)?;
    let claims: Claims = decode_json(parts.claims)?;
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

/// A token cut into its three parts; `signing_input` is `header.claims` as sent.
struct Parts<'a> {
    header: &'a str,
    claims: &'a str,
    signature: &'a str,
    signing_input: &'a str,
}

fn split(token: &str) -> Result<Parts<'_>, JwtError> {
    if token.len() > TOKEN_LEN_MAX {
        return Err(JwtError::Malformed);
    }
    let (signing_input, signature) = token.rsplit_once('.').ok_or(JwtError::Malformed)?;
    let (header, claims) = signing_input.split_once('.').ok_or(JwtError::Malformed)?;
    if claims.contains('.') {
        return Err(JwtError::Malformed);
    }
    Ok(Parts {
        header,
        claims,
        signature,
        signing_input,
    })
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::tests::{other_key, test_key};

    const AUD: &str = "https://emulator.invalid/_apis/oauth2/token";
    const NOW: u64 = 1_790_000_000;

    fn claims() -> Claims {
        Claims {
            iss: "c1d2".into(),
            sub: "c1d2".into(),
            aud: AUD.into(),
            nbf: NOW,
            exp: NOW + 300,
            jti: "00000000-0000-0000-0000-000000000001".into(),
        }
    }

    fn verify_now(token: &str) -> Result<Claims, JwtError> {
        verify(token, &test_key().public_key(), AUD, NOW + 10, 60)
    }

    /// A token with `header_json` and `claims`, signed by `key` (or with an empty signature).
    fn forge(header_json: &str, claims: &Claims, key: Option<&PrivateKey>) -> String {
        let mut token = URL_SAFE_NO_PAD.encode(header_json);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap()));
        let sig = key
            .map(|k| k.sign_rs256(token.as_bytes()))
            .unwrap_or_default();
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(sig));
        token
    }

    // Goal: a signed assertion verifies and returns its claims; the header is byte-exact.
    #[test]
    fn signed_assertion_verifies() {
        let token = sign(test_key(), &claims());
        assert_eq!(token.split('.').count(), 3);
        assert!(!token.contains('='), "base64url without padding");
        assert_eq!(
            token.split('.').next().unwrap(),
            "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9"
        );
        assert_eq!(verify_now(&token).unwrap(), claims());
    }

    // Goal: peek_claims reads the claims of any well-formed token without a key.
    #[test]
    fn peek_reads_claims_without_verifying() {
        let token = forge(r#"{"alg":"none"}"#, &claims(), None);
        assert_eq!(peek_claims(&token).unwrap(), claims());
        assert_eq!(peek_claims("a.b"), Err(JwtError::Malformed));
    }

    // Goal: `none`, HS256 and anything but RS256 are refused before the signature is checked.
    #[test]
    fn foreign_algorithms_are_rejected() {
        for alg in ["none", "HS256", "RS512", "PS256", "rs256"] {
            let header = format!(r#"{{"typ":"JWT","alg":"{alg}"}}"#);
            let token = forge(&header, &claims(), Some(test_key()));
            assert_eq!(
                verify_now(&token),
                Err(JwtError::Algorithm(alg.into())),
                "{alg}"
            );
        }
        let no_alg = forge(r#"{"typ":"JWT"}"#, &claims(), Some(test_key()));
        assert_eq!(verify_now(&no_alg), Err(JwtError::Malformed));
    }

    // Goal: a token signed by another key, or with an altered payload, is refused.
    #[test]
    fn wrong_key_and_tampering_are_rejected() {
        let foreign = sign(other_key(), &claims());
        assert_eq!(verify_now(&foreign), Err(JwtError::Signature));
        let token = sign(test_key(), &claims());
        let mut parts: Vec<&str> = token.split('.').collect();
        let mut tampered = claims();
        tampered.exp += 3600;
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&tampered).unwrap());
        parts[1] = &body;
        assert_eq!(verify_now(&parts.join(".")), Err(JwtError::Signature));
        let unsigned = forge(HEADER_JSON, &claims(), None);
        assert_eq!(verify_now(&unsigned), Err(JwtError::Signature));
    }

    // Goal: audience and iss/sub mismatches are refused even with a valid signature.
    #[test]
    fn audience_and_issuer_mismatches_are_rejected() {
        let mut c = claims();
        c.aud = "https://elsewhere.invalid/token".into();
        assert_eq!(verify_now(&sign(test_key(), &c)), Err(JwtError::Audience));
        let mut c = claims();
        c.sub = "someone-else".into();
        assert_eq!(verify_now(&sign(test_key(), &c)), Err(JwtError::Issuer));
        let mut c = claims();
        c.iss = String::new();
        c.sub = String::new();
        assert_eq!(verify_now(&sign(test_key(), &c)), Err(JwtError::Issuer));
    }

    // Goal: the validity window honours the skew on both edges and says the server time.
    #[test]
    fn validity_window_with_skew() {
        let token = sign(test_key(), &claims());
        let key = test_key().public_key();
        // nbf = NOW: valid from NOW - skew.
        assert!(verify(&token, &key, AUD, NOW - 60, 60).is_ok());
        assert_eq!(
            verify(&token, &key, AUD, NOW - 61, 60),
            Err(JwtError::NotYetValid { now: NOW - 61 })
        );
        // exp = NOW + 300: valid until just before exp + skew.
        assert!(verify(&token, &key, AUD, NOW + 359, 60).is_ok());
        let expired = verify(&token, &key, AUD, NOW + 360, 60).unwrap_err();
        assert_eq!(expired, JwtError::Expired { now: NOW + 360 });
        assert!(expired.to_string().contains("Current server time is"));
    }

    // Goal: shape errors are typed: wrong part count, bad base64, bad JSON, oversize.
    #[test]
    fn malformed_tokens_are_rejected() {
        let token = sign(test_key(), &claims());
        for bad in [
            String::new(),
            "a.b".into(),
            "a.b.c.d".into(),
            format!("{token}.x"),
            format!("!!{token}"),
            token.replace('.', ".="),
            "e30.e30.".into(),
            "x".repeat(TOKEN_LEN_MAX + 1),
        ] {
            assert_eq!(verify_now(&bad), Err(JwtError::Malformed), "{bad:.40}");
        }
    }
}
