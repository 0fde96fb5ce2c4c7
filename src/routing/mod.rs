//! Routing: what a request carries ([`context`]), the `match` language
//! ([`matchers`], [`expr`]) and the first-match route table with its
//! host/path [`index`]. This layer decides which route matches and nothing
//! else: it knows neither actions nor the wire.

pub mod context;
pub mod expr;
pub mod host;
pub mod index;
pub mod matchers;
pub mod path;
pub mod table;

pub use context::{HostError, RequestContext, canonical_host, normalize_host, normalize_path};
pub use expr::Expr;
pub use table::{RouteTable, Trial};

/// The position of the first `byte` in `s`. A plain loop: on the short
/// strings routing looks at (path segments, cookie pairs) it costs a
/// fraction of `str::find`'s searcher, which every request pays several
/// times.
pub(crate) fn find_byte(s: &str, byte: u8) -> Option<usize> {
    s.bytes().position(|b| b == byte)
}

/// `s` split at the first `byte` (which neither part keeps).
pub(crate) fn split_at_byte(s: &str, byte: u8) -> Option<(&str, &str)> {
    let i = find_byte(s, byte)?;
    Some((s.get(..i)?, s.get(i + 1..)?))
}

/// Anything routed by a `match`: the index and the table read only that.
pub trait HasMatch {
    /// The whole `match`, host and path included.
    fn matcher(&self) -> &Expr;
}

/// `v` as a boxed slice in an allocation of exactly its length, for what a
/// config keeps for its lifetime. `Vec::into_boxed_slice` shrinks with
/// `realloc`, which mimalloc does in place while the block stays at least
/// half used: a route's 2 or 3 conditions kept the 128-byte block of 4
/// (issue 6). Costs a copy when there is spare capacity.
pub fn exact_slice<T>(v: Vec<T>) -> Box<[T]> {
    if v.len() == v.capacity() {
        return v.into_boxed_slice();
    }
    let mut exact = Vec::with_capacity(v.len());
    exact.extend(v);
    exact.into_boxed_slice()
}
