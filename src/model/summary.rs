//! The per-customer summary the models are fitted on (SPEC §6.3): repeat
//! purchase days x, recency t_x, age T (in the configured time unit) and the mean
//! value of the repeat purchase days.

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
    triples_indexed(customers).0
}

/// The distinct (x, t_x, T), ascending, with their weights, and for each customer
/// the index of theirs. A parallel sort of the keys (times are non-negative, so
/// their bit patterns sort as the numbers do).
pub fn triples_indexed(customers: &[Summary]) -> (Vec<Triple>, Vec<u32>) {
    let mut keys: Vec<(u64, u64, u64, u32)> = customers
        .iter()
        .enumerate()
        .map(|(i, c)| (c.x.to_bits(), c.t_x.to_bits(), c.t.to_bits(), i as u32))
        .collect();
    keys.par_sort_unstable();
    let mut triples: Vec<Triple> = Vec::new();
    let mut triple_of = vec![0u32; customers.len()];
    let mut previous = None;
    for (x, t_x, t, customer) in keys {
        if previous != Some((x, t_x, t)) {
            previous = Some((x, t_x, t));
            triples.push(Triple {
                x: f64::from_bits(x),
                t_x: f64::from_bits(t_x),
                t: f64::from_bits(t),
                weight: 0.0,
            });
        }
        let last = triples.len() - 1;
        triples[last].weight += 1.0;
        triple_of[customer as usize] = last as u32;
    }
    (triples, triple_of)
}

/// Triples as the likelihoods read them: x, t_x and T as indices into tables of
/// their distinct values, so an evaluation takes ln(α + t) once per distinct time
/// rather than twice per triple (times are whole days, so there are few).
#[derive(Debug, Clone, PartialEq)]
pub struct Indexed {
    /// Distinct x, ascending, with the total weight of each.
    pub xs: Vec<f64>,
    pub x_weights: Vec<f64>,
    /// Distinct values of t_x and T, ascending.
    pub times: Vec<f64>,
    pub rows: Vec<IndexedTriple>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexedTriple {
    pub x: u32,
    pub t_x: u32,
    pub t: u32,
    pub weight: f64,
}

impl Indexed {
    pub fn new(data: &[Triple]) -> Indexed {
        let distinct = |values: &mut Vec<f64>| {
            values.sort_unstable_by(f64::total_cmp);
            values.dedup_by(|a, b| a.to_bits() == b.to_bits());
        };
        let mut xs: Vec<f64> = data.iter().map(|d| d.x).collect();
        distinct(&mut xs);
        let mut times: Vec<f64> = data.iter().flat_map(|d| [d.t_x, d.t]).collect();
        distinct(&mut times);
        let index = |table: &[f64], v: f64| table.partition_point(|t| t.total_cmp(&v).is_lt()) as u32;
        let rows: Vec<IndexedTriple> = data
            .par_iter()
            .map(|d| IndexedTriple {
                x: index(&xs, d.x),
                t_x: index(&times, d.t_x),
                t: index(&times, d.t),
                weight: d.weight,
            })
            .collect();
        let mut x_weights = vec![0.0; xs.len()];
        for row in &rows {
            x_weights[row.x as usize] += row.weight;
        }
        Indexed {
            xs,
            x_weights,
            times,
            rows,
        }
    }

