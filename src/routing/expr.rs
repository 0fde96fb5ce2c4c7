//! The `match` expression tree, evaluated with short-circuit on a borrowed
//! [`RequestContext`]. `compile::matchers` builds it from a rule file.

use super::context::RequestContext;
use super::matchers::Leaf;
use std::fmt::Write as _;

/// A compiled `match`: 32 bytes, the size of a [`Leaf`]; lists are boxed
/// slices without spare capacity (every route keeps one, issue 6).
#[derive(Debug, Clone)]
pub enum Expr {
    /// Every one holds (an empty list always holds).
    All(Box<[Expr]>),
    /// At least one holds.
    Any(Box<[Expr]>),
    /// The inner expression does not hold.
    Not(Box<Expr>),
    /// One matcher.
    Leaf(Leaf),
}

// === impl Expr ===

impl Expr {
    /// Matches every request.
    pub fn always() -> Expr {
        Expr::All(Box::default())
    }

    /// Whether the request matches (short-circuit, left to right).
    pub fn matches(&self, ctx: &RequestContext<'_>) -> bool {
        match self {
            Expr::All(xs) => xs.iter().all(|x| x.matches(ctx)),
            Expr::Any(xs) => xs.iter().any(|x| x.matches(ctx)),
            Expr::Not(x) => !x.matches(ctx),
            Expr::Leaf(l) => l.matches(ctx),
        }
    }

    /// The first predicate that fails, described for `explain` (e.g.
    /// `header x-beta equals "1"`); `None` when the expression holds.
    pub fn first_failure(&self, ctx: &RequestContext<'_>) -> Option<String> {
        match self {
            Expr::All(xs) => xs.iter().find_map(|x| x.first_failure(ctx)),
            Expr::Leaf(l) => (!l.matches(ctx)).then(|| l.to_string()),
            other => (!other.matches(ctx)).then(|| other.summary()),
        }
    }

    /// Whether any matcher inside reads the request body.
    pub fn needs_body(&self) -> bool {
        match self {
            Expr::All(xs) | Expr::Any(xs) => xs.iter().any(Expr::needs_body),
            Expr::Not(x) => x.needs_body(),
            Expr::Leaf(l) => l.needs_body(),
        }
    }

    /// Short text of the whole match for the admin route list, e.g.
    /// `host api.example.com and path /v1/{*rest}`; `*` matches everything.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        self.write_summary(&mut s, true);
        s
    }

    fn write_summary(&self, out: &mut String, top: bool) {
        match self {
            Expr::All(xs) if xs.is_empty() => out.push('*'),
            Expr::All(xs) => {
                if !top {
                    out.push_str("all(");
                }
                join(out, xs, " and ");
                if !top {
                    out.push(')');
                }
            }
            Expr::Any(xs) => {
                out.push_str("any(");
                join(out, xs, " | ");
                out.push(')');
            }
            Expr::Not(x) => {
                out.push_str("not(");
                x.write_summary(out, true);
                out.push(')');
            }
            Expr::Leaf(l) => {
                let _ = write!(out, "{l}");
            }
        }
    }

    /// The conjuncts that must all hold: the items of a top-level
    /// [`Expr::All`], or the expression itself. The route index reads hosts
    /// and paths from here.
    pub fn conjuncts(&self) -> &[Expr] {
        match self {
            Expr::All(xs) => xs,
            other => std::slice::from_ref(other),
        }
    }
}

fn join(out: &mut String, xs: &[Expr], sep: &str) {
    for (i, x) in xs.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        x.write_summary(out, false);
    }
}
