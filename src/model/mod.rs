//! Predictive CLV models (SPEC §6.3): BG/NBD for purchase counts and
//! Gamma-Gamma for spend, fitted by maximum likelihood in log-parameter space.

pub mod bgnbd;
pub mod gamma_gamma;
pub mod holdout;
pub mod mbgnbd;
pub mod pareto_nbd;
pub mod predict;
pub mod special;
pub mod summary;

use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::neldermead::NelderMead;
use argmin::solver::quasinewton::LBFGS;
use serde::Serialize;

/// A fitted model: parameters with standard errors, and how the fit went.
#[derive(Debug, Clone, Serialize)]
pub struct Fit {
    pub model: String,
    pub parameters: Vec<Parameter>,
    pub log_likelihood: f64,
    pub iterations: u64,
    pub converged: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Parameter {
    pub name: String,
    pub value: f64,
    /// From the inverse Hessian of the log-likelihood; null when it is not positive definite.
    pub standard_error: Option<f64>,
}

impl Fit {
    pub fn value(&self, name: &str) -> f64 {
        self.parameters
            .iter()
            .find(|p| p.name == name)
            .map_or(f64::NAN, |p| p.value)
    }
}

/// Why a fit failed (SPEC §6.3 names the causes).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    #[error("{model}: the log-likelihood is not finite at the start or the optimum")]
    NonFinite { model: String },
    #[error(
        "{model}: parameter `{parameter}` ran to its bound ({value:e}); the data cannot identify it (try a penalizer)"
    )]
    Bound {
        model: String,
        parameter: String,
        value: f64,
    },
    #[error("{model}: no convergence within {iterations} iterations")]
    IterationLimit { model: String, iterations: u64 },
    #[error("{model}: {reason}")]
    NoData { model: String, reason: String },
}

/// Refuses to fit nothing, naming the model.
fn require_customers(model: &str, data: &[summary::Triple]) -> Result<(), FitError> {
    if data.is_empty() {
        return Err(FitError::NoData {
            model: model.into(),
            reason: "no customers to fit".into(),
        });
    }
    Ok(())
}

/// Derivative-free fit of a purchase model over weighted triples, from all
/// parameters at 1: `per_customer(params, triple)` is one customer's log-likelihood.
fn fit_triples(
    model: &str,
    names: &[&str],
    data: &[summary::Triple],
    penalizer: f64,
    per_customer: impl Fn(&[f64], &summary::Triple) -> f64 + Sync,
) -> Result<Fit, FitError> {
    require_customers(model, data)?;
    let total_weight: f64 = data.iter().map(|d| d.weight).sum();
    let ll = |params: &[f64]| summary::deterministic_sum(data, |d| d.weight * per_customer(params, d));
    maximise(
        model,
        names,
        &vec![1.0; names.len()],
        &ll,
        total_weight,
        penalizer,
    )
}

/// Fits `data` from a warm start: the same fit, from all parameters at 1, on an
/// evenly spaced sample of about `WARM_START_SAMPLE` rows. That lands the full fit
/// a few iterations from its optimum, and each full iteration costs a pass over all
/// the rows. Small data, or a sample whose fit fails, starts cold.
fn warm_started<T: Copy>(
    data: &[T],
    parameters: usize,
    fit_from: impl Fn(&[T], &[f64]) -> Result<Fit, FitError>,
) -> Result<Fit, FitError> {
    let cold = vec![1.0; parameters];
    let step = data.len() / WARM_START_SAMPLE;
    let warm = (step >= 4)
        .then(|| {
            let sample: Vec<T> = data.iter().step_by(step).copied().collect();
            fit_from(&sample, &cold).ok()
        })
        .flatten()
        .map(|fit| fit.parameters.iter().map(|p| p.value).collect::<Vec<f64>>());
    fit_from(data, warm.as_deref().unwrap_or(&cold))
}

