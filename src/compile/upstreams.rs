//! The `upstreams` section → [`UpstreamDef`]s, and resolving upstream
//! names wherever a rule file uses one.

use super::{Builder, Place};
use crate::config::Source;
use crate::config::raw::{self, Spanned};
use crate::upstream::def::{
    Balance, Endpoint, HealthCheck, Outlier, Protocol, UpstreamDef, UpstreamId, UpstreamTls,
};
use std::sync::Arc;
use std::time::Duration;

impl Builder<'_> {
    pub(super) fn upstreams(&mut self) {
        for src in self.files() {
            for (key, up) in &src.doc.upstreams.0 {
                let place = Place {
                    file: src.name.clone(),
                    at: key.referenced,
                };
                if let Some((_, first)) = self.upstream_ids.get(&key.value) {
                    let msg = format!("upstream `{}` is already defined at {first}", key.value);
                    self.diags.error(&src.name, key.referenced, msg);
                    continue;
                }
                let Some(def) = self.upstream_def(src, &key.value, up) else {
                    // Known but broken: references to it are not errors too.
                    self.broken_upstreams.insert(key.value.clone());
                    continue;
                };
                let id = self.upstreams.len();
                self.upstreams.push(def);
                self.upstream_used.push(false);
                self.upstream_ids.insert(key.value.clone(), (id, place));
            }
        }
    }

    fn upstream_def(
        &mut self,
        src: &Source,
        name: &str,
        up: &Spanned<raw::Upstream>,
    ) -> Option<UpstreamDef> {
        let u = &up.value;
        let f = &src.name;
        let errors_before = self.diags.items().len();
        if u.endpoints.is_empty() {
            self.diags.error(
                f,
                up.referenced,
                format!("upstream `{name}` has no endpoints"),
            );
        }
        let mut endpoints = Vec::with_capacity(u.endpoints.len());
        for e in &u.endpoints {
            match parse_endpoint(&e.value) {
                Ok(ep) => endpoints.push(ep),
                Err(msg) => self.diags.error(f, e.referenced, msg),
            }
        }
        let balance = match u.balance.as_ref().map(|b| (b.value.as_str(), b.referenced)) {
            None | Some(("round_robin", _)) => Balance::RoundRobin,
            Some(("least_request", _)) => Balance::LeastRequest,
            Some(("random", _)) => Balance::Random,
            Some((other, at)) => {
                self.diags.error(
                    f,
                    at,
                    format!("unknown balance `{other}`: use round_robin, least_request or random"),
                );
                Balance::RoundRobin
            }
        };
        let protocol = match u
            .protocol
            .as_ref()
            .map(|p| (p.value.as_str(), p.referenced))
        {
            None | Some(("http1", _)) => Protocol::Http1,
            Some(("h2", _)) => Protocol::H2,
            Some((other, at)) => {
                self.diags.error(
                    f,
                    at,
                    format!("unknown protocol `{other}`: use http1 or h2"),
                );
                Protocol::Http1
            }
        };
        let connect_timeout = self.duration(f, u.connect_timeout.as_ref(), Duration::from_secs(2));
        let request_timeout = self.duration(f, u.request_timeout.as_ref(), Duration::from_secs(30));
        let tls = u.tls.as_ref().map(|t| self.upstream_tls(src, &t.value));
        let health_check = u
            .health_check
            .as_ref()
            .map(|h| self.health_check(f, &h.value));
        let outlier = u.outlier.as_ref().map(|o| self.outlier(f, &o.value));
        if self.diags.items().len() > errors_before {
            return None;
        }
        Some(UpstreamDef {
            name: Arc::from(name),
            endpoints,
            balance,
            connect_timeout,
            request_timeout,
            retries: u.retries.as_ref().map_or(1, |r| r.value),
            protocol,
            tls,
            health_check,
            outlier,
        })
    }

    /// An upstream's `health_check` with SPEC 2's defaults (`interval: 5s`,
    /// `timeout: 1s`, `unhealthy_after: 3`, `healthy_after: 2`).
    fn health_check(&mut self, f: &Arc<str>, h: &raw::HealthCheck) -> HealthCheck {
        if !h.path.value.starts_with('/') {
            self.diags.error(
                f,
                h.path.referenced,
                "health_check path must start with `/`",
            );
        } else if let Err(e) = http::uri::PathAndQuery::try_from(h.path.value.as_str()) {
            self.diags.error(
                f,
                h.path.referenced,
                format!("invalid health_check path `{}`: {e}", h.path.value),
            );
        }
        HealthCheck {
            path: h.path.value.clone(),
            interval: self.positive_duration(
                f,
                "interval",
                h.interval.as_ref(),
                Duration::from_secs(5),
            ),
            timeout: self.positive_duration(
                f,
                "timeout",
                h.timeout.as_ref(),
                Duration::from_secs(1),
            ),
            unhealthy_after: self.count(
                f,
                "unhealthy_after",
                h.unhealthy_after.as_ref(),
                3,
                1..=u32::MAX,
            ),
            healthy_after: self.count(
                f,
                "healthy_after",
                h.healthy_after.as_ref(),
                2,
                1..=u32::MAX,
            ),
        }
    }

    /// An upstream's `outlier` with SPEC 2's defaults
    /// (`consecutive_failures: 5`, `eject_for: 30s`,
    /// `max_ejected_percent: 50`).
    fn outlier(&mut self, f: &Arc<str>, o: &raw::Outlier) -> Outlier {
        Outlier {
            consecutive_failures: self.count(
                f,
                "consecutive_failures",
                o.consecutive_failures.as_ref(),
                5,
                1..=u32::MAX,
            ),
            eject_for: self.positive_duration(
                f,
                "eject_for",
                o.eject_for.as_ref(),
                Duration::from_secs(30),
            ),
            max_ejected_percent: self.count(
                f,
                "max_ejected_percent",
                o.max_ejected_percent.as_ref(),
                50,
                0..=100,
            ),
        }
    }

    /// A duration that must be above zero (a zero interval would spin, a
    /// zero timeout would cut every connection at once).
    pub(super) fn positive_duration(
        &mut self,
        f: &Arc<str>,
        key: &str,
        d: Option<&Spanned<String>>,
        default: Duration,
    ) -> Duration {
        let v = self.duration(f, d, default);
        match d {
            Some(s) if v.is_zero() => {
                self.diags
                    .error(f, s.referenced, format!("`{key}` must be longer than zero"));
                default
            }
            _ => v,
        }
    }

    /// A count within `range` (else an error naming the range), or
    /// `default` when absent.
    fn count(
        &mut self,
        f: &Arc<str>,
        key: &str,
        v: Option<&Spanned<u32>>,
        default: u32,
        range: std::ops::RangeInclusive<u32>,
    ) -> u32 {
        match v {
            None => default,
            Some(s) if range.contains(&s.value) => s.value,
            Some(s) => {
                let msg = if *range.end() == u32::MAX {
                    format!("`{key}` must be at least {}", range.start())
                } else {
                    format!("`{key}` must be from {} to {}", range.start(), range.end())
                };
                self.diags.error(f, s.referenced, msg);
                default
            }
        }
    }

    /// An upstream's `tls`: the CA bundle is parsed now; `server_name` must
    /// be a DNS name or an IP address.
    fn upstream_tls(&mut self, src: &Source, t: &raw::UpstreamTls) -> UpstreamTls {
        let f = &src.name;
        let ca = t.ca.as_ref().map(|c| (src.resolve(&c.value), c.referenced));
        let mut ca_certs = Vec::new();
        if let Some((path, at)) = &ca {
            let parsed = self.loaded.files.get(path).and_then(crate::tls::parse_ca);
            match parsed {
                Ok(certs) => ca_certs = certs,
                Err(e) => self.diags.error(
                    f,
                    *at,
                    format!("cannot read CA file {}: {e}", path.display()),
                ),
            }
        }
        if let Some(s) = &t.server_name
            && rustls_pki_types::ServerName::try_from(s.value.as_str()).is_err()
        {
            self.diags.error(
                f,
                s.referenced,
                format!(
                    "invalid server_name `{}`: use a DNS name or an IP address",
                    s.value
                ),
            );
        }
        UpstreamTls {
            ca: ca.map(|(p, _)| p),
            server_name: t.server_name.as_ref().map(|s| s.value.clone()),
            ca_certs,
        }
    }

    /// Resolves an upstream name, reporting an undefined one at its place.
    pub(super) fn upstream_ref(
        &mut self,
        f: &Arc<str>,
        name: &Spanned<String>,
    ) -> Option<UpstreamId> {
        match self.upstream_ids.get(&name.value) {
            Some((id, _)) => {
                let id = *id;
                if let Some(u) = self.upstream_used.get_mut(id) {
                    *u = true;
                }
                Some(id)
            }
            None if self.broken_upstreams.contains(&name.value) => None,
            None => {
                let mut known: Vec<&str> = self.upstream_ids.keys().map(String::as_str).collect();
                let hint = if known.is_empty() {
                    "no upstreams are defined".to_string()
                } else {
                    known.sort_unstable();
                    format!("defined: {}", known.join(", "))
                };
                self.diags.error(
                    f,
                    name.referenced,
                    format!("undefined upstream `{}` ({hint})", name.value),
                );
                None
            }
        }
    }

    /// Warns about upstreams no route, experiment, canary, mirror or
    /// fallback uses.
    pub(super) fn warn_unused_upstreams(&mut self) {
        let mut unused: Vec<(String, Place)> = self
            .upstream_ids
            .iter()
            .filter(|(_, (id, _))| !self.upstream_used.get(*id).copied().unwrap_or(true))
            .map(|(name, (_, place))| (name.clone(), place.clone()))
            .collect();
        unused.sort_by(|a, b| {
            (a.1.file.as_ref(), a.1.at.line(), a.1.at.column()).cmp(&(
                b.1.file.as_ref(),
                b.1.at.line(),
                b.1.at.column(),
            ))
        });
        for (name, place) in unused {
            self.diags.warning(
                &place.file,
                place.at,
                format!("upstream `{name}` is not used by any route"),
            );
        }
    }
}

