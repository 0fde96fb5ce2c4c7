//! Routing through the real binary: every matcher kind and combinator,
//! first-match order, path normalization, and the actions, asserted on what
//! the client got and what the upstream received.

use crate::support;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use sha2::{Digest, Sha256};
use support::binary::Binary;
use support::{Mode, TestUpstream, client, send, upstream};

const RULES: &str = r#"
listen: [{ bind: "{LISTEN}" }]
admin: { bind: "{ADMIN}" }
trusted_proxies: ["127.0.0.1/32"]
limits: { inspect_body_bytes: 1024 }
upstreams:
  echo: { endpoints: ["{ECHO}"] }
routes:
  - name: users-id
    match: { path: "/users/{id}" }
    respond: { status: 200, body: users-id }
  - name: users-me
    match: { path: /users/me }
    respond: { status: 200, body: users-me }
  - name: host-exact
    match: { host: api.example.com, path_prefix: /h }
    respond: { status: 200, body: host-exact }
  - name: host-wild
    match: { host: "*.example.com", path_prefix: /h }
    respond: { status: 200, body: host-wild }
  - name: prefix
    match: { path_prefix: /pre }
    respond: { status: 200, body: prefix }
  - name: regex
    match: { path_regex: "^/re/[0-9]+$" }
    respond: { status: 200, body: regex }
  - name: method
    match: { method: [PUT, DELETE], path_prefix: /m }
    respond: { status: 200, body: method }
  - name: hdr-equals
    match: { path: /hdr, header: { name: X-T, equals: eq } }
    respond: { status: 200, body: hdr-equals }
  - name: hdr-prefix
    match: { path: /hdr, header: { name: x-t, prefix: pre- } }
    respond: { status: 200, body: hdr-prefix }
  - name: hdr-suffix
    match: { path: /hdr, header: { name: x-t, suffix: -suf } }
    respond: { status: 200, body: hdr-suffix }
  - name: hdr-contains
    match: { path: /hdr, header: { name: x-t, contains: mid } }
    respond: { status: 200, body: hdr-contains }
  - name: hdr-regex
    match: { path: /hdr, header: { name: x-t, regex: "^v[0-9]+$" } }
    respond: { status: 200, body: hdr-regex }
  - name: hdr-in
    match: { path: /hdr, header: { name: x-t, in: [one, two] } }
    respond: { status: 200, body: hdr-in }
  - name: hdr-ignore-case
    match: { path: /hdr, header: { name: x-t, equals: loud, ignore_case: true } }
    respond: { status: 200, body: hdr-ignore-case }
  - name: hdr-absent
    match: { path: /hdr, header: [{ name: x-t, present: false }, { name: x-other, present: true }] }
    respond: { status: 200, body: hdr-absent }
  - name: query
    match: { path: /q, query: { name: q, equals: "a b" } }
    respond: { status: 200, body: query }
  - name: cookie
    match: { path: /c, cookie: { name: c, in: [x, y] } }
    respond: { status: 200, body: cookie }
  - name: client-ip
    match: { path: /ip, client_ip: ["192.168.0.0/16", "2001:db8::/32"] }
    respond: { status: 200, body: client-ip }
  - name: body
    match: { method: POST, path: /b, body_json: { pointer: /order/total, gt: 100 } }
    to: echo
    response_headers: { set: { x-route: body } }
  - name: combinators
    match:
      path_prefix: /comb
      any:
        - header: { name: a, present: true }
        - query: { name: a, present: true }
      not:
        any:
          - header: { name: block, present: true }
          - all: [{ query: { name: block, present: true } }, { method: GET }]
    respond: { status: 200, body: combinators }
  - name: strip
    match: { path_prefix: /api }
    to: echo
    strip_prefix: /api
    request_headers: { set: { x-api: "1" }, add: { x-added: a }, remove: [x-drop] }
    response_headers: { set: { cache-control: no-store } }
  - name: gone
    match: { path: /gone }
    respond: { status: 410, body: "gone", headers: { content-type: text/plain } }
  - name: moved
    match: { path_prefix: /old }
    redirect: { to: "https://new.example.com/x?y=1" }
fallback:
  respond: { status: 404, body: fallback }
"#;

struct Env {
    proxy: Binary,
    echo: TestUpstream,
    http: support::Client,
}

async fn env() -> Env {
    let echo = upstream(Mode::Echo).await;
    let proxy = Binary::start(&RULES.replace("{ECHO}", &echo.addr.to_string()));
    Env {
        proxy,
        echo,
        http: client(),
    }
}

