//! Positioned diagnostics, reported all at once.
//!
//! A [`Diagnostic`] displays as `file:line:column: message` (the format editors and CI
//! annotations understand). Messages are lowercase, name the concept (`route`, `policy`,
//! an option name) and put user input in backticks:
//! "unknown field `frmo` in route".
//!
//! Two special cases:
//! - a diagnostic with no position (`line == 0`, e.g. about an environment variable, whose
//!   "file" is then `env NAME`) displays as `file: message`;
//! - a warning displays as `file:line:column: warning: message`.

use crate::value::Span;
use std::fmt;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// The input is refused.
    Error,
    /// The input is accepted; something in it is ignored or suspicious.
    Warning,
}

/// One problem in one place.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Diagnostic {
    /// File name as given to the loader (or `env NAME` for an environment variable).
    pub file: String,
    /// 1-based line; 0 when there is no position.
    pub line: u32,
    /// 1-based column; 0 when there is no position.
    pub column: u32,
    /// Lowercase message, user input in backticks.
    pub message: String,
    /// Error or warning.
    pub severity: Severity,
}

impl Diagnostic {
    /// An error at `span` of `file`.
    pub fn error(file: &str, span: Span, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, file, span, message)
    }

    /// A warning at `span` of `file`.
    pub fn warning(file: &str, span: Span, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, file, span, message)
    }

    /// A diagnostic of any severity.
    pub fn new(severity: Severity, file: &str, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_owned(),
            line: span.line,
            column: span.column,
            message: message.into(),
            severity,
        }
    }

    /// The position as a [`Span`].
    pub fn span(&self) -> Span {
        Span::new(self.line, self.column)
    }

    /// Is this an error (not a warning)?
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: ", self.file)?;
        } else {
            write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diagnostic {}

/// Every problem found in one input, in the order found (see [`Diagnostics::sort`]).
/// Displays one diagnostic per line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// No diagnostics yet.
    pub const fn new() -> Self {
        Diagnostics(Vec::new())
    }

    /// Add one.
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    /// Add an error at `span` of `file`.
    pub fn error(&mut self, file: &str, span: Span, message: impl Into<String>) {
        self.push(Diagnostic::error(file, span, message));
    }

    /// Add a warning at `span` of `file`.
    pub fn warning(&mut self, file: &str, span: Span, message: impl Into<String>) {
        self.push(Diagnostic::warning(file, span, message));
    }

    /// Append all of `other`.
    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    /// Nothing at all?
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Any error (warnings do not count)?
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }

    /// Iterate in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.is_error())
    }

    /// The warnings only.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| !d.is_error())
    }

    /// Split into (errors, warnings), each keeping its order.
    pub fn split(self) -> (Diagnostics, Diagnostics) {
        let (e, w) = self.0.into_iter().partition(Diagnostic::is_error);
        (Diagnostics(e), Diagnostics(w))
    }

    /// Order by file, then position (stable: equal positions keep their order), so output
    /// is deterministic and reads top to bottom.
    pub fn sort(&mut self) {
        self.0
            .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    }

    /// `Ok(value)` if there is no error, else `Err(self)`.
    pub fn into_result<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.has_errors() {
            Err(self)
        } else {
            Ok(value)
        }
    }

    /// The diagnostics as a vector.
    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.0
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

impl From<Vec<Diagnostic>> for Diagnostics {
    fn from(v: Vec<Diagnostic>) -> Self {
        Diagnostics(v)
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Extend<Diagnostic> for Diagnostics {
    fn extend<I: IntoIterator<Item = Diagnostic>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_formats() {
        let mut d = Diagnostics::new();
        d.error("c.yaml", Span::new(3, 5), "unknown field `frmo` in route");
        d.warning("c.yaml", Span::new(1, 1), "`debug_address` is ignored");
        d.error("env COOKIE_EXPIRE", Span::NONE, "invalid duration `xx`");
        assert_eq!(
            d.to_string(),
            "c.yaml:3:5: unknown field `frmo` in route\n\
             c.yaml:1:1: warning: `debug_address` is ignored\n\
             env COOKIE_EXPIRE: invalid duration `xx`"
        );
        assert!(d.has_errors());
        assert_eq!(d.errors().count(), 2);
        let (e, w) = d.split();
        assert_eq!((e.len(), w.len()), (2, 1));
        assert!(!w.has_errors());
        assert_eq!(w.into_result(7), Ok(7));
    }

    #[test]
    fn sort_is_by_position_and_stable() {
        let mut d = Diagnostics::new();
        d.error("a", Span::new(5, 1), "x");
        d.error("a", Span::new(2, 9), "y");
        d.error("a", Span::new(2, 9), "z");
        d.sort();
        let msgs: Vec<_> = d.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(msgs, ["y", "z", "x"]);
    }
}
