//! What `GET /upstreams` shows of an upstream runtime (SPEC 8): balance,
//! protocol, the health-check and outlier settings, and per endpoint its
//! health, ejection, in-flight requests, last check and last failure.

use super::Upstream;
use super::def::{Balance, Protocol};
use super::health::now_ms;
use crate::clock::rfc3339_millis;
use serde::Serialize;
use std::time::{Duration, UNIX_EPOCH};

/// One upstream.
#[derive(Debug, Serialize)]
pub struct UpstreamView {
    /// The upstream's name.
    pub name: String,
    /// `round_robin`, `least_request` or `random`.
    pub balance: &'static str,
    /// `http1` or `h2`.
    pub protocol: &'static str,
    /// Extra attempts on another endpoint.
    pub retries: u32,
    /// The active checks, if configured.
    pub health_check: Option<HealthCheckView>,
    /// Passive ejection, if configured.
    pub outlier: Option<OutlierView>,
    /// The endpoints, in configuration order.
    pub endpoints: Vec<EndpointView>,
}

/// An upstream's `health_check`.
#[derive(Debug, Serialize)]
pub struct HealthCheckView {
    /// The path probed with `GET`.
    pub path: String,
    /// Between probes of one endpoint.
    pub interval_ms: u64,
    /// How long a probe may take.
    pub timeout_ms: u64,
    /// Failures in a row that make an endpoint unhealthy.
    pub unhealthy_after: u32,
    /// Passes in a row that make it healthy again.
    pub healthy_after: u32,
}

/// An upstream's `outlier`.
#[derive(Debug, Serialize)]
pub struct OutlierView {
    /// Upstream faults in a row that eject an endpoint.
    pub consecutive_failures: u32,
    /// The first ejection's length (times the ejections in a row, ≤ 10×).
    pub eject_for_ms: u64,
    /// The most endpoints ejected at once, in percent.
    pub max_ejected_percent: u32,
}

/// One endpoint.
#[derive(Debug, Serialize)]
pub struct EndpointView {
    /// `host:port` as configured.
    pub endpoint: String,
    /// What the active checks say (true without checks).
    pub healthy: bool,
    /// The current ejection, if any.
    pub ejected: Option<EjectionView>,
    /// Ejections in all.
    pub ejections: u64,
    /// Healthy and not ejected: the balancer may pick it.
    pub serving: bool,
    /// Requests in flight.
    pub in_flight: usize,
    /// The last active check.
    pub last_check: Option<CheckView>,
    /// The last upstream failure (connect, timeout, reset, or a 5xx
    /// answer: `status`).
    pub last_failure: Option<FailureView>,
}

/// A current ejection.
#[derive(Debug, Serialize)]
pub struct EjectionView {
    /// When it ends (RFC 3339, UTC).
    pub until: String,
    /// The ejections in a row it is (its length is `eject_for` × this,
    /// capped at 10).
    pub times_in_row: u32,
}

/// An active check.
#[derive(Debug, Serialize)]
pub struct CheckView {
    /// RFC 3339, UTC.
    pub at: String,
    /// `pass` or `fail`.
    pub result: &'static str,
    /// The answer's status, or why there was none.
    pub reason: String,
}

/// An upstream failure.
#[derive(Debug, Serialize)]
pub struct FailureView {
    /// RFC 3339, UTC.
    pub at: String,
    /// `connect`, `timeout`, `reset` or `status`.
    pub kind: &'static str,
    /// What happened.
    pub reason: String,
}

fn at(unix_ms: u64) -> String {
    rfc3339_millis(UNIX_EPOCH + Duration::from_millis(unix_ms))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Upstream {
    /// The upstream as `GET /upstreams` shows it, now.
    pub fn view(&self) -> UpstreamView {
        let def = &self.def;
        let now = now_ms();
        let endpoints = self
            .endpoints
            .iter()
            .map(|e| {
                let v = &e.vitals;
                EndpointView {
                    endpoint: v.label.to_string(),
                    healthy: v.healthy(),
                    ejected: v.ejection(now).map(|(until, times_in_row)| EjectionView {
                        until: at(until),
                        times_in_row,
                    }),
                    ejections: v.ejections(),
                    serving: v.available(now),
                    in_flight: e.in_flight(),
                    last_check: v.last_check().map(|c| CheckView {
                        at: at(c.at),
                        result: if c.pass { "pass" } else { "fail" },
                        reason: c.reason.clone(),
                    }),
                    last_failure: v.last_failure().map(|f| FailureView {
                        at: at(f.at),
                        kind: f.kind.as_str(),
                        reason: f.reason,
                    }),
                }
            })
            .collect();
        UpstreamView {
            name: def.name.to_string(),
            balance: match def.balance {
                Balance::RoundRobin => "round_robin",
                Balance::LeastRequest => "least_request",
                Balance::Random => "random",
            },
            protocol: match def.protocol {
                Protocol::Http1 => "http1",
                Protocol::H2 => "h2",
            },
            retries: def.retries,
            health_check: def.health_check.as_ref().map(|h| HealthCheckView {
                path: h.path.clone(),
                interval_ms: ms(h.interval),
                timeout_ms: ms(h.timeout),
                unhealthy_after: h.unhealthy_after,
                healthy_after: h.healthy_after,
            }),
            outlier: def.outlier.as_ref().map(|o| OutlierView {
                consecutive_failures: o.consecutive_failures,
                eject_for_ms: ms(o.eject_for),
                max_ejected_percent: o.max_ejected_percent,
            }),
            endpoints,
        }
    }
}
