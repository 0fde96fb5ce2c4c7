//! Sticky experiments and canaries (SPEC 3, 4): who gets which variant.
//!
//! - [`hash`]: GrowthBook-compatible hashing and bucketing.
//! - [`sticky`]: where a user's id comes from ([`StickyLookup`], implemented
//!   over the routing context), minting, `Set-Cookie`.
//! - [`experiment`]: compiled A/B experiments and their assignment.
//! - [`force`]: the `x-pointsman-force` / `pm_force` parser.
//! - [`canary`]: canary definitions, runtime state ([`CanaryRegistry`]),
//!   guards over a sliding [`window`], operator actions; [`persist`] keeps
//!   their state in the `state_file`.
//! - [`decide`]: one request's split decision, shared by the request path
//!   and `explain`.
//! - [`tally`], [`stats`]: what experiments count, and the SRM test.
//! - [`identity`]: canonical definition identities.
//! - [`timeline`]: the dashboard's last 15 minutes per arm, sampled from
//!   the counters above.

pub mod canary;
pub mod decide;
pub mod experiment;
pub mod force;
pub mod hash;
pub mod identity;
pub mod latency;
pub mod persist;
pub mod stats;
pub mod sticky;
pub mod tally;
pub mod timeline;
pub mod users;
pub mod window;

pub use experiment::{Assignment, Exclusion, Experiment, Outcome, Variant};
pub use force::{FORCE_HEADER, FORCE_QUERY, forced_variant, parse_force};
pub use sticky::{StickyConfig, StickyId, StickyLookup, StickySource};
pub use tally::{ExperimentStats, Tally, TallyCounts, VariantStats};

pub use canary::{
    Action as CanaryAction, ActionError, ArmReason, Canary, CanaryDecision, CanaryDef,
    CanaryRegistry, CanaryView, SharedControl, State as CanaryState,
};
pub use decide::{
    Exposure, Purpose, Split, SplitDecision, SplitTrace, decide_canary, decide_experiment,
};
pub use identity::Identity;
pub use window::{Arm, WindowStats};
