//! Ready to deploy (issue 18), against the real binary:
//!
//! - `reload_reports_success_refusal_and_no_proxy`: `pointsman reload`
//!   exits 0 with the new generation, 1 with the proxy's `FILE:LINE:COL`
//!   errors, 3 when the token is refused or no proxy answers; `health`
//!   exits 0 while `/readyz` is 200, 1 without a proxy; `/metrics` has
//!   `pointsman_build_info`.
//! - `version_shows_the_commit`: `--version` names the checkout's commit.
//! - `schema_is_published_and_validates_every_example`: `pointsman schema`
//!   is the committed `schema/pointsman.schema.json`; every example,
//!   `routes/demo.yaml`, the Kubernetes rules and `tests/data/lenient.yaml`
//!   pass both `check` and the schema, and carry the `$schema` line.
//! - `bad_files_are_refused_by_schema_and_loader`: each file of
//!   `tests/data/bad/` is refused by both, `check` with its expected error.
//! - `completions_name_every_command`: bash, zsh and fish scripts.
//! - `redirect_template_keeps_host_path_and_query`: SPEC 2.2.
//! - `access_line_carries_every_spec_10_field`: a forwarded request, and a
//!   502 after a retry (attempts 2, its token, the reason at warn).
//! - `kubernetes_manifests_pass_strict_validation`, `systemd_unit_verifies_
//!   and_is_hardened`: the `deploy/` files, with external tools (see
//!   [`tool`]).

use crate::support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::binary::{Binary, free_port, run_cli};
use support::http::send_blocking;
use support::upstream::{in_background, tagged};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

// === reload, version, build info ===

