//! A raw HTTP/1.1 backend that records, byte for byte, every request head
//! and de-framed body it receives (per connection), so that a hostile test
//! can assert that nothing was smuggled: it parses framing itself instead
//! of trusting a library to smooth it over.
//!
//! Answers, by path: `/blockedz` "hidden treasure" (RELIABILITY [E6]: a
//! route that must never be reached); `/big?n=BYTES` a body of that many
//! bytes; `/slow?ms=N` after N ms; `/echo-id` the request's `x-request-id`
//! as the body; an `Upgrade` request 101 and an echo of the tunnel (but
//! 200 under `/no-upgrade`); anything else `ok`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the backend received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The connection it came on (numbered from 0).
    pub conn: usize,
    /// The head exactly as sent, without the final CRLF CRLF.
    pub head: String,
    /// The body after de-chunking.
    pub body: Vec<u8>,
}

impl Recorded {
    /// The request line.
    pub fn line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }
    /// The request target.
    pub fn path(&self) -> &str {
        self.line().split(' ').nth(1).unwrap_or("")
    }
    /// Every value of header `name` (any case), in order.
    pub fn header(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
    /// Whether header `name` is present.
    pub fn has(&self, name: &str) -> bool {
        !self.header(name).is_empty()
    }
}

/// A running recorder.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Recorded>>>,
    /// Connections accepted.
    pub conns: Arc<AtomicUsize>,
    /// Connections that ended (closed by the peer or after an error).
    pub closed: Arc<AtomicUsize>,
}

impl Recorder {
    /// Everything received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }
    /// How many requests arrived.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
    /// Whether any request asked for `/blockedz` (or anything under it).
    pub fn saw_treasure(&self) -> bool {
        self.requests()
            .iter()
            .any(|r| r.path().contains("blockedz"))
    }
    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

/// Starts a recorder on 127.0.0.1:0, on the current runtime.
pub async fn recorder() -> Recorder {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let rec = Recorder {
        addr: listener.local_addr().expect("addr"),
        seen: Arc::default(),
        conns: Arc::default(),
        closed: Arc::default(),
    };
    let r = rec.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let id = r.conns.fetch_add(1, Ordering::SeqCst);
            let r = r.clone();
            tokio::spawn(async move {
                let _ = serve(stream, id, &r).await;
                r.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    rec
}

/// Bytes read but not yet consumed, on one connection.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Reads more; false at EOF.
    async fn fill(&mut self) -> std::io::Result<bool> {
        let mut chunk = [0u8; 16384];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }
    /// The next line (without CRLF); an error on EOF or a bare LF.
    async fn line(&mut self) -> std::io::Result<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let Some(line) = line.strip_suffix(b"\r\n") else {
                    return Err(std::io::Error::other("bare LF"));
                };
                return Ok(String::from_utf8_lossy(line).into_owned());
            }
            if !self.fill().await? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
    async fn exact(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(self.buf.drain(..n).collect())
    }
}

async fn serve(stream: TcpStream, id: usize, r: &Recorder) -> std::io::Result<()> {
    let mut c = Conn {
        stream,
        buf: Vec::new(),
    };
    loop {
        // The head, line by line.
        let mut lines = Vec::new();
        loop {
            let line = match c.line().await {
                Ok(l) => l,
                Err(_) if lines.is_empty() => return Ok(()),
                Err(e) => return Err(e),
            };
            if line.is_empty() {
                if lines.is_empty() {
                    continue;
                }
                break;
            }
            lines.push(line);
        }
        let req = Recorded {
            conn: id,
            head: lines.join("\r\n"),
            body: Vec::new(),
        };
        let te = req.header("transfer-encoding");
        let cl = req.header("content-length");
        let body = if te
            .last()
            .is_some_and(|v| v.to_ascii_lowercase().ends_with("chunked"))
        {
            dechunk(&mut c).await?
        } else if let Some(n) = cl.first() {
            let n: usize = n.parse().map_err(std::io::Error::other)?;
            c.exact(n).await?
        } else {
            Vec::new()
        };
        let req = Recorded { body, ..req };
        r.seen.lock().unwrap().push(req.clone());
        if !answer(&mut c, &req).await? {
            return Ok(());
        }
    }
}

async fn dechunk(c: &mut Conn) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = c.line().await?;
        let size = line.split(';').next().unwrap_or("").trim();
        let n = usize::from_str_radix(size, 16).map_err(std::io::Error::other)?;
        if n == 0 {
            // Trailers, then the empty line.
            while !c.line().await?.is_empty() {}
            return Ok(body);
        }
        body.extend(c.exact(n).await?);
        if c.exact(2).await? != b"\r\n" {
            return Err(std::io::Error::other("chunk without CRLF"));
        }
    }
}

/// Answers `req`; false when the connection is to close.
async fn answer(c: &mut Conn, req: &Recorded) -> std::io::Result<bool> {
    let path = req.path().to_owned();
    let query = |k: &str| -> Option<u64> {
        path.split_once('?')?
            .1
            .split('&')
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')?.parse().ok())
    };
    if req.has("upgrade") && !path.starts_with("/no-upgrade") {
        c.stream
            .write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
            )
            .await?;
        if !c.buf.is_empty() {
            let early = std::mem::take(&mut c.buf);
            c.stream.write_all(&early).await?;
        }
        let (mut rd, mut wr) = c.stream.split();
        let _ = tokio::io::copy(&mut rd, &mut wr).await;
        return Ok(false);
    }
    if let Some(ms) = query("ms") {
        // Waits, but notices a proxy that gives up meanwhile.
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(ms)) => {}
            more = c.fill() => if !matches!(more, Ok(true)) {
                return Ok(false);
            },
        }
    }
    let close = req
        .header("connection")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("close"));
    if path.starts_with("/big") {
        let n = query("n").unwrap_or(1 << 20) as usize;
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n");
        c.stream.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 65536];
        let mut left = n;
        while left > 0 {
            let k = left.min(chunk.len());
            c.stream.write_all(&chunk[..k]).await?;
            left -= k;
        }
        return Ok(!close);
    }
    let body = if path.contains("blockedz") {
        "hidden treasure".to_owned()
    } else if path.starts_with("/echo-id") {
        req.header("x-request-id")
            .first()
            .cloned()
            .unwrap_or_default()
    } else {
        "ok".to_owned()
    };
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: x-int\r\nX-Int: secret\r\nKeep-Alive: timeout=5\r\n\r\n{body}",
        body.len()
    );
    c.stream.write_all(resp.as_bytes()).await?;
    Ok(!close)
}
