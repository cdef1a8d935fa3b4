//! The on-disk RSA key cache: agents' private keys as PKCS#8 DER files, so a fleet starts in
//! seconds on every run after the first.
//!
//! Layout: one directory (mode 0700), one file per key (mode 0600) named `rsa{bits}-{index:06}.pk8`
//! — keyed by size and index, so 2048- and 3072-bit fleets share a directory without clashing.
//! A run asks for `distinct_keys` keys and agents reuse them round-robin ([`KeySet::key_for`]).
//! A missing, unreadable, corrupt or wrong-sized file is regenerated and replaced atomically
//! (write to a temporary file, then rename), so an interrupted run never leaves half a key.
//!
//! All file IO, parsing and key generation run on tokio's blocking pool with at most
//! `parallelism` jobs in flight: generating one RSA-2048 key takes up to ~0.2 s and must never
//! stall an async worker. The result says how many keys were loaded and how many generated.
//!
//! This module never logs, prints or formats key material, and never reads keys from anywhere
//! but its own directory.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use fleetsim_core::crypto::{CryptoError, PrivateKey, RSA_BITS_MAX, RSA_BITS_MIN};
use thiserror::Error;
use tokio::task::JoinSet;

/// The largest key file read back (a 4096-bit PKCS#8 key is ~2.4 KB).
const KEY_FILE_MAX_BYTES: u64 = 16 * 1024;
/// The most keys one run may ask for; more distinct keys than agents buys nothing.
pub const MAX_DISTINCT_KEYS: usize = 1_000_000;

/// Why the cache could not deliver keys. Never carries key bytes.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KeyCacheError {
    #[error("key cache directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing key file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("generating a {bits}-bit key: {source}")]
    Generate {
        bits: usize,
        #[source]
        source: CryptoError,
    },
    #[error("unsupported key size {0} bits (2048, 3072 or 4096)")]
    Bits(usize),
    #[error("asked for {0} distinct keys (1..={MAX_DISTINCT_KEYS})")]
    Count(usize),
    #[error("a key job stopped unexpectedly: {0}")]
    Join(String),
}

/// How one key came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    Loaded,
    Generated,
    /// A file existed but was unusable (corrupt, wrong size) and was replaced.
    Replaced,
}

/// The keys of one run, with how they were obtained.
#[derive(Debug)]
pub struct KeySet {
    /// Index `i` is the key in file `rsa{bits}-{i:06}.pk8`.
    pub keys: Vec<Arc<PrivateKey>>,
    /// Keys read back from the cache.
    pub loaded: usize,
    /// Keys generated because no file existed.
    pub generated: usize,
    /// Keys generated to replace a corrupt or wrong-sized file (also counted in `generated`).
    pub replaced: usize,
    /// Wall time spent generating, summed over keys (for the crypto report), in nanoseconds.
    pub generate_nanos: u64,
}

impl KeySet {
    /// The key agent `agent` uses: keys are shared round-robin.
    ///
    /// # Panics
    /// If the set is empty, which `KeyCache::load_or_generate` never returns.
    pub fn key_for(&self, agent: u32) -> Arc<PrivateKey> {
        assert!(!self.keys.is_empty(), "a KeySet holds at least one key");
        Arc::clone(&self.keys[agent as usize % self.keys.len()])
    }
}

/// A key cache directory.
#[derive(Clone, Debug)]
pub struct KeyCache {
    dir: PathBuf,
}

impl KeyCache {
    /// Open (creating if needed) the cache directory and make sure only its owner can enter it.
    pub fn open(dir: impl Into<PathBuf>) -> Result<KeyCache, KeyCacheError> {
        let dir = dir.into();
        let dir_err = |source| KeyCacheError::Dir {
            path: dir.clone(),
            source,
        };
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir).map_err(dir_err)?;
        // An existing directory keeps its old mode through `create`: tighten it explicitly.
        restrict(&dir, 0o700).map_err(dir_err)?;
        Ok(KeyCache { dir })
    }

    /// `$XDG_CACHE_HOME/fleetsim/keys`, else `$HOME/.cache/fleetsim/keys`, else a directory under
    /// the system temporary directory.
    pub fn default_dir() -> PathBuf {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        base.join("fleetsim").join("keys")
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding key `index` of size `bits`.
    pub fn path_for(&self, bits: usize, index: usize) -> PathBuf {
        self.dir.join(format!("rsa{bits}-{index:06}.pk8"))
    }

    /// Keys `0..count` of size `bits`: loaded when cached, generated (and cached) otherwise,
    /// with at most `parallelism` blocking jobs at a time. `done` counts finished keys, for a
    /// progress display.
    pub async fn load_or_generate(
        &self,
        bits: usize,
        count: usize,
        parallelism: usize,
        done: Option<Arc<AtomicUsize>>,
    ) -> Result<KeySet, KeyCacheError> {
        if !(RSA_BITS_MIN..=RSA_BITS_MAX).contains(&bits) || !bits.is_multiple_of(1024) {
            return Err(KeyCacheError::Bits(bits));
        }
        if count == 0 || count > MAX_DISTINCT_KEYS {
            return Err(KeyCacheError::Count(count));
        }
        let parallelism = parallelism.max(1);
        let mut slots: Vec<Option<Arc<PrivateKey>>> = vec![None; count];
        let mut set = KeySet {
            keys: Vec::new(),
            loaded: 0,
            generated: 0,
            replaced: 0,
            generate_nanos: 0,
        };
        let mut jobs = JoinSet::new();
        let mut next = 0usize;
        loop {
            while next < count && jobs.len() < parallelism {
                let path = self.path_for(bits, next);
                let index = next;
                jobs.spawn_blocking(move || (index, load_or_generate_one(&path, bits)));
                next += 1;
            }
            let Some(joined) = jobs.join_next().await else {
                break;
            };
            let (index, result) = joined.map_err(|e| KeyCacheError::Join(e.to_string()))?;
            let (key, origin, nanos) = result?;
            match origin {
                Origin::Loaded => set.loaded += 1,
                Origin::Generated => set.generated += 1,
                Origin::Replaced => {
                    set.generated += 1;
                    set.replaced += 1;
                }
            }
            set.generate_nanos += nanos;
            slots[index] = Some(Arc::new(key));
            if let Some(done) = &done {
                done.fetch_add(1, Ordering::Relaxed);
            }
        }
        set.keys = slots.into_iter().flatten().collect();
        debug_assert_eq!(set.keys.len(), count, "every index got a key");
        Ok(set)
    }
}