#[test]
fn reload_reports_success_refusal_and_no_proxy() {
    let up = in_background(|| tagged("v1"));
    let rules = format!(
        r#"listen: [{{ bind: "{{LISTEN}}" }}]
admin: {{ bind: "{{ADMIN}}", token_file: token.txt }}
upstreams:
  v1: {{ endpoints: ["{up}"] }}
routes:
  - {{ name: all, to: v1 }}
"#
    );
    let p = Binary::launch()
        .file("token.txt", "  s3cret\n")
        .start(&rules);
    let config = path_str(&p.config).to_string();

    let (code, out, err) = run_cli(&["reload", "--config", &config], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("reloaded: generation 2 (sha256 "), "{out}");
    let (code, out, err) = run_cli(&["health", "--config", &config], None);
    assert_eq!((code, out.trim()), (0, "ready"), "{err}");

    // A config the proxy refuses: its errors, exit 1, the old one serving.
    let current = std::fs::read_to_string(&p.config).unwrap();
    std::fs::write(&p.config, current.replace("to: v1", "to: nowhere")).unwrap();
    let (code, out, err) = run_cli(&["reload", "--config", &config], None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("routes.yaml:6:") && out.contains(": error: ") && out.contains("nowhere"),
        "{out}"
    );
    assert!(err.contains("refused the config"), "{err}");
    assert_eq!(p.get("/", &[]).status, 200);

    // A wrong token: the proxy answered, but not to us.
    std::fs::write(&p.config, &current).unwrap();
    let token = p.config.with_file_name("token.txt");
    std::fs::write(&token, "wrong").unwrap();
    let (code, _, err) = run_cli(&["reload", "--config", &config], None);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("HTTP 403"), "{err}");

    // No proxy on admin.bind.
    let dir = tempfile::tempdir().unwrap();
    let lonely = dir.path().join("r.yaml");
    let port = free_port();
    std::fs::write(&lonely, format!("admin: {{ bind: \"0.0.0.0:{port}\" }}\n")).unwrap();
    let (code, _, err) = run_cli(&["reload", "--config", path_str(&lonely)], None);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&format!("no proxy answered on 127.0.0.1:{port}")),
        "{err}"
    );
    let (code, _, err) = run_cli(&["health", "--config", path_str(&lonely)], None);
    assert_eq!(code, 1, "{err}");

    // pointsman_build_info{version, commit} = 1.
    let info = p
        .metrics()
        .into_iter()
        .find(|s| s.name == "pointsman_build_info")
        .expect("pointsman_build_info");
    assert_eq!(info.value, 1.0);
    let label = |n: &str| {
        info.labels
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(label("version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(label("commit"), env!("POINTSMAN_GIT_COMMIT"));
}

#[test]
fn version_shows_the_commit() {
    let (code, out, _) = run_cli(&["--version"], None);
    assert_eq!(code, 0);
    let want = format!(
        "pointsman {} (commit {})",
        env!("CARGO_PKG_VERSION"),
        env!("POINTSMAN_GIT_COMMIT")
    );
    assert_eq!(out.trim(), want);
    // In a checkout (CI's fresh clone is one), that is HEAD.
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(root())
        .output();
    match head {
        Ok(o) if o.status.success() => {
            let head = String::from_utf8_lossy(&o.stdout).trim().to_string();
            assert!(out.contains(&head), "{out} is not built from HEAD {head}");
        }
        _ => eprintln!("not a git checkout: --version says {out}"),
    }
}

// === schema ===

/// A rule file read as the loader reads it, as JSON for the validator.
fn yaml_as_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    options.leading_zero_numbers_as_strings = true;
    let v: Option<Value> = serde_saphyr::from_str_with_options(&text, options)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    v.unwrap_or(Value::Object(Default::default()))
}

fn schema_validator() -> jsonschema::Validator {
    let (code, out, err) = run_cli(&["schema"], None);
    assert_eq!(code, 0, "{err}");
    let schema: Value = serde_json::from_str(&out).expect("schema is JSON");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    jsonschema::validator_for(&schema).expect("a valid JSON Schema")
}

fn schema_errors(v: &jsonschema::Validator, path: &Path) -> Vec<String> {
    let doc = yaml_as_json(path);
    v.iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn schema_is_published_and_validates_every_example() {
    let (_, printed, _) = run_cli(&["schema"], None);
    let published = root().join(pointsman::config::schema::PUBLISHED_PATH);
    let committed = std::fs::read_to_string(&published).unwrap_or_default();
    assert!(
        printed == committed,
        "{} is stale: run `cargo run -- schema > {}`",
        published.display(),
        pointsman::config::schema::PUBLISHED_PATH
    );

    let v = schema_validator();
    let mut files = yaml_files(&root().join("examples"));
    files.push(root().join("routes/demo.yaml"));
    let with_line = files.clone();
    files.extend(yaml_files(&root().join("deploy/kubernetes/base/rules")));
    files.push(root().join("tests/data/lenient.yaml"));
    for f in &files {
        let (code, out, err) = run_cli(&["check", "--config", path_str(f)], None);
        assert_eq!(code, 0, "{}: {out}{err}", f.display());
        let errors = schema_errors(&v, f);
        assert!(errors.is_empty(), "{}: {errors:#?}", f.display());
    }
    for f in &with_line {
        let first = std::fs::read_to_string(f).unwrap();
        assert!(
            first.starts_with("# yaml-language-server: $schema=../schema/pointsman.schema.json\n"),
            "{} has no $schema line",
            f.display()
        );
    }
    println!("{} files pass check and the schema", files.len());
}

#[test]
fn bad_files_are_refused_by_schema_and_loader() {
    let v = schema_validator();
    let bad = yaml_files(&root().join("tests/data/bad"));
    assert!(bad.len() >= 9, "{bad:?}");
    for f in &bad {
        let text = std::fs::read_to_string(f).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no `# expect:` line", f.display()));
        let (code, out, _) = run_cli(&["check", "--config", path_str(f)], None);
        assert_eq!(code, 1, "{}: {out}", f.display());
        assert!(
            out.contains(expect),
            "{}: want {expect:?} in {out}",
            f.display()
        );
        let errors = schema_errors(&v, f);
        assert!(!errors.is_empty(), "{}: the schema accepts it", f.display());
    }
}

#[test]
fn completions_name_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = run_cli(&["completions", shell], None);
        assert_eq!(code, 0, "{err}");
        for cmd in ["run", "check", "explain", "reload", "schema", "completions"] {
            assert!(out.contains(cmd), "{shell}: no {cmd}");
        }
    }
    let (code, _, _) = run_cli(&["completions", "powershell"], None);
    assert_eq!(code, 2);
}

