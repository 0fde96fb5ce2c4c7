//! The rule-file schema as written by users: serde structs, no logic.
//!
//! Every struct rejects unknown keys. Values that later checks may complain
//! about are wrapped in [`Spanned`] so the complaint can name `FILE:LINE:COL`.
//! Nothing here is interpreted: `compile` turns it into the routing snapshot.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::marker::PhantomData;

pub use serde_saphyr::Spanned;

/// One rule file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub listen: Vec<Spanned<Listen>>,
    pub admin: Option<Spanned<Admin>>,
    pub trusted_proxies: Option<Spanned<OneOrMany<String>>>,
    pub state_file: Option<Spanned<String>>,
    #[serde(default)]
    pub upstreams: SpannedMap<Upstream>,
    #[serde(default)]
    pub routes: Vec<Spanned<Route>>,
    pub fallback: Option<Spanned<Fallback>>,
    #[serde(default)]
    pub experiments: SpannedMap<Experiment>,
    pub limits: Option<Spanned<Limits>>,
}

/// A public listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub bind: Spanned<String>,
    pub tls: Option<Spanned<ListenTls>>,
}

/// TLS settings of a listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenTls {
    pub certificates: Vec<Spanned<CertificatePair>>,
    pub alpn: Option<Vec<Spanned<String>>>,
}

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificatePair {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

/// The admin listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub bind: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
}

/// A named group of endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub endpoints: Vec<Spanned<String>>,
    pub balance: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub request_timeout: Option<Spanned<String>>,
    pub retries: Option<Spanned<u32>>,
    pub protocol: Option<Spanned<String>>,
    pub tls: Option<Spanned<UpstreamTls>>,
    pub health_check: Option<Spanned<HealthCheck>>,
    pub outlier: Option<Spanned<Outlier>>,
}

/// TLS toward an upstream's `https://` endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    pub ca: Option<Spanned<String>>,
    pub server_name: Option<Spanned<String>>,
}

/// Active health checking of an upstream's endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub path: Spanned<String>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub unhealthy_after: Option<Spanned<u32>>,
    pub healthy_after: Option<Spanned<u32>>,
}

/// Passive ejection of failing endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outlier {
    pub consecutive_failures: Spanned<u32>,
    pub eject_for: Spanned<String>,
}

/// One routing rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: Spanned<String>,
    #[serde(rename = "match")]
    pub matcher: Option<Box<Spanned<Match>>>,
    pub to: Option<Box<Spanned<String>>>,
    pub experiment: Option<Box<Spanned<ExperimentRef>>>,
    pub canary: Option<Box<Spanned<Canary>>>,
    pub respond: Option<Box<Spanned<Respond>>>,
    pub redirect: Option<Box<Spanned<Redirect>>>,
    pub strip_prefix: Option<Box<Spanned<String>>>,
    pub request_headers: Option<Box<Spanned<HeaderOps>>>,
    pub response_headers: Option<Box<Spanned<HeaderOps>>>,
    pub timeout: Option<Box<Spanned<String>>>,
    pub mirror: Option<Box<Spanned<Mirror>>>,
}

/// A `match` mapping: every matcher given must hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    pub host: Option<Box<Spanned<OneOrMany<String>>>>,
    pub path: Option<Box<Spanned<String>>>,
    pub path_prefix: Option<Box<Spanned<String>>>,
    pub path_regex: Option<Box<Spanned<String>>>,
    pub method: Option<Box<Spanned<OneOrMany<String>>>>,
    pub header: Option<Box<Spanned<OneOrMany<ValueTest>>>>,
    pub query: Option<Box<Spanned<OneOrMany<ValueTest>>>>,
    pub cookie: Option<Box<Spanned<OneOrMany<ValueTest>>>>,
    pub client_ip: Option<Box<Spanned<OneOrMany<String>>>>,
    pub body_json: Option<Box<Spanned<OneOrMany<ValueTest>>>>,
    pub all: Option<Vec<Spanned<Match>>>,
    pub any: Option<Vec<Spanned<Match>>>,
    pub not: Option<Box<Spanned<Match>>>,
}

/// A test on one named value (header, query parameter, cookie) or, for
/// `body_json`, on the value at a JSON pointer.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueTest {
    pub name: Option<Spanned<String>>,
    pub pointer: Option<Spanned<String>>,
    pub equals: Option<Spanned<Scalar>>,
    pub prefix: Option<Spanned<String>>,
    pub suffix: Option<Spanned<String>>,
    pub contains: Option<Spanned<String>>,
    pub regex: Option<Spanned<String>>,
    #[serde(rename = "in")]
    pub in_: Option<Spanned<Vec<Scalar>>>,
    pub present: Option<Spanned<bool>>,
    pub ignore_case: Option<Spanned<bool>>,
    pub gt: Option<Spanned<f64>>,
    pub gte: Option<Spanned<f64>>,
    pub lt: Option<Spanned<f64>>,
    pub lte: Option<Spanned<f64>>,
}

