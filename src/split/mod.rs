//! Sticky experiments and canaries. (Stub.)

/// A compiled experiment.
#[derive(Debug)]
pub struct Experiment {}

/// A compiled canary.
#[derive(Debug)]
pub struct Canary {}
