//! The spanned document: parse the TOML keeping every key's and value's byte span, apply `--set`
//! overrides, and deserialize the raw mirror collecting every error in one pass.
//!
//! One pass, all errors: serde stops at the first error, so the loader deserializes, records the
//! error at its span, removes the offending key from the tree, and tries again (at most
//! [`MAX_DIAGNOSTICS`] times). Removed paths are remembered so that validation does not report a
//! second, derived problem ("missing run.duration") for a value already reported as bad.
//!
//! Overrides are inserted into the same tree with spans past the end of the file, one per
//! override, so an error in an overridden value is reported against that `--set` and not a file
//! position. The value text is typed by the JSON Schema: a value the field would only accept as
//! a string (`--set run.name=123`) is taken as a string; otherwise it is read as a TOML value
//! (`100`, `true`, `{ dist = "exponential", mean = "2m" }`), and text that is no TOML value at
//! all (`5m`, `/tmp/keys`) is a string.
//!
//! Numbers are checked against their ranges (`crate::ranges`) before deserializing, and the
//! messages of serde and toml, which speak Rust ("invalid type: string \"many\", expected u32"),
//! are said again in a user's words: what the key takes and what was found. Every message about
//! a place in the file starts with its key path (`fleet.agents: …`); one about a `--set` has the
//! path in the override it quotes.
//!
//! This module never checks cross-field rules: that is `crate::validate`.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue, Deserializer};

use crate::diag::{Diagnostic, Origin, line_col};
use crate::leaf::parse_bytes;
use crate::ranges::{self, Kind};
use crate::raw::RawScenario;

/// At most this many problems are reported for one scenario (a bound on the retry loop too).
pub const MAX_DIAGNOSTICS: usize = 100;

/// Overrides get spans from here on: no scenario file is this long (files are read only up to
/// `MAX_SCENARIO_BYTES`).
const OVERRIDE_SPAN_BASE: usize = usize::MAX / 2;

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A key path such as `faults[1].at`.
pub type Path = Vec<Seg>;

