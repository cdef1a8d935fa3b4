//! The protocol's crypto behind one interface: RSA keys (generation, PKCS#8, public components),
//! RS256 signatures, RSA-OAEP-SHA1 key wrapping, AES-256-CBC/PKCS7 message bodies, and the JWT
//! client assertion (`jwt`).
//!
//! The RSA work is one interface, [`RsaBackend`] (with [`RsaPrivate`] and [`RsaPublic`] for the
//! key objects), implemented twice: [`awslc::AwsLc`] (aws-lc-rs, the default and the one the
//! facade types [`PrivateKey`] / [`PublicKey`] use, 4–5.6× faster private-key operations, see
//! `crates.md` §1) and, with the `rustcrypto` feature, `rustcrypto::RustCrypto` (the pure-Rust
//! `rsa` crate 0.10). `tests/crypto_interop.rs` proves that keys, OAEP ciphertexts and RS256
//! signatures made by one backend are accepted by the other.
//!
//! Also here: [`CryptoMode`] (real crypto or a modelled cost in virtual time) and [`Meter`], which
//! times an operation with a clock the *driver* injects.
//!
//! This module never reads a clock, never touches the disk, and never logs or formats key
//! material (errors carry no secret bytes). Randomness for key generation, OAEP padding and
//! blinding comes from the backends' OS-seeded CSPRNGs: cryptographic randomness is the one
//! thing the core deliberately does not derive from the run seed, so crypto output is not part
//! of the deterministic trace (only its counts and modelled costs are).

pub mod awslc;
pub mod jwt;
#[cfg(feature = "rustcrypto")]
pub mod rustcrypto;

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::proto::TaskAgentPublicKey;

/// The RSA sizes this project accepts: the real agent makes 2048-bit keys and the service
/// rejects anything under 2048; 4096 is the largest a scenario may ask for.
pub const RSA_BITS_MIN: usize = 2048;
/// See [`RSA_BITS_MIN`].
pub const RSA_BITS_MAX: usize = 4096;

/// Why a crypto operation failed. Carries no key material.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// The key bytes (DER, components or base64) do not form an acceptable RSA key.
    #[error("malformed key: {0}")]
    BadKey(&'static str),
    /// OAEP or AES-CBC decryption failed (wrong key, tampered ciphertext, bad padding).
    #[error("decryption failed")]
    Decrypt,
    /// An RS256 signature does not verify under the given key.
    #[error("signature does not verify")]
    BadSignature,
    /// The backend failed to generate a key (RNG failure).
    #[error("key generation failed")]
    KeyGen,
    /// A key size outside `RSA_BITS_MIN..=RSA_BITS_MAX`, or not one of 2048/3072/4096 for
    /// generation.
    #[error("unsupported key size {0} bits (2048..=4096)")]
    KeySize(usize),
    /// Encryption failed (plaintext too long for OAEP with this key, or an RNG failure).
    #[error("encryption failed")]
    Encrypt,
}

/// Whether a run does real RSA/AES work or charges a modelled cost.
///
/// Live runs are always `Real`. Virtual-time (DES) runs default to `Modelled`: an agent's
/// private-key work would otherwise dominate the simulator's own speed (one RSA-2048 decrypt is
/// ~280 µs of real CPU against ~0.1 µs per simulated event), so the DES skips the math and
/// advances virtual time by a cost calibrated with `fleetsim crypto-bench`. `Real` in a
/// virtual run is for checking that the modelled path and the real one agree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CryptoMode {
    /// Do the real operations (keys, OAEP, RS256, AES).
    #[default]
    Real,
    /// Skip the operations; charge a calibrated virtual-time cost instead.
    Modelled,
}

/// Times crypto operations with a monotonic clock supplied by the driver.
///
/// The core never reads a clock itself: the live driver passes a function returning monotonic
/// nanoseconds, the DES passes nothing ([`Meter::off`]) and charges modelled costs instead.
#[derive(Clone, Copy, Debug, Default)]
pub struct Meter {
    /// Monotonic nanoseconds since an arbitrary origin; `None` turns timing off.
    clock: Option<fn() -> u64>,
}