// === redirects and the access log ===

#[test]
fn redirect_template_keeps_host_path_and_query() {
    let rules = r#"listen: [{ bind: "{LISTEN}" }]
admin: { bind: "{ADMIN}" }
routes:
  - name: to-https
    match: { path_prefix: /shop }
    redirect: { to: "https://{host}{path}{query}" }
  - name: docs
    match: { path_prefix: /docs/v1 }
    strip_prefix: /docs/v1
    redirect: { to: "https://docs.example.com/v2{path}{query}", status: 308 }
  - name: fixed
    redirect: { to: "/elsewhere" }
"#;
    let p = Binary::start(rules);
    let get = |path: &str| {
        send_blocking(
            p.addr,
            "GET",
            path,
            &[("host", "shop.example.com:8080")],
            "",
        )
        .unwrap()
    };
    let r = get("/shop/cart?id=7&x=%20");
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("https://shop.example.com/shop/cart?id=7&x=%20")
    );
    let r = get("/shop");
    assert_eq!(r.header("location"), Some("https://shop.example.com/shop"));
    let r = get("/docs/v1/intro?lang=en");
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some("https://docs.example.com/v2/intro?lang=en")
    );
    let r = get("/docs/v1");
    assert_eq!(r.header("location"), Some("https://docs.example.com/v2/"));
    let r = get("/a/../b");
    assert_eq!(r.header("location"), Some("/elsewhere"));

    // Unknown placeholders and a strip_prefix with no {path} are refused.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("r.yaml");
    std::fs::write(
        &f,
        "routes:\n  - name: a\n    redirect: { to: \"https://{hots}/\" }\n  - name: b\n    strip_prefix: /b\n    redirect: { to: \"/c\" }\n",
    )
    .unwrap();
    let (code, out, _) = run_cli(&["check", "--config", path_str(&f)], None);
    assert_eq!(code, 1);
    assert!(
        out.contains("r.yaml:3:21: error: redirect `to`: unknown placeholder `{hots}`"),
        "{out}"
    );
    assert!(
        out.contains("r.yaml:5:19: error: `strip_prefix` on a redirect acts on `{path}`"),
        "{out}"
    );
}

