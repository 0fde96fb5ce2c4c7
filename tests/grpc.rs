//! gRPC and HTTP/2 upstreams through the in-process proxy, with a real gRPC
//! stack (tonic's client and server codec, see `support::grpc`), issue 13:
//!
//! - `unary_and_streaming_calls_pass_with_trailers_intact`: all four kinds
//!   of call over h2c; bidirectional streaming in lockstep (each answer
//!   before the next request: nothing waits for a whole stream).
//! - `a_closed_upstream_connection_is_replaced`: calls share one h2
//!   connection per endpoint; one the upstream closed is opened anew.
//! - `a_4_mib_message_passes_both_ways`
//! - `an_error_status_keeps_its_details_and_custom_trailers`: trailers-only
//!   and after messages.
//! - `over_tls_with_alpn_both_ways`: client → proxy and proxy → upstream.
//! - `a_deadline_that_expires_is_deadline_exceeded`: `grpc-timeout` shorter
//!   than the route's timeout, and the route's when it is the shorter.
//! - `experiment_and_canary_split_calls_by_a_metadata_header`
//! - `a_dead_upstream_is_unavailable`: and no route is UNIMPLEMENTED.
//! - `a_strict_h2_upstream_sees_the_host_as_authority`: no `host` field,
//!   `te: trailers`, from HTTP/2 and HTTP/1.1 clients alike.
//! - `an_http1_client_gets_the_trailers_chunked`
//! - `cookie_crumbs_arrive_joined_at_an_http1_upstream`
//! - `an_h2c_upgrade_is_served_as_http1`

use crate::support::grpc::{self, Msg};
use crate::support::{self, Mode, Rules, start};
use crate::tls::{ca, leaf};
use bytes::Bytes;
use http::uri::PathAndQuery;
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tonic::Code;

/// A proxy forwarding everything to the h2 upstream `up`.
async fn proxy_to(up: SocketAddr) -> support::Running {
    start(
        Rules::new()
            .upstream_with("svc", &[up], "protocol: h2")
            .route("name: grpc, match: { path_prefix: /test.Echo }, to: svc"),
    )
    .await
}

#[tokio::test]
async fn unary_and_streaming_calls_pass_with_trailers_intact() {
    let up = grpc::upstream("v1").await;
    let p = proxy_to(up.addr).await;
    let mut c = grpc::client(p.addr, "grpc.test").await;

    let r = grpc::unary(&mut c, Msg::text("hi"), &[]).await.unwrap();
    assert_eq!(r.get_ref().text, "v1:hi");

    let (texts, end) = grpc::server_stream(
        &mut c,
        Msg {
            count: 3,
            ..Msg::text("s")
        },
    )
    .await;
    assert_eq!(texts, ["v1:s-0", "v1:s-1", "v1:s-2"]);
    end.unwrap();

    let msgs = ["a", "b", "c"].map(Msg::text).to_vec();
    let r = grpc::client_stream(&mut c, msgs).await.unwrap();
    assert_eq!(r.text, "v1:a+b+c");

    let (tx, mut answers) = grpc::bidi(&mut c).await;
    for word in ["one", "two", "three"] {
        tx.send(Msg::text(word)).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(2), answers.message())
            .await
            .expect("an answer before the stream ends")
            .unwrap()
            .unwrap();
        assert_eq!(answer.text, format!("v1:{word}"));
    }
    drop(tx);
    assert!(answers.message().await.unwrap().is_none());
    // The client saw grpc-status 0 in the trailers of every call (tonic
    // fails a call whose trailers are missing); all went to the upstream,
    // on one shared connection.
    assert_eq!(up.calls(), 4);
    assert_eq!(up.connections(), 1);
}

