//! Forwarding end to end: real upstreams, the real proxy, real clients.
//! Most tests have no routes and go through the fallback.

use crate::support;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use std::time::{Duration, Instant};
use support::{
    Client, Mode, Rules, TestUpstream, client, get, h2_upstream, raw, send, start, upstream,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn fallback_to(up: &TestUpstream) -> Rules {
    forward_all("up", &[up.addr], "")
}

/// No routes: every request goes to the fallback, which forwards to
/// upstream `name` over `addrs` (with `extra` upstream settings).
fn forward_all(name: &str, addrs: &[std::net::SocketAddr], extra: &str) -> Rules {
    Rules::new()
        .upstream_with(name, addrs, extra)
        .fallback(&format!("to: {name}"))
}

#[tokio::test]
async fn forwarding_headers_and_hop_by_hop_both_ways() {
    let up = upstream(Mode::Echo).await;
    let p = start(fallback_to(&up)).await;
    let c = client();
    let req = get(p.addr, "/a/./b//c?x=1")
        .header("host", "shop.example.com:8080")
        .header("connection", "x-forwarded-for, x-secret")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-secret", "1")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil")
        .header("x-pointsman-route", "spoof")
        .header("x-pointsman-force", "a=b")
        .header("te", "trailers")
        .header("proxy-connection", "keep-alive")
        .body(Full::default())
        .unwrap();
    let (resp, body) = send(&c, req).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(body, "ok");
    // Response side: hop-by-hop and what Connection named are gone.
    assert!(resp.headers.get("x-int").is_none());
    assert!(resp.headers.get("keep-alive").is_none());
    let rid = resp.headers.get("x-request-id").expect("request id echoed");
    assert_eq!(rid.len(), 32);

    let seen = up.last();
    println!("upstream saw: {:?}", seen.headers);
    assert_eq!(seen.headers["host"], "shop.example.com:8080");
    // The client's XFF was named in Connection: dropped, then ours added.
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert!(seen.headers.get("x-secret").is_none());
    assert!(seen.headers.get("te").is_none());
    assert!(seen.headers.get("proxy-connection").is_none());
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "shop.example.com:8080");
    assert_eq!(seen.headers["via"], "1.1 pointsman");
    assert!(seen.headers.get("x-pointsman-route").is_none());
    assert_eq!(seen.headers["x-pointsman-force"], "a=b");
    assert_eq!(&seen.headers["x-request-id"], rid);
}

#[tokio::test]
async fn xff_appended_and_forwarded_headers_kept_from_trusted_peers() {
    let up = upstream(Mode::Echo).await;
    let rules = fallback_to(&up).top("trusted_proxies: [127.0.0.0/8]");
    let p = start(rules).await;
    let c = client();
    let req = get(p.addr, "/")
        .header("x-forwarded-for", "1.2.3.4")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "front.example.com")
        .header("via", "1.0 edge")
        .header("x-request-id", "abc-123")
        .body(Full::default())
        .unwrap();
    let (resp, _) = send(&c, req).await;
    assert_eq!(resp.headers["x-request-id"], "abc-123");
    let seen = up.last();
    assert_eq!(seen.headers["x-forwarded-for"], "1.2.3.4, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["x-forwarded-host"], "front.example.com");
    let via: Vec<_> = seen.headers.get_all("via").iter().collect();
    assert_eq!(via, ["1.0 edge", "1.1 pointsman"]);
    assert_eq!(seen.headers["x-request-id"], "abc-123");
}

#[tokio::test]
async fn no_route_is_404_json() {
    let p = start(Rules::new()).await;
    let (resp, body) = send(&client(), get(p.addr, "/x").body(Full::default()).unwrap()).await;
    println!("{} {:?}", resp.status, body);
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.headers["x-pointsman-error"], "no_route");
    assert_eq!(body, r#"{"error":"no_route","route":null}"#);
}

