//! JWT parsing on any token: `peek_claims` and `verify` (against a key of this process, so
//! a signature never matches and every check before it is reached) give claims or a typed
//! error, never a panic.

#![no_main]

use std::sync::OnceLock;

use fleetsim_core::crypto::{PrivateKey, PublicKey, jwt};
use libfuzzer_sys::fuzz_target;

fn key() -> &'static PublicKey {
    static KEY: OnceLock<PublicKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::generate(2048).expect("an RSA key").public_key())
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let _ = jwt::peek_claims(token);
    let _ = jwt::verify(
        token,
        key(),
        "http://127.0.0.1/_apis/oauth2/token",
        1_700_000_000,
        300,
    );
});
