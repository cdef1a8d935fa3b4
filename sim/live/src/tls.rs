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
    /// The directory for a generated key could be read or changed by someone else.
    #[error(
        "refusing to write the private key into {path}: {reason}; remove it, or pass --tls-dir \
         with a directory only you can write"
    )]
    UnsafeDir { path: PathBuf, reason: String },
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

/// Where `fleetsim serve --tls-self-signed` writes by default: a directory of this user's own
/// under the temp dir (`fleetsim-tls-<uid>`), so two users on one machine never share one.
pub fn default_self_signed_dir() -> PathBuf {
    std::env::temp_dir().join(format!("fleetsim-tls-{}", effective_uid()))
}

/// Generate a fresh self-signed certificate for `localhost`, `127.0.0.1` and `::1` and write it
/// and its key as PEM into `dir`.
///
/// The key never lands where another user could read or swap it: `dir` is created with mode
/// 0700 when missing, and an existing `dir` must be a real directory (not a symlink) owned by
/// this user and writable by nobody else, or nothing is written (`TlsError::UnsafeDir`). Each
/// file is written to a new temporary file (`O_CREAT|O_EXCL`, the key with mode 0600) and
/// renamed over the old one, so a pre-existing file (with a wider mode, or a symlink) is
/// replaced, never written through.
pub fn write_self_signed(dir: &Path) -> Result<SelfSignedFiles, TlsError> {
    let names: Vec<String> = SELF_SIGNED_NAMES.iter().map(|s| s.to_string()).collect();
    let generated = rcgen::generate_simple_self_signed(names)?;
    private_dir(dir)?;
    let files = SelfSignedFiles {
        cert_path: dir.join(SELF_SIGNED_CERT_FILE),
        key_path: dir.join(SELF_SIGNED_KEY_FILE),
    };
    write_file(&files.cert_path, generated.cert.pem().as_bytes(), 0o644)?;
    write_file(
        &files.key_path,
        generated.signing_key.serialize_pem().as_bytes(),
        0o600,
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

/// Create `dir` (mode 0700) if missing, then check that it is a directory of ours that no one
/// else can write into (see `write_self_signed`).
fn private_dir(dir: &Path) -> Result<(), TlsError> {
    let io_err = |source| TlsError::Io {
        path: dir.into(),
        source,
    };
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err)?;
    }
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(e)),
    }
    let meta = fs::symlink_metadata(dir).map_err(io_err)?;
    let unsafe_dir = |reason: String| TlsError::UnsafeDir {
        path: dir.into(),
        reason,
    };
    if !meta.is_dir() {
        return Err(unsafe_dir(
            "it is not a directory (a symlink or a file)".into(),
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let uid = effective_uid();
        if meta.uid() != uid {
            return Err(unsafe_dir(format!(
                "it belongs to uid {}, not to this user (uid {uid})",
                meta.uid()
            )));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(unsafe_dir(format!(
                "other users may write into it (mode {:o})",
                meta.mode() & 0o7777
            )));
        }
    }
    Ok(())
}

/// This process's effective user id (0 where there are none).
fn effective_uid() -> u32 {
    #[cfg(unix)]
    // SAFETY: geteuid has no preconditions, touches no memory of ours and cannot fail.
    let uid = unsafe { libc::geteuid() };
    #[cfg(not(unix))]
    let uid = 0;
    uid
}

/// Write `bytes` to `path` through a fresh temporary file in the same directory, created with
/// `O_CREAT|O_EXCL` and `mode` (on Unix), then renamed over `path`: whatever was at `path`
/// (a file with another mode, a symlink) is replaced, never written into.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let io_err = |source| TlsError::Io {
        path: path.into(),
        source,
    };
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| io_err(io::Error::other(e.to_string())))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let suffix: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let temp = path.with_file_name(format!(".{name}.{suffix}.tmp"));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let written = options.open(&temp).and_then(|mut file| {
        io::Write::write_all(&mut file, bytes)?;
        file.sync_all()
    });
    let renamed = written.and_then(|()| fs::rename(&temp, path));
    if renamed.is_err() {
        let _ = fs::remove_file(&temp);
    }
    renamed.map_err(io_err)
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

    // Goal: a key file that already exists with a wide mode (0644) is replaced by a 0600 one,
    // never written into keeping its mode, and a symlink at the key's path is replaced, not
    // followed.
    #[cfg(unix)]
    #[test]
    fn key_is_0600_even_over_a_wider_existing_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("mode");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        let key = dir.join(SELF_SIGNED_KEY_FILE);
        fs::write(&key, b"old").unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let files = write_self_signed(&dir).unwrap();
        let mode = fs::metadata(&files.key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
        let target = dir.join("elsewhere.pem");
        fs::write(&target, b"untouched").unwrap();
        fs::remove_file(&key).unwrap();
        std::os::unix::fs::symlink(&target, &key).unwrap();
        write_self_signed(&dir).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"untouched");
        assert!(!fs::symlink_metadata(&key).unwrap().is_symlink());
        let leftovers = fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0, "no temporary file is left behind");
        fs::remove_dir_all(&dir).unwrap();
    }

    // Goal: a missing directory is created 0700; an existing one that others may write into,
    // that belongs to another user, or that is a symlink is refused before a key is written.
    #[cfg(unix)]
    #[test]
    fn key_directory_must_be_private_and_ours() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = temp_dir("owner");
        let created = dir.join("new");
        write_self_signed(&created).unwrap();
        let mode = fs::metadata(&created).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "mode {mode:o}");

        let shared = dir.join("shared");
        fs::create_dir_all(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
        let err = write_self_signed(&shared).unwrap_err();
        assert!(matches!(err, TlsError::UnsafeDir { .. }), "{err}");
        assert!(!shared.join(SELF_SIGNED_KEY_FILE).exists());

        let link = dir.join("link");
        std::os::unix::fs::symlink(&created, &link).unwrap();
        let err = write_self_signed(&link).unwrap_err();
        assert!(matches!(err, TlsError::UnsafeDir { .. }), "{err}");

        // Only root can hand a directory to another user; elsewhere this part has nothing to
        // set up.
        if effective_uid() == 0 {
            let foreign = dir.join("foreign");
            fs::create_dir_all(&foreign).unwrap();
            fs::set_permissions(&foreign, fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(&foreign, Some(4242), Some(4242)).unwrap();
            assert_eq!(fs::metadata(&foreign).unwrap().uid(), 4242);
            let err = write_self_signed(&foreign).unwrap_err();
            assert!(err.to_string().contains("uid 4242"), "{err}");
            assert!(!foreign.join(SELF_SIGNED_KEY_FILE).exists());
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    // Goal: the default directory is per user, never a name every user of the machine shares.
    #[test]
    fn default_directory_names_the_user() {
        let dir = default_self_signed_dir();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(name, format!("fleetsim-tls-{}", effective_uid()));
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
