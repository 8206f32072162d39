//! BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way"):
//! purchases at Poisson rate λ ~ Gamma(r, α) while alive; after each purchase
//! the customer drops out with probability p ~ Beta(a, b). Formulas as in the
//! paper and the `lifetimes` package.

use super::special::{digamma, hyp2f1, ln_beta, ln_gamma};
use super::summary::{Triple, deterministic_sum, deterministic_sums};
use super::{Fit, FitError};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
}

impl Params {
    pub fn from_fit(fit: &Fit) -> Params {
        Params {
            r: fit.value("r"),
            alpha: fit.value("alpha"),
            a: fit.value("a"),
            b: fit.value("b"),
        }
    }
}

/// Log-likelihood of one customer (eq. 6 of the paper, in logs).
pub fn log_likelihood(p: &Params, x: f64, t_x: f64, t: f64) -> f64 {
    let Params { r, alpha, a, b } = *p;
    let a1 = ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln();
    let a2 = ln_beta(a, b + x) - ln_beta(a, b);
    let a3 = -(r + x) * (alpha + t).ln();
    if x > 0.0 {
        let a4 = a.ln() - (b + x - 1.0).ln() - (r + x) * (alpha + t_x).ln();
        // log(e^a3 + e^a4) without overflow.
        let m = a3.max(a4);
        a1 + a2 + m + ((a3 - m).exp() + (a4 - m).exp()).ln()
    } else {
        a1 + a2 + a3
    }
}

/// Maximum-likelihood fit over weighted (x, t_x, T) triples.
///
/// The gamma-function terms depend on x and the parameters only, and x takes
/// few distinct values, so each evaluation computes them once per x and only
/// the logarithms per triple.
pub fn fit(data: &[Triple], penalizer: f64) -> Result<Fit, FitError> {
    super::require_customers("bgnbd", data)?;
    let total_weight: f64 = data.iter().map(|d| d.weight).sum();
    let groups = group_by_x(data);
    let ll = |params: &[f64]| likelihood(&groups, params, false).0;
    let with_gradient = |params: &[f64]| likelihood(&groups, params, true);
    super::maximise_smooth(
        "bgnbd",
        &["r", "alpha", "a", "b"],
        &[1.0, 1.0, 1.0, 1.0],
        &ll,
        &with_gradient,
        total_weight,
        penalizer,
    )
}

/// The same fit by derivative-free Nelder-Mead: a second optimiser to check the first.
pub fn fit_derivative_free(data: &[Triple], penalizer: f64) -> Result<Fit, FitError> {
    let groups = group_by_x(data);
    let total_weight: f64 = data.iter().map(|d| d.weight).sum();
    let ll = |params: &[f64]| likelihood(&groups, params, false).0;
    super::maximise(
        "bgnbd",
        &["r", "alpha", "a", "b"],
        &[1.0, 1.0, 1.0, 1.0],
        &ll,
        total_weight,
        penalizer,
    )
}

fn group_by_x(data: &[Triple]) -> Vec<(f64, Vec<Triple>)> {
    let mut by_x: std::collections::BTreeMap<u64, Vec<Triple>> = std::collections::BTreeMap::new();
    for d in data {
        by_x.entry(d.x.to_bits()).or_default().push(*d);
    }
    by_x.into_iter().map(|(x, g)| (f64::from_bits(x), g)).collect()
}

