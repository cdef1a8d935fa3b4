//! Secret masking as the real agent does it (protocol.md §6), and the emulator's leak scanner.
//!
//! [`SecretMasker`] is the agent side: every secret value is registered together with the
//! encoded forms a task might print it in, mask hints of type `regex` are added as regexes, and
//! [`SecretMasker::mask`] replaces every match in a log line with `***`. Overlapping and adjacent
//! matches (two secrets that share characters, a value inside its own base64 form) merge into
//! one `***`, as the agent merges its replacement ranges.
//!
//! [`LeakScanner`] is the emulator side: built from a job's secret values, it counts how many
//! times a value or one of its base64 forms appears in uploaded text. It shares the matcher and
//! the variant code with the masker, so a line the masker produced always scans clean.
//!
//! The forms registered for a value (see [`SecretMasker::add_value`]):
//! - the value itself, and each of its lines if it spans several (the agent masks line by line);
//! - base64, as the agent's `Base64StringEscape` / `Shift1` / `Shift2` (standard alphabet,
//!   padded, of the value and of the value without its first one or two bytes), plus the
//!   *stable cores* of those three alignments (the characters fully determined by the secret's
//!   bytes, without padding), so `base64("user:" + secret)` is caught whatever follows it;
//! - the logging-command escape (`%`→`%AZP25`, CR→`%0D`, LF→`%0A`);
//! - the JSON-string escape (without the quotes), the URI data escape (`Uri.EscapeDataString`:
//!   everything but `A–Z a–z 0–9 - _ . ~` percent-encoded as UTF-8, upper-case hex), and the
//!   backslash escape (`\\`→`\`, `\'`→`'`, `\"`→`"`, `\t`→tab).
//!
//! [`RegexCache`] shares compiled regex hints between maskers: the emulator sends the same hint
//! with every job, and a compiled regex with its search cache is most of a masker's heap.
//!
//! Everything is bounded (values, pattern bytes, regex count and size, cached patterns). This
//! module never logs, never stores the unmasked text, and its `Debug` output never shows a
//! secret.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use aho_corasick::{AhoCorasick, AhoCorasickKind, Input, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use regex::{Regex, RegexBuilder};
use thiserror::Error;

/// What a match is replaced with.
pub const MASK: &str = "***";

/// The largest minimum-length knob: the agent caps `AZP_IGNORE_SECRETS_SHORTER_THAN` at 6.
pub const MIN_SECRET_LEN_CAP: usize = 6;

/// The most secret values one masker or scanner takes.
pub const VALUES_MAX: usize = 4096;

/// The most bytes of literal patterns (values plus all their forms) one matcher holds.
pub const PATTERN_BYTES_MAX: usize = 4 * 1024 * 1024;

/// The most regex hints one masker takes.
pub const REGEXES_MAX: usize = 64;

/// The longest regex hint accepted, in bytes.
pub const REGEX_LEN_MAX: usize = 4096;

/// The most patterns one [`RegexCache`] keeps.
pub const REGEX_CACHE_MAX: usize = 64;

/// Compiled size limit per regex hint, so a hostile pattern cannot take the heap.
const REGEX_SIZE_LIMIT_BYTES: usize = 1 << 20;

/// A base64 stable core shorter than this is not registered: a few base64 characters occur by
/// chance in ordinary log text, and the masker would start hiding unrelated output.
const BASE64_CORE_CHARS_MIN: usize = 8;

/// Why a value or regex was not added. The masker is unchanged after an error.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MaskError {
    /// The regex hint does not compile (or compiles too big); the message is the parser's.
    #[error("mask regex does not compile: {0}")]
    Regex(String),
    /// The regex hint is longer than [`REGEX_LEN_MAX`].
    #[error("mask regex is longer than {REGEX_LEN_MAX} bytes")]
    RegexTooLong,
    /// More than [`REGEXES_MAX`] regex hints.
    #[error("more than {REGEXES_MAX} mask regexes")]
    TooManyRegexes,
    /// More than [`VALUES_MAX`] values or [`PATTERN_BYTES_MAX`] pattern bytes.
    #[error("the secret masker is full")]
    Full,
}

/// Which derived forms a value is registered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Forms {
    /// Every form the agent masks (the masker).
    All,
    /// The value and its base64 forms (the leak scanner).
    Base64,
}