/// A purchase model's log-likelihood over indexed triples, with its gradient when asked.
type IndexedLikelihood = fn(&summary::Indexed, &[f64], bool) -> (f64, Vec<f64>);

/// Maximum-likelihood fit of a purchase model over weighted triples, by L-BFGS with
/// its analytic gradient, from a warm start.
fn fit_indexed(
    model: &str,
    names: &[&str],
    data: &[summary::Triple],
    penalizer: f64,
    likelihood: IndexedLikelihood,
) -> Result<Fit, FitError> {
    require_customers(model, data)?;
    warm_started(data, names.len(), |data, start| {
        let indexed = summary::Indexed::new(data);
        let ll = |params: &[f64]| likelihood(&indexed, params, false).0;
        let with_gradient = |params: &[f64]| likelihood(&indexed, params, true);
        maximise_smooth(
            model,
            names,
            start,
            &ll,
            &with_gradient,
            indexed.total_weight(),
            penalizer,
        )
    })
}

const WARM_START_SAMPLE: usize = 20_000;

/// Bounds on log-parameters: outside them a parameter is "running to its bound".
const LOG_BOUND: f64 = 20.0;
/// A log-parameter this far out when the iterations run out is drifting to its bound.
const DRIFTING: f64 = 10.0;
const MAX_ITERATIONS: u64 = 20_000;

/// −(mean log-likelihood − L2 penalty) at parameters e^θ; +∞ past the bounds or where undefined.
fn penalised_cost(
    log_likelihood: &dyn Fn(&[f64]) -> f64,
    log_params: &[f64],
    total_weight: f64,
    penalizer: f64,
) -> f64 {
    let Some(params) = natural(log_params) else {
        return f64::INFINITY;
    };
    let value = penalised(log_likelihood(&params), &params, total_weight, penalizer);
    if value.is_finite() { value } else { f64::INFINITY }
}

/// The parameters e^θ, or `None` past the search region.
fn natural(log_params: &[f64]) -> Option<Vec<f64>> {
    (!log_params.iter().any(|p| p.abs() > LOG_BOUND + 5.0))
        .then(|| log_params.iter().map(|p| p.exp()).collect())
}

/// −(mean log-likelihood − L2 penalty), from the total log-likelihood at `params`.
fn penalised(total: f64, params: &[f64], total_weight: f64, penalizer: f64) -> f64 {
    -(total / total_weight - penalizer * params.iter().map(|p| p * p).sum::<f64>())
}

/// The objective for derivative-free search.
struct Objective<'a> {
    log_likelihood: &'a dyn Fn(&[f64]) -> f64,
    total_weight: f64,
    penalizer: f64,
}

impl CostFunction for Objective<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, log_params: &Self::Param) -> Result<f64, argmin::core::Error> {
        Ok(penalised_cost(
            self.log_likelihood,
            log_params,
            self.total_weight,
            self.penalizer,
        ))
    }
}

