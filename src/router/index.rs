//! Host and path index over the routes. (Owned by the matching work; stub.)

/// Narrows the candidate routes.
#[derive(Debug, Default)]
pub struct RouteIndex {}

impl RouteIndex {
    /// Builds the index.
    pub fn build(_routes: &[super::Route]) -> Self {
        RouteIndex {}
    }
}
