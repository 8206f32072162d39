//! Gamma-Gamma spend model (Fader, Hardie & Lee 2005, "RFM and CLV"; Colombo &
//! Jiang 1999): a customer's transaction values are Gamma(p, ν) with
//! ν ~ Gamma(q, γ); fitted on customers with x > 0 and their mean repeat value.

use super::special::ln_gamma;
use super::{Fit, FitError, maximise};

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
    let ll = |params: &[f64]| {
        let (p, q, v) = (params[0], params[1], params[2]);
        let shared = q * v.ln() - ln_gamma(q);
        groups
            .iter()
            .map(|(x, means)| {
                let px = p * x;
                let head = shared + ln_gamma(px + q) - ln_gamma(px) + px * x.ln();
                head * means.len() as f64
                    + super::summary::deterministic_sum(means, |m| {
                        (px - 1.0) * m.ln() - (px + q) * (x * m + v).ln()
                    })
            })
            .sum::<f64>()
    };
    maximise(
        "gamma_gamma",
        &["p", "q", "v"],
        &[1.0, 1.0, 1.0],
        &ll,
        data.len() as f64,
        penalizer,
    )
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
