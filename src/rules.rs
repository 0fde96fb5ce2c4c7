//! The `match` expression tree. (Owned by the matching work; stub.)

/// A compiled `match`.
#[derive(Debug)]
pub enum Expr {
    All(Vec<Expr>),
}
