//! Upstreams: endpoints, balancing, connection pools.
//! (The definition is the agreed interface; runtime state is owned by the
//! forwarding work.)

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// An upstream as configured, with every default applied. Two equal
/// definitions may share runtime state (pools, health) across reloads.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamDef {
    pub name: Arc<str>,
    pub endpoints: Vec<Endpoint>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Extra attempts (SPEC 6).
    pub retries: u32,
    pub protocol: Protocol,
    pub tls: Option<UpstreamTls>,
    pub health_check: Option<HealthCheck>,
    pub outlier: Option<Outlier>,
}

/// One endpoint: `host:port`, `http://host:port` or `https://host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub tls: bool,
    /// `host:port` as written (the metrics label and the dial address).
    pub authority: String,
}

/// How requests are spread over endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastRequest,
    Random,
}

/// The protocol spoken to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Http1,
    H2,
}

/// TLS toward `https://` endpoints; the CA path is already resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    pub ca: Option<PathBuf>,
    pub server_name: Option<String>,
}

/// Active health checking.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_after: u32,
    pub healthy_after: u32,
}

/// Passive ejection.
#[derive(Debug, Clone, PartialEq)]
pub struct Outlier {
    pub consecutive_failures: u32,
    pub eject_for: Duration,
}

/// An upstream with its runtime state (pool, balancer, in-flight counts).
#[derive(Debug)]
pub struct Upstream {
    pub def: UpstreamDef,
}

impl Upstream {
    /// Creates the runtime state for a definition.
    pub fn new(def: UpstreamDef) -> Self {
        Upstream { def }
    }
}
