//! Split properties: the GrowthBook vectors, stickiness, coverage and canary
//! weight monotonicity, namespace exclusion, shares, canary progression.
//!
//! - `growthbook_vectors`: every case of `tests/data/growthbook-vectors.json`
//!   against the function it names.
//! - `same_id_same_variant`, `canary_weight_moves_one_way`,
//!   `coverage_never_moves_enrolled_users`, `disjoint_namespace_slices`,
//!   `shares_match_weights`: proptests over random ids and configs.
//!
//! Canary progression (paused clock) is tested in `src/split/canary.rs`.

use pointsman::compile::canary::compile_canary;
use pointsman::compile::experiment::compile_experiment;
use pointsman::config::Diagnostics;
use pointsman::config::raw::{self, Spanned};
use pointsman::split::canary::CanaryDef;
use pointsman::split::canary::def::arm_for_bucket;
use pointsman::split::experiment::Mode;
use pointsman::split::sticky::SimpleRequest;
use pointsman::split::{Arm, Experiment, hash};
use proptest::prelude::*;
use serde_json::Value;
use std::sync::Arc;

const EPS: f64 = 1e-6;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < EPS
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

fn ranges(v: &Value) -> Vec<(f64, f64)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| (f(&r[0]), f(&r[1])))
        .collect()
}

#[test]
fn growthbook_vectors() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/growthbook-vectors.json"
    ))
    .unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let mut checked = 0;
    for section in ["hash", "hashNonAscii"] {
        for case in doc[section].as_array().unwrap() {
            let (seed, value) = (case[0].as_str().unwrap(), case[1].as_str().unwrap());
            let version = case[2].as_u64().unwrap() as u32;
            let got = hash::hash(seed, value, version);
            match case[3].as_f64() {
                None => assert_eq!(got, None, "{section} {case}"),
                Some(want) => assert!(close(got.unwrap(), want), "{section} {case}: {got:?}"),
            }
            checked += 1;
        }
    }
    for case in doc["getBucketRange"].as_array().unwrap() {
        let args = &case[1];
        let n = args[0].as_u64().unwrap() as usize;
        let weights: Option<Vec<f64>> = args[2].as_array().map(|w| w.iter().map(f).collect());
        let got = hash::get_bucket_ranges(n, f(&args[1]), weights.as_deref());
        let want = ranges(&case[2]);
        assert_eq!(got.len(), want.len(), "{case}");
        for (g, w) in got.iter().zip(&want) {
            assert!(close(g.0, w.0) && close(g.1, w.1), "{case}: {got:?}");
        }
        checked += 1;
    }
    for case in doc["chooseVariation"].as_array().unwrap() {
        let got = hash::choose_variation(f(&case[1]), &ranges(&case[2]));
        let want = case[3].as_i64().unwrap();
        assert_eq!(got.map_or(-1, |i| i as i64), want, "{case}");
        checked += 1;
    }
    for case in doc["inNamespace"].as_array().unwrap() {
        let ns = &case[2];
        let got = hash::in_namespace(
            case[1].as_str().unwrap(),
            (ns[0].as_str().unwrap(), f(&ns[1]), f(&ns[2])),
        );
        assert_eq!(got, case[3].as_bool().unwrap(), "{case}");
        checked += 1;
    }
    for case in doc["getEqualWeights"].as_array().unwrap() {
        // The SDK maps a count <= 0 to no weights.
        let n = usize::try_from(case[0].as_i64().unwrap()).unwrap_or(0);
        let got = hash::get_equal_weights(n);
        let want: Vec<f64> = case[1].as_array().unwrap().iter().map(f).collect();
        assert_eq!(got.len(), want.len(), "{case}");
        for (g, w) in got.iter().zip(&want) {
            // The file rounds 1/3 to 8 places.
            assert!((g - w).abs() < 1e-7, "{case}: {got:?}");
        }
        checked += 1;
    }
    println!("growthbook vectors: {checked} cases checked");
    assert_eq!(checked, 15 + 13 + 13 + 16 + 6 + 10);
}

fn experiment(yaml: &str) -> Experiment {
    let raw: raw::Experiment = serde_saphyr::from_str(yaml).unwrap();
    let file: Arc<str> = "p.yaml".into();
    let mut diags = Diagnostics::default();
    let resolve = |_: &Spanned<String>| Some(0);
    let e = compile_experiment(
        "exp",
        &raw,
        &file,
        raw.variants.referenced,
        &mut diags,
        &resolve,
        None,
    );
    assert!(!diags.has_errors(), "{:?}", diags.items());
    e.unwrap()
}

