//! The dashboards in `dashboards/` against the conventions and the metric catalogue: every
//! panel and target uses the `datasource` variable, every panel has a unit, `rate()` windows
//! are `$__rate_interval`, histogram quantiles read `_bucket` series summed `by (le…)`, uids
//! are stable and unique, the schema version is pinned, and every `fleetsim_*` name a query
//! uses is in `fleetsim_metrics::names` (so renaming a metric without the dashboards fails
//! here), and every selector filters on the `shard` variable inside an aggregation that sums
//! the shards away (so a panel shows the whole fleet). Parsing and "returns data" need
//! Prometheus: scripts/ci/observability.sh does those, and checks the fleet totals of three
//! shards there.

use std::path::{Path, PathBuf};

use fleetsim_metrics::names;
use regex::Regex;
use serde_json::Value;

/// The Grafana schema version every dashboard is written for (Grafana 10.4).
const SCHEMA_VERSION: u64 = 39;

fn dashboards() -> Vec<(PathBuf, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dashboards");
    let mut out: Vec<(PathBuf, Value)> = std::fs::read_dir(&dir)
        .expect("dashboards/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("readable dashboard");
            let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{p:?}: {e}"));
            (p, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every panel, rows' nested panels included.
fn panels(v: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in v["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(panels(p));
    }
    out
}

fn exprs(dash: &Value) -> Vec<(String, String)> {
    panels(dash)
        .into_iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |t| Some((title.clone(), t["expr"].as_str()?.to_string())))
        })
        .collect()
}

// Goal: the three dashboards exist with stable, unique uids, a pinned schema version, shared
// crosshair and the datasource variable.
#[test]
fn dashboards_have_stable_identity_and_settings() {
    let all = dashboards();
    let mut uids: Vec<&str> = all
        .iter()
        .map(|(_, d)| d["uid"].as_str().unwrap())
        .collect();
    uids.sort_unstable();
    assert_eq!(
        uids,
        [
            "fleetsim-capacity-planning",
            "fleetsim-emulator-server",
            "fleetsim-fleet-overview"
        ]
    );
    for (path, d) in &all {
        assert_eq!(d["schemaVersion"], SCHEMA_VERSION, "{path:?}");
        assert_eq!(d["graphTooltip"], 1, "{path:?}: shared crosshair");
        assert!(
            d.get("id").is_none_or(Value::is_null),
            "{path:?}: no id in files"
        );
        assert!(
            d.get("__inputs").is_none(),
            "{path:?}: no export-for-sharing inputs"
        );
        let vars = d["templating"]["list"].as_array().expect("templating");
        assert!(
            vars.iter()
                .any(|v| v["type"] == "datasource" && v["name"] == "datasource"),
            "{path:?}: datasource variable"
        );
    }
}

