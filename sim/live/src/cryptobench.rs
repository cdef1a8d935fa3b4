//! `fleetsim crypto-bench`: measures this machine's crypto speed for the operations the
//! protocol uses — RSA key generation, RS256 sign/verify, the RS256 JWT assertion, OAEP-SHA1
//! wrap/unwrap of a 32-byte session key, and AES-256-CBC/PKCS7 encrypt/decrypt throughput — with
//! the same code paths the agents and the emulator run (`fleetsim_core::crypto`).
//!
//! The figures calibrate the modelled crypto cost of virtual-time runs and tell an operator how
//! many key generations or token exchanges per second one core sustains. Each measurement is a
//! warm-up (a fifth of the budget) followed by a timed loop that stops at the first iteration
//! past the budget, so the whole run is bounded by (operations × 1.2 × budget) plus at most one
//! slow iteration each (a 4096-bit key can take a second). Single-threaded: it measures one core.
//!
//! This is a measurement tool, not a test: it reads the wall clock (`Instant`), which the core
//! never does. It never writes files; the CLI decides where the report goes.

use std::hint::black_box;
use std::time::{Duration, Instant};

use fleetsim_core::crypto::awslc::AwsLc;
use fleetsim_core::crypto::jwt::{self, Claims};
use fleetsim_core::crypto::{
    self, PrivateKey, RsaBackend, RsaPrivate, RsaPublic, aes256_cbc_decrypt, aes256_cbc_encrypt,
};
use serde::Serialize;

/// The report format version (bump on any breaking change to the JSON).
pub const REPORT_VERSION: u32 = 1;

/// The signed message size: about a JWT signing input (header.claims).
const SIGN_MSG_BYTES: usize = 600;

/// What to measure and for how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CryptoBenchOptions {
    /// Timed budget per measurement (the warm-up adds a fifth of it).
    pub budget: Duration,
    /// Most keys generated per key size; generation also stops at the budget (at least 1 key).
    pub keygen_keys_max: usize,
    /// RSA key sizes to measure (2048, 3072, 4096).
    pub rsa_bits: Vec<usize>,
    /// AES-CBC message sizes in bytes.
    pub aes_sizes_bytes: Vec<usize>,
    /// Also measure the `rsa` crate backend. Only honoured when fleetsim-live is built with its
    /// `rustcrypto` feature; otherwise the report notes that it was skipped.
    pub include_rustcrypto: bool,
}

impl Default for CryptoBenchOptions {
    fn default() -> Self {
        CryptoBenchOptions {
            budget: Duration::from_millis(500),
            keygen_keys_max: 10,
            rsa_bits: vec![2048],
            aes_sizes_bytes: vec![64 * 1024, 1024 * 1024],
            include_rustcrypto: cfg!(feature = "rustcrypto"),
        }
    }
}

/// One measured operation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchResult {
    /// `"aws-lc-rs"` or `"rsa"`.
    pub backend: String,
    /// What was measured: `keygen`, `rs256_sign`, `rs256_verify`, `jwt_sign`, `oaep_wrap`,
    /// `oaep_unwrap`, `aes_cbc_encrypt`, `aes_cbc_decrypt`.
    pub op: String,
    /// RSA key size, for RSA operations.
    pub bits: Option<usize>,
    /// Message size, for AES operations.
    pub msg_bytes: Option<usize>,
    /// Timed iterations.
    pub iterations: u64,
    /// Timed wall time.
    pub elapsed_s: f64,
    /// Iterations per second on one core.
    pub ops_per_s: f64,
    /// Mean time per iteration.
    pub mean_us: f64,
    /// Throughput in MB/s (10^6 bytes), for AES operations.
    pub mb_per_s: Option<f64>,
    /// Per-key spread, for key generation (it depends on how fast primes are found).
    pub spread: Option<Spread>,
}

/// The distribution of individually timed iterations.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Spread {
    /// Fastest iteration.
    pub min_us: f64,
    /// Median iteration.
    pub median_us: f64,
    /// Slowest iteration.
    pub max_us: f64,
}

