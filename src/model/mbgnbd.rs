//! MBG/NBD (Batislam, Denizel & Filiztekin 2007): BG/NBD in which a customer can
//! also drop out right after the first purchase. Likelihood and predictions as
//! in `lifetimes`' ModifiedBetaGeoFitter.

use super::special::{hyp2f1, ln_gamma};
use super::summary::{Indexed, IndexedTriple, Triple, deterministic_sum, deterministic_sums};
use super::{Fit, FitError};

/// The same four parameters as BG/NBD.
pub use super::bgnbd::Params;

pub fn log_likelihood(p: &Params, x: f64, t_x: f64, t: f64) -> f64 {
    let Params { r, alpha, a, b } = *p;
    let a1 = ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln();
    let a2 = ln_gamma(a + b) + ln_gamma(b + x + 1.0) - ln_gamma(b) - ln_gamma(a + b + x + 1.0);
    let a3 = -(r + x) * (alpha + t).ln();
    let a4 = a.ln() - (b + x).ln() + (r + x) * ((alpha + t).ln() - (alpha + t_x).ln());
    // log(1 + e^a4) without overflow.
    let softplus = if a4 > 0.0 {
        a4 + (-a4).exp().ln_1p()
    } else {
        a4.exp().ln_1p()
    };
    a1 + a2 + a3 + softplus
}

/// Maximum-likelihood fit over weighted triples, by L-BFGS with the analytic
/// gradient; laid out as the BG/NBD fit (gamma terms per distinct x, logarithms
/// per distinct time, one softplus per triple).
pub fn fit(data: &[Triple], penalizer: f64) -> Result<Fit, FitError> {
    super::fit_indexed("mbgnbd", &["r", "alpha", "a", "b"], data, penalizer, likelihood)
}

/// Total log-likelihood and (when asked) its gradient in (r, α, a, b).
fn likelihood(data: &Indexed, params: &[f64], gradient: bool) -> (f64, Vec<f64>) {
    let (r, alpha, a, b) = (params[0], params[1], params[2], params[3]);
    let ln_time: Vec<f64> = data.times.iter().map(|t| (alpha + t).ln()).collect();
    let inverse_time: Vec<f64> = data.times.iter().map(|t| 1.0 / (alpha + t)).collect();
    // Per distinct x: r + x, ln(a / (b + x)) and 1 / (b + x).
    let per_x: Vec<(f64, f64, f64)> = data
        .xs
        .iter()
        .map(|&x| (r + x, a.ln() - (b + x).ln(), 1.0 / (b + x)))
        .collect();
    // Per triple: A3 + softplus(A4), and σ(A4) for the gradient.
    let tail = |row: &IndexedTriple| {
        let (rx, drop, inverse_b) = per_x[row.x as usize];
        let (l_t, l_tx) = (ln_time[row.t as usize], ln_time[row.t_x as usize]);
        let a4 = drop + rx * (l_t - l_tx);
        let e = (-a4.abs()).exp();
        let sigma = if a4 > 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
        (
            -rx * l_t + a4.max(0.0) + e.ln_1p(),
            sigma,
            l_t,
            l_tx,
            rx,
            inverse_b,
        )
    };
    let mut total = 0.0;
    let mut grad = [0.0f64; 4];
    if gradient {
        let sums = deterministic_sums(&data.rows, |row| {
            let (value, sigma, l_t, l_tx, rx, inverse_b) = tail(row);
            let (i_t, i_tx) = (inverse_time[row.t as usize], inverse_time[row.t_x as usize]);
            [
                value,
                -l_t + sigma * (l_t - l_tx),
                -rx * i_t + sigma * rx * (i_t - i_tx),
                sigma,
                -sigma * inverse_b,
            ]
            .map(|v| v * row.weight)
        });
        total += sums[0];
        grad = [sums[1], sums[2], sums[3] / a, sums[4]];
    } else {
        total += deterministic_sum(&data.rows, |row| tail(row).0 * row.weight);
    }
    let (gamma_total, gamma_grad) = super::bgnbd::gamma_terms(data, params, 1.0, gradient);
    total += gamma_total;
    for (g, extra) in grad.iter_mut().zip(gamma_grad) {
        *g += extra;
    }
    (total, grad.to_vec())
}

/// P(alive | x, t_x, T): unlike BG/NBD, below 1 even for x = 0.
pub fn p_alive(p: &Params, x: f64, t_x: f64, t: f64) -> f64 {
    1.0 / (1.0 + (p.a / (p.b + x)) * ((p.alpha + t) / (p.alpha + t_x)).powf(p.r + x))
}

/// E[Y(t) | x, t_x, T].
pub fn conditional_expected_purchases(p: &Params, t: f64, x: f64, t_x: f64, big_t: f64) -> Option<f64> {
    Some(expected_purchases_if_alive(p, t, x, big_t)? * p_alive(p, x, t_x, big_t))
}

/// E[Y(t) | alive, x, T]: the expectation without its P(alive) factor.
pub fn expected_purchases_if_alive(p: &Params, t: f64, x: f64, big_t: f64) -> Option<f64> {
    let Params { r, alpha, a, b } = *p;
    if t <= 0.0 {
        return Some(0.0);
    }
    let f = hyp2f1(r + x, b + x + 1.0, a + b + x, t / (alpha + big_t + t))?;
    let head = (a + b + x) / (a - 1.0);
    Some(head * (1.0 - ((alpha + big_t) / (alpha + big_t + t)).powf(r + x) * f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Vec<Triple> {
        [
            (0.0, 0.0, 30.0),
            (1.0, 5.0, 30.0),
            (3.0, 20.0, 25.0),
            (2.0, 10.0, 38.0),
        ]
        .iter()
        .cycle()
        .take(12)
        .enumerate()
        .map(|(i, &(x, t_x, t))| Triple {
            x,
            t_x: t_x + (i % 3) as f64,
            t,
            weight: 1.0 + (i % 2) as f64,
        })
        .collect()
    }

    #[test]
    fn analytic_gradient_matches_central_differences() {
        let indexed = Indexed::new(&data());
        crate::model::assert_gradient_matches(|p, g| likelihood(&indexed, p, g), &[0.5, 6.0, 0.9, 1.6]);
    }

    #[test]
    fn laid_out_likelihood_equals_the_per_customer_formula() {
        let data = data();
        let p = Params {
            r: 0.5,
            alpha: 6.0,
            a: 0.9,
            b: 1.6,
        };
        let direct: f64 = data
            .iter()
            .map(|d| d.weight * log_likelihood(&p, d.x, d.t_x, d.t))
            .sum();
        let laid_out = likelihood(&Indexed::new(&data), &[0.5, 6.0, 0.9, 1.6], false).0;
        assert!(
            (laid_out - direct).abs() < 1e-10 * direct.abs(),
            "{laid_out} vs {direct}"
        );
    }
}
