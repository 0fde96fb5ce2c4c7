//! The rule-file schema as written by users: serde structs, no logic.
//!
//! Every struct rejects unknown keys. Values that later checks may complain
//! about are wrapped in [`Spanned`] so the complaint can name `FILE:LINE:COL`.
//! Nothing here is interpreted: `compile` turns it into the routing snapshot.
//!
//! The same types describe themselves as a JSON Schema (`pointsman schema`,
//! [`super::schema`]): doc comments become descriptions, and keys whose
//! text `compile` accepts from a fixed set say so with `enum`, so an editor
//! flags what `check` would refuse (with `null` among them: an empty key
//! is the default, as for the loader).

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

pub use super::spanned::Spanned;

/// One rule file.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Public listeners.
    #[serde(default)]
    pub listen: Vec<Spanned<Listen>>,
    /// The admin listener (default 127.0.0.1:9901).
    pub admin: Option<Spanned<Admin>>,
    /// Peers (CIDRs or addresses) whose X-Forwarded-For is believed.
    pub trusted_proxies: Option<Spanned<OneOrMany<String>>>,
    /// Where canary state is kept across restarts.
    pub state_file: Option<Spanned<String>>,
    /// One JSON line per first exposure, for the warehouse.
    pub exposure_log: Option<Spanned<ExposureLog>>,
    /// Replicas that share canary and experiment state through Redis.
    pub fleet: Option<Spanned<Fleet>>,
    /// Named groups of endpoints.
    #[serde(default)]
    pub upstreams: SpannedMap<Upstream>,
    /// Routing rules, tried in order.
    #[serde(default)]
    pub routes: Vec<Spanned<Route>>,
    /// What serves requests no route matched.
    pub fallback: Option<Spanned<Fallback>>,
    /// Named A/B experiments.
    #[serde(default)]
    pub experiments: SpannedMap<Experiment>,
    /// Connection and request limits.
    pub limits: Option<Spanned<Limits>>,
}

/// Fleet mode (SPEC 11): replicas with the same `name` share state through
/// one Redis.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    /// `redis://host:port/db` or `rediss://` (TLS); credentials may be in it.
    pub redis: Spanned<String>,
    /// A file holding the Redis password (surrounding whitespace trimmed).
    pub password_file: Option<Spanned<String>>,
    /// The fleet's name: replicas with the same name form one fleet.
    pub name: Spanned<String>,
    /// How often a replica syncs with the store (default 1s).
    pub sync_interval: Option<Spanned<String>>,
}

/// The exposure log (SPEC 3.1).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExposureLog {
    /// A file (appended to) or `stdout`.
    pub path: Spanned<String>,
    /// Log `sha256(seed + id)` instead of the id.
    pub hash_ids: Option<Spanned<bool>>,
}

/// A public listener.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// `IP:PORT` to listen on.
    pub bind: Spanned<String>,
    /// TLS termination.
    pub tls: Option<Spanned<ListenTls>>,
}

/// TLS settings of a listener.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenTls {
    /// Certificates chosen by SNI; the first is the default.
    pub certificates: Vec<Spanned<CertificatePair>>,
    /// Protocols offered by ALPN (`h2`, `http/1.1`).
    #[schemars(extend("items" = { "enum": ["h2", "http/1.1"] }))]
    pub alpn: Option<Vec<Spanned<String>>>,
}

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificatePair {
    /// The certificate chain (PEM, leaf first).
    pub cert: Spanned<String>,
    /// The private key (PEM).
    pub key: Spanned<String>,
}

/// The admin listener.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `IP:PORT` to listen on.
    pub bind: Option<Spanned<String>>,
    /// A file holding the bearer token POSTs need.
    pub token_file: Option<Spanned<String>>,
}

/// A named group of endpoints.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// `host:port`, `http://host:port` or `https://host:port`.
    pub endpoints: Vec<Spanned<String>>,
    /// `round_robin` (default), `least_request` or `random`.
    #[schemars(extend("enum" = ["round_robin", "least_request", "random", null]))]
    pub balance: Option<Spanned<String>>,
    /// How long a connection may take to open (default 2s).
    pub connect_timeout: Option<Spanned<String>>,
    /// How long response headers may take (default 30s).
    pub request_timeout: Option<Spanned<String>>,
    /// Extra attempts on another endpoint (default 1).
    pub retries: Option<Spanned<u32>>,
    /// `http1` (default) or `h2`.
    #[schemars(extend("enum" = ["http1", "h2", null]))]
    pub protocol: Option<Spanned<String>>,
    /// TLS toward `https://` endpoints.
    pub tls: Option<Spanned<UpstreamTls>>,
    /// Active health checks.
    pub health_check: Option<Spanned<HealthCheck>>,
    /// Passive ejection of failing endpoints.
    pub outlier: Option<Spanned<Outlier>>,
}