impl Meter {
    /// A meter reading `clock` (monotonic nanoseconds) around each measured operation.
    pub fn new(clock: fn() -> u64) -> Meter {
        Meter { clock: Some(clock) }
    }

    /// A meter that measures nothing: every duration is 0.
    pub fn off() -> Meter {
        Meter { clock: None }
    }

    /// Whether this meter has a clock.
    pub fn is_on(&self) -> bool {
        self.clock.is_some()
    }

    /// Run `f` and return its result with its duration in nanoseconds (0 without a clock).
    pub fn measure<T>(&self, f: impl FnOnce() -> T) -> (T, u64) {
        match self.clock {
            None => (f(), 0),
            Some(clock) => {
                let start_ns = clock();
                let out = f();
                // saturating: a non-monotonic clock must not panic or wrap into ~584 years.
                (out, clock().saturating_sub(start_ns))
            }
        }
    }
}

/// One RSA implementation: key generation and parsing. The key objects carry the operations.
///
/// Implemented by [`awslc::AwsLc`] and, with the `rustcrypto` feature,
/// `rustcrypto::RustCrypto`. Both must produce and accept the same bytes: PKCS#8 DER private
/// keys, big-endian `(n, e)` public components, RSASSA-PKCS1-v1_5/SHA-256 signatures and
/// RSA-OAEP with SHA-1 and MGF1-SHA-1 (empty label).
pub trait RsaBackend {
    /// A short name for reports (`"aws-lc-rs"`, `"rsa"`).
    const NAME: &'static str;
    /// The private key, parsed once and able to both sign and decrypt.
    type Private: RsaPrivate<Public = Self::Public>;
    /// The public key, parsed once and able to both verify and encrypt.
    type Public: RsaPublic;

    /// A fresh key of `bits` (2048, 3072 or 4096).
    fn generate(bits: usize) -> Result<Self::Private, CryptoError>;
    /// Parse a PKCS#8 DER (`PrivateKeyInfo`) RSA private key.
    fn private_from_pkcs8_der(der: &[u8]) -> Result<Self::Private, CryptoError>;
    /// A public key from big-endian modulus and exponent without leading zero bytes.
    fn public_from_components(modulus: &[u8], exponent: &[u8])
    -> Result<Self::Public, CryptoError>;
}

/// The operations on one backend's private key.
pub trait RsaPrivate: Send + Sync + Sized {
    /// The matching public key type.
    type Public: RsaPublic;
    /// PKCS#8 DER encoding.
    fn to_pkcs8_der(&self) -> Result<Vec<u8>, CryptoError>;
    /// The modulus size in bits.
    fn bits(&self) -> usize;
    /// The public half.
    fn public_key(&self) -> Result<Self::Public, CryptoError>;
    /// RSASSA-PKCS1-v1_5 with SHA-256 over `msg`.
    fn sign_rs256(&self, msg: &[u8]) -> Result<Vec<u8>, CryptoError>;
    /// RSA-OAEP (SHA-1, MGF1-SHA-1, empty label) decryption.
    fn decrypt_oaep_sha1(&self, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError>;
}

/// The operations on one backend's public key.
pub trait RsaPublic: Send + Sync + Sized {
    /// Big-endian modulus, no leading zero bytes.
    fn modulus(&self) -> Vec<u8>;
    /// Big-endian public exponent, no leading zero bytes.
    fn exponent(&self) -> Vec<u8>;
    /// RSASSA-PKCS1-v1_5 with SHA-256 verification.
    fn verify_rs256(&self, msg: &[u8], signature: &[u8]) -> Result<(), CryptoError>;
    /// RSA-OAEP (SHA-1, MGF1-SHA-1, empty label) encryption.
    fn encrypt_oaep_sha1(&self, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError>;
}

/// The backend behind [`PrivateKey`] and [`PublicKey`].
pub type DefaultBackend = awslc::AwsLc;

/// An agent's RSA private key, parsed once and reused for every signature and unwrap.
pub struct PrivateKey {
    inner: <DefaultBackend as RsaBackend>::Private,
    bits: usize,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material, not even the public modulus of a private key.
        f.debug_struct("PrivateKey")
            .field("bits", &self.bits)
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// A fresh key of `bits` (2048, 3072 or 4096). Slow (tens of ms): callers keep it off async
    /// workers.
    pub fn generate(bits: usize) -> Result<PrivateKey, CryptoError> {
        Self::wrap(DefaultBackend::generate(bits)?)
    }

