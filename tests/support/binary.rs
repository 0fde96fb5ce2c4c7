//! The real `pointsman` binary: `pointsman run` on free ephemeral ports
//! (stopped when dropped, its log printed if the test failed), and other
//! commands run to completion.

use super::http::{Reply, send_blocking};
use super::prom::{self, Sample};
use serde_json::Value;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A free port on 127.0.0.1 (bound, then released).
///
/// Taken below the kernel's ephemeral range (32768–60999 by default): a
/// port found free here and bound later by a child proxy can then not be
/// taken in between by another test's port-0 listener or outgoing
/// connection, which is what made tests under load talk to the wrong
/// server now and then. Each port is handed out once per test process.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let start = std::process::id().wrapping_mul(7_919);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = (LOW + start.wrapping_add(n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// 127.0.0.1:`port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A running `pointsman run`.
#[derive(Debug)]
pub struct Binary {
    pub child: Child,
    /// The first public listener.
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// The rule file (or folder) it runs on.
    pub config: PathBuf,
    /// Its stdout and stderr.
    pub log: PathBuf,
    /// The temporary folder it made, if it made one.
    pub dir: Option<tempfile::TempDir>,
}

/// How to run the binary; see [`Binary::launch`].
#[derive(Debug, Clone)]
pub struct Launch {
    args: Vec<String>,
    log_filter: String,
    dir: Option<PathBuf>,
    files: Vec<(String, String)>,
}