// Goal: every panel and every target reads the datasource variable, and every data panel has
// a unit.
#[test]
fn every_panel_uses_the_datasource_variable_and_has_a_unit() {
    let ds = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
    for (path, d) in dashboards() {
        for p in panels(&d).into_iter().filter(|p| p["type"] != "row") {
            let title = p["title"].as_str().unwrap_or("?");
            assert_eq!(p["datasource"], ds, "{path:?} {title}");
            let unit = p["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or("");
            assert!(!unit.is_empty(), "{path:?} {title}: unit");
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{path:?} {title}: no query");
            for t in targets {
                assert_eq!(t["datasource"], ds, "{path:?} {title}");
            }
        }
    }
}

// Goal: queries follow the PromQL conventions: rate windows are `$__rate_interval`, quantiles
// come from `_bucket` series summed by `le`, variables are matched with `=~` (so they can hold
// several values), and brackets balance.
#[test]
fn queries_follow_promql_conventions() {
    let window = Regex::new(r"(rate|increase)\([^\[]*\[([^\]]+)\]").unwrap();
    let var_eq = Regex::new(r#"[^=~!]="\$"#).unwrap();
    for (path, d) in dashboards() {
        for (title, expr) in exprs(&d) {
            for cap in window.captures_iter(&expr) {
                assert_eq!(&cap[2], "$__rate_interval", "{path:?} {title}: {expr}");
            }
            if expr.contains("histogram_quantile") {
                assert!(expr.contains("_bucket"), "{path:?} {title}: {expr}");
                assert!(expr.contains("sum by (le"), "{path:?} {title}: {expr}");
            }
            assert!(
                !var_eq.is_match(&expr),
                "{path:?} {title}: use =~ for variables"
            );
            for (open, close) in [('(', ')'), ('[', ']'), ('{', '}')] {
                let n = |c| expr.chars().filter(|&x| x == c).count();
                assert_eq!(n(open), n(close), "{path:?} {title}: {expr}");
            }
        }
    }
}

// Goal: every metric a dashboard reads is one fleetsim exports (histogram suffixes included),
// and every catalogue metric is shown on some dashboard.
#[test]
fn dashboard_metrics_match_the_catalogue() {
    let name = Regex::new(r"\bfleetsim_[a-z0-9_]+").unwrap();
    let mut used = std::collections::BTreeSet::new();
    for (path, d) in dashboards() {
        let vars = d["templating"]["list"]
            .as_array()
            .expect("templating")
            .clone();
        let var_queries = vars
            .iter()
            .filter_map(|v| v["query"].as_str().map(str::to_string));
        let all = exprs(&d).into_iter().map(|(_, e)| e).chain(var_queries);
        for expr in all {
            for m in name.find_iter(&expr) {
                let entry = names::prom_metric_for_series(m.as_str())
                    .unwrap_or_else(|| panic!("{path:?}: unknown metric {} in {expr}", m.as_str()));
                used.insert(entry.name);
            }
        }
    }
    let unused: Vec<_> = names::prometheus_all()
        .map(|m| m.name)
        .filter(|n| !used.contains(n))
        .collect();
    assert!(unused.is_empty(), "metrics no dashboard shows: {unused:?}");
}

/// PromQL aggregation operators that, without `by` (or with a `by` list lacking `shard`, or a
/// `without` list holding it), drop the `shard` label. `topk`/`bottomk`/`quantile`-style
/// operators that keep their input's labels are deliberately absent.
const AGGREGATORS: [&str; 8] = [
    "sum", "max", "min", "avg", "count", "group", "stddev", "stdvar",
];

/// What an open parenthesis of a PromQL expression is.
#[derive(Clone, Debug, PartialEq)]
enum Paren {
    /// The argument of an aggregation; `true` when it aggregates `shard` away.
    Aggregation(bool),
    /// A `by (...)` / `without (...)` label list after an aggregator.
    Grouping { without: bool, start: usize },
    /// A function call or plain grouping.
    Other,
}

/// For every `fleetsim_*` selector of `expr`: its name, its `{...}` matchers, and whether an
/// enclosing aggregation removes the `shard` label. A small scanner, not a parser: enough for
/// the shapes the generator writes (aggregator, optional `by`/`without` list, argument), and
/// quoted strings are skipped so their contents cannot look like brackets.
fn selectors(expr: &str) -> Vec<(String, String, bool)> {
    let name = Regex::new(r"^fleetsim_[a-z0-9_]+").unwrap();
    let b = expr.as_bytes();
    let mut stack: Vec<Paren> = Vec::new();
    // A `by`/`without` list just closed: (without, its labels), waiting for the argument.
    let mut grouping: Option<(bool, String)> = None;
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        match c {
            '"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            '(' => {
                let before = expr[..i].trim_end();
                let word = before
                    .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or("");
                let paren = if let Some((without, labels)) =
                    grouping.take().filter(|_| before.ends_with(')'))
                {
                    let has = labels.split(',').any(|l| l.trim() == "shard");
                    Paren::Aggregation(has == without)
                } else if word == "by" || word == "without" {
                    Paren::Grouping {
                        without: word == "without",
                        start: i + 1,
                    }
                } else if AGGREGATORS.contains(&word) {
                    Paren::Aggregation(true)
                } else {
                    Paren::Other
                };
                stack.push(paren);
            }
            ')' => {
                if let Some(Paren::Grouping { without, start }) = stack.pop() {
                    grouping = Some((without, expr[start..i].to_string()));
                }
            }
            _ if c.is_ascii_whitespace() => {}
            _ => {
                grouping = None;
                if let Some(m) = name.find(&expr[i..]) {
                    let starts_word = i == 0 || {
                        let p = b[i - 1] as char;
                        !(p.is_ascii_alphanumeric() || p == '_')
                    };
                    if starts_word {
                        let end = i + m.end();
                        let matchers = expr[end..]
                            .strip_prefix('{')
                            .and_then(|r| r.split_once('}'))
                            .map_or(String::new(), |(m, _)| m.to_string());
                        let summed = stack.contains(&Paren::Aggregation(true));
                        out.push((m.as_str().to_string(), matchers, summed));
                        i = end;
                        continue;
                    }
                }
            }
        }
        i += 1;
    }
    out
}

// Goal: the scanner tells queries that sum the shards away from ones that keep them apart, so
// the dashboard test below means something.
#[test]
fn selector_scanner_sees_aggregation_over_shard() {
    let summed = |e: &str| selectors(e).into_iter().map(|s| s.2).collect::<Vec<_>>();
    assert_eq!(summed(r#"sum(rate(fleetsim_a_total{x="("}[1m]))"#), [true]);
    assert_eq!(
        summed("sum by (le, op) (rate(fleetsim_a_bucket[1m]))"),
        [true]
    );
    assert_eq!(summed("sum by (shard) (fleetsim_a)"), [false]);
    assert_eq!(summed("sum without (shard) (fleetsim_a)"), [true]);
    assert_eq!(summed("sum without (op) (fleetsim_a)"), [false]);
    assert_eq!(summed("rate(fleetsim_a_total[1m])"), [false]);
    assert_eq!(summed("sum(fleetsim_a) / fleetsim_b"), [true, false]);
    assert_eq!(
        summed("max_over_time(sum(fleetsim_a)[5m:]) + topk(1, fleetsim_b)"),
        [true, false]
    );
    let (name, matchers, _) = &selectors(r#"max(fleetsim_a{shard=~"$shard"})"#)[0];
    assert_eq!(
        (name.as_str(), matchers.as_str()),
        ("fleetsim_a", r#"shard=~"$shard""#)
    );
}

// Goal: one dashboard shows the whole fleet across shards and can narrow to some: every
// selector of every panel filters with `shard=~"$shard"` and sits inside an aggregation that
// removes the `shard` label, and every dashboard has the `shard` variable (multi-select, All
// by default, values from `fleetsim_build_info`).
#[test]
fn every_panel_sums_over_shards_and_filters_on_the_shard_variable() {
    for (path, d) in dashboards() {
        let vars = d["templating"]["list"].as_array().expect("templating");
        let shard = vars
            .iter()
            .find(|v| v["name"] == "shard")
            .unwrap_or_else(|| panic!("{path:?}: no shard variable"));
        assert_eq!(shard["type"], "query", "{path:?}");
        assert_eq!(shard["multi"], true, "{path:?}");
        assert_eq!(shard["includeAll"], true, "{path:?}");
        assert_eq!(shard["allValue"], ".*", "{path:?}");
        assert_eq!(
            shard["current"]["value"][0], "$__all",
            "{path:?}: All by default"
        );
        let query = shard["query"].as_str().unwrap_or("");
        assert!(
            query.starts_with("label_values(fleetsim_build_info") && query.ends_with(", shard)"),
            "{path:?}: {query}"
        );
        for (title, expr) in exprs(&d) {
            let found = selectors(&expr);
            assert!(
                !found.is_empty(),
                "{path:?} {title}: no fleetsim series in {expr}"
            );
            for (name, matchers, summed) in found {
                assert!(
                    matchers.contains(r#"shard=~"$shard""#),
                    "{path:?} {title}: {name} lacks shard=~\"$shard\": {expr}"
                );
                assert!(
                    summed,
                    "{path:?} {title}: {name} is not aggregated over shard: {expr}"
                );
            }
        }
    }
}