/// Render a path as users write it: `fleet.agents`, `faults[1].at`, `thresholds."a.b"`.
pub fn path_text(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                if k.is_empty()
                    || k.contains(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                {
                    out.push_str(&format!("{k:?}"));
                } else {
                    out.push_str(k);
                }
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Where every key and value of the final tree sits.
#[derive(Debug, Default)]
pub struct Spans {
    /// Path → (key span, value span).
    entries: BTreeMap<Path, (Range<usize>, Range<usize>)>,
}

impl Spans {
    /// The span to point at for `path`: its value, or the nearest present ancestor's key (a
    /// missing field is reported at the table that should have held it).
    pub fn locate(&self, path: &[Seg]) -> Option<Range<usize>> {
        if let Some((_, value)) = self.entries.get(path) {
            return Some(value.clone());
        }
        (1..path.len())
            .rev()
            .find_map(|n| self.entries.get(&path[..n]).map(|(k, _)| k.clone()))
    }

    /// The span of `path`'s key, if present.
    pub fn key(&self, path: &[Seg]) -> Option<Range<usize>> {
        self.entries.get(path).map(|(k, _)| k.clone())
    }
}

/// The loader's state for one scenario: its text, its overrides, what was found.
pub struct Loader<'a> {
    /// The name diagnostics carry (a path as given).
    file: &'a str,
    text: &'a str,
    overrides: &'a [String],
    /// Problems so far.
    diags: Vec<Diagnostic>,
    /// Paths removed because their value was bad.
    poisoned: BTreeSet<Path>,
    /// Spans of the final tree (filled by `parse`).
    spans: Spans,
}

impl<'a> Loader<'a> {
    /// A loader for `text` (named `file`) with `overrides` (`"KEY.PATH=VALUE"`).
    pub fn new(file: &'a str, text: &'a str, overrides: &'a [String]) -> Loader<'a> {
        Loader {
            file,
            text,
            overrides,
            diags: Vec::new(),
            poisoned: BTreeSet::new(),
            spans: Spans::default(),
        }
    }

    /// Parse, apply overrides and deserialize the raw mirror. `None` when the text could not be
    /// read as TOML at all (the syntax errors are in `diags`); otherwise the raw scenario with the
    /// bad values left out (each reported).
    pub fn parse(&mut self, schema: &serde_json::Value) -> Option<RawScenario> {
        let (mut root, errors) = DeTable::parse_recoverable(self.text);
        if !errors.is_empty() {
            for e in errors {
                let origin = self.origin(e.span());
                self.push(origin, e.message().to_string());
            }
            return None;
        }
        root.get_mut().make_owned();
        for index in 0..self.overrides.len() {
            self.apply_override(root.get_mut(), index, schema);
        }
        self.check_ranges(root.get_mut());
        let raw = self.deserialize(&mut root, schema);
        self.spans = Spans::default();
        index_table(root.get_ref(), &mut Vec::new(), &mut self.spans);
        raw
    }

    /// Report `message` at `path` (its value, or the nearest ancestor present), unless the path
    /// or an ancestor was already reported as bad.
    pub fn at(&mut self, path: &[Seg], message: impl Into<String>) {
        if self.is_poisoned(path) {
            return;
        }
        let origin = self.origin(self.spans.locate(path));
        self.push_at(origin, path, message.into());
    }

    /// Report `message` at `path`'s key (for keys that are themselves wrong, such as a misspelt
    /// threshold metric).
    pub fn at_key(&mut self, path: &[Seg], message: impl Into<String>) {
        if self.is_poisoned(path) {
            return;
        }
        let origin = self.origin(self.spans.key(path).or_else(|| self.spans.locate(path)));
        self.push_at(origin, path, message.into());
    }

    /// Diagnostics in reading order: the file top to bottom, then overrides, then whole-file.
    pub fn finish(mut self) -> Vec<Diagnostic> {
        let rank = |o: &Origin| match o {
            Origin::File { line, col } => (0, *line, *col),
            Origin::Override { index, .. } => (1, *index, 0),
            Origin::Whole => (2, 0, 0),
        };
        self.diags.sort_by_key(|d| rank(&d.origin));
        self.diags
    }

    /// True when `path` or an ancestor was cut for a bad value (and so already reported).
    fn is_poisoned(&self, path: &[Seg]) -> bool {
        (1..=path.len()).any(|n| self.poisoned.contains(&path[..n]))
    }

    fn push(&mut self, origin: Origin, message: String) {
        if self.diags.len() < MAX_DIAGNOSTICS {
            self.diags.push(Diagnostic {
                file: self.file.to_string(),
                origin,
                message,
            });
        }
    }

    /// `message` about the value at `path`: led by the path, unless it is a `--set`'s (whose
    /// quoted text names the path already).
    fn push_at(&mut self, origin: Origin, path: &[Seg], message: String) {
        let message = match origin {
            Origin::Override { .. } => message,
            Origin::File { .. } | Origin::Whole if path.is_empty() => message,
            Origin::File { .. } | Origin::Whole => format!("{}: {message}", path_text(path)),
        };
        self.push(origin, message);
    }

    /// Check every number that has a range (`crate::ranges`) and cut the ones outside it, each
    /// reported at its value, so that the defaults stand in while checking goes on.
    fn check_ranges(&mut self, root: &mut DeTable<'a>) {
        let mut spans = Spans::default();
        index_table(root, &mut Vec::new(), &mut spans);
        let mut bad = Vec::new();
        for (path, (_, value_span)) in &spans.entries {
            let Some(range) = ranges::lookup(path) else {
                continue;
            };
            // A value of another type is serde's to report, with the range's words.
            let Some(value) = value_at(root, path).and_then(|v| number_of(v, range.kind)) else {
                continue;
            };
            if let Some(message) = range.check(value) {
                bad.push((path.clone(), value_span.clone(), message));
            }
        }
        for (path, span, message) in bad {
            let origin = self.origin(Some(span));
            self.push_at(origin, &path, message);
            let cut = cut_of(&path);
            remove(root, &cut);
            self.poisoned.insert(cut);
        }
    }

    fn origin(&self, span: Option<Range<usize>>) -> Origin {
        match span {
            Some(s) if s.start >= OVERRIDE_SPAN_BASE => {
                let index = s.start - OVERRIDE_SPAN_BASE;
                let text = self.overrides.get(index).cloned().unwrap_or_default();
                Origin::Override { index, text }
            }
            Some(s) => {
                let (line, col) = line_col(self.text, s.start);
                Origin::File { line, col }
            }
            None => Origin::Whole,
        }
    }

    /// Deserialize, and on each error record it, cut the offending entry and retry.
    fn deserialize(
        &mut self,
        root: &mut Spanned<DeTable<'a>>,
        schema: &serde_json::Value,
    ) -> Option<RawScenario> {
        for _ in 0..MAX_DIAGNOSTICS {
            let attempt = RawScenario::deserialize(Deserializer::from(root.clone()));
            let err = match attempt {
                Ok(raw) => return Some(raw),
                Err(err) => err,
            };
            let origin = self.origin(err.span());
            let path = err.span().and_then(|s| find_span(root.get_ref(), &s));
            let Some((at, mut path)) = path else {
                self.push(origin, err.message().to_string());
                // Nothing to cut (an error about a whole table): stop rather than loop.
                return None;
            };
            let message = human_message(err.message(), schema, &at, root.get_ref());
            self.push_at(origin, &at, message);
            remove(root.get_mut(), &path);
            self.poisoned.insert(path.clone());
            // A table emptied by the cut goes too: every raw field is optional, so an absent
            // table means the same as an empty one, except for enums written as tables
            // (`arrival = {}`), which would fail again and report the same mistake twice.
            while path.len() > 1 && matches!(path[path.len() - 2], Seg::Key(_)) {
                path.pop();
                if !is_empty_table(root.get_ref(), &path) {
                    break;
                }
                remove(root.get_mut(), &path);
                self.poisoned.insert(path.clone());
            }
        }
        None
    }

    /// Insert override `index` into the tree, or report why it cannot be.
    fn apply_override(&mut self, root: &mut DeTable<'a>, index: usize, schema: &serde_json::Value) {
        let span = OVERRIDE_SPAN_BASE + index..OVERRIDE_SPAN_BASE + index + 1;
        let origin = self.origin(Some(span.clone()));
        let text = &self.overrides[index];
        let Some((key_text, value_text)) = text.split_once('=') else {
            self.push(origin, "expected KEY.PATH=VALUE".to_string());
            return;
        };
        let path = match parse_path(key_text.trim()) {
            Ok(path) => path,
            Err(message) => return self.push(origin, message),
        };
        let accepts = match schema_at(schema, &path) {
            Ok(accepts) => accepts,
            Err(message) => return self.push(origin, message),
        };
        let value = typed_value(value_text.trim(), &accepts, &span);
        if let Err(message) = insert(root, &path, value, &span) {
            self.push(origin, message);
        }
    }
}

/// Parse `a.b."c.d"[2].e` into segments.
fn parse_path(text: &str) -> Result<Path, String> {
    let mut path = Vec::new();
    let mut rest = text;
    let bad = || format!("invalid key path {text:?}; write e.g. fleet.agents or faults[0].at");
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').ok_or_else(bad)?;
            path.push(Seg::Key(quoted[..end].to_string()));
            rest = &quoted[end + 1..];
        } else if let Some(indexed) = rest.strip_prefix('[') {
            let end = indexed.find(']').ok_or_else(bad)?;
            let i: usize = indexed[..end].trim().parse().map_err(|_| bad())?;
            path.push(Seg::Index(i));
            rest = &indexed[end + 1..];
        } else {
            // A bare key, as TOML spells one: letters, digits, `_` and `-`.
            let bare = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
            let end = rest.find(|c: char| !bare(c)).unwrap_or(rest.len());
            let key = &rest[..end];
            if key.is_empty() {
                return Err(bad());
            }
            path.push(Seg::Key(key.to_string()));
            rest = &rest[end..];
        }
        if let Some(after_dot) = rest.strip_prefix('.') {
            if after_dot.is_empty() {
                return Err(bad());
            }
            rest = after_dot;
        } else if !rest.is_empty() && !rest.starts_with('[') {
            return Err(bad());
        }
    }
    if path.is_empty() || !matches!(path[0], Seg::Key(_)) {
        return Err(bad());
    }
    Ok(path)
}