impl Launch {
    /// Extra `run` arguments.
    pub fn args(mut self, args: &[&str]) -> Launch {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// `POINTSMAN_LOG` (default `info`).
    pub fn log_filter(mut self, filter: &str) -> Launch {
        self.log_filter = filter.into();
        self
    }

    /// Writes the rule file (and the log) to `dir` rather than to a new
    /// temporary folder, so that a later run can find what this one left.
    pub fn in_dir(mut self, dir: &Path) -> Launch {
        self.dir = Some(dir.to_owned());
        self
    }

    /// Writes a file next to the rule file.
    pub fn file(mut self, name: &str, text: &str) -> Launch {
        self.files.push((name.into(), text.into()));
        self
    }

    /// Writes `rules` (with `{LISTEN}` and `{ADMIN}` replaced by free
    /// addresses) to `routes.yaml` and runs the proxy on it.
    pub fn start(self, rules: &str) -> Binary {
        let (made, dir) = match &self.dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::tempdir().expect("tempdir");
                let p = t.path().to_owned();
                (Some(t), p)
            }
        };
        for (name, content) in &self.files {
            std::fs::write(dir.join(name), content).expect("write file");
        }
        let config = dir.join("routes.yaml");
        // A free port can be taken by another test (or another process)
        // between our probe and the proxy's bind: try fresh ports then.
        for attempt in 1.. {
            let (addr, admin) = (local(free_port()), local(free_port()));
            let text = rules
                .replace("{LISTEN}", &addr.to_string())
                .replace("{ADMIN}", &admin.to_string());
            std::fs::write(&config, text).expect("write rules");
            let mut b = self.spawn(&config, addr, admin, &dir);
            match b.wait_ready() {
                Ok(()) => {
                    b.dir = made;
                    return b;
                }
                Err(log) if attempt < 5 && log.contains("cannot bind") => continue,
                Err(log) => panic!("pointsman did not start: {log}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// Runs on `config` (a file or folder the caller wrote), which listens
    /// on `listen` with its admin API on `admin`.
    pub fn run(self, config: &Path, listen: u16, admin: u16) -> Binary {
        let t = tempfile::tempdir().expect("tempdir");
        let mut b = self.spawn(config, local(listen), local(admin), t.path());
        b.dir = Some(t);
        if let Err(log) = b.wait_ready() {
            panic!("pointsman did not start: {log}");
        }
        b
    }

    fn spawn(&self, config: &Path, addr: SocketAddr, admin: SocketAddr, dir: &Path) -> Binary {
        let log = dir.join(format!("pointsman-{}.log", addr.port()));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(binary_path())
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(&self.args)
            .env("POINTSMAN_LOG", &self.log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("start pointsman");
        Binary {
            child,
            addr,
            admin,
            config: config.to_owned(),
            log,
            dir: None,
        }
    }
}

impl Binary {
    /// How to run it: no extra arguments, `POINTSMAN_LOG=info`.
    pub fn launch() -> Launch {
        Launch {
            args: Vec::new(),
            log_filter: "info".into(),
            dir: None,
            files: Vec::new(),
        }
    }

    /// Writes `rules` (with `{LISTEN}` and `{ADMIN}` replaced by free
    /// addresses) to `routes.yaml` in a new temp dir and runs the proxy on it.
    pub fn start(rules: &str) -> Binary {
        Binary::launch().start(rules)
    }

    /// As [`Binary::start`], with extra `run` arguments.
    pub fn start_with(rules: &str, args: &[&str]) -> Binary {
        Binary::launch().args(args).start(rules)
    }

    /// What the proxy logged so far. Lines reach the file from the proxy's
    /// log thread a moment after they are logged, so this waits until the
    /// file has not grown for 30 ms (at most 500 ms).
    pub fn log_text(&self) -> String {
        let size = || std::fs::metadata(&self.log).map_or(0, |m| m.len());
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut last = size();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(30));
            let now = size();
            if now == last {
                break;
            }
            last = now;
        }
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every JSON log line (`--log-format json`) with this `target`.
    pub fn json_log(&self, target: &str) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == target)
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// A blocking `GET` on the listener.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        send_blocking(self.addr, "GET", path, headers, "").expect("GET")
    }

    /// A blocking request to the admin API.
    pub fn admin(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        send_blocking(self.admin, method, path, headers, body).expect("admin request")
    }

    /// `GET /metrics`, parsed.
    pub fn metrics(&self) -> Vec<Sample> {
        let r = self.admin("GET", "/metrics", &[], "");
        assert_eq!(r.status, 200);
        prom::parse(&r.body)
    }

    /// `GET /config` (async).
    pub async fn config(&self) -> Value {
        let (status, body) = super::fetch(&super::client(), &self.admin_url("/config"))
            .await
            .expect("GET /config");
        assert_eq!(status, 200);
        serde_json::from_str(&body).expect("config JSON")
    }

    /// `POST /reload` (async): the status and the JSON body.
    pub async fn post_reload(&self) -> (http::StatusCode, Value) {
        let req = http::Request::post(self.admin_url("/reload"))
            .body(Default::default())
            .expect("request");
        let (parts, body) = super::send(&super::client(), req).await;
        let json = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "reload JSON: {e}: {} {:?}",
                parts.status,
                String::from_utf8_lossy(&body)
            )
        });
        (parts.status, json)
    }

    /// The active generation (async).
    pub async fn generation(&self) -> u64 {
        self.config().await["generation"]
            .as_u64()
            .expect("generation")
    }

    /// Sends a signal (`HUP`, `TERM`, `INT`) to the process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit, up to `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for `/readyz`; `Err` with the log when the process exited or
    /// never became ready.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}: {}", self.log_text()));
            }
            if send_blocking(self.admin, "GET", "/readyz", &[], "").is_ok_and(|r| r.status == 200) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("not ready: {}", self.log_text()))
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- pointsman log ---\n{}", self.log_text());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary under test: `POINTSMAN_TEST_BIN` when set (e.g. a release
/// build, to measure what users run), else the one cargo built for the
/// tests.
pub fn binary_path() -> std::ffi::OsString {
    std::env::var_os("POINTSMAN_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_pointsman").into())
}

/// Runs `pointsman ARGS...` to completion: (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], cwd: Option<&Path>) -> (i32, String, String) {
    let mut cmd = Command::new(binary_path());
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
