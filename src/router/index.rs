//! Host and path index over the routes. (Owned by the matching work; stub.)

/// Narrows the candidate routes.
#[derive(Debug, Default)]
pub struct RouteIndex {}