/// The JSON types the schema accepts at `path` (`"string"`, `"integer"`, …), or an error naming
/// the first key the schema does not know.
fn schema_at(schema: &serde_json::Value, path: &[Seg]) -> Result<BTreeSet<String>, String> {
    let nodes = schema_nodes(schema, path)?;
    let mut types = BTreeSet::new();
    for node in nodes.iter().flat_map(|n| alternatives(schema, n)) {
        match node.get("type") {
            Some(serde_json::Value::String(t)) => {
                types.insert(t.clone());
            }
            Some(serde_json::Value::Array(ts)) => {
                types.extend(ts.iter().filter_map(|t| t.as_str().map(str::to_string)));
            }
            _ => {}
        }
        if node.get("enum").is_some() || node.get("const").is_some() {
            types.insert("string".to_string());
        }
    }
    Ok(types)
}

/// The choices an enum field offers at `path`: its string values and, for variants written as
/// a one-key table (`{ bursts = { … } }`), that key. Empty when the field is no enum.
fn schema_variants(schema: &serde_json::Value, path: &[Seg]) -> Vec<String> {
    let Ok(nodes) = schema_nodes(schema, path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for node in nodes.iter().flat_map(|n| alternatives(schema, n)) {
        for v in node
            .get("enum")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
        {
            out.extend(v.as_str().map(|v| format!("\"{v}\"")));
        }
        if let Some(v) = node.get("const").and_then(|c| c.as_str()) {
            out.push(format!("\"{v}\""));
        }
        let required = node.get("required").and_then(|r| r.as_array());
        if let Some([key]) = required.map(Vec::as_slice)
            && node
                .get("properties")
                .and_then(|p| p.as_object())
                .is_some_and(|p| p.len() == 1)
        {
            out.extend(key.as_str().map(|k| format!("{{ {k} = … }}")));
        }
    }
    out
}

/// The schema nodes that describe `path`, or an error naming the first unknown key.
fn schema_nodes<'s>(
    schema: &'s serde_json::Value,
    path: &[Seg],
) -> Result<Vec<&'s serde_json::Value>, String> {
    let mut nodes = vec![schema];
    for (depth, seg) in path.iter().enumerate() {
        let mut next = Vec::new();
        for node in nodes.iter().flat_map(|n| alternatives(schema, n)) {
            match seg {
                Seg::Key(k) => {
                    if let Some(p) = node.get("properties").and_then(|p| p.get(k)) {
                        next.push(p);
                    } else if let Some(a) =
                        node.get("additionalProperties").filter(|a| a.is_object())
                    {
                        next.push(a);
                    }
                }
                Seg::Index(_) => next.extend(node.get("items").filter(|i| i.is_object())),
            }
        }
        if next.is_empty() {
            let here = path_text(&path[..depth]);
            let known = known_keys(schema, &nodes);
            let within = if here.is_empty() {
                "at the top level".to_string()
            } else {
                format!("in `{here}`")
            };
            return Err(match seg {
                Seg::Key(k) if known.is_empty() => {
                    format!(
                        "unknown key path `{}`: `{here}` has no key `{k}`",
                        path_text(path)
                    )
                }
                Seg::Key(k) => format!(
                    "unknown key path `{}`: no key `{k}` {within}; expected one of {}",
                    path_text(path),
                    known.join(", ")
                ),
                Seg::Index(_) => format!(
                    "unknown key path `{}`: `{here}` is not a list",
                    path_text(path)
                ),
            });
        }
        nodes = next;
    }
    Ok(nodes)
}

