//! `pointsman diff`: what an operator reads before applying a change. Routes
//! and upstreams added, removed and changed (each change named), and for
//! every experiment and canary in both configs the share of users whose
//! assignment would change (estimated over sampled ids), plus the settings
//! that changed without moving anyone (guard, holds, ...). Pure: two
//! compiled configs in, a report out.

use crate::compile::{Action, Config, Route};
use crate::split::canary::def::arm_for_bucket;
use crate::split::sticky::mint_id;
use crate::split::{CanaryDef, Experiment};
use crate::upstream::def::UpstreamDef;
use std::collections::BTreeMap;
use std::fmt;

/// The differences between two configs.
#[derive(Debug, Default)]
pub struct ConfigDiff {
    /// Routes added, removed or changed.
    pub routes: Vec<Change>,
    /// Upstreams added, removed or changed.
    pub upstreams: Vec<Change>,
    /// Experiments and canaries present in both configs.
    pub splits: Vec<SplitChange>,
    /// Experiments present in one config only.
    pub experiments: Vec<Change>,
}

/// One named thing that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Only in the new config (with a description).
    Added(String, String),
    /// Only in the old config.
    Removed(String),
    /// In both, different: before and after, or the keys that changed.
    Changed(String, String),
}

/// How an experiment or canary present in both configs changed.
#[derive(Debug, Clone, Default)]
pub struct SplitChange {
    /// `experiment` or `canary`.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// Ids sampled.
    pub sample: usize,
    /// Ids that change assignment, by (from, to).
    pub moves: BTreeMap<(String, String), usize>,
    /// Whether the definition's identity changed (its state or counts
    /// start afresh).
    pub restarts: bool,
    /// Settings that changed without moving anyone.
    pub settings: Vec<&'static str>,
}

impl SplitChange {
    fn differs(&self) -> bool {
        !self.moves.is_empty() || self.restarts || !self.settings.is_empty()
    }
}

impl ConfigDiff {
    /// Compares `old` with `new`, sampling `sample` random ids.
    pub fn new(old: &Config, new: &Config, sample: usize) -> ConfigDiff {
        let ids: Vec<String> = (0..sample).map(|_| mint_id()).collect();
        let mut d = ConfigDiff {
            routes: changes(&route_texts(old), &route_texts(new)),
            upstreams: upstream_changes(old, new),
            ..ConfigDiff::default()
        };
        let old_exps: BTreeMap<&str, String> = old
            .experiments
            .iter()
            .map(|e| (&*e.name, String::new()))
            .collect();
        let new_exps: BTreeMap<&str, String> = new
            .experiments
            .iter()
            .map(|e| (&*e.name, String::new()))
            .collect();
        d.experiments = changes(&old_exps, &new_exps);
        for exp in &new.experiments {
            if let Some(before) = old.experiment(&exp.name) {
                d.splits.push(experiment_change(before, exp, &ids));
            }
        }
        for c in &new.canaries {
            if let Some(before) = old.canary(&c.route) {
                d.splits.push(canary_change(before, c, &ids));
            }
        }
        d
    }

    /// Whether anything differs (`diff --exit-code` exits 1 then).
    pub fn differs(&self) -> bool {
        !self.routes.is_empty()
            || !self.upstreams.is_empty()
            || !self.experiments.is_empty()
            || self.splits.iter().any(SplitChange::differs)
    }
}

fn experiment_change(before: &Experiment, after: &Experiment, ids: &[String]) -> SplitChange {
    let variant = |e: &Experiment, id: &str| {
        e.place(id)
            .ok()
            .and_then(|i| e.variants.get(i))
            .map_or_else(|| "-".to_string(), |v| v.name.to_string())
    };
    let mut settings = Vec::new();
    if before.allow_force != after.allow_force {
        settings.push("allow_force");
    }
    if before.expose_variant != after.expose_variant {
        settings.push("expose_variant");
    }
    SplitChange {
        kind: "experiment",
        name: after.name.to_string(),
        sample: ids.len(),
        moves: count_moves(ids, |id| (variant(before, id), variant(after, id))),
        restarts: before.identity() != after.identity(),
        settings,
    }
}

