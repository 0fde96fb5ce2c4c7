//! Sticky settings (`sticky_on`, `issue_cookie`) shared by experiments and
//! canaries, and the error-count helper their compilers use.

use crate::config::raw::Spanned;
use crate::config::{Diagnostics, Location};
use crate::split::sticky::StickyConfig;

/// Errors (not warnings) recorded so far.
pub(super) fn error_count(diags: &Diagnostics) -> usize {
    diags
        .items()
        .iter()
        .filter(|d| d.severity == crate::config::Severity::Error)
        .count()
}

/// Builds the sticky config of an experiment or canary, reporting a bad
/// `sticky_on` entry or `issue_cookie` at its position.
pub(super) fn compile_sticky(
    owner: &str,
    sticky_on: Option<&Spanned<Vec<Spanned<String>>>>,
    issue_cookie: Option<&Spanned<String>>,
    at: Location,
    err: &mut dyn FnMut(Location, String),
) -> StickyConfig {
    let list: Option<Vec<&str>> =
        sticky_on.map(|s| s.value.iter().map(|e| e.value.as_str()).collect());
    if let Some(s) = sticky_on
        && s.value.is_empty()
        && issue_cookie.is_none()
    {
        err(
            s.referenced,
            format!("{owner:?}: sticky_on is empty, so no request could be assigned"),
        );
    }
    match StickyConfig::build(list.as_deref(), issue_cookie.map(|c| c.value.as_str())) {
        Ok(c) => c,
        Err((index, e)) => {
            let pos = match index {
                Some(i) => sticky_on.and_then(|s| s.value.get(i)).map(|e| e.referenced),
                None => issue_cookie.map(|c| c.referenced),
            };
            err(pos.unwrap_or(at), format!("{owner:?}: {e}"));
            StickyConfig {
                sources: Vec::new(),
                mint_cookie: None,
            }
        }
    }
}
