//! JUnit XML for CI (`--junit FILE`): each threshold is a test case; a failed threshold carries
//! a `<failure>` with the observed value against the condition. Azure Pipelines'
//! PublishTestResults and most CI systems read this shape.
//!
//! It renders a `Report` to a `String`; it never writes files. Every text is escaped, and
//! characters XML 1.0 cannot carry (control characters) are replaced, so a scenario name can
//! never break the document.

use std::fmt::Write as _;

use crate::report::Report;
use crate::thresholds::{self, MetricKind};

/// Render the thresholds of a report as a JUnit XML document.
pub fn render_junit(report: &Report) -> String {
    let total = report.thresholds.len();
    let failures = report.thresholds.iter().filter(|t| !t.passed).count();
    let suite = format!("fleetsim.thresholds.{}", report.run.scenario);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"fleetsim\" tests=\"{total}\" failures=\"{failures}\" errors=\"0\">"
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{total}\" failures=\"{failures}\" errors=\"0\" \
         skipped=\"0\" time=\"{:.3}\">",
        escape(&suite),
        report.run.wall_s
    );
    for t in &report.thresholds {
        let name = format!("{} {}", t.metric, t.condition);
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"0\"",
            escape(&suite),
            escape(&name)
        );
        if t.passed {
            out.push_str("/>\n");
            continue;
        }
        let kind = thresholds::kind_of(&t.metric).unwrap_or(MetricKind::Count);
        let message = match t.observed {
            Some(v) => format!(
                "observed {} for {}, expected {}",
                thresholds::format_value(kind, v),
                t.metric,
                t.condition
            ),
            None => format!("no data for {}, expected {}", t.metric, t.condition),
        };
        let _ = writeln!(
            out,
            ">\n      <failure type=\"threshold\" message=\"{0}\">{0}</failure>\n    </testcase>",
            escape(&message)
        );
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// Escape text for XML attribute values and element content.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Tab, newline and carriage return are legal but attribute normalisation would eat
            // them; everything else below 0x20 is illegal in XML 1.0 even as a reference.
            '\t' | '\n' | '\r' => {
                let _ = write!(out, "&#{};", u32::from(c));
            }
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::RunMeta;
    use crate::thresholds::ThresholdResult;

    /// A minimal well-formedness check: tags nest and close, attribute values are quoted, and
    /// every `&` starts a known entity or a character reference. Enough to catch an escaping
    /// bug without an XML parser dependency.
    fn assert_well_formed(xml: &str) {
        let body = xml
            .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
            .expect("decl");
        let mut stack: Vec<String> = Vec::new();
        let mut rest = body;
        while let Some(lt) = rest.find('<') {
            check_text(&rest[..lt]);
            let gt = rest[lt..].find('>').expect("unclosed tag") + lt;
            let tag = &rest[lt + 1..gt];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "mismatched close");
            } else {
                let self_closing = tag.ends_with('/');
                let tag = tag.trim_end_matches('/');
                let name = tag.split_whitespace().next().expect("tag name");
                check_attributes(&tag[name.len()..]);
                if !self_closing {
                    stack.push(name.to_string());
                }
            }
            rest = &rest[gt + 1..];
        }
        check_text(rest);
        assert!(stack.is_empty(), "unclosed elements {stack:?}");
    }

    fn check_text(text: &str) {
        assert!(!text.contains('>'), "raw > in text {text:?}");
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..text[i..].find(';').expect("entity end") + i + 1];
            let ok = ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&entity)
                || entity.starts_with("&#");
            assert!(ok, "bad entity {entity}");
        }
        assert!(
            !text.chars().any(|c| (c as u32) < 0x20 && c != '\n'),
            "control char"
        );
    }

    fn check_attributes(attrs: &str) {
        let mut rest = attrs.trim();
        while !rest.is_empty() {
            let eq = rest.find("=\"").expect("attribute without quoted value");
            let close = rest[eq + 2..].find('"').expect("unterminated attribute") + eq + 2;
            let value = &rest[eq + 2..close];
            assert!(!value.contains('<'), "raw < in attribute {value:?}");
            check_text(value);
            rest = rest[close + 1..].trim_start();
        }
    }

    // Goal: the well-formedness check itself rejects unescaped documents, so the escaping test
    // above cannot pass vacuously.
    #[test]
    fn well_formedness_check_rejects_bad_documents() {
        let decl = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
        for bad in [
            "<a x=\"<\"/>",
            "<a>&</a>",
            "<a><b></a></b>",
            "<a>x > y</a>",
            "<a>",
        ] {
            let doc = format!("{decl}{bad}");
            let outcome = std::panic::catch_unwind(|| assert_well_formed(&doc));
            assert!(outcome.is_err(), "accepted {bad}");
        }
        assert_well_formed(&format!("{decl}<a x=\"&lt;\"><b/>&amp;</a>"));
    }

    fn result(
        metric: &str,
        condition: &str,
        observed: Option<f64>,
        passed: bool,
    ) -> ThresholdResult {
        ThresholdResult {
            metric: metric.into(),
            condition: condition.into(),
            observed,
            passed,
        }
    }

    // Goal: each threshold is a test case, failures say observed vs condition, and hostile
    // characters in names and conditions are escaped into a well-formed document.
    #[test]
    fn junit_is_well_formed_and_escaped() {
        let report = Report {
            run: RunMeta {
                scenario: "a<b>&\"c'\u{1}\tend".to_string(),
                wall_s: 1.5,
                ..RunMeta::default()
            },
            thresholds: vec![
                result("job_pickup.p99", "< 2s", Some(2.5), false),
                result("jobs.lost", "== 0", Some(0.0), true),
                result("operations.register.p99", "<= 1s", None, false),
            ],
            ..Report::default()
        };
        let xml = render_junit(&report);
        assert_well_formed(&xml);
        assert!(xml.contains("tests=\"3\" failures=\"2\""), "{xml}");
        assert!(
            xml.contains(
                "name=\"fleetsim.thresholds.a&lt;b&gt;&amp;&quot;c&apos;\u{FFFD}&#9;end\""
            )
        );
        assert!(xml.contains("name=\"job_pickup.p99 &lt; 2s\""), "{xml}");
        assert!(xml.contains("message=\"observed 2.5s for job_pickup.p99, expected &lt; 2s\""));
        assert!(xml.contains("no data for operations.register.p99, expected &lt;= 1s"));
        assert!(
            xml.contains("name=\"jobs.lost == 0\" time=\"0\"/>"),
            "{xml}"
        );
    }
}
