//! Gamma-Gamma spend model (Fader, Hardie & Lee 2005, "RFM and CLV"; Colombo &
//! Jiang 1999): a customer's transaction values are Gamma(p, ν) with
//! ν ~ Gamma(q, γ); fitted on customers with x > 0 and their mean repeat value.

use super::special::{digamma, ln_gamma};
use super::summary::{deterministic_sum, deterministic_sums};
use super::{Fit, FitError};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub p: f64,
    pub q: f64,
    pub v: f64,
}

impl Params {
    pub fn from_fit(fit: &Fit) -> Params {
        Params {
            p: fit.value("p"),
            q: fit.value("q"),
            v: fit.value("v"),
        }
    }
}

/// Log-likelihood of one customer with x repeat purchases of mean value m.
pub fn log_likelihood(params: &Params, x: f64, m: f64) -> f64 {
    let Params { p, q, v } = *params;
    ln_gamma(p * x + q) - ln_gamma(p * x) - ln_gamma(q) + q * v.ln() + (p * x - 1.0) * m.ln() + p * x * x.ln()
        - (p * x + q) * (x * m + v).ln()
}

/// Fit over (x, mean value) of customers with x > 0 and a positive mean.
pub fn fit(data: &[(f64, f64)], penalizer: f64) -> Result<Fit, FitError> {
    let data: Vec<(f64, f64)> = data
        .iter()
        .copied()
        .filter(|(x, m)| *x > 0.0 && *m > 0.0)
        .collect();
    if data.is_empty() {
        return Err(FitError::NoData {
            model: "gamma_gamma".into(),
            reason: "no customer has a repeat purchase with a positive value".into(),
        });
    }
    // The gamma-function terms depend on x only: once per distinct x per evaluation.
    let mut by_x: std::collections::BTreeMap<u64, Vec<f64>> = std::collections::BTreeMap::new();
    for (x, m) in &data {
        by_x.entry(x.to_bits()).or_default().push(*m);
    }
    let groups: Vec<(f64, Vec<f64>)> = by_x.into_iter().map(|(x, g)| (f64::from_bits(x), g)).collect();
    let ll = |params: &[f64]| likelihood(&groups, params, false).0;
    let with_gradient = |params: &[f64]| likelihood(&groups, params, true);
    super::maximise_smooth(
        "gamma_gamma",
        &["p", "q", "v"],
        &[1.0, 1.0, 1.0],
        &ll,
        &with_gradient,
        data.len() as f64,
        penalizer,
    )
}

/// Total log-likelihood over (x, mean) grouped by x, and (when asked) its gradient in (p, q, v).
fn likelihood(groups: &[(f64, Vec<f64>)], params: &[f64], gradient: bool) -> (f64, Vec<f64>) {
    let (p, q, v) = (params[0], params[1], params[2]);
    let shared = q * v.ln() - ln_gamma(q);
    let mut total = 0.0;
    let mut grad = [0.0f64; 3];
    for (x, means) in groups {
        let (x, n) = (*x, means.len() as f64);
        let px = p * x;
        total += (shared + ln_gamma(px + q) - ln_gamma(px) + px * x.ln()) * n;
        if !gradient {
            total += deterministic_sum(means, |m| (px - 1.0) * m.ln() - (px + q) * (x * m + v).ln());
            continue;
        }
        let [value, ln_m, ln_xmv, inverse] = deterministic_sums(means, |m| {
            let (ln_m, ln_xmv) = (m.ln(), (x * m + v).ln());
            [
                (px - 1.0) * ln_m - (px + q) * ln_xmv,
                ln_m,
                ln_xmv,
                1.0 / (x * m + v),
            ]
        });
        total += value;
        let psi = digamma(px + q);
        grad[0] += x * (n * (psi - digamma(px) + x.ln()) + ln_m - ln_xmv);
        grad[1] += n * (psi - digamma(q) + v.ln()) - ln_xmv;
        grad[2] += n * q / v - (px + q) * inverse;
    }
    (total, grad.to_vec())
}

/// E[M | x, m]: the customer's expected value per purchase; the population mean
/// p·v / (q − 1) for x = 0 (SPEC §6.3).
pub fn conditional_expected_spend(params: &Params, x: f64, m: f64) -> f64 {
    let Params { p, q, v } = *params;
    if x == 0.0 {
        p * v / (q - 1.0)
    } else {
        p * (v + x * m) / (p * x + q - 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analytic_gradient_matches_central_differences() {
        let groups = vec![(1.0, vec![10.0, 20.0]), (3.0, vec![15.0, 5.5, 40.0])];
        crate::model::assert_gradient_matches(|p, g| likelihood(&groups, p, g), &[6.0, 3.5, 15.0]);
    }
}
