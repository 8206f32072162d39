//! SPEC §1, lines in, orders out: the interface between the input and everything
//! downstream.
//!
//! What goes in: a raw scan (any Parquet schema) and the config's `input` and
//! `cleaning` sections. [`plan::normalise`] maps the physical columns to typed
//! logical ones and [`plan::line_plan`] adds step 4's verdict; [`ingest`] then
//! streams the lines through the fold and returns [`Ingested`]: one row per order
//! keyed by dense integer customer keys, the customer_id text per key, and every
//! cleaning count the manifest reports. No line table is ever held in memory.
//!
//! The files, one SPEC step or mechanism each:
//! - `plan.rs`: physical columns to typed lines; step 4's verdict; parse checks;
//! - `intern.rs`: ids and labels numbered once (the keys of steps 1 and 5);
//! - `book.rs`: steps 1–2 per batch, the routing to shards, the final order table;
//! - `shard.rs`: one part of the customers folded (steps 3–5), in parallel;
//! - `orders.rs`: step 5's roll-up, the per-order arrays and their lookup;
//! - `dedupe.rs`: step 3, exact duplicates decided on raw values after the fold.
//!
//! Past a size ([`passes_for`]) the fold takes several passes over the input: each
//! folds the customers whose id hashes to its part, then seals them (keeps their
//! ids and order aggregates, frees its hash tables, order ids and fingerprints), so
//! that only one part's working state is held at a time.

mod book;
mod customers;
mod dedupe;
mod intern;
mod orders;
pub mod plan;
mod shard;

use std::sync::Arc;

use chrono::NaiveDate;
use polars::prelude::*;

pub use book::OrderBook;
pub use plan::{CleaningStep, Normalised, normalise};

use crate::config::CleaningConfig;
use crate::error::{Error, InputError, Result};
use crate::settings::Settings;
use dedupe::read_candidates;
use shard::Shard;

/// Input lines per pass of the fold with `engine: streaming` (memory first): past
/// this the fold takes several passes over the input, each folding a part of the
/// customers, so that the state of only one part's lines (hash tables, order ids,
/// line fingerprints) is held at a time. Each pass reads the whole input again: at
/// 100M lines, 4 passes instead of 1 lowered the fold's peak from 5.3 to 4.1 GB and
/// took 25 s (30%) longer.
pub const PASS_LINES: usize = 32_000_000;

/// Input lines per pass with the in-memory engine (speed first): one pass up to this
/// size, about 5 GB of fold state.
pub const PASS_LINES_IN_MEMORY: usize = 128_000_000;

/// Shards per thread: a batch's shards are folded in parallel, and with more shards
/// than threads a thread slowed by the reader's work does not hold up the rest
/// (at 10M lines 4 instead of 1 folded 10% faster).
pub const SHARDS_PER_THREAD: usize = 4;

/// At most this many passes: each reads the whole input again.
pub const MAX_PASSES: usize = 8;

/// The fold's passes over an input of `lines` lines: [`PASS_LINES`] each when memory
/// comes first, else [`PASS_LINES_IN_MEMORY`]; `forced` (a test hook) overrides it.
pub fn passes_for(lines: usize, memory_first: bool, forced: Option<usize>) -> usize {
    let per_pass = if memory_first {
        PASS_LINES
    } else {
        PASS_LINES_IN_MEMORY
    };
    forced.unwrap_or_else(|| lines.div_ceil(per_pass).clamp(1, MAX_PASSES))
}

/// The cleaned orders (SPEC §1 step 5) and what the manifest says of the cleaning.
pub struct Ingested {
    /// One row per order with a kept line, sorted by customer key then order_id:
    /// `__customer_id` is the customer's key (UInt32, in customer_id text order; see
    /// `customer_ids`), `__order_rank` the row number (so, within a customer, the
    /// order_id's place), the earliest kept date, the summed value in micro-units,
    /// the smallest channel (its number in `channels`), and the category range of the
    /// positive lines.
    pub orders: DataFrame,
    /// customer_id text by customer key.
    pub customer_ids: Series,
    /// Channel text by the number in the orders' `__channel` (in text order), when
    /// a channel column is mapped and has values.
    pub channels: Option<Series>,
    pub cleaning: Vec<CleaningStep>,
    pub purchases: u64,
}

/// SPEC §1's counts as another engine makes them (see [`crate::engine`]): the
/// manifest's steps come out of [`cleaning_report`] the same whatever counted them.
#[derive(Debug, Clone, Default)]
pub struct StepCounts {
    pub rows: u64,
    pub null_customer: u64,
    pub null_order: u64,
    pub null_date: u64,
    pub null_value: u64,
    pub after_as_of: u64,
    /// Lines left after step 2.
    pub in_window: u64,
    pub duplicates: u64,
    /// Step 4's drops, per reason of [`plan::LinePlan::reasons`].
    pub dropped: Vec<u64>,
    pub orders: u64,
    pub purchases: u64,
}

/// The manifest's cleaning steps from [`StepCounts`].
pub fn cleaning_report(counts: &StepCounts, reasons: &[String]) -> Vec<CleaningStep> {
    let fold_counts = book::Counts {
        rows: counts.rows,
        null_customer: counts.null_customer,
        null_order: counts.null_order,
        null_date: counts.null_date,
        null_value: counts.null_value,
        after_as_of: counts.after_as_of,
        in_window: counts.in_window,
        latest_valid_day: None,
    };
    book::cleaning_steps(
        &fold_counts,
        counts.duplicates,
        &counts.dropped,
        reasons,
        counts.orders,
        counts.purchases,
    )
}