#[tokio::test]
async fn a_closed_upstream_connection_is_replaced() {
    let up = grpc::one_call_per_connection("v1").await;
    let p = proxy_to(up.addr).await;
    let mut c = grpc::client(p.addr, "grpc.test").await;
    for i in 0..3 {
        let r = grpc::unary(&mut c, Msg::text(&i.to_string()), &[]).await;
        assert_eq!(r.unwrap().get_ref().text, format!("v1:{i}"));
        // Let the GOAWAY and the close arrive before the next call.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(up.connections(), 3);
}

#[tokio::test]
async fn a_4_mib_message_passes_both_ways() {
    let up = grpc::upstream("v1").await;
    // The client-facing 64 KiB stream window (SPEC 5.1) takes a window
    // round trip per 32 KiB; client, proxy and upstream share this test's
    // one thread in a debug build, so 16 MiB need more than the 5 s default.
    let p = start(
        Rules::new()
            .upstream_with("svc", &[up.addr], "protocol: h2, request_timeout: 60s")
            .route("name: grpc, match: { path_prefix: /test.Echo }, to: svc"),
    )
    .await;
    let mut c = grpc::client(p.addr, "grpc.test").await;
    let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    let m = Msg {
        data: data.clone(),
        ..Msg::text("big")
    };
    let r = grpc::unary(&mut c, m.clone(), &[]).await.unwrap();
    assert_eq!(r.get_ref().text, "v1:big");
    assert!(r.get_ref().data == data, "the 4 MiB came back intact");
    let r = grpc::client_stream(&mut c, vec![m.clone(), m])
        .await
        .unwrap();
    assert_eq!(r.count, 8 << 20);
}

#[tokio::test]
async fn an_error_status_keeps_its_details_and_custom_trailers() {
    let up = grpc::upstream("v1").await;
    let p = proxy_to(up.addr).await;
    let mut c = grpc::client(p.addr, "grpc.test").await;
    let failing = Msg {
        fail: true,
        count: 2,
        ..Msg::text("f")
    };
    let check = |s: &tonic::Status| {
        assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
        assert_eq!(s.message(), "nope");
        assert_eq!(s.details(), grpc::DETAILS);
        assert_eq!(s.metadata().get(grpc::WHY).unwrap(), "because");
        assert!(s.metadata().get("x-pointsman-error").is_none());
    };
    // Trailers-only (the status in the answer's head).
    check(&grpc::unary(&mut c, failing.clone(), &[]).await.unwrap_err());
    // Real trailers, after two messages.
    let (texts, end) = grpc::server_stream(&mut c, failing).await;
    assert_eq!(texts, ["v1:f-0", "v1:f-1"]);
    check(&end.unwrap_err());
}

#[tokio::test]
async fn over_tls_with_alpn_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let front = leaf(&ca, &["grpc.test"]);
    let back = leaf(&ca, &["backend.test"]);
    let up = grpc::tls_upstream("secure", &back.cert_pem, &back.key_pem).await;
    let path = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (cert, key) = (
        path("front.pem", &front.cert_pem),
        path("front.key", &front.key_pem),
    );
    let ca_file = path("ca.pem", &ca.pem);
    let tls = format!(
        "protocol: h2, tls: {{ ca: \"{}\", server_name: backend.test }}",
        ca_file.display()
    );
    let p = start(
        Rules::new()
            .tls(&cert, &key)
            .upstream_at("secure", &[format!("https://{}", up.addr)], &tls)
            .route("name: grpc, match: { host: grpc.test }, to: secure"),
    )
    .await;
    let mut c = grpc::tls_client(p.addr, "grpc.test", &ca.pem).await;

    let r = grpc::unary(&mut c, Msg::text("hi"), &[]).await.unwrap();
    assert_eq!(r.get_ref().text, "secure:hi");
    let (tx, mut answers) = grpc::bidi(&mut c).await;
    for word in ["one", "two"] {
        tx.send(Msg::text(word)).await.unwrap();
        let answer = answers.message().await.unwrap().unwrap();
        assert_eq!(answer.text, format!("secure:{word}"));
    }
    drop(tx);
    assert!(answers.message().await.unwrap().is_none());
    let seen = up.last();
    assert_eq!(seen.authority.as_deref(), Some("grpc.test"));
    assert!(seen.headers.get("host").is_none());
}

/// tonic's codec over a bare HTTP/2 client: unlike tonic's `Channel`, it
/// does not time a call out itself, so a DEADLINE_EXCEEDED can only come
/// from the proxy.
type BareClient = tonic::client::Grpc<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        tonic::body::Body,
    >,
>;

fn bare_client(proxy: SocketAddr) -> BareClient {
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let origin = format!("http://{proxy}").parse().unwrap();
    tonic::client::Grpc::with_origin(http, origin)
}

