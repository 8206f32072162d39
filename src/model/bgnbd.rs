//! BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way"):
//! purchases at Poisson rate λ ~ Gamma(r, α) while alive; after each purchase
//! the customer drops out with probability p ~ Beta(a, b). Formulas as in the
//! paper and the `lifetimes` package.

use super::special::{hyp2f1, ln_beta, ln_gamma};
use super::summary::{Triple, deterministic_sum};
use super::{Fit, FitError, maximise};

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
pub fn fit(data: &[Triple], penalizer: f64) -> Result<Fit, FitError> {
    if data.is_empty() {
        return Err(FitError::NoData {
            model: "bgnbd".into(),
            reason: "no customers to fit".into(),
        });
    }
    let total_weight: f64 = data.iter().map(|d| d.weight).sum();
    let ll = |params: &[f64]| {
        let p = Params {
            r: params[0],
            alpha: params[1],
            a: params[2],
            b: params[3],
        };
        deterministic_sum(data, |d| d.weight * log_likelihood(&p, d.x, d.t_x, d.t))
    };
    maximise(
        "bgnbd",
        &["r", "alpha", "a", "b"],
        &[1.0, 1.0, 1.0, 1.0],
        &ll,
        total_weight,
        penalizer,
    )
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
