//! Leaf matchers and value tests. (Owned by the matching work; stub.)