/// A log-line masker with the real agent's value encoders. Build it once per job, then call
/// [`SecretMasker::mask`] on every line.
#[derive(Default)]
pub struct SecretMasker {
    matcher: Matcher,
    /// Values shorter than this (in chars) are ignored; 0..=[`MIN_SECRET_LEN_CAP`].
    min_len: usize,
}

impl fmt::Debug for SecretMasker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretMasker")
            .field("values", &self.matcher.values)
            .field("patterns", &self.matcher.literals.len())
            .field("regexes", &self.matcher.regexes.len())
            .field("min_len", &self.min_len)
            .finish()
    }
}

impl SecretMasker {
    /// An empty masker that masks every non-empty value.
    pub fn new() -> SecretMasker {
        SecretMasker::default()
    }

    /// An empty masker that ignores values shorter than `min_len` chars (the agent's
    /// `AZP_IGNORE_SECRETS_SHORTER_THAN`), capped at [`MIN_SECRET_LEN_CAP`] as the agent caps it.
    pub fn with_min_length(min_len: usize) -> SecretMasker {
        SecretMasker {
            matcher: Matcher::default(),
            min_len: min_len.min(MIN_SECRET_LEN_CAP),
        }
    }

    /// Register a secret value and its encoded forms. Empty values and values shorter than the
    /// minimum length are ignored (not an error).
    pub fn add_value(&mut self, value: &str) -> Result<(), MaskError> {
        if value.chars().count() < self.min_len.max(1) {
            return Ok(());
        }
        self.matcher.add_value(value, Forms::All)
    }

    /// Register a mask hint of type `regex`, compiled for this masker alone. Matches of an
    /// empty string are ignored.
    pub fn add_regex(&mut self, pattern: &str) -> Result<(), MaskError> {
        self.check_regex_room(pattern)?;
        let regex = Arc::new(compile(pattern)?);
        self.matcher.regexes.push(regex);
        Ok(())
    }

    /// Register a mask hint of type `regex`, sharing the compiled regex (and its search cache)
    /// with every masker that took the same pattern from `cache`. Masks exactly as
    /// [`SecretMasker::add_regex`] does.
    pub fn add_shared_regex(&mut self, pattern: &str, cache: &RegexCache) -> Result<(), MaskError> {
        self.check_regex_room(pattern)?;
        let regex = cache.compiled(pattern)?;
        self.matcher.regexes.push(regex);
        Ok(())
    }

    /// Whether nothing is registered (every line passes unchanged).
    pub fn is_empty(&self) -> bool {
        self.matcher.is_empty()
    }

    fn check_regex_room(&self, pattern: &str) -> Result<(), MaskError> {
        if pattern.len() > REGEX_LEN_MAX {
            return Err(MaskError::RegexTooLong);
        }
        if self.matcher.regexes.len() >= REGEXES_MAX {
            return Err(MaskError::TooManyRegexes);
        }
        Ok(())
    }

    /// `line` with every secret occurrence replaced by `***`, and the number of `***` inserted
    /// (overlapping or touching matches count once). Borrows when nothing matched.
    pub fn mask<'a>(&self, line: &'a str) -> (Cow<'a, str>, u32) {
        let ranges = self.matcher.ranges(line);
        if ranges.is_empty() {
            return (Cow::Borrowed(line), 0);
        }
        let mut out = String::with_capacity(line.len());
        let mut copied = 0;
        for range in &ranges {
            out.push_str(&line[copied..range.start]);
            out.push_str(MASK);
            copied = range.end;
        }
        out.push_str(&line[copied..]);
        (Cow::Owned(out), count(&ranges))
    }
}

/// Counts a job's secrets in text the emulator received (live-log lines, log uploads).
///
/// A secret counts when the value or one of its base64 forms appears; overlapping or touching
/// occurrences count once. Text that went through a [`SecretMasker`] with the same values always
/// scans clean.
#[derive(Default)]
pub struct LeakScanner {
    matcher: Matcher,
}

impl fmt::Debug for LeakScanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeakScanner")
            .field("values", &self.matcher.values)
            .field("patterns", &self.matcher.literals.len())
            .finish()
    }
}

