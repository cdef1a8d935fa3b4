//! Diagnostics: every problem found in a scenario, each with the place it came from.
//!
//! A place is either a position in the file (`file:line:col`, 1-based, columns in characters) or
//! a `--set` override (which has no position in any file). Diagnostics are plain values: this
//! module never prints, and it never decides whether a problem is fatal — every diagnostic is an
//! error, and one is enough to refuse the scenario.

use std::fmt;

/// Where a problem was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A position in the scenario file; `line` and `col` are 1-based, `col` counts characters.
    File { line: usize, col: usize },
    /// The `index`-th `--set` override, as the user wrote it (`fleet.agents=100`).
    Override { index: usize, text: String },
    /// The file as a whole (an empty file, a missing section with no place to point at).
    Whole,
}

/// One problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The scenario's name as the user gave it (usually its path).
    pub file: String,
    /// Where in it.
    pub origin: Origin,
    /// What is wrong, as a sentence a person can act on.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    /// `file:line:col: message`, `file: --set a.b=c: message` or `file: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::File { line, col } => write!(f, "{}:{line}:{col}: {}", self.file, self.message),
            Origin::Override { text, .. } => {
                write!(f, "{}: --set {text}: {}", self.file, self.message)
            }
            Origin::Whole => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Every problem found in one pass, in file order (overrides after the file).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics {
    /// The problems; never empty when returned as an error.
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// How many problems there are.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when there is no problem.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The rendered lines, one per problem.
    pub fn lines(&self) -> Vec<String> {
        self.items.iter().map(ToString::to_string).collect()
    }
}

impl fmt::Display for Diagnostics {
    /// One problem per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Byte offset → 1-based (line, column in characters). Offsets past the end clamp to the end.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// The largest char boundary ≤ `i` (spans from the parser are on boundaries; this guards ours).
fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_is_one_based_and_counts_characters() {
        // Goal: positions match what an editor shows, including after multi-byte characters.
        let text = "a = 1\nµµ = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 4), (1, 5));
        assert_eq!(line_col(text, 6), (2, 1));
        let after_mu = text.find(" =\u{20}2").unwrap();
        assert_eq!(line_col(text, after_mu), (2, 3));
        assert_eq!(line_col(text, 10_000), (3, 1));
    }

    #[test]
    fn diagnostics_render_with_their_origin() {
        // Goal: the three origins render in the documented shapes.
        let d = |origin| Diagnostic {
            file: "s.toml".into(),
            origin,
            message: "bad".into(),
        };
        let all = Diagnostics {
            items: vec![
                d(Origin::File { line: 3, col: 9 }),
                d(Origin::Override {
                    index: 0,
                    text: "fleet.agents=x".into(),
                }),
                d(Origin::Whole),
            ],
        };
        assert_eq!(
            all.to_string(),
            "s.toml:3:9: bad\ns.toml: --set fleet.agents=x: bad\ns.toml: bad"
        );
    }
}