/// TLS toward an upstream's `https://` endpoints.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// The CA bundle verifying the endpoints (default: Mozilla roots).
    pub ca: Option<Spanned<String>>,
    /// The name verified and sent as SNI (default: the endpoint host).
    pub server_name: Option<Spanned<String>>,
}

/// Active health checking of an upstream's endpoints.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// The path probed with `GET`.
    pub path: Spanned<String>,
    /// Time between probes of one endpoint (default 5s).
    pub interval: Option<Spanned<String>>,
    /// How long a probe may take (default 1s).
    pub timeout: Option<Spanned<String>>,
    /// Failures in a row that make an endpoint unhealthy (default 3).
    pub unhealthy_after: Option<Spanned<u32>>,
    /// Passes in a row that make it healthy again (default 2).
    pub healthy_after: Option<Spanned<u32>>,
}

/// Passive ejection of failing endpoints.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Outlier {
    /// Upstream faults in a row that eject an endpoint (default 5).
    pub consecutive_failures: Option<Spanned<u32>>,
    /// How long the first ejection lasts (default 30s).
    pub eject_for: Option<Spanned<String>>,
    /// The most endpoints ejected at once, in percent (default 50; one
    /// may always be).
    pub max_ejected_percent: Option<Spanned<u32>>,
}

/// One routing rule.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The unique name (metrics, admin API, forcing).
    pub name: Spanned<String>,
    /// Which requests the route takes (default: all).
    #[serde(rename = "match")]
    pub matcher: Option<Box<Spanned<Match>>>,
    /// The upstream requests go to.
    pub to: Option<Box<Spanned<String>>>,
    /// An experiment splitting the route's requests.
    pub experiment: Option<Box<Spanned<ExperimentRef>>>,
    /// A canary release between two upstreams.
    pub canary: Option<Box<Spanned<Canary>>>,
    /// A fixed answer.
    pub respond: Option<Box<Spanned<Respond>>>,
    /// A redirect answer.
    pub redirect: Option<Box<Spanned<Redirect>>>,
    /// A path prefix removed before forwarding.
    pub strip_prefix: Option<Box<Spanned<String>>>,
    /// Edits of the upstream request's headers.
    pub request_headers: Option<Box<Spanned<HeaderOps>>>,
    /// Edits of the response's headers.
    pub response_headers: Option<Box<Spanned<HeaderOps>>>,
    /// Overrides the upstream's `request_timeout`.
    pub timeout: Option<Box<Spanned<String>>>,
    /// A copy of a share of the requests to another upstream.
    pub mirror: Option<Box<Spanned<Mirror>>>,
}

/// A `match` mapping: every matcher given must hold.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Host names or `*.suffix` wildcards.
    pub host: Option<Box<Spanned<OneOrMany<String>>>>,
    /// A path template (`/users/{id}`, `/static/{*rest}`).
    pub path: Option<Box<Spanned<String>>>,
    /// A segment-aware path prefix.
    pub path_prefix: Option<Box<Spanned<String>>>,
    /// A regex found in the path.
    pub path_regex: Option<Box<Spanned<String>>>,
    /// Methods.
    pub method: Option<Box<Spanned<OneOrMany<String>>>>,
    /// Tests on headers.
    pub header: Option<Box<Spanned<OneOrMany<ValueTest>>>>,
    /// Tests on decoded query parameters.
    pub query: Option<Box<Spanned<OneOrMany<ValueTest>>>>,
    /// Tests on cookies.
    pub cookie: Option<Box<Spanned<OneOrMany<ValueTest>>>>,
    /// CIDRs the client address is in.
    pub client_ip: Option<Box<Spanned<OneOrMany<String>>>>,
    /// Tests on the JSON body at RFC 6901 pointers.
    pub body_json: Option<Box<Spanned<OneOrMany<ValueTest>>>>,
    /// Every mapping holds.
    pub all: Option<Vec<Spanned<Match>>>,
    /// At least one mapping holds.
    pub any: Option<Vec<Spanned<Match>>>,
    /// The mapping does not hold.
    pub not: Option<Box<Spanned<Match>>>,
}

