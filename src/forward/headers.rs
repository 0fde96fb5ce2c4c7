//! Header rewriting toward the upstream and back (SPEC 5).

use crate::compile::HeaderOps;
use crate::split::hash::fnv1a32;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use std::net::IpAddr;

use super::added::{AddedFields, Present, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
pub use super::added::{X_POINTSMAN_VARIANT, X_REQUEST_ID};

/// The error token header on proxy-generated errors.
pub const X_POINTSMAN_ERROR: HeaderName = HeaderName::from_static("x-pointsman-error");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");
const PREFIX: &str = "x-pointsman-";
const FORCE: &str = "x-pointsman-force";

/// Whether the request asks for a protocol upgrade (`Connection: upgrade`
/// plus an `Upgrade` header), e.g. WebSocket. `Upgrade: h2c` is not one:
/// such a request is served as HTTP/1.1 (SPEC 5), its `Upgrade` and
/// `HTTP2-Settings` removed like any hop-by-hop header.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"h2c"))
        && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers: every header `Connection` names, then
/// Connection, Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding,
/// HTTP2-Settings and Upgrade. With `upgrade`, `Upgrade` is kept and
/// `Connection` becomes exactly `upgrade`. With `keep_te_trailers`, a `te:
/// trailers` survives (for h2 upstreams, gRPC) and the answer tells whether
/// it did. `Host` is never removed, whatever Connection names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool, keep_te_trailers: bool) -> bool {
    // One scan of the keys finds which fixed hop-by-hop names are present,
    // so only those are removed: a `remove` of an absent name still hashes
    // it, and most messages carry none or only `Connection: keep-alive`.
    // The same scan tells whether `Connection` names other headers: nearly
    // every HTTP/1.1 peer sends only `keep-alive` or `close`.
    let mut present = 0u8;
    let mut connection_names_others = false;
    for (name, value) in headers.iter() {
        let bit = hop_by_hop_bit(name.as_str());
        present |= bit;
        if bit == CONNECTION_BIT {
            connection_names_others |= !names_only_itself(value);
        }
    }
    if present == 0 && !upgrade {
        return false;
    }
    if connection_names_others {
        // Names the fixed list already removes (and `close`) need no lookup.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .filter(|n| *n != header::HOST && !HOP_BY_HOP.contains(n))
            .filter(|n| !(upgrade && *n == header::UPGRADE))
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    let te_trailers = keep_te_trailers
        && present & TE_BIT != 0
        && headers
            .get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if present & UPGRADE_BIT != 0 {
        headers.remove(header::UPGRADE);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    te_trailers
}

/// Whether a `Connection` value only says `keep-alive` or `close`, so it
/// names no other header to remove.
fn names_only_itself(value: &HeaderValue) -> bool {
    let v = value.as_bytes();
    v.eq_ignore_ascii_case(b"keep-alive") || v.eq_ignore_ascii_case(b"close")
}

/// The fixed hop-by-hop headers (RFC 9110 7.6.1, and RFC 7540 3.2.1's
/// `HTTP2-Settings` of an `Upgrade: h2c`), `Upgrade` aside.
/// A `static`, not a `const`: each use of a `const` array of `HeaderName`s
/// builds and drops a fresh copy.
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    // Connection-specific by definition (RFC 7540 3.2.1): an `Upgrade: h2c`
    // request is served as HTTP/1.1 and neither header is forwarded
    // (SPEC 5), whether or not `Connection` names it.
    HTTP2_SETTINGS,
];
/// Bits of `present` in [`strip_hop_by_hop`]: one per [`HOP_BY_HOP`] entry,
/// then `Upgrade`.
const CONNECTION_BIT: u8 = 1 << 0;
const TE_BIT: u8 = 1 << 3;
const UPGRADE_BIT: u8 = 1 << 7;

/// The bit of `name` (lowercase, as every `HeaderName` is) in
/// [`strip_hop_by_hop`]'s `present`, 0 for a name that is not hop-by-hop.
/// Text comparisons, mostly of lengths alone: cheaper than comparing
/// `HeaderName`s, on every field of every message.
fn hop_by_hop_bit(name: &str) -> u8 {
    match name {
        "connection" => CONNECTION_BIT,
        "keep-alive" => 1 << 1,
        "proxy-connection" => 1 << 2,
        "te" => TE_BIT,
        "trailer" => 1 << 4,
        "transfer-encoding" => 1 << 5,
        "http2-settings" => 1 << 6,
        "upgrade" => UPGRADE_BIT,
        _ => 0,
    }
}

/// Removes client-sent `x-pointsman-*` headers other than
/// `x-pointsman-force`, and tells, from the same scan of the names, which
/// of the fields the proxy sets the request carries (so that absent ones
/// are not looked up).
pub fn strip_internal(headers: &mut HeaderMap) -> Present {
    let mut present = Present::default();
    // Allocates only when there is one to remove.
    let mut internal: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        let text = name.as_str();
        if !text.starts_with(PREFIX) {
            present.note(text);
        } else if text != FORCE {
            internal.push(name.clone());
        }
    }
    // Skipped when empty: consuming even an empty `Vec` runs its
    // iterator's drop, on every request.
    if !internal.is_empty() {
        for name in internal {
            headers.remove(name);
        }
    }
    present
}

