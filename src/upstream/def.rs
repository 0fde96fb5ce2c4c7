//! Upstream definitions as compiled from rule files: pure values with every
//! default applied. Two equal definitions share one runtime (pools, health)
//! across reloads.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Position of an upstream in the config's upstream list.
pub type UpstreamId = usize;

/// An upstream as configured, with every default applied.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamDef {
    /// The upstream's name (metrics label, admin API).
    pub name: Arc<str>,
    /// Where requests go, in configuration order.
    pub endpoints: Vec<Endpoint>,
    /// How requests are spread over the endpoints.
    pub balance: Balance,
    /// How long a connection may take to open.
    pub connect_timeout: Duration,
    /// How long response headers may take.
    pub request_timeout: Duration,
    /// Extra attempts (SPEC 6).
    pub retries: u32,
    /// HTTP/1.1 or h2.
    pub protocol: Protocol,
    /// TLS toward `https://` endpoints.
    pub tls: Option<UpstreamTls>,
    /// Active health checking.
    pub health_check: Option<HealthCheck>,
    /// Passive ejection.
    pub outlier: Option<Outlier>,
}

impl UpstreamDef {
    /// A definition over `endpoints` (`host:port`) with SPEC 2's defaults.
    pub fn new(name: &str, endpoints: &[&str]) -> Self {
        UpstreamDef {
            name: name.into(),
            endpoints: endpoints
                .iter()
                .map(|a| Endpoint {
                    tls: false,
                    authority: (*a).to_string(),
                })
                .collect(),
            balance: Balance::RoundRobin,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
            retries: 1,
            protocol: Protocol::Http1,
            tls: None,
            health_check: None,
            outlier: None,
        }
    }
}

/// One endpoint: `host:port`, `http://host:port` or `https://host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Whether it is `https://`.
    pub tls: bool,
    /// `host:port` as written (the metrics label and the dial address).
    pub authority: String,
}

/// How requests are spread over endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// In turn.
    #[default]
    RoundRobin,
    /// The less loaded of two random endpoints.
    LeastRequest,
    /// At random.
    Random,
}

/// The protocol spoken to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// HTTP/1.1 with pooled keep-alive connections.
    #[default]
    Http1,
    /// HTTP/2 (prior knowledge on clear text, ALPN on TLS).
    H2,
}

/// TLS toward `https://` endpoints; the CA path is already resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    /// The CA bundle file, if any (else the bundled Mozilla roots).
    pub ca: Option<PathBuf>,
    /// The name verified and sent as SNI (else the endpoint's host).
    pub server_name: Option<String>,
    /// The certificates of `ca`, as loaded with the config (so a changed CA
    /// file makes a different definition and a new pool).
    pub ca_certs: Vec<rustls_pki_types::CertificateDer<'static>>,
}

/// Active health checking (SPEC 6.1).
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    /// The path probed with `GET`.
    pub path: String,
    /// Time between probes of one endpoint.
    pub interval: Duration,
    /// How long a probe may take.
    pub timeout: Duration,
    /// Failures in a row that make an endpoint unhealthy.
    pub unhealthy_after: u32,
    /// Passes in a row that make it healthy again.
    pub healthy_after: u32,
}

/// Passive ejection (SPEC 6.1).
#[derive(Debug, Clone, PartialEq)]
pub struct Outlier {
    /// Upstream faults in a row that eject an endpoint.
    pub consecutive_failures: u32,
    /// The base ejection time (times the ejections in a row, up to 10×).
    pub eject_for: Duration,
    /// The most endpoints ejected at once, in percent of the endpoints
    /// (rounded down; one may always be).
    pub max_ejected_percent: u32,
}