#[test]
fn access_line_carries_every_spec_10_field() {
    let up = in_background(|| tagged("v1"));
    let dead = free_port();
    let rules = format!(
        r#"listen: [{{ bind: "{{LISTEN}}" }}]
admin: {{ bind: "{{ADMIN}}" }}
upstreams:
  v1: {{ endpoints: ["{up}"] }}
  dead: {{ endpoints: ["127.0.0.1:{dead}", "127.0.0.1:{dead}"], retries: 1, connect_timeout: 1s }}
routes:
  - {{ name: broken, match: {{ path_prefix: /broken }}, to: dead }}
  - {{ name: all, to: v1 }}
"#
    );
    let p = Binary::start_with(&rules, &["--log-format", "json"]);
    let ua = ("user-agent", "curl/8.5.0");
    let r = p.get("/hello?who=me", &[ua, ("x-request-id", "ok-1")]);
    assert_eq!(r.status, 200);
    let r = p.get("/broken", &[ua, ("x-request-id", "bad-1")]);
    assert_eq!(r.status, 502);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let lines = loop {
        let lines = p.json_log("access");
        if lines.len() >= 2 || std::time::Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let line = |id: &str| {
        lines
            .iter()
            .find(|l| l["request_id"] == id)
            .unwrap_or_else(|| panic!("no access line for {id}: {lines:#?}"))
            .clone()
    };
    let ok = line("ok-1");
    for field in [
        "request_id",
        "client_ip",
        "method",
        "host",
        "path",
        "query",
        "protocol",
        "user_agent",
        "status",
        "route",
        "upstream",
        "endpoint",
        "attempts",
        "error",
        "variant",
        "duration_ms",
        "bytes_out",
    ] {
        assert!(ok.get(field).is_some(), "{field} missing in {ok}");
    }
    assert_eq!(ok["client_ip"], "127.0.0.1");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/hello");
    assert_eq!(ok["query"], "who=me");
    assert_eq!(ok["protocol"], "HTTP/1.1");
    assert_eq!(ok["user_agent"], "curl/8.5.0");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["route"], "all");
    assert_eq!(ok["upstream"], "v1");
    assert_eq!(ok["endpoint"], up.to_string());
    assert_eq!(ok["attempts"], 1);
    assert_eq!(ok["error"], "");
    assert_eq!(ok["bytes_out"], 3);

    let bad = line("bad-1");
    assert_eq!(bad["status"], 502);
    assert_eq!(bad["route"], "broken");
    assert_eq!(bad["upstream"], "dead");
    assert_eq!(bad["attempts"], 2, "one retry");
    assert_eq!(bad["error"], "upstream_connect");
    assert_eq!(bad["query"], "");

    // The reason is in the log, at warn.
    let warn = p
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["level"] == "WARN" && l["request_id"] == "bad-1")
        .unwrap_or_else(|| panic!("no warn line: {}", p.log_text()));
    let reason = warn["error"].as_str().unwrap_or("");
    assert!(
        reason.contains(&format!("127.0.0.1:{dead}")) && reason.contains("connect"),
        "{warn}"
    );
}

// === deploy/: manifests and the unit, with external tools ===

/// Whether `program` (with `args`) runs here. Under `CI=true` a missing
/// tool fails the test (`.ci/run` installs them all); elsewhere the test
/// says loudly what it could not check and passes.
fn tool(program: &str, args: &[&str], what: &str) -> bool {
    let found = Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let why = format!(
            "`{program} {}` is not available: {what} is not checked",
            args.join(" ")
        );
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{why} (CI must install it, see .ci/run)"
        );
        eprintln!("\n!!! SKIPPED: {why} !!!\n");
    }
    found
}

