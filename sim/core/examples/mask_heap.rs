//! Heap held by one job's log masker, built as a job of `scenarios/steady.toml` builds it: the
//! job token (43 characters, a secret variable and the endpoint's `AccessToken`), one `fss_`
//! secret, and the emulator's regex mask hint, then 200 log lines masked (some with secrets).
//!
//!   cargo run --release -p fleetsim-core --example mask_heap           # heap per part
//!   cargo run --release -p fleetsim-core --example mask_heap -- --time # ns per masked line
//!
//! Live heap bytes are counted by a counting global allocator (requested sizes, without the
//! allocator's own overhead). Prints each part and the heap per masker with 100 maskers alive at
//! once, with the regex hint compiled per masker and shared through one `RegexCache`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use fleetsim_core::mask::{RegexCache, SecretMasker};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which is the system's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System` with `layout` (every allocation goes through here).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `dealloc`; `new_size` is the caller's, valid for `layout.align()`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The emulator's mask hint (`server::jobs::SECRET_MASK_REGEX`), sent with every job.
const HINT: &str = "fss_[A-Za-z0-9]{28}";
/// Maskers alive at once for the per-masker figure.
const JOBS: usize = 100;

/// How a masker gets its parts.
#[derive(Clone, Copy)]
enum Parts<'a> {
    Literals,
    Regex,
    Both,
    BothShared(&'a RegexCache),
}

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Job `i`'s token and `fss_` secret, distinct per job as the emulator's are.
fn secrets(i: usize) -> (String, String) {
    let token = format!("{i:0>10}Q2xhdWRlIHdhcyBoZXJlIHRvIGNvdW50IGJ5dGVz");
    let secret = format!("fss_{i:0>8}AbCdEfGhIjKlMnOpQrSt");
    (token[..43].to_owned(), secret[..32].to_owned())
}

fn build(i: usize, parts: Parts<'_>) -> SecretMasker {
    let (token, secret) = secrets(i);
    let mut m = SecretMasker::new();
    if !matches!(parts, Parts::Regex) {
        m.add_value(&token).expect("token");
        m.add_value(&token).expect("token again (the endpoint's)");
        m.add_value(&secret).expect("secret");
    }
    match parts {
        Parts::Literals => {}
        Parts::Regex | Parts::Both => m.add_regex(HINT).expect("hint"),
        Parts::BothShared(cache) => m.add_shared_regex(HINT, cache).expect("hint"),
    }
    m
}

/// Job `i`'s log line `k`: mostly clean, one in ten printing a secret.
fn line(i: usize, k: usize) -> String {
    let (token, secret) = secrets(i);
    match k % 20 {
        0 => format!("step 1 line {k}: using {secret} for the upload"),
        10 => format!("step 1 line {k}: Authorization: Bearer {token}"),
        _ => format!("step 1 line {k}: compiling module {k} of the synthetic build (ok)"),
    }
}

fn exercise(m: &SecretMasker, i: usize) -> u32 {
    (0..200).map(|k| m.mask(&line(i, k)).1).sum()
}

fn one(label: &str, parts: Parts<'_>) {
    let before = live();
    let m = build(7, parts);
    let built = live() - before;
    let n = exercise(&m, 7);
    let used = live() - before;
    println!("{label:<40} built {built:>7} B   after 200 lines {used:>7} B   ({n} masked)");
}

fn many(label: &str, parts: Parts<'_>) {
    let before = live();
    let maskers: Vec<SecretMasker> = (0..JOBS)
        .map(|i| {
            let m = build(i, parts);
            exercise(&m, i);
            m
        })
        .collect();
    let per = (live() - before) / JOBS;
    println!("{label:<40} {JOBS} alive at once: {per:>7} B per masker");
    drop(maskers);
}

// A benchmark example, not the core: it reads the wall clock to time lines.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
fn time_lines() {
    let m = build(3, Parts::Both);
    for (name, k) in [("clean line", 1), ("line with the token", 10)] {
        let text = line(3, k);
        let rounds: u32 = 1_000_000;
        let start = std::time::Instant::now();
        let masked: u32 = (0..rounds).map(|_| m.mask(&text).1).sum();
        let ns = start.elapsed().as_nanos() / u128::from(rounds);
        println!("{name:<24} {ns:>5} ns per line ({masked} masked)");
    }
}

fn main() {
    if std::env::args().any(|a| a == "--time") {
        time_lines();
        return;
    }
    // Warm up what the libraries allocate once per process.
    exercise(&build(0, Parts::Both), 0);
    let cache = RegexCache::new();
    one("literals only (aho-corasick + forms)", Parts::Literals);
    one("regex hint only", Parts::Regex);
    one("whole masker, hint compiled for it", Parts::Both);
    many("whole masker, hint compiled for it", Parts::Both);
    // The first masker through the cache pays for the shared regex; the rest do not.
    exercise(&build(0, Parts::BothShared(&cache)), 0);
    many("whole masker, hint shared", Parts::BothShared(&cache));
}
