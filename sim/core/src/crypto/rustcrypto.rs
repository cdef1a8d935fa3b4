//! The pure-Rust implementation of [`RsaBackend`] with the `rsa` crate 0.10 (feature
//! `rustcrypto`). It exists to prove the wire formats are the standard ones (the interop test
//! crosses every artefact between the two backends) and to compare speed in `crypto-bench`.
//!
//! It is not the default: its private-key operations are 4–5.6× slower than aws-lc-rs here, and
//! RUSTSEC-2023-0071 (Marvin) still lists no fixed `rsa` version (`crates.md` §1–2). Keys are
//! generated with the OS RNG (`getrandom::SysRng`, a rand_core 0.10 `TryCryptoRng`, the same
//! source `rsa` uses for its own blinding and OAEP padding). It never logs key material.

use getrandom::SysRng;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rsa::sha2::Sha256;
use rsa::traits::PublicKeyParts;
use rsa::{BoxedUint, PrivateKey, PublicKey};
use sha1::Sha1;

use super::{CryptoError, RsaBackend, RsaPrivate, RsaPublic, check_generate_bits, modulus_bits};

/// The `rsa` crate backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct RustCrypto;

/// An `rsa` private key (one object serves both signing and decryption).
pub struct RustCryptoPrivateKey(PrivateKey);

/// An `rsa` public key.
#[derive(Clone)]
pub struct RustCryptoPublicKey(PublicKey);

impl RsaBackend for RustCrypto {
    const NAME: &'static str = "rsa";
    type Private = RustCryptoPrivateKey;
    type Public = RustCryptoPublicKey;

    fn generate(bits: usize) -> Result<RustCryptoPrivateKey, CryptoError> {
        check_generate_bits(bits)?;
        let key = PrivateKey::new(&mut SysRng, bits).map_err(|_| CryptoError::KeyGen)?;
        Ok(RustCryptoPrivateKey(key))
    }

    fn private_from_pkcs8_der(der: &[u8]) -> Result<RustCryptoPrivateKey, CryptoError> {
        let key = PrivateKey::from_pkcs8_der(der)
            .map_err(|_| CryptoError::BadKey("not a PKCS#8 RSA key"))?;
        Ok(RustCryptoPrivateKey(key))
    }

    fn public_from_components(
        modulus: &[u8],
        exponent: &[u8],
    ) -> Result<RustCryptoPublicKey, CryptoError> {
        let n = BoxedUint::from_be_slice_vartime(modulus);
        let e = BoxedUint::from_be_slice_vartime(exponent);
        let key =
            PublicKey::new(n, e).map_err(|_| CryptoError::BadKey("invalid RSA public key"))?;
        Ok(RustCryptoPublicKey(key))
    }
}

impl RsaPrivate for RustCryptoPrivateKey {
    type Public = RustCryptoPublicKey;

    fn to_pkcs8_der(&self) -> Result<Vec<u8>, CryptoError> {
        let der = self
            .0
            .to_pkcs8_der()
            .map_err(|_| CryptoError::BadKey("cannot encode"))?;
        Ok(der.as_bytes().to_vec())
    }

    fn bits(&self) -> usize {
        modulus_bits(&self.0.n_bytes())
    }

    fn public_key(&self) -> Result<RustCryptoPublicKey, CryptoError> {
        Ok(RustCryptoPublicKey(self.0.to_public_key()))
    }

    fn sign_rs256(&self, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.0
            .pkcs1v15_sign::<Sha256>(msg)
            .map_err(|_| CryptoError::BadKey("signing failed"))
    }

    fn decrypt_oaep_sha1(&self, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.0
            .oaep_decrypt::<Sha1>(ciphertext)
            .map_err(|_| CryptoError::Decrypt)
    }
}

impl RsaPublic for RustCryptoPublicKey {
    fn modulus(&self) -> Vec<u8> {
        self.0.n_bytes().into_vec()
    }

    fn exponent(&self) -> Vec<u8> {
        self.0.e_bytes().into_vec()
    }

    fn verify_rs256(&self, msg: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        self.0
            .pkcs1v15_verify::<Sha256>(msg, signature)
            .map_err(|_| CryptoError::BadSignature)
    }

    fn encrypt_oaep_sha1(&self, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.0
            .oaep_encrypt::<Sha1>(plaintext)
            .map_err(|_| CryptoError::Encrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the rustcrypto backend round-trips its own artefacts and rejects tampering (the
    // cross-backend checks live in tests/crypto_interop.rs).
    #[test]
    fn rustcrypto_backend_round_trips() {
        let key = RustCrypto::generate(2048).unwrap();
        let public = key.public_key().unwrap();
        assert_eq!(public.exponent(), [1, 0, 1]);
        assert_eq!(public.modulus().len(), 256);
        let sig = key.sign_rs256(b"msg").unwrap();
        public.verify_rs256(b"msg", &sig).unwrap();
        assert_eq!(
            public.verify_rs256(b"msh", &sig),
            Err(CryptoError::BadSignature)
        );
        let wrapped = public.encrypt_oaep_sha1(&[5; 32]).unwrap();
        assert_eq!(key.decrypt_oaep_sha1(&wrapped).unwrap(), [5; 32]);
        let mut bad = wrapped;
        bad[0] ^= 1;
        assert_eq!(key.decrypt_oaep_sha1(&bad), Err(CryptoError::Decrypt));
        let der = key.to_pkcs8_der().unwrap();
        let back = RustCrypto::private_from_pkcs8_der(&der).unwrap();
        assert_eq!(back.public_key().unwrap().modulus(), public.modulus());
        assert!(RustCrypto::generate(1024).is_err());
        assert!(RustCrypto::private_from_pkcs8_der(b"junk").is_err());
    }
}