#[tokio::test]
async fn fallback_respond() {
    let rules = Rules::new()
        .fallback("respond: { status: 410, body: gone, headers: { content-type: text/plain } }");
    let p = start(rules).await;
    let (resp, body) = send(&client(), get(p.addr, "/").body(Full::default()).unwrap()).await;
    assert_eq!(resp.status, StatusCode::GONE);
    assert_eq!(resp.headers["content-type"], "text/plain");
    assert_eq!(body, "gone");
}

#[tokio::test]
async fn connect_refused_is_502_upstream_connect() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = dead.local_addr().unwrap();
    drop(dead);
    let p = start(forward_all("dead", &[addr], "")).await;
    let (resp, body) = send(&client(), get(p.addr, "/").body(Full::default()).unwrap()).await;
    println!("{} {:?}", resp.status, body);
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
    assert_eq!(resp.headers["x-pointsman-error"], "upstream_connect");
    assert_eq!(body, r#"{"error":"upstream_connect","route":null}"#);
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let up = upstream(Mode::Delay(Duration::from_secs(2))).await;
    let p = start(forward_all("slow", &[up.addr], "request_timeout: 200ms")).await;
    let t = Instant::now();
    let (resp, _) = send(&client(), get(p.addr, "/").body(Full::default()).unwrap()).await;
    assert_eq!(resp.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(resp.headers["x-pointsman-error"], "upstream_timeout");
    assert!(t.elapsed() < Duration::from_secs(1));
}

/// The deadline lives on the upstream connection and moves with each
/// request: a pooled connection that served a longer deadline still times
/// out a shorter one, and one that timed nothing out serves slower answers
/// within a longer one.
#[tokio::test]
async fn timeouts_hold_on_reused_connections_longer_then_shorter() {
    let up = upstream(Mode::DelayAsked).await;
    let rules = Rules::new()
        .upstream_with("up", &[up.addr], "request_timeout: 2s")
        .route("name: short, match: { path_prefix: /short }, to: up, timeout: 300ms")
        .fallback("to: up");
    let p = start(rules).await;
    let c = client();
    let ask = |path: &str, delay_ms: u64| {
        get(p.addr, path)
            .header("x-delay-ms", delay_ms.to_string())
            .body(Full::default())
            .unwrap()
    };
    for round in 0..2 {
        // Pools a connection (its timer armed 2 s ahead), then a slower
        // answer on it within the 2 s.
        let (resp, _) = send(&c, ask("/", 0)).await;
        assert_eq!(resp.status, StatusCode::OK, "round {round}");
        let (resp, _) = send(&c, ask("/", 400)).await;
        assert_eq!(
            resp.status,
            StatusCode::OK,
            "round {round}: within request_timeout"
        );
        // The same connection, a deadline earlier than the one it had.
        let t = Instant::now();
        let (resp, _) = send(&c, ask("/short", 1500)).await;
        assert_eq!(resp.status, StatusCode::GATEWAY_TIMEOUT, "round {round}");
        assert_eq!(resp.headers["x-pointsman-error"], "upstream_timeout");
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_millis(1200),
            "round {round}: timed out after {took:?}"
        );
    }
    assert_eq!(up.hits(), 6);
}

/// A client that goes away before its answer came leaves the upstream
/// connection with an answer due: a small, quick one is read to its end
/// and the connection serves the next request; one slower than the drain
/// allows (250 ms) closes it.
#[tokio::test]
async fn abandoned_answers_are_drained_and_their_connection_kept() {
    let up = upstream(Mode::DelayAsked).await;
    let p = start(fallback_to(&up)).await;
    let c = client();
    // A client asks for an answer `delay_ms` late, leaves after 50 ms, and
    // `wait_ms` later another request goes out on whatever the pool has.
    let abandon_then_get = |delay_ms: u64, wait_ms: u64| {
        let c = c.clone();
        async move {
            let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
            let req = format!("GET / HTTP/1.1\r\nHost: x\r\nx-delay-ms: {delay_ms}\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(s);
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
            let (resp, _) = send(&c, get(p.addr, "/").body(Full::default()).unwrap()).await;
            resp.status
        }
    };
    assert_eq!(abandon_then_get(150, 300).await, StatusCode::OK);
    assert_eq!(up.hits(), 2);
    assert_eq!(
        up.conns(),
        1,
        "the drained connection served the next request"
    );

    assert_eq!(abandon_then_get(1000, 600).await, StatusCode::OK);
    assert_eq!(up.hits(), 4);
    assert_eq!(
        up.conns(),
        2,
        "an answer slower than the drain closed its connection"
    );
}

/// The same for a client that leaves mid-body: the rest of the body is
/// read (the upstream sends it 100 ms later) and the connection serves the
/// next request.
#[tokio::test]
async fn a_body_abandoned_midway_is_drained_and_its_connection_kept() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut first = true;
                loop {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
                        .await;
                    if first {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        first = false;
                    }
                    let _ = s.write_all(b"67890").await;
                }
            });
        }
    });
    let p = start(forward_all("up", &[addr], "")).await;
    let mut c = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"12345") {
        let n = c.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the first half: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    drop(c);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (resp, body) = send(&client(), get(p.addr, "/").body(Full::default()).unwrap()).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(body, "1234567890");
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the drained connection served the next request"
    );
}

