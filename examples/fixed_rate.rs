//! An open-loop HTTP/1.1 load generator: requests go out on a fixed
//! schedule whatever the answers do, as wrk2 sends them, and each latency
//! counts from when its request was due. A stall of the server therefore
//! counts against every request it delays, not once per connection as in
//! wrk's closed loop (coordinated omission), and the percentiles are those
//! of a server at a load below its capacity, as in production, rather
//! than of its queue at saturation. `benches/e2e.sh`'s `rate` section runs
//! it against each proxy in turn.
//!
//! ```sh
//! cargo run --release --example fixed_rate -- ADDR RATE CONNS SECONDS [WARMUP] [PATH]
//! ```
//!
//! RATE requests a second in all, spread evenly over CONNS keep-alive
//! connections (request `j` is due at `j / RATE` seconds, on connection
//! `j % CONNS`); the first WARMUP seconds (default 1) are not counted. It
//! prints one line of `key=value` pairs: requests counted, errors, the
//! requests still unanswered at the end, the achieved rate, and the
//! latency percentiles in microseconds. A connection still waiting for an
//! answer when its next request is due sends that request as soon as the
//! answer is in (HTTP/1.1 has no pipelining here); its latency still
//! counts from when it was due. One thread; it sleeps in `ppoll` until the
//! next request is due or an answer comes, with its timer slack at 1 ns.
#![allow(unsafe_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error>;

/// One keep-alive connection and the request it waits for.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// When the request in flight was due; `None` while idle.
    in_flight: Option<Instant>,
    /// The number of this connection's next request.
    next: u64,
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: fixed_rate ADDR RATE CONNS SECONDS [WARMUP] [PATH]";
    let (addr, rate, conns, seconds) = match &args[..] {
        [a, r, c, s, ..] => (
            a.as_str(),
            r.parse::<f64>()?,
            c.parse::<u64>()?,
            s.parse::<f64>()?,
        ),
        _ => return Err(usage.into()),
    };
    let warmup: f64 = args.get(4).map_or(Ok(1.0), |w| w.parse())?;
    let path = args.get(5).map_or("/", String::as_str);
    if rate <= 0.0 || conns == 0 || seconds <= 0.0 {
        return Err(usage.into());
    }
    set_timer_slack_ns(1);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: fixed_rate\r\n\r\n");

    let mut pool = Vec::new();
    for i in 0..conns {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        pool.push(Conn {
            stream,
            buf: Vec::with_capacity(4096),
            in_flight: None,
            next: i,
        });
    }

    let start = Instant::now() + Duration::from_millis(20);
    let due = |j: u64| start + Duration::from_secs_f64(j as f64 / rate);
    let counted_from = start + Duration::from_secs_f64(warmup);
    let end = counted_from + Duration::from_secs_f64(seconds);
    let mut latencies: Vec<u32> = Vec::with_capacity((rate * seconds * 1.1) as usize);
    let mut errors = 0u64;
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(pool.len());
    let mut owners: Vec<usize> = Vec::with_capacity(pool.len());

    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        // Send every request that is due on a connection that is free.
        let mut wake = end;
        for c in &mut pool {
            if c.in_flight.is_some() {
                continue;
            }
            let when = due(c.next);
            if when > now {
                wake = wake.min(when);
                continue;
            }
            match c.stream.write(request.as_bytes()) {
                Ok(n) if n == request.len() => {}
                _ => return Err("a request did not fit in the socket's send buffer".into()),
            }
            c.in_flight = Some(when);
            c.next += conns;
        }
        // Wait for answers until the next request is due.
        fds.clear();
        owners.clear();
        for (i, c) in pool.iter().enumerate() {
            if c.in_flight.is_some() {
                fds.push(libc::pollfd {
                    fd: c.stream.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                owners.push(i);
            }
        }
        ppoll(&mut fds, wake.saturating_duration_since(Instant::now()))?;
        let now = Instant::now();
        for (fd, &i) in fds.iter().zip(&owners) {
            if fd.revents == 0 {
                continue;
            }
            let c = &mut pool[i];
            match read_answer(c) {
                Ok(None) => {}
                Ok(Some(status)) => {
                    let Some(when) = c.in_flight.take() else {
                        continue;
                    };
                    if when >= counted_from {
                        let us = now.duration_since(when).as_micros();
                        latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
                        if status != 200 {
                            errors += 1;
                        }
                    }
                }
                Err(e) => return Err(format!("connection {i}: {e}").into()),
            }
        }
    }

    let unanswered = pool
        .iter()
        .filter(|c| c.in_flight.is_some_and(|w| w >= counted_from))
        .count();
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "requests={} errors={errors} unanswered={unanswered} rate={:.0} p50_us={} p90_us={} p99_us={} p999_us={} max_us={}",
        latencies.len(),
        latencies.len() as f64 / seconds,
        at(0.50),
        at(0.90),
        at(0.99),
        at(0.999),
        latencies.last().copied().unwrap_or(0),
    );
    Ok(())
}

/// Reads what the socket has; the answer's status once it is complete.
/// Answers carry a `Content-Length` (the benches' backend sends one).
fn read_answer(c: &mut Conn) -> Result<Option<u16>, BoxError> {
    let mut chunk = [0u8; 4096];
    loop {
        match c.stream.read(&mut chunk) {
            Ok(0) => return Err("closed by the server".into()),
            Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut head = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head_len) = head.parse(&c.buf)? else {
        return Ok(None);
    };
    let length = head
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .ok_or("an answer without a Content-Length")?;
    let status = head.code.unwrap_or(0);
    if c.buf.len() < head_len + length {
        return Ok(None);
    }
    if c.buf.len() > head_len + length {
        return Err("more bytes than the answer".into());
    }
    c.buf.clear();
    Ok(Some(status))
}

/// `ppoll` for at most `timeout`: a nanosecond timeout, where `poll` takes
/// milliseconds.
fn ppoll(fds: &mut [libc::pollfd], timeout: Duration) -> std::io::Result<()> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `fds` is a valid slice of pollfd for the call's length, `ts`
    // lives across the call, and a null signal mask leaves it unchanged.
    let r = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// Sleeps end within `ns` of their time (the default slack is 50 µs).
fn set_timer_slack_ns(ns: libc::c_ulong) {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and touches no
    // memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, ns, 0, 0, 0);
    }
}