/// Maximises `log_likelihood(params)` (a total over customers, weights applied)
/// from `start`, with an optional L2 penalty on the parameters as in `lifetimes`.
/// Nelder-Mead in log space, restarted from its optimum until it stops moving.
pub fn maximise(
    model: &str,
    names: &[&str],
    start: &[f64],
    log_likelihood: &dyn Fn(&[f64]) -> f64,
    total_weight: f64,
    penalizer: f64,
) -> Result<Fit, FitError> {
    let mut best: Vec<f64> = start.iter().map(|p| p.ln()).collect();
    if !penalised_cost(log_likelihood, &best, total_weight, penalizer).is_finite() {
        return Err(FitError::NonFinite { model: model.into() });
    }
    let mut iterations = 0;
    let mut previous = f64::INFINITY;
    for _restart in 0..8 {
        let simplex: Vec<Vec<f64>> = std::iter::once(best.clone())
            .chain((0..best.len()).map(|i| {
                let mut vertex = best.clone();
                vertex[i] += 0.25;
                vertex
            }))
            .collect();
        let solver = NelderMead::new(simplex)
            .with_sd_tolerance(1e-12)
            .map_err(|_| FitError::NonFinite { model: model.into() })?;
        let objective = Objective {
            log_likelihood,
            total_weight,
            penalizer,
        };
        let result = Executor::new(objective, solver)
            .configure(|state| state.max_iters(MAX_ITERATIONS))
            .run()
            .map_err(|_| FitError::NonFinite { model: model.into() })?;
        let state = result.state();
        iterations += state.get_iter();
        let cost = state.get_best_cost();
        if let Some(param) = state.get_best_param() {
            best = param.clone();
        }
        if state.get_iter() >= MAX_ITERATIONS {
            // Still climbing towards a bound is the more useful diagnosis.
            if let Some((i, value)) = best.iter().enumerate().find(|(_, p)| p.abs() >= DRIFTING) {
                return Err(FitError::Bound {
                    model: model.into(),
                    parameter: names[i].into(),
                    value: value.exp(),
                });
            }
            return Err(FitError::IterationLimit {
                model: model.into(),
                iterations,
            });
        }
        if (previous - cost).abs() <= 1e-13 * cost.abs().max(1.0) {
            break;
        }
        previous = cost;
    }
    finish(
        model,
        names,
        &best,
        iterations,
        log_likelihood,
        None,
        (total_weight, penalizer),
    )
}

/// The log-likelihood and its gradient with respect to the (natural) parameters.
pub type LikelihoodWithGradient<'a> = &'a (dyn Fn(&[f64]) -> (f64, Vec<f64>) + Sync);

/// Negative penalised mean log-likelihood and its gradient, in log-parameter space.
/// The line search asks for the value and the gradient at the same points, and one
/// pass over the data gives both, so the last point's pair is kept.
struct Smooth<'a> {
    with_gradient: LikelihoodWithGradient<'a>,
    total_weight: f64,
    penalizer: f64,
    last: std::sync::Mutex<Option<Evaluated>>,
}

/// Log-parameters, the cost there and its gradient.
type Evaluated = (Vec<f64>, f64, Vec<f64>);

impl Smooth<'_> {
    fn evaluate(&self, log_params: &[f64]) -> (f64, Vec<f64>) {
        let mut last = self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((at, value, gradient)) = last.as_ref()
            && at.as_slice() == log_params
        {
            return (*value, gradient.clone());
        }
        let n = log_params.len();
        let (value, gradient) = if let Some(params) = natural(log_params) {
            let (total, gradient) = (self.with_gradient)(&params);
            let value = penalised(total, &params, self.total_weight, self.penalizer);
            // d/dθ = p · d/dp for θ = ln p.
            let gradient: Vec<f64> = params
                .iter()
                .zip(gradient)
                .map(|(p, g)| -(p * g / self.total_weight - self.penalizer * 2.0 * p * p))
                .collect();
            if value.is_finite() && gradient.iter().all(|g| g.is_finite()) {
                (value, gradient)
            } else {
                (f64::INFINITY, vec![0.0; n])
            }
        } else {
            (f64::INFINITY, vec![0.0; n])
        };
        *last = Some((log_params.to_vec(), value, gradient.clone()));
        (value, gradient)
    }
}

impl CostFunction for Smooth<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, log_params: &Self::Param) -> Result<f64, argmin::core::Error> {
        Ok(self.evaluate(log_params).0)
    }
}

impl Gradient for Smooth<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;

    fn gradient(&self, log_params: &Self::Param) -> Result<Vec<f64>, argmin::core::Error> {
        Ok(self.evaluate(log_params).1)
    }
}