/// Parses `host:port`, `http://host:port` or `https://host:port`.
fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    let (tls, rest) = if let Some(r) = text.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = text.strip_prefix("http://") {
        (false, r)
    } else {
        (false, text)
    };
    let rest = rest.trim_end_matches('/');
    let bad = || {
        format!("invalid endpoint `{text}`: use host:port, http://host:port or https://host:port")
    };
    let authority: http::uri::Authority = rest.parse().map_err(|_| bad())?;
    if authority.port_u16().is_none() || authority.host().is_empty() || rest.contains('/') {
        return Err(bad());
    }
    Ok(Endpoint {
        tls,
        authority: rest.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use crate::upstream::def::{HealthCheck, Outlier};
    use std::time::Duration;

    fn upstream(extra: &str) -> Result<crate::upstream::def::UpstreamDef, Vec<String>> {
        let text = format!(
            "upstreams:\n  web: {{ endpoints: [\"127.0.0.1:9001\"], {extra} }}\n\
             routes:\n  - {{ name: a, to: web }}\n"
        );
        match super::super::compile_text("t.yaml", &text) {
            Ok(c) => Ok(c.config.upstreams[0].clone()),
            Err(e) => Err(e.iter().map(ToString::to_string).collect()),
        }
    }

    #[test]
    fn health_check_and_outlier_take_the_spec_defaults() {
        let u = upstream("health_check: { path: /healthz }, outlier: {}").unwrap();
        assert_eq!(
            u.health_check,
            Some(HealthCheck {
                path: "/healthz".into(),
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(1),
                unhealthy_after: 3,
                healthy_after: 2,
            })
        );
        assert_eq!(
            u.outlier,
            Some(Outlier {
                consecutive_failures: 5,
                eject_for: Duration::from_secs(30),
                max_ejected_percent: 50,
            })
        );
        let u = upstream(
            "outlier: { consecutive_failures: 2, eject_for: 1s, max_ejected_percent: 100 }",
        )
        .unwrap();
        assert_eq!(
            u.outlier,
            Some(Outlier {
                consecutive_failures: 2,
                eject_for: Duration::from_secs(1),
                max_ejected_percent: 100,
            })
        );
    }

    #[test]
    fn nonsense_thresholds_are_errors_at_their_place() {
        let cases = [
            (
                "health_check: { path: /h, unhealthy_after: 0 }",
                "`unhealthy_after` must be at least 1",
            ),
            (
                "health_check: { path: /h, healthy_after: 0 }",
                "`healthy_after` must be at least 1",
            ),
            (
                "health_check: { path: /h, interval: 0s }",
                "`interval` must be longer than zero",
            ),
            (
                "outlier: { consecutive_failures: 0 }",
                "`consecutive_failures` must be at least 1",
            ),
            (
                "outlier: { max_ejected_percent: 101 }",
                "`max_ejected_percent` must be from 0 to 100",
            ),
            (
                "health_check: { path: h }",
                "health_check path must start with `/`",
            ),
            (
                "health_check: { path: \"/a b\" }",
                "invalid health_check path `/a b`: invalid uri character",
            ),
        ];
        for (extra, want) in cases {
            let errors = upstream(extra).unwrap_err();
            assert_eq!(errors.len(), 1, "{extra}: {errors:?}");
            assert!(errors[0].starts_with("t.yaml:2:"), "{errors:?}");
            assert!(errors[0].ends_with(want), "{extra}: {errors:?}");
        }
    }
}
