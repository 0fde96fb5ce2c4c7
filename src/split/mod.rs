//! Sticky experiments and canaries. (Stub.)

use crate::config::Diagnostics;
use crate::config::raw::{self, Spanned};
use crate::router::UpstreamId;
use serde_saphyr::Location;
use std::sync::Arc;

/// A compiled experiment.
#[derive(Debug)]
pub struct Experiment {}

/// A compiled canary.
#[derive(Debug)]
pub struct Canary {}

/// Compiles an experiment.
pub fn compile_experiment(
    _name: &str,
    _raw: &raw::Experiment,
    _file: &Arc<str>,
    _at: Location,
    _diags: &mut Diagnostics,
    _resolve_upstream: &dyn Fn(&Spanned<String>) -> Option<UpstreamId>,
    _targeting: Option<crate::rules::Expr>,
) -> Option<Experiment> {
    Some(Experiment {})
}

/// Compiles a canary.
pub fn compile_canary(
    _route: &str,
    _raw: &raw::Canary,
    _file: &Arc<str>,
    _at: Location,
    _diags: &mut Diagnostics,
    _resolve_upstream: &dyn Fn(&Spanned<String>) -> Option<UpstreamId>,
) -> Option<Canary> {
    Some(Canary {})
}
