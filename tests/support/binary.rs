//! The real `pointsman` binary, started on free ephemeral ports with a rule
//! file written to a temporary directory, and stopped when dropped.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running `pointsman run`.
pub struct Binary {
    pub child: Child,
    /// The first public listener.
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
}

impl Binary {
    /// Writes `rules` (with `{LISTEN}` and `{ADMIN}` replaced by free
    /// addresses) to `routes.yaml` in a new temp dir and runs the proxy on it.
    pub fn start(rules: &str) -> Binary {
        Binary::start_with(rules, &[])
    }

    /// As [`Binary::start`], with extra `run` arguments.
    pub fn start_with(rules: &str, args: &[&str]) -> Binary {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let text = rules
            .replace("{LISTEN}", &addr.to_string())
            .replace("{ADMIN}", &admin.to_string());
        let config = dir.path().join("routes.yaml");
        std::fs::write(&config, text).expect("write rules");
        let log = dir.path().join("pointsman.log");
        let child = Command::new(env!("CARGO_BIN_EXE_pointsman"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .args(args)
            .env("POINTSMAN_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start pointsman");
        let mut b = Binary {
            child,
            addr,
            admin,
            dir,
            log,
        };
        b.wait_ready();
        b
    }

    /// The rule file's path.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("routes.yaml")
    }

    /// What the proxy logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("pointsman exited with {status}: {}", self.log_text());
            }
            if admin_get(self.admin, "/readyz").is_some_and(|(code, _)| code == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("pointsman not ready: {}", self.log_text());
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking `GET` on the admin listener: (status, body).
pub fn admin_get(admin: SocketAddr, path: &str) -> Option<(u16, String)> {
    http_blocking(admin, "GET", path, &[], "")
}

/// A minimal blocking HTTP/1.1 request over a fresh connection.
pub fn http_blocking(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

/// Runs `pointsman ARGS...` to completion: (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], cwd: Option<&Path>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pointsman"));
    cmd.args(args);
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    let out = cmd.output().expect("run pointsman");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
