//! `pointsman reload`: ask a running proxy to reload, the way `nginx -s
//! reload` does, but with the verdict. The proxy is found through the
//! config's own `admin.bind` and `admin.token_file`, and asked with
//! `POST /reload` (SPEC 1, 8). `pointsman health` asks the same proxy's
//! `GET /readyz` (a container's HEALTHCHECK, where no curl exists).
//!
//! Only the `admin` section is read here, and each file on its own: a file
//! with an error elsewhere still names the proxy, which then gives its
//! verdict on the whole config (with the same `FILE:LINE:COL` errors as
//! `check`).

use crate::config::{self, Diagnostic};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The admin listener when the config names none (SPEC 8).
pub const DEFAULT_ADMIN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9901);

/// How long the proxy may take to answer: a reload compiles the whole
/// config, which for tens of thousands of routes takes seconds.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The proxy to ask and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Where to connect: `admin.bind`, with an unspecified address
    /// (`0.0.0.0`, `[::]`) asked on loopback.
    pub addr: SocketAddr,
    /// The bearer token, when `admin.token_file` is set.
    pub token: Option<String>,
}

/// Why the proxy could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// No file says where the admin listener is, and some could not be
    /// read: their errors.
    #[error("cannot read admin.bind: the config has errors")]
    Config(Vec<Diagnostic>),
    /// `admin.bind` is not an address.
    #[error("{0}: admin.bind {1:?} is not IP:PORT")]
    Bind(Diagnostic, String),
    /// The token file cannot be read.
    #[error("cannot read admin.token_file {path}: {1}", path = .0.display())]
    Token(PathBuf, std::io::Error),
}

/// Finds the admin listener and token of the config at `path`.
pub fn target(path: &Path) -> Result<Target, TargetError> {
    let files = config::list_files(path).map_err(|d| TargetError::Config(vec![d]))?;
    let mut errors = Vec::new();
    for file in files {
        let name = file.display().to_string();
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                errors.push(Diagnostic::whole_file(
                    &name,
                    format!("cannot read file: {e}"),
                ));
                continue;
            }
        };
        let doc = match config::parse(&name.as_str().into(), &text) {
            Ok(doc) => doc,
            Err(d) => {
                errors.push(d);
                continue;
            }
        };
        let Some(admin) = doc.admin else { continue };
        let addr = match &admin.value.bind {
            None => DEFAULT_ADMIN,
            Some(b) => match b.value.parse::<SocketAddr>() {
                Ok(a) => loopback_for(a),
                Err(_) => {
                    let d = Diagnostic {
                        file: name.as_str().into(),
                        line: b.referenced.line(),
                        column: b.referenced.column(),
                        severity: config::Severity::Error,
                        message: "admin.bind is not IP:PORT".into(),
                    };
                    return Err(TargetError::Bind(d, b.value.clone()));
                }
            },
        };
        let token = match &admin.value.token_file {
            None => None,
            Some(t) => {
                let dir = file.parent().unwrap_or(Path::new(""));
                let written = Path::new(&t.value);
                let p = if written.is_absolute() {
                    written.to_path_buf()
                } else {
                    dir.join(written)
                };
                match std::fs::read_to_string(&p) {
                    Ok(s) => Some(s.trim().to_string()),
                    Err(e) => return Err(TargetError::Token(p, e)),
                }
            }
        };
        return Ok(Target { addr, token });
    }
    if errors.is_empty() {
        Ok(Target {
            addr: DEFAULT_ADMIN,
            token: None,
        })
    } else {
        Err(TargetError::Config(errors))
    }
}

/// A listener on every address is asked on loopback.
fn loopback_for(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), a.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), a.port())
        }
        _ => a,
    }
}

/// What the proxy said.
#[derive(Debug)]
pub enum Outcome {
    /// 200: the config is active (or was already); the `/config` body.
    Reloaded(serde_json::Value),
    /// 422: the config was refused; one `FILE:LINE:COL: error: ...` line
    /// per problem. The old config keeps serving.
    Refused(Vec<String>),
    /// The token was missing (401) or wrong (403).
    Unauthorized(u16),
    /// Nothing usable answered: no listener, a timeout, or an answer that
    /// is not the admin API's.
    NoAnswer(String),
}

