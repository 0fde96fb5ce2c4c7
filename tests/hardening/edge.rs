//! Host and path confusion, header limits, hop-by-hop abuse and
//! forwarded-header spoofing (RELIABILITY rows 8, 9, 11-13; SPEC 5, 5.1).

use super::{Target, exchange};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(2);

fn get(host_lines: &str, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\n{host_lines}Connection: close\r\n\r\n")
}

/// Row 12 and SPEC 5.1: HTTP/1.1 without Host, with two Host lines, or
/// with a Host that is not `host[:port]` is 400 and never forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row12_invalid_hosts_are_400() {
    let t = Target::start("", "");
    for hosts in [
        "",
        "Host: a.example\r\nHost: b.example\r\n",
        "Host: a,b\r\n",
        "Host: a b\r\n",
        "Host: evil@good.example\r\n",
        "Host: good.example/x\r\n",
        "Host: \r\n",
        "Host: :80\r\n",
        "Host: a..b\r\n",
        "Host: a.example:http\r\n",
    ] {
        let x = exchange(t.addr(), get(hosts, "/").as_bytes(), WAIT).await;
        assert_eq!(x.status(), 400, "{hosts:?}: {}", x.text());
    }
    // Absolute-form with userinfo is no better.
    let x = exchange(
        t.addr(),
        b"GET http://evil@good.example/ HTTP/1.1\r\nHost: good.example\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(x.status(), 400, "{}", x.text());
    assert_eq!(t.backend.count(), 0, "{:?}", t.backend.requests());
}

/// Row 12 and SPEC 5.1: a trailing dot does not escape a host rule; the
/// name is matched and forwarded without it. Absolute-form beats the Host
/// header, for matching and forwarding alike; the admin address and cloud
/// metadata addresses in a Host are just names, never dialled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row12_trailing_dot_and_absolute_form_use_one_authority() {
    let t = Target::start("", "");
    for host in ["internal.example.", "INTERNAL.example.:8080"] {
        let x = exchange(
            t.addr(),
            get(&format!("Host: {host}\r\n"), "/").as_bytes(),
            WAIT,
        )
        .await;
        assert_eq!(x.status(), 403, "{host}: {}", x.text());
    }
    let x = exchange(
        t.addr(),
        get("Host: shop.example.:81\r\n", "/dot").as_bytes(),
        WAIT,
    )
    .await;
    assert_eq!(x.status(), 200, "{}", x.text());
    let r = t.backend.requests().pop().expect("forwarded");
    assert_eq!(r.header("host"), ["shop.example:81"]);
    assert_eq!(r.header("x-forwarded-host"), ["shop.example:81"]);
    // Absolute-form names internal.example: the local 403, whatever Host says.
    let x = exchange(
        t.addr(),
        b"GET http://internal.example/ HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(x.status(), 403, "{}", x.text());
    // And the other way round: forwarded with the authority as Host.
    let x = exchange(
        t.addr(),
        b"GET http://shop.example/abs HTTP/1.1\r\nHost: internal.example\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(x.status(), 200, "{}", x.text());
    let r = t.backend.requests().pop().expect("forwarded");
    assert_eq!(r.path(), "/abs");
    assert_eq!(r.header("host"), ["shop.example"]);
    // SSRF: request data never picks what is dialled.
    let admin = format!("Host: {}\r\n", t.proxy.admin);
    for hosts in [admin.as_str(), "Host: 169.254.169.254\r\n"] {
        let x = exchange(t.addr(), get(hosts, "/metrics").as_bytes(), WAIT).await;
        assert_eq!(x.status(), 200);
        assert_eq!(
            x.text().rsplit("\r\n\r\n").next(),
            Some("ok"),
            "the recorder answered"
        );
    }
}

/// Row 13 (CVE-2019-9901, CVE-2021-29492): a path that the proxy routes is
/// the path it forwards. `/admin` is denied locally; no spelling of it
/// reaches the backend as `/admin`, and a path above `/` is 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row13_path_confusion_routes_what_it_forwards() {
    let t = Target::start("", "");
    for path in [
        "/api/../admin",
        "/api/%2e%2e/admin",
        "//admin",
        "/%61dmin",
        "/./admin",
        "/admin/",
    ] {
        let x = exchange(t.addr(), get("Host: a\r\n", path).as_bytes(), WAIT).await;
        assert_eq!(x.status(), 403, "{path}: {}", x.text());
    }
    for path in ["/..", "/%2e%2e/admin", "/a/../../admin"] {
        let x = exchange(t.addr(), get("Host: a\r\n", path).as_bytes(), WAIT).await;
        assert_eq!(x.status(), 400, "{path}: {}", x.text());
    }
    // Encoded separators and odd bytes stay encoded: not /admin.
    for path in [
        "/admin%2Fx",
        "/%2Fadmin",
        "/admin;x",
        "/x%5C..%5Cadmin",
        "/x%00",
    ] {
        let x = exchange(t.addr(), get("Host: a\r\n", path).as_bytes(), WAIT).await;
        println!("{path}: {}", x.status());
    }
    for r in t.backend.requests() {
        let p = r.path();
        assert!(
            !(p == "/admin" || p.starts_with("/admin/")),
            "the backend got {p}"
        );
    }
}

