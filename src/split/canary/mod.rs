//! Canary releases (SPEC 3, 4): the compiled definition ([`def`]), the live
//! state shared across reloads ([`runtime`]), and the registry that keys
//! that state by definition identity ([`registry`]).
//!
//! Steps advance and guards are judged in [`CanaryRegistry::tick`];
//! [`CanaryRegistry::spawn_driver`] calls it periodically.

pub mod def;
pub mod registry;
pub mod runtime;

pub use def::{
    Action, ActionError, ArmReason, CanaryDecision, CanaryDef, GuardDef, OnBreach, Plan, State,
    Step, UnknownAction,
};
pub use registry::CanaryRegistry;
pub use runtime::{Canary, CanaryView, GuardView, SharedControl, StepView};

#[cfg(test)]
mod tests;
