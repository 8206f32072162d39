//! BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way"):
//! purchases at Poisson rate λ ~ Gamma(r, α) while alive; after each purchase
//! the customer drops out with probability p ~ Beta(a, b). Formulas as in the
//! paper and the `lifetimes` package.

use super::special::{gamma_ratios, hyp2f1, ln_beta, ln_gamma};
use super::summary::{Indexed, IndexedTriple, Triple, deterministic_sum, deterministic_sums};
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
/// The gamma-function terms depend on x and the parameters only, so each
/// evaluation computes them once per distinct x, the logarithms once per
/// distinct time, and only a log-sum-exp per triple.
pub fn fit(data: &[Triple], penalizer: f64) -> Result<Fit, FitError> {
    super::fit_indexed("bgnbd", &["r", "alpha", "a", "b"], data, penalizer, likelihood)
}

/// The same fit by derivative-free Nelder-Mead: a second optimiser to check the first.
pub fn fit_derivative_free(data: &[Triple], penalizer: f64) -> Result<Fit, FitError> {
    let indexed = Indexed::new(data);
    let ll = |params: &[f64]| likelihood(&indexed, params, false).0;
    super::maximise(
        "bgnbd",
        &["r", "alpha", "a", "b"],
        &[1.0, 1.0, 1.0, 1.0],
        &ll,
        indexed.total_weight(),
        penalizer,
    )
}

/// Total log-likelihood and (when asked) its gradient in (r, α, a, b).
fn likelihood(data: &Indexed, params: &[f64], gradient: bool) -> (f64, Vec<f64>) {
    let (r, alpha, a, b) = (params[0], params[1], params[2], params[3]);
    let ln_time: Vec<f64> = data.times.iter().map(|t| (alpha + t).ln()).collect();
    let inverse_time: Vec<f64> = data.times.iter().map(|t| 1.0 / (alpha + t)).collect();
    // Per distinct x: r + x, ln(a / (b + x − 1)) and 1 / (b + x − 1) (x > 0 only).
    let per_x: Vec<(f64, f64, f64)> = data
        .xs
        .iter()
        .map(|&x| {
            if x > 0.0 {
                (r + x, a.ln() - (b + x - 1.0).ln(), 1.0 / (b + x - 1.0))
            } else {
                (r, f64::NEG_INFINITY, 0.0)
            }
        })
        .collect();
    // Per triple: the tail ln(e^A3 + e^A4) = A3 + softplus(A4 − A3), and the share
    // w4 of e^A4 in it (0 when x = 0, where there is no A4).
    let tail = |row: &IndexedTriple| {
        let (rx, drop, inverse_b) = per_x[row.x as usize];
        let (l_t, l_tx) = (ln_time[row.t as usize], ln_time[row.t_x as usize]);
        let a3 = -rx * l_t;
        if drop == f64::NEG_INFINITY {
            return (a3, 0.0, l_t, l_tx, rx, inverse_b);
        }
        let d = drop - rx * (l_tx - l_t);
        let e = (-d.abs()).exp();
        let w4 = if d > 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
        (a3 + d.max(0.0) + e.ln_1p(), w4, l_t, l_tx, rx, inverse_b)
    };
    let mut total = 0.0;
    let mut grad = [0.0f64; 4];
    if gradient {
        let sums = deterministic_sums(&data.rows, |row| {
            let (value, w4, l_t, l_tx, rx, inverse_b) = tail(row);
            let w3 = 1.0 - w4;
            let dalpha = -rx * (w3 * inverse_time[row.t as usize] + w4 * inverse_time[row.t_x as usize]);
            [value, -w3 * l_t - w4 * l_tx, dalpha, w4, -w4 * inverse_b].map(|v| v * row.weight)
        });
        total += sums[0];
        grad = [sums[1], sums[2], sums[3] / a, sums[4]];
    } else {
        total += deterministic_sum(&data.rows, |row| tail(row).0 * row.weight);
    }
    let (gamma_total, gamma_grad) = gamma_terms(data, params, 0.0, gradient);
    total += gamma_total;
    for (g, extra) in grad.iter_mut().zip(gamma_grad) {
        *g += extra;
    }
    (total, grad.to_vec())
}

/// The gamma-function terms of BG/NBD (`shift` 0) and MBG/NBD (`shift` 1), summed
/// over the distinct x with their weights, and (when asked) their gradient in
/// (r, α, a, b): ln Γ(r + x) − ln Γ(r) + r ln α + ln Γ(b + x + shift) − ln Γ(b)
/// − (ln Γ(a + b + x + shift) − ln Γ(a + b)), as ratios that stay exact for huge
/// parameters.
pub(super) fn gamma_terms(data: &Indexed, params: &[f64], shift: f64, gradient: bool) -> (f64, [f64; 4]) {
    let (r, alpha, a, b) = (params[0], params[1], params[2], params[3]);
    let shifted: Vec<f64> = data.xs.iter().map(|x| x + shift).collect();
    let (rising_r, rising_b, rising_ab) = (
        gamma_ratios(r, &data.xs),
        gamma_ratios(b, &shifted),
        gamma_ratios(a + b, &shifted),
    );
    let mut total = 0.0;
    let mut grad = [0.0f64; 4];
    for k in 0..data.xs.len() {
        let weight = data.x_weights[k];
        let ((ln_r, psi_r), (ln_b, psi_b), (ln_ab, psi_ab)) = (rising_r[k], rising_b[k], rising_ab[k]);
        total += (ln_r + r * alpha.ln() + ln_b - ln_ab) * weight;
        if gradient {
            grad[0] += weight * (psi_r + alpha.ln());
            grad[1] += weight * r / alpha;
            grad[2] -= weight * psi_ab;
            grad[3] += weight * (psi_b - psi_ab);
        }
    }
    (total, grad)
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
    Some(expected_purchases_if_alive(p, t, x, big_t)? * p_alive(p, x, t_x, big_t))
}

/// E[Y(t) | alive, x, T]: eq. 10 without its P(alive) factor; it does not depend on t_x.
pub fn expected_purchases_if_alive(p: &Params, t: f64, x: f64, big_t: f64) -> Option<f64> {
    let Params { r, alpha, a, b } = *p;
    if t <= 0.0 {
        return Some(0.0);
    }
    let f = hyp2f1(r + x, b + x, a + b + x - 1.0, t / (alpha + big_t + t))?;
    let head = (a + b + x - 1.0) / (a - 1.0);
    Some(head * (1.0 - ((alpha + big_t) / (alpha + big_t + t)).powf(r + x) * f))
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
        let indexed = Indexed::new(&data);
        crate::model::assert_gradient_matches(|p, g| likelihood(&indexed, p, g), &[0.3, 4.0, 0.8, 2.5]);
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