fn canary_change(before: &CanaryDef, after: &CanaryDef, ids: &[String]) -> SplitChange {
    let (wb, wa) = (before.initial_weight(), after.initial_weight());
    let arm = |w: f64, id: &str| arm_for_bucket(after.bucket(id), w).as_str().to_string();
    SplitChange {
        kind: "canary",
        name: after.route.to_string(),
        sample: ids.len(),
        moves: count_moves(ids, |id| (arm(wb, id), arm(wa, id))),
        restarts: before.identity != after.identity,
        settings: before.settings_changed(after),
    }
}

fn count_moves(
    ids: &[String],
    f: impl Fn(&str) -> (String, String),
) -> BTreeMap<(String, String), usize> {
    let mut moves = BTreeMap::new();
    for id in ids {
        let (a, b) = f(id);
        if a != b {
            *moves.entry((a, b)).or_insert(0) += 1;
        }
    }
    moves
}

/// Added, removed and changed entries between two name → text maps.
fn changes(old: &BTreeMap<&str, String>, new: &BTreeMap<&str, String>) -> Vec<Change> {
    let mut out = Vec::new();
    for (name, text) in new {
        match old.get(name) {
            None => out.push(Change::Added(name.to_string(), text.clone())),
            Some(before) if before != text => out.push(Change::Changed(
                name.to_string(),
                format!("{before}  =>  {text}"),
            )),
            _ => {}
        }
    }
    for name in old.keys().filter(|n| !new.contains_key(*n)) {
        out.push(Change::Removed(name.to_string()));
    }
    out
}

fn route_texts(c: &Config) -> BTreeMap<&str, String> {
    c.routes
        .routes()
        .iter()
        .map(|r| {
            (
                &*r.name,
                format!("{} -> {}", r.matcher.summary(), action_text(c, r)),
            )
        })
        .collect()
}

fn action_text(c: &Config, r: &Route) -> String {
    let name = |id: usize| c.upstreams.get(id).map_or("?", |u| &*u.name);
    match &r.action {
        Action::Forward(u) => format!("to {}", name(*u)),
        Action::Experiment {
            default,
            experiment,
        } => format!("to {} experiment {}", name(*default), experiment.name),
        Action::Canary(k) => format!("canary {} / {}", name(k.stable), name(k.canary)),
        Action::Respond(x) => format!("respond {}", x.status.as_u16()),
        Action::Redirect(x) => format!(
            "redirect {} {}",
            x.status.as_u16(),
            x.location.to_str().unwrap_or("")
        ),
    }
}

/// Upstreams added, removed, and changed with the keys that changed.
fn upstream_changes(old: &Config, new: &Config) -> Vec<Change> {
    let mut out = Vec::new();
    for u in &new.upstreams {
        match old.upstreams.iter().find(|o| o.name == u.name) {
            None => out.push(Change::Added(
                u.name.to_string(),
                format!("{} endpoints", u.endpoints.len()),
            )),
            Some(o) if o != u => out.push(Change::Changed(
                u.name.to_string(),
                upstream_keys(o, u).join(", "),
            )),
            _ => {}
        }
    }
    for o in &old.upstreams {
        if !new.upstreams.iter().any(|u| u.name == o.name) {
            out.push(Change::Removed(o.name.to_string()));
        }
    }
    out
}

fn upstream_keys(a: &UpstreamDef, b: &UpstreamDef) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |changed: bool, key| {
        if changed {
            keys.push(key);
        }
    };
    check(a.endpoints != b.endpoints, "endpoints");
    check(a.balance != b.balance, "balance");
    check(a.connect_timeout != b.connect_timeout, "connect_timeout");
    check(a.request_timeout != b.request_timeout, "request_timeout");
    check(a.retries != b.retries, "retries");
    check(a.protocol != b.protocol, "protocol");
    check(a.tls != b.tls, "tls");
    check(a.health_check != b.health_check, "health_check");
    check(a.outlier != b.outlier, "outlier");
    keys
}