/// Total log-likelihood over triples grouped by x, and (when asked) its gradient
/// in (r, α, a, b). Digamma terms, like the gamma terms, are once per distinct x.
fn likelihood(groups: &[(f64, Vec<Triple>)], params: &[f64], gradient: bool) -> (f64, Vec<f64>) {
    let (r, alpha, a, b) = (params[0], params[1], params[2], params[3]);
    let shared = r * alpha.ln() - ln_gamma(r) - ln_beta(a, b);
    let mut total = 0.0;
    let mut grad = [0.0f64; 4];
    for (x, group) in groups {
        let x = *x;
        let weight: f64 = group.iter().map(|d| d.weight).sum();
        let drop = if x > 0.0 { a.ln() - (b + x - 1.0).ln() } else { 0.0 };
        total += (shared + ln_gamma(r + x) + ln_beta(a, b + x)) * weight;
        // Per triple: the tail ln(e^A3 + e^A4) (or A3 when x = 0) and its derivatives.
        let per = |d: &Triple| {
            let (l_t, l_tx) = ((alpha + d.t).ln(), (alpha + d.t_x).ln());
            let a3 = -(r + x) * l_t;
            let (value, w3) = if x > 0.0 {
                let a4 = drop - (r + x) * l_tx;
                let m = a3.max(a4);
                let (e3, e4) = ((a3 - m).exp(), (a4 - m).exp());
                (m + (e3 + e4).ln(), e3 / (e3 + e4))
            } else {
                (a3, 1.0)
            };
            let w4 = 1.0 - w3;
            let dr = -w3 * l_t - w4 * l_tx;
            let dalpha = -(r + x) * (w3 / (alpha + d.t) + w4 / (alpha + d.t_x));
            let (da, db) = if x > 0.0 {
                (w4 / a, -w4 / (b + x - 1.0))
            } else {
                (0.0, 0.0)
            };
            [value, dr, dalpha, da, db].map(|v| v * d.weight)
        };
        if !gradient {
            total += deterministic_sum(group, |d| per(d)[0]);
            continue;
        }
        let sums = deterministic_sums(group, per);
        total += sums[0];
        let (psi_a_b_x, psi_a_b) = (digamma(a + b + x), digamma(a + b));
        grad[0] += sums[1] + weight * (digamma(r + x) - digamma(r) + alpha.ln());
        grad[1] += sums[2] + weight * r / alpha;
        grad[2] += sums[3] + weight * (psi_a_b - psi_a_b_x);
        grad[3] += sums[4] + weight * (digamma(b + x) - psi_a_b_x - digamma(b) + psi_a_b);
    }
    (total, grad.to_vec())
}

/// P(alive | x, t_x, T).
pub fn p_alive(p: &Params, x: f64, t_x: f64, t: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let ratio = ((p.alpha + t) / (p.alpha + t_x)).ln() * (p.r + x);
    1.0 / (1.0 + (p.a / (p.b + x - 1.0)) * ratio.exp())
}

/// E[X(t)] for a new customer (eq. 7).
pub fn expected_purchases(p: &Params, t: f64) -> Option<f64> {
    let Params { r, alpha, a, b } = *p;
    let f = hyp2f1(r, b, a + b - 1.0, t / (alpha + t))?;
    Some((a + b - 1.0) / (a - 1.0) * (1.0 - (alpha / (alpha + t)).powf(r) * f))
}

/// E[Y(t) | x, t_x, T]: expected purchases in the next `t` (eq. 10).
pub fn conditional_expected_purchases(p: &Params, t: f64, x: f64, t_x: f64, big_t: f64) -> Option<f64> {
    let Params { r, alpha, a, b } = *p;
    if t <= 0.0 {
        return Some(0.0);
    }
    let f = hyp2f1(r + x, b + x, a + b + x - 1.0, t / (alpha + big_t + t))?;
    let head = (a + b + x - 1.0) / (a - 1.0);
    let body = 1.0 - ((alpha + big_t) / (alpha + big_t + t)).powf(r + x) * f;
    let tail = if x > 0.0 {
        1.0 + (a / (b + x - 1.0)) * ((alpha + big_t) / (alpha + t_x)).powf(r + x)
    } else {
        1.0
    };
    Some(head * body / tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four kinds of customer, x = 0 to 3.
    const KINDS: [(f64, f64, f64); 4] = [
        (0.0, 0.0, 30.0),
        (1.0, 5.0, 30.0),
        (3.0, 20.0, 25.0),
        (2.0, 10.0, 38.0),
    ];

    #[test]
    fn analytic_gradient_matches_central_differences() {
        let data: Vec<Triple> = KINDS
            .iter()
            .map(|&(x, t_x, t)| Triple {
                x,
                t_x,
                t,
                weight: 2.0,
            })
            .collect();
        let groups = group_by_x(&data);
        crate::model::assert_gradient_matches(|p, g| likelihood(&groups, p, g), &[0.3, 4.0, 0.8, 2.5]);
    }

    #[test]
    fn grouped_likelihood_equals_the_per_customer_formula() {
        // The fit's grouped evaluation and `log_likelihood` must agree: fit a tiny set
        // and compare the reported total with a direct sum at the optimum.
        let data: Vec<Triple> = KINDS
            .iter()
            .cycle()
            .take(40)
            .enumerate()
            .map(|(i, &(x, t_x, t))| Triple {
                x,
                t_x: t_x + (i % 3) as f64,
                t,
                weight: 1.0 + (i % 2) as f64,
            })
            .collect();
        let fit = fit(&data, 0.1).unwrap();
        let p = Params::from_fit(&fit);
        let direct: f64 = data
            .iter()
            .map(|d| d.weight * log_likelihood(&p, d.x, d.t_x, d.t))
            .sum();
        assert!(
            (fit.log_likelihood - direct).abs() < 1e-9 * direct.abs(),
            "{} vs {direct}",
            fit.log_likelihood
        );
    }
}
