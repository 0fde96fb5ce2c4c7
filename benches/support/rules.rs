//! The rule file the reload benchmarks load (shared by `reload` and
//! `reload_profile`).

use std::fmt::Write;

/// A rule file with `n` routes over host, path templates and headers: a
/// third host + path template, a third `path_prefix`, a third header-only.
pub(crate) fn rules(n: usize) -> String {
    let mut s = String::from(
        "listen:\n  - bind: \"127.0.0.1:0\"\nupstreams:\n  a: { endpoints: [\"127.0.0.1:9001\"] }\n  b: { endpoints: [\"127.0.0.1:9002\"] }\nroutes:\n",
    );
    for i in 0..n {
        let to = if i % 2 == 0 { "a" } else { "b" };
        let m = match i % 3 {
            0 => format!(
                "{{ host: h{i}.example.com, path: \"/api/v{}/users/{{id}}\" }}",
                i % 7
            ),
            1 => format!("{{ path_prefix: /svc{i}/ }}"),
            _ => format!("{{ header: {{ name: x-tenant, equals: t{i} }} }}"),
        };
        let _ = writeln!(s, "  - name: r{i}\n    match: {m}\n    to: {to}");
    }
    s
}