/// Everything one `crypto-bench` run measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CryptoBenchReport {
    /// [`REPORT_VERSION`].
    pub version: u32,
    /// The timed budget per measurement, in milliseconds.
    pub budget_ms: u64,
    /// Whether this is an optimised build (debug figures are not representative).
    pub optimized: bool,
    /// One row per measurement, in the order run.
    pub results: Vec<BenchResult>,
    /// Things that were asked for but not measured, with the reason.
    pub skipped: Vec<String>,
}

/// Run every measurement `opts` asks for and return the report.
pub fn run(opts: CryptoBenchOptions) -> CryptoBenchReport {
    let mut results = Vec::new();
    let mut skipped = Vec::new();
    let sizes: Vec<usize> = opts
        .rsa_bits
        .iter()
        .copied()
        .filter(|&bits| {
            let ok = matches!(bits, 2048 | 3072 | 4096);
            if !ok {
                skipped.push(format!(
                    "RSA-{bits}: only 2048, 3072 and 4096 are supported"
                ));
            }
            ok
        })
        .collect();
    for &bits in &sizes {
        bench_rsa::<AwsLc>(&opts, bits, &mut results);
        bench_jwt(&opts, bits, &mut results);
    }
    if opts.include_rustcrypto {
        bench_rustcrypto(&opts, &sizes, &mut results, &mut skipped);
    }
    for &size in &opts.aes_sizes_bytes {
        bench_aes(&opts, size, &mut results);
    }
    CryptoBenchReport {
        version: REPORT_VERSION,
        budget_ms: u64::try_from(opts.budget.as_millis()).unwrap_or(u64::MAX),
        optimized: !cfg!(debug_assertions),
        results,
        skipped,
    }
}

#[cfg(feature = "rustcrypto")]
fn bench_rustcrypto(
    opts: &CryptoBenchOptions,
    sizes: &[usize],
    results: &mut Vec<BenchResult>,
    _skipped: &mut [String],
) {
    for &bits in sizes {
        bench_rsa::<fleetsim_core::crypto::rustcrypto::RustCrypto>(opts, bits, results);
    }
}

#[cfg(not(feature = "rustcrypto"))]
fn bench_rustcrypto(
    _opts: &CryptoBenchOptions,
    _sizes: &[usize],
    _results: &mut [BenchResult],
    skipped: &mut Vec<String>,
) {
    skipped.push("rsa crate backend: build fleetsim-live with --features rustcrypto".into());
}

/// Key generation, RS256 sign/verify and OAEP wrap/unwrap with backend `B`.
fn bench_rsa<B: RsaBackend>(opts: &CryptoBenchOptions, bits: usize, out: &mut Vec<BenchResult>) {
    let row = |op: &str, iterations: u64, elapsed: Duration| {
        BenchResult::new(B::NAME, op, iterations, elapsed).with_bits(bits)
    };

    let (key, samples) = keygen_samples::<B>(opts, bits);
    let elapsed = samples.iter().sum();
    out.push(row("keygen", samples.len() as u64, elapsed).with_spread(&samples));

    let public = key.public_key().expect("a generated key has a public half");
    let msg = vec![0x61u8; SIGN_MSG_BYTES];
    let (n, t) = timed(opts.budget, || black_box(key.sign_rs256(black_box(&msg))));
    out.push(row("rs256_sign", n, t));
    let sig = key.sign_rs256(&msg).expect("signing with a generated key");
    let (n, t) = timed(opts.budget, || {
        black_box(public.verify_rs256(black_box(&msg), &sig))
    });
    out.push(row("rs256_verify", n, t));

    let session_key = [0x42u8; 32];
    let (n, t) = timed(opts.budget, || {
        black_box(public.encrypt_oaep_sha1(&session_key))
    });
    out.push(row("oaep_wrap", n, t));
    let wrapped = public
        .encrypt_oaep_sha1(&session_key)
        .expect("OAEP fits a 32-byte key");
    let (n, t) = timed(opts.budget, || {
        black_box(key.decrypt_oaep_sha1(black_box(&wrapped)))
    });
    out.push(row("oaep_unwrap", n, t));
}

/// Generate keys one at a time until `keygen_keys_max` or the budget, timing each.
fn keygen_samples<B: RsaBackend>(
    opts: &CryptoBenchOptions,
    bits: usize,
) -> (B::Private, Vec<Duration>) {
    let mut samples = Vec::with_capacity(opts.keygen_keys_max.max(1));
    let started = Instant::now();
    loop {
        let t0 = Instant::now();
        let key = B::generate(bits).expect("supported key size");
        samples.push(t0.elapsed());
        if samples.len() >= opts.keygen_keys_max.max(1) || started.elapsed() >= opts.budget {
            return (key, samples);
        }
    }
}

