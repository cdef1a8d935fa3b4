//! The protocol's crypto behind one interface: RSA keys (generation, PKCS#8, public components),
//! RS256 signatures, RSA-OAEP-SHA1 key wrapping, AES-256-CBC/PKCS7 message bodies, and the JWT
//! client assertion. The default backend is aws-lc-rs; the `rustcrypto` feature adds the `rsa`
//! crate as a second backend, and a test proves the two interoperate.
//!
//! SKELETON: signatures are the contract other modules code against; bodies are being filled in.

pub mod jwt;

use thiserror::Error;

use crate::proto::TaskAgentPublicKey;

/// Why a crypto operation failed. Carries no key material.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    #[error("malformed key: {0}")]
    BadKey(&'static str),
    #[error("decryption failed")]
    Decrypt,
    #[error("signature does not verify")]
    BadSignature,
    #[error("key generation failed")]
    KeyGen,
    #[error("unsupported key size {0} bits (2048..=4096)")]
    KeySize(usize),
}

/// An agent's RSA private key, parsed once and reused for every signature and unwrap.
pub struct PrivateKey {}

impl PrivateKey {
    /// A fresh key of `bits` (2048, 3072 or 4096). Slow (tens of ms): callers keep it off async
    /// workers.
    pub fn generate(_bits: usize) -> Result<PrivateKey, CryptoError> {
        todo!()
    }
    /// Parse a PKCS#8 DER private key.
    pub fn from_pkcs8_der(_der: &[u8]) -> Result<PrivateKey, CryptoError> {
        todo!()
    }
    /// PKCS#8 DER encoding, for the on-disk key cache.
    pub fn to_pkcs8_der(&self) -> Vec<u8> {
        todo!()
    }
    /// Key size in bits.
    pub fn bits(&self) -> usize {
        todo!()
    }
    pub fn public_key(&self) -> PublicKey {
        todo!()
    }
    /// RSASSA-PKCS1-v1_5 with SHA-256 over `msg`.
    pub fn sign_rs256(&self, _msg: &[u8]) -> Vec<u8> {
        todo!()
    }
    /// RSA-OAEP (SHA-1, MGF1-SHA-1) decryption, as the real agent unwraps the session key.
    pub fn decrypt_oaep_sha1(&self, _ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        todo!()
    }
}

/// An RSA public key as registered by an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {}

impl PublicKey {
    /// From big-endian modulus and exponent bytes.
    pub fn from_components(_modulus: &[u8], _exponent: &[u8]) -> Result<PublicKey, CryptoError> {
        todo!()
    }
    /// From the registration JSON (`authorization.publicKey`, base64 fields).
    pub fn from_wire(_key: &TaskAgentPublicKey) -> Result<PublicKey, CryptoError> {
        todo!()
    }
    /// To the registration JSON.
    pub fn to_wire(&self) -> TaskAgentPublicKey {
        todo!()
    }
    pub fn bits(&self) -> usize {
        todo!()
    }
    pub fn verify_rs256(&self, _msg: &[u8], _signature: &[u8]) -> Result<(), CryptoError> {
        todo!()
    }
    /// RSA-OAEP (SHA-1, MGF1-SHA-1) encryption of a short secret (the AES session key).
    pub fn encrypt_oaep_sha1(&self, _plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        todo!()
    }
}

/// AES-256-CBC with PKCS#7 padding.
pub fn aes256_cbc_encrypt(_key: &[u8; 32], _iv: &[u8; 16], _plaintext: &[u8]) -> Vec<u8> {
    todo!()
}

/// AES-256-CBC with PKCS#7 padding; fails on bad padding or length.
pub fn aes256_cbc_decrypt(
    _key: &[u8; 32],
    _iv: &[u8; 16],
    _ciphertext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    todo!()
}