/// A schema node with `$ref`s resolved and `anyOf`/`oneOf`/`allOf` flattened.
fn alternatives<'s>(
    root: &'s serde_json::Value,
    node: &'s serde_json::Value,
) -> Vec<&'s serde_json::Value> {
    let mut out = Vec::new();
    let mut stack = vec![node];
    // Depth-first in declaration order (reversed pushes onto a stack), so messages list choices
    // as the schema declares them. Bounded: schemas here are shallow; the bound guards a cycle.
    for _ in 0..64 {
        let Some(n) = stack.pop() else { break };
        if let Some(r) = n.get("$ref").and_then(|r| r.as_str()) {
            if let Some(target) = r.strip_prefix('#').and_then(|p| root.pointer(p)) {
                stack.push(target);
            }
            continue;
        }
        let mut branched = false;
        for key in ["anyOf", "oneOf", "allOf"] {
            if let Some(list) = n.get(key).and_then(|l| l.as_array()) {
                stack.extend(list.iter().rev());
                branched = true;
            }
        }
        if !branched || n.get("properties").is_some() || n.get("type").is_some() {
            out.push(n);
        }
    }
    out
}

fn known_keys(root: &serde_json::Value, nodes: &[&serde_json::Value]) -> Vec<String> {
    let mut keys = BTreeSet::new();
    for node in nodes.iter().flat_map(|n| alternatives(root, n)) {
        if let Some(props) = node.get("properties").and_then(|p| p.as_object()) {
            keys.extend(props.keys().cloned());
        }
    }
    keys.into_iter().collect()
}