/// Whether `ip` is inside one of the trusted networks.
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|n| n.contains(&ip))
}

/// The client address (SPEC 5): the TCP peer, unless the peer is trusted;
/// then the right-most X-Forwarded-For address that is not trusted (the
/// left-most one if all are). Parsing stops at the first unreadable entry.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let values: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let mut candidate = peer;
    for entry in values.iter().rev().flat_map(|v| v.rsplit(',')) {
        let Ok(ip) = entry.trim().parse::<IpAddr>() else {
            break;
        };
        candidate = ip.to_canonical();
        if !is_trusted(candidate, trusted) {
            return candidate;
        }
    }
    candidate
}

/// `ip` as an X-Forwarded-For entry (an IPv4-mapped IPv6 address as
/// IPv4).
pub fn forwarded_for_entry(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_canonical().to_string())
        .unwrap_or(HeaderValue::from_static("unknown"))
}

/// Sets the forwarding fields in `added`: X-Forwarded-For (`peer`, the
/// client's [`forwarded_for_entry`], after the entries received),
/// X-Forwarded-Proto and X-Forwarded-Host (kept from trusted peers, else
/// replaced; the host as received, port included) and `Via`. Received
/// values that are replaced are removed from `headers`; `present` says
/// which there are.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    present: Present,
    added: &mut AddedFields,
    peer: &HeaderValue,
    peer_trusted: bool,
    proto: &'static str,
    host: Option<&HeaderValue>,
) {
    if !present.forwarded_for {
        added.set_forwarded_for(peer.clone());
    } else if let Ok(v) = joined_forwarded_for(headers, peer) {
        headers.remove(X_FORWARDED_FOR);
        added.set_forwarded_for(v);
    }
    if !(peer_trusted && present.forwarded_proto) {
        if present.forwarded_proto {
            headers.remove(X_FORWARDED_PROTO);
        }
        added.set_forwarded_proto(HeaderValue::from_static(proto));
    }
    if !(peer_trusted && present.forwarded_host) {
        if present.forwarded_host {
            headers.remove(X_FORWARDED_HOST);
        }
        if let Some(v) = host.filter(|v| !v.is_empty()) {
            added.set_forwarded_host(v.clone());
        }
    }
    added.set_via();
}

/// The received X-Forwarded-For entries (blank ones skipped) with `peer`
/// after them, as one value.
fn joined_forwarded_for(
    headers: &HeaderMap,
    peer: &HeaderValue,
) -> Result<HeaderValue, header::InvalidHeaderValue> {
    let mut joined = String::new();
    for v in headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
    {
        joined.push_str(v.trim());
        joined.push_str(", ");
    }
    if joined.is_empty() {
        return Ok(peer.clone());
    }
    joined.push_str(peer.to_str().unwrap_or_default());
    HeaderValue::from_str(&joined)
}

/// Applies route header edits in order: remove, set, add.
pub fn apply_ops(headers: &mut HeaderMap, ops: &HeaderOps) {
    for name in &ops.remove {
        headers.remove(name);
    }
    for (name, value) in &ops.set {
        headers.insert(name.clone(), value.clone());
    }
    for (name, value) in &ops.add {
        headers.append(name.clone(), value.clone());
    }
}

/// Joins several `Cookie` fields into one line with `; ` (RFC 9113 8.2.3),
/// for an HTTP/2 request on its way to an HTTP/1.1 upstream, which may read
/// only one. Allocates only when there is more than one field.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut fields = headers.get_all(header::COOKIE).iter();
    if fields.next().is_none() || fields.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for v in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    // Made of valid field values and `; `: always a valid value.
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// The trailer fields a gRPC response ends with.
const GRPC_TRAILERS: HeaderValue =
    HeaderValue::from_static("grpc-status, grpc-message, grpc-status-details-bin");

/// Declares the response's trailers for an HTTP/1.1 client that accepts
/// them (`TE: trailers`): a chunked HTTP/1.1 message carries only the
/// trailer fields its `Trailer` header names. `declared` is the upstream's
/// own `Trailer` (removed as hop-by-hop meanwhile); a gRPC response also
/// declares gRPC's status trailers, which HTTP/2 upstreams never announce.
pub fn declare_trailers(headers: &mut HeaderMap, declared: Option<HeaderValue>, grpc: bool) {
    if let Some(v) = declared {
        headers.append(header::TRAILER, v);
    }
    if grpc {
        headers.append(header::TRAILER, GRPC_TRAILERS);
    }
}

