//! Settings outside the routes: listeners (with their certificates, parsed
//! from the bytes read with the config), the admin listener, trusted
//! proxies, the state file and limits.

use super::Builder;
use crate::config::Source;
use crate::config::raw::{self, Spanned};
use crate::tls::{CertSet, PemFile};
use ipnet::IpNet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Settings outside the routes.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Public listeners.
    pub listeners: Vec<Listener>,
    /// The admin listener.
    pub admin: AdminSettings,
    /// Peers whose X-Forwarded-For is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Where canary and experiment state is kept across restarts.
    pub state_file: Option<PathBuf>,
    /// Where first exposures are logged (SPEC 3.1).
    pub exposure_log: Option<ExposureTarget>,
    /// Fleet mode (SPEC 11).
    pub fleet: Option<FleetSettings>,
    /// Request and connection limits.
    pub limits: Limits,
}

/// Fleet mode (the `fleet` setting, SPEC 11).
#[derive(Clone, PartialEq, Eq)]
pub struct FleetSettings {
    /// The Redis URL (`redis://` or `rediss://`).
    pub url: String,
    /// The password from `password_file`, trimmed.
    pub password: Option<String>,
    /// The fleet's name.
    pub name: String,
    /// How often a replica syncs.
    pub sync_interval: Duration,
}

impl std::fmt::Debug for FleetSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetSettings")
            .field("url", &redact(&self.url))
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("name", &self.name)
            .field("sync_interval", &self.sync_interval)
            .finish()
    }
}

/// `url` without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// Where exposure lines go (the `exposure_log` setting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExposureTarget {
    /// The file, appended to; `None` for standard output.
    pub path: Option<PathBuf>,
    /// Log `sha256(seed + id)` instead of the id.
    pub hash_ids: bool,
}

/// A public listener.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    /// The `bind` text as written (the metrics label).
    pub bind: String,
    /// The address bound.
    pub addr: SocketAddr,
    /// TLS, when the listener terminates it.
    pub tls: Option<ListenerTls>,
}

/// TLS settings of a listener; certificate paths already resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerTls {
    /// (certificate, key) files in configuration order.
    pub certificates: Vec<(PathBuf, PathBuf)>,
    /// ALPN protocols offered.
    pub alpn: Vec<String>,
    /// The certificates, parsed and checked at compile time.
    pub keys: CertSet,
}

/// The admin listener.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminSettings {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The bearer token file POSTs need, if any.
    pub token_file: Option<PathBuf>,
}

impl Default for AdminSettings {
    /// 127.0.0.1:9901, no token.
    fn default() -> Self {
        AdminSettings {
            addr: SocketAddr::from(([127, 0, 0, 1], 9901)),
            token_file: None,
        }
    }
}

/// Request and connection limits (SPEC 2, `limits`).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Request line + headers; 431 beyond.
    pub max_header_bytes: usize,
    /// Header count; 431 beyond.
    pub max_headers: usize,
    /// Body bytes read for `body_json` (and held for retries and mirrors).
    pub inspect_body_bytes: usize,
    /// Time for a request head to arrive.
    pub header_read_timeout: Duration,
    /// Time a connection may sit idle.
    pub idle_timeout: Duration,
    /// Open client connections at most.
    pub max_connections: usize,
    /// Request body bytes at most; 0 = unlimited.
    pub max_body_bytes: u64,
    /// Time in-flight requests get on shutdown.
    pub drain_timeout: Duration,
    /// Time a client may accept no response byte (while a response waits)
    /// before it is disconnected.
    pub send_timeout: Duration,
    /// Time an upgraded stream may pass no byte either way before it is
    /// closed.
    pub tunnel_idle_timeout: Duration,
    /// What becomes of request header names with `_`.
    pub underscore_headers: UnderscoreHeaders,
}

/// What becomes of request header names with `_` (`limits.underscore_headers`).
/// CGI-style backends map `X_Forwarded_For` and `X-Forwarded-For` to the same
/// variable, so a client could smuggle a value past the proxy's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnderscoreHeaders {
    /// Removed before matching and forwarding (as NGINX does).
    #[default]
    Drop,
    /// The request is answered 400.
    Reject,
    /// Kept and forwarded.
    Allow,
}

impl UnderscoreHeaders {
    /// Parses the rule-file spelling.
    pub fn parse(s: &str) -> Option<UnderscoreHeaders> {
        match s {
            "drop" => Some(UnderscoreHeaders::Drop),
            "reject" => Some(UnderscoreHeaders::Reject),
            "allow" => Some(UnderscoreHeaders::Allow),
            _ => None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 65536,
            max_headers: 100,
            inspect_body_bytes: 65536,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10000,
            max_body_bytes: 0,
            drain_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(60),
            tunnel_idle_timeout: Duration::from_secs(3600),
            underscore_headers: UnderscoreHeaders::Drop,
        }
    }
}