    /// Parse a PKCS#8 DER private key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<PrivateKey, CryptoError> {
        Self::wrap(DefaultBackend::private_from_pkcs8_der(der)?)
    }

    fn wrap(inner: <DefaultBackend as RsaBackend>::Private) -> Result<PrivateKey, CryptoError> {
        let bits = inner.bits();
        check_bits(bits)?;
        Ok(PrivateKey { inner, bits })
    }

    /// PKCS#8 DER encoding, for the on-disk key cache.
    ///
    /// # Panics
    /// Only if aws-lc cannot serialise a key it already validated (an allocation failure).
    pub fn to_pkcs8_der(&self) -> Vec<u8> {
        self.inner
            .to_pkcs8_der()
            .expect("a parsed RSA key serialises to PKCS#8")
    }

    /// Key size in bits.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// The public half, as registered with the server.
    ///
    /// # Panics
    /// Only if aws-lc rejects the public half of a key it already validated.
    pub fn public_key(&self) -> PublicKey {
        let inner = self
            .inner
            .public_key()
            .expect("a valid private key has a valid public key");
        PublicKey {
            inner: Arc::new(inner),
            bits: self.bits,
        }
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over `msg`.
    ///
    /// # Panics
    /// Only if aws-lc fails to sign with a key it already validated (an allocation failure).
    pub fn sign_rs256(&self, msg: &[u8]) -> Vec<u8> {
        self.inner
            .sign_rs256(msg)
            .expect("RS256 signing with a validated key cannot fail")
    }

    /// RSA-OAEP (SHA-1, MGF1-SHA-1) decryption, as the real agent unwraps the session key.
    pub fn decrypt_oaep_sha1(&self, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.inner.decrypt_oaep_sha1(ciphertext)
    }
}

/// An RSA public key as registered by an agent. Cheap to clone (shared, parsed once).
#[derive(Clone)]
pub struct PublicKey {
    inner: Arc<<DefaultBackend as RsaBackend>::Public>,
    bits: usize,
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
            || (self.inner.modulus() == other.inner.modulus()
                && self.inner.exponent() == other.inner.exponent())
    }
}

impl Eq for PublicKey {}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A short fingerprint is enough to tell keys apart in a trace.
        let n = self.inner.modulus();
        let tail = &n[n.len().saturating_sub(4)..];
        f.debug_struct("PublicKey")
            .field("bits", &self.bits)
            .field("modulus_tail", &format_args!("{:02x?}", tail))
            .finish()
    }
}

impl PublicKey {
    /// From big-endian modulus and exponent bytes. Leading zero bytes are ignored; sizes outside
    /// `RSA_BITS_MIN..=RSA_BITS_MAX` are refused.
    pub fn from_components(modulus: &[u8], exponent: &[u8]) -> Result<PublicKey, CryptoError> {
        let modulus = strip_leading_zeros(modulus);
        let exponent = strip_leading_zeros(exponent);
        if modulus.is_empty() || exponent.is_empty() {
            return Err(CryptoError::BadKey("empty modulus or exponent"));
        }
        let bits = modulus_bits(modulus);
        check_bits(bits)?;
        check_public_components(modulus, exponent)?;
        let inner = DefaultBackend::public_from_components(modulus, exponent)?;
        Ok(PublicKey {
            inner: Arc::new(inner),
            bits,
        })
    }