/// Row 11 and SPEC 5.1: 101 headers and a 64 KiB header are 431; names
/// with `_` are dropped before matching and forwarding by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row11_header_limits_and_underscores() {
    let t = Target::start("", "");
    let many: String = (0..101).map(|i| format!("x-h{i}: v\r\n")).collect();
    let x = exchange(
        t.addr(),
        get(&format!("Host: a\r\n{many}"), "/").as_bytes(),
        WAIT,
    )
    .await;
    assert_eq!(x.status(), 431, "{}", x.text());
    let big = format!("Host: a\r\nx-big: {}\r\n", "a".repeat(64 * 1024));
    let x = exchange(t.addr(), get(&big, "/").as_bytes(), WAIT).await;
    assert_eq!(x.status(), 431, "{}", x.text());
    assert!(x.elapsed < Duration::from_secs(1));
    let x = exchange(
        t.addr(),
        get(
            "Host: a\r\nFoo_Bar: 1\r\nX_Forwarded_For: 10.0.0.1\r\n",
            "/u",
        )
        .as_bytes(),
        WAIT,
    )
    .await;
    assert_eq!(x.status(), 200, "{}", x.text());
    let r = t.backend.requests().pop().expect("forwarded");
    assert!(!r.head.contains('_'), "{}", r.head);
    assert_eq!(r.header("x-forwarded-for"), ["127.0.0.1"]);
}

/// Row 11, `limits.underscore_headers: reject`: 400, nothing forwarded;
/// `allow` keeps the header; an underscore header cannot satisfy a header
/// matcher while dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row11_underscore_headers_reject_and_allow() {
    let t = Target::start(", underscore_headers: reject", "");
    let x = exchange(
        t.addr(),
        get("Host: a\r\nFoo_Bar: 1\r\n", "/").as_bytes(),
        WAIT,
    )
    .await;
    assert_eq!(x.status(), 400);
    assert_eq!(t.backend.count(), 0);
    let t = Target::start(", underscore_headers: allow", "");
    let x = exchange(
        t.addr(),
        get("Host: a\r\nFoo_Bar: 1\r\n", "/").as_bytes(),
        WAIT,
    )
    .await;
    assert_eq!(x.status(), 200);
    assert_eq!(t.backend.requests()[0].header("foo_bar"), ["1"]);
    let gate = "  - name: gate\n    match: { header: { name: x_role, equals: admin } }\n    respond: { status: 403, body: \"gate\" }\n";
    let t = Target::start("", gate);
    let x = exchange(
        t.addr(),
        get("Host: a\r\nX_Role: admin\r\n", "/").as_bytes(),
        WAIT,
    )
    .await;
    assert_eq!(x.status(), 200, "dropped before matching: {}", x.text());
}

/// Row 8: hop-by-hop abuse. Headers named by `Connection` (even
/// X-Forwarded-For), Keep-Alive, TE, Upgrade, Proxy-Connection never cross
/// to the backend, nor the backend's own (`Connection: x-int`) to the
/// client; X-Forwarded-For and Via are still added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row8_hop_by_hop_never_crosses() {
    let t = Target::start("", "");
    let hosts = "Host: a\r\nConnection: close, X-Forwarded-For, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 300\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n";
    let req = format!("GET /hop HTTP/1.1\r\n{hosts}\r\n");
    let x = exchange(t.addr(), req.as_bytes(), WAIT).await;
    assert_eq!(x.status(), 200, "{}", x.text());
    let answer = x.text().to_ascii_lowercase();
    assert!(!answer.contains("x-int"), "{answer}");
    assert!(!answer.contains("keep-alive: timeout"), "{answer}");
    let r = t.backend.requests().pop().expect("forwarded");
    for h in [
        "x-secret",
        "keep-alive",
        "te",
        "proxy-connection",
        "upgrade",
        "http2-settings",
    ] {
        assert!(!r.has(h), "{h} crossed: {}", r.head);
    }
    assert_eq!(r.header("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(r.header("via"), ["1.1 pointsman"]);
}

/// Row 9: X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host and
/// x-pointsman-* sent by an untrusted client fool neither an IP rule nor
/// the backend: it sees the peer appended, the real scheme and Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row9_forwarded_headers_cannot_be_spoofed() {
    let t = Target::start("", "");
    let hosts = "Host: shop.example\r\nX-Forwarded-For: 10.1.2.3\r\nX-Real-IP: 10.1.2.3\r\nForwarded: for=10.1.2.3;proto=https\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: internal.example\r\nx-pointsman-route: lan\r\n";
    let x = exchange(t.addr(), get(hosts, "/spoof").as_bytes(), WAIT).await;
    assert_eq!(x.status(), 200, "the 10/8 rule is not fooled: {}", x.text());
    let r = t.backend.requests().pop().expect("forwarded");
    assert_eq!(r.header("x-forwarded-for"), ["10.1.2.3, 127.0.0.1"]);
    assert_eq!(r.header("x-forwarded-proto"), ["http"]);
    assert_eq!(r.header("x-forwarded-host"), ["shop.example"]);
    assert!(!r.has("x-pointsman-route"));
}