impl fmt::Display for ConfigDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        section(f, "routes", &self.routes)?;
        section(f, "upstreams", &self.upstreams)?;
        if !self.experiments.is_empty() {
            section(f, "experiments", &self.experiments)?;
        }
        for s in &self.splits {
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

fn section(f: &mut fmt::Formatter<'_>, title: &str, changes: &[Change]) -> fmt::Result {
    writeln!(f, "{title}:")?;
    if changes.is_empty() {
        return writeln!(f, "  (no changes)");
    }
    for c in changes {
        match c {
            Change::Added(name, text) => writeln!(f, "  + {name}: {text}")?,
            Change::Removed(name) => writeln!(f, "  - {name}")?,
            Change::Changed(name, what) => writeln!(f, "  ~ {name}: {what}")?,
        }
    }
    Ok(())
}

impl fmt::Display for SplitChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |n: usize| {
            if self.sample == 0 {
                0.0
            } else {
                100.0 * n as f64 / self.sample as f64
            }
        };
        let total: usize = self.moves.values().sum();
        writeln!(
            f,
            "{} {}: {:.2}% of users change assignment ({} sampled ids)",
            self.kind,
            self.name,
            pct(total),
            self.sample
        )?;
        for ((from, to), n) in &self.moves {
            writeln!(f, "  {from} -> {to}: {:.2}%", pct(*n))?;
        }
        if self.restarts {
            let what = if self.kind == "canary" {
                "state and step"
            } else {
                "counts"
            };
            writeln!(f, "  definition changed: its {what} start afresh")?;
        }
        if !self.settings.is_empty() {
            writeln!(
                f,
                "  changed without moving anyone: {}",
                self.settings.join(", ")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile_text;

    fn config(text: &str) -> Config {
        compile_text("t.yaml", text).unwrap().config
    }

    const BASE: &str = "upstreams:\n  a: { endpoints: [\"127.0.0.1:1\"] }\n  b: { endpoints: [\"127.0.0.1:2\"] }\nroutes:\n  - name: shop\n    canary:\n      stable: a\n      canary: b\n      steps: [{ weight: 10, hold: 10m }, { weight: 100 }]\n      guard: { max_error_rate: 0.05 }\n";

    #[test]
    fn a_guard_only_edit_moves_no_one_but_is_named() {
        let old = config(BASE);
        let new = config(&BASE.replace("0.05", "0.02"));
        let d = ConfigDiff::new(&old, &new, 1000);
        assert!(d.differs());
        let s = &d.splits[0];
        assert!(s.moves.is_empty() && !s.restarts);
        assert_eq!(s.settings, ["guard"]);
        let text = d.to_string();
        assert!(
            text.contains("changed without moving anyone: guard"),
            "{text}"
        );
        assert!(!ConfigDiff::new(&old, &old, 1000).differs());
    }

    #[test]
    fn a_weight_edit_moves_users_and_restarts() {
        let old = config(BASE);
        let new = config(&BASE.replace("weight: 10,", "weight: 20,"));
        let d = ConfigDiff::new(&old, &new, 20_000);
        let s = &d.splits[0];
        assert!(s.restarts);
        let moved = s.moves.get(&("stable".into(), "canary".into())).copied();
        let share = moved.unwrap_or(0) as f64 / 20_000.0;
        assert!((share - 0.10).abs() < 0.015, "{share}");
    }

    #[test]
    fn upstream_changes_are_named() {
        let old = config(BASE);
        let new = config(&BASE.replace(
            "a: { endpoints: [\"127.0.0.1:1\"] }",
            "a: { endpoints: [\"127.0.0.1:1\"], connect_timeout: 5s, retries: 0 }",
        ));
        let d = ConfigDiff::new(&old, &new, 10);
        assert_eq!(
            d.upstreams,
            [Change::Changed(
                "a".into(),
                "connect_timeout, retries".into()
            )]
        );
    }
}
