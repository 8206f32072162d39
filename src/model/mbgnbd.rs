//! MBG/NBD (Batislam, Denizel & Filiztekin 2007): BG/NBD in which a customer can
//! also drop out right after the first purchase. Likelihood and predictions as
//! in `lifetimes`' ModifiedBetaGeoFitter.

use super::special::{hyp2f1, ln_gamma};
use super::summary::Triple;
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

pub fn fit(data: &[Triple], penalizer: f64) -> Result<Fit, FitError> {
    super::fit_triples("mbgnbd", &["r", "alpha", "a", "b"], data, penalizer, |p, d| {
        let p = Params {
            r: p[0],
            alpha: p[1],
            a: p[2],
            b: p[3],
        };
        log_likelihood(&p, d.x, d.t_x, d.t)
    })
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