async fn bare_unary(c: &mut BareClient, m: Msg, timeout: Duration) -> Result<Msg, tonic::Status> {
    let mut req = tonic::Request::new(m);
    req.set_timeout(timeout);
    c.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<Msg, Msg>::default();
    c.unary(req, PathAndQuery::from_static(grpc::UNARY), codec)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_deadline_that_expires_is_deadline_exceeded() {
    let up = grpc::upstream("slow").await;
    // The route allows 5 s (the test default).
    let p = proxy_to(up.addr).await;
    let mut c = bare_client(p.addr);
    let slow = Msg {
        delay_ms: 3000,
        ..Msg::text("late")
    };
    let started = Instant::now();
    let s = bare_unary(&mut c, slow.clone(), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}");
    assert_eq!(s.message(), "upstream_timeout");
    assert_eq!(
        s.metadata().get("x-pointsman-error").unwrap(),
        "upstream_timeout"
    );
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(took < Duration::from_millis(2000), "{took:?}");
    // A deadline within reach changes nothing.
    let quick = Msg {
        delay_ms: 10,
        ..Msg::text("quick")
    };
    let r = bare_unary(&mut c, quick, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(r.text, "slow:quick");

    // The route's timeout, when it is the shorter, still holds.
    let p = start(
        Rules::new()
            .upstream_with("svc", &[up.addr], "protocol: h2, request_timeout: 200ms")
            .route("name: grpc, to: svc"),
    )
    .await;
    let mut c = bare_client(p.addr);
    let started = Instant::now();
    let s = bare_unary(&mut c, slow, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}");
    assert!(started.elapsed() < Duration::from_millis(2000));
}

#[tokio::test]
async fn experiment_and_canary_split_calls_by_a_metadata_header() {
    let (v1, v2) = (grpc::upstream("v1").await, grpc::upstream("v2").await);
    let p = start(
        Rules::new()
            .upstream_with("v1", &[v1.addr], "protocol: h2")
            .upstream_with("v2", &[v2.addr], "protocol: h2")
            .route(
                "name: grpc-exp, match: { header: { name: x-split, equals: exp } }, to: v1, \
                 experiment: { sticky_on: [\"header:x-user-id\"], variants: \
                 [{ name: a, weight: 1 }, { name: b, weight: 1, to: v2 }] }",
            )
            .route(
                "name: grpc-canary, match: { header: { name: x-split, equals: canary } }, \
                 canary: { stable: v1, canary: v2, weight: 30, sticky_on: [\"header:x-user-id\"] }",
            ),
    )
    .await;
    let mut c = grpc::client(p.addr, "grpc.test").await;
    for (split, cut) in [("exp", 0.5), ("canary", 0.3)] {
        let route = format!("grpc-{split}");
        let mut seen = [0, 0];
        for i in 0..24 {
            let user = format!("user-{i}");
            // SPEC 3: variant `a` holds buckets [0, 0.5); a user is on the
            // canary when the bucket is under its weight.
            let low = pointsman::split::hash::hash(&route, &user, 2).unwrap() < cut;
            let want = match (split, low) {
                ("exp", true) | ("canary", false) => "v1",
                _ => "v2",
            };
            for _ in 0..2 {
                let meta = [("x-split", split), ("x-user-id", user.as_str())];
                let r = grpc::unary(&mut c, Msg::text("x"), &meta).await.unwrap();
                assert_eq!(r.get_ref().text, format!("{want}:x"), "{split} {user}");
            }
            seen[usize::from(want == "v2")] += 1;
            let up = if want == "v1" { &v1 } else { &v2 };
            let variant = up.last().headers["x-pointsman-variant"].clone();
            let arm = match (split, want) {
                ("exp", "v1") => "grpc-exp=a",
                ("exp", _) => "grpc-exp=b",
                (_, "v1") => "grpc-canary=stable",
                _ => "grpc-canary=canary",
            };
            assert_eq!(variant, arm, "{user}");
        }
        assert!(
            seen[0] > 0 && seen[1] > 0,
            "{split}: both arms served: {seen:?}"
        );
    }
}

#[tokio::test]
async fn a_dead_upstream_is_unavailable() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let rules = Rules::new()
        .upstream_with("dead", &[dead], "protocol: h2")
        .route("name: grpc, match: { path_prefix: /test.Echo }, to: dead");
    // Served with metrics, to see what the failure is counted as.
    let metrics = pointsman::metrics::Metrics::new().unwrap();
    let runtime = pointsman::runtime::Runtime::new(Some(metrics.clone()));
    let live = pointsman::runtime::Live::new(runtime.link(rules.config()), runtime);
    let server = pointsman::server::Server::bind(live, 1).unwrap();
    let addr = server.local_addrs().unwrap()[0];
    tokio::spawn(server.serve(std::future::pending()));

    let mut c = grpc::client(addr, "grpc.test").await;
    let s = grpc::unary(&mut c, Msg::text("anyone?"), &[])
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    assert_eq!(s.message(), "upstream_connect");
    assert_eq!(
        s.metadata().get("x-pointsman-error").unwrap(),
        "upstream_connect"
    );
    // 200 on the wire, counted as the 502 it stands for (so a canary's
    // guard sees the failure).
    let samples = support::prom::parse(&metrics.render());
    let want = [("route", "grpc"), ("upstream", "dead"), ("code", "502")];
    let counted = support::prom::value(&samples, "pointsman_requests_total", &want);
    assert_eq!(counted, 1.0);

    // No route: UNIMPLEMENTED, with the token.
    c.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<Msg, Msg>::default();
    let s = c
        .unary(
            tonic::Request::new(Msg::text("?")),
            PathAndQuery::from_static("/other.Svc/Call"),
            codec,
        )
        .await
        .unwrap_err();
    assert_eq!((s.code(), s.message()), (Code::Unimplemented, "no_route"));
}

#[tokio::test]
async fn a_strict_h2_upstream_sees_the_host_as_authority() {
    let up = grpc::upstream("v1").await;
    let p = proxy_to(up.addr).await;
    let mut c = grpc::client(p.addr, "grpc.test:8443").await;
    grpc::unary(&mut c, Msg::text("hi"), &[]).await.unwrap();
    let seen = up.last();
    assert_eq!(seen.version, http::Version::HTTP_2);
    assert_eq!(seen.authority.as_deref(), Some("grpc.test:8443"));
    assert!(seen.headers.get("host").is_none(), "{:?}", seen.headers);
    assert_eq!(seen.headers["te"], "trailers");
    assert_eq!(seen.headers["x-forwarded-host"], "grpc.test:8443");

    // From an HTTP/1.1 client the same: its Host line becomes :authority.
    let reply = h1_call(p.addr, "h1.test:8080", grpc::UNARY, &Msg::text("hi")).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let seen = up.last();
    assert_eq!(seen.authority.as_deref(), Some("h1.test:8080"));
    assert!(seen.headers.get("host").is_none(), "{:?}", seen.headers);
    assert_eq!(seen.headers["te"], "trailers");
}

/// A gRPC call over HTTP/1.1 (`TE: trailers`, a chunked body); the raw
/// answer.
async fn h1_call(proxy: SocketAddr, host: &str, path: &str, m: &Msg) -> String {
    let frame = grpc::frame(m);
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/grpc\r\n\
         te: trailers\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n",
        frame.len()
    )
    .into_bytes();
    req.extend_from_slice(&frame);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    support::raw(proxy, &req, Duration::from_secs(3)).await
}

