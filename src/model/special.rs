//! Special functions for the BTYD models: log-gamma (statrs) and the Gauss
//! hypergeometric function 2F1 on [0, 1).

pub use statrs::function::gamma::{digamma, ln_gamma};

pub fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// ln Γ(s + x) − ln Γ(s) and ψ(s + x) − ψ(s) for each of `xs` (ascending, ≥ 0).
/// When the xs are whole numbers, as purchase counts are, by the finite sums
/// Σ_{k<x} ln(s + k) and Σ_{k<x} 1/(s + k), accumulated along the xs: exact where
/// the difference of two huge log-gammas would cancel (s → ∞ as a fit runs off to a
/// bound), and cheaper. Otherwise from the functions.
pub fn gamma_ratios(s: f64, xs: &[f64]) -> Vec<(f64, f64)> {
    let whole = xs.iter().all(|x| x.fract() == 0.0) && xs.last().is_none_or(|&x| x <= 1e6);
    if !whole {
        return xs
            .iter()
            .map(|&x| (ln_gamma(s + x) - ln_gamma(s), digamma(s + x) - digamma(s)))
            .collect();
    }
    let (mut k, mut ln_sum, mut inverse_sum) = (0.0, 0.0, 0.0);
    xs.iter()
        .map(|&x| {
            while k < x {
                ln_sum += (s + k).ln();
                inverse_sum += 1.0 / (s + k);
                k += 1.0;
            }
            (ln_sum, inverse_sum)
        })
        .collect()
}

/// 2F1(a, b; c; z) for 0 ≤ z < 1 by its power series, summed until the terms
/// stop mattering. The terms shrink like z^n, so z near 1 needs many of them
/// (about 2,000 at z = 0.99); `None` when the series has not settled after 10⁷.
pub fn hyp2f1(a: f64, b: f64, c: f64, z: f64) -> Option<f64> {
    if !(0.0..1.0).contains(&z) {
        return None;
    }
    let mut term = 1.0;
    let mut sum = 1.0;
    for n in 0..10_000_000u32 {
        let n = n as f64;
        term *= (a + n) * (b + n) / ((c + n) * (n + 1.0)) * z;
        sum += term;
        if term.abs() <= 1e-16 * sum.abs() {
            return Some(sum);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma_ratios_match_the_functions() {
        let xs = [0.0, 1.0, 2.0, 7.0, 30.0];
        for s in [0.3, 2.5, 40.0] {
            for (&x, (ln, psi)) in xs.iter().zip(gamma_ratios(s, &xs)) {
                let (ln_direct, psi_direct) = (ln_gamma(s + x) - ln_gamma(s), digamma(s + x) - digamma(s));
                assert!(
                    (ln - ln_direct).abs() < 1e-10 * ln_direct.abs().max(1.0),
                    "s={s} x={x}"
                );
                assert!(
                    (psi - psi_direct).abs() < 1e-10 * psi_direct.abs().max(1.0),
                    "s={s} x={x}"
                );
            }
        }
        // Where the functions cancel: ln Γ(s + 2) − ln Γ(s) = ln(s) + ln(s + 1) exactly.
        let s = 6.7e8;
        assert_eq!(gamma_ratios(s, &[2.0])[0].0, s.ln() + (s + 1.0).ln());
        // Fractional x (a summary from elsewhere) falls back to the functions.
        let (ln, _) = gamma_ratios(1.5, &[0.5])[0];
        assert!((ln - (ln_gamma(2.0) - ln_gamma(1.5))).abs() < 1e-14);
    }

    #[test]
    fn hyp2f1_closed_forms() {
        // 2F1(1, 1; 2; z) = -ln(1 - z) / z.
        for z in [0.1, 0.5, 0.9, 0.99, 0.999, 0.9999] {
            let expected = -(1.0f64 - z).ln() / z;
            let got = hyp2f1(1.0, 1.0, 2.0, z).unwrap();
            assert!(
                (got - expected).abs() < 1e-12 * expected,
                "z={z}: {got} vs {expected}"
            );
        }
        // 2F1(a, b; b; z) = (1 - z)^-a.
        let got = hyp2f1(0.7, 2.5, 2.5, 0.6).unwrap();
        assert!((got - 0.4f64.powf(-0.7)).abs() < 1e-12);
    }
}