/// A YAML scalar: `equals: 1` and `equals: "1"` are both accepted; header,
/// query and cookie tests compare its text, `body_json` its JSON value.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl Scalar {
    /// The scalar as the text a header, query or cookie value would carry.
    pub fn to_text(&self) -> String {
        match self {
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Str(s) => s.clone(),
        }
    }
}

/// `experiment:` on a route: the name of a top-level experiment, or an inline
/// definition named after the route.
#[derive(Debug)]
pub enum ExperimentRef {
    Named(String),
    Inline(Box<Experiment>),
}

impl<'de> Deserialize<'de> for ExperimentRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ExperimentRef;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an experiment name or an experiment mapping")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ExperimentRef::Named(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let e = Experiment::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ExperimentRef::Inline(Box::new(e)))
            }
        }
        d.deserialize_any(V)
    }
}

/// A sticky A/B experiment.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub sticky_on: Option<Spanned<Vec<Spanned<String>>>>,
    pub issue_cookie: Option<Spanned<String>>,
    pub seed: Option<Spanned<String>>,
    pub hash_version: Option<Spanned<u32>>,
    pub coverage: Option<Spanned<f64>>,
    pub namespace: Option<Spanned<(String, f64, f64)>>,
    #[serde(rename = "match")]
    pub matcher: Option<Spanned<Match>>,
    pub allow_force: Option<Spanned<bool>>,
    pub variants: Spanned<Vec<Spanned<Variant>>>,
}

/// One arm of an experiment.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub name: Spanned<String>,
    pub weight: Spanned<f64>,
    pub to: Option<Spanned<String>>,
}

/// A canary release between a stable and a canary upstream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    pub stable: Spanned<String>,
    pub canary: Spanned<String>,
    pub weight: Option<Spanned<f64>>,
    pub steps: Option<Spanned<Vec<Spanned<CanaryStep>>>>,
    pub guard: Option<Spanned<Guard>>,
    pub on_breach: Option<Spanned<String>>,
    pub sticky_on: Option<Spanned<Vec<Spanned<String>>>>,
    pub issue_cookie: Option<Spanned<String>>,
    pub allow_force: Option<Spanned<bool>>,
}

/// One step of a progressive canary.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryStep {
    pub weight: Spanned<f64>,
    pub hold: Option<Spanned<String>>,
}

/// Automatic rollback thresholds of a canary.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    pub window: Option<Spanned<String>>,
    pub min_requests: Option<Spanned<u64>>,
    pub max_error_rate: Option<Spanned<f64>>,
    pub max_error_rate_increase: Option<Spanned<f64>>,
    pub max_p99_latency: Option<Spanned<String>>,
}

/// A fixed answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Respond {
    pub status: Spanned<u16>,
    pub body: Option<String>,
    #[serde(default)]
    pub headers: SpannedMap<Scalar>,
}

/// A redirect to a fixed location.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    pub to: Spanned<String>,
    pub status: Option<Spanned<u16>>,
}

/// Header edits: `set` replaces, `add` appends, `remove` deletes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderOps {
    #[serde(default)]
    pub set: SpannedMap<Scalar>,
    #[serde(default)]
    pub add: SpannedMap<Scalar>,
    #[serde(default)]
    pub remove: Vec<Spanned<String>>,
}

/// Shadow traffic to another upstream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    pub to: Spanned<String>,
    pub percent: Option<Spanned<f64>>,
}

/// What serves requests no route matched (and, with `failover`, 502/503s).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fallback {
    pub to: Option<Spanned<String>>,
    pub respond: Option<Spanned<Respond>>,
    pub failover: Option<Spanned<bool>>,
}

/// Connection and request limits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_header_bytes: Option<Spanned<u64>>,
    pub max_headers: Option<Spanned<u64>>,
    pub inspect_body_bytes: Option<Spanned<u64>>,
    pub header_read_timeout: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<u64>>,
    pub max_body_bytes: Option<Spanned<u64>>,
    pub drain_timeout: Option<Spanned<String>>,
}

/// A single value or a list of them (`host: a` or `host: [a, b]`).
#[derive(Debug, Clone)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(OneOrMany(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Ok(OneOrMany(vec![T::deserialize(
                    de::value::MapAccessDeserializer::new(map),
                )?]))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(OneOrMany(vec![T::deserialize(
                    de::value::StrDeserializer::<E>::new(v),
                )?]))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A mapping whose keys keep their positions, in file order.
#[derive(Debug)]
pub struct SpannedMap<V>(pub Vec<(Spanned<String>, Spanned<V>)>);

impl<V> Default for SpannedMap<V> {
    fn default() -> Self {
        SpannedMap(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for SpannedMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Vis<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Vis<V> {
            type Value = SpannedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(SpannedMap(Vec::new()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    let value = map.next_value::<Spanned<V>>()?;
                    items.push((key, value));
                }
                Ok(SpannedMap(items))
            }
        }
        d.deserialize_any(Vis(PhantomData))
    }
}