/// Feeds the line stream to `fold`, batch by batch, in input order: the fold runs
/// on this thread while Polars' streaming engine reads on.
fn read_in_batches(lines: &LazyFrame, mut fold: impl FnMut(DataFrame) -> Result<()>) -> Result<()> {
    // Capacity 1: the engine's sink blocks while a batch waits (upstream of the sink
    // Polars still decodes a few row groups ahead).
    let (send, receive) = std::sync::mpsc::sync_channel::<DataFrame>(1);
    let sink = move |batch: DataFrame| -> PolarsResult<bool> {
        // A closed channel means the fold failed: stop the stream (true).
        Ok(send.send(batch).is_err())
    };
    // In input order: copies of a line usually lie close together, and the fold
    // finds them within two batches one after the other (unordered, some copies a
    // few rows apart came in batches far apart, and the input was read again).
    let plan = lines
        .clone()
        .sink_batches(PlanCallback::Rust(SpecialEq::new(Arc::new(sink))), true, None)?;
    let _paging = crate::memory::PagingOut::start();
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || plan.collect_with_engine(Engine::Streaming).map(|_| ()));
        let folded = receive.iter().try_for_each(&mut fold);
        // Dropping the receiver (on a failed fold) lets a blocked send return.
        drop(receive);
        let read = reader
            .join()
            .map_err(|_| Error::Internal("the line reader panicked".into()))?;
        folded?;
        Ok(read?)
    })
}

/// The input's row count: from file metadata for a Parquet scan; 0 if unknown.
pub fn input_lines(normalised: &Normalised) -> usize {
    normalised
        .lf
        .clone()
        .select([len()])
        .collect()
        .ok()
        .and_then(|counts| counts.columns().first()?.get(0).ok()?.extract::<u64>())
        .unwrap_or(0) as usize
}

/// SPEC §1 over the whole input: streaming passes fold the lines into orders (one
/// pass, or past a size one per part of the customers, see [`passes_for`]); the few
/// lines whose fingerprints repeat are then compared for step 3 (held from their
/// batch, or read again when copies fall in different batches).
/// `expected_lines` ([`input_lines`]) bounds the fold's arrays. Returns the orders
/// and the as_of in force (configured, or the default).
pub fn ingest(
    normalised: &Normalised,
    cleaning: &CleaningConfig,
    as_of: Option<NaiveDate>,
    (expected_lines, memory_first): (usize, bool),
    settings: &Settings,
) -> Result<(Ingested, NaiveDate)> {
    let plan = plan::line_plan(normalised, cleaning);
    let mut book = OrderBook::new(
        &normalised.raw_columns,
        &plan,
        as_of,
        cleaning.dedupe,
        (
            rayon::current_num_threads() * SHARDS_PER_THREAD,
            passes_for(expected_lines, memory_first, settings.fold_passes),
        ),
        expected_lines,
    );
    if settings.explain {
        eprintln!("{}", plan.lines.clone().explain(true)?);
    }
    let started = std::time::Instant::now();
    for pass in 0..book.passes() {
        read_in_batches(&plan.lines, |batch| {
            let folding = std::time::Instant::now();
            book.add(&batch)?;
            book.busy_seconds += folding.elapsed().as_secs_f64();
            book.batches += 1;
            if book.batches.is_multiple_of(100) {
                tracing::debug!(
                    pass,
                    batches = book.batches,
                    resident_mib = crate::memory::resident_mib(),
                    "folding"
                );
            }
            Ok(())
        })?;
        if pass == 0 {
            // Every line has been checked: fail before reading the input again.
            plan::check_parse_failures(normalised, &book.parse_failures())?;
        }
        let sealing = std::time::Instant::now();
        book.end_pass();
        crate::memory::release_freed();
        tracing::debug!(
            pass,
            seal_seconds = sealing.elapsed().as_secs_f64(),
            of = book.passes(),
            seconds = started.elapsed().as_secs_f64(),
            busy = book.busy_seconds,
            batches = book.batches,
            resident_mib = crate::memory::resident_mib(),
            sealed_mib = book.sealed.iter().map(Shard::heap_bytes).sum::<usize>() >> 20,
            "lines folded into orders"
        );
    }
    let as_of = as_of.or_else(|| book.default_as_of()).ok_or_else(|| {
        InputError::NothingLeft("no row has a customer_id, order_id, order_date and amount".into())
    })?;
    let candidates = book.duplicate_candidates();
    if let Some(lines) = book
        .held_candidates(&candidates)?
        .filter(|_| !candidates.is_empty())
    {
        tracing::debug!(
            rows = candidates.len(),
            "repeated fingerprints, all within batches: compared there"
        );
        book.remove_duplicates(lines)?;
    } else if !candidates.is_empty() {
        tracing::debug!(
            rows = candidates.len(),
            "lines whose fingerprints repeat, compared on raw values"
        );
        let lines = read_candidates(normalised, &plan, candidates)?;
        book.remove_duplicates(lines)?;
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), "duplicates compared");
    }
    Ok((book.finish(&plan.reasons)?, as_of))
}

#[cfg(test)]
mod tests;
