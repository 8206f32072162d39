//! Per-customer predictions (SPEC §6.3): P(alive), expected purchases over the
//! horizon, expected spend per purchase and the discounted predicted CLV.

use rayon::prelude::*;

use super::summary::Summary;
use super::{CountModel, gamma_gamma};

/// Days in a month: 365.25 / 12, whatever the model's time unit.
pub const DAYS_PER_MONTH: f64 = 365.25 / 12.0;

#[derive(Debug, Clone, Copy)]
pub struct Horizon {
    pub months: u32,
    pub discount_rate_annual: f64,
    pub margin: f64,
    /// Days per model time unit (1 or 7).
    pub unit_days: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    pub p_alive: f64,
    pub expected_purchases: Option<f64>,
    pub expected_spend: f64,
    pub predicted_clv: Option<f64>,
}

/// predicted_clv = Σ_{m=1..H} E[purchases in month m] × expected_spend × margin / (1 + d)^m,
/// d = (1 + annual rate)^(1/12) − 1.
pub fn predict(
    customer: &Summary,
    model: &CountModel,
    gg: &gamma_gamma::Params,
    horizon: &Horizon,
) -> Prediction {
    let Summary { x, t_x, t, monetary } = *customer;
    let month = DAYS_PER_MONTH / horizon.unit_days;
    let monthly = (1.0 + horizon.discount_rate_annual).powf(1.0 / 12.0) - 1.0;
    let spend = gamma_gamma::conditional_expected_spend(gg, x, monetary);
    let mut previous = 0.0;
    let mut clv = Some(0.0);
    for m in 1..=horizon.months {
        let cumulative = model.conditional_expected_purchases(m as f64 * month, x, t_x, t);
        clv = match (clv, cumulative) {
            (Some(total), Some(cumulative)) => {
                let value = (cumulative - previous) * spend * horizon.margin / (1.0 + monthly).powi(m as i32);
                previous = cumulative;
                Some(total + value)
            }
            _ => None,
        };
    }
    Prediction {
        p_alive: model.p_alive(x, t_x, t),
        expected_purchases: clv.map(|_| previous),
        expected_spend: spend,
        predicted_clv: clv,
    }
}

/// [`predict`] for every customer, in parallel, in order.
pub fn predict_all(
    customers: &[Summary],
    model: &CountModel,
    gg: &gamma_gamma::Params,
    horizon: &Horizon,
) -> Vec<Prediction> {
    customers
        .par_iter()
        .map(|c| predict(c, model, gg, horizon))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::bgnbd;

    #[test]
    fn undiscounted_clv_is_expected_purchases_times_spend() {
        let bg = CountModel::Bgnbd(bgnbd::Params {
            r: 0.24,
            alpha: 4.4,
            a: 0.79,
            b: 2.4,
        });
        let gg = gamma_gamma::Params {
            p: 6.25,
            q: 3.74,
            v: 15.44,
        };
        let customer = Summary {
            x: 2.0,
            t_x: 30.0,
            t: 38.0,
            monetary: 20.0,
        };
        let horizon = Horizon {
            months: 12,
            discount_rate_annual: 0.0,
            margin: 1.0,
            unit_days: 7.0,
        };
        let p = predict(&customer, &bg, &gg, &horizon);
        let purchases = p.expected_purchases.unwrap();
        assert!((p.predicted_clv.unwrap() - purchases * p.expected_spend).abs() < 1e-9);
        // 12 months of 365.25 / 12 days, in weeks.
        let direct = bg
            .conditional_expected_purchases(365.25 / 7.0, 2.0, 30.0, 38.0)
            .unwrap();
        assert!((purchases - direct).abs() < 1e-12);
        let discounted = predict(
            &customer,
            &bg,
            &gg,
            &Horizon {
                discount_rate_annual: 0.1,
                ..horizon
            },
        );
        assert!(discounted.predicted_clv.unwrap() < p.predicted_clv.unwrap());
    }
}
