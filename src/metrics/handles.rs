//! Handles the request path and the runtime record into: each wraps
//! counters resolved once, so recording is an atomic add.

use prometheus::{IntCounter, IntGauge};

/// Error counters of one upstream, one per `kind`.
#[derive(Debug, Clone)]
pub struct UpstreamErrors {
    pub(super) connect: IntCounter,
    pub(super) timeout: IntCounter,
    pub(super) reset: IntCounter,
    pub(super) no_healthy: IntCounter,
}

impl UpstreamErrors {
    /// Connect refused or timed out after retries (or upstream TLS failed).
    pub fn connect(&self) {
        self.connect.inc();
    }
    /// No response headers within the timeout.
    pub fn timeout(&self) {
        self.timeout.inc();
    }
    /// Closed or reset, before or during the response.
    pub fn reset(&self) {
        self.reset.inc();
    }
    /// Every endpoint unhealthy or ejected.
    pub fn no_healthy(&self) {
        self.no_healthy.inc();
    }
}

/// The health gauge of one endpoint.
#[derive(Debug, Clone)]
pub struct EndpointHealth(pub(super) IntGauge);

impl EndpointHealth {
    /// Sets the gauge to 1 (healthy) or 0.
    pub fn set(&self, healthy: bool) {
        self.0.set(i64::from(healthy));
    }
}

/// The counters of one endpoint: passive ejections and active checks.
#[derive(Debug, Clone)]
pub struct EndpointCounters {
    pub(super) ejections: IntCounter,
    pub(super) checks_pass: IntCounter,
    pub(super) checks_fail: IntCounter,
}

impl EndpointCounters {
    /// The endpoint was ejected.
    pub fn ejected(&self) {
        self.ejections.inc();
    }
    /// A health check passed (`true`) or failed.
    pub fn checked(&self, pass: bool) {
        if pass {
            self.checks_pass.inc();
        } else {
            self.checks_fail.inc();
        }
    }
}

/// Mirror counters of one route and mirror upstream.
#[derive(Debug, Clone)]
pub struct MirrorCounters {
    pub(super) sent: IntCounter,
    pub(super) failed: IntCounter,
    pub(super) skipped: IntCounter,
}

impl MirrorCounters {
    /// The mirrored request got a response.
    pub fn sent(&self) {
        self.sent.inc();
    }
    /// The mirrored request failed.
    pub fn failed(&self) {
        self.failed.inc();
    }
    /// The request was chosen for mirroring but not mirrored (e.g. its body
    /// could not be held).
    pub fn skipped(&self) {
        self.skipped.inc();
    }
}

/// The open-connection gauge of one listener.
#[derive(Debug, Clone)]
pub struct ListenerConnections(pub(super) IntGauge);

impl ListenerConnections {
    /// Counts a connection as open until the guard is dropped.
    pub fn open(&self) -> ConnectionGuard {
        self.0.inc();
        ConnectionGuard(self.0.clone())
    }
}

/// Decrements its listener's connection gauge when dropped.
#[derive(Debug)]
pub struct ConnectionGuard(IntGauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
