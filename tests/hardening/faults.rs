//! Upstream faults and pool poisoning (RELIABILITY rows 24-27).

use super::{Target, exchange};
use crate::support::binary::Binary;
use crate::support::upstream::in_background;
use crate::support::{eventually, recorder};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that misbehaves by path (`/close`, `/overread`, `/clte`,
/// `/101`, `/bighead`, `/stall`, `/early` which answers before the body),
/// sends what a backend may send around an answer (`/hints`: a 103, then
/// a chunked body with trailers; `/head`: a length without a body, for a
/// HEAD; `/closeafter`: an answer, then a close 100 ms later) and
/// otherwise answers `/echo-id` with the request's `x-request-id`. Counts
/// the requests it read.
async fn faulty() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(misbehave(s, h.clone()));
        }
    });
    (addr, hits)
}

async fn misbehave(mut s: TcpStream, hits: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        hits.fetch_add(1, Ordering::SeqCst);
        let path = head.split(' ').nth(1).unwrap_or("").to_owned();
        let id = head
            .lines()
            .find_map(|l| l.strip_prefix("x-request-id: "))
            .unwrap_or("")
            .to_owned();
        let answer: Vec<u8> = match path.as_str() {
            "/close" => return,
            "/overread" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON".to_vec(),
            "/clte" => b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON".to_vec(),
            "/101" => b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\ntunnel bytes".to_vec(),
            "/bighead" => format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 4\r\n\r\nbody", "b".repeat(64 * 1024)).into_bytes(),
            "/early" => {
                // Answers before reading the body, then reads on.
                let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n";
                let _ = s.write_all(head).await;
                let _ = s.write_all(&[b'e'; 16384]).await;
                let _ = tokio::time::timeout(Duration::from_secs(3), s.read(&mut chunk)).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                return;
            }
            "/hints" => b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n5\r\nhello\r\n0\r\nx-sum: 5\r\n\r\n".to_vec(),
            "/head" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec(),
            "/closeafter" => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                return;
            }
            "/stall" => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789").await;
                tokio::time::sleep(Duration::from_millis(800)).await;
                return;
            }
            _ => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{id}", id.len()).into_bytes(),
        };
        if s.write_all(&answer).await.is_err() {
            return;
        }
    }
}

fn faulty_rules(eps: &[SocketAddr], extra: &str) -> String {
    let eps: Vec<String> = eps.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"listen:
  - bind: "{{LISTEN}}"
admin: {{ bind: "{{ADMIN}}" }}
upstreams:
  bad: {{ endpoints: [{}], connect_timeout: 300ms, request_timeout: 700ms{extra} }}
routes:
  - name: all
    to: bad
"#,
        eps.join(", ")
    )
}

fn get(path: &str, id: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: a\r\nx-request-id: {id}\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

/// Row 26: bad upstream responses (over-read, CL+TE, an unrequested 101,
/// 64 KiB of headers, a close before answering), each followed by a normal
/// request over the same pool: the bad ones are 502 or answered as
/// framed, and every normal answer carries its own request id: no
/// pooled connection is reused after an error or an over-read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row26_bad_responses_never_poison_the_pool() {
    let (addr, _) = in_background(faulty);
    let p = Binary::launch()
        .args(&["--access-log", "off"])
        .start(&faulty_rules(&[addr], ", retries: 0"));
    let bad = ["/overread", "/clte", "/101", "/bighead", "/close"];
    for i in 0..40 {
        let path = bad[i % bad.len()];
        let x = exchange(
            p.addr,
            &get(path, &format!("bad-{i}")),
            Duration::from_secs(2),
        )
        .await;
        let text = x.text();
        let show = &text[..text.len().min(300)];
        assert!(
            !text.contains("POISON") && !text.contains("tunnel bytes"),
            "{path}: {show}"
        );
        match path {
            "/101" | "/bighead" | "/close" => assert_eq!(x.status(), 502, "{path}: {show}"),
            _ => assert!(matches!(x.status(), 200 | 502), "{path}: {show}"),
        }
        let id = format!("good-{i}");
        let x = exchange(p.addr, &get("/echo-id", &id), Duration::from_secs(2)).await;
        assert_eq!(x.status(), 200, "{}", x.text());
        assert!(x.text().ends_with(&id), "after {path}: {}", x.text());
    }
}

/// Row 26, the other way round: what a backend may lawfully send around
/// an answer does not break the pool either. A 103 before the answer, a
/// chunked body with trailers, a HEAD answer that declares a length it
/// does not send, and a keep-alive connection the backend closes while it
/// idles: each is answered as sent, and the normal request after it (no
/// retries, one endpoint: a bad reuse would be a 502) gets its own id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row26_interim_answers_trailers_head_and_closed_idle_connections() {
    let (addr, _) = in_background(faulty);
    let p = Binary::launch()
        .args(&["--access-log", "off"])
        .start(&faulty_rules(&[addr], ", retries: 0"));
    let (proxy, wait) = (p.addr, Duration::from_secs(2));
    let good = |i: usize, after: &'static str| async move {
        let id = format!("good-{after}-{i}");
        let x = exchange(proxy, &get("/echo-id", &id), wait).await;
        assert_eq!(x.status(), 200, "after {after}: {}", x.text());
        assert!(x.text().ends_with(&id), "after {after}: {}", x.text());
    };
    for i in 0..5 {
        let hints = b"GET /hints HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nConnection: close\r\n\r\n";
        let x = exchange(p.addr, hints, wait).await;
        let text = x.text().to_ascii_lowercase();
        assert_eq!(x.status(), 200, "{text}");
        assert!(
            text.contains("hello") && text.contains("x-sum: 5"),
            "{text}"
        );
        good(i, "hints").await;
        let head = b"HEAD /head HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        let x = exchange(p.addr, head, wait).await;
        assert_eq!(x.status(), 200, "{}", x.text());
        assert!(
            x.text()
                .to_ascii_lowercase()
                .contains("content-length: 100")
        );
        good(i, "head").await;
        let x = exchange(p.addr, &get("/closeafter", "c"), wait).await;
        assert_eq!(x.status(), 200, "{}", x.text());
        tokio::time::sleep(Duration::from_millis(300)).await;
        good(i, "closeafter").await;
    }
}

