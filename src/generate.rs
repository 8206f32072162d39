//! `loyalty generate`: synthetic order histories from a real BG/NBD purchase process.
//!
//! Each customer is acquired on a uniform day in [start, end), buys at a
//! Poisson rate λ ~ Gamma(r, α) (per week) while alive, and after each repeat
//! purchase drops out with probability p ~ Beta(a, b) (Fader, Hardie & Lee 2005). Order
//! values follow Gamma-Gamma: ν ~ Gamma(q, γ), each order ~ Gamma(p, ν). Orders
//! get 1–3 lines with categories and a channel; about 2% of lines are returned;
//! a few rows are dirty (null ids, exact duplicates) so cleaning has work to do.
//!
//! Deterministic per seed whatever the thread count: customers are generated in
//! fixed chunks, each with its own RNG seeded from (seed, chunk).

use chrono::NaiveDate;
use polars::prelude::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Beta, Distribution, Exp, Gamma};
use rayon::prelude::*;

use crate::dates::epoch_days;

const CHUNK: u64 = 10_000;
const CATEGORIES: [&str; 8] = [
    "music",
    "books",
    "video",
    "games",
    "electronics",
    "home",
    "toys",
    "apparel",
];
const CHANNELS: [&str; 3] = ["web", "store", "app"];

/// The true parameters of the process (BG/NBD in weeks, Gamma-Gamma in currency).
#[derive(Debug, Clone, Copy)]
pub struct TrueParameters {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
    pub p: f64,
    pub q: f64,
    pub v: f64,
}

