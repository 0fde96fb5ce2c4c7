//! Sticky experiments and canaries. (Being built.)

pub mod hash;
pub mod sticky;

/// A compiled experiment.
#[derive(Debug)]
pub struct Experiment {}

/// A compiled canary.
#[derive(Debug)]
pub struct Canary {}