/// A test on one named value (header, query parameter, cookie) or, for
/// `body_json`, on the value at a JSON pointer.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValueTest {
    /// The header, query parameter or cookie tested.
    pub name: Option<Spanned<String>>,
    /// The RFC 6901 pointer (`body_json`).
    pub pointer: Option<Spanned<String>>,
    /// The value equals this.
    pub equals: Option<Spanned<Scalar>>,
    /// The value starts with this.
    pub prefix: Option<Spanned<String>>,
    /// The value ends with this.
    pub suffix: Option<Spanned<String>>,
    /// The value contains this.
    pub contains: Option<Spanned<String>>,
    /// The regex finds a match in the value.
    pub regex: Option<Spanned<String>>,
    /// The value is one of these.
    #[serde(rename = "in")]
    pub in_: Option<Spanned<Vec<Scalar>>>,
    /// The value is present (or absent).
    pub present: Option<Spanned<bool>>,
    /// Compare without case.
    pub ignore_case: Option<Spanned<bool>>,
    /// The number is greater than this.
    pub gt: Option<Spanned<f64>>,
    /// The number is at least this.
    pub gte: Option<Spanned<f64>>,
    /// The number is less than this.
    pub lt: Option<Spanned<f64>>,
    /// The number is at most this.
    pub lte: Option<Spanned<f64>>,
}

/// A YAML scalar: `equals: 1` and `equals: "1"` are both accepted; header,
/// query and cookie tests compare its text, `body_json` its JSON value.
#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(untagged)]
pub enum Scalar {
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// Text.
    Str(String),
}

/// Read as the YAML crate types it, without serde's untagged trial and
/// error (an error value built for each variant that does not fit: about
/// 5 % of a large file's parse).
impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a boolean, a number or text")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                // As the untagged form read it: an integer when it fits.
                Ok(i64::try_from(v).map_or(Scalar::Float(v as f64), Scalar::Int))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
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
    /// The name of a top-level experiment.
    Named(String),
    /// A definition named after the route.
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

impl JsonSchema for ExperimentRef {
    fn schema_name() -> Cow<'static, str> {
        "ExperimentRef".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let inline = generator.subschema_for::<Experiment>();
        json_schema!({
            "description": "The name of a top-level experiment, or an inline definition named after the route.",
            "anyOf": [{ "type": "string" }, inline]
        })
    }
}

/// A sticky A/B experiment.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Where the sticky id comes from (`header:NAME`, `cookie:NAME`, `query:NAME`, `ip`).
    pub sticky_on: Option<Spanned<Vec<Spanned<String>>>>,
    /// A cookie minted when no id is present.
    pub issue_cookie: Option<Spanned<String>>,
    /// The hash seed (default: the name).
    pub seed: Option<Spanned<String>>,
    /// GrowthBook hash version, 1 or 2 (default 2).
    #[schemars(extend("enum" = [1, 2, "1", "2", null]))]
    pub hash_version: Option<Spanned<u32>>,
    /// Share of eligible users enrolled, 0–1 (default 1).
    pub coverage: Option<Spanned<f64>>,
    /// `[name, start, end]`: enrolled only inside this slice.
    pub namespace: Option<Spanned<(String, f64, f64)>>,
    /// Targeting: who is eligible (default: everyone).
    #[serde(rename = "match")]
    pub matcher: Option<Spanned<Match>>,
    /// Honour `x-pointsman-force` / `pm_force`.
    pub allow_force: Option<Spanned<bool>>,
    /// Tell the client its variant in a response header.
    pub expose_variant: Option<Spanned<bool>>,
    /// The arms, in order.
    pub variants: Spanned<Vec<Spanned<Variant>>>,
}

/// One arm of an experiment.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// The unique name (metrics, admin API, forcing).
    pub name: Spanned<String>,
    /// The relative weight.
    pub weight: Spanned<f64>,
    /// The upstream of this variant (default: the route's `to`).
    pub to: Option<Spanned<String>>,
}

/// A canary release between a stable and a canary upstream.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    /// The stable upstream.
    pub stable: Spanned<String>,
    /// The canary upstream.
    pub canary: Spanned<String>,
    /// A fixed percent on the canary.
    pub weight: Option<Spanned<f64>>,
    /// A progression of weights.
    pub steps: Option<Spanned<Vec<Spanned<CanaryStep>>>>,
    /// Automatic rollback thresholds.
    pub guard: Option<Spanned<Guard>>,
    /// `rollback` (default) or `pause`.
    #[schemars(extend("enum" = ["rollback", "pause", null]))]
    pub on_breach: Option<Spanned<String>>,
    /// Where the sticky id comes from (`header:NAME`, `cookie:NAME`, `query:NAME`, `ip`).
    pub sticky_on: Option<Spanned<Vec<Spanned<String>>>>,
    /// A cookie minted when no id is present.
    pub issue_cookie: Option<Spanned<String>>,
    /// Honour `x-pointsman-force` / `pm_force`.
    pub allow_force: Option<Spanned<bool>>,
    /// Tell the client its arm in a response header.
    pub expose_variant: Option<Spanned<bool>>,
}

