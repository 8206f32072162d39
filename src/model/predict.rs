//! Per-customer predictions (SPEC §6.3): P(alive), expected purchases over the
//! horizon, expected spend per purchase and the discounted predicted CLV.

use rayon::prelude::*;

use super::summary::{Summary, Triple};
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
    combine(
        model.p_alive(x, t_x, t),
        horizon_if_alive(model, x, t, horizon),
        gamma_gamma::conditional_expected_spend(gg, x, monetary),
        horizon.margin,
    )
}

/// The horizon's expected purchases if alive, plain and with each month's discounted.
/// Every model's conditional expectation is P(alive | x, t_x, T) × E[Y(t) | alive, x, T],
/// so these depend on (x, T) only.
fn horizon_if_alive(model: &CountModel, x: f64, big_t: f64, horizon: &Horizon) -> Option<(f64, f64)> {
    let month = DAYS_PER_MONTH / horizon.unit_days;
    let monthly = (1.0 + horizon.discount_rate_annual).powf(1.0 / 12.0) - 1.0;
    let mut previous = 0.0;
    let mut discounted = 0.0;
    for m in 1..=horizon.months {
        let cumulative = model.expected_purchases_if_alive(m as f64 * month, x, big_t)?;
        discounted += (cumulative - previous) / (1.0 + monthly).powi(m as i32);
        previous = cumulative;
    }
    Some((previous, discounted))
}

fn combine(p_alive: f64, if_alive: Option<(f64, f64)>, spend: f64, margin: f64) -> Prediction {
    let if_alive = if_alive.filter(|_| p_alive.is_finite());
    Prediction {
        p_alive,
        expected_purchases: if_alive.map(|(purchases, _)| p_alive * purchases),
        expected_spend: spend,
        predicted_clv: if_alive.map(|(_, discounted)| p_alive * discounted * spend * margin),
    }
}

/// What [`predict`] needs per distinct (x, t_x, T): P(alive) once per triple and
/// the horizon once per distinct (x, T), which customers share.
pub struct Predictor<'a> {
    p_alive: Vec<f64>,
    curves: Vec<Option<(f64, f64)>>,
    curve_of: Vec<usize>,
    gg: &'a gamma_gamma::Params,
    margin: f64,
}

impl<'a> Predictor<'a> {
    /// `triples`: [`super::summary::triples_indexed`] of the customers.
    pub fn new(
        triples: &[Triple],
        model: &CountModel,
        gg: &'a gamma_gamma::Params,
        horizon: &Horizon,
    ) -> Predictor<'a> {
        let p_alive: Vec<f64> = triples
            .par_iter()
            .map(|d| model.p_alive(d.x, d.t_x, d.t))
            .collect();
        let pair = |d: &Triple| (d.x.to_bits(), d.t.to_bits());
        let mut pairs: Vec<(u64, u64)> = triples.iter().map(pair).collect();
        pairs.par_sort_unstable();
        pairs.dedup();
        let curves: Vec<Option<(f64, f64)>> = pairs
            .par_iter()
            .map(|&(x, t)| horizon_if_alive(model, f64::from_bits(x), f64::from_bits(t), horizon))
            .collect();
        // Every triple's pair is in `pairs`, so the search always finds it.
        let curve_of: Vec<usize> = triples
            .par_iter()
            .map(|d| pairs.binary_search(&pair(d)).unwrap_or_else(|i| i))
            .collect();
        Predictor {
            p_alive,
            curves,
            curve_of,
            gg,
            margin: horizon.margin,
        }
    }

    /// [`predict`] for a customer whose triple is number `triple`.
    pub fn predict(&self, customer: &Summary, triple: u32) -> Prediction {
        let k = triple as usize;
        combine(
            self.p_alive[k],
            self.curves[self.curve_of[k]],
            gamma_gamma::conditional_expected_spend(self.gg, customer.x, customer.monetary),
            self.margin,
        )
    }
}

/// [`predict`] for every customer, in parallel, in order. `triples` and `triple_of`
/// are [`super::summary::triples_indexed`] of `customers`.
pub fn predict_all(
    customers: &[Summary],
    triples: &[Triple],
    triple_of: &[u32],
    model: &CountModel,
    gg: &gamma_gamma::Params,
    horizon: &Horizon,
) -> Vec<Prediction> {
    let predictor = Predictor::new(triples, model, gg, horizon);
    customers
        .par_iter()
        .zip(triple_of)
        .map(|(c, &k)| predictor.predict(c, k))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::summary::triples_indexed;
    use crate::model::{bgnbd, pareto_nbd};

    /// Customers sharing triples and (x, T) pairs, as real ones do.
    fn customers() -> Vec<Summary> {
        (0..60)
            .map(|i| {
                let x = f64::from(i % 4);
                let t = 10.0 + f64::from(i % 5) * 7.0;
                Summary {
                    x,
                    t_x: if x > 0.0 { t * f64::from(i % 3) / 3.0 } else { 0.0 },
                    t,
                    monetary: if x > 0.0 { 5.0 + f64::from(i) } else { 0.0 },
                }
            })
            .collect()
    }

    #[test]
    fn shared_predictions_equal_the_month_by_month_definition() {
        let models = [
            CountModel::Bgnbd(bgnbd::Params {
                r: 0.24,
                alpha: 4.4,
                a: 0.79,
                b: 2.4,
            }),
            CountModel::Mbgnbd(bgnbd::Params {
                r: 0.52,
                alpha: 6.2,
                a: 0.89,
                b: 1.6,
            }),
            CountModel::ParetoNbd(pareto_nbd::Params {
                r: 0.55,
                alpha: 10.6,
                s: 0.61 + 1.0,
                beta: 11.7,
            }),
        ];
        let gg = gamma_gamma::Params {
            p: 6.25,
            q: 3.74,
            v: 15.44,
        };
        let horizon = Horizon {
            months: 6,
            discount_rate_annual: 0.1,
            margin: 0.3,
            unit_days: 7.0,
        };
        let customers = customers();
        let (triples, triple_of) = triples_indexed(&customers);
        assert!(triples.len() < customers.len());
        for model in &models {
            let shared = predict_all(&customers, &triples, &triple_of, model, &gg, &horizon);
            for (c, p) in customers.iter().zip(&shared) {
                // SPEC §6.3 month by month, from the conditional expectation itself.
                let month = DAYS_PER_MONTH / 7.0;
                let monthly = 1.1f64.powf(1.0 / 12.0) - 1.0;
                let spend = gamma_gamma::conditional_expected_spend(&gg, c.x, c.monetary);
                let cumulative = |m: u32| {
                    model
                        .conditional_expected_purchases(f64::from(m) * month, c.x, c.t_x, c.t)
                        .unwrap()
                };
                let clv: f64 = (1..=6)
                    .map(|m| {
                        (cumulative(m) - cumulative(m - 1)) * spend * 0.3 / (1.0 + monthly).powi(m as i32)
                    })
                    .sum();
                let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1.0);
                assert!(close(p.predicted_clv.unwrap(), clv), "{model:?} {c:?}");
                assert!(
                    close(p.expected_purchases.unwrap(), cumulative(6)),
                    "{model:?} {c:?}"
                );
                assert_eq!(p.p_alive, model.p_alive(c.x, c.t_x, c.t));
                assert_eq!(*p, predict(c, model, &gg, &horizon));
            }
        }
    }

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