impl Env {
    /// Sends a request and returns (status, body).
    async fn send(&self, req: http::request::Builder, body: &str) -> (u16, String) {
        let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        let (parts, body) = send(&self.http, req).await;
        (
            parts.status.as_u16(),
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    /// The route (the respond body) that answered a GET with these headers.
    async fn route(&self, path: &str, headers: &[(&str, &str)]) -> String {
        let mut req = Request::get(format!("http://{}{path}", self.proxy.addr));
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        self.send(req, "").await.1
    }
}

#[tokio::test]
async fn first_route_in_file_order_wins_over_a_more_specific_template() {
    let e = env().await;
    assert_eq!(e.route("/users/me", &[]).await, "users-id");
    assert_eq!(e.route("/users/42", &[]).await, "users-id");
    assert_eq!(e.route("/users", &[]).await, "fallback");
}

#[tokio::test]
async fn host_exact_wildcard_port_and_case() {
    let e = env().await;
    assert_eq!(
        e.route("/h", &[("host", "api.example.com")]).await,
        "host-exact"
    );
    assert_eq!(
        e.route("/h", &[("host", "API.Example.COM:8080")]).await,
        "host-exact"
    );
    assert_eq!(
        e.route("/h", &[("host", "b.example.com")]).await,
        "host-wild"
    );
    assert_eq!(
        e.route("/h", &[("host", "a.b.example.com")]).await,
        "host-wild"
    );
    assert_eq!(e.route("/h", &[("host", "example.com")]).await, "fallback");
}

#[tokio::test]
async fn path_prefix_is_segment_aware_and_regex_finds() {
    let e = env().await;
    assert_eq!(e.route("/pre", &[]).await, "prefix");
    assert_eq!(e.route("/pre/x/y", &[]).await, "prefix");
    assert_eq!(e.route("/prefix", &[]).await, "fallback");
    assert_eq!(e.route("/re/123", &[]).await, "regex");
    assert_eq!(e.route("/re/12a", &[]).await, "fallback");
}

#[tokio::test]
async fn paths_are_normalized_before_matching_and_climbing_is_400() {
    let e = env().await;
    assert_eq!(e.route("/pre/../users/me", &[]).await, "users-id");
    assert_eq!(e.route("//pre//x", &[]).await, "prefix");
    assert_eq!(e.route("/%70re/x", &[]).await, "prefix");
    let (status, _) = e
        .send(Request::get(format!("http://{}/../etc", e.proxy.addr)), "")
        .await;
    assert_eq!(status, 400);
    // The forwarded path is the normalized one.
    e.send(
        Request::get(format!("http://{}/api/./v1//x/../y?k=v", e.proxy.addr)),
        "",
    )
    .await;
    assert_eq!(e.echo.last().uri, "/v1/y?k=v");
}

#[tokio::test]
async fn method_matcher() {
    let e = env().await;
    let put = e
        .send(Request::put(format!("http://{}/m", e.proxy.addr)), "")
        .await;
    assert_eq!(put.1, "method");
    assert_eq!(e.route("/m", &[]).await, "fallback");
}

#[tokio::test]
async fn header_value_tests() {
    let e = env().await;
    let cases = [
        ("eq", "hdr-equals"),
        ("pre-x", "hdr-prefix"),
        ("x-suf", "hdr-suffix"),
        ("amidb", "hdr-contains"),
        ("v12", "hdr-regex"),
        ("two", "hdr-in"),
        ("LoUd", "hdr-ignore-case"),
        ("EQ", "fallback"),
        ("nothing", "fallback"),
    ];
    for (value, want) in cases {
        assert_eq!(
            e.route("/hdr", &[("x-t", value)]).await,
            want,
            "x-t: {value}"
        );
    }
    assert_eq!(e.route("/hdr", &[("x-other", "1")]).await, "hdr-absent");
    assert_eq!(e.route("/hdr", &[]).await, "fallback");
    // A repeated header passes when any one value passes.
    assert_eq!(
        e.route("/hdr", &[("x-t", "zzz"), ("x-t", "one")]).await,
        "hdr-in"
    );
}

#[tokio::test]
async fn query_values_are_decoded() {
    let e = env().await;
    assert_eq!(e.route("/q?q=a+b", &[]).await, "query");
    assert_eq!(e.route("/q?x=1&q=a%20b", &[]).await, "query");
    assert_eq!(e.route("/q?q=ab", &[]).await, "fallback");
}

#[tokio::test]
async fn cookie_values_across_headers() {
    let e = env().await;
    assert_eq!(e.route("/c", &[("cookie", "a=1; c=y")]).await, "cookie");
    // Two Cookie lines (as HTTP/2 clients send them), over a raw socket.
    let raw = support::raw(
        e.proxy.addr,
        b"GET /c HTTP/1.1\r\nhost: x\r\ncookie: a=1\r\ncookie: c=x\r\nconnection: close\r\n\r\n",
        std::time::Duration::from_secs(2),
    )
    .await;
    assert!(raw.ends_with("cookie"), "{raw}");
    assert_eq!(e.route("/c", &[("cookie", "c=z")]).await, "fallback");
}

#[tokio::test]
async fn client_ip_comes_from_a_trusted_peer_s_forwarded_for() {
    let e = env().await;
    // The peer (127.0.0.1) is trusted: the right-most untrusted address wins.
    assert_eq!(
        e.route("/ip", &[("x-forwarded-for", "192.168.1.5")]).await,
        "client-ip"
    );
    assert_eq!(
        e.route("/ip", &[("x-forwarded-for", "192.168.1.5, 10.1.1.1")])
            .await,
        "fallback"
    );
    assert_eq!(
        e.route("/ip", &[("x-forwarded-for", "2001:db8::1")]).await,
        "client-ip"
    );
    assert_eq!(e.route("/ip", &[]).await, "fallback");
}

#[tokio::test]
async fn body_json_routes_and_the_body_is_forwarded_unchanged() {
    let e = env().await;
    let url = format!("http://{}/b", e.proxy.addr);
    let big = r#"{"order": {"total": 150}}"#;
    let req = Request::post(&url).header("content-type", "application/json");
    let (status, body) = e.send(req, big).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert_eq!(e.echo.last().body, big.as_bytes());
    let small = r#"{"order": {"total": 50}}"#;
    assert_eq!(e.send(Request::post(&url), small).await.1, "fallback");
    assert_eq!(e.send(Request::post(&url), "not json").await.1, "fallback");
}

#[tokio::test]
async fn a_body_over_inspect_bytes_is_not_inspected_but_forwarded_whole() {
    let e = env().await;
    // A matching JSON body padded past inspect_body_bytes (1024): body_json
    // is false, so this goes to the fallback.
    let padded = format!(
        r#"{{"order": {{"total": 150}}, "pad": "{}"}}"#,
        "x".repeat(4000)
    );
    let url = format!("http://{}/b", e.proxy.addr);
    assert_eq!(e.send(Request::post(&url), &padded).await.1, "fallback");
    // Forwarded through a route, a large body arrives byte-identical.
    let big: String = (0..200_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let url = format!("http://{}/api/upload", e.proxy.addr);
    let (status, _) = e.send(Request::post(&url), &big).await;
    assert_eq!(status, 200);
    let got = e.echo.last().body;
    assert_eq!(Sha256::digest(&got), Sha256::digest(big.as_bytes()));
}

#[tokio::test]
async fn all_any_not_nest() {
    let e = env().await;
    assert_eq!(e.route("/comb", &[("a", "1")]).await, "combinators");
    assert_eq!(e.route("/comb?a=1", &[]).await, "combinators");
    assert_eq!(e.route("/comb", &[]).await, "fallback");
    assert_eq!(
        e.route("/comb", &[("a", "1"), ("block", "1")]).await,
        "fallback"
    );
    assert_eq!(e.route("/comb?a=1&block=1", &[]).await, "fallback");
    // `all` under `not` needs GET: a POST with ?block passes.
    let url = format!("http://{}/comb?a=1&block=1", e.proxy.addr);
    assert_eq!(e.send(Request::post(&url), "").await.1, "combinators");
}

#[tokio::test]
async fn forwarding_actions_strip_prefix_and_header_ops() {
    let e = env().await;
    let req = Request::get(format!("http://{}/api/v1/items", e.proxy.addr))
        .header("x-drop", "secret")
        .header("x-added", "client");
    let req = req.body(Full::new(Bytes::new())).unwrap();
    let (parts, _) = send(&e.http, req).await;
    assert_eq!(parts.headers["cache-control"], "no-store");
    let seen = e.echo.last();
    assert_eq!(seen.uri, "/v1/items");
    assert_eq!(seen.headers["x-api"], "1");
    assert!(!seen.headers.contains_key("x-drop"));
    let added: Vec<_> = seen.headers.get_all("x-added").iter().collect();
    assert_eq!(added, ["client", "a"]);
    // A path equal to the prefix becomes `/`.
    e.send(Request::get(format!("http://{}/api", e.proxy.addr)), "")
        .await;
    assert_eq!(e.echo.last().uri, "/");
}

#[tokio::test]
async fn respond_and_redirect() {
    let e = env().await;
    let req = Request::get(format!("http://{}/gone", e.proxy.addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (parts, body) = send(&e.http, req).await;
    assert_eq!(parts.status, 410);
    assert_eq!(parts.headers["content-type"], "text/plain");
    assert_eq!(body, "gone");
    let req = Request::get(format!("http://{}/old/page", e.proxy.addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (parts, _) = send(&e.http, req).await;
    assert_eq!(parts.status, 302);
    assert_eq!(parts.headers["location"], "https://new.example.com/x?y=1");
}
