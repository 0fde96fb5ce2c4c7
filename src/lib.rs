//! Pointsman: a content-based routing reverse proxy.
//!
//! The layers, in the order a request travels (see `ARCHITECTURE.md`):
//! [`config`] (rule files → raw) → [`compile`] (raw → a pure [`compile::Config`])
//! → [`routing`] (context, matchers, route table) → [`split`] (experiments,
//! canaries) → [`pipeline`] (admit → decide → prepare → dispatch → record)
//! → [`forward`] / [`upstream`] → [`metrics`]. [`runtime`] holds what
//! outlives snapshots and links a config into the [`runtime::Snapshot`] that
//! serves; [`reload`] compiles, links and swaps; [`server`] and [`admin`]
//! face the network; [`app`] wires it all.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
// `deny`, not `forbid`: `allocator` alone allows one FFI call.
#![deny(unsafe_code)]

pub mod admin;
pub mod allocator;
pub mod app;
pub mod bounded;
pub mod clock;
pub mod compile;
pub mod config;
pub mod demo;
pub mod diff;
pub mod explain;
pub mod fleet;
pub mod forward;
#[doc(hidden)]
pub mod fuzzing;
pub mod gather;
pub mod idle_park;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod reload;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod split;
pub mod tls;
pub mod upstream;
pub mod version;
pub mod worker;
pub mod yielding;