impl LeakScanner {
    /// A scanner for `values`; empty values are skipped. Values past [`VALUES_MAX`] or
    /// [`PATTERN_BYTES_MAX`] are dropped (the emulator makes the secrets, so this is a
    /// configuration limit, not peer input).
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> LeakScanner {
        let mut matcher = Matcher::default();
        for value in values {
            if !value.is_empty() && matcher.add_value(value, Forms::Base64).is_err() {
                break;
            }
        }
        LeakScanner { matcher }
    }

    /// Whether the scanner has no values (every scan is 0).
    pub fn is_empty(&self) -> bool {
        self.matcher.is_empty()
    }

    /// How many leaked occurrences `text` contains.
    pub fn scan(&self, text: &str) -> u32 {
        count(&self.matcher.ranges(text))
    }
}

/// Compiled regex hints by pattern, shared by the maskers built through it; a cheap handle
/// (clones share one cache).
///
/// A compiled regex is a pure function of its pattern (the size limits are constants), so which
/// job compiled it first changes no match: sharing changes memory only, never a masked line, an
/// event or a trace hash. It is a handle the driver passes down (the fleet's `AgentConfig` holds
/// one) rather than a process-wide static, so the core keeps no hidden process state and the
/// sharing scope is visible: the agents of one configuration. The `Mutex` is there because a
/// live fleet's agents run on several threads; it is taken once per regex hint per job, never
/// per line (the `Regex` is `Sync`, with a pool of search caches: one per thread searching with it
/// at the same moment).
///
/// Bound: [`REGEX_CACHE_MAX`] patterns. When full, patterns no masker holds any more are dropped;
/// if every one is still held, the new pattern is compiled for its masker alone (masking is the
/// same, only the sharing is lost). Patterns that do not compile are not kept.
#[derive(Clone, Default)]
pub struct RegexCache {
    patterns: Arc<Mutex<BTreeMap<String, Arc<Regex>>>>,
}

impl fmt::Debug for RegexCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Patterns may be secrets (a hint can be a value escaped as a regex): never shown.
        f.debug_struct("RegexCache").finish_non_exhaustive()
    }
}

impl RegexCache {
    /// An empty cache.
    pub fn new() -> RegexCache {
        RegexCache::default()
    }

    /// How many compiled patterns the cache holds.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the cache holds no pattern.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The compiled regex for `pattern`, shared when it is cached.
    fn compiled(&self, pattern: &str) -> Result<Arc<Regex>, MaskError> {
        if let Some(regex) = self.lock().get(pattern) {
            return Ok(Arc::clone(regex));
        }
        // Compiled outside the lock, so other threads' look-ups do not wait on a compile; if
        // two compile the same pattern at once, the first one in is the one shared.
        let regex = Arc::new(compile(pattern)?);
        let mut patterns = self.lock();
        if let Some(cached) = patterns.get(pattern) {
            return Ok(Arc::clone(cached));
        }
        if patterns.len() >= REGEX_CACHE_MAX {
            patterns.retain(|_, cached| Arc::strong_count(cached) > 1);
        }
        if patterns.len() < REGEX_CACHE_MAX {
            patterns.insert(pattern.to_owned(), Arc::clone(&regex));
        }
        Ok(regex)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Regex>>> {
        // The map is consistent after any panic (inserts and removals are single calls).
        self.patterns.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A regex hint compiled under the masker's size limits.
fn compile(pattern: &str) -> Result<Regex, MaskError> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT_BYTES)
        .dfa_size_limit(REGEX_SIZE_LIMIT_BYTES)
        .build()
        .map_err(|e| MaskError::Regex(e.to_string()))
}

fn count(ranges: &[Range<usize>]) -> u32 {
    u32::try_from(ranges.len()).unwrap_or(u32::MAX)
}

/// The literal and regex patterns, and the one search both the masker and the scanner run.
#[derive(Default)]
struct Matcher {
    /// Every literal (values and their forms), deduplicated and ordered for a stable build.
    literals: BTreeSet<String>,
    literal_bytes: usize,
    values: usize,
    /// Regex hints, shared with other maskers when they came through a [`RegexCache`].
    regexes: Vec<Arc<Regex>>,
    /// Built on first search after a change; `None` inside when there are no literals.
    automaton: OnceLock<Option<AhoCorasick>>,
}

impl Matcher {
    fn add_value(&mut self, value: &str, forms: Forms) -> Result<(), MaskError> {
        let new: Vec<String> = variants(value, forms)
            .into_iter()
            .filter(|v| !self.literals.contains(v))
            .collect();
        let added_bytes: usize = new.iter().map(String::len).sum();
        if self.values >= VALUES_MAX || self.literal_bytes + added_bytes > PATTERN_BYTES_MAX {
            return Err(MaskError::Full);
        }
        self.values += 1;
        self.literal_bytes += added_bytes;
        self.literals.extend(new);
        self.automaton = OnceLock::new();
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.literals.is_empty() && self.regexes.is_empty()
    }

