//! Keeps the fold honest: SPEC §1's roll-up of lines to orders by the job's own
//! streaming fold ([`loyalty::ingest`]) against the same roll-up written as Polars'
//! own `group_by`, in-memory and streaming, over one Parquet file.
//!
//! Run by `scripts/bench.sh` (release build):
//!   cargo run --release --example fold_vs_group_by -- ORDERS.parquet [ROUNDS]
//! Prints the best wall time of each over ROUNDS (default 3) and the ratios. Both
//! sides type the lines the same way ([`loyalty::ingest::normalise`]) and roll up
//! the same lines with duplicates kept (`cleaning.dedupe: false`: the group_by has
//! no step 3); both count their orders, which must agree. The fold also keys the
//! customers densely in customer_id order, which the group_by's sort matches.

use std::time::Instant;

use loyalty::config;
use loyalty::ingest;
use loyalty::io::input;
use loyalty::schema::internal::{CUSTOMER_ID, ORDER_DATE, ORDER_ID, VALUE};
use loyalty::settings::Settings;
use polars::prelude::*;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: fold_vs_group_by ORDERS.parquet [ROUNDS]"))?;
    let rounds: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(3);
    let text = format!("input:\n  orders: {path}\ncleaning:\n  dedupe: false\n");
    let config = config::from_str(&text, "bench", &[])?;
    let inputs = input::resolve(&config.input.orders)?;
    let scan = || input::scan(&inputs);
    let schema = scan()?.collect_schema()?;
    let normalised = || ingest::normalise(scan()?, &schema, &config.input, config.clv.margin, &path);
    let lines = ingest::input_lines(&normalised()?);

    let fold = || -> anyhow::Result<usize> {
        let (ingested, _) = ingest::ingest(
            &normalised()?,
            &config.cleaning,
            None,
            (lines, false),
            &Settings::default(),
        )?;
        Ok(ingested.orders.height())
    };
    let group_by = |engine: Engine| -> anyhow::Result<usize> {
        let trimmed = |name: &str| col(name).str().strip_chars(lit(NULL)).alias(name);
        let orders = normalised()?
            .lf
            .select([
                trimmed(CUSTOMER_ID),
                trimmed(ORDER_ID),
                col(ORDER_DATE),
                col(VALUE),
            ])
            .filter(
                col(CUSTOMER_ID)
                    .neq(lit(""))
                    .and(col(ORDER_ID).neq(lit("")))
                    .and(col(ORDER_DATE).is_not_null())
                    .and(col(VALUE).is_not_null()),
            )
            .group_by([col(CUSTOMER_ID), col(ORDER_ID)])
            .agg([col(ORDER_DATE).min(), col(VALUE).cast(DataType::Int128).sum()])
            .sort([CUSTOMER_ID, ORDER_ID], SortMultipleOptions::default())
            .collect_with_engine(engine)?
            .unwrap_single();
        Ok(orders.height())
    };

    let best = |name: &str, run: &dyn Fn() -> anyhow::Result<usize>| -> anyhow::Result<(f64, usize)> {
        let mut best = f64::INFINITY;
        let mut orders = 0;
        for _ in 0..rounds {
            let started = Instant::now();
            orders = run()?;
            best = best.min(started.elapsed().as_secs_f64());
        }
        println!("  {name:<22} {best:8.2} s  ({orders} orders)");
        Ok((best, orders))
    };
    println!("{lines} lines, best of {rounds}");
    let (fold_s, fold_orders) = best("fold (loyalty)", &fold)?;
    let (memory_s, memory_orders) = best("group_by in-memory", &|| group_by(Engine::InMemory))?;
    let (streaming_s, streaming_orders) = best("group_by streaming", &|| group_by(Engine::Streaming))?;
    anyhow::ensure!(
        fold_orders == memory_orders && fold_orders == streaming_orders,
        "the roll-ups disagree: {fold_orders} / {memory_orders} / {streaming_orders} orders"
    );
    println!(
        "  ratio group_by / fold: in-memory {:.2}x, streaming {:.2}x",
        memory_s / fold_s,
        streaming_s / fold_s
    );
    Ok(())
}
