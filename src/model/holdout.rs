//! Holdout validation (`clv.holdout_days`): fit on the orders before
//! as_of − N days, predict each customer's purchases in the N held-out days, and
//! compare with what they did — against a naive baseline (each customer's
//! calibration purchase rate x / T times the holdout length).

use super::summary::{Summary, triples};
use super::{CountModel, FitError};
use crate::config::PurchaseModel;

/// One calibration customer: summary and purchase days in the holdout.
#[derive(Debug, Clone, Copy)]
pub struct Scored {
    pub x: f64,
    pub actual: f64,
    pub predicted: f64,
    pub naive: f64,
}

/// Accuracy of one predictor over the holdout customers.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Accuracy {
    pub mae: f64,
    pub rmse: f64,
    /// (Σ predicted − Σ actual) / Σ actual, in percent; null when nobody bought.
    pub aggregate_error_pct: Option<f64>,
    /// Spearman correlation of predicted and actual; null when either is constant.
    pub rank_correlation: Option<f64>,
}

/// Fits the model on the calibration summaries and scores the holdout of `length` time units.
pub fn score(
    kind: PurchaseModel,
    calibration: &[Summary],
    actual: &[f64],
    length: f64,
    penalizer: f64,
) -> Result<Vec<Scored>, FitError> {
    let Some(fitted) = CountModel::fit(kind, &triples(calibration), penalizer) else {
        return Ok(Vec::new());
    };
    let (_, model) = fitted?;
    Ok(calibration
        .iter()
        .zip(actual)
        .map(|(c, &actual)| Scored {
            x: c.x,
            actual,
            predicted: model
                .conditional_expected_purchases(length, c.x, c.t_x, c.t)
                .unwrap_or(f64::NAN),
            naive: if c.t > 0.0 { c.x / c.t * length } else { 0.0 },
        })
        .collect())
}

pub fn accuracy(predicted: &[f64], actual: &[f64]) -> Accuracy {
    let n = predicted.len().max(1) as f64;
    let errors = predicted.iter().zip(actual).map(|(p, a)| p - a);
    let mae = errors.clone().map(f64::abs).sum::<f64>() / n;
    let rmse = (errors.map(|e| e * e).sum::<f64>() / n).sqrt();
    let total_actual: f64 = actual.iter().sum();
    let total_predicted: f64 = predicted.iter().sum();
    Accuracy {
        mae,
        rmse,
        aggregate_error_pct: (total_actual > 0.0)
            .then(|| (total_predicted - total_actual) / total_actual * 100.0),
        rank_correlation: pearson(&ranks(predicted), &ranks(actual)),
    }
}

/// Average ranks (ties share the mean of their positions), 1-based.
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        i = j + 1;
    }
    ranks
}

fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    (va > 0.0 && vb > 0.0).then(|| cov / (va * vb).sqrt())
}

/// The `clv_holdout` bucket of a calibration frequency: "0" … "6", "7+".
pub fn bucket(x: f64) -> String {
    if x >= 7.0 {
        "7+".into()
    } else {
        format!("{}", x as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_by_hand() {
        // Errors 1, −1, 0, 2: MAE 1, RMSE sqrt(6/4); totals 7 vs 5 → +40%.
        let a = accuracy(&[1.0, 0.0, 2.0, 4.0], &[0.0, 1.0, 2.0, 2.0]);
        assert_eq!(a.mae, 1.0);
        assert!((a.rmse - 1.5f64.sqrt()).abs() < 1e-15);
        assert!((a.aggregate_error_pct.unwrap() - 40.0).abs() < 1e-12);
        // Ranks: predicted 2,1,3,4; actual 1,2,3.5,3.5.
        let r = a.rank_correlation.unwrap();
        let expected = {
            let (p, q) = ([2.0, 1.0, 3.0, 4.0], [1.0, 2.0, 3.5, 3.5]);
            pearson(&p, &q).unwrap()
        };
        assert!((r - expected).abs() < 1e-15);
        assert_eq!(accuracy(&[1.0, 1.0], &[0.0, 2.0]).rank_correlation, None);
    }

    #[test]
    fn buckets() {
        assert_eq!(bucket(0.0), "0");
        assert_eq!(bucket(6.0), "6");
        assert_eq!(bucket(9.0), "7+");
    }
}
