//! Active health checks (SPEC 6.1): every `interval` each endpoint gets
//! `GET path` with `Host:` the endpoint and `user-agent: pointsman-health`,
//! over the upstream's protocol and TLS, within `timeout`; a 2xx or 3xx
//! answer passes. One task per endpoint, their first probes spread over
//! the interval. A task holds its upstream only weakly: when the last
//! snapshot using the upstream is gone, its checks stop.
//!
//! Started only by a serving runtime (`run`, `demo`), never by `check`,
//! `explain`, `assign` or `diff`, which do not link a runtime at all.

use super::def::{HealthCheck, Protocol};
use super::{Upstream, connect, h1, h2};
use crate::forward::{NO_FIELDS, full};
use http::{HeaderValue, Request, Uri, header};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The `user-agent` of every probe.
const USER_AGENT: HeaderValue = HeaderValue::from_static("pointsman-health");

impl Upstream {
    /// Starts the active checks of this upstream's endpoints on `rt`, if
    /// its definition has `health_check`. They run as long as the upstream
    /// does.
    pub fn start_health_checks(self: &Arc<Self>, rt: &tokio::runtime::Handle) {
        let Some(hc) = &self.def.health_check else {
            return;
        };
        let n = self.endpoints.len();
        // Spread over the interval, with a random phase so that several
        // upstreams do not probe in step either.
        let phase = rand::random_range(0.0..1.0);
        for i in 0..n {
            let share = (i as f64 + phase) / n as f64;
            let offset = hc.interval.mul_f64(share);
            rt.spawn(run(Arc::downgrade(self), i, hc.clone(), offset));
        }
    }

    /// One probe of endpoint `idx`: `Ok(status)` when it answered.
    async fn probe(&self, idx: usize, hc: &HealthCheck) -> Result<u16, String> {
        let Some(ep) = self.endpoints.get(idx) else {
            return Err("no such endpoint".into());
        };
        let label = &ep.vitals.label;
        let exchange = async {
            let uri = Uri::try_from(hc.path.as_str()).map_err(|e| e.to_string())?;
            let status = match self.def.protocol {
                Protocol::H2 => {
                    let mut req = probe_request(uri, None)?;
                    if let Some(base) = ep.base.clone() {
                        // No Host on the probe: `:authority` is the endpoint.
                        h2::to_h2(&mut req, ep.tls, base).map_err(|e| e.to_string())?;
                    }
                    let mut tx = connect::open_h2(&self.connector, &ep.url, label)
                        .await
                        .map_err(|e| e.reason())?;
                    let resp = tx
                        .send_request(req)
                        .await
                        .map_err(|e| connect::classify(label.clone(), e).reason())?;
                    resp.status()
                }
                Protocol::Http1 => {
                    let req = probe_request(uri, Some(ep.host.clone()))?;
                    let conn = self
                        .dialer
                        .open(label, ep.sni.as_ref(), label)
                        .await
                        .map_err(|e| e.reason())?;
                    let (parts, body) = req.into_parts();
                    let out = h1::Outgoing::new(&parts, &NO_FIELDS, body)
                        .map_err(|e| connect::h1_fault(label.clone(), e).reason())?;
                    let answer = h1::exchange(conn, out, false, false, None, None)
                        .await
                        .map_err(|f| connect::h1_fault(label.clone(), f.error).reason())?;
                    answer.response.status()
                }
            };
            Ok(status.as_u16())
        };
        match tokio::time::timeout(hc.timeout, exchange).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {:?}", hc.timeout)),
        }
    }
}

/// `GET uri` as a probe with the probe's user agent, on a connection of its
/// own. Over HTTP/1.1 (`h1_host`: the endpoint's Host) it asks for the
/// connection to close after the answer; over h2 the caller sets the
/// `:authority`.
fn probe_request(
    uri: Uri,
    h1_host: Option<Option<HeaderValue>>,
) -> Result<Request<crate::forward::ProxyBody>, String> {
    let mut req = Request::get(uri);
    if let Some(host) = h1_host {
        req = req.header(header::CONNECTION, "close");
        if let Some(host) = host {
            req = req.header(header::HOST, host);
        }
    }
    req.header(header::USER_AGENT, USER_AGENT)
        .body(full(bytes::Bytes::new()))
        .map_err(|e| e.to_string())
}

/// The checks of endpoint `idx`, until the upstream is gone.
async fn run(upstream: Weak<Upstream>, idx: usize, hc: HealthCheck, offset: Duration) {
    let start = tokio::time::Instant::now() + offset;
    let mut tick = tokio::time::interval_at(start, hc.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(up) = upstream.upgrade() else {
            return;
        };
        let outcome = up.probe(idx, &hc).await;
        if let Some(ep) = up.endpoints.get(idx) {
            ep.vitals.checked(&hc, outcome);
        }
    }
}