    pub fn total_weight(&self) -> f64 {
        self.x_weights.iter().sum()
    }
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

/// [`deterministic_sum`] of several quantities at once: one pass over the items.
pub fn deterministic_sums<T: Sync, const N: usize>(
    items: &[T],
    f: impl Fn(&T) -> [f64; N] + Sync,
) -> [f64; N] {
    let add = |mut acc: [f64; N], v: [f64; N]| {
        for k in 0..N {
            acc[k] += v[k];
        }
        acc
    };
    items
        .par_chunks(1024)
        .map(|chunk| chunk.iter().map(&f).fold([0.0; N], add))
        .collect::<Vec<_>>()
        .into_iter()
        .fold([0.0; N], add)
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

/// SPEC §6.3's summary per customer, from the orders (internal columns): over
/// purchases, by purchase *day*; `frequency` = distinct days − 1, `t_x` = last −
/// first day, `T` = obs_end − first day (in `unit_days`), `monetary_value` = mean
/// value of the repeat days (0 when there are none). Rows in no particular order.
///
/// Polars groups the purchases by customer (the hashing of ids is the expensive
/// part) and each group's few orders are summarised here: the first day's value
/// would otherwise need a second group-by over (customer, day), which doubles the
/// cost of the model's summary.
pub fn summary_frame(
    orders: &polars::prelude::DataFrame,
    obs_end: chrono::NaiveDate,
    unit_days: f64,
) -> polars::prelude::PolarsResult<polars::prelude::DataFrame> {
    use crate::dates::epoch_days;
    use crate::schema::CUSTOMER_ID;
    use crate::schema::internal::{CUSTOMER_ID as CID, ORDER_DATE, VALUE};
    use polars::prelude::*;

    let days = orders.column(ORDER_DATE)?.cast(&DataType::Int32)?;
    let days = days.i32()?.rechunk();
    // Order values are Int128 micro-units (a sum of Int64 lines).
    let values = orders.column(VALUE)?.cast(&DataType::Int128)?;
    let values = values.i128()?.rechunk();
    // Day and value side by side: a customer's rows are scattered, and one cache
    // line per row is half the memory traffic of two.
    let all_purchases: Vec<(i32, i128)> = days
        .cont_slice()?
        .par_iter()
        .zip(values.cont_slice()?)
        .map(|(&day, &value)| (day, value))
        .collect();
    let grouped = orders.group_by([CID])?;
    let obs_end = epoch_days(obs_end);
    // One customer's rows → [x, t_x, T, monetary value]; None without a purchase.
    let summarise = |purchases: &mut Vec<(i32, i128)>, rows: &mut dyn Iterator<Item = usize>| {
        purchases.clear();
        purchases.extend(rows.map(|i| all_purchases[i]).filter(|p| p.1 > 0));
        purchases.sort_unstable();
        let first = purchases.first()?.0;
        let days = PurchaseDays {
            first,
            last: purchases.last()?.0,
            repeat_days: purchases.windows(2).filter(|w| w[0].0 != w[1].0).count() as u64,
            first_day_value: purchases.iter().take_while(|p| p.0 == first).map(|p| p.1).sum(),
            total: purchases.iter().map(|p| p.1).sum(),
        };
        Some(days.summary(obs_end, unit_days))
    };
    let per_group: Vec<(IdxSize, Option<[f64; 4]>)> = match grouped.get_groups().as_ref() {
        GroupsType::Idx(groups) => groups
            .first()
            .par_iter()
            .zip(groups.all())
            .map_init(Vec::new, |buffer, (&first, all)| {
                (first, summarise(buffer, &mut all.iter().map(|&i| i as usize)))
            })
            .collect(),
        GroupsType::Slice { groups, .. } => groups
            .par_iter()
            .map_init(Vec::new, |buffer, &[first, len]| {
                (
                    first,
                    summarise(buffer, &mut (first as usize..(first + len) as usize)),
                )
            })
            .collect(),
    };
    let rows: Vec<(IdxSize, [f64; 4])> = per_group
        .into_iter()
        .filter_map(|(first, summary)| Some((first, summary?)))
        .collect();
    let firsts = IdxCa::from_vec("first".into(), rows.iter().map(|r| r.0).collect());
    let ids = orders.column(CID)?.take(&firsts)?.with_name(CUSTOMER_ID.into());
    let rows: Vec<[f64; 4]> = rows.into_iter().map(|r| r.1).collect();
    summary_columns(ids, &rows)
}

/// A customer's purchases as the summary sees them: days since the epoch of the
/// first and last purchase, repeat purchase days (distinct days − 1), and the
/// value in micro-units of the first day's purchases and of all of them. An
/// engine that aggregates elsewhere brings these back, and [`Self::summary`] makes
/// the same numbers as [`summary_frame`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PurchaseDays {
    pub first: i32,
    pub last: i32,
    pub repeat_days: u64,
    pub first_day_value: i128,
    pub total: i128,
}

impl PurchaseDays {
    /// [x, t_x, T, monetary value] at `obs_end` (days since the epoch).
    pub fn summary(&self, obs_end: i32, unit_days: f64) -> [f64; 4] {
        let monetary = if self.repeat_days > 0 {
            (self.total - self.first_day_value) as f64 / 1e6 / self.repeat_days as f64
        } else {
            0.0
        };
        [
            self.repeat_days as f64,
            f64::from(self.last - self.first) / unit_days,
            f64::from(obs_end - self.first) / unit_days,
            monetary,
        ]
    }
}

/// The summary frame from customer keys (`ids`) and their [x, t_x, T, m̄] rows.
pub fn summary_columns(
    ids: polars::prelude::Column,
    rows: &[[f64; 4]],
) -> polars::prelude::PolarsResult<polars::prelude::DataFrame> {
    use crate::schema::model::*;
    use polars::prelude::*;
    let column =
        |name: &str, k: usize| Column::new(name.into(), rows.iter().map(|r| r[k]).collect::<Vec<_>>());
    DataFrame::new_infer_height(vec![
        ids,
        column(FREQUENCY, 0),
        column(T_X, 1),
        column(BIG_T, 2),
        column(MONETARY_VALUE, 3),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::internal::{CUSTOMER_ID as CID, ORDER_DATE, VALUE};
    use crate::schema::model::*;
    use polars::prelude::*;

    fn date(day: u32) -> chrono::NaiveDate {
        chrono::NaiveDate::from_ymd_opt(2024, 1, day).unwrap()
    }

    #[test]
    fn summary_by_purchase_day_hand_computed() {
        // a: two orders on day 1 (10 + 5), one on day 8 (7), one on day 15 (9), a
        //    refund on day 20 (−3, not a purchase); x = 2, t_x = 14 days, T = 30 − 1 = 29
        //    days, monetary = (7 + 9) / 2.
        // b: one purchase day with two orders: x = 0, monetary 0.
        // c: only a $0 order: no purchase, no row.
        let rows = [
            ("a", 1, 10.0),
            ("b", 3, 2.0),
            ("a", 15, 9.0),
            ("a", 1, 5.0),
            ("c", 2, 0.0),
            ("a", 20, -3.0),
            ("b", 3, 4.0),
            ("a", 8, 7.0),
        ];
        let days: Vec<i32> = rows.iter().map(|r| crate::dates::epoch_days(date(r.1))).collect();
        let orders = DataFrame::new_infer_height(vec![
            Column::new(CID.into(), rows.iter().map(|r| r.0).collect::<Vec<_>>()),
            Column::new(ORDER_DATE.into(), days)
                .cast(&DataType::Date)
                .unwrap(),
            Column::new(
                VALUE.into(),
                rows.iter().map(|r| (r.2 * 1e6) as i64).collect::<Vec<_>>(),
            ),
        ])
        .unwrap();
        let summary = summary_frame(&orders, date(30), 7.0)
            .unwrap()
            .sort([crate::schema::CUSTOMER_ID], Default::default())
            .unwrap();
        let ids = summary.column(crate::schema::CUSTOMER_ID).unwrap();
        let ids: Vec<String> = (0..2)
            .map(|i| ids.get(i).unwrap().str_value().to_string())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        let column = |name: &str| -> Vec<f64> {
            summary
                .column(name)
                .unwrap()
                .f64()
                .unwrap()
                .into_no_null_iter()
                .collect()
        };
        assert_eq!(column(FREQUENCY), [2.0, 0.0]);
        assert_eq!(column(T_X), [14.0 / 7.0, 0.0]);
        assert_eq!(column(BIG_T), [29.0 / 7.0, 27.0 / 7.0]);
        assert_eq!(column(MONETARY_VALUE), [8.0, 0.0]);
    }
}