/// The whole RS256 JWT assertion as the agents build it (serialise, base64url, sign).
fn bench_jwt(opts: &CryptoBenchOptions, bits: usize, out: &mut Vec<BenchResult>) {
    let key = PrivateKey::generate(bits).expect("supported key size");
    let claims = Claims {
        iss: "8f2b6f3e-0c1d-4c55-9a7e-1b2c3d4e5f60".into(),
        sub: "8f2b6f3e-0c1d-4c55-9a7e-1b2c3d4e5f60".into(),
        aud: "https://fleetsim.invalid/_apis/oauth2/token".into(),
        nbf: 1_790_000_000,
        exp: 1_790_000_300,
        jti: "0d9e8f7a-6b5c-4d3e-2f1a-0b9c8d7e6f5a".into(),
    };
    let (n, t) = timed(opts.budget, || {
        black_box(jwt::sign(&key, black_box(&claims)))
    });
    out.push(BenchResult::new(crypto::awslc::AwsLc::NAME, "jwt_sign", n, t).with_bits(bits));
}

/// AES-256-CBC/PKCS7 encrypt and decrypt of one `size`-byte message per iteration.
fn bench_aes(opts: &CryptoBenchOptions, size: usize, out: &mut Vec<BenchResult>) {
    let key = [7u8; 32];
    let iv = [9u8; 16];
    let plain = vec![0x5au8; size];
    let (n, t) = timed(opts.budget, || {
        black_box(aes256_cbc_encrypt(&key, &iv, black_box(&plain)))
    });
    out.push(BenchResult::new(AwsLc::NAME, "aes_cbc_encrypt", n, t).with_bytes(size));
    let cipher = aes256_cbc_encrypt(&key, &iv, &plain);
    let (n, t) = timed(opts.budget, || {
        black_box(aes256_cbc_decrypt(&key, &iv, black_box(&cipher)))
    });
    out.push(BenchResult::new(AwsLc::NAME, "aes_cbc_decrypt", n, t).with_bytes(size));
}

/// Warm up for a fifth of `budget`, then run `f` until `budget` has passed (at least once).
/// Returns the timed iterations and their total wall time.
fn timed<T>(budget: Duration, mut f: impl FnMut() -> T) -> (u64, Duration) {
    let warm_up = budget / 5;
    let started = Instant::now();
    while started.elapsed() < warm_up {
        black_box(f());
    }
    let started = Instant::now();
    let mut iterations = 0u64;
    loop {
        black_box(f());
        iterations += 1;
        let elapsed = started.elapsed();
        if elapsed >= budget {
            return (iterations, elapsed);
        }
    }
}

impl BenchResult {
    fn new(backend: &str, op: &str, iterations: u64, elapsed: Duration) -> BenchResult {
        let elapsed_s = elapsed.as_secs_f64();
        let iterations_f = iterations.max(1) as f64;
        BenchResult {
            backend: backend.to_owned(),
            op: op.to_owned(),
            bits: None,
            msg_bytes: None,
            iterations,
            elapsed_s,
            ops_per_s: if elapsed_s > 0.0 {
                iterations as f64 / elapsed_s
            } else {
                0.0
            },
            mean_us: elapsed_s * 1e6 / iterations_f,
            mb_per_s: None,
            spread: None,
        }
    }

    fn with_bits(mut self, bits: usize) -> BenchResult {
        self.bits = Some(bits);
        self
    }

    fn with_bytes(mut self, bytes: usize) -> BenchResult {
        self.msg_bytes = Some(bytes);
        self.mb_per_s = Some(self.ops_per_s * bytes as f64 / 1e6);
        self
    }

    fn with_spread(mut self, samples: &[Duration]) -> BenchResult {
        let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        us.sort_by(f64::total_cmp);
        if let (Some(&min_us), Some(&max_us)) = (us.first(), us.last()) {
            self.spread = Some(Spread {
                min_us,
                median_us: us[us.len() / 2],
                max_us,
            });
        }
        self
    }
}

