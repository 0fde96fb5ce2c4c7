//! Every integration test, in one binary (as ripgrep does): one link
//! instead of one per file. Each module names what it covers; `support`
//! holds the shared harness (test upstreams, the real binary, raw clients).
//!
//! The crate's lint policy is for the library: test modules share their
//! helpers freely (`pub` across modules), and the harness's recording
//! upstreams may lock (the lock ban protects the proxy's request path).
#![allow(unreachable_pub, clippy::disallowed_types)]

mod support;

mod analytics;
mod check_warnings;
mod cli;
mod config_check;
mod dashboard;
mod deploy;
mod fleet;
mod forwarding;
mod fuzz_corpus;
mod grpc;
mod hardening;
mod health;
mod idle;
mod metrics_dashboard;
mod observability;
mod reload;
mod router_props;
mod routing;
mod split_props;
mod split_proxy;
mod tls;
