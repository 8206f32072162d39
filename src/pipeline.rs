//! Wires the lazy frames: orders -> cleaned lines -> metric frames -> output tables.
//!
//! [`compute`] is pure with respect to the filesystem: it takes the raw scan (a
//! `LazyFrame`) and the config and returns the output tables, so tests feed it
//! in-memory frames. Stages:
//! 1. streaming passes over the lines ([`crate::ingest`]; one, or past a size one
//!    per part of the customers): SPEC §1 folded into orders keyed by dense integer
//!    customer keys, with every cleaning count; the lines are never held in memory,
//!    whatever the input's size;
//! 2. a slice of whole customers' orders at a time: the per-customer aggregates and
//!    model summary, and the cohort activity and upsell counts, which add up over
//!    customers; the orders are then freed (kept for the holdout only); the scalars
//!    (customer count, annual churn) that later metrics take as parameters;
//! 3. the revenue ranking and RFM score steps, the Pareto tables, then every other
//!    output table, each stage one collection over in-memory frames;
//! 4. the customer table: every column is computed row by row from the aggregates,
//!    the summary and the predictions, with the global numbers (ABC boundaries, RFM
//!    steps, churn) as constants. Small tables are computed once, whole; large ones
//!    (or with `engine: streaming`) a slice at a time as they are written, so no
//!    customer-wide table beyond the aggregates is ever held.
//!
//! Every stage after the first groups, joins and sorts integer keys; customer_id
//! text comes back only in the written `customers` table. Materialising orders and
//! aggregates keeps the later plans small; Polars 0.55 mis-plans broadcast
//! aggregates and cross joins over one large shared subplan.

use std::time::Instant;

use chrono::{Days, NaiveDate};
use polars::prelude::*;

use crate::clean::{self, CleaningStep};
use crate::config::{Engine as EngineChoice, JobConfig, OnFitFailure, PurchaseModel};
use crate::error::Error;
use crate::error::{InputError, Result};
use crate::ingest;
use crate::io::table::{Table, stacked};
use crate::manifest::Stage;
use crate::metrics::customers::{self, CustomerParams};
use crate::metrics::{clv, cohort, holdout, kpis, pareto, rfm};
use crate::model::{self, Fit, summary};
use crate::schema::customers::RECENCY_DAYS;
use crate::schema::internal::REVENUE_MICROS;
use crate::schema::model::{EXPECTED_PURCHASES, EXPECTED_SPEND, P_ALIVE, PREDICTED_CLV};
use crate::schema::{self, CUSTOMER_ID};

/// Customers up to which the customer table is computed whole with the in-memory
/// engine (about 1.2 GB of columns); past it, and with `engine: streaming`, it is
/// made a slice at a time as it is written.
pub const IN_MEMORY_CUSTOMERS: usize = 4 * crate::io::table::SLICE_ROWS;

/// Input lines past which freed memory goes back to the OS at once with the
/// in-memory engine (always with `engine: streaming`). It costs time: the freed
/// pages are faulted in and zeroed again. At 30M lines it cost 12% of the wall time
/// to save 0.23 GiB; at 100M it saves 2 GiB (37% of the peak).
pub const LOW_MEMORY_LINES: usize = 64_000_000;

/// The output tables, in the order they are written.
pub const TABLES: [&str; 8] = [
    schema::customers::TABLE,
    schema::kpis::TABLE,
    schema::cohort::TABLE,
    schema::rfm::SEGMENTS_TABLE,
    schema::pareto::TABLE,
    schema::pareto::LORENZ_TABLE,
    schema::clv::BY_SEGMENT_TABLE,
    schema::holdout::TABLE,
];

