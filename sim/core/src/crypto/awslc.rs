//! The aws-lc-rs implementation of [`RsaBackend`], and the AES-256-CBC/PKCS7 functions.
//!
//! aws-lc-rs keeps signing (`rsa::KeyPair`) and OAEP decryption (`PrivateDecryptingKey`) in two
//! types, so a private key here holds both, built once from the same PKCS#8 DER; a public key
//! likewise holds a parsed verification key and an OAEP encrypting key. Nothing is re-parsed per
//! operation (re-parsing is what makes `jsonwebtoken` 2.4× slower, see `crates.md` §1).
//!
//! It never exposes aws-lc error details (they carry no useful information and might one day
//! carry key-dependent data); every failure maps to a [`CryptoError`] variant.

use aws_lc_rs::cipher::{
    AES_256, DecryptionContext, EncryptionContext, PaddedBlockDecryptingKey,
    PaddedBlockEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{
    KeyPair, KeySize, OAEP_SHA1_MGF1SHA1, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    PrivateDecryptingKey, PublicEncryptingKey, PublicKeyComponents,
};
use aws_lc_rs::signature::{
    KeyPair as _, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256,
};

use super::{CryptoError, RsaBackend, RsaPrivate, RsaPublic, check_generate_bits, modulus_bits};

/// The aws-lc-rs backend (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct AwsLc;

/// An aws-lc-rs private key: one object per operation family, both from one DER.
pub struct AwsLcPrivateKey {
    signing: KeyPair,
    decrypting: OaepPrivateDecryptingKey,
}

/// An aws-lc-rs public key: the components plus the parsed objects for verify and encrypt.
pub struct AwsLcPublicKey {
    components: PublicKeyComponents<Vec<u8>>,
    verifying: ParsedPublicKey,
    encrypting: OaepPublicEncryptingKey,
}

impl RsaBackend for AwsLc {
    const NAME: &'static str = "aws-lc-rs";
    type Private = AwsLcPrivateKey;
    type Public = AwsLcPublicKey;

    fn generate(bits: usize) -> Result<AwsLcPrivateKey, CryptoError> {
        check_generate_bits(bits)?;
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            _ => KeySize::Rsa4096,
        };
        let signing = KeyPair::generate(size).map_err(|_| CryptoError::KeyGen)?;
        // The decrypting half is a separate aws-lc type; building it from the same DER keeps
        // the two halves one key by construction.
        let der = signing.as_der().map_err(|_| CryptoError::KeyGen)?;
        let decrypting = decrypting_from_der(der.as_ref())?;
        Ok(AwsLcPrivateKey {
            signing,
            decrypting,
        })
    }

    fn private_from_pkcs8_der(der: &[u8]) -> Result<AwsLcPrivateKey, CryptoError> {
        let signing =
            KeyPair::from_pkcs8(der).map_err(|_| CryptoError::BadKey("not a PKCS#8 RSA key"))?;
        let decrypting = decrypting_from_der(der)?;
        Ok(AwsLcPrivateKey {
            signing,
            decrypting,
        })
    }

    fn public_from_components(
        modulus: &[u8],
        exponent: &[u8],
    ) -> Result<AwsLcPublicKey, CryptoError> {
        AwsLcPublicKey::new(PublicKeyComponents {
            n: modulus.to_vec(),
            e: exponent.to_vec(),
        })
    }
}

fn decrypting_from_der(der: &[u8]) -> Result<OaepPrivateDecryptingKey, CryptoError> {
    let key = PrivateDecryptingKey::from_pkcs8(der)
        .map_err(|_| CryptoError::BadKey("not a PKCS#8 RSA key"))?;
    OaepPrivateDecryptingKey::new(key).map_err(|_| CryptoError::BadKey("not an OAEP key"))
}

impl AwsLcPublicKey {
    fn new(components: PublicKeyComponents<Vec<u8>>) -> Result<AwsLcPublicKey, CryptoError> {
        let verifying = components
            .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
            .map_err(|_| CryptoError::BadKey("inconsistent RSA public key"))?;
        let encrypting: PublicEncryptingKey = components
            .clone()
            .try_into()
            .map_err(|_| CryptoError::BadKey("inconsistent RSA public key"))?;
        let encrypting = OaepPublicEncryptingKey::new(encrypting)
            .map_err(|_| CryptoError::BadKey("not an OAEP key"))?;
        Ok(AwsLcPublicKey {
            components,
            verifying,
            encrypting,
        })
    }
}

