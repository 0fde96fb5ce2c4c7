//! Split properties: the GrowthBook vectors, stickiness, coverage and canary
//! weight monotonicity, namespace exclusion, shares, canary progression.
//!
//! - `growthbook_vectors`: every case of `tests/data/growthbook-vectors.json`
//!   against the function it names.

use pointsman::split::hash;
use serde_json::Value;

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
