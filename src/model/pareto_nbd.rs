//! Pareto/NBD (Schmittlein, Morrison & Colombo 1987): purchases at rate
//! λ ~ Gamma(r, α) while alive, lifetimes exponential with μ ~ Gamma(s, β).
//! Likelihood as in Fader & Hardie's note and `lifetimes`' ParetoNBDFitter.

use super::special::{hyp2f1, ln_gamma};
use super::summary::Triple;
use super::{Fit, FitError};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub r: f64,
    pub alpha: f64,
    pub s: f64,
    pub beta: f64,
}

impl Params {
    pub fn from_fit(fit: &Fit) -> Params {
        Params {
            r: fit.value("r"),
            alpha: fit.value("alpha"),
            s: fit.value("s"),
            beta: fit.value("beta"),
        }
    }
}

/// ln A₀ of the likelihood; the 2F1 argument is |α − β| / (max(α, β) + t) < 1.
fn log_a0(p: &Params, x: f64, t_x: f64, t: f64) -> Option<f64> {
    let Params { r, alpha, s, beta } = *p;
    let (low, high, second) = if alpha < beta {
        (alpha, beta, r + x)
    } else {
        (beta, alpha, s + 1.0)
    };
    let rsx = r + s + x;
    let gap = high - low;
    let (q1, q2) = (high + t_x, high + t);
    let p1 = hyp2f1(rsx, second, rsx + 1.0, gap / q1)?;
    let p2 = hyp2f1(rsx, second, rsx + 1.0, gap / q2)?;
    // ln(p1 / q1^rsx − p2 / q2^rsx), the difference taken in logs.
    let (u, v) = (p1.ln() + rsx * q2.ln(), p2.ln() + rsx * q1.ln());
    if u <= v {
        // A₀ = 0 (t_x = T with α = β), or a rounding-level negative: its log is −∞.
        return Some(f64::NEG_INFINITY);
    }
    Some(u + (-(v - u).exp()).ln_1p() - rsx * (q1 * q2).ln())
}

pub fn log_likelihood(p: &Params, x: f64, t_x: f64, t: f64) -> f64 {
    let Params { r, alpha, s, beta } = *p;
    let a1 = ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln() + s * beta.ln();
    let Some(log_a0) = log_a0(p, x, t_x, t) else {
        return f64::NAN;
    };
    let first = -(r + x) * (alpha + t).ln() - s * (beta + t).ln();
    let second = s.ln() + log_a0 - (r + s + x).ln();
    let m = first.max(second);
    a1 + m + ((first - m).exp() + (second - m).exp()).ln()
}

pub fn fit(data: &[Triple], penalizer: f64) -> Result<Fit, FitError> {
    super::fit_triples(
        "pareto_nbd",
        &["r", "alpha", "s", "beta"],
        data,
        penalizer,
        |p, d| {
            let p = Params {
                r: p[0],
                alpha: p[1],
                s: p[2],
                beta: p[3],
            };
            log_likelihood(&p, d.x, d.t_x, d.t)
        },
    )
}

/// P(alive | x, t_x, T).
pub fn p_alive(p: &Params, x: f64, t_x: f64, t: f64) -> Option<f64> {
    let Params { r, alpha, s, beta } = *p;
    let log_a0 = log_a0(p, x, t_x, t)?;
    let log_ratio = (s / (r + s + x)).ln() + (r + x) * (alpha + t).ln() + s * (beta + t).ln() + log_a0;
    Some(1.0 / (1.0 + log_ratio.exp()))
}

/// E[Y(t) | x, t_x, T] (needs s > 1).
pub fn conditional_expected_purchases(p: &Params, t: f64, x: f64, t_x: f64, big_t: f64) -> Option<f64> {
    Some(expected_purchases_if_alive(p, t, x, big_t)? * p_alive(p, x, t_x, big_t)?)
}

/// E[Y(t) | alive, x, T]: the expectation without its P(alive) factor.
pub fn expected_purchases_if_alive(p: &Params, t: f64, x: f64, big_t: f64) -> Option<f64> {
    let Params { r, alpha, s, beta } = *p;
    if t <= 0.0 {
        return Some(0.0);
    }
    let head = (r + x) * (beta + big_t) / ((alpha + big_t) * (s - 1.0));
    Some(head * (1.0 - ((beta + big_t) / (beta + big_t + t)).powf(s - 1.0)))
}