    /// From the registration JSON (`authorization.publicKey`, base64 fields).
    pub fn from_wire(key: &TaskAgentPublicKey) -> Result<PublicKey, CryptoError> {
        // A 4096-bit modulus is 684 base64 characters; refuse absurd input before decoding.
        const WIRE_FIELD_MAX: usize = 2048;
        if key.modulus.len() > WIRE_FIELD_MAX || key.exponent.len() > WIRE_FIELD_MAX {
            return Err(CryptoError::BadKey("public key field too long"));
        }
        let modulus = STANDARD
            .decode(&key.modulus)
            .map_err(|_| CryptoError::BadKey("modulus is not base64"))?;
        let exponent = STANDARD
            .decode(&key.exponent)
            .map_err(|_| CryptoError::BadKey("exponent is not base64"))?;
        Self::from_components(&modulus, &exponent)
    }

    /// To the registration JSON.
    pub fn to_wire(&self) -> TaskAgentPublicKey {
        TaskAgentPublicKey {
            exponent: STANDARD.encode(self.inner.exponent()),
            modulus: STANDARD.encode(self.inner.modulus()),
        }
    }

    /// Big-endian modulus bytes.
    pub fn modulus(&self) -> Vec<u8> {
        self.inner.modulus()
    }

    /// Big-endian public exponent bytes.
    pub fn exponent(&self) -> Vec<u8> {
        self.inner.exponent()
    }

    /// Key size in bits.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// Verify an RSASSA-PKCS1-v1_5/SHA-256 signature over `msg`.
    pub fn verify_rs256(&self, msg: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        self.inner.verify_rs256(msg, signature)
    }

    /// RSA-OAEP (SHA-1, MGF1-SHA-1) encryption of a short secret (the AES session key).
    pub fn encrypt_oaep_sha1(&self, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.inner.encrypt_oaep_sha1(plaintext)
    }
}

/// AES-256-CBC with PKCS#7 padding.
pub fn aes256_cbc_encrypt(key: &[u8; 32], iv: &[u8; 16], plaintext: &[u8]) -> Vec<u8> {
    awslc::aes256_cbc_encrypt(key, iv, plaintext)
}

/// AES-256-CBC with PKCS#7 padding; fails on bad padding or length.
pub fn aes256_cbc_decrypt(
    key: &[u8; 32],
    iv: &[u8; 16],
    ciphertext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    awslc::aes256_cbc_decrypt(key, iv, ciphertext)
}

/// Drop leading zero bytes (a two's-complement sign byte from some encoders).
pub(crate) fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// The bit length of a big-endian unsigned integer.
pub(crate) fn modulus_bits(modulus: &[u8]) -> usize {
    let modulus = strip_leading_zeros(modulus);
    match modulus.first() {
        None => 0,
        Some(&top) => modulus.len() * 8 - top.leading_zeros() as usize,
    }
}

/// Sanity checks aws-lc leaves to the first operation: an RSA modulus and exponent are odd, and
/// the exponent is at least 3 and fits in 64 bits (real keys use 65537). Catching them here
/// turns a peer's nonsense key into an error at registration instead of at first use.
fn check_public_components(modulus: &[u8], exponent: &[u8]) -> Result<(), CryptoError> {
    let odd = |bytes: &[u8]| bytes.last().is_some_and(|b| b & 1 == 1);
    if !odd(modulus) {
        return Err(CryptoError::BadKey("even RSA modulus"));
    }
    if !odd(exponent) || exponent.len() > 8 || exponent == [1] {
        return Err(CryptoError::BadKey("unusable RSA public exponent"));
    }
    Ok(())
}