impl Default for TrueParameters {
    /// The published CDNOW estimates, so generated data looks like real retail.
    fn default() -> Self {
        TrueParameters {
            r: 0.243,
            alpha: 4.414,
            a: 0.793,
            b: 2.426,
            p: 6.25,
            q: 3.74,
            v: 15.44,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub customers: u64,
    pub seed: u64,
    pub start: NaiveDate,
    pub end: NaiveDate,
    pub truth: TrueParameters,
    /// Add returns, full refunds, null ids and duplicate rows.
    pub dirty: bool,
}

#[derive(Default)]
struct Columns {
    customer_id: Vec<Option<String>>,
    order_id: Vec<String>,
    order_date: Vec<i32>,
    amount: Vec<f64>,
    quantity: Vec<i64>,
    category: Vec<String>,
    channel: Vec<String>,
}

impl Columns {
    fn push_row(&mut self, other: &Columns, i: usize) {
        self.customer_id.push(other.customer_id[i].clone());
        self.order_id.push(other.order_id[i].clone());
        self.order_date.push(other.order_date[i]);
        self.amount.push(other.amount[i]);
        self.quantity.push(other.quantity[i]);
        self.category.push(other.category[i].clone());
        self.channel.push(other.channel[i].clone());
    }

    fn append(&mut self, mut other: Columns) {
        self.customer_id.append(&mut other.customer_id);
        self.order_id.append(&mut other.order_id);
        self.order_date.append(&mut other.order_date);
        self.amount.append(&mut other.amount);
        self.quantity.append(&mut other.quantity);
        self.category.append(&mut other.category);
        self.channel.append(&mut other.channel);
    }
}

/// A mixing function so neighbouring chunk seeds give unrelated streams (SplitMix64).
fn chunk_seed(seed: u64, chunk: u64) -> u64 {
    let mut z = seed ^ chunk.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Generates the order lines; columns `customer_id, order_id, order_date, amount,
/// quantity, category, channel`.
pub fn generate(params: &GenerateParams) -> PolarsResult<DataFrame> {
    let chunks: Vec<u64> = (0..params.customers.div_ceil(CHUNK)).collect();
    frame(
        chunks
            .par_iter()
            .map(|&chunk| generate_chunk(params, chunk))
            .collect(),
    )
}

/// Customers generated and written together by [`write_parquet`]: bounds memory
/// (about 0.3 GB) whatever the number of customers.
const CHUNKS_PER_WRITE: usize = 50;

/// [`generate`] written to a Parquet file as it is generated, a group of chunks at
/// a time, so that histories larger than memory can be made. Same lines, same order.
/// Returns the number of lines.
pub fn write_parquet<W: std::io::Write>(params: &GenerateParams, out: W) -> PolarsResult<usize> {
    write_parquet_in_groups(params, out, CHUNKS_PER_WRITE)
}

fn write_parquet_in_groups<W: std::io::Write>(
    params: &GenerateParams,
    out: W,
    chunks_per_write: usize,
) -> PolarsResult<usize> {
    let chunks: Vec<u64> = (0..params.customers.div_ceil(CHUNK)).collect();
    let mut out = Some(out);
    let mut writer = None;
    let mut lines = 0;
    for group in chunks.chunks(chunks_per_write) {
        let part = frame(
            group
                .par_iter()
                .map(|&chunk| generate_chunk(params, chunk))
                .collect(),
        )?;
        if writer.is_none()
            && let Some(out) = out.take()
        {
            writer = Some(
                ParquetWriter::new(out)
                    .with_compression(ParquetCompression::Snappy)
                    .batched(part.schema())?,
            );
        }
        if let Some(writer) = writer.as_mut() {
            writer.write_batch(&part)?;
        }
        lines += part.height();
    }
    match writer {
        Some(writer) => {
            writer.finish()?;
        }
        // No customers: an empty file with the schema.
        None => {
            if let Some(out) = out {
                ParquetWriter::new(out).finish(&mut frame(Vec::new())?)?;
            }
        }
    }
    Ok(lines)
}

/// The chunks' lines, in chunk order, as one frame.
fn frame(parts: Vec<Columns>) -> PolarsResult<DataFrame> {
    let mut all = Columns::default();
    for part in parts {
        all.append(part);
    }
    let dates = Column::new("order_date".into(), all.order_date).cast(&DataType::Date)?;
    DataFrame::new_infer_height(vec![
        Column::new("customer_id".into(), all.customer_id),
        Column::new("order_id".into(), all.order_id),
        dates,
        Column::new("amount".into(), all.amount),
        Column::new("quantity".into(), all.quantity),
        Column::new("category".into(), all.category),
        Column::new("channel".into(), all.channel),
    ])
}

#[allow(
    clippy::expect_used,
    reason = "the fallback distributions have constant, valid parameters"
)]
fn generate_chunk(params: &GenerateParams, chunk: u64) -> Columns {
    let t = params.truth;
    let mut rng = StdRng::seed_from_u64(chunk_seed(params.seed, chunk));
    let start = epoch_days(params.start);
    let end = epoch_days(params.end).max(start + 1);
    let span = (end - start) as f64;
    // Parameters are valid by construction of the CLI (positive); fall back to sane ones otherwise.
    let rate = Gamma::new(t.r, 1.0 / t.alpha).unwrap_or_else(|_| Gamma::new(1.0, 1.0).expect("valid"));
    let dropout = Beta::new(t.a, t.b).unwrap_or_else(|_| Beta::new(1.0, 1.0).expect("valid"));
    let spend_scale = Gamma::new(t.q, 1.0 / t.v).unwrap_or_else(|_| Gamma::new(1.0, 1.0).expect("valid"));

    let mut out = Columns::default();
    let first = chunk * CHUNK;
    let last = (first + CHUNK).min(params.customers);
    for customer in first..last {
        let id = format!("C{customer:08}");
        let birth = start as f64 + rng.random::<f64>() * span;
        let lambda_per_day = rate.sample(&mut rng).max(1e-9) / 7.0;
        let p_drop = dropout.sample(&mut rng);
        let nu = spend_scale.sample(&mut rng).max(1e-9);
        let order_value = Gamma::new(t.p, 1.0 / nu).unwrap_or_else(|_| Gamma::new(1.0, 1.0).expect("valid"));
        let gap = Exp::new(lambda_per_day).unwrap_or_else(|_| Exp::new(1.0).expect("valid"));
        let home_channel = CHANNELS[weighted_index(&mut rng, &[0.55, 0.30, 0.15])];
        let favourite = rng.random_range(0..CATEGORIES.len());

        let mut day = birth;
        let mut n = 0u32;
        loop {
            n += 1;
            let date = day.floor() as i32;
            let order_id = format!("{id}-{n}");
            let channel = if rng.random::<f64>() < 0.1 {
                CHANNELS[rng.random_range(0..CHANNELS.len())]
            } else {
                home_channel
            };
            let value = cents(order_value.sample(&mut rng)).max(0.01);
            let lines = rng.random_range(1..=3usize);
            let full_refund = params.dirty && rng.random::<f64>() < 0.003;
            let mut remaining = value;
            for line in 0..lines {
                let amount = if line + 1 == lines {
                    cents(remaining)
                } else {
                    cents(remaining * rng.random_range(0.2..0.8))
                };
                remaining -= amount;
                let category = if rng.random::<f64>() < 0.6 {
                    CATEGORIES[favourite]
                } else {
                    CATEGORIES[rng.random_range(0..CATEGORIES.len())]
                };
                let push = |out: &mut Columns, amount: f64, customer: Option<String>| {
                    out.customer_id.push(customer);
                    out.order_id.push(order_id.clone());
                    out.order_date.push(date);
                    out.amount.push(amount);
                    out.quantity.push(1 + (amount.abs() / 15.0) as i64);
                    out.category.push(category.to_string());
                    out.channel.push(channel.to_string());
                };
                let null_id = params.dirty && rng.random::<f64>() < 0.0005;
                push(&mut out, amount, (!null_id).then(|| id.clone()));
                if params.dirty && (full_refund || rng.random::<f64>() < 0.02) {
                    let refunded = if full_refund || rng.random::<bool>() {
                        amount
                    } else {
                        cents(amount * 0.5)
                    };
                    push(&mut out, -refunded, Some(id.clone()));
                }
                if params.dirty && rng.random::<f64>() < 0.001 {
                    let i = out.order_id.len() - 1;
                    let copy = Columns {
                        customer_id: vec![out.customer_id[i].clone()],
                        order_id: vec![out.order_id[i].clone()],
                        order_date: vec![out.order_date[i]],
                        amount: vec![out.amount[i]],
                        quantity: vec![out.quantity[i]],
                        category: vec![out.category[i].clone()],
                        channel: vec![out.channel[i].clone()],
                    };
                    out.push_row(&copy, 0);
                }
            }
            // BG/NBD: drop-out follows each *repeat* purchase; the first one starts the clock.
            if n > 1 && rng.random::<f64>() < p_drop {
                break;
            }
            day += gap.sample(&mut rng);
            if day >= end as f64 {
                break;
            }
        }
    }
    out
}

fn weighted_index(rng: &mut StdRng, weights: &[f64]) -> usize {
    let mut u = rng.random::<f64>() * weights.iter().sum::<f64>();
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(customers: u64, seed: u64) -> GenerateParams {
        GenerateParams {
            customers,
            seed,
            start: NaiveDate::from_ymd_opt(2023, 1, 1).unwrap(),
            end: NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(),
            truth: TrueParameters::default(),
            dirty: true,
        }
    }

    #[test]
    fn same_seed_same_data_other_seed_other_data() {
        let a = generate(&params(300, 7)).unwrap();
        let b = generate(&params(300, 7)).unwrap();
        let c = generate(&params(300, 8)).unwrap();
        assert!(a.equals_missing(&b));
        assert!(!a.equals_missing(&c));
    }

    #[test]
    fn every_customer_buys_and_dates_stay_in_range() {
        let p = params(500, 1);
        let df = generate(&p).unwrap();
        let ids = df.column("customer_id").unwrap().drop_nulls().n_unique().unwrap();
        assert_eq!(ids, 500);
        let days = df.column("order_date").unwrap().cast(&DataType::Int32).unwrap();
        let days = days.i32().unwrap();
        assert!(days.min().unwrap() >= epoch_days(p.start));
        assert!(days.max().unwrap() < epoch_days(p.end));
    }

    /// Written in groups, the file holds exactly the lines `generate` returns.
    #[test]
    fn written_in_groups_equals_generated_at_once() {
        let params = params(25_000, 3);
        let mut bytes = Vec::new();
        let lines = write_parquet_in_groups(&params, &mut bytes, 1).unwrap();
        let read = ParquetReader::new(std::io::Cursor::new(bytes)).finish().unwrap();
        let expected = generate(&params).unwrap();
        assert_eq!(lines, expected.height());
        assert!(read.equals_missing(&expected));
    }
}