/// Row 26: a response that stalls after its headers shows as a truncated
/// body and a closed connection, not as a complete answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row26_truncated_response_shows_as_a_close() {
    let (addr, _) = in_background(faulty);
    let p = Binary::launch()
        .args(&["--access-log", "off"])
        .start(&faulty_rules(&[addr], ""));
    let x = exchange(p.addr, &get("/stall", "s"), Duration::from_secs(3)).await;
    let text = x.text();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(x.closed, "closed");
    assert!(text.ends_with("0123456789"), "{text}");
}

/// Row 25: a backend that drops after reading the request. A GET is tried
/// at most twice (one retry, on the other endpoint); a POST reaches the
/// upstream exactly once and is a 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row25_retries_are_safe() {
    let ((a, ha), (b, hb)) = in_background(|| async { (faulty().await, faulty().await) });
    let p = Binary::launch()
        .args(&["--access-log", "off"])
        .start(&faulty_rules(&[a, b], ""));
    let x = exchange(p.addr, &get("/close", "g"), Duration::from_secs(2)).await;
    assert_eq!(x.status(), 502, "{}", x.text());
    let tries = ha.load(Ordering::SeqCst) + hb.load(Ordering::SeqCst);
    assert_eq!(tries, 2, "GET: one retry");
    let post =
        b"POST /close HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi";
    let x = exchange(p.addr, post, Duration::from_secs(2)).await;
    assert_eq!(x.status(), 502, "{}", x.text());
    let tries = ha.load(Ordering::SeqCst) + hb.load(Ordering::SeqCst);
    assert_eq!(tries, 3, "POST: exactly once");
}

/// Row 24: an upstream that refuses connections is a fast 502 (or the
/// fallback, with `failover`); one that accepts and never answers is a 504
/// at its request timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row24_down_and_blackholed_upstreams() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    // Accepts (the kernel does) but never reads nor answers.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let backend = in_background(recorder::recorder);
    let rules = format!(
        r#"listen:
  - bind: "{{LISTEN}}"
admin: {{ bind: "{{ADMIN}}" }}
upstreams:
  down: {{ endpoints: ["{closed}"], connect_timeout: 300ms }}
  hole: {{ endpoints: ["{}"], request_timeout: 500ms }}
  good: {{ endpoints: ["{}"] }}
routes:
  - {{ name: down, match: {{ path_prefix: /down }}, to: down }}
  - {{ name: hole, match: {{ path_prefix: /hole }}, to: hole }}
  - {{ name: fo, match: {{ path_prefix: /fo }}, to: down }}
fallback: {{ to: good, failover: true }}
"#,
        hole.local_addr().expect("addr"),
        backend.addr
    );
    let p = Binary::launch()
        .args(&["--access-log", "off"])
        .start(&rules);
    let x = exchange(p.addr, &get("/hole", "h"), Duration::from_secs(3)).await;
    assert_eq!(x.status(), 504, "{}", x.text());
    assert!(x.text().contains("upstream_timeout"));
    assert!(x.elapsed >= Duration::from_millis(450) && x.elapsed < Duration::from_millis(1500));
    // With failover, the refused upstream is served by the fallback.
    let t = Instant::now();
    let x = exchange(p.addr, &get("/fo", "f"), Duration::from_secs(2)).await;
    assert_eq!(x.status(), 200, "{}", x.text());
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(backend.count(), 1);
    drop(hole);
}

/// Row 27: a client that goes away mid-request or mid-download releases
/// the upstream connection within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row27_client_abort_cancels_upstream() {
    let t = Target::start("", "");
    let closed = |n: usize| {
        let b = t.backend.clone();
        async move { b.closed.load(Ordering::SeqCst) >= n }
    };
    let mut s = TcpStream::connect(t.addr()).await.expect("connect");
    s.write_all(b"GET /slow?ms=5000 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(s);
    assert!(
        eventually(Duration::from_secs(1), || closed(1)).await,
        "waiting upstream released"
    );
    let mut s = TcpStream::connect(t.addr()).await.expect("connect");
    s.write_all(b"GET /big?n=67108864 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 65536];
    let _ = s.read(&mut buf).await;
    drop(s);
    assert!(
        eventually(Duration::from_secs(1), || closed(2)).await,
        "download upstream released"
    );
}

/// Row 4 and SPEC 5.1, once the response has started: the backend answers
/// before reading the body, then the client's chunked body turns out
/// malformed. The connection is closed (the answer cannot be finished),
/// and the cut is the client's fault: no upstream error is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row4_a_body_that_breaks_after_the_answer_started_is_not_an_upstream_error() {
    let (addr, _) = in_background(faulty);
    let p = Binary::launch()
        .args(&["--access-log", "off"])
        .start(&faulty_rules(&[addr], ""));
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(
        b"POST /early HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await
    .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while got.len() < 1024 {
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("the answer starts")
            .expect("read");
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"));
    let _ = s.write_all(b"ZZ\r\nnot a chunk\r\n").await;
    let closed = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "connection closed");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let errors = super::sum(&p.metrics(), "pointsman_upstream_errors_total");
    assert_eq!(
        errors, 0.0,
        "the client's broken body is not the upstream's fault"
    );
}