/// The request id: the client's when usable (1–200 visible ASCII bytes),
/// else 32 random hex digits. Marked [`never_indexed`].
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 200 && b.iter().all(|c| c.is_ascii_graphic()) {
            return never_indexed(v.clone());
        }
    }
    // Hex into a stack buffer: `format!` cost ~1,000 instructions here.
    let mut id = [0u8; 32];
    match hex::encode_to_slice(fresh_id().to_be_bytes(), &mut id) {
        Ok(()) => HeaderValue::from_bytes(&id).map_or(HeaderValue::from_static("0"), never_indexed),
        Err(_) => HeaderValue::from_static("0"),
    }
}

/// `v`, to be sent over HTTP/2 as a literal "never indexed" (RFC 7541
/// 6.2.3) rather than added to the connection's HPACK table. For a value
/// that differs in every message, such as a request id: indexed, each one
/// took a table entry no later message could use, evicting the entries
/// that could (the upstream's `server`, `content-type`), and the h2
/// encoder walked every earlier id of the same name looking for a match:
/// 2,500 instructions a response more (callgrind, `H2=1
/// benches/callgrind.sh`).
pub fn never_indexed(mut v: HeaderValue) -> HeaderValue {
    v.set_sensitive(true);
    v
}

thread_local! {
    /// Each thread's request-id generator state, seeded from the OS.
    static ID_STATE: std::cell::Cell<u64> = std::cell::Cell::new(rand::random());
}

/// 128 bits for a request id: two steps of wyrand on a per-thread state
/// seeded from the OS (ids need to be unique, not secret; the thread's
/// ChaCha generator cost several hundred instructions a request).
fn fresh_id() -> u128 {
    ID_STATE.with(|s| {
        let mut state = s.get();
        let mut next = || {
            state = state.wrapping_add(0xa076_1d64_78bd_642f);
            let t = u128::from(state) * u128::from(state ^ 0xe703_7ed1_a0b4_28db);
            // Folding the 128-bit product to 64 bits (wyrand's mix).
            ((t >> 64) as u64) ^ (t as u64)
        };
        let id = (u128::from(next()) << 64) | u128::from(next());
        s.set(state);
        id
    })
}

