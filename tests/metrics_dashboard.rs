//! The Grafana dashboard in `deploy/grafana/pointsman.json` only queries
//! metrics the proxy exports (names taken from `pointsman::metrics`), and is
//! importable by hand and by file provisioning alike: no `${DS_...}` import
//! input, a `datasource` variable used by every panel and query, and `job`
//! and `instance` selectors on every series.

use pointsman::metrics;
use regex::Regex;
use serde_json::Value;
use std::collections::BTreeSet;

fn dashboard() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/pointsman.json");
    let text = std::fs::read_to_string(path).expect("read dashboard");
    serde_json::from_str(&text).expect("dashboard is JSON")
}

/// Every PromQL string in the dashboard: targets' `expr` and template
/// variables' `query` / `definition`.
fn queries(v: &Value, key: Option<&str>, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                queries(v, Some(k), out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| queries(v, key, out)),
        Value::String(s) if matches!(key, Some("expr" | "query" | "definition")) => {
            out.push(s.clone())
        }
        _ => {}
    }
}

/// A series name as the proxy exports it: histogram series lose their
/// `_bucket` / `_sum` / `_count` suffix.
fn exported_name(series: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = series.strip_suffix(suffix)
            && metrics::HISTOGRAMS.contains(&base)
        {
            return base;
        }
    }
    series
}

#[test]
fn dashboard_queries_only_exported_metrics() {
    let dash = dashboard();
    let mut exprs = Vec::new();
    queries(&dash, None, &mut exprs);
    assert!(!exprs.is_empty(), "no queries found");

    let name = Regex::new(r"\bpointsman_[a-zA-Z0-9_]+").expect("regex");
    let mut used = BTreeSet::new();
    for expr in &exprs {
        for m in name.find_iter(expr) {
            let n = exported_name(m.as_str());
            assert!(
                metrics::ALL.contains(&n),
                "{} (in `{expr}`) is not exported by pointsman::metrics",
                m.as_str()
            );
            used.insert(n);
        }
    }
    println!("{} queries reference: {used:?}", exprs.len());

    // The panels the dashboard promises.
    for required in [
        metrics::REQUESTS_TOTAL,
        metrics::REQUEST_DURATION_SECONDS,
        metrics::UPSTREAM_ERRORS_TOTAL,
        metrics::CONFIG_RELOADS_TOTAL,
        metrics::CANARY_WEIGHT_PERCENT,
        metrics::CANARY_STATE,
        metrics::CONNECTIONS_ACTIVE,
    ] {
        assert!(used.contains(required), "no panel queries {required}");
    }

    // Quantiles come from the buckets, aggregated by `le`.
    let quantiles: Vec<_> = exprs
        .iter()
        .filter(|e| e.contains("histogram_quantile"))
        .collect();
    assert_eq!(quantiles.len(), 3, "p50, p95, p99");
    let buckets = format!("rate({}_bucket", metrics::REQUEST_DURATION_SECONDS);
    for q in quantiles {
        assert!(q.contains(&buckets) && q.contains("by (le"), "{q}");
    }
}

#[test]
fn dashboard_is_importable() {
    let dash = dashboard();
    let text = serde_json::to_string(&dash).expect("JSON");
    assert!(
        !text.contains("${DS_"),
        "an import-time input breaks file provisioning"
    );
    assert!(dash.get("__inputs").is_none());
    assert!(dash["schemaVersion"].as_u64().expect("schemaVersion") >= 36);

    let vars = dash["templating"]["list"].as_array().expect("variables");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    for name in ["job", "instance"] {
        assert_eq!(var(name)["type"], "query");
        assert_eq!(var(name)["datasource"]["uid"], "${datasource}");
    }

    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let series = Regex::new(r"\bpointsman_[a-zA-Z0-9_]+(\{[^}]*\})?").expect("regex");
    for p in panels {
        let title = p["title"].as_str().expect("title");
        assert!(ids.insert(p["id"].as_u64().expect("id")), "duplicate id");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            let expr = t["expr"].as_str().unwrap_or("");
            assert!(!expr.is_empty(), "{title}");
            for m in series.find_iter(expr) {
                assert!(
                    m.as_str().contains(r#"job=~"$job", instance=~"$instance""#),
                    "{title}: `{}` has no job/instance selector",
                    m.as_str()
                );
            }
        }
    }
}
