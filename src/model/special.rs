//! Special functions for the BTYD models: log-gamma (statrs) and the Gauss
//! hypergeometric function 2F1 on [0, 1).

pub use statrs::function::gamma::{digamma, ln_gamma};

pub fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
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