impl RsaPrivate for AwsLcPrivateKey {
    type Public = AwsLcPublicKey;

    fn to_pkcs8_der(&self) -> Result<Vec<u8>, CryptoError> {
        let der = self
            .signing
            .as_der()
            .map_err(|_| CryptoError::BadKey("cannot encode"))?;
        Ok(der.as_ref().to_vec())
    }

    fn bits(&self) -> usize {
        modulus_bits(
            self.signing
                .public_key()
                .modulus()
                .big_endian_without_leading_zero(),
        )
    }

    fn public_key(&self) -> Result<AwsLcPublicKey, CryptoError> {
        AwsLcPublicKey::new(PublicKeyComponents::from(self.signing.public_key()))
    }

    fn sign_rs256(&self, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut sig = vec![0u8; self.signing.public_modulus_len()];
        // aws-lc ignores the RNG argument for PKCS#1 v1.5 (it blinds internally).
        self.signing
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut sig)
            .map_err(|_| CryptoError::BadKey("signing failed"))?;
        Ok(sig)
    }

    fn decrypt_oaep_sha1(&self, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut out = vec![0u8; self.decrypting.min_output_size()];
        let len = self
            .decrypting
            .decrypt(&OAEP_SHA1_MGF1SHA1, ciphertext, &mut out, None)
            .map_err(|_| CryptoError::Decrypt)?
            .len();
        out.truncate(len);
        Ok(out)
    }
}

impl RsaPublic for AwsLcPublicKey {
    fn modulus(&self) -> Vec<u8> {
        self.components.n.clone()
    }

    fn exponent(&self) -> Vec<u8> {
        self.components.e.clone()
    }

    fn verify_rs256(&self, msg: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        self.verifying
            .verify_sig(msg, signature)
            .map_err(|_| CryptoError::BadSignature)
    }

    fn encrypt_oaep_sha1(&self, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if plaintext.len() > self.encrypting.max_plaintext_size(&OAEP_SHA1_MGF1SHA1) {
            return Err(CryptoError::Encrypt);
        }
        let mut out = vec![0u8; self.encrypting.ciphertext_size()];
        let len = self
            .encrypting
            .encrypt(&OAEP_SHA1_MGF1SHA1, plaintext, &mut out, None)
            .map_err(|_| CryptoError::Encrypt)?
            .len();
        out.truncate(len);
        Ok(out)
    }
}

/// AES-256-CBC with PKCS#7 padding.
///
/// # Panics
/// Never for a 32-byte key and 16-byte IV (the types guarantee both); aws-lc would only fail on
/// an allocation failure.
pub(crate) fn aes256_cbc_encrypt(key: &[u8; 32], iv: &[u8; 16], plaintext: &[u8]) -> Vec<u8> {
    let key = UnboundCipherKey::new(&AES_256, key).expect("32-byte AES-256 key");
    let key = PaddedBlockEncryptingKey::cbc_pkcs7(key).expect("AES-256-CBC is supported");
    let mut buf = Vec::with_capacity(plaintext.len() + 16);
    buf.extend_from_slice(plaintext);
    key.less_safe_encrypt(&mut buf, EncryptionContext::Iv128(FixedLength::from(iv)))
        .expect("CBC encryption with a 16-byte IV cannot fail");
    buf
}

/// AES-256-CBC with PKCS#7 padding; fails on bad padding or length.
pub(crate) fn aes256_cbc_decrypt(
    key: &[u8; 32],
    iv: &[u8; 16],
    ciphertext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(16) {
        return Err(CryptoError::Decrypt);
    }
    let key = UnboundCipherKey::new(&AES_256, key).map_err(|_| CryptoError::Decrypt)?;
    let key = PaddedBlockDecryptingKey::cbc_pkcs7(key).map_err(|_| CryptoError::Decrypt)?;
    let mut buf = ciphertext.to_vec();
    let len = key
        .decrypt(&mut buf, DecryptionContext::Iv128(FixedLength::from(iv)))
        .map_err(|_| CryptoError::Decrypt)?
        .len();
    buf.truncate(len);
    Ok(buf)
}