    fn automaton(&self) -> Option<&AhoCorasick> {
        self.automaton
            .get_or_init(|| {
                if self.literals.is_empty() {
                    return None;
                }
                // A contiguous NFA keeps memory near the pattern bytes; every state sparse
                // (dense depth 0) is the smallest that keeps the prefilter. A steady job's
                // masker (job token, one secret: 14 forms), measured by the `mask_heap`
                // example: contiguous 12.8 KB at the default dense depth 2, 9.8 KB at 0, the
                // noncontiguous NFA 22-26 KB, a DFA 188 KB; the prefilter costs 4.2 KB and makes
                // clean lines 4.5x faster (50 vs 230 ns), which dense depth 0 does not change.
                let automaton = AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .kind(Some(AhoCorasickKind::ContiguousNFA))
                    .dense_depth(0)
                    .build(&self.literals)
                    .expect("PATTERN_BYTES_MAX keeps the automaton far below its state limit");
                Some(automaton)
            })
            .as_ref()
    }

    /// All matches in `text` as sorted, disjoint byte ranges (overlapping or touching merged).
    fn ranges(&self, text: &str) -> Vec<Range<usize>> {
        let mut merged: Vec<Range<usize>> = Vec::new();
        if let Some(automaton) = self.automaton() {
            // The union of all matches, overlapping ones included, is the union over start
            // positions of the longest match starting there. A leftmost-longest search resumed
            // one byte after each match's start visits exactly those, and every search runs
            // the prefilter, which keeps secret-free text fast (an overlapping search does
            // not, and was 2.5x slower on clean lines). Patterns are UTF-8, so matches start
            // on char boundaries.
            let mut from = 0;
            while let Some(m) = automaton.find(Input::new(text).span(from..text.len())) {
                push_merged(&mut merged, m.range());
                from = m.start() + 1;
            }
        }
        for regex in &self.regexes {
            let mut found: Vec<Range<usize>> = Vec::new();
            for m in regex.find_iter(text).filter(|m| !m.is_empty()) {
                push_merged(&mut found, m.range());
            }
            merged = union(merged, found);
        }
        merged
    }
}

/// Add `next` to `merged` (sorted, disjoint), given that no range in it starts after `next`.
/// Overlapping or touching ranges merge, as the agent merges its replacements.
fn push_merged(merged: &mut Vec<Range<usize>>, next: Range<usize>) {
    match merged.last_mut() {
        Some(last) if next.start <= last.end => last.end = last.end.max(next.end),
        _ => merged.push(next),
    }
}

/// The union of two sorted, disjoint range lists, merged the same way.
fn union(a: Vec<Range<usize>>, b: Vec<Range<usize>>) -> Vec<Range<usize>> {
    if b.is_empty() {
        return a;
    }
    if a.is_empty() {
        return b;
    }
    let mut all = a;
    all.extend(b);
    all.sort_unstable_by_key(|r| r.start);
    let mut out: Vec<Range<usize>> = Vec::with_capacity(all.len());
    for r in all {
        push_merged(&mut out, r);
    }
    out
}

/// The literal forms registered for `value`, deduplicated, empty strings dropped.
fn variants(value: &str, forms: Forms) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut bases = vec![value.to_owned()];
    // The agent masks line by line, so a multi-line secret is also registered per line.
    if value.contains(['\r', '\n']) {
        bases.extend(
            value
                .split(['\r', '\n'])
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        );
    }
    for base in &bases {
        out.insert(base.clone());
        add_base64_forms(base.as_bytes(), &mut out);
        if forms == Forms::All {
            out.insert(command_escape(base));
            out.insert(json_string_escape(base));
            out.insert(uri_data_escape(base));
            out.insert(backslash_unescape(base));
        }
    }
    out.remove("");
    out
}