#[tokio::test]
async fn an_http1_client_gets_the_trailers_chunked() {
    let up = grpc::upstream("v1").await;
    let p = proxy_to(up.addr).await;
    let reply = h1_call(p.addr, "grpc.test", grpc::UNARY, &Msg::text("hi")).await;
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(
        head.contains("trailer: grpc-status, grpc-message"),
        "{head}"
    );
    assert!(body.contains("v1:hi"), "{body:?}");
    assert!(body.ends_with("0\r\ngrpc-status: 0\r\n\r\n"), "{body:?}");

    let failing = Msg {
        fail: true,
        count: 1,
        ..Msg::text("f")
    };
    let reply = h1_call(p.addr, "grpc.test", grpc::SERVER_STREAM, &failing).await;
    let (_, body) = reply.split_once("\r\n\r\n").unwrap();
    let trailers = body.rsplit_once("\r\n0\r\n").unwrap().1;
    assert!(trailers.contains("grpc-status: 9\r\n"), "{trailers:?}");
    assert!(trailers.contains("grpc-message: nope\r\n"), "{trailers:?}");
    assert!(
        trailers.contains("grpc-status-details-bin: "),
        "{trailers:?}"
    );

    // Without TE: trailers the answer carries no trailers (and declares none).
    let req = format!(
        "POST {} HTTP/1.1\r\nhost: grpc.test\r\ncontent-type: application/grpc\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        grpc::UNARY,
        grpc::frame(&Msg::text("x")).len()
    );
    let mut req = req.into_bytes();
    req.extend_from_slice(&grpc::frame(&Msg::text("x")));
    let reply = support::raw(p.addr, &req, Duration::from_secs(3)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(!reply.contains("trailer:"), "{reply}");
    assert!(!reply.contains("grpc-status: 0"), "{reply}");
}

#[tokio::test]
async fn cookie_crumbs_arrive_joined_at_an_http1_upstream() {
    let up = support::upstream(Mode::Echo).await;
    let p = start(
        Rules::new()
            .upstream("web", &[up.addr])
            .route("name: b2, match: { cookie: { name: b, equals: \"2\" } }, to: web"),
    )
    .await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let req = http::Request::get(format!("http://{}/c", p.addr))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("cookie", "c=3")
        .body(Full::default())
        .unwrap();
    let resp = h2.request(req).await.unwrap();
    // The matcher saw the second crumb.
    assert_eq!(resp.status(), http::StatusCode::OK);
    let _ = resp.into_body().collect().await;
    let seen = up.last();
    let cookies: Vec<_> = seen.headers.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=1; b=2; c=3"]);
}

#[tokio::test]
async fn an_h2c_upgrade_is_served_as_http1() {
    let up = support::upstream(Mode::Echo).await;
    let p = start(Rules::new().upstream("web", &[up.addr]).fallback("to: web")).await;
    let reply = support::raw(
        p.addr,
        b"GET /up HTTP/1.1\r\nhost: a\r\nconnection: Upgrade, HTTP2-Settings, close\r\n\
          upgrade: h2c\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let seen = up.last();
    for name in ["upgrade", "http2-settings", "connection"] {
        assert!(
            seen.headers.get(name).is_none(),
            "{name}: {:?}",
            seen.headers
        );
    }
}
