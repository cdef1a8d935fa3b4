//! TLS plumbing for both ends of the live mode: the emulator's rustls server configuration (from
//! PEM files or a freshly generated self-signed certificate) and a client configuration that
//! trusts one such certificate.
//!
//! Every configuration is built with the aws-lc-rs `CryptoProvider` passed explicitly, so the
//! process never depends on a global default (two providers in the dependency tree make
//! rustls's implicit choice panic). `install_default_provider` also installs it globally for
//! code that builds configurations without naming a provider.
//!
//! This module never reaches the network and never logs key material.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

/// ALPN protocols the emulator offers, most preferred first.
const SERVER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Names the self-signed certificate is valid for: the loopback host under every spelling a
/// client is likely to use.
const SELF_SIGNED_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// File name of the self-signed certificate inside its directory.
pub const SELF_SIGNED_CERT_FILE: &str = "fleetsim-emulator-cert.pem";
/// File name of the self-signed certificate's private key inside its directory.
pub const SELF_SIGNED_KEY_FILE: &str = "fleetsim-emulator-key.pem";

/// Why a TLS configuration could not be built. Messages name the file, never its contents.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not valid PEM: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("the certificate and key were rejected: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("generating a self-signed certificate failed: {0}")]
    CertGen(#[from] rcgen::Error),
}

/// Where a generated self-signed certificate and its key were written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelfSignedFiles {
    /// PEM certificate; clients add it to their trust store.
    pub cert_path: PathBuf,
    /// PEM PKCS#8 private key (file mode 0600 on Unix).
    pub key_path: PathBuf,
}

/// The aws-lc-rs provider every fleetsim TLS configuration uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Install aws-lc-rs as the process-wide rustls provider. Idempotent: a provider already
/// installed (by us or by the embedding program) is kept.
pub fn install_default_provider() {
    // An Err only means a provider is installed already, which is the state we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Generate a fresh self-signed certificate for `localhost`, `127.0.0.1` and `::1` and write it
/// and its key as PEM into `dir` (created if missing; existing files are replaced).
pub fn write_self_signed(dir: &Path) -> Result<SelfSignedFiles, TlsError> {
    let names: Vec<String> = SELF_SIGNED_NAMES.iter().map(|s| s.to_string()).collect();
    let generated = rcgen::generate_simple_self_signed(names)?;
    fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        path: dir.into(),
        source,
    })?;
    let files = SelfSignedFiles {
        cert_path: dir.join(SELF_SIGNED_CERT_FILE),
        key_path: dir.join(SELF_SIGNED_KEY_FILE),
    };
    write_file(&files.cert_path, generated.cert.pem().as_bytes(), false)?;
    write_file(
        &files.key_path,
        generated.signing_key.serialize_pem().as_bytes(),
        true,
    )?;
    Ok(files)
}

/// A rustls server configuration from a PEM certificate chain and a PEM private key, offering
/// HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config(
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = read_certs(cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| pem_error(key_path, e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = SERVER_ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A rustls client configuration that trusts exactly the certificates in `cert_path` (for
/// example the emulator's self-signed one), offering `alpn` (empty = no ALPN, which means
/// HTTP/1.1).
pub fn client_config_trusting(
    cert_path: &Path,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(cert_path)? {
        roots.add(cert)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Every certificate in a PEM file; an empty file is an error.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.into() });
    }
    Ok(certs)
}

/// Map a PEM reading failure, keeping IO errors as IO errors so "file not found" reads as such.
fn pem_error(path: &Path, err: rustls::pki_types::pem::Error) -> TlsError {
    match err {
        rustls::pki_types::pem::Error::Io(source) => TlsError::Io {
            path: path.into(),
            source,
        },
        other => TlsError::Pem {
            path: path.into(),
            message: other.to_string(),
        },
    }
}

/// Write `bytes` to `path`; `private` files are readable by their owner only.
fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), TlsError> {
    let io_err = |source| TlsError::Io {
        path: path.into(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(io_err)?;
    io::Write::write_all(&mut file, bytes).map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fleetsim-tls-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    // Goal: a generated certificate loads back into both a server and a trusting client config,
    // and the server offers h2 before http/1.1.
    #[test]
    fn self_signed_certificate_loads_on_both_sides() {
        let dir = temp_dir("roundtrip");
        let files = write_self_signed(&dir).unwrap();
        let server = server_config(&files.cert_path, &files.key_path).unwrap();
        assert_eq!(
            server.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let client = client_config_trusting(&files.cert_path, &[b"h2"]).unwrap();
        assert_eq!(client.alpn_protocols, vec![b"h2".to_vec()]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&files.key_path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the key must not be readable by others");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    // Goal: bad files are typed errors naming the file, never panics.
    #[test]
    fn missing_and_malformed_files_are_typed_errors() {
        let dir = temp_dir("bad");
        fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("nope.pem");
        assert!(matches!(
            server_config(&missing, &missing),
            Err(TlsError::Io { .. })
        ));
        let empty = dir.join("empty.pem");
        fs::write(&empty, b"not pem at all\n").unwrap();
        let err = client_config_trusting(&empty, &[]).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        assert!(err.to_string().contains("empty.pem"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
