//! Silent, slow and stuck clients at reduced scale (RELIABILITY rows 6,
//! 18-21; SPEC 5.1), each with short limits in its own rule file.

use super::{Target, exchange, probe, quantile, sum};
use crate::support::h2raw;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Reads until EOF or error; the time it took.
async fn until_closed(mut s: TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + limit).into(), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Rows 18, 21 and SPEC 5.1: a connection that sends no byte is closed at
/// `header_read_timeout` (before, it lived until the idle timeout), as is
/// one that sends half an HTTP/2 preface, only the preface, or half an
/// HTTP/1.1 head (slowloris); meanwhile a normal client is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row18_silent_and_slow_heads_close_at_the_header_timeout() {
    let t = Target::start(", header_read_timeout: 600ms, idle_timeout: 30s", "");
    let starts: [&[u8]; 4] = [
        b"",
        b"PRI * HT",
        &h2raw::hello(),
        b"GET / HTTP/1.1\r\nHost: a\r\nX-a: b\r\n",
    ];
    let mut waits = Vec::new();
    for (i, first) in starts.iter().enumerate() {
        for _ in 0..5 {
            let mut s = TcpStream::connect(t.addr()).await.expect("connect");
            s.write_all(first).await.expect("write");
            waits.push((i, tokio::spawn(until_closed(s, Duration::from_secs(5)))));
        }
    }
    let p = probe(t.addr(), 5, Duration::from_millis(50)).await;
    assert_eq!(p.len(), 5);
    for (i, w) in waits {
        let closed = w.await.expect("join");
        println!("case {i}: closed after {closed:?}");
        let closed = closed.unwrap_or_else(|| panic!("case {i} not closed within 5 s"));
        assert!(closed >= Duration::from_millis(500), "case {i}: {closed:?}");
        assert!(closed < Duration::from_millis(2000), "case {i}: {closed:?}");
    }
    assert_eq!(t.backend.count(), 5, "only the probes arrived");
}

/// While no connection is open the sweeper sleeps and the coarse clock it
/// keeps stands still. The first connection after an idle spell longer
/// than `header_read_timeout` must wake it (else a silent client is
/// never closed) and start from the real time (else it is closed at once,
/// its deadline long past on the stale clock); a client is served after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_idle_spell_a_silent_connection_closes_at_the_header_timeout() {
    let t = Target::start(", header_read_timeout: 600ms, idle_timeout: 30s", "");
    for _ in 0..2 {
        // Longer than the header timeout, with no connection open.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let s = TcpStream::connect(t.addr()).await.expect("connect");
        let closed = until_closed(s, Duration::from_secs(5)).await;
        println!("closed after {closed:?}");
        let closed = closed.expect("not closed within 5 s");
        assert!(closed >= Duration::from_millis(500), "{closed:?}");
        assert!(closed < Duration::from_millis(2000), "{closed:?}");
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(probe(t.addr(), 3, Duration::from_millis(50)).await.len(), 3);
    assert_eq!(t.backend.count(), 3);
}

