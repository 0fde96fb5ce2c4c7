//! `host` matching: exact names and `*.suffix` wildcards, lowercased at
//! compile time.

use std::fmt;

/// `host`: exact names and `*.suffix` wildcards, lowercased at compile time.
///
/// Both lists share one boxed slice (exact names first), 24 bytes inline:
/// every route with a `host` keeps one (issue 6).
#[derive(Debug, Clone, Default)]
pub struct HostMatch {
    /// `names[..exact]`: exact names; `names[exact..]`: wildcard suffixes,
    /// each with its leading dot (`*.example.com` is `.example.com`).
    names: Box<[Box<str>]>,
    exact: usize,
}

impl HostMatch {
    /// Compiles host patterns; the error says which one is wrong and why.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<HostMatch, String> {
        let mut b = HostBuilder::default();
        for p in patterns {
            b.push(p.as_ref())?;
        }
        let exact = b.exact.len();
        b.exact.append(&mut b.wildcard_suffixes);
        Ok(HostMatch {
            names: super::exact_slice(b.exact),
            exact,
        })
    }

    /// Exact names (lowercase).
    pub fn exact(&self) -> &[Box<str>] {
        self.names.get(..self.exact).unwrap_or(&[])
    }

    /// Wildcard suffixes, each with its leading dot.
    pub fn wildcard_suffixes(&self) -> &[Box<str>] {
        self.names.get(self.exact..).unwrap_or(&[])
    }

    /// Whether the (normalized) host matches.
    pub fn matches(&self, host: &str) -> bool {
        self.exact().iter().any(|e| **e == *host)
            || self
                .wildcard_suffixes()
                .iter()
                .any(|s| host.len() > s.len() && host.ends_with(&**s))
    }
}

/// The two lists of a [`HostMatch`] while its patterns are checked.
#[derive(Default)]
struct HostBuilder {
    exact: Vec<Box<str>>,
    wildcard_suffixes: Vec<Box<str>>,
}

impl HostBuilder {
    /// Adds one pattern.
    fn push(&mut self, pattern: &str) -> Result<(), String> {
        let p = pattern.to_ascii_lowercase();
        if p.is_empty() {
            return Err("host must not be empty".into());
        }
        let without_brackets = p.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
        if without_brackets.is_none() && p.contains(':') {
            return Err(format!(
                "host {pattern:?} must not contain a port (ports are removed before matching); write an IPv6 address as [::1]"
            ));
        }
        if let Some(suffix) = p.strip_prefix('*') {
            if !suffix.starts_with('.') || suffix.len() < 2 || suffix.contains('*') {
                return Err(format!(
                    "host {pattern:?}: a wildcard must be a leading `*.` followed by a domain, as in *.example.com"
                ));
            }
            if !self.wildcard_suffixes.iter().any(|s| **s == *suffix) {
                self.wildcard_suffixes.push(suffix.into());
            }
        } else if p.contains('*') {
            return Err(format!(
                "host {pattern:?}: `*` is only allowed as a leading `*.`, as in *.example.com"
            ));
        } else if !self.exact.iter().any(|s| **s == *p) {
            self.exact.push(p.into());
        }
        Ok(())
    }
}

impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all: Vec<String> = self
            .exact()
            .iter()
            .map(|e| e.to_string())
            .chain(self.wildcard_suffixes().iter().map(|s| format!("*{s}")))
            .collect();
        if all.len() == 1 {
            write!(f, "host {}", all[0])
        } else {
            write!(f, "host in [{}]", all.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let h = HostMatch::new(&["API.example.com", "*.example.org"]).unwrap();
        assert!(h.matches("api.example.com"));
        assert!(!h.matches("x.api.example.com"));
        assert!(h.matches("a.example.org"));
        assert!(h.matches("a.b.example.org"));
        assert!(!h.matches("example.org"));
        assert!(!h.matches(".example.org"));
        assert!(!h.matches("badexample.org"));
        assert!(HostMatch::new(&["[::1]"]).unwrap().matches("[::1]"));
        assert!(HostMatch::new(&["a.com:80"]).is_err());
        assert!(HostMatch::new(&["a.*.com"]).is_err());
        assert!(HostMatch::new(&["*"]).is_err());
        assert!(HostMatch::new(&["*example.com"]).is_err());
        assert!(HostMatch::new(&[""]).is_err());
    }
}