/// As [`maximise`], with an analytic gradient: L-BFGS (More-Thuente line search)
/// in log space. Falls back to Nelder-Mead when the quasi-Newton run fails.
pub fn maximise_smooth(
    model: &str,
    names: &[&str],
    start: &[f64],
    log_likelihood: &(dyn Fn(&[f64]) -> f64 + Sync),
    with_gradient: LikelihoodWithGradient,
    total_weight: f64,
    penalizer: f64,
) -> Result<Fit, FitError> {
    let problem = Smooth {
        with_gradient,
        total_weight,
        penalizer,
        last: std::sync::Mutex::new(None),
    };
    // Near the optimum the cost changes by less than its rounding noise, and a line
    // search bisecting towards 1e-10 would spend dozens of evaluations there.
    let attempt = MoreThuenteLineSearch::new()
        .with_width_tolerance(1e-3)
        .and_then(|line_search| LBFGS::new(line_search, 7).with_tolerance_grad(1e-10))
        .and_then(|solver| solver.with_tolerance_cost(1e-13))
        .and_then(|solver| {
            Executor::new(problem, solver)
                .configure(|state| {
                    state
                        .param(start.iter().map(|p| p.ln()).collect())
                        .max_iters(1_000)
                })
                .run()
        });
    if let Ok(result) = attempt {
        let state = result.state();
        let converged = state.get_iter() < 1_000 && state.get_best_cost().is_finite();
        if let (true, Some(best)) = (converged, state.get_best_param()) {
            let best = best.clone();
            if let Ok(fit) = finish(
                model,
                names,
                &best,
                state.get_iter(),
                log_likelihood,
                Some(with_gradient),
                (total_weight, penalizer),
            ) {
                return Ok(fit);
            }
        }
    }
    maximise(model, names, start, log_likelihood, total_weight, penalizer)
}

/// Checks a maximum found in log space and adds standard errors.
fn finish(
    model: &str,
    names: &[&str],
    best: &[f64],
    iterations: u64,
    log_likelihood: &dyn Fn(&[f64]) -> f64,
    with_gradient: Option<LikelihoodWithGradient>,
    (total_weight, penalizer): (f64, f64),
) -> Result<Fit, FitError> {
    let params: Vec<f64> = best.iter().map(|p| p.exp()).collect();
    let total = log_likelihood(&params);
    if !total.is_finite() {
        return Err(FitError::NonFinite { model: model.into() });
    }
    if let Some((i, value)) = best.iter().enumerate().find(|(_, p)| p.abs() >= LOG_BOUND) {
        return Err(FitError::Bound {
            model: model.into(),
            parameter: names[i].into(),
            value: value.exp(),
        });
    }
    // Parameters far out where ten times further is no worse: the likelihood has no
    // interior maximum there, and the optimiser merely stopped on the flat. (They
    // escape together: r and α with r/α fixed, a and b with a/(a + b) fixed.)
    let cost = |log_params: &[f64]| penalised_cost(log_likelihood, log_params, total_weight, penalizer);
    let far: Vec<usize> = (0..best.len()).filter(|&i| best[i].abs() >= DRIFTING).collect();
    if let Some(&farthest) = far
        .iter()
        .max_by(|&&i, &&j| best[i].abs().total_cmp(&best[j].abs()))
    {
        let mut further = best.to_vec();
        for &i in &far {
            further[i] += best[i].signum() * std::f64::consts::LN_10;
        }
        let here = cost(best);
        if cost(&further) <= here + 1e-9 * here.abs() {
            return Err(FitError::Bound {
                model: model.into(),
                parameter: names[farthest].into(),
                value: best[farthest].exp(),
            });
        }
    }
    let errors = match with_gradient {
        Some(gradient) => standard_errors_from_gradient(gradient, &params),
        None => standard_errors(&|p: &[f64]| log_likelihood(p), &params),
    };
    // A parameter far out on a flat likelihood (no positive-definite Hessian) is running
    // to its bound, even if the simplex stopped before reaching it.
    if errors.is_none()
        && let Some((i, value)) = best.iter().enumerate().find(|(_, p)| p.abs() >= DRIFTING)
    {
        return Err(FitError::Bound {
            model: model.into(),
            parameter: names[i].into(),
            value: value.exp(),
        });
    }
    Ok(Fit {
        model: model.into(),
        parameters: names
            .iter()
            .zip(&params)
            .enumerate()
            .map(|(i, (name, value))| Parameter {
                name: name.to_string(),
                value: *value,
                standard_error: errors.as_ref().map(|e| e[i]),
            })
            .collect(),
        log_likelihood: total,
        iterations,
        converged: true,
    })
}

