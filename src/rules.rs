//! The `match` expression tree. (Owned by the matching work; stub.)

use crate::config::Diagnostics;
use crate::config::raw::{self, Spanned};
use std::sync::Arc;

/// A compiled `match`.
#[derive(Debug)]
pub enum Expr {
    All(Vec<Expr>),
}

impl Expr {
    /// Matches every request.
    pub fn always() -> Expr {
        Expr::All(Vec::new())
    }
    /// Whether evaluating needs the request body.
    pub fn needs_body(&self) -> bool {
        false
    }
}

/// Compiles a `match` mapping.
pub fn compile(_m: &Spanned<raw::Match>, _file: &Arc<str>, _diags: &mut Diagnostics) -> Expr {
    Expr::always()
}
