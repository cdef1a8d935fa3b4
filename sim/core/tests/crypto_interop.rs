//! The two RSA backends speak the same formats: PKCS#8 keys, `(n, e)` public components,
//! RS256 signatures and OAEP-SHA1 ciphertexts made by one are accepted by the other, in both
//! directions. Run with `cargo test -p fleetsim-core --features rustcrypto`.
#![cfg(feature = "rustcrypto")]

use fleetsim_core::crypto::awslc::AwsLc;
use fleetsim_core::crypto::rustcrypto::RustCrypto;
use fleetsim_core::crypto::{
    CryptoError, PrivateKey, PublicKey, RsaBackend, RsaPrivate, RsaPublic,
};

/// Everything `Made` produces must be accepted by `Used`, and `Used`'s artefacts made with a
/// key from `Made` must be accepted by `Made`.
fn cross_check<Made: RsaBackend, Used: RsaBackend>(bits: usize) {
    let made = Made::generate(bits).unwrap();
    let der = made.to_pkcs8_der().unwrap();
    let made_pub = made.public_key().unwrap();

    // The same DER loads into the other backend as the same key.
    let used = Used::private_from_pkcs8_der(&der).unwrap();
    let used_pub = used.public_key().unwrap();
    assert_eq!((made.bits(), used.bits()), (bits, bits));
    assert_eq!(
        used_pub.modulus(),
        made_pub.modulus(),
        "{} -> {}",
        Made::NAME,
        Used::NAME
    );
    assert_eq!(used_pub.exponent(), made_pub.exponent());
    // Components alone rebuild the public key in the other backend.
    let used_from_parts =
        Used::public_from_components(&made_pub.modulus(), &made_pub.exponent()).unwrap();

    // RS256: signed by one, verified by the other (deterministic, so also byte-identical).
    let msg = b"eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0";
    let sig_made = made.sign_rs256(msg).unwrap();
    let sig_used = used.sign_rs256(msg).unwrap();
    assert_eq!(
        sig_made, sig_used,
        "PKCS#1 v1.5 signatures are deterministic"
    );
    used_from_parts.verify_rs256(msg, &sig_made).unwrap();
    made_pub.verify_rs256(msg, &sig_used).unwrap();
    assert_eq!(
        used_from_parts.verify_rs256(b"other", &sig_made),
        Err(CryptoError::BadSignature)
    );

    // OAEP-SHA1: wrapped by one side's public key, unwrapped by the other's private key.
    let session_key = [0x5au8; 32];
    let wrapped_by_used = used_from_parts.encrypt_oaep_sha1(&session_key).unwrap();
    assert_eq!(
        made.decrypt_oaep_sha1(&wrapped_by_used).unwrap(),
        session_key
    );
    let wrapped_by_made = made_pub.encrypt_oaep_sha1(&session_key).unwrap();
    assert_eq!(
        used.decrypt_oaep_sha1(&wrapped_by_made).unwrap(),
        session_key
    );

    // And the key made by `Made` re-encodes to DER that `Made` reads back after `Used` wrote it.
    let der_again = used.to_pkcs8_der().unwrap();
    let made_again = Made::private_from_pkcs8_der(&der_again).unwrap();
    assert_eq!(
        made_again.public_key().unwrap().modulus(),
        made_pub.modulus()
    );
}

// Goal: keys, signatures and ciphertexts made by aws-lc-rs work with the rsa crate.
#[test]
fn awslc_artefacts_are_accepted_by_rustcrypto() {
    cross_check::<AwsLc, RustCrypto>(2048);
}

// Goal: keys, signatures and ciphertexts made by the rsa crate work with aws-lc-rs.
#[test]
fn rustcrypto_artefacts_are_accepted_by_awslc() {
    cross_check::<RustCrypto, AwsLc>(2048);
}

// Goal: the interop also holds for the larger size a scenario may choose.
#[test]
fn interop_holds_at_3072_bits() {
    cross_check::<RustCrypto, AwsLc>(3072);
}

// Goal: the facade (what the agents and the server call) accepts a rustcrypto key via DER and
// its registration JSON, and the JWT it signs verifies under the rustcrypto public key.
#[test]
fn facade_accepts_rustcrypto_keys_end_to_end() {
    let rc = RustCrypto::generate(2048).unwrap();
    let facade = PrivateKey::from_pkcs8_der(&rc.to_pkcs8_der().unwrap()).unwrap();
    let rc_pub = rc.public_key().unwrap();
    let wire_pub = PublicKey::from_components(&rc_pub.modulus(), &rc_pub.exponent()).unwrap();
    assert_eq!(wire_pub, facade.public_key());

    let claims = fleetsim_core::crypto::jwt::Claims {
        iss: "id".into(),
        sub: "id".into(),
        aud: "https://t.invalid/token".into(),
        nbf: 100,
        exp: 400,
        jti: "j".into(),
    };
    let token = fleetsim_core::crypto::jwt::sign(&facade, &claims);
    let (signing_input, sig_b64) = token.rsplit_once('.').unwrap();
    use base64::Engine as _;
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig_b64)
        .unwrap();
    rc_pub.verify_rs256(signing_input.as_bytes(), &sig).unwrap();
    let back = fleetsim_core::crypto::jwt::verify(&token, &wire_pub, &claims.aud, 200, 0).unwrap();
    assert_eq!(back, claims);
}