/// Runs a command to completion: (success, stdout + stderr).
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn kubernetes_manifests_pass_strict_validation() {
    let k8s = root().join("deploy/kubernetes");
    let kustomize = tool("kubectl", &["kustomize", "--help"], "deploy/kubernetes");
    let validate = tool(
        "python3",
        &[
            "-c",
            "import kubernetes_validate, cloudcoil.models.prometheus_operator",
        ],
        "deploy/kubernetes",
    );
    if !(kustomize && validate) {
        return;
    }
    for overlay in ["single", "fleet"] {
        let dir = k8s.join("overlays").join(overlay);
        let (ok, rendered) = run(Command::new("kubectl").arg("kustomize").arg(&dir));
        assert!(ok, "kustomize {overlay}: {rendered}");
        let rendered_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(rendered_file.path(), &rendered).unwrap();
        let (ok, report) = run(Command::new("python3")
            .arg(k8s.join("validate.py"))
            .stdin(std::fs::File::open(rendered_file.path()).unwrap()));
        assert!(ok, "{overlay}: {report}");
        println!("{overlay}: {}", report.lines().last().unwrap_or(""));

        // The ConfigMap's rule files, as the pod's directory holds them.
        let docs: Vec<Value> = rendered
            .split("\n---\n")
            .map(|d| serde_saphyr::from_str::<Value>(d).expect("a manifest"))
            .collect();
        let cm = docs
            .iter()
            .find(|d| d["kind"] == "ConfigMap")
            .expect("the rules ConfigMap");
        let rules = tempfile::tempdir().unwrap();
        let data = cm["data"].as_object().expect("ConfigMap data");
        // The pod mounts its secrets at /etc/pointsman/secrets; `check`
        // reads the Redis password file, so stand one in.
        let secrets = rules.path().join("secrets");
        std::fs::create_dir(&secrets).unwrap();
        std::fs::write(secrets.join("redis-password"), "placeholder\n").unwrap();
        for (name, text) in data {
            let text = text.as_str().unwrap().replace(
                "/etc/pointsman/secrets/",
                &format!("{}/", path_str(&secrets)),
            );
            std::fs::write(rules.path().join(name), text).unwrap();
        }
        let (code, out, err) = run_cli(&["check", "--config", path_str(rules.path())], None);
        assert_eq!(code, 0, "{overlay} rules: {out}{err}");
        println!("{overlay} rules: {}", out.lines().next().unwrap_or(""));
    }
}

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    if !tool("systemd-analyze", &["--version"], "deploy/systemd") {
        return;
    }
    let unit = std::fs::read_to_string(root().join("deploy/systemd/pointsman.service")).unwrap();
    for line in [
        "ExecStartPre=/usr/local/bin/pointsman check --config /etc/pointsman/routes",
        "ExecReload=/usr/local/bin/pointsman reload --config /etc/pointsman/routes",
        "LoadCredential=admin-token:",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
    ] {
        assert!(unit.contains(line), "no {line}");
    }
    // `verify` wants the binaries it names to exist: this build's.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("pointsman.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/pointsman", env!("CARGO_BIN_EXE_pointsman")),
    )
    .unwrap();
    let (ok, out) = run(Command::new("systemd-analyze").arg("verify").arg(&copy));
    assert!(ok && out.trim().is_empty(), "systemd-analyze verify: {out}");
    // Exposure 2.9 or less ("below 3"): --threshold is in tenths.
    let (ok, out) = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=29", "--no-pager"])
        .arg(&copy));
    let overall = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("no overall exposure line")
        .to_string();
    assert!(ok, "{overall}\n{out}");
    println!("{overall}");
}

/// The image's dependency layer builds a stub of every target Cargo.toml
/// declares (a missing one fails `docker build`), and the binary needs
/// only what the distroless `cc` runtime has: glibc and libgcc_s.
#[test]
fn container_image_fits_the_crate_and_its_runtime() {
    let dockerfile = std::fs::read_to_string(root().join("deploy/docker/Dockerfile")).unwrap();
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let stubbed = dockerfile
        .lines()
        .find(|l| l.contains("for b in "))
        .expect("the bench stub loop");
    let mut benches = 0;
    for block in manifest.split("[[bench]]").skip(1) {
        let name = block
            .lines()
            .find_map(|l| l.strip_prefix("name = "))
            .expect("bench name")
            .trim_matches('"');
        assert!(
            stubbed
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .any(|w| w == name),
            "bench {name} has no stub in the Dockerfile: {stubbed}"
        );
        benches += 1;
    }
    assert!(benches > 0);
    assert!(dockerfile.contains("FROM gcr.io/distroless/cc-debian12:nonroot"));
    assert!(dockerfile.contains("HEALTHCHECK"));

    if !tool("ldd", &["--version"], "the binary's shared libraries") {
        return;
    }
    let (ok, out) = run(Command::new("ldd").arg(env!("CARGO_BIN_EXE_pointsman")));
    assert!(ok, "{out}");
    // What gcr.io/distroless/cc-debian12 ships (Debian 12's libc6 and
    // libgcc-s1).
    let provided = [
        "linux-vdso.so.1",
        "libgcc_s.so.1",
        "libm.so.6",
        "libc.so.6",
        "ld-linux-x86-64.so.2",
        "ld-linux-aarch64.so.1",
    ];
    for line in out.lines() {
        let lib = line.split_whitespace().next().unwrap_or("");
        let lib = lib.rsplit('/').next().unwrap_or(lib);
        assert!(
            provided.contains(&lib),
            "{lib} is not in the runtime image: {out}"
        );
    }
}