/// sqrt(diag(H⁻¹)) of the negative log-likelihood's Hessian, by central differences.
fn standard_errors(log_likelihood: &dyn Fn(&[f64]) -> f64, params: &[f64]) -> Option<Vec<f64>> {
    let n = params.len();
    let step: Vec<f64> = params.iter().map(|p| 1e-4 * p.abs().max(1e-3)).collect();
    let at = |di: usize, si: f64, dj: usize, sj: f64| {
        let mut p = params.to_vec();
        p[di] += si * step[di];
        p[dj] += sj * step[dj];
        -log_likelihood(&p)
    };
    let mut hessian = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..n {
            hessian[i][j] = (at(i, 1.0, j, 1.0) - at(i, 1.0, j, -1.0) - at(i, -1.0, j, 1.0)
                + at(i, -1.0, j, -1.0))
                / (4.0 * step[i] * step[j]);
        }
    }
    let inverse = invert(hessian)?;
    (0..n)
        .map(|i| (inverse[i][i] > 0.0).then(|| inverse[i][i].sqrt()))
        .collect()
}

/// As [`standard_errors`], the Hessian by central differences of the analytic
/// gradient: 2n gradient calls instead of 4n² likelihood calls.
fn standard_errors_from_gradient(with_gradient: LikelihoodWithGradient, params: &[f64]) -> Option<Vec<f64>> {
    let n = params.len();
    let mut hessian = vec![vec![0.0; n]; n];
    for i in 0..n {
        let h = 1e-5 * params[i].abs().max(1e-3);
        let mut up = params.to_vec();
        let mut down = params.to_vec();
        up[i] += h;
        down[i] -= h;
        let (g_up, g_down) = (with_gradient(&up).1, with_gradient(&down).1);
        for j in 0..n {
            // Of the *negative* log-likelihood.
            hessian[i][j] = -(g_up[j] - g_down[j]) / (2.0 * h);
        }
    }
    let symmetric: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| (hessian[i][j] + hessian[j][i]) / 2.0).collect())
        .collect();
    let inverse = invert(symmetric)?;
    (0..n)
        .map(|i| (inverse[i][i] > 0.0).then(|| inverse[i][i].sqrt()))
        .collect()
}

/// Gauss-Jordan inverse with partial pivoting; `None` when singular.
fn invert(mut m: Vec<Vec<f64>>) -> Option<Vec<Vec<f64>>> {
    let n = m.len();
    let mut inv: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| f64::from(u8::from(i == j))).collect())
        .collect();
    for col in 0..n {
        let pivot = (col..n).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        if m[pivot][col].abs() < 1e-300 {
            return None;
        }
        m.swap(col, pivot);
        inv.swap(col, pivot);
        let d = m[col][col];
        for j in 0..n {
            m[col][j] /= d;
            inv[col][j] /= d;
        }
        for row in 0..n {
            if row != col {
                let factor = m[row][col];
                for j in 0..n {
                    m[row][j] -= factor * m[col][j];
                    inv[row][j] -= factor * inv[col][j];
                }
            }
        }
    }
    Some(inv)
}

/// A fitted purchase-count model, whichever `clv.model` chose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CountModel {
    Bgnbd(bgnbd::Params),
    Mbgnbd(mbgnbd::Params),
    ParetoNbd(pareto_nbd::Params),
}

