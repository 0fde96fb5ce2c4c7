//! Sample-ratio-mismatch statistics: the chi-square goodness-of-fit test.

/// The p-value below which an experiment's assignment counts are flagged as
/// a sample ratio mismatch (as GrowthBook does).
pub const SRM_THRESHOLD: f64 = 0.001;

/// Chi-square goodness-of-fit p-value of `observed` counts against
/// `expected_shares` (summing to 1). Arms with a share of 0 are left out;
/// `None` when fewer than two arms remain or nothing was observed.
pub fn srm_p_value(observed: &[u64], expected_shares: &[f64]) -> Option<f64> {
    let arms: Vec<(f64, f64)> = observed
        .iter()
        .zip(expected_shares)
        .filter(|(_, s)| **s > 0.0)
        .map(|(o, s)| (*o as f64, *s))
        .collect();
    let total: f64 = arms.iter().map(|(o, _)| o).sum();
    let share_sum: f64 = arms.iter().map(|(_, s)| s).sum();
    if arms.len() < 2 || total <= 0.0 || share_sum <= 0.0 {
        return None;
    }
    let stat: f64 = arms
        .iter()
        .map(|(o, s)| {
            let e = total * s / share_sum;
            (o - e) * (o - e) / e
        })
        .sum();
    Some(chi_square_sf(stat, (arms.len() - 1) as f64))
}

/// The chi-square survival function `P(X >= stat)` with `df` degrees of
/// freedom: `Q(df/2, stat/2)`, the regularized upper incomplete gamma.
pub fn chi_square_sf(stat: f64, df: f64) -> f64 {
    if stat <= 0.0 {
        return 1.0;
    }
    gamma_q(df / 2.0, stat / 2.0)
}

/// Regularized upper incomplete gamma `Q(a, x)` (Numerical Recipes 6.2:
/// series below `a + 1`, continued fraction above).
fn gamma_q(a: f64, x: f64) -> f64 {
    if x < a + 1.0 {
        (1.0 - gamma_p_series(a, x)).clamp(0.0, 1.0)
    } else {
        gamma_q_fraction(a, x).clamp(0.0, 1.0)
    }
}

fn gamma_p_series(a: f64, x: f64) -> f64 {
    let mut ap = a;
    let mut sum = 1.0 / a;
    let mut del = sum;
    for _ in 0..1000 {
        ap += 1.0;
        del *= x / ap;
        sum += del;
        if del.abs() < sum.abs() * 1e-15 {
            break;
        }
    }
    sum * (-x + a * x.ln() - ln_gamma(a)).exp()
}

fn gamma_q_fraction(a: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut b = x + 1.0 - a;
    let mut c = 1.0 / TINY;
    let mut d = 1.0 / b;
    let mut h = d;
    for i in 1..1000 {
        let an = -(i as f64) * (i as f64 - a);
        b += 2.0;
        d = an * d + b;
        if d.abs() < TINY {
            d = TINY;
        }
        c = b + an / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-15 {
            break;
        }
    }
    (-x + a * x.ln() - ln_gamma(a)).exp() * h
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, n = 9).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1-x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut acc = G[0];
    for (i, g) in G.iter().enumerate().skip(1) {
        acc += g / (x + i as f64);
    }
    let t = x + 7.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + acc.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chi_square_critical_values() {
        // Table values: (stat, df, p).
        for (stat, df, p) in [
            (3.841_458_8, 1.0, 0.05),
            (10.827_566, 1.0, 0.001),
            (5.991_464_5, 2.0, 0.05),
            (13.815_511, 2.0, 0.001),
            (7.814_727_9, 3.0, 0.05),
            (0.454_936_4, 1.0, 0.5),
            (18.307_038, 10.0, 0.05),
        ] {
            let got = chi_square_sf(stat, df);
            assert!((got - p).abs() < 1e-6, "sf({stat}, {df}) = {got}, want {p}");
        }
        assert_eq!(chi_square_sf(0.0, 3.0), 1.0);
    }

    #[test]
    fn ln_gamma_matches_factorials() {
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
    }

    #[test]
    fn srm_flags_a_skewed_split_only() {
        let even = srm_p_value(&[5000, 5030], &[0.5, 0.5]).unwrap();
        assert!(even > SRM_THRESHOLD, "{even}");
        let skewed = srm_p_value(&[5000, 5500], &[0.5, 0.5]).unwrap();
        assert!(skewed < SRM_THRESHOLD, "{skewed}");
        assert_eq!(srm_p_value(&[0, 0], &[0.5, 0.5]), None);
        assert_eq!(srm_p_value(&[10, 0], &[1.0, 0.0]), None);
    }
}
