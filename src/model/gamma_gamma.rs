//! Gamma-Gamma spend model (Fader, Hardie & Lee 2005, "RFM and CLV"; Colombo &
//! Jiang 1999): a customer's transaction values are Gamma(p, ν) with
//! ν ~ Gamma(q, γ); fitted on customers with x > 0 and their mean repeat value.

use super::special::{digamma, ln_gamma};
use super::summary::{deterministic_sum, deterministic_sums};
use super::{Fit, FitError};
use rayon::prelude::*;

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

/// Fit over (x, mean value) of customers with x > 0 and a positive mean, in any order.
pub fn fit(data: &[(f64, f64)], penalizer: f64) -> Result<Fit, FitError> {
    let mut data: Vec<(f64, f64)> = data
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
    // A fixed order makes the sums, and so the fit, independent of the input order.
    data.par_sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    super::warm_started(&data, 3, |data, start| fit_from(data, penalizer, start))
}

/// The fit over `data` sorted by x, from `start`.
fn fit_from(data: &[(f64, f64)], penalizer: f64, start: &[f64]) -> Result<Fit, FitError> {
    let prepared = Prepared::new(data);
    let ll = |params: &[f64]| likelihood(&prepared, params, false).0;
    let with_gradient = |params: &[f64]| likelihood(&prepared, params, true);
    super::maximise_smooth(
        "gamma_gamma",
        &["p", "q", "v"],
        start,
        &ll,
        &with_gradient,
        data.len() as f64,
        penalizer,
    )
}

/// The data as the likelihood reads it. The gamma-function terms depend on x only,
/// and Σ ln m per x does not depend on the parameters, so an evaluation takes one
/// logarithm per customer: ln(x·m + v).
struct Prepared {
    /// Distinct x with their customer count and Σ ln m.
    xs: Vec<(f64, f64, f64)>,
    /// Per customer: the index of its x, and x·m.
    rows: Vec<(u32, f64)>,
}

impl Prepared {
    /// `data` sorted by x.
    fn new(data: &[(f64, f64)]) -> Prepared {
        let mut xs: Vec<(f64, f64, f64)> = Vec::new();
        let mut rows = Vec::with_capacity(data.len());
        for &(x, m) in data {
            if xs.last().is_none_or(|last| last.0 != x) {
                xs.push((x, 0.0, 0.0));
            }
            let k = xs.len() - 1;
            xs[k].1 += 1.0;
            xs[k].2 += m.ln();
            rows.push((k as u32, x * m));
        }
        Prepared { xs, rows }
    }
}

/// Total log-likelihood and (when asked) its gradient in (p, q, v).
fn likelihood(data: &Prepared, params: &[f64], gradient: bool) -> (f64, Vec<f64>) {
    let (p, q, v) = (params[0], params[1], params[2]);
    // p·x + q per distinct x.
    let shape: Vec<f64> = data.xs.iter().map(|&(x, _, _)| p * x + q).collect();
    let mut total = 0.0;
    let mut grad = [0.0f64; 3];
    if gradient {
        // Σ (px+q)·ln(xm+v), Σ x·ln(xm+v), Σ ln(xm+v), Σ (px+q)/(xm+v).
        let [value, x_ln, ln, inverse] = deterministic_sums(&data.rows, |&(k, xm)| {
            let (x, shape) = (data.xs[k as usize].0, shape[k as usize]);
            let ln = (xm + v).ln();
            [shape * ln, x * ln, ln, shape / (xm + v)]
        });
        total -= value;
        grad = [-x_ln, -ln, -inverse];
    } else {
        total -= deterministic_sum(&data.rows, |&(k, xm)| shape[k as usize] * (xm + v).ln());
    }
    let shared = q * v.ln() - ln_gamma(q);
    let psi_q = if gradient { digamma(q) } else { 0.0 };
    for (&(x, n, sum_ln_m), &shape) in data.xs.iter().zip(&shape) {
        let px = p * x;
        total += (shared + ln_gamma(shape) - ln_gamma(px) + px * x.ln()) * n + (px - 1.0) * sum_ln_m;
        if gradient {
            let psi = digamma(shape);
            grad[0] += x * (n * (psi - digamma(px) + x.ln()) + sum_ln_m);
            grad[1] += n * (psi - psi_q + v.ln());
            grad[2] += n * q / v;
        }
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
        let data = Prepared::new(&[(1.0, 10.0), (1.0, 20.0), (3.0, 15.0), (3.0, 5.5), (3.0, 40.0)]);
        crate::model::assert_gradient_matches(|p, g| likelihood(&data, p, g), &[6.0, 3.5, 15.0]);
    }

    #[test]
    fn prepared_likelihood_equals_the_per_customer_formula() {
        let data = [(1.0, 10.0), (1.0, 20.0), (3.0, 15.0), (3.0, 5.5), (3.0, 40.0)];
        let params = Params {
            p: 6.0,
            q: 3.5,
            v: 15.0,
        };
        let direct: f64 = data.iter().map(|&(x, m)| log_likelihood(&params, x, m)).sum();
        let prepared = likelihood(&Prepared::new(&data), &[6.0, 3.5, 15.0], false).0;
        assert!(
            (prepared - direct).abs() < 1e-10 * direct.abs(),
            "{prepared} vs {direct}"
        );
    }
}