impl CountModel {
    /// Fits the chosen model; `None` for `clv.model: none`.
    pub fn fit(
        kind: crate::config::PurchaseModel,
        data: &[summary::Triple],
        penalizer: f64,
    ) -> Option<Result<(Fit, CountModel), FitError>> {
        use crate::config::PurchaseModel;
        Some(match kind {
            PurchaseModel::None => return None,
            PurchaseModel::Bgnbd => bgnbd::fit(data, penalizer)
                .map(|f| (f.clone(), CountModel::Bgnbd(bgnbd::Params::from_fit(&f)))),
            PurchaseModel::Mbgnbd => mbgnbd::fit(data, penalizer)
                .map(|f| (f.clone(), CountModel::Mbgnbd(mbgnbd::Params::from_fit(&f)))),
            PurchaseModel::ParetoNbd => pareto_nbd::fit(data, penalizer)
                .map(|f| (f.clone(), CountModel::ParetoNbd(pareto_nbd::Params::from_fit(&f)))),
        })
    }

    pub fn p_alive(&self, x: f64, t_x: f64, t: f64) -> f64 {
        match self {
            CountModel::Bgnbd(p) => bgnbd::p_alive(p, x, t_x, t),
            CountModel::Mbgnbd(p) => mbgnbd::p_alive(p, x, t_x, t),
            CountModel::ParetoNbd(p) => pareto_nbd::p_alive(p, x, t_x, t).unwrap_or(f64::NAN),
        }
    }

    /// Expected purchases in the next `t` time units.
    pub fn conditional_expected_purchases(&self, t: f64, x: f64, t_x: f64, big_t: f64) -> Option<f64> {
        match self {
            CountModel::Bgnbd(p) => bgnbd::conditional_expected_purchases(p, t, x, t_x, big_t),
            CountModel::Mbgnbd(p) => mbgnbd::conditional_expected_purchases(p, t, x, t_x, big_t),
            CountModel::ParetoNbd(p) => pareto_nbd::conditional_expected_purchases(p, t, x, t_x, big_t),
        }
    }

    /// Expected purchases in the next `t` time units if the customer is alive: the
    /// conditional expectation is this times P(alive), and it does not depend on t_x.
    pub fn expected_purchases_if_alive(&self, t: f64, x: f64, big_t: f64) -> Option<f64> {
        match self {
            CountModel::Bgnbd(p) => bgnbd::expected_purchases_if_alive(p, t, x, big_t),
            CountModel::Mbgnbd(p) => mbgnbd::expected_purchases_if_alive(p, t, x, big_t),
            CountModel::ParetoNbd(p) => pareto_nbd::expected_purchases_if_alive(p, t, x, big_t),
        }
    }
}

/// What the model stage hands the rest of the job.
pub struct Outcome {
    /// The purchase-count model, then Gamma-Gamma.
    pub fits: Vec<Fit>,
    /// `customer_id, p_alive, expected_purchases, expected_spend, predicted_clv`.
    pub predictions: polars::prelude::DataFrame,
}