/// The override's value: a TOML value, or the text as a string when the field takes only
/// strings there or the text is no TOML value. Every span inside is the override's.
fn typed_value<'a>(
    text: &'a str,
    accepts: &BTreeSet<String>,
    span: &Range<usize>,
) -> Spanned<DeValue<'a>> {
    let as_string = || DeValue::String(Cow::Owned(text.to_string()));
    let value = match DeValue::parse(text) {
        Ok(v) => {
            let v = v.into_inner();
            let kind = match &v {
                DeValue::String(_) => "string",
                DeValue::Integer(_) => "integer",
                DeValue::Float(_) => "number",
                DeValue::Boolean(_) => "boolean",
                DeValue::Array(_) => "array",
                DeValue::Table(_) => "object",
                DeValue::Datetime(_) => "string",
            };
            let fits = accepts.contains(kind)
                || (kind == "integer" && accepts.contains("number"))
                || accepts.is_empty();
            if fits || !accepts.contains("string") {
                v
            } else {
                as_string()
            }
        }
        Err(_) => as_string(),
    };
    let mut value = Spanned::new(span.clone(), value);
    value.get_mut().make_owned();
    respan(value, span)
}

/// Give a value and everything inside it the override's span.
fn respan<'a>(value: Spanned<DeValue<'a>>, span: &Range<usize>) -> Spanned<DeValue<'a>> {
    let inner = match value.into_inner() {
        DeValue::Table(t) => {
            let mut out = DeTable::new();
            for (k, v) in t {
                out.insert(Spanned::new(span.clone(), k.into_inner()), respan(v, span));
            }
            DeValue::Table(out)
        }
        DeValue::Array(a) => {
            let mut out = DeArray::new();
            for v in a.iter().cloned() {
                out.push(respan(v, span));
            }
            DeValue::Array(out)
        }
        other => other,
    };
    Spanned::new(span.clone(), inner)
}

/// Put `value` at `path`, creating tables on the way.
fn insert<'a>(
    table: &mut DeTable<'a>,
    path: &[Seg],
    value: Spanned<DeValue<'a>>,
    span: &Range<usize>,
) -> Result<(), String> {
    let Some(Seg::Key(first)) = path.first() else {
        return Err("a key path starts with a key".to_string());
    };
    if path.len() == 1 {
        match table.get_mut(first.as_str()) {
            Some(slot) => *slot = value,
            None => {
                table.insert(Spanned::new(span.clone(), Cow::Owned(first.clone())), value);
            }
        }
        return Ok(());
    }
    if table.get(first.as_str()).is_none() {
        let empty = match path[1] {
            Seg::Key(_) => DeValue::Table(DeTable::new()),
            Seg::Index(_) => DeValue::Array(DeArray::new()),
        };
        table.insert(
            Spanned::new(span.clone(), Cow::Owned(first.clone())),
            Spanned::new(span.clone(), empty),
        );
    }
    let slot = table.get_mut(first.as_str()).expect("inserted above");
    insert_in_value(slot.get_mut(), first, &path[1..], value, span)
}