impl CryptoBenchReport {
    /// The report as an aligned text table, one row per measurement.
    pub fn render_text(&self) -> String {
        let mut out = format!(
            "crypto-bench: one core, {} ms per measurement{}\n",
            self.budget_ms,
            if self.optimized {
                ""
            } else {
                " (DEBUG BUILD: figures not representative)"
            }
        );
        out.push_str(&format!(
            "{:<10} {:<16} {:>8} {:>12} {:>11} {:>10} {:>7}  {}\n",
            "backend", "operation", "size", "ops/s", "mean", "MB/s", "n", "spread (min/median/max)"
        ));
        for r in &self.results {
            let size = match (r.bits, r.msg_bytes) {
                (Some(bits), _) => format!("{bits}b"),
                (None, Some(bytes)) => human_bytes(bytes),
                (None, None) => "-".into(),
            };
            let mb = r.mb_per_s.map_or_else(|| "-".into(), |v| format!("{v:.0}"));
            let spread = r.spread.as_ref().map_or_else(String::new, |s| {
                format!(
                    "{} / {} / {}",
                    human_us(s.min_us),
                    human_us(s.median_us),
                    human_us(s.max_us)
                )
            });
            let row = format!(
                "{:<10} {:<16} {:>8} {:>12.1} {:>11} {:>10} {:>7}  {}",
                r.backend,
                r.op,
                size,
                r.ops_per_s,
                human_us(r.mean_us),
                mb,
                r.iterations,
                spread
            );
            out.push_str(row.trim_end());
            out.push('\n');
        }
        for s in &self.skipped {
            out.push_str(&format!("skipped: {s}\n"));
        }
        out
    }
}

fn human_us(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}

fn human_bytes(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{}MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{}KiB", bytes >> 10)
    } else {
        format!("{bytes}B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: with a tiny budget every requested operation yields a row with sane numbers, the
    // text table has one line per row, and unsupported sizes are reported, not fatal.
    #[test]
    fn run_reports_every_operation() {
        let opts = CryptoBenchOptions {
            budget: Duration::from_millis(2),
            keygen_keys_max: 1,
            rsa_bits: vec![2048, 1024],
            aes_sizes_bytes: vec![1024],
            include_rustcrypto: false,
        };
        let report = run(opts);
        let ops: Vec<&str> = report.results.iter().map(|r| r.op.as_str()).collect();
        assert_eq!(
            ops,
            [
                "keygen",
                "rs256_sign",
                "rs256_verify",
                "oaep_wrap",
                "oaep_unwrap",
                "jwt_sign",
                "aes_cbc_encrypt",
                "aes_cbc_decrypt"
            ]
        );
        for r in &report.results {
            assert!(
                r.iterations >= 1 && r.ops_per_s > 0.0 && r.mean_us > 0.0,
                "{r:?}"
            );
        }
        let keygen = &report.results[0];
        assert_eq!((keygen.iterations, keygen.bits), (1, Some(2048)));
        assert!(keygen.spread.is_some());
        let aes = report.results.last().unwrap();
        assert_eq!(aes.msg_bytes, Some(1024));
        assert!(aes.mb_per_s.unwrap() > 0.0);
        assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
        let text = report.render_text();
        assert_eq!(
            text.lines().count(),
            2 + report.results.len() + report.skipped.len()
        );
        assert!(text.contains("aes_cbc_decrypt") && text.contains("1KiB"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["version"], REPORT_VERSION);
    }

    // Goal: the timed loop always runs at least once and stops at the budget.
    #[test]
    fn timed_loop_is_bounded() {
        let (n, t) = timed(Duration::ZERO, || 1);
        assert_eq!(n, 1);
        assert!(t < Duration::from_secs(1));
        let (n, t) = timed(Duration::from_millis(5), || black_box(2 + 2));
        assert!(n > 1 && t >= Duration::from_millis(5));
    }

    // Goal: sizes render in the units people read them in.
    #[test]
    fn sizes_render_readably() {
        assert_eq!(human_bytes(65536), "64KiB");
        assert_eq!(human_bytes(1 << 20), "1MiB");
        assert_eq!(human_bytes(1000), "1000B");
        assert_eq!(human_us(280.0), "280.0 µs");
        assert_eq!(human_us(61_200.0), "61.2 ms");
    }
}