/// Fits both models on the summary frame (from [`summary::summary_frame`]) and
/// predicts every customer.
pub fn fit_and_predict(
    summary_frame: &polars::prelude::DataFrame,
    config: &crate::config::ClvConfig,
) -> Result<Outcome, FitError> {
    use crate::schema::CUSTOMER_ID;
    use crate::schema::model::*;
    use polars::prelude::*;
    use rayon::prelude::*;

    // One record per customer, read straight from the columns (at 20M customers
    // each copy of the summary is 0.7 GB: this is the only one).
    let column =
        |name: &str| -> Option<Float64Chunked> { summary_frame.column(name).ok()?.f64().ok().cloned() };
    let customers: Vec<summary::Summary> = match (
        column(FREQUENCY),
        column(T_X),
        column(BIG_T),
        column(MONETARY_VALUE),
    ) {
        (Some(x), Some(t_x), Some(t), Some(m)) => x
            .into_no_null_iter()
            .zip(t_x.into_no_null_iter())
            .zip(t.into_no_null_iter().zip(m.into_no_null_iter()))
            .map(|((x, t_x), (t, monetary))| summary::Summary { x, t_x, t, monetary })
            .collect(),
        _ => Vec::new(),
    };
    let started = std::time::Instant::now();
    let (triples, triple_of) = summary::triples_indexed(&customers);
    tracing::debug!(
        triples = triples.len(),
        seconds = started.elapsed().as_secs_f64(),
        "distinct (x, t_x, T)"
    );
    let Some(fitted) = CountModel::fit(config.model, &triples, config.penalizer) else {
        return Err(FitError::NoData {
            model: "none".into(),
            reason: "no purchase-count model is configured".into(),
        });
    };
    let (count_fit, count_model) = fitted?;
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        "purchase-count model fitted"
    );
    let repeat: Vec<(f64, f64)> = customers.iter().map(|c| (c.x, c.monetary)).collect();
    let gg_fit = gamma_gamma::fit(&repeat, config.penalizer)?;
    drop(repeat);
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "Gamma-Gamma fitted");
    let gg = gamma_gamma::Params::from_fit(&gg_fit);
    if gg.q <= 1.0 {
        return Err(FitError::Bound {
            model: "gamma_gamma".into(),
            parameter: "q".into(),
            value: gg.q,
        });
    }
    let horizon = predict::Horizon {
        months: config.horizon_months,
        discount_rate_annual: config.discount_rate_annual,
        margin: config.margin,
        unit_days: config.time_unit.days(),
    };
    // The prediction columns are built a chunk of customers at a time: a record per
    // customer (48 bytes) beside the columns took 1 GB more at 20M customers.
    let predictor = predict::Predictor::new(&triples, &count_model, &gg, &horizon);
    let n = customers.len();
    let builder = |name: &str| PrimitiveChunkedBuilder::<Float64Type>::new(name.into(), n);
    let mut columns = [
        builder(P_ALIVE),
        builder(EXPECTED_PURCHASES),
        builder(EXPECTED_SPEND),
        builder(PREDICTED_CLV),
    ];
    const CHUNK: usize = 1 << 20;
    for (chunk, triples_of) in customers.chunks(CHUNK).zip(triple_of.chunks(CHUNK)) {
        let predictions: Vec<predict::Prediction> = chunk
            .par_iter()
            .zip(triples_of)
            .map(|(c, &k)| predictor.predict(c, k))
            .collect();
        for p in predictions {
            columns[0].append_value(p.p_alive);
            columns[1].append_option(p.expected_purchases);
            columns[2].append_value(p.expected_spend);
            columns[3].append_option(p.predicted_clv);
        }
    }
    drop((predictor, customers, triple_of));
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "predicted");
    let ids = summary_frame
        .column(CUSTOMER_ID)
        .cloned()
        .unwrap_or_else(|_| Column::new(CUSTOMER_ID.into(), Vec::<String>::new()));
    let mut frame_columns = vec![ids];
    frame_columns.extend(columns.map(|c| c.finish().into_column()));
    let frame = DataFrame::new_infer_height(frame_columns).map_err(|e| FitError::NoData {
        model: "predictions".into(),
        reason: e.to_string(),
    })?;
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        "prediction frame built"
    );
    Ok(Outcome {
        fits: vec![count_fit, gg_fit],
        predictions: frame,
    })
}

/// Test helper: an analytic gradient agrees with central differences of the value.
#[cfg(test)]
pub(crate) fn assert_gradient_matches(likelihood: impl Fn(&[f64], bool) -> (f64, Vec<f64>), at: &[f64]) {
    let (_, analytic) = likelihood(at, true);
    for k in 0..at.len() {
        let h = 1e-6 * at[k];
        let (mut up, mut down) = (at.to_vec(), at.to_vec());
        up[k] += h;
        down[k] -= h;
        let numeric = (likelihood(&up, false).0 - likelihood(&down, false).0) / (2.0 * h);
        assert!(
            (analytic[k] - numeric).abs() < 1e-6 * numeric.abs().max(1.0),
            "parameter {k}: analytic {} vs numeric {numeric}",
            analytic[k]
        );
    }
}