/// Row 21: a flood of idle sockets past `max_connections` is refused (the
/// excess closed at once), the admin API still answers, and once the
/// silent sockets hit the header timeout, clients are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row21_connection_flood_is_bounded() {
    let t = Target::start(", max_connections: 30, header_read_timeout: 800ms", "");
    let mut idle = Vec::new();
    for _ in 0..30 {
        idle.push(TcpStream::connect(t.addr()).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let x = exchange(
        t.addr(),
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        Duration::from_secs(1),
    )
    .await;
    assert!(
        x.closed && x.bytes.is_empty(),
        "excess refused: {}",
        x.text()
    );
    let m = t.proxy.metrics();
    assert_eq!(sum(&m, "pointsman_connections_active"), 30.0);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let x = exchange(
        t.addr(),
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(x.status(), 200, "served once the silent sockets are gone");
    drop(idle);
}

/// Row 20 and SPEC 5.1: clients that request a large response and read
/// nothing hold bounded memory (under 256 KiB each above an idle
/// connection, whatever the response size: the proxy stops reading the
/// upstream) and are disconnected after `send_timeout`, which releases the
/// upstream connection too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row20_slow_readers_hold_bounded_memory_and_are_cut_at_send_timeout() {
    let _alone = super::TIMING.lock().await;
    const N: usize = 16;
    let t = Target::start(", send_timeout: 2s, header_read_timeout: 5s", "");
    // N idle keep-alive connections first: the baseline.
    let mut idle = Vec::new();
    for _ in 0..N {
        let mut s = TcpStream::connect(t.addr()).await.expect("connect");
        s.write_all(b"GET /warm HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
        idle.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = t.rss_kib();
    let mut slow = Vec::new();
    for _ in 0..N {
        let sock = TcpSocket::new_v4().expect("socket");
        sock.set_recv_buffer_size(4096).expect("rcvbuf");
        let mut s = sock.connect(t.addr()).await.expect("connect");
        s.write_all(b"GET /big?n=67108864 HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("write");
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let held = t.rss_kib();
    let per = held.saturating_sub(base) / N as u64;
    println!("RSS {base} KiB with {N} idle, {held} KiB with {N} slow readers: {per} KiB each");
    assert!(per < 256, "{per} KiB per slow reader");
    // Cut at the send timeout (2 s after the writes stalled), upstream
    // connections released.
    let started = Instant::now();
    let mut cut = 0;
    while started.elapsed() < Duration::from_secs(5) {
        let m = t.proxy.metrics();
        if sum(&m, "pointsman_connections_active") <= N as f64 {
            cut = N;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "slow readers cut {:?} after the memory check",
        started.elapsed()
    );
    assert_eq!(
        cut, N,
        "slow readers still connected after the send timeout"
    );
    let released = super::super::support::eventually(Duration::from_secs(3), || async {
        t.backend.closed.load(std::sync::atomic::Ordering::SeqCst) >= N
    })
    .await;
    assert!(released, "upstream connections released");
    // The idle ones were never at fault and are still served.
    let mut s = idle.pop().expect("idle");
    s.write_all(b"GET /again HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    drop(slow);
}

/// Row 19: a request body that trickles in is cut at the upstream's
/// `request_timeout` with a 408 (the client's fault: never counted as the
/// upstream's timeout), and the backend connection is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row19_slow_body_is_cut_at_the_request_timeout() {
    let backend = crate::support::upstream::in_background(crate::support::recorder::recorder);
    let rules =
        super::rules(backend.addr, "", "").replace("request_timeout: 5s", "request_timeout: 800ms");
    let proxy = crate::support::binary::Binary::launch()
        .args(&["--access-log", "off"])
        .start(&rules);
    let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\nx")
        .await
        .expect("write");
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") && start.elapsed() < Duration::from_secs(4) {
        let _ = s.write_all(b"x").await;
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }
    let text = String::from_utf8_lossy(&out);
    println!(
        "after {:?}: {}",
        start.elapsed(),
        text.lines().next().unwrap_or("")
    );
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(start.elapsed() < Duration::from_secs(2));
    let m = proxy.metrics();
    let timeouts = crate::support::prom::find(
        &m,
        "pointsman_upstream_errors_total",
        &[("upstream", "rec"), ("kind", "timeout")],
    );
    assert!(
        timeouts.iter().all(|s| s.value == 0.0),
        "a slow upload is not the upstream's timeout: {timeouts:?}"
    );
    let released = crate::support::eventually(Duration::from_secs(2), || async {
        backend.closed.load(std::sync::atomic::Ordering::SeqCst) >= 1
    })
    .await;
    assert!(released, "the backend connection is closed");
}

/// Row 6 and SPEC 5.1: an upgraded stream echoes while bytes move, and is
/// closed once no byte has moved either way for `tunnel_idle_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row6_idle_tunnels_are_closed() {
    let t = Target::start(", tunnel_idle_timeout: 700ms", "");
    let mut s = TcpStream::connect(t.addr()).await.expect("connect");
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).await.expect("101");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Kept open while it is used: 1.4 s of traffic every 250 ms.
    for i in 0..6 {
        let msg = format!("ping {i}");
        s.write_all(msg.as_bytes()).await.expect("write");
        let n = s.read(&mut buf).await.expect("echo");
        assert_eq!(&buf[..n], msg.as_bytes());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let closed = until_closed(s, Duration::from_secs(3)).await;
    println!("idle tunnel closed after {closed:?}");
    let closed = closed.expect("idle tunnel closed");
    assert!(closed >= Duration::from_millis(400) && closed < Duration::from_millis(2000));
}

/// Rows 18 and 20 together, as the isolation promise sees them: 100 slow
/// or silent connections from one client do not make another client wait
/// 20 ms longer (see [`super::assert_isolated`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_do_not_delay_others() {
    let _alone = super::TIMING.lock().await;
    let t = Target::start(", send_timeout: 20s, header_read_timeout: 20s", "");
    let base = probe(t.addr(), 30, Duration::from_millis(10)).await;
    let mut held = Vec::new();
    for i in 0..100 {
        let sock = TcpSocket::new_v4().expect("socket");
        sock.set_recv_buffer_size(4096).expect("rcvbuf");
        let mut s = sock.connect(t.addr()).await.expect("connect");
        let req: &[u8] = match i % 3 {
            0 => b"GET /big?n=16777216 HTTP/1.1\r\nHost: a\r\n\r\n",
            1 => b"GET / HTTP/1.1\r\nHost: a\r\n",
            _ => b"",
        };
        s.write_all(req).await.expect("write");
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = probe(t.addr(), 30, Duration::from_millis(10)).await;
    let (b, d) = (quantile(&base, 0.9), quantile(&during, 0.9));
    println!("probe p90 {b:.2} ms before, {d:.2} ms with 100 slow connections");
    super::assert_isolated("100 slow clients", &base, &during);
    drop(held);
}