/// Refuse key sizes outside the accepted range.
fn check_bits(bits: usize) -> Result<(), CryptoError> {
    if (RSA_BITS_MIN..=RSA_BITS_MAX).contains(&bits) {
        Ok(())
    } else {
        Err(CryptoError::KeySize(bits))
    }
}

/// Refuse generation sizes other than the three the protocol uses.
pub(crate) fn check_generate_bits(bits: usize) -> Result<(), CryptoError> {
    match bits {
        2048 | 3072 | 4096 => Ok(()),
        _ => Err(CryptoError::KeySize(bits)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::OnceLock;

    use super::*;

    /// One 2048-bit key shared by the tests of this module and `jwt`: generation is the slow
    /// part and every test only needs *a* valid key.
    pub(crate) fn test_key() -> &'static PrivateKey {
        static KEY: OnceLock<PrivateKey> = OnceLock::new();
        KEY.get_or_init(|| PrivateKey::generate(2048).expect("keygen"))
    }

    /// A second, different key for wrong-key tests.
    pub(crate) fn other_key() -> &'static PrivateKey {
        static KEY: OnceLock<PrivateKey> = OnceLock::new();
        KEY.get_or_init(|| PrivateKey::generate(2048).expect("keygen"))
    }

    // Goal: a generated key has the requested size, and its DER round-trips to the same key.
    #[test]
    fn pkcs8_round_trip_keeps_the_key() {
        let key = test_key();
        assert_eq!(key.bits(), 2048);
        let der = key.to_pkcs8_der();
        let back = PrivateKey::from_pkcs8_der(&der).unwrap();
        assert_eq!(back.public_key(), key.public_key());
        assert_eq!(back.to_pkcs8_der(), der);
    }

    // Goal: 3072-bit generation works (the scenario may ask for it) and odd sizes are refused.
    #[test]
    fn generate_accepts_only_protocol_sizes() {
        assert_eq!(PrivateKey::generate(3072).unwrap().bits(), 3072);
        assert_eq!(
            PrivateKey::generate(1024).unwrap_err(),
            CryptoError::KeySize(1024)
        );
        assert_eq!(
            PrivateKey::generate(2500).unwrap_err(),
            CryptoError::KeySize(2500)
        );
    }

    // Goal: garbage DER is a typed error, not a panic.
    #[test]
    fn bad_der_is_rejected() {
        assert!(matches!(
            PrivateKey::from_pkcs8_der(b"not a key"),
            Err(CryptoError::BadKey(_))
        ));
        assert!(matches!(
            PrivateKey::from_pkcs8_der(&[]),
            Err(CryptoError::BadKey(_))
        ));
    }

    // Goal: the registration JSON carries the key exactly (AQAB exponent, 256-byte modulus).
    #[test]
    fn wire_round_trip_keeps_the_public_key() {
        let public = test_key().public_key();
        let wire = public.to_wire();
        assert_eq!(wire.exponent, "AQAB");
        assert_eq!(STANDARD.decode(&wire.modulus).unwrap().len(), 256);
        let back = PublicKey::from_wire(&wire).unwrap();
        assert_eq!(back, public);
        assert_eq!(back.bits(), 2048);
    }

    // Goal: a modulus with a leading sign byte (as some encoders emit) is the same key.
    #[test]
    fn leading_zero_in_modulus_is_ignored() {
        let public = test_key().public_key();
        let mut n = vec![0u8];
        n.extend(public.modulus());
        let back = PublicKey::from_components(&n, &public.exponent()).unwrap();
        assert_eq!(back, public);
    }

    // Goal: malformed or undersized public keys from a peer are typed errors.
    #[test]
    fn bad_public_keys_are_rejected() {
        let bad_b64 = TaskAgentPublicKey {
            exponent: "AQAB".into(),
            modulus: "!!".into(),
        };
        assert!(matches!(
            PublicKey::from_wire(&bad_b64),
            Err(CryptoError::BadKey(_))
        ));
        let small = TaskAgentPublicKey {
            exponent: "AQAB".into(),
            modulus: "AQAB".into(),
        };
        assert!(matches!(
            PublicKey::from_wire(&small),
            Err(CryptoError::KeySize(_))
        ));
        assert!(matches!(
            PublicKey::from_components(&[], &[1, 0, 1]),
            Err(CryptoError::BadKey(_))
        ));
        let huge = TaskAgentPublicKey {
            exponent: "AQAB".into(),
            modulus: "A".repeat(5000),
        };
        assert!(matches!(
            PublicKey::from_wire(&huge),
            Err(CryptoError::BadKey(_))
        ));
        // An even modulus is not an RSA modulus.
        let mut even = vec![0xff; 256];
        even[255] = 0xfe;
        assert!(matches!(
            PublicKey::from_components(&even, &[1, 0, 1]),
            Err(CryptoError::BadKey(_))
        ));
        let n = test_key().public_key().modulus();
        for e in [&[1u8][..], &[2], &[1, 0, 0, 0, 0, 0, 0, 0, 1]] {
            assert!(matches!(
                PublicKey::from_components(&n, e),
                Err(CryptoError::BadKey(_))
            ));
        }
    }

    // Goal: RS256 signatures verify, and any change to message, signature or key is caught.
    #[test]
    fn rs256_signature_detects_tampering() {
        let key = test_key();
        let public = key.public_key();
        let msg = b"header.claims";
        let sig = key.sign_rs256(msg);
        assert_eq!(sig.len(), 256);
        public.verify_rs256(msg, &sig).unwrap();
        assert_eq!(
            public.verify_rs256(b"header.claimz", &sig),
            Err(CryptoError::BadSignature)
        );
        let mut bad = sig.clone();
        bad[10] ^= 1;
        assert_eq!(
            public.verify_rs256(msg, &bad),
            Err(CryptoError::BadSignature)
        );
        assert_eq!(
            public.verify_rs256(msg, &sig[..255]),
            Err(CryptoError::BadSignature)
        );
        let other = other_key().public_key();
        assert_eq!(
            other.verify_rs256(msg, &sig),
            Err(CryptoError::BadSignature)
        );
    }

    // Goal: the session key round-trips through OAEP-SHA1; a wrong key or a flipped bit fails.
    #[test]
    fn oaep_sha1_round_trip_and_tampering() {
        let key = test_key();
        let session_key = [7u8; 32];
        let wrapped = key.public_key().encrypt_oaep_sha1(&session_key).unwrap();
        assert_eq!(wrapped.len(), 256);
        assert_eq!(key.decrypt_oaep_sha1(&wrapped).unwrap(), session_key);
        // OAEP is randomised: wrapping twice gives different ciphertexts.
        let again = key.public_key().encrypt_oaep_sha1(&session_key).unwrap();
        assert_ne!(again, wrapped);
        let mut bad = wrapped.clone();
        bad[100] ^= 0x40;
        assert_eq!(key.decrypt_oaep_sha1(&bad), Err(CryptoError::Decrypt));
        assert_eq!(
            other_key().decrypt_oaep_sha1(&wrapped),
            Err(CryptoError::Decrypt)
        );
        assert_eq!(key.decrypt_oaep_sha1(b"short"), Err(CryptoError::Decrypt));
        // OAEP-SHA1 fits at most k - 2*20 - 2 = 214 bytes in a 2048-bit key.
        assert_eq!(
            key.public_key().encrypt_oaep_sha1(&[0; 215]),
            Err(CryptoError::Encrypt)
        );
    }

    // Goal: AES-256-CBC/PKCS7 round-trips all lengths around a block boundary.
    #[test]
    fn aes_cbc_round_trip_all_lengths() {
        let key = [3u8; 32];
        let iv = [9u8; 16];
        for len in [0usize, 1, 15, 16, 17, 31, 32, 1000, 65536] {
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let cipher = aes256_cbc_encrypt(&key, &iv, &plain);
            assert_eq!(
                cipher.len(),
                (len / 16 + 1) * 16,
                "PKCS7 always adds 1..=16 bytes"
            );
            assert_eq!(
                aes256_cbc_decrypt(&key, &iv, &cipher).unwrap(),
                plain,
                "len {len}"
            );
        }
    }

    // Goal: a known-answer vector pins the mode (CBC, not ECB/CTR) and the padding (PKCS7).
    #[test]
    fn aes_cbc_matches_known_answer() {
        // NIST SP 800-38A F.2.5 (CBC-AES256.Encrypt), first block; PKCS7 then adds one block.
        let key: [u8; 32] = hex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4");
        let iv: [u8; 16] = hex("000102030405060708090a0b0c0d0e0f");
        let plain: [u8; 16] = hex("6bc1bee22e409f96e93d7e117393172a");
        let expected: [u8; 16] = hex("f58c4c04d6e5f1ba779eabfb5f7bfbd6");
        let cipher = aes256_cbc_encrypt(&key, &iv, &plain);
        assert_eq!(cipher.len(), 32);
        assert_eq!(cipher[..16], expected);
    }

    // Goal: wrong key, bad padding and bad lengths are typed errors, not panics.
    #[test]
    fn aes_cbc_rejects_bad_input() {
        let key = [3u8; 32];
        let iv = [9u8; 16];
        let cipher = aes256_cbc_encrypt(&key, &iv, b"{\"jobId\":1}");
        assert_eq!(
            aes256_cbc_decrypt(&key, &iv, &cipher[..15]),
            Err(CryptoError::Decrypt)
        );
        assert_eq!(
            aes256_cbc_decrypt(&key, &iv, &[]),
            Err(CryptoError::Decrypt)
        );
        // A wrong key almost always breaks the padding; if it happens to parse, the text differs.
        match aes256_cbc_decrypt(&[4u8; 32], &iv, &cipher) {
            Err(e) => assert_eq!(e, CryptoError::Decrypt),
            Ok(plain) => assert_ne!(plain, b"{\"jobId\":1}"),
        }
    }

    // Goal: the meter returns 0 without a clock and the clock's difference with one.
    #[test]
    fn meter_measures_with_the_injected_clock() {
        let (v, ns) = Meter::off().measure(|| 41 + 1);
        assert_eq!((v, ns), (42, 0));
        assert!(!Meter::off().is_on());
        fn fake_clock() -> u64 {
            use std::sync::atomic::{AtomicU64, Ordering};
            static T: AtomicU64 = AtomicU64::new(1_000);
            T.fetch_add(250, Ordering::Relaxed)
        }
        let meter = Meter::new(fake_clock);
        assert!(meter.is_on());
        let ((), ns) = meter.measure(|| ());
        assert_eq!(ns, 250);
    }

    // Goal: CryptoMode reads as lowercase words in scenario files and defaults to real.
    #[test]
    fn crypto_mode_serde_is_lowercase() {
        assert_eq!(
            serde_json::to_string(&CryptoMode::Modelled).unwrap(),
            "\"modelled\""
        );
        assert_eq!(
            serde_json::from_str::<CryptoMode>("\"real\"").unwrap(),
            CryptoMode::Real
        );
        assert_eq!(CryptoMode::default(), CryptoMode::Real);
    }

    // Goal: bit lengths are counted from the top set bit, ignoring sign bytes.
    #[test]
    fn modulus_bits_counts_from_the_top_bit() {
        assert_eq!(modulus_bits(&[]), 0);
        assert_eq!(modulus_bits(&[0, 0x01]), 1);
        assert_eq!(modulus_bits(&[0x80, 0]), 16);
        assert_eq!(modulus_bits(&[0x7f, 0]), 15);
    }

    fn hex<const N: usize>(s: &str) -> [u8; N] {
        let mut out = [0u8; N];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }
}