fn insert_in_value<'a>(
    slot: &mut DeValue<'a>,
    name: &str,
    rest: &[Seg],
    value: Spanned<DeValue<'a>>,
    span: &Range<usize>,
) -> Result<(), String> {
    match (slot, &rest[0]) {
        (DeValue::Table(t), Seg::Key(_)) => insert(t, rest, value, span),
        (DeValue::Array(a), Seg::Index(i)) => {
            let len = a.len();
            let Some(item) = a.get_mut(*i) else {
                return Err(format!(
                    "`{name}` has {len} entries; index {i} is out of range"
                ));
            };
            if rest.len() == 1 {
                *item = value;
                return Ok(());
            }
            insert_in_value(item.get_mut(), name, &rest[1..], value, span)
        }
        (DeValue::Array(_), Seg::Key(k)) => Err(format!(
            "`{name}` is a list; write `{name}[0].{k}` to pick an entry"
        )),
        (_, _) => Err(format!(
            "`{name}` is not a table, so it has no `{}`",
            path_text(rest)
        )),
    }
}

/// toml's messages for a bad enum value name no choices; say which there are and what was found.
fn enum_message(
    message: &str,
    schema: &serde_json::Value,
    path: &[Seg],
    root: &DeTable<'_>,
) -> Option<String> {
    let shape = match message {
        "wanted string or table" => "found",
        "wanted exactly 1 element, found 0 elements" => "found an empty table",
        "wanted exactly 1 element, more than 1 element" => "found a table with several keys",
        _ => return None,
    };
    let variants = schema_variants(schema, path);
    if variants.is_empty() {
        return None;
    }
    let found = match shape {
        "found" => format!(
            "found {}",
            value_at(root, path).map_or_else(|| "another type".to_string(), found_text)
        ),
        other => other.to_string(),
    };
    Some(format!("expected one of {}; {found}", variants.join(", ")))
}

/// serde's and toml's messages speak Rust (`invalid type: string "many", expected u32`): say
/// instead what the key at `path` takes (from its range, else the schema) and what was found.
/// Messages fleetsim's own leaf types wrote (durations, sizes, fractions) are already in a
/// user's words and pass unchanged.
fn human_message(
    message: &str,
    schema: &serde_json::Value,
    path: &[Seg],
    root: &DeTable<'_>,
) -> String {
    if let Some(m) = enum_message(message, schema, path, root) {
        return m;
    }
    let found = || value_at(root, path).map_or_else(|| "another type".to_string(), found_text);
    let typed = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "));
    if let Some(rest) = typed {
        let serde_expected = rest.split_once(", expected ").map_or("", |(_, e)| e);
        let (expected, after) = expected_text(schema, path, serde_expected);
        return format!("expected {expected}, found {}{after}", found());
    }
    if message.starts_with("unknown field ") {
        let parent = &path[..path.len().saturating_sub(1)];
        let known = schema_nodes(schema, parent)
            .map(|nodes| known_keys(schema, &nodes))
            .unwrap_or_default();
        let here = if parent.is_empty() {
            "a scenario has no such section".to_string()
        } else {
            format!("`{}` has no such key", path_text(parent))
        };
        return format!("{here}; write one of {}", known.join(", "));
    }
    if message.starts_with("unknown variant ") {
        let variants = schema_variants(schema, path);
        if !variants.is_empty() {
            return format!("expected one of {}; found {}", variants.join(", "), found());
        }
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        return format!("missing key {rest}");
    }
    if let Some((n, size)) = message
        .strip_prefix("invalid length ")
        .and_then(|rest| rest.split_once(", expected a tuple of size "))
    {
        let example = match path.iter().rev().find_map(|s| match s {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Index(_) => None,
        }) {
            Some("profile") => " ([at, rate_per_s], such as [\"10m\", 4.0])",
            _ => "",
        };
        return format!("expected a list of exactly {size} values{example}, found {n}");
    }
    message.to_string()
}

