//! GrowthBook-compatible hashing and bucketing (SPEC 3).
//!
//! Every function mirrors the GrowthBook JavaScript SDK function of the same
//! name, including its fallbacks, so the proxy and an application using a
//! GrowthBook SDK assign a user to the same variant.

/// The hash algorithm version of an experiment (`hash_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashVersion {
    /// Legacy: `(fnv1a32(value + seed) % 1000) / 1000`.
    V1,
    /// Recommended: `(fnv1a32(decimal(fnv1a32(seed + value))) % 10000) / 10000`.
    V2,
}

impl HashVersion {
    /// The version for its number, `None` for anything but 1 and 2.
    pub fn from_number(n: u32) -> Option<Self> {
        match n {
            1 => Some(HashVersion::V1),
            2 => Some(HashVersion::V2),
            _ => None,
        }
    }

    /// The version's number as written in rule files.
    pub fn number(self) -> u32 {
        match self {
            HashVersion::V1 => 1,
            HashVersion::V2 => 2,
        }
    }
}

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 16_777_619;

/// FNV-1a 32 over the UTF-16 code units of the concatenation of `parts`
/// (what JavaScript's `charCodeAt` yields), without building the string.
pub fn fnv1a32(parts: &[&str]) -> u32 {
    let mut h = FNV_OFFSET;
    for part in parts {
        // ASCII (nearly every id and seed): a byte is its UTF-16 code unit,
        // and bytes are cheaper to walk than `encode_utf16`.
        if part.is_ascii() {
            h = fnv1a32_ascii(h, part.as_bytes());
        } else {
            for unit in part.encode_utf16() {
                h ^= u32::from(unit);
                h = h.wrapping_mul(FNV_PRIME);
            }
        }
    }
    h
}

/// FNV-1a 32 continued from `h` over ASCII bytes.
fn fnv1a32_ascii(mut h: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// `seed`/`value` hashed into `[0, 1)` with a known version.
pub fn hash_with(version: HashVersion, seed: &str, value: &str) -> f64 {
    match version {
        HashVersion::V1 => f64::from(fnv1a32(&[value, seed]) % 1000) / 1000.0,
        HashVersion::V2 => {
            let inner = fnv1a32(&[seed, value]);
            let mut buf = [0u8; 10];
            let digits = decimal(inner, &mut buf);
            f64::from(fnv1a32_ascii(FNV_OFFSET, digits) % 10000) / 10000.0
        }
    }
}

/// The SDK's `hash(seed, value, version)`: a bucket in `[0, 1)`, or `None`
/// for a version other than 1 and 2.
pub fn hash(seed: &str, value: &str, version: u32) -> Option<f64> {
    HashVersion::from_number(version).map(|v| hash_with(v, seed, value))
}

/// Writes `n` in decimal into `buf` and returns its digits.
fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.get(i..).unwrap_or_default()
}

/// The SDK's `inNamespace(id, [name, start, end])`:
/// `start <= hash_v1("__" + name, id) < end`.
pub fn in_namespace(id: &str, namespace: (&str, f64, f64)) -> bool {
    let (name, start, end) = namespace;
    let n = f64::from(fnv1a32(&[id, "__", name]) % 1000) / 1000.0;
    n >= start && n < end
}

/// The SDK's `getEqualWeights(n)`: `n` shares of `1/n` (empty for 0; the
/// SDK's negative counts map to 0 at the caller).
pub fn get_equal_weights(n: usize) -> Vec<f64> {
    vec![1.0 / n as f64; n]
}

/// The SDK's `getBucketRanges(numVariations, coverage, weights)`.
///
/// Coverage is clamped to `[0, 1]`; weights of the wrong length or not
/// summing to 0.99–1.01 are replaced by equal weights. Variation `i` gets
/// `[s_i, s_i + coverage * w_i)` with `s_i` the sum of the weights before it.
pub fn get_bucket_ranges(n: usize, coverage: f64, weights: Option<&[f64]>) -> Vec<(f64, f64)> {
    let coverage = if coverage.is_nan() {
        0.0
    } else {
        coverage.clamp(0.0, 1.0)
    };
    let equal;
    let mut w: &[f64] = match weights {
        Some(w) if w.len() == n => w,
        _ => {
            equal = get_equal_weights(n);
            &equal
        }
    };
    let total: f64 = w.iter().sum();
    let fallback;
    if !(0.99..=1.01).contains(&total) {
        fallback = get_equal_weights(n);
        w = &fallback;
    }
    let mut cumulative = 0.0;
    w.iter()
        .map(|&wi| {
            let start = cumulative;
            cumulative += wi;
            (start, start + coverage * wi)
        })
        .collect()
}

/// The SDK's `chooseVariation(bucket, ranges)`: the first range holding the
/// bucket (start inclusive, end exclusive), `None` when none does.
pub fn choose_variation(bucket: f64, ranges: &[(f64, f64)]) -> Option<usize> {
    ranges
        .iter()
        .position(|&(start, end)| bucket >= start && bucket < end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_values() {
        // FNV-1a 32 of "" and "a" (ASCII: code units equal bytes).
        assert_eq!(fnv1a32(&[]), 0x811c_9dc5);
        assert_eq!(fnv1a32(&["a"]), 0xe40c_292c);
        assert_eq!(fnv1a32(&["foo", "bar"]), fnv1a32(&["foobar"]));
    }

    #[test]
    fn ascii_fast_path_hashes_like_utf16() {
        let by_units = |parts: &[&str]| {
            parts
                .iter()
                .flat_map(|p| p.encode_utf16())
                .fold(FNV_OFFSET, |h, u| {
                    (h ^ u32::from(u)).wrapping_mul(FNV_PRIME)
                })
        };
        let cases: [&[&str]; 4] = [
            &["checkout-redesign", "user-4217"],
            &["é", "user", "ß"],
            &["", "\u{1F469}", "x"],
            &["__", "ns", "ÄÖ-id"],
        ];
        for parts in cases {
            assert_eq!(fnv1a32(parts), by_units(parts), "{parts:?}");
        }
    }

    #[test]
    fn decimal_writes_every_digit() {
        let mut buf = [0u8; 10];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(u32::MAX, &mut buf), b"4294967295");
        assert_eq!(decimal(1005, &mut buf), b"1005");
    }

    #[test]
    fn unknown_versions_have_no_hash() {
        assert_eq!(hash("a", "b", 0), None);
        assert_eq!(hash("a", "b", 3), None);
        assert!(hash("a", "b", 1).is_some());
    }

    #[test]
    fn astral_characters_hash_as_surrogate_pairs() {
        // U+1F469 is the pair D83D DC69 in UTF-16.
        let pair = {
            let mut h = FNV_OFFSET;
            for u in [0xD83Du32, 0xDC69] {
                h ^= u;
                h = h.wrapping_mul(FNV_PRIME);
            }
            h
        };
        assert_eq!(fnv1a32(&["\u{1F469}"]), pair);
    }
}