/// A file read with the config, as the TLS layer takes it.
fn pem<'a>(path: &'a std::path::Path, bytes: &'a Result<&'a [u8], String>) -> PemFile<'a> {
    PemFile {
        path,
        bytes: bytes.as_deref().map_err(String::as_str),
    }
}

impl Builder<'_> {
    pub(super) fn settings(&mut self) -> Settings {
        let mut s = Settings::default();
        for src in self.files() {
            let f = &src.name;
            for l in &src.doc.listen {
                if let Some(listener) = self.listener(src, l) {
                    s.listeners.push(listener);
                }
            }
            if let Some(a) = &src.doc.admin {
                if let Some(bind) = &a.value.bind
                    && let Some(addr) = self.socket_addr(f, bind)
                {
                    s.admin.addr = addr;
                }
                s.admin.token_file = a.value.token_file.as_ref().map(|t| src.resolve(&t.value));
            }
            if let Some(tp) = &src.doc.trusted_proxies {
                for net in &tp.value.0 {
                    match crate::routing::matchers::parse_cidr(net) {
                        Ok(n) => s.trusted_proxies.push(n),
                        Err(_) => self.diags.error(
                            f,
                            tp.referenced,
                            format!("invalid CIDR or address `{net}` in trusted_proxies"),
                        ),
                    }
                }
            }
            if let Some(sf) = &src.doc.state_file {
                s.state_file = Some(src.resolve(&sf.value));
            }
            if let Some(fl) = &src.doc.fleet {
                s.fleet = self.fleet(src, fl);
            }
            if let Some(e) = &src.doc.exposure_log {
                let path = &e.value.path;
                if path.value.is_empty() {
                    self.diags.error(
                        f,
                        path.referenced,
                        "exposure_log path may not be empty: give a file or `stdout`",
                    );
                }
                s.exposure_log = Some(ExposureTarget {
                    path: (path.value != "stdout").then(|| src.resolve(&path.value)),
                    hash_ids: e.value.hash_ids.as_ref().is_some_and(|h| h.value),
                });
            }
            if let Some(l) = &src.doc.limits {
                s.limits = self.limits(f, &l.value);
            }
        }
        s
    }

    /// `fleet`: a `redis://` or `rediss://` URL with a host, a readable
    /// password file, a name, a positive sync interval.
    fn fleet(&mut self, src: &Source, fl: &Spanned<raw::Fleet>) -> Option<FleetSettings> {
        let f = &src.name;
        let v = &fl.value;
        let errors = self.diags.items().len();
        let url = &v.redis;
        match url.value.split_once("://") {
            Some(("redis" | "rediss", rest)) if !rest.is_empty() && !rest.starts_with('/') => {
                if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url.value.as_str())
                {
                    self.diags.error(
                        f,
                        url.referenced,
                        format!("invalid fleet redis URL `{}`: {e}", redact(&url.value)),
                    );
                }
            }
            _ => self.diags.error(
                f,
                url.referenced,
                format!(
                    "invalid fleet redis URL `{}`: use redis://host:port/db or rediss://host:port/db",
                    redact(&url.value)
                ),
            ),
        }
        let password = v.password_file.as_ref().and_then(|p| {
            let path = src.resolve(&p.value);
            match self.loaded.files.get(&path).map(String::from_utf8_lossy) {
                Ok(text) if !text.trim().is_empty() => Some(text.trim().to_owned()),
                Ok(_) => {
                    self.diags.error(
                        f,
                        p.referenced,
                        format!("password file {} is empty", path.display()),
                    );
                    None
                }
                Err(e) => {
                    self.diags.error(
                        f,
                        p.referenced,
                        format!("cannot read password file {}: {e}", path.display()),
                    );
                    None
                }
            }
        });
        if v.name.value.is_empty() || v.name.value.contains([':', ' ', '{', '}']) {
            self.diags.error(
                f,
                v.name.referenced,
                "fleet name must be non-empty, without spaces, `:` or braces",
            );
        }
        let sync_interval = self.positive_duration(
            f,
            "sync_interval",
            v.sync_interval.as_ref(),
            Duration::from_secs(1),
        );
        (self.diags.items().len() == errors).then(|| FleetSettings {
            url: url.value.clone(),
            password,
            name: v.name.value.clone(),
            sync_interval,
        })
    }

    fn listener(&mut self, src: &Source, l: &Spanned<raw::Listen>) -> Option<Listener> {
        let addr = self.socket_addr(&src.name, &l.value.bind)?;
        let tls = l.value.tls.as_ref().map(|t| {
            if t.value.certificates.is_empty() {
                self.diags.error(
                    &src.name,
                    t.referenced,
                    "tls needs at least one certificate",
                );
            }
            ListenerTls {
                certificates: t
                    .value
                    .certificates
                    .iter()
                    .map(|c| {
                        (
                            src.resolve(&c.value.cert.value),
                            src.resolve(&c.value.key.value),
                        )
                    })
                    .collect(),
                keys: self.listener_certs(src, &t.value),
                alpn: t
                    .value
                    .alpn
                    .as_ref()
                    .map(|a| a.iter().map(|s| s.value.clone()).collect())
                    .unwrap_or_else(|| vec!["h2".into(), "http/1.1".into()]),
            }
        });
        Some(Listener {
            bind: l.value.bind.value.clone(),
            addr,
            tls,
        })
    }

    /// Parses a listener's certificates: unreadable, mismatched or expired
    /// ones are errors at their `cert:` (or `key:`) entry, ones expiring
    /// within 14 days a warning.
    fn listener_certs(&mut self, src: &Source, t: &raw::ListenTls) -> CertSet {
        let f = &src.name;
        let now = std::time::SystemTime::now();
        let mut loaded = Vec::new();
        for c in &t.certificates {
            let (cert, key) = (&c.value.cert, &c.value.key);
            let (cert_path, key_path) = (src.resolve(&cert.value), src.resolve(&key.value));
            let (cert_bytes, key_bytes) = (
                self.loaded.files.get(&cert_path),
                self.loaded.files.get(&key_path),
            );
            let parsed = crate::tls::parse_pair(
                pem(&cert_path, &cert_bytes),
                pem(&key_path, &key_bytes),
                now,
            );
            match parsed {
                Ok(l) => {
                    let left = l.expires_in(now);
                    if left < crate::tls::EXPIRY_WARNING {
                        self.diags.warning(
                            f,
                            cert.referenced,
                            format!(
                                "certificate {} expires in {} days ({})",
                                l.cert_path.display(),
                                left.as_secs().div_ceil(86400),
                                crate::clock::rfc3339(l.not_after)
                            ),
                        );
                    }
                    loaded.push(l);
                }
                Err(e) => {
                    let at = if e.is_key() {
                        key.referenced
                    } else {
                        cert.referenced
                    };
                    self.diags.error(f, at, e.to_string());
                }
            }
        }
        if let Some(alpn) = &t.alpn {
            for p in alpn {
                if !matches!(p.value.as_str(), "h2" | "http/1.1") {
                    self.diags.error(
                        f,
                        p.referenced,
                        format!("unknown ALPN protocol `{}`: use h2 or http/1.1", p.value),
                    );
                }
            }
        }
        CertSet::new(loaded)
    }

    fn socket_addr(&mut self, f: &Arc<str>, bind: &Spanned<String>) -> Option<SocketAddr> {
        match bind.value.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.diags.error(
                    f,
                    bind.referenced,
                    format!(
                        "invalid bind address `{}`: use IP:PORT, e.g. \"0.0.0.0:8080\"",
                        bind.value
                    ),
                );
                None
            }
        }
    }

    fn limits(&mut self, f: &Arc<str>, l: &raw::Limits) -> Limits {
        let d = Limits::default();
        let size = |v: &Option<Spanned<u64>>, default: usize| {
            v.as_ref()
                .map_or(default, |s| usize::try_from(s.value).unwrap_or(usize::MAX))
        };
        if let Some(m) = &l.max_header_bytes
            && m.value < 8192
        {
            self.diags
                .error(f, m.referenced, "max_header_bytes must be at least 8192");
        }
        if let Some(m) = &l.max_headers
            && m.value == 0
        {
            self.diags
                .error(f, m.referenced, "max_headers must be at least 1");
        }
        Limits {
            max_header_bytes: size(&l.max_header_bytes, d.max_header_bytes),
            max_headers: size(&l.max_headers, d.max_headers),
            inspect_body_bytes: size(&l.inspect_body_bytes, d.inspect_body_bytes),
            header_read_timeout: self.duration(
                f,
                l.header_read_timeout.as_ref(),
                d.header_read_timeout,
            ),
            idle_timeout: self.duration(f, l.idle_timeout.as_ref(), d.idle_timeout),
            max_connections: size(&l.max_connections, d.max_connections),
            max_body_bytes: l
                .max_body_bytes
                .as_ref()
                .map_or(d.max_body_bytes, |v| v.value),
            drain_timeout: self.duration(f, l.drain_timeout.as_ref(), d.drain_timeout),
            send_timeout: self.positive_duration(
                f,
                "send_timeout",
                l.send_timeout.as_ref(),
                d.send_timeout,
            ),
            tunnel_idle_timeout: self.positive_duration(
                f,
                "tunnel_idle_timeout",
                l.tunnel_idle_timeout.as_ref(),
                d.tunnel_idle_timeout,
            ),
            underscore_headers: self.underscore_headers(f, l.underscore_headers.as_ref()),
        }
    }

    fn underscore_headers(
        &mut self,
        f: &Arc<str>,
        v: Option<&Spanned<String>>,
    ) -> UnderscoreHeaders {
        let Some(v) = v else {
            return UnderscoreHeaders::default();
        };
        UnderscoreHeaders::parse(&v.value).unwrap_or_else(|| {
            self.diags.error(
                f,
                v.referenced,
                format!(
                    "unknown underscore_headers `{}`: use drop, reject or allow",
                    v.value
                ),
            );
            UnderscoreHeaders::default()
        })
    }
}