/// What the key at `path` takes, and what to add after "found …" (the range's upper bound).
/// `serde_expected` is serde's own words, kept when they are no Rust type's name.
fn expected_text(
    schema: &serde_json::Value,
    path: &[Seg],
    serde_expected: &str,
) -> (String, String) {
    if let Some(range) = ranges::lookup(path) {
        return (range.expected(), range.at_most());
    }
    if !speaks_rust(serde_expected) {
        return (serde_expected.to_string(), String::new());
    }
    let types = schema_at(schema, path).unwrap_or_default();
    let has = |t: &str| types.contains(t);
    let text = if has("integer") && !has("number") && types.len() == 1 {
        "a whole number ≥ 0".to_string()
    } else if (has("number") || has("integer")) && types.len() <= 2 && !has("string") {
        "a number".to_string()
    } else if has("boolean") && types.len() == 1 {
        "true or false".to_string()
    } else if has("string") && types.len() == 1 {
        "a string in quotes".to_string()
    } else if has("array") && types.len() == 1 {
        let mut item = path.to_vec();
        item.push(Seg::Index(0));
        let items = schema_at(schema, &item).unwrap_or_default();
        if items.len() == 1 && items.contains("string") {
            "a list of strings, such as [\"a\", \"b\"]".to_string()
        } else if items.len() == 1 && items.contains("object") {
            let name = path_text(path);
            format!("a list of tables ([[{name}]] entries)")
        } else {
            "a list [ … ]".to_string()
        }
    } else if has("object") && types.len() == 1 {
        let name = path_text(path);
        if path.len() == 1 {
            format!("a table: a [{name}] section")
        } else {
            format!("a table: a [{name}] section or {{ key = value, … }}")
        }
    } else {
        "another kind of value".to_string()
    };
    (text, String::new())
}

/// Whether serde's "expected …" is a Rust type's name rather than words a user can act on.
fn speaks_rust(expected: &str) -> bool {
    const NAMES: &[&str] = &[
        "u8",
        "u16",
        "u32",
        "u64",
        "u128",
        "usize",
        "i8",
        "i16",
        "i32",
        "i64",
        "i128",
        "isize",
        "f32",
        "f64",
        "a string",
        "a borrowed string",
        "a boolean",
        "a sequence",
        "a map",
        "a character",
        "unit",
        "option",
    ];
    expected.is_empty()
        || NAMES.contains(&expected)
        || ["struct ", "enum ", "tuple", "a tuple"]
            .iter()
            .any(|p| expected.starts_with(p))
}

/// A value as the message shows it: `the string "many"`, `-1`, `2.5`, `true`, `a list`.
fn found_text(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("the string {:?}", s.as_ref()),
        DeValue::Integer(i) => i.to_string(),
        DeValue::Float(f) => f.as_str().to_string(),
        DeValue::Boolean(b) => b.to_string(),
        DeValue::Datetime(d) => format!("the date-time {d}"),
        DeValue::Array(_) => "a list".to_string(),
        DeValue::Table(_) => "a table".to_string(),
    }
}

/// The number a value holds, when it is written as `kind` is (else `None`: serde reports it).
fn number_of(v: &DeValue<'_>, kind: Kind) -> Option<f64> {
    match (v, kind) {
        // A bare number is no duration: serde reports the type, with the range's words.
        (DeValue::String(s), Kind::Duration) => fleetsim_core::dist::parse_duration(s)
            .ok()
            .map(|d| d.as_secs_f64()),
        (_, Kind::Duration) => None,
        (DeValue::Integer(i), _) => i128::from_str_radix(i.as_str(), i.radix())
            .ok()
            .map(|n| n as f64),
        (DeValue::Float(f), Kind::Number) => f.as_str().parse().ok(),
        (DeValue::String(s), Kind::Bytes) => parse_bytes(s).ok().map(|n| n as f64),
        _ => None,
    }
}

fn value_at<'t, 'a>(root: &'t DeTable<'a>, path: &[Seg]) -> Option<&'t DeValue<'a>> {
    let Some(Seg::Key(first)) = path.first() else {
        return None;
    };
    let mut value = root.get(first.as_str())?.get_ref();
    for seg in &path[1..] {
        value = match (value, seg) {
            (DeValue::Table(t), Seg::Key(k)) => t.get(k.as_str())?.get_ref(),
            (DeValue::Array(a), Seg::Index(i)) => a.get(*i)?.get_ref(),
            _ => return None,
        };
    }
    Some(value)
}

