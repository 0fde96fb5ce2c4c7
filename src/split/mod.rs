//! Sticky experiments and canaries (SPEC 3, 4).
//!
//! - [`hash`]: GrowthBook-compatible hashing and bucketing.
//! - [`sticky`]: where a user's id comes from ([`StickyLookup`], which the
//!   caller implements over its request context), minting, `Set-Cookie`.
//! - [`experiment`]: compiled A/B experiments and their assignment.
//! - [`force`]: the `x-pointsman-force` / `pm_force` parser.
//! - [`stats`]: the SRM chi-square test.
//! - [`canary`]: canary definitions, runtime state ([`CanaryRegistry`]),
//!   guards over a sliding [`window`], operator actions.

pub mod canary;
pub mod decide;
pub mod experiment;
pub mod force;
pub mod hash;
pub mod persist;
pub mod stats;
pub mod sticky;
pub mod window;

pub use experiment::{
    Assignment, Exclusion, Experiment, ExperimentStats, Outcome, Variant, VariantStats,
    compile_experiment,
};
pub use force::{FORCE_HEADER, FORCE_QUERY, forced_variant, parse_force};
pub use sticky::{StickyConfig, StickyId, StickyLookup, StickySource};

pub use canary::{
    Action as CanaryAction, ActionError, ArmReason, Canary, CanaryDecision, CanaryDef,
    CanaryRegistry, CanaryView, State as CanaryState, compile_canary,
};
pub use decide::{Purpose, SplitDecision, SplitTrace, decide_canary, decide_experiment};
pub use window::{Arm, WindowStats};