fn variants_yaml(weights: &[f64]) -> String {
    let mut y = String::from("variants:\n");
    for (i, w) in weights.iter().enumerate() {
        y.push_str(&format!("  - {{ name: v{i}, weight: {w} }}\n"));
    }
    y
}

fn canary(weight: f64) -> CanaryDef {
    let yaml = format!("stable: a\ncanary: b\nweight: {weight}\n");
    let raw: raw::Canary = serde_saphyr::from_str(&yaml).unwrap();
    let file: Arc<str> = "p.yaml".into();
    let mut diags = Diagnostics::default();
    let resolve = |s: &Spanned<String>| Some(usize::from(s.value == "b"));
    compile_canary(
        "shop",
        &raw,
        &file,
        raw.stable.referenced,
        &mut diags,
        &resolve,
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn same_id_same_variant(id in "\\PC{1,24}", weights in prop::collection::vec(0.1f64..10.0, 1..5), version in 1u32..=2) {
        let e = experiment(&format!("hash_version: {version}\nsticky_on: [header:x-id]\n{}", variants_yaml(&weights)));
        let req = SimpleRequest::default().header("x-id", &id);
        let first = e.assign(&req, true, None, Mode::Running).variant();
        prop_assert!(first.is_some());
        prop_assert_eq!(e.assign(&req, true, None, Mode::Running).variant(), first);
        prop_assert_eq!(e.place(&id).ok(), first);
    }

    #[test]
    fn canary_weight_moves_one_way(ids in prop::collection::vec("[a-zA-Z0-9_-]{1,22}", 50), w1 in 0.0f64..=100.0, w2 in 0.0f64..=100.0) {
        let (lo, hi) = if w1 <= w2 { (w1, w2) } else { (w2, w1) };
        let c = canary(lo);
        for id in &ids {
            let b = c.bucket(id);
            // On the canary at the lower weight implies on it at the higher.
            if arm_for_bucket(b, lo) == Arm::Canary {
                prop_assert_eq!(arm_for_bucket(b, hi), Arm::Canary);
            }
            // Stable at the higher weight implies stable at the lower.
            if arm_for_bucket(b, hi) == Arm::Stable {
                prop_assert_eq!(arm_for_bucket(b, lo), Arm::Stable);
            }
        }
    }

    #[test]
    fn coverage_never_moves_enrolled_users(ids in prop::collection::vec("[a-z0-9]{1,16}", 100), weights in prop::collection::vec(0.0f64..5.0, 2..5), c1 in 0.0f64..=1.0, c2 in 0.0f64..=1.0) {
        prop_assume!(weights.iter().sum::<f64>() > 0.01);
        let (lo, hi) = if c1 <= c2 { (c1, c2) } else { (c2, c1) };
        let v = variants_yaml(&weights);
        let small = experiment(&format!("coverage: {lo}\n{v}"));
        let large = experiment(&format!("coverage: {hi}\n{v}"));
        for id in &ids {
            if let Ok(i) = small.place(id) {
                prop_assert_eq!(large.place(id), Ok(i));
            }
        }
    }

    #[test]
    fn disjoint_namespace_slices(ids in prop::collection::vec("\\PC{1,16}", 100), cut in 0.01f64..0.99) {
        let v = variants_yaml(&[1.0]);
        let a = experiment(&format!("seed: a\nnamespace: [ns, 0, {cut}]\n{v}"));
        let b = experiment(&format!("seed: b\nnamespace: [ns, {cut}, 1]\n{v}"));
        for id in &ids {
            prop_assert!(!(a.place(id).is_ok() && b.place(id).is_ok()), "{} in both", id);
            prop_assert!(a.place(id).is_ok() || b.place(id).is_ok(), "{} in neither", id);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn shares_match_weights(weights in prop::collection::vec(0.05f64..1.0, 2..5), coverage in 0.2f64..=1.0, seed in "[a-z]{1,8}") {
        const N: usize = 20_000;
        let e = experiment(&format!("seed: {seed}\ncoverage: {coverage}\n{}", variants_yaml(&weights)));
        let mut counts = vec![0u64; weights.len()];
        for i in 0..N {
            if let Ok(v) = e.place(&format!("user-{i}")) {
                counts[v] += 1;
            }
        }
        let total: f64 = weights.iter().sum();
        for (i, w) in weights.iter().enumerate() {
            // v1/v2 buckets are multiples of 1e-4, so allow that much too.
            let p = coverage * w / total;
            let sigma = (N as f64 * p * (1.0 - p)).sqrt();
            let diff = (counts[i] as f64 - N as f64 * p).abs();
            prop_assert!(diff <= 5.0 * sigma + N as f64 * 2e-4, "variant {} got {} want {:.0} (5 sigma {:.0})", i, counts[i], N as f64 * p, 5.0 * sigma);
        }
    }
}