fn is_empty_table(root: &DeTable<'_>, path: &[Seg]) -> bool {
    matches!(value_at(root, path), Some(DeValue::Table(t)) if t.is_empty())
}

/// The path of the entry whose value (preferred) or key has exactly `span`, deepest first, and
/// what to cut for it ([`cut_of`]).
fn find_span(table: &DeTable<'_>, span: &Range<usize>) -> Option<(Path, Path)> {
    let mut spans = Spans::default();
    index_table(table, &mut Vec::new(), &mut spans);
    let by_value = spans
        .entries
        .iter()
        .filter(|(_, (_, v))| v == span)
        .map(|(p, _)| p);
    let by_key = spans
        .entries
        .iter()
        .filter(|(_, (k, _))| k == span)
        .map(|(p, _)| p);
    let deepest = by_value
        .max_by_key(|p| p.len())
        .or_else(|| by_key.max_by_key(|p| p.len()))?;
    let cut = cut_of(deepest);
    (!cut.is_empty()).then(|| (deepest.clone(), cut))
}

/// What goes when the value at `path` is bad. A key (even one in a table inside a list,
/// `faults[1].at`) is cut alone. A list element is cut with its whole list: removing one element
/// would shift the indices of the rest, and with them every later message's path.
fn cut_of(path: &[Seg]) -> Path {
    let mut cut = path.to_vec();
    while matches!(cut.last(), Some(Seg::Index(_))) {
        cut.pop();
    }
    cut
}

fn index_table(table: &DeTable<'_>, prefix: &mut Path, out: &mut Spans) {
    for (k, v) in table.iter() {
        prefix.push(Seg::Key(k.get_ref().to_string()));
        out.entries.insert(prefix.clone(), (k.span(), v.span()));
        index_value(v.get_ref(), prefix, out);
        prefix.pop();
    }
}

fn index_value(value: &DeValue<'_>, prefix: &mut Path, out: &mut Spans) {
    match value {
        DeValue::Table(t) => index_table(t, prefix, out),
        DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                prefix.push(Seg::Index(i));
                out.entries
                    .insert(prefix.clone(), (item.span(), item.span()));
                index_value(item.get_ref(), prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

/// Remove the entry at `path` (a key path, possibly through list entries).
fn remove(table: &mut DeTable<'_>, path: &[Seg]) {
    let Some(Seg::Key(first)) = path.first() else {
        return;
    };
    if path.len() == 1 {
        table.remove(first.as_str());
        return;
    }
    if let Some(v) = table.get_mut(first.as_str()) {
        remove_in_value(v.get_mut(), &path[1..]);
    }
}

fn remove_in_value(value: &mut DeValue<'_>, path: &[Seg]) {
    match (value, &path[0]) {
        (DeValue::Table(t), Seg::Key(_)) => remove(t, path),
        (DeValue::Array(a), Seg::Index(i)) if path.len() > 1 => {
            if let Some(item) = a.get_mut(*i) {
                remove_in_value(item.get_mut(), &path[1..]);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_parse_like_toml_keys() {
        // Goal: the override syntax covers dotted, quoted and indexed keys, and refuses junk.
        let k = |s: &str| Seg::Key(s.to_string());
        assert_eq!(
            parse_path("fleet.agents"),
            Ok(vec![k("fleet"), k("agents")])
        );
        assert_eq!(
            parse_path("thresholds.\"job_pickup.p99\""),
            Ok(vec![k("thresholds"), k("job_pickup.p99")])
        );
        assert_eq!(
            parse_path("faults[1].at"),
            Ok(vec![k("faults"), Seg::Index(1), k("at")])
        );
        for bad in ["", ".a", "a.", "a..b", "[0]", "a[x]", "a\"b\""] {
            assert!(parse_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_render_as_written() {
        // Goal: messages name paths the way users type them.
        let p = parse_path("thresholds.\"job_pickup.p99\"").unwrap();
        assert_eq!(path_text(&p), "thresholds.\"job_pickup.p99\"");
        assert_eq!(
            path_text(&parse_path("faults[2].at").unwrap()),
            "faults[2].at"
        );
    }
}
