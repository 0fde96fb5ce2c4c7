//! Pointsman: a content-based routing reverse proxy.
//!
//! A request flows through the modules in this order:
//! [`config`] (rule files) → [`router`] (compiled snapshot, index) →
//! [`context`] (what the request carries) → [`matchers`] / [`rules`] (the
//! `match` language) → [`split`] (experiments, canaries) → [`forward`]
//! (to the upstream, with fallback) → [`metrics`].
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
// `deny`, not `forbid`: `allocator` alone allows one FFI call.
#![deny(unsafe_code)]

pub mod admin;
pub mod allocator;
pub mod app;
pub mod config;
pub mod context;
pub mod demo;
pub mod explain;
pub mod forward;
pub mod h1pool;
pub mod matchers;
pub mod metrics;
pub mod reload;
pub mod router;
pub mod rules;
pub mod server;
pub mod service;
pub mod split;
pub mod telemetry;
pub mod tls;
pub mod upstream;