/// Whether a request id falls inside `percent` (0–100) of all ids; stable
/// for a given id (FNV-1a), so a mirror share is reproducible.
pub fn id_in_share(id: &HeaderValue, percent: f64) -> bool {
    if percent >= 100.0 {
        return true;
    }
    if percent <= 0.0 {
        return false;
    }
    let h = fnv1a32(&[id.to_str().unwrap_or("")]);
    f64::from(h % 10_000) < percent * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut n: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        n.sort_unstable();
        n
    }

    #[test]
    fn hop_by_hop_bits_follow_the_list() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_bit(name.as_str()), 1 << i, "{name}");
        }
        assert_eq!(hop_by_hop_bit(header::UPGRADE.as_str()), UPGRADE_BIT);
        for other in ["host", "content-length", "via", "tee", "connections"] {
            assert_eq!(hop_by_hop_bit(other), 0, "{other}");
        }
    }

    #[test]
    fn generated_request_ids_are_32_hex_digits_and_differ() {
        let ids: std::collections::HashSet<HeaderValue> =
            (0..1000).map(|_| request_id(&HeaderMap::new())).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 32);
            assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit));
            assert!(id.is_sensitive(), "never indexed over HTTP/2");
        }
        let mut client = HeaderMap::new();
        client.insert(X_REQUEST_ID, HeaderValue::from_static("from-the-client"));
        let id = request_id(&client);
        assert_eq!(id, "from-the-client");
        assert!(id.is_sensitive(), "the client's id is never indexed either");
    }

    #[test]
    fn presence_bits_name_their_headers() {
        assert_eq!(
            HOP_BY_HOP[CONNECTION_BIT.trailing_zeros() as usize],
            header::CONNECTION
        );
        assert_eq!(HOP_BY_HOP[TE_BIT.trailing_zeros() as usize], header::TE);
        assert_eq!(UPGRADE_BIT.trailing_zeros() as usize, HOP_BY_HOP.len());
    }

    #[test]
    fn strips_fixed_and_connection_named_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret, host, Close"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("host", "a.example"),
            ("upgrade", "websocket"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers, gzip"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut h, false, false);
        assert_eq!(names(&h), ["host", "x-kept"]);

        let mut h = map(&[("connection", "keep-alive"), ("te", "gzip, trailers")]);
        strip_hop_by_hop(&mut h, false, true);
        assert_eq!(names(&h), ["te"]);
        assert_eq!(h["te"], "trailers");

        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        strip_hop_by_hop(&mut h, true, false);
        assert_eq!(names(&h), ["connection", "upgrade"]);
        assert_eq!(h["connection"], "upgrade");

        let mut h = map(&[("x-plain", "1")]);
        strip_hop_by_hop(&mut h, false, false);
        assert_eq!(names(&h), ["x-plain"]);
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn connection_named_headers_are_removed_but_not_host() {
        let mut h = map(&[
            ("connection", "x-forwarded-for, Host, keep-alive"),
            ("x-forwarded-for", "1.2.3.4"),
            ("host", "a"),
            ("te", "gzip"),
            ("upgrade", "h2c"),
        ]);
        strip_hop_by_hop(&mut h, false, false);
        assert!(h.get("x-forwarded-for").is_none());
        assert!(h.get("connection").is_none());
        assert!(h.get("te").is_none());
        assert!(h.get("upgrade").is_none());
        assert_eq!(h.get("host").unwrap(), "a");
    }

    #[test]
    fn te_trailers_kept_for_h2() {
        let mut h = map(&[("te", "trailers")]);
        assert!(strip_hop_by_hop(&mut h, false, true));
        assert_eq!(h.get("te").unwrap(), "trailers");
        let mut h = map(&[("te", "gzip")]);
        assert!(!strip_hop_by_hop(&mut h, false, true));
        assert!(h.get("te").is_none());
        let mut h = map(&[("te", "trailers")]);
        assert!(!strip_hop_by_hop(&mut h, false, false));
        assert!(h.get("te").is_none());
    }

    /// Issue 13: an `Upgrade: h2c` request is served as HTTP/1.1, and
    /// neither `Upgrade` nor `HTTP2-Settings` goes on, named by
    /// `Connection` or not.
    #[test]
    fn h2c_upgrade_is_no_upgrade_and_its_headers_go() {
        let h = map(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ]);
        assert!(!is_upgrade(&h));
        let mut stripped = h.clone();
        strip_hop_by_hop(&mut stripped, false, false);
        assert!(stripped.is_empty(), "{stripped:?}");

        let mut h = map(&[
            ("connection", "upgrade"),
            ("upgrade", "H2C"),
            ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
            ("x-kept", "1"),
        ]);
        assert!(!is_upgrade(&h));
        strip_hop_by_hop(&mut h, false, false);
        assert_eq!(names(&h), ["x-kept"]);

        let ws = map(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade(&ws));
    }

    /// Issue 13: HTTP/2 cookie crumbs reach an HTTP/1.1 upstream as one line.
    #[test]
    fn cookie_crumbs_are_joined() {
        let mut h = map(&[("cookie", "a=1"), ("cookie", "b=2; c=3"), ("cookie", "d=4")]);
        join_cookies(&mut h);
        let all: Vec<_> = h.get_all("cookie").iter().collect();
        assert_eq!(all, ["a=1; b=2; c=3; d=4"]);

        let mut one = map(&[("cookie", "a=1; b=2")]);
        join_cookies(&mut one);
        assert_eq!(one["cookie"], "a=1; b=2");
        let mut none = HeaderMap::new();
        join_cookies(&mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn trailers_are_declared_for_http1_clients() {
        let mut h = HeaderMap::new();
        declare_trailers(&mut h, Some(HeaderValue::from_static("x-sum")), true);
        let all: Vec<_> = h.get_all("trailer").iter().collect();
        assert_eq!(
            all,
            [
                "x-sum",
                "grpc-status, grpc-message, grpc-status-details-bin"
            ]
        );
        let mut h = HeaderMap::new();
        declare_trailers(&mut h, None, false);
        assert!(h.is_empty());
    }

    #[test]
    fn client_ip_walks_xff_from_the_right() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = map(&[("x-forwarded-for", "1.1.1.1, 2.2.2.2, 10.0.0.5")]);
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            client_ip(peer, &h, &trusted),
            "2.2.2.2".parse::<IpAddr>().unwrap()
        );
        let untrusted: IpAddr = "9.9.9.9".parse().unwrap();
        assert_eq!(client_ip(untrusted, &h, &trusted), untrusted);
        let all = map(&[("x-forwarded-for", "10.1.1.1, 10.2.2.2")]);
        assert_eq!(
            client_ip(peer, &all, &trusted),
            "10.1.1.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn share_is_deterministic() {
        let id = HeaderValue::from_static("abc");
        assert_eq!(id_in_share(&id, 50.0), id_in_share(&id, 50.0));
        assert!(id_in_share(&id, 100.0));
        assert!(!id_in_share(&id, 0.0));
    }
}