/// Sends `POST /reload` to the proxy and reads its verdict.
pub fn request(target: &Target) -> Outcome {
    match exchange(target, "POST", "/reload") {
        Ok((status, body)) => verdict(status, &body),
        Err(e) => Outcome::NoAnswer(format!("no proxy answered on {}: {e}", target.addr)),
    }
}

/// Asks the proxy's `GET /readyz`: `Ok` with its answer when it is ready
/// (200), `Err` with why not.
pub fn ready(target: &Target) -> Result<String, String> {
    match exchange(target, "GET", "/readyz") {
        Ok((200, body)) => Ok(String::from_utf8_lossy(&body).trim().to_string()),
        Ok((status, body)) => Err(format!(
            "not ready (HTTP {status}): {}",
            String::from_utf8_lossy(&body).trim()
        )),
        Err(e) => Err(format!("no proxy answered on {}: {e}", target.addr)),
    }
}

fn exchange(target: &Target, method: &str, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let addr = target.addr.to_socket_addrs()?.next().unwrap_or(target.addr);
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    stream.set_write_timeout(Some(CONNECT_TIMEOUT))?;
    // HTTP/1.0: the answer is delimited by the connection's end, so no
    // chunked decoding is needed.
    let mut head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {}\r\nContent-Length: 0\r\nUser-Agent: pointsman/{}\r\n",
        target.addr,
        crate::version::VERSION
    );
    if let Some(token) = &target.token {
        head.push_str("Authorization: Bearer ");
        head.push_str(token);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    parse_answer(&answer)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer"))
}

/// The status and body of an HTTP/1.x answer.
fn parse_answer(answer: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..end]).ok()?;
    let status_line = head.lines().next()?;
    let mut parts = status_line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    Some((status, answer[end + 4..].to_vec()))
}

fn verdict(status: u16, body: &[u8]) -> Outcome {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    match (status, json) {
        (200, Some(v)) if v.get("generation").is_some() => Outcome::Reloaded(v),
        (422, Some(v)) => {
            let mut errors: Vec<String> = v["errors"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if errors.is_empty()
                && let Some(e) = v["error"].as_str()
            {
                errors.push(e.to_string());
            }
            Outcome::Refused(errors)
        }
        (401 | 403, _) => Outcome::Unauthorized(status),
        (s, _) => Outcome::NoAnswer(format!(
            "unexpected answer (HTTP {s}): {}",
            String::from_utf8_lossy(body).trim()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_binds_are_asked_on_loopback() {
        let a: SocketAddr = "0.0.0.0:9901".parse().unwrap();
        assert_eq!(loopback_for(a), "127.0.0.1:9901".parse().unwrap());
        let a: SocketAddr = "[::]:9901".parse().unwrap();
        assert_eq!(loopback_for(a), "[::1]:9901".parse().unwrap());
        let a: SocketAddr = "10.1.2.3:9901".parse().unwrap();
        assert_eq!(loopback_for(a), a);
    }

    #[test]
    fn answers_become_verdicts() {
        let ok = b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{\"generation\": 4}";
        let (s, body) = parse_answer(ok).unwrap();
        assert!(matches!(verdict(s, &body), Outcome::Reloaded(v) if v["generation"] == 4));
        let refused = br#"{"error": "a.yaml:1:1: error: x", "errors": ["a.yaml:1:1: error: x", "a.yaml:2:1: error: y"]}"#;
        match verdict(422, refused) {
            Outcome::Refused(e) => assert_eq!(e.len(), 2),
            other => panic!("{other:?}"),
        }
        assert!(matches!(verdict(403, b""), Outcome::Unauthorized(403)));
        assert!(matches!(verdict(404, b"not found"), Outcome::NoAnswer(_)));
        assert!(parse_answer(b"SSH-2.0-OpenSSH\r\n\r\n").is_none());
    }
}