/// The agent's `Base64StringEscape`, `Shift1` and `Shift2`, plus the stable core of each
/// alignment: the characters that only depend on whole 3-byte groups of the secret, which
/// appear in *any* base64 text containing it at that alignment.
fn add_base64_forms(bytes: &[u8], out: &mut BTreeSet<String>) {
    for shift in 0..3 {
        // The agent's form falls back to the unshifted value when it is too short to shift.
        let shifted = if bytes.len() > shift {
            &bytes[shift..]
        } else {
            bytes
        };
        out.insert(STANDARD.encode(shifted));
        let whole_groups = shifted.len() / 3 * 3;
        let core = STANDARD_NO_PAD.encode(&shifted[..whole_groups]);
        if core.len() >= BASE64_CORE_CHARS_MIN {
            out.insert(core);
        }
    }
}

/// The logging-command escape: how a value looks inside `##vso[...]` data.
fn command_escape(value: &str) -> String {
    value
        .replace('%', "%AZP25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// `JsonConvert.ToString(value)` without the surrounding quotes.
fn json_string_escape(value: &str) -> String {
    let quoted = serde_json::to_string(value).unwrap_or_default();
    quoted
        .get(1..quoted.len().saturating_sub(1))
        .unwrap_or_default()
        .to_owned()
}

/// `Uri.EscapeDataString`: RFC 3986 unreserved characters stay, everything else is `%XX` of
/// its UTF-8 bytes with upper-case hex.
fn uri_data_escape(value: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(value.len() * 3);
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

/// The agent's backslash encoder: a secret written with shell escapes, as the shell prints it.
fn backslash_unescape(value: &str) -> String {
    value
        .replace("\\\\", "\\")
        .replace("\\'", "'")
        .replace("\\\"", "\"")
        .replace("\\t", "\t")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "p@ss%w0rd\"x\\y/é z";

    fn masker(values: &[&str]) -> SecretMasker {
        let mut m = SecretMasker::new();
        for v in values {
            m.add_value(v).unwrap();
        }
        m
    }

    // Goal: every encoded form of a secret is masked when it appears inside a line.
    #[test]
    fn every_variant_is_masked() {
        let m = masker(&[SECRET]);
        let forms = [
            SECRET.to_owned(),
            STANDARD.encode(SECRET),
            STANDARD.encode(&SECRET.as_bytes()[1..]),
            STANDARD.encode(&SECRET.as_bytes()[2..]),
            "p@ss%AZP25w0rd\"x\\y/é z".to_owned(),
            r#"p@ss%w0rd\"x\\y/é z"#.to_owned(),
            "p%40ss%25w0rd%22x%5Cy%2F%C3%A9%20z".to_owned(),
        ];
        for form in forms {
            let line = format!("before {form} after");
            let (masked, n) = m.mask(&line);
            assert_eq!(masked, "before *** after", "form {form:?}");
            assert_eq!(n, 1, "form {form:?}");
        }
    }

    // Goal: the logging-command escape covers CR/LF, and each line of a multi-line secret is
    // masked on its own (logs are masked line by line).
    #[test]
    fn multiline_secret_is_masked_escaped_and_per_line() {
        let m = masker(&["first-line\r\nsecond-line%"]);
        assert_eq!(m.mask("x first-line%0D%0Asecond-line%AZP25 y").0, "x *** y");
        assert_eq!(m.mask("a first-line b").0, "a *** b");
        assert_eq!(m.mask("c second-line% d").0, "c *** d");
    }

    // Goal: the backslash encoder masks the shell-unescaped form of an escaped secret.
    #[test]
    fn backslash_escaped_secret_is_masked_unescaped() {
        let m = masker(&[r#"a\"b\\c\td"#]);
        assert_eq!(m.mask("v=a\"b\\c\td;").0, "v=***;");
    }

    // Goal: base64 of "user:secret" (Basic auth) is masked whatever the prefix length, via the
    // stable cores, even when more base64 follows.
    #[test]
    fn secret_inside_larger_base64_is_masked() {
        let m = masker(&["correct-horse-battery"]);
        for prefix in ["", "u:", "us:", "use:", "user:"] {
            for suffix in ["", "!", "!!", "!!!"] {
                let blob = STANDARD.encode(format!("{prefix}correct-horse-battery{suffix}"));
                let (masked, n) = m.mask(&blob);
                assert_eq!(n, 1, "{prefix:?}+secret+{suffix:?}: {blob}");
                assert!(masked.contains(MASK));
                let (_, left) = m.mask(&masked);
                assert_eq!(left, 0);
            }
        }
    }

    // Goal: overlapping and adjacent secrets merge into one `***`; distinct ones stay apart.
    #[test]
    fn overlapping_values_merge() {
        let m = masker(&["abcdef", "defghi", "xyz123"]);
        assert_eq!(m.mask("1 abcdefghi 2").0, "1 *** 2");
        assert_eq!(m.mask("abcdefxyz123").0, "***");
        let (masked, n) = m.mask("abcdef and xyz123");
        assert_eq!((masked.as_ref(), n), ("*** and ***", 2));
        // A secret inside a longer secret is covered by the longer match.
        let m = masker(&["tok", "tokentoken"]);
        assert_eq!(m.mask("[tokentoken]").0, "[***]");
    }

    // Goal: a clean line is borrowed, not copied (the hot path for most log lines).
    #[test]
    fn clean_line_is_borrowed() {
        let m = masker(&[SECRET]);
        let (out, n) = m.mask("nothing to see here");
        assert!(matches!(out, Cow::Borrowed(_)));
        assert_eq!(n, 0);
        assert!(matches!(SecretMasker::new().mask("x").0, Cow::Borrowed(_)));
    }

    // Goal: the minimum length skips short values and is capped at 6 like the agent's.
    #[test]
    fn minimum_length_skips_short_values() {
        let mut m = SecretMasker::with_min_length(4);
        m.add_value("abc").unwrap();
        m.add_value("").unwrap();
        assert!(m.is_empty());
        m.add_value("abcd").unwrap();
        assert_eq!(m.mask("abcd abc").0, "*** abc");
        let mut capped = SecretMasker::with_min_length(100);
        capped.add_value("sixsix").unwrap();
        assert_eq!(capped.mask("sixsix").1, 1);
    }

    // Goal: regex hints mask their matches, combine with literal values, and bad hints are
    // typed errors that leave the masker unchanged.
    #[test]
    fn regex_hints_mask_and_bad_ones_are_rejected() {
        let mut m = masker(&["literal-secret"]);
        m.add_regex(r"ghp_[A-Za-z0-9]{8}").unwrap();
        let (out, n) = m.mask("t=ghp_abcDEF12 s=literal-secret");
        assert_eq!((out.as_ref(), n), ("t=*** s=***", 2));
        // A regex match overlapping a literal merges with it.
        m.add_regex(r"secret-\d+").unwrap();
        assert_eq!(m.mask("literal-secret-42!").0, "***!");
        // An empty-matching regex masks nothing rather than inserting *** everywhere.
        m.add_regex(r"z*").unwrap();
        assert_eq!(m.mask("abc").0, "abc");
        assert!(matches!(m.add_regex("(unclosed"), Err(MaskError::Regex(_))));
        assert_eq!(
            m.add_regex(&"a".repeat(REGEX_LEN_MAX + 1)),
            Err(MaskError::RegexTooLong)
        );
        assert!(matches!(
            m.add_regex(r"\w{1000}{1000}"),
            Err(MaskError::Regex(_))
        ));
        for _ in 0..REGEXES_MAX {
            let _ = m.add_regex("q");
        }
        assert_eq!(m.add_regex("q"), Err(MaskError::TooManyRegexes));
    }

    // Goal: maskers given the same regex hint through one cache hold one compiled regex, and
    // mask every line byte for byte as a masker that compiled the hint itself.
    #[test]
    fn shared_regex_hint_is_compiled_once_and_masks_the_same() {
        let cache = RegexCache::new();
        let hint = "fss_[A-Za-z0-9]{28}";
        let jobs = ["job-one-token-value", "job-two-token-value"];
        let shared: Vec<SecretMasker> = jobs
            .iter()
            .map(|token| {
                let mut m = masker(&[token]);
                m.add_shared_regex(hint, &cache).unwrap();
                m
            })
            .collect();
        assert!(Arc::ptr_eq(
            &shared[0].matcher.regexes[0],
            &shared[1].matcher.regexes[0]
        ));
        assert_eq!(cache.len(), 1);
        let lines = [
            "plain line without secrets",
            "t=fss_abcdefghijklmnopqrstuvwxyz01 and job-one-token-value",
            "job-two-token-value fss_abcdefghijklmnopqrstuvwxyz01job-two-token-value",
            "short fss_abc is not a match",
        ];
        for (token, with_cache) in jobs.iter().zip(&shared) {
            let mut own = masker(&[token]);
            own.add_regex(hint).unwrap();
            for line in lines {
                assert_eq!(with_cache.mask(line), own.mask(line), "{line}");
            }
        }
        // A bad hint is the same typed error through the cache, and is not kept.
        assert!(matches!(
            SecretMasker::new().add_shared_regex("(unclosed", &cache),
            Err(MaskError::Regex(_))
        ));
        assert_eq!(cache.len(), 1);
    }

    // Goal: the cache is bounded: past its limit, patterns no masker holds are dropped, and a
    // pattern that finds no room is still compiled (for that masker alone).
    #[test]
    fn regex_cache_is_bounded() {
        let cache = RegexCache::new();
        let held: Vec<SecretMasker> = (0..REGEX_CACHE_MAX)
            .map(|i| {
                let mut m = SecretMasker::new();
                m.add_shared_regex(&format!("held{i}"), &cache).unwrap();
                m
            })
            .collect();
        let mut extra = SecretMasker::new();
        extra.add_shared_regex("extra", &cache).unwrap();
        assert_eq!(extra.mask("an extra line").0, "an *** line");
        assert_eq!(cache.len(), REGEX_CACHE_MAX);
        drop(held);
        extra.add_shared_regex("another", &cache).unwrap();
        assert_eq!(cache.len(), 1);
    }

    // Goal: the masker refuses values past its bound instead of growing without limit.
    #[test]
    fn masker_is_bounded() {
        let mut m = SecretMasker::new();
        let big = "s".repeat(PATTERN_BYTES_MAX / 2);
        assert_eq!(m.add_value(&big), Err(MaskError::Full));
        for i in 0..VALUES_MAX {
            m.add_value(&format!("value-{i}")).unwrap();
        }
        assert_eq!(m.add_value("one-more"), Err(MaskError::Full));
    }

    // Goal: Debug output never contains a secret.
    #[test]
    fn debug_never_shows_secrets() {
        let m = masker(&["hunter2-secret"]);
        let s = LeakScanner::new(["hunter2-secret"]);
        assert!(!format!("{m:?}{s:?}").contains("hunter2"));
    }

    // Goal: a masked line scans clean; an unmasked line is counted (value and base64 forms).
    #[test]
    fn scanner_counts_leaks_and_masked_lines_scan_clean() {
        let secrets = [SECRET, "second-secret-value"];
        let m = masker(&secrets);
        let scanner = LeakScanner::new(secrets);
        let b64 = STANDARD.encode(SECRET);
        let basic = STANDARD.encode(format!("user:{}", secrets[1]));
        let lines = [
            format!("token {SECRET} used"),
            format!("auth {b64}"),
            format!("Authorization: Basic {basic}"),
            format!("{} and {SECRET}", secrets[1]),
        ];
        let expected = [1, 1, 1, 2];
        for (line, want) in lines.iter().zip(expected) {
            assert_eq!(scanner.scan(line), want, "{line}");
            let (masked, n) = m.mask(line);
            assert_eq!(n, want);
            assert_eq!(scanner.scan(&masked), 0, "{masked}");
        }
        assert_eq!(scanner.scan("clean text"), 0);
        assert!(LeakScanner::new([""]).is_empty());
    }

    // Goal: the encoders produce exactly the agent's forms.
    #[test]
    fn encoders_match_the_agent() {
        assert_eq!(uri_data_escape("a b/é~"), "a%20b%2F%C3%A9~");
        assert_eq!(
            json_string_escape("a\"b\\c\n\u{1}"),
            "a\\\"b\\\\c\\n\\u0001"
        );
        assert_eq!(command_escape("50%\r\n"), "50%AZP25%0D%0A");
        assert_eq!(backslash_unescape(r"\\ \' \t"), "\\ ' \t");
        let v = variants("ab", Forms::Base64);
        assert!(v.contains("ab") && v.contains("YWI=") && v.contains("Yg=="));
        assert!(!variants("", Forms::All).contains(""));
    }
}