#[tokio::test]
async fn get_is_retried_on_another_endpoint_post_is_not() {
    let bad = upstream(Mode::Close).await;
    let good = upstream(Mode::Echo).await;
    let p = start(forward_all("pair", &[bad.addr, good.addr], "")).await;
    let c = client();
    // Round robin starts at the closing endpoint; the GET moves on.
    let (resp, _) = send(&c, get(p.addr, "/").body(Full::default()).unwrap()).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!((bad.hits(), good.hits()), (1, 1));
    // The retry did not move the rotation (SPEC 6): the next first attempt
    // goes to `good`, the one after to `bad` again.
    let (resp, _) = send(&c, get(p.addr, "/").body(Full::default()).unwrap()).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!((bad.hits(), good.hits()), (1, 2));
    let post = Request::post(format!("http://{}/", p.addr))
        .body(Full::new(Bytes::from_static(b"pay")))
        .unwrap();
    let (resp, body) = send(&c, post).await;
    println!("POST: {} {:?}", resp.status, body);
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
    assert_eq!(resp.headers["x-pointsman-error"], "upstream_reset");
    assert_eq!(bad.hits(), 2, "the POST reached the upstream exactly once");
    assert_eq!(good.hits(), 2, "the POST was not retried");
}

#[tokio::test]
async fn body_over_max_is_413_by_length_and_by_stream() {
    let up = upstream(Mode::Echo).await;
    let p = start(fallback_to(&up).limit("max_body_bytes", "10")).await;
    let c = client();
    let post = Request::post(format!("http://{}/", p.addr))
        .body(Full::new(Bytes::from_static(b"0123456789abc")))
        .unwrap();
    let (resp, body) = send(&c, post).await;
    assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body, r#"{"error":"body_too_large","route":null}"#);
    assert_eq!(up.hits(), 0);
    // Chunked: no length up front, cut off while streaming.
    let out = raw(
        p.addr,
        b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    println!("{}", out.lines().next().unwrap_or(""));
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
}

#[tokio::test]
async fn too_many_or_too_large_headers_get_431() {
    let up = upstream(Mode::Echo).await;
    let rules = fallback_to(&up)
        .limit("max_headers", "10")
        .limit("max_header_bytes", "8192");
    let p = start(rules).await;
    let mut many = String::from("GET / HTTP/1.1\r\nhost: a\r\n");
    for i in 0..20 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let out = raw(p.addr, many.as_bytes(), Duration::from_secs(2)).await;
    println!("many: {}", out.lines().next().unwrap_or(""));
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    let big = format!(
        "GET / HTTP/1.1\r\nhost: a\r\nx-big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let out = raw(p.addr, big.as_bytes(), Duration::from_secs(2)).await;
    println!("big: {}", out.lines().next().unwrap_or(""));
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn slowloris_is_cut_off_by_header_read_timeout() {
    let up = upstream(Mode::Echo).await;
    let p = start(fallback_to(&up)).await;
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n").await.unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
    println!(
        "closed after {:?}: {:?}",
        t.elapsed(),
        String::from_utf8_lossy(&buf)
    );
    assert!(r.is_ok(), "connection not closed");
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_idle_timeout() {
    let up = upstream(Mode::Echo).await;
    let rules = fallback_to(&up)
        .limit("idle_timeout", "300ms")
        .limit("header_read_timeout", "5s");
    let p = start(rules).await;
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Kept alive after the answer, then closed once idle for 300 ms.
    let t = Instant::now();
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest)).await;
    assert!(r.is_ok(), "idle connection not closed");
    let idle = t.elapsed();
    println!("idle connection closed after {idle:?}");
    assert!(idle >= Duration::from_millis(250), "{idle:?}");
    assert!(idle < Duration::from_secs(2), "{idle:?}");
}

/// An idle HTTP/1.1 connection is parked (its buffers released) between
/// requests: it still serves the next request on the same socket, also one
/// whose head arrives in two pieces, and is still closed at the idle
/// timeout.
#[tokio::test]
async fn an_idle_keep_alive_connection_serves_again_after_parking() {
    let up = upstream(Mode::Echo).await;
    // Sweeps every 300 ms: quiet for two of them parks the connection.
    let rules = fallback_to(&up)
        .limit("idle_timeout", "1200ms")
        .limit("header_read_timeout", "5s");
    let p = start(rules).await;
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let mut buf = [0u8; 4096];
    for round in 0..3 {
        if round == 2 {
            // A head in two pieces, the first waking the parked socket.
            s.write_all(b"GET /two HTTP/1.1\r\nhost: a\r\n")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            s.write_all(b"x-piece: 2\r\n\r\n").await.unwrap();
        } else {
            s.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
                .await
                .unwrap();
        }
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .expect("answered")
            .unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 200"), "round {round}: {head}");
        // Long enough to park (two quiet sweeps), short of the idle timeout.
        tokio::time::sleep(Duration::from_millis(900)).await;
    }
    assert_eq!(up.hits(), 3);
    let t = Instant::now();
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest)).await;
    assert!(r.is_ok(), "idle connection not closed");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    // 900 ms of the 1200 ms idle timeout had passed already.
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[tokio::test]
async fn connections_over_max_are_closed() {
    let up = upstream(Mode::Echo).await;
    let rules = fallback_to(&up)
        .limit("max_connections", "1")
        .limit("header_read_timeout", "5s");
    let p = start(rules).await;
    let _first = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let out = raw(
        p.addr,
        b"GET / HTTP/1.1\r\nhost: a\r\n\r\n",
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(out, "", "the second connection is closed unanswered");
}

#[tokio::test]
async fn h2c_prior_knowledge_is_routed_like_h1() {
    let up = upstream(Mode::Echo).await;
    let p = start(fallback_to(&up)).await;
    let c: Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let (resp, body) = send(&c, get(p.addr, "/h2").body(Full::default()).unwrap()).await;
    assert_eq!(resp.version, http::Version::HTTP_2);
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(body, "ok");
    let seen = up.last();
    assert_eq!(seen.uri, "/h2");
    assert_eq!(seen.headers["host"], p.addr.to_string());
}

/// A request id differs in every response, so over HTTP/2 it is sent as a
/// literal never indexed: indexed, each one took an HPACK table entry no
/// later response could use and pushed out those that could. It is the
/// only such field in the answer.
#[tokio::test]
async fn h2_request_ids_are_never_indexed() {
    use support::h2raw::{self, Repr};
    let up = upstream(Mode::Echo).await;
    let p = start(fallback_to(&up)).await;
    let s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    wr.write_all(&h2raw::hello()).await.unwrap();
    let authority = p.addr.to_string();
    for stream in [1u32, 3, 5] {
        let block = h2raw::get_block(&authority, "/id");
        let flags = h2raw::END_HEADERS | h2raw::END_STREAM;
        wr.write_all(&h2raw::frame(h2raw::HEADERS, flags, stream, &block))
            .await
            .unwrap();
        let answer = loop {
            let (kind, flags, on, payload) =
                tokio::time::timeout(Duration::from_secs(5), h2raw::read_frame(&mut rd))
                    .await
                    .expect("an answer within 5 s")
                    .unwrap();
            if kind == h2raw::HEADERS && on == stream {
                assert_ne!(flags & h2raw::END_HEADERS, 0, "one HEADERS frame");
                break h2raw::reprs(&payload);
            }
        };
        let never = answer.iter().filter(|r| **r == Repr::NeverIndexed);
        assert_eq!(never.count(), 1, "stream {stream}: {answer:?}");
    }
}

#[tokio::test]
async fn h2_upstream_gets_requests() {
    let up = h2_upstream().await;
    let p = start(forward_all("grpc", &[up.addr], "protocol: h2")).await;
    let (resp, body) = send(
        &client(),
        get(p.addr, "/svc").body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(body, "ok");
    // Issue 13 (RFC 9113 8.3.1): the client's Host is the :authority, and
    // no separate host field is sent.
    let seen = up.last();
    assert_eq!(seen.uri, format!("http://{}/svc", p.addr));
    assert!(seen.headers.get("host").is_none(), "{:?}", seen.headers);
}

#[tokio::test]
async fn an_h2_retry_sends_the_whole_head_again() {
    // The first attempt goes to a closed port (a connect failure, always
    // retried); the retry must carry the same head: path, query, the
    // client's fields and the ones the proxy adds.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let up = h2_upstream().await;
    let p = start(forward_all("grpc", &[dead, up.addr], "protocol: h2")).await;
    let req = get(p.addr, "/svc?q=1")
        .header("x-client", "kept")
        .body(Full::default())
        .unwrap();
    let (resp, body) = send(&client(), req).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(body, "ok");
    assert_eq!(up.hits(), 1);
    let seen = up.last();
    println!("retried: {} {:?}", seen.uri, seen.headers);
    assert_eq!(seen.uri, format!("http://{}/svc?q=1", p.addr));
    assert_eq!(seen.headers["x-client"], "kept");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert!(seen.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn upgrade_is_tunnelled_only_after_101() {
    let ws = upstream(Mode::Upgrade).await;
    let p = start(fallback_to(&ws)).await;
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"ping").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"ping");
    println!("tunnel echoed {:?}", String::from_utf8_lossy(&buf[..n]));

    // An upstream that answers 200: no tunnel; the next bytes are parsed as
    // a request (and this one is answered normally).
    let plain = upstream(Mode::Echo).await;
    let p = start(fallback_to(&plain)).await;
    let out = raw(
        p.addr,
        b"GET /ws HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\nGET /second HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(out.matches("HTTP/1.1 200").count(), 2, "{out}");
    let seen = plain.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].uri, "/second");
}

#[tokio::test]
async fn strip_prefix_and_header_ops() {
    let up = upstream(Mode::Echo).await;
    let rules = Rules::new().upstream("up", &[up.addr]).route(
        "name: beta, to: up, strip_prefix: /v1, \
         request_headers: { set: { x-api: beta, x-forwarded-proto: https }, \
         remove: [cookie, via] }, \
         response_headers: { set: { cache-control: no-store } }",
    );
    let p = start(rules).await;
    let c = client();
    let (resp, _) = send(
        &c,
        get(p.addr, "/v1/users?id=1")
            .header("cookie", "a=b")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(resp.headers["cache-control"], "no-store");
    let seen = up.last();
    assert_eq!(seen.uri, "/users?id=1");
    assert_eq!(seen.headers["x-api"], "beta");
    assert!(seen.headers.get("cookie").is_none());
    // The edits act on the fields the proxy adds as well.
    let proto: Vec<_> = seen.headers.get_all("x-forwarded-proto").iter().collect();
    assert_eq!(proto, ["https"]);
    assert!(seen.headers.get("via").is_none());
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    send(&c, get(p.addr, "/v1").body(Full::default()).unwrap()).await;
    assert_eq!(up.last().uri, "/");
}

#[tokio::test]
async fn redirect_and_respond_routes() {
    let rules = Rules::new().route("name: old, redirect: { to: \"https://docs.example.com/v2\" }");
    let p = start(rules).await;
    let (resp, _) = send(
        &client(),
        get(p.addr, "/docs").body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(resp.status, StatusCode::FOUND);
    assert_eq!(resp.headers["location"], "https://docs.example.com/v2");
}

#[tokio::test]
async fn failover_serves_from_the_fallback_and_names_the_route() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let good = upstream(Mode::Echo).await;
    let rules = Rules::new()
        .upstream("dead", &[dead_addr])
        .upstream("good", &[good.addr])
        .route("name: shop, to: dead")
        .fallback("to: good, failover: true");
    let p = start(rules).await;
    let (resp, _) = send(&client(), get(p.addr, "/").body(Full::default()).unwrap()).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(good.hits(), 1);
}

#[tokio::test]
async fn mirror_sends_a_copy_without_delaying() {
    let up = upstream(Mode::Echo).await;
    let shadow = upstream(Mode::Delay(Duration::from_secs(1))).await;
    let rules = Rules::new()
        .upstream("up", &[up.addr])
        .upstream("shadow", &[shadow.addr])
        .route("name: m, to: up, mirror: { to: shadow, percent: 100 }");
    let p = start(rules).await;
    let t = Instant::now();
    let post = Request::post(format!("http://{}/m", p.addr))
        .body(Full::new(Bytes::from_static(b"copy")))
        .unwrap();
    let (resp, _) = send(&client(), post).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert!(t.elapsed() < Duration::from_millis(500));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(shadow.last().body, "copy");
}

/// The HTTP/1.1 upstream pool: a connection is reused once its response was
/// read to the end, and never after a response abandoned part-way.
#[tokio::test]
async fn upstream_connections_are_reused_only_after_a_complete_response() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (listener, addr) = support::upstream::bind().await;
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let body = if req.uri().path() == "/big" {
                            Bytes::from(vec![b'x'; 4 << 20])
                        } else {
                            Bytes::from_static(b"small")
                        };
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(body)))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let p = start(forward_all("pooled", &[addr], "")).await;
    for _ in 0..3 {
        let (resp, body) = send(
            &client(),
            get(p.addr, "/small").body(Full::default()).unwrap(),
        )
        .await;
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(body, "small");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one upstream connection, reused"
    );
    // Read the head of a large response only, then hang up.
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    drop(s);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..3 {
        let (resp, body) = send(
            &client(),
            get(p.addr, "/small").body(Full::default()).unwrap(),
        )
        .await;
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(body, "small", "no leftover bytes of the abandoned body");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "the abandoned connection was closed, a new one reused"
    );
}

