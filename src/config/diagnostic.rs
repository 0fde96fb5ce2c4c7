//! Positioned errors and warnings about rule files: `FILE:LINE:COL: error: ...`.

use super::Location;
use std::fmt;
use std::sync::Arc;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The config is refused.
    Error,
    /// The config is accepted; something in it is likely a mistake.
    Warning,
}

/// One problem found in a rule file, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as the user named it (or as found in the directory).
    pub file: Arc<str>,
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Diagnostic {
    /// An error about a whole file (it cannot be read, it is missing),
    /// reported at line 1, column 1.
    pub fn whole_file(file: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: Arc::from(file),
            line: 1,
            column: 1,
            severity: Severity::Error,
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file,
            self.line.max(1),
            self.column.max(1),
            kind,
            self.message
        )
    }
}

impl std::error::Error for Diagnostic {}

/// Collects diagnostics while a config is compiled; every check reports here
/// instead of stopping at the first problem.
#[derive(Debug, Default)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Records an error at `at` in `file`.
    pub fn error(&mut self, file: &Arc<str>, at: Location, message: impl Into<String>) {
        self.push(file, at, Severity::Error, message.into());
    }

    /// Records a warning at `at` in `file`.
    pub fn warning(&mut self, file: &Arc<str>, at: Location, message: impl Into<String>) {
        self.push(file, at, Severity::Warning, message.into());
    }

    /// Records an already built diagnostic.
    pub fn add(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    fn push(&mut self, file: &Arc<str>, at: Location, severity: Severity, message: String) {
        self.items.push(Diagnostic {
            file: file.clone(),
            line: at.line(),
            column: at.column(),
            severity,
            message,
        });
    }

    /// Whether any error (not warning) was recorded.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    /// All diagnostics, in the order found.
    pub fn items(&self) -> &[Diagnostic] {
        &self.items
    }

    /// Takes the diagnostics out, errors first, each group by file and
    /// position (files of a directory are named in load order).
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.items.sort_by(|a, b| {
            let key = |d: &Diagnostic| {
                (
                    d.severity == Severity::Warning,
                    d.file.clone(),
                    d.line,
                    d.column,
                )
            };
            key(a).cmp(&key(b))
        });
        self.items
    }
}