/// Blocking: read and parse `path`, or generate a key and write it there.
fn load_or_generate_one(
    path: &Path,
    bits: usize,
) -> Result<(PrivateKey, Origin, u64), KeyCacheError> {
    let origin = match read_key(path) {
        Ok(Some(key)) if key.bits() == bits => return Ok((key, Origin::Loaded, 0)),
        Ok(None) => Origin::Generated,
        // Corrupt, unreadable or the wrong size: replace it rather than fail the run.
        Ok(Some(_)) | Err(_) => Origin::Replaced,
    };
    let started = Instant::now();
    let key =
        PrivateKey::generate(bits).map_err(|source| KeyCacheError::Generate { bits, source })?;
    let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    write_key(path, &key.to_pkcs8_der())?;
    Ok((key, origin, nanos))
}

/// `Ok(None)` when there is no file; `Err` when it exists but cannot be used.
fn read_key(path: &Path) -> Result<Option<PrivateKey>, ()> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(_) => return Err(()),
    };
    if !meta.is_file() || meta.len() > KEY_FILE_MAX_BYTES {
        return Err(());
    }
    let der = fs::read(path).map_err(|_| ())?;
    let key = PrivateKey::from_pkcs8_der(&der).map_err(|_| ())?;
    // A file someone loosened keeps working, but only its owner may read it again.
    restrict(path, 0o600).map_err(|_| ())?;
    Ok(Some(key))
}

/// Write `der` to `path` with mode 0600 via a temporary file and a rename.
fn write_key(path: &Path, der: &[u8]) -> Result<(), KeyCacheError> {
    let tmp = path.with_extension(format!("pk8.tmp{}", std::process::id()));
    let write_err = |source| KeyCacheError::Write {
        path: path.into(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = options
        .open(&tmp)
        .and_then(|mut f| f.write_all(der))
        .and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(write_err)
}

/// Clear group and other permission bits beyond `mode` (Unix only).
fn restrict(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let current = fs::metadata(path)?.permissions().mode() & 0o777;
        if current != mode {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("fleetsim-keycache-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    // Goal: the first run generates and caches (dir 0700, files 0600); the second run loads the
    // very same keys without generating; agents share keys round-robin.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn second_run_loads_what_the_first_generated() {
        let dir = temp_dir("reuse");
        let cache = KeyCache::open(&dir).unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let first = cache
            .load_or_generate(2048, 3, 2, Some(Arc::clone(&done)))
            .await
            .unwrap();
        assert_eq!((first.generated, first.loaded, first.replaced), (3, 0, 0));
        assert_eq!(done.load(Ordering::Relaxed), 3);
        assert!(first.generate_nanos > 0);
        #[cfg(unix)]
        {
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&cache.path_for(2048, 0)), 0o600);
        }
        let second = cache.load_or_generate(2048, 3, 2, None).await.unwrap();
        assert_eq!((second.generated, second.loaded), (0, 3));
        for (a, b) in first.keys.iter().zip(&second.keys) {
            assert_eq!(
                a.public_key(),
                b.public_key(),
                "the cache returns the same keys"
            );
        }
        assert_eq!(second.key_for(4).public_key(), second.keys[1].public_key());
        fs::remove_dir_all(&dir).unwrap();
    }

    // Goal: a corrupt file is replaced (counted), a loosened directory is tightened again, and
    // bad requests are typed errors.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn corrupt_files_are_replaced_and_bad_requests_refused() {
        let dir = temp_dir("corrupt");
        let cache = KeyCache::open(&dir).unwrap();
        fs::write(cache.path_for(2048, 0), b"not a key").unwrap();
        let set = cache.load_or_generate(2048, 1, 1, None).await.unwrap();
        assert_eq!((set.generated, set.replaced, set.loaded), (1, 1, 0));
        assert!(PrivateKey::from_pkcs8_der(&fs::read(cache.path_for(2048, 0)).unwrap()).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
            KeyCache::open(&dir).unwrap();
            assert_eq!(mode(&dir), 0o700);
        }
        assert!(matches!(
            cache.load_or_generate(1024, 1, 1, None).await,
            Err(KeyCacheError::Bits(1024))
        ));
        assert!(matches!(
            cache.load_or_generate(2048, 0, 1, None).await,
            Err(KeyCacheError::Count(0))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
