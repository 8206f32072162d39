//! Wires the lazy frames: orders -> cleaned lines -> metric frames -> output tables.
//!
//! [`compute`] is pure with respect to the filesystem: it takes the raw scan (a
//! `LazyFrame`) and the config and returns collected tables, so tests feed it
//! in-memory frames. Every output and every cleaning count is collected in *one*
//! `collect_all`, so the scan is shared by common-subplan elimination.

use std::time::Instant;

use chrono::{Days, NaiveDate};
use polars::prelude::*;

use crate::clean::{self, CleaningStep};
use crate::config::{Engine as EngineChoice, JobConfig};
use crate::error::{InputError, Result};
use crate::manifest::Stage;
use crate::metrics::customers::{self, CustomerParams};
use crate::metrics::{clv, cohort, kpis, pareto, rfm};
use crate::schema::customers::ABC_CLASS;
use crate::schema::internal::{REVENUE_MICROS, VALUE};
use crate::schema::{self, CUSTOMER_ID};

/// Collected output tables, in a fixed order, each sorted by its key.
pub struct Computed {
    pub as_of: NaiveDate,
    pub tables: Vec<(&'static str, DataFrame)>,
    pub cleaning: Vec<CleaningStep>,
    pub stages: Vec<Stage>,
    pub warnings: Vec<String>,
}

/// Times a stage and logs it.
fn timed<T>(stages: &mut Vec<Stage>, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    tracing::info!(stage = name, "starting");
    let result = f();
    let seconds = start.elapsed().as_secs_f64();
    tracing::info!(stage = name, seconds, "finished");
    stages.push(Stage {
        name: name.to_string(),
        seconds,
    });
    result
}

/// Runs the whole job on a raw order scan. `source` names the input in messages.
pub fn compute(raw: LazyFrame, config: &JobConfig, source: &str) -> Result<Computed> {
    let mut stages = Vec::new();
    let mut raw = raw;
    let schema = timed(&mut stages, "schema", || Ok(raw.collect_schema()?))?;
    let normalised = clean::normalise(raw, &schema, &config.input, source)?;
    let engine = match config.engine {
        EngineChoice::InMemory => Engine::InMemory,
        EngineChoice::Streaming => Engine::Streaming,
    };

    let as_of = match config.as_of {
        Some(date) => date,
        None => timed(&mut stages, "default as_of", || {
            let latest = clean::latest_date_plan(&normalised)
                .collect_with_engine(engine)?
                .unwrap_single();
            clean::check_parse_failures(&normalised, &latest)?;
            let days = latest
                .column(schema::internal::ORDER_DATE)?
                .cast(&DataType::Int32)?
                .i32()?
                .get(0)
                .ok_or_else(|| {
                    InputError::NothingLeft(
                        "no row has a customer_id, order_id, order_date and amount".into(),
                    )
                })?;
            let latest = NaiveDate::default() + chrono::Duration::days(days as i64);
            Ok(latest + Days::new(1))
        })?,
    };
    tracing::info!(%as_of, "analysis date (exclusive)");

    let cleaned = clean::clean(&normalised, &config.cleaning, as_of);
    let orders = clean::orders(cleaned.lines.clone(), normalised.has_channel);
    let customers = customers::customers(
        orders.clone(),
        &CustomerParams {
            as_of,
            min_tenure_days: config.customers.min_tenure_days,
            grain: config.cohorts.grain,
            has_channel: normalised.has_channel,
        },
    );
    let pareto = pareto::pareto(customers.clone(), &config.pareto);
    let upsell = normalised
        .has_category
        .then(|| customers::upsell_customers(cleaned.lines.clone(), orders.clone()));
    let kpis = kpis::kpis(
        kpis::KpiInputs {
            customers: customers.clone(),
            pareto_summary: pareto.summary,
            upsell,
        },
        as_of,
        config.kpis.churn_window_days,
    );
    let enriched = customers
        .clone()
        .join(
            pareto.abc,
            [col(CUSTOMER_ID)],
            [col(CUSTOMER_ID)],
            JoinArgs::new(JoinType::Left),
        )
        .with_columns([col(ABC_CLASS).fill_null(lit("C"))]);
    let enriched = rfm::rfm_scores(enriched, &config.rfm);
    let enriched = clv::customer_clv(enriched, &config.clv, config.customers.min_tenure_days);
    let rfm_segments = rfm::rfm_segments(enriched.clone());
    let clv_by_segment = clv::clv_by_segment(enriched.clone(), &config.clv.segment_by);
    let cohort_retention = cohort::cohort_retention(orders.clone(), customers, config.cohorts.grain, as_of);
    let customers_out = enriched
        .drop(cols([
            REVENUE_MICROS,
            clv::HISTORICAL_CLV_MICROS,
            clv::FORMULA_CLV_MICROS,
        ]))
        .sort([CUSTOMER_ID], SortMultipleOptions::default());
    let order_counts = orders.select([
        len().cast(DataType::Int64).alias("orders"),
        col(VALUE)
            .gt(lit(0i64))
            .sum()
            .cast(DataType::Int64)
            .alias("purchases"),
    ]);

    let names = [
        schema::customers::TABLE,
        schema::kpis::TABLE,
        schema::cohort::TABLE,
        schema::rfm::SEGMENTS_TABLE,
        schema::pareto::TABLE,
        schema::pareto::LORENZ_TABLE,
        schema::clv::BY_SEGMENT_TABLE,
    ];
    let mut plans: Vec<DslPlan> = [
        customers_out,
        kpis,
        cohort_retention,
        rfm_segments,
        pareto.pareto,
        pareto.lorenz,
        clv_by_segment,
    ]
    .into_iter()
    .map(|lf| lf.logical_plan)
    .collect();
    plans.push(order_counts.logical_plan);
    plans.extend(cleaned.counts.into_vec().into_iter().map(|lf| lf.logical_plan));

    let mut frames = timed(&mut stages, "compute", || {
        Ok(LazyFrame::collect_all_with_engine(
            plans,
            engine,
            OptFlags::default(),
        )?)
    })?;
    let counts = frames.split_off(names.len() + 1);
    let order_counts = frames.pop().unwrap_or_default();
    let count = |name: &str| {
        order_counts
            .column(name)
            .ok()
            .and_then(|c| c.get(0).ok())
            .and_then(|v| v.extract::<i64>())
            .unwrap_or(0) as u64
    };
    let (n_orders, n_purchases) = (count("orders"), count("purchases"));
    let cleaning = clean::cleaning_steps(&normalised, &counts, n_orders, n_purchases)?;
    for step in &cleaning {
        tracing::info!(step = step.step, name = %step.name, rows_in = step.rows_in, rows_out = step.rows_out, "cleaning");
    }
    if n_purchases == 0 {
        let step = cleaning
            .iter()
            .find(|s| s.rows_out == 0)
            .map(|s| format!("step {} ({}) left no rows", s.step, s.name))
            .unwrap_or_else(|| format!("{n_orders} orders, none with value > 0"));
        return Err(InputError::NothingLeft(step).into());
    }
    let warnings = rfm::unreachable_segments(&config.rfm.segments, config.rfm.bins);
    Ok(Computed {
        as_of,
        tables: names.into_iter().zip(frames).collect(),
        cleaning,
        stages,
        warnings,
    })
}