/// Collected output tables, in a fixed order, each sorted by its key.
pub struct Computed {
    pub as_of: NaiveDate,
    /// Fitted predictive models (empty with `clv.model: none` or a skipped failure).
    pub models: Vec<Fit>,
    /// Every output table; the customer table is made a slice at a time as it is
    /// written (see [`Table`]).
    pub tables: Vec<(&'static str, Table)>,
    pub cleaning: Vec<CleaningStep>,
    pub stages: Vec<Stage>,
    pub warnings: Vec<String>,
}

/// Times a stage and logs it.
fn timed<T>(stages: &mut Vec<Stage>, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    tracing::info!(stage = name, "starting");
    let result = f();
    crate::memory::release_freed();
    let seconds = start.elapsed().as_secs_f64();
    tracing::info!(
        stage = name,
        seconds,
        resident_mib = crate::memory::resident_mib(),
        peak_mib = crate::memory::peak_mib(),
        "finished"
    );
    stages.push(Stage {
        name: name.to_string(),
        seconds,
    });
    result
}

/// Null prediction columns for every customer: no model, or a skipped fit failure.
/// Scalar columns: they take no memory per customer.
fn null_predictions(summary: &DataFrame) -> Result<DataFrame> {
    let mut columns = vec![summary.column(CUSTOMER_ID)?.clone()];
    for name in [P_ALIVE, EXPECTED_PURCHASES, EXPECTED_SPEND, PREDICTED_CLV] {
        columns.push(Column::new_scalar(
            name.into(),
            Scalar::null(DataType::Float64),
            summary.height(),
        ));
    }
    Ok(DataFrame::new(summary.height(), columns)?)
}

/// `frame` with `other`'s columns added, by customer_id (a left join). Both list one
/// row per customer, sorted by key, in the usual case: then the columns are put
/// side by side without a join (a join cost 0.2 s per table at 2M customers).
fn attach(frame: DataFrame, other: DataFrame) -> Result<DataFrame> {
    let aligned = frame.height() == other.height()
        && frame.column(CUSTOMER_ID)?.as_materialized_series()
            == other.column(CUSTOMER_ID)?.as_materialized_series();
    if aligned {
        let mut frame = frame;
        let added: Vec<Column> = other
            .columns()
            .iter()
            .filter(|c| c.name() != CUSTOMER_ID)
            .cloned()
            .collect();
        frame.hstack_mut(&added)?;
        return Ok(frame);
    }
    Ok(frame
        .lazy()
        .join(
            other.lazy(),
            [col(CUSTOMER_ID)],
            [col(CUSTOMER_ID)],
            JoinArgs::new(JoinType::Left),
        )
        .sort([CUSTOMER_ID], SortMultipleOptions::default())
        .collect()?)
}

/// One stage: collects its plans, timed.
/// `LOYALTY_EXPLAIN=1` prints the optimised plan first, for performance work.
fn collect_stage(
    stages: &mut Vec<Stage>,
    name: &str,
    plans: Vec<DslPlan>,
    engine: Engine,
) -> Result<Vec<DataFrame>> {
    if std::env::var_os("LOYALTY_EXPLAIN").is_some() {
        eprintln!("{}", LazyFrame::explain_all(plans.clone(), OptFlags::default())?);
    }
    if std::env::var_os("LOYALTY_PROFILE").is_some() {
        profile(name, &plans)?;
    }
    // One plan after another: each runs in parallel inside, and running them side by
    // side only added up their transient memory (0.6 GB at 100M lines, no time saved).
    // They share no expensive subplan: their inputs are in memory.
    timed(stages, name, || {
        plans
            .into_iter()
            .enumerate()
            .map(|(i, plan)| {
                crate::memory::reset_peak_per_plan();
                let started = Instant::now();
                let frame = LazyFrame::from(plan).collect_with_engine(engine)?.unwrap_single();
                tracing::debug!(
                    stage = name,
                    plan = i,
                    seconds = started.elapsed().as_secs_f64(),
                    resident_mib = crate::memory::resident_mib(),
                    peak_mib = crate::memory::peak_mib(),
                    "plan collected"
                );
                Ok(frame)
            })
            .collect()
    })
}

/// `LOYALTY_PROFILE=1`: runs each plan of a stage on its own first and prints its
/// slowest nodes (Polars' profile), for performance work.
fn profile(stage: &str, plans: &[DslPlan]) -> Result<()> {
    for (i, plan) in plans.iter().enumerate() {
        let started = Instant::now();
        let (_, timings) = LazyFrame::from(plan.clone()).profile()?;
        let sorted = timings
            .lazy()
            .with_column((col("end") - col("start")).alias("us"))
            .sort(["us"], SortMultipleOptions::default().with_order_descending(true))
            .limit(8)
            .collect()?;
        eprintln!(
            "profile {stage} plan {i}: {:.2} s\n{sorted}",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Runs the whole job on a raw order scan. `source` names the input in messages.
pub fn compute(raw: LazyFrame, config: &JobConfig, source: &str) -> Result<Computed> {
    let mut stages = Vec::new();
    // The schema of a copy: a plan whose schema was collected is resolved as it
    // stands, and the row numbers added next would stay a step of their own instead
    // of going into the scan, where a filter on them (the rows read again for step
    // 3) skips the other rows undecoded (at 100M lines the whole input was decoded
    // again: 2-4 GB more).
    let unreadable = |e: PolarsError| -> Error {
        InputError::Unreadable {
            source_label: source.to_string(),
            reason: e.to_string(),
        }
        .into()
    };
    let schema = timed(&mut stages, "schema", || {
        raw.clone().collect_schema().map_err(unreadable)
    })?;
    let normalised = clean::normalise(raw, &schema, &config.input, source)?;
    let engine = match config.engine {
        EngineChoice::InMemory => Engine::InMemory,
        EngineChoice::Streaming => Engine::Streaming,
    };

    // Past a size, or with `engine: streaming`, memory comes first.
    let input_lines = ingest::input_lines(&normalised);
    let streaming = config.engine == EngineChoice::Streaming;
    if streaming || input_lines > LOW_MEMORY_LINES {
        crate::memory::release_at_once();
    }

    // Stage 1, streaming passes over the lines: SPEC §1 steps 1–5, folded into
    // orders keyed by integer customer keys (in customer_id order).
    // The query engine fails here on the data itself (a damaged page, a value its
    // reader refuses): an input error naming the input, not an internal one.
    let (ingested, as_of) = timed(&mut stages, "scan and clean", || {
        ingest::ingest(
            &normalised,
            &config.cleaning,
            config.as_of,
            (input_lines, streaming),
        )
    })
    .map_err(|e| match e {
        Error::Polars(e) => unreadable(e),
        other => other,
    })?;
    tracing::info!(%as_of, "analysis date (exclusive)");
    let cleaning = ingested.cleaning;
    for step in &cleaning {
        tracing::info!(step = step.step, name = %step.name, rows_in = step.rows_in, rows_out = step.rows_out, "cleaning");
    }
    if ingested.purchases == 0 {
        let step = cleaning
            .iter()
            .find(|s| s.rows_out == 0)
            .map(|s| format!("step {} ({}) left no rows", s.step, s.name))
            .unwrap_or_else(|| format!("{} orders, none with value > 0", cleaning[4].rows_out));
        return Err(InputError::NothingLeft(step).into());
    }
    let mut orders_frame = ingested.orders;
    let customer_ids = ingested.customer_ids;
    let channels = match (normalised.has_channel, ingested.channels) {
        (false, _) => None,
        (true, Some(labels)) => Some(labels),
        // A mapped channel column with no values: every order's channel is null.
        (true, None) => {
            let nulls = Column::full_null(
                schema::internal::CHANNEL.into(),
                orders_frame.height(),
                &DataType::UInt32,
            );
            orders_frame.with_column(nulls)?;
            Some(Series::new_empty("channel_labels".into(), &DataType::String))
        }
    };
    let params = CustomerParams {
        as_of,
        min_tenure_days: config.customers.min_tenure_days,
        grain: config.cohorts.grain,
        channels,
    };
    // The §2 columns of (a slice of) the per-customer aggregates, row by row.
    let columns_of = {
        let params = params.clone();
        move |frame: &DataFrame| customers::customer_columns(frame.clone().lazy(), &params)
    };

    // Stage 2, a slice of customers at a time (all of their orders, in key order):
    // the per-customer aggregates and model summary, and the cohort activity and
    // upsell counts, which add up over customers. Each slice's intermediates are
    // freed before the next starts (at 100M lines, group-bys and windows over all
    // orders at once took 2 GB more).
    let has_channel = params.channels.is_some();
    let grain = config.cohorts.grain;
    let obs_end = as_of - Days::new(1);
    let order_rows = crate::io::table::test_slice_rows().unwrap_or(crate::metrics::ORDER_SLICE_ROWS);
    let slices = crate::metrics::customer_slices(&orders_frame, order_rows)?;
    let per_customer = timed(&mut stages, "customers", || {
        let (mut aggregates, mut activity, mut upsell, mut summaries) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (i, slice) in slices.iter().enumerate() {
            // In memory whatever the engine: a slice is in memory and small, and the
            // streaming engine took twice as long over them.
            aggregates.push(customers::customer_aggregates(slice.clone().lazy(), has_channel).collect()?);
            activity.push(cohort::cohort_activity(slice.clone().lazy(), grain).collect()?);
            if normalised.has_category {
                upsell.push(customers::upsell_customers(slice.clone().lazy()).collect()?);
            }
            summaries.push(summary::summary_frame(
                slice,
                obs_end,
                config.clv.time_unit.days(),
            )?);
            tracing::debug!(
                slice = i,
                of = slices.len(),
                resident_mib = crate::memory::resident_mib(),
                "customers"
            );
        }
        Ok((
            stacked(aggregates)?,
            stacked(activity)?,
            stacked(upsell)?,
            stacked(summaries)?,
        ))
    })?;
    drop(slices);
    let (aggregates, activity, upsell, summary) = per_customer;
    let upsell = normalised
        .has_category
        .then(|| upsell.lazy().select([col("upsell_customers").sum()]));
    let wants_holdout = config.clv.model != PurchaseModel::None && config.clv.holdout_days.is_some();
    // Only the holdout reads the orders again (the columns it needs).
    let orders = if wants_holdout {
        Some(
            orders_frame
                .select([
                    schema::internal::CUSTOMER_ID,
                    schema::internal::ORDER_DATE,
                    schema::internal::VALUE,
                ])?
                .lazy(),
        )
    } else {
        None
    };
    drop(orders_frame);
    let cohort_retention = cohort::cohort_retention(activity.lazy(), columns_of(&aggregates), grain, as_of);
    let customer_count = aggregates.height() as u64;
    let scalars = columns_of(&aggregates)
        .select([
            col(RECENCY_DAYS)
                .gt(lit(365i64))
                .cast(DataType::Float64)
                .mean()
                .alias("annual_churn_rate"),
            col(RECENCY_DAYS).min().alias("latest"),
        ])
        .collect()?;
    let scalar = |name: &str| scalars.column(name).ok().and_then(|c| c.get(0).ok());
    let annual_churn_rate = scalar("annual_churn_rate")
        .and_then(|v| v.extract::<f64>())
        .unwrap_or(0.0);
    let latest = scalar("latest").and_then(|v| v.extract::<i64>()).unwrap_or(1);

    let mut warnings = rfm::unreachable_segments(&config.rfm.segments, config.rfm.bins);
    warnings.extend(rfm::collapsed_bins(columns_of(&aggregates), &config.rfm)?);
    if latest > 365 {
        warnings.push(format!(
            "as_of {as_of} is {latest} days after the latest purchase: every customer looks churned; is as_of right?"
        ));
    }
    let (fits, predictions) = match config.clv.model {
        PurchaseModel::None => (Vec::new(), None),
        _ => match timed(&mut stages, "model", || {
            Ok(model::fit_and_predict(&summary, &config.clv))
        }) {
            Ok(Ok(outcome)) => (outcome.fits, Some(outcome.predictions)),
            Ok(Err(failure)) if config.clv.on_fit_failure == OnFitFailure::Skip => {
                warnings.push(format!(
                    "{failure}; predicted columns are null (clv.on_fit_failure: skip)"
                ));
                (Vec::new(), None)
            }
            Ok(Err(failure)) => {
                return Err(Error::Model(format!(
                    "{failure}. Set clv.on_fit_failure: skip to write the other outputs without predictions, or clv.model: none"
                )));
            }
            Err(e) => return Err(e),
        },
    };
    for fit in &fits {
        tracing::info!(model = %fit.model, log_likelihood = fit.log_likelihood, iterations = fit.iterations, "fitted");
    }
    let holdout = match (orders, config.clv.holdout_days) {
        (Some(orders), Some(days)) => {
            match timed(&mut stages, "holdout", || {
                holdout::validate(orders, as_of, days, &config.clv)
            }) {
                Ok(result) => Some(result),
                Err(Error::Model(failure)) if config.clv.on_fit_failure == OnFitFailure::Skip => {
                    warnings.push(format!(
                        "holdout: {failure}; clv_holdout is empty (clv.on_fit_failure: skip)"
                    ));
                    None
                }
                Err(e) => return Err(e),
            }
        }
        _ => None,
    };
    let predictions = match predictions {
        Some(frame) => frame,
        None => null_predictions(&summary)?,
    };
    // The customer state every later stage reads: aggregates, summary, predictions.
    let base = timed(&mut stages, "model columns", || {
        attach(attach(aggregates, summary)?, predictions)
    })?;

    // Stage 3: the revenue ranking (a sort) and the RFM score steps, computed once
    // from a few columns of all customers.
    let mut frames = collect_stage(
        &mut stages,
        "ranking",
        vec![
            pareto::ranked(base.clone().lazy()).logical_plan,
            rfm::rfm_thresholds(columns_of(&base), &config.rfm, customer_count).logical_plan,
        ],
        engine,
    )?
    .into_iter();
    let ranked = frames.next().unwrap_or_default().lazy();
    let rfm_steps = frames.next().unwrap_or_default();
    // Everything read from the ranking, collected now: the ranking (24 bytes per
    // customer) is freed before the wide stages below.
    let pareto = pareto::pareto(ranked.clone(), &config.pareto);
    let plans = [
        pareto.pareto,
        pareto.lorenz,
        pareto.summary,
        pareto::abc_boundaries(ranked, base.clone().lazy(), &config.pareto)?,
    ];
    let mut frames = collect_stage(
        &mut stages,
        "pareto",
        plans.into_iter().map(|lf| lf.logical_plan).collect(),
        engine,
    )?
    .into_iter();
    let mut next = || frames.next().unwrap_or_default();
    let (pareto_table, lorenz, pareto_summary, boundaries) = (next(), next(), next(), next());
    // Every customer column, row by row from `base` with the global numbers as
    // constants: the customer table is made a slice at a time as it is written.
    let enrich = {
        let (columns_of, rfm_config, clv_config) =
            (columns_of.clone(), config.rfm.clone(), config.clv.clone());
        let min_tenure_days = config.customers.min_tenure_days;
        std::sync::Arc::new(move |frame: &DataFrame| -> Result<LazyFrame> {
            let customers = pareto::with_abc_class(columns_of(frame), &boundaries)?;
            let customers = rfm::rfm_scores(customers, &rfm_config, &rfm_steps)?;
            Ok(clv::customer_clv(
                customers,
                &clv_config,
                min_tenure_days,
                annual_churn_rate,
            ))
        })
    };

    // The customer table: whole, when it is small enough to hold, computed once for
    // the tables below and the writer; else made a slice at a time as it is written
    // (bounded memory), at the cost of computing the columns again for each use.
    let named = move |mut frame: DataFrame| -> Result<DataFrame> {
        let keys = frame.column(CUSTOMER_ID)?.u32()?.clone();
        let ids = customer_ids.take(&keys)?;
        frame.replace(CUSTOMER_ID, ids.into_column())?;
        Ok(frame)
    };
    let sliced = streaming || base.height() > IN_MEMORY_CUSTOMERS;
    // `whole`: the customer columns, computed once, when the table is not sliced.
    let (whole, customer_table) = if sliced {
        let table = Table::Sliced {
            height: base.height(),
            rows: crate::io::table::slice_rows(),
            slice: Box::new({
                let (base, enrich) = (base.clone(), enrich.clone());
                move |offset, len| {
                    let part = base.slice(offset as i64, len);
                    let frame = enrich(&part)?
                        .drop(cols([REVENUE_MICROS]))
                        .collect_with_engine(engine)?
                        .unwrap_single();
                    named(frame)
                }
            }),
        };
        (None, table)
    } else {
        let enriched = collect_stage(&mut stages, "scores", vec![enrich(&base)?.logical_plan], engine)?
            .pop()
            .unwrap_or_default();
        let table = Table::Frame(named(enriched.drop(REVENUE_MICROS)?)?);
        (Some(enriched), table)
    };

    // Stage 4: every output table but the customer table.
    let kpis = kpis::kpis(
        kpis::KpiInputs {
            customers: columns_of(&base),
            pareto_summary: pareto_summary.lazy(),
            models: fits.clone(),
            holdout: holdout.as_ref().map(|h| h.summary),
            upsell,
        },
        as_of,
        config.kpis.churn_window_days,
    );
    // The segment tables in one pass over the customers, a slice at a time when the
    // table is sliced (each slice's columns freed before the next): rfm_segments and
    // clv_by_segment from per-slice exact sums, and clv_by_segment's medians from
    // the three CLV columns stacked, picked by row number.
    let (rfm_segments, clv_by_segment) = timed(&mut stages, "segments", || {
        let dimensions = &config.clv.segment_by;
        let (mut sums, mut parts, mut values) = (Vec::new(), Vec::new(), Vec::new());
        let mut add = |customers: LazyFrame, first_row: usize| -> Result<()> {
            sums.push(rfm::segment_sums(customers.clone()).collect()?);
            parts.push(clv::dimension_parts(customers.clone(), dimensions, first_row as IdxSize).collect()?);
            values.push(clv::median_values(customers).collect()?);
            Ok(())
        };
        if let Some(whole) = &whole {
            add(whole.clone().lazy(), 0)?;
        } else {
            let rows = crate::io::table::slice_rows();
            // One (empty) slice when there are no customers: the tables keep their columns.
            for offset in (0..base.height().max(1)).step_by(rows) {
                let part = enrich(&base.slice(offset as i64, rows))?.collect()?;
                add(part.lazy(), offset)?;
            }
        }
        let rfm_segments = rfm::rfm_segments(stacked(sums)?.lazy()).collect()?;
        let clv_by_segment = clv::clv_by_segment(stacked(parts)?.lazy(), &stacked(values)?)?.collect()?;
        Ok((rfm_segments, clv_by_segment))
    })?;
    let plans: Vec<DslPlan> = [
        kpis,
        cohort_retention,
        pareto_table.lazy(),
        lorenz.lazy(),
        holdout.map_or_else(holdout::empty_table, |h| h.table),
    ]
    .into_iter()
    .map(|lf| lf.logical_plan)
    .collect();
    let mut frames = collect_stage(&mut stages, "metrics", plans, engine)?.into_iter();
    let mut next = || frames.next().unwrap_or_default();
    let (kpis, cohort_retention, pareto_table, lorenz, holdout_table) =
        (next(), next(), next(), next(), next());
    // In TABLES order.
    let frames = [
        kpis,
        cohort_retention,
        rfm_segments,
        pareto_table,
        lorenz,
        clv_by_segment,
        holdout_table,
    ];
    let tables = std::iter::once(customer_table).chain(frames.into_iter().map(Table::Frame));
    Ok(Computed {
        models: fits,
        as_of,
        tables: TABLES.into_iter().zip(tables).collect(),
        cleaning,
        stages,
        warnings,
    })
}