/// One step of a progressive canary.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryStep {
    /// The relative weight.
    pub weight: Spanned<f64>,
    /// How long the step lasts (every step but the last).
    pub hold: Option<Spanned<String>>,
}

/// Automatic rollback thresholds of a canary.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    /// The window judged (default 1m).
    pub window: Option<Spanned<String>>,
    /// Fewer canary requests in the window are not judged (default 100).
    pub min_requests: Option<Spanned<u64>>,
    /// Highest canary error rate.
    pub max_error_rate: Option<Spanned<f64>>,
    /// Highest canary error rate above stable's.
    pub max_error_rate_increase: Option<Spanned<f64>>,
    /// Highest canary p99 latency.
    pub max_p99_latency: Option<Spanned<String>>,
}

/// A fixed answer.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Respond {
    /// The status code.
    pub status: Spanned<u16>,
    /// The body.
    pub body: Option<String>,
    /// Extra headers.
    #[serde(default)]
    pub headers: SpannedMap<Scalar>,
}

/// A redirect to a fixed location.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// The target.
    pub to: Spanned<String>,
    /// A 3xx status (default 302).
    pub status: Option<Spanned<u16>>,
}

/// Header edits: `set` replaces, `add` appends, `remove` deletes.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderOps {
    /// Headers replaced (or added).
    #[serde(default)]
    pub set: SpannedMap<Scalar>,
    /// Headers appended.
    #[serde(default)]
    pub add: SpannedMap<Scalar>,
    /// Headers removed.
    #[serde(default)]
    pub remove: Vec<Spanned<String>>,
}

/// Shadow traffic to another upstream.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// The target.
    pub to: Spanned<String>,
    /// Share of the route's requests, 0–100 (default 100).
    pub percent: Option<Spanned<f64>>,
}

/// What serves requests no route matched (and, with `failover`, 502/503s).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fallback {
    /// The upstream of this variant (default: the route's `to`).
    pub to: Option<Spanned<String>>,
    /// A fixed answer.
    pub respond: Option<Spanned<Respond>>,
    /// Also serve requests whose upstream is down (502/503).
    pub failover: Option<Spanned<bool>>,
}

/// Connection and request limits.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Request line + headers; 431 beyond (default 65536).
    pub max_header_bytes: Option<Spanned<u64>>,
    /// Header count; 431 beyond (default 100).
    pub max_headers: Option<Spanned<u64>>,
    /// Body bytes read for `body_json` (default 65536).
    pub inspect_body_bytes: Option<Spanned<u64>>,
    /// Time for a request head to arrive (default 10s).
    pub header_read_timeout: Option<Spanned<String>>,
    /// Time a connection may sit idle (default 60s).
    pub idle_timeout: Option<Spanned<String>>,
    /// Open client connections at most (default 10000).
    pub max_connections: Option<Spanned<u64>>,
    /// Request body bytes at most, 0 = unlimited (default 0).
    pub max_body_bytes: Option<Spanned<u64>>,
    /// Time in-flight requests get on shutdown (default 30s).
    pub drain_timeout: Option<Spanned<String>>,
    /// Time a client may accept no response byte before it is disconnected
    /// (default 60s).
    pub send_timeout: Option<Spanned<String>>,
    /// Time an upgraded stream (WebSocket) may pass no byte either way
    /// before it is closed (default 1h).
    pub tunnel_idle_timeout: Option<Spanned<String>>,
    /// Request header names with `_`: `drop` (default: removed before
    /// matching and forwarding), `reject` (400) or `allow`.
    #[schemars(extend("enum" = ["drop", "reject", "allow", null]))]
    pub underscore_headers: Option<Spanned<String>>,
}

/// A single value or a list of them (`host: a` or `host: [a, b]`).
#[derive(Debug, Clone)]
pub struct OneOrMany<T>(
    /// The values.
    pub Vec<T>,
);

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

impl<T: JsonSchema> JsonSchema for OneOrMany<T> {
    fn schema_name() -> Cow<'static, str> {
        format!("OneOrMany_{}", T::schema_name()).into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let one = generator.subschema_for::<T>();
        json_schema!({
            "anyOf": [one, { "type": "array", "items": one }]
        })
    }
}

/// A mapping whose keys keep their positions, in file order.
#[derive(Debug)]
pub struct SpannedMap<V>(
    /// Keys and values in file order.
    pub Vec<(Spanned<String>, Spanned<V>)>,
);

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

/// A mapping of names to values; an empty key (`upstreams:`) is no entries.
impl<V: JsonSchema> JsonSchema for SpannedMap<V> {
    fn schema_name() -> Cow<'static, str> {
        format!("Map_of_{}", V::schema_name()).into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let value = generator.subschema_for::<V>();
        json_schema!({
            "type": ["object", "null"],
            "additionalProperties": value
        })
    }
}
