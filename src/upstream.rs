//! Upstreams: endpoints, balancing, connection pools. (Stub.)

/// An upstream with its runtime state.
#[derive(Debug)]
pub struct Upstream {}