/// Re-house fix: a request whose HTTP/2 stream the client resets (hyper
/// drops its future) no longer counts as in flight, so its connection still
/// idles out (before, the count was never restored and the connection
/// stayed open for good).
#[tokio::test]
async fn a_reset_h2_stream_leaves_nothing_in_flight() {
    let slow = upstream(Mode::Delay(Duration::from_secs(10))).await;
    let rules = fallback_to(&slow)
        .limit("idle_timeout", "300ms")
        .limit("header_read_timeout", "5s");
    let p = start(rules).await;
    let tcp = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::get(format!("http://{}/slow", p.addr))
        .body(())
        .unwrap();
    let (response, _stream) = h2.send_request(req, true).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // RST_STREAM(CANCEL): the proxy drops the request mid-flight.
    drop(response);
    drop(_stream);
    let t = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(3), conn).await;
    println!("connection closed by the proxy after {:?}", t.elapsed());
    assert!(closed.is_ok(), "the idle connection was not closed");
    drop(h2);
}

/// A server bound for more serving threads than the upstream pools were
/// made for is refused with a message that says what to call first (each
/// thread's pool queue is made when the config is linked).
#[test]
fn binding_more_serving_threads_than_the_pools_know_is_refused() {
    use pointsman::runtime::{Live, Runtime};
    use pointsman::server::Server;
    let runtime = Runtime::new(None);
    let live = Live::new(runtime.link(Rules::new().config()), runtime);
    let err = Server::bind(live, 2).expect_err("bound two threads over one-queue pools");
    assert!(
        err.to_string().contains("worker::set_count"),
        "unclear error: {err}"
    );
}
