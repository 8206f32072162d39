//! The per-customer summary the models are fitted on (SPEC §6.3): repeat
//! purchase days x, recency t_x, age T (in the configured time unit) and the mean
//! value of the repeat purchase days.

use std::collections::BTreeMap;

use rayon::prelude::*;

/// One customer's summary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub x: f64,
    pub t_x: f64,
    pub t: f64,
    pub monetary: f64,
}

/// A distinct (x, t_x, T) with how many customers share it: fits run over these.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Triple {
    pub x: f64,
    pub t_x: f64,
    pub t: f64,
    pub weight: f64,
}

/// Groups customers by exact (x, t_x, T).
pub fn triples(customers: &[Summary]) -> Vec<Triple> {
    let mut counts: BTreeMap<(u64, u64, u64), f64> = BTreeMap::new();
    for c in customers {
        *counts
            .entry((c.x.to_bits(), c.t_x.to_bits(), c.t.to_bits()))
            .or_default() += 1.0;
    }
    counts
        .into_iter()
        .map(|((x, t_x, t), weight)| Triple {
            x: f64::from_bits(x),
            t_x: f64::from_bits(t_x),
            t: f64::from_bits(t),
            weight,
        })
        .collect()
}

/// Σ f(item) in parallel, in fixed chunks added in order: the same data gives the
/// same bits whatever the thread count, so fits (and outputs) are reproducible.
pub fn deterministic_sum<T: Sync>(items: &[T], f: impl Fn(&T) -> f64 + Sync) -> f64 {
    items
        .par_chunks(1024)
        .map(|chunk| chunk.iter().map(&f).sum::<f64>())
        .collect::<Vec<f64>>()
        .into_iter()
        .sum()
}

/// Reads a summary CSV: columns `frequency` or `x`, `recency` or `t_x`, `T`, and
/// optionally `monetary_value` or `zbar` (the published CDNOW files use either).
pub fn read_csv(text: &str) -> Result<Vec<Summary>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or("the summary file is empty")?
        .split(',')
        .map(str::trim)
        .collect();
    let find = |names: &[&str]| header.iter().position(|h| names.contains(h));
    let x = find(&["frequency", "x"]).ok_or("no `frequency` (or `x`) column")?;
    let t_x = find(&["recency", "t_x"]).ok_or("no `recency` (or `t_x`) column")?;
    let t = find(&["T"]).ok_or("no `T` column")?;
    let monetary = find(&["monetary_value", "zbar"]);
    lines
        .enumerate()
        .map(|(i, line)| {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let number = |col: usize| -> Result<f64, String> {
                fields
                    .get(col)
                    .and_then(|f| f.parse::<f64>().ok())
                    .ok_or_else(|| format!("line {}: column {} is not a number", i + 2, header[col]))
            };
            Ok(Summary {
                x: number(x)?,
                t_x: number(t_x)?,
                t: number(t)?,
                monetary: monetary.map(number).transpose()?.unwrap_or(0.0),
            })
        })
        .collect()
}
