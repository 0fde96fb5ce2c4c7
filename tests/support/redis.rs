//! A real `redis-server` on a free port of 127.0.0.1, with no persistence,
//! for fleet-mode tests. It can be stopped and started again on the same
//! port (a store outage). Without `redis-server` installed, tests skip
//! loudly, except under `CI=true`, where they fail (`.ci/run` installs it).

use super::binary::free_port;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) `redis-server`.
#[derive(Debug)]
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts `redis-server`; `None` (after saying so on stderr) when it is
    /// not installed and `CI` is not `true`.
    pub fn start() -> Option<Redis> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(
                !ci,
                "redis-server is not installed: `.ci/run` installs it (apt-get install redis-server)"
            );
            eprintln!(
                "SKIPPED: redis-server is not installed; fleet tests need it \
                 (apt-get install redis-server, or run .ci/run)"
            );
            return None;
        }
        // A free port can be taken between the probe and the bind: retry.
        for _ in 0..5 {
            let mut r = Redis {
                port: free_port(),
                child: None,
                dir: tempfile::tempdir().expect("tempdir"),
            };
            if r.resume() {
                return Some(r);
            }
        }
        panic!("redis-server did not start");
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (a store outage); its data is gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port; true once it answers.
    pub fn resume(&mut self) -> bool {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return true;
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Runs one command (inline protocol) and returns the raw reply.
    pub fn command(&self, line: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(format!("{line}\r\n").as_bytes()).ok()?;
        let mut buf = [0u8; 65536];
        let n = s.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    fn ping(&self) -> bool {
        self.command("PING").is_some_and(|r| r.starts_with("+PONG"))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
