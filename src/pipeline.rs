//! The shared stages, whatever the engine: from the per-customer summary an
//! [`Engine`] returns to the output tables.
//!
//! ```text
//!  inputs ─► Engine::summarise ─────────────────────► CustomerSummary
//!            (in-process: scan and clean ─► customers)      │
//!                                                            ▼
//!   model ─► model columns ─► ranking ─► pareto ─► scores ─► segments ─► metrics
//!                                                            │
//!                                 Computed { tables, cleaning, stages } ─► write
//! ```
//!
//! Each stage is a function returning a small typed struct, timed by the
//! [`StageLog`] (the manifest's `stages`, and the log). [`compute`] is pure with
//! respect to the filesystem: it takes the raw scan and the config and returns the
//! output tables, so tests feed it in-memory frames.
//!
//! Every stage groups, joins and sorts integer customer keys; customer_id text
//! comes back only in the written `customers` table. The customer table is made
//! whole when small, else a slice at a time as it is written ([`CustomerSlicer`]),
//! so no customer-wide table beyond the aggregates is ever held. Materialising the
//! aggregates keeps the later plans small; Polars 0.55 mis-plans broadcast
//! aggregates and cross joins over one large shared subplan.

use std::sync::Arc;
use std::time::Instant;

use chrono::NaiveDate;
use polars::prelude::Engine as Execution;
use polars::prelude::*;

use crate::config::{Engine as ExecutionChoice, JobConfig, OnFitFailure, PurchaseModel};
use crate::engine::{CustomerSummary, Engine, InProcess, Job};
use crate::error::{Error, Result};
use crate::ingest::CleaningStep;
use crate::io::table::{SLICE_ROWS, Slicer, Table, stacked};
use crate::manifest::Stage;
use crate::metrics::customers::{self, CustomerParams};
use crate::metrics::{clv, cohort, holdout, kpis, pareto, rfm};
use crate::model::{self, Fit};
use crate::schema::customers::RECENCY_DAYS;
use crate::schema::internal::REVENUE_MICROS;
use crate::schema::model::{EXPECTED_PURCHASES, EXPECTED_SPEND, P_ALIVE, PREDICTED_CLV};
use crate::schema::{self, CUSTOMER_ID};
use crate::settings::Settings;

/// Customers up to which the customer table is computed whole with the in-memory
/// engine (about 1.2 GB of columns); past it, and with `engine: streaming`, it is
/// made a slice at a time as it is written.
pub const IN_MEMORY_CUSTOMERS: usize = 4 * crate::io::table::SLICE_ROWS;

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

/// The schema every run writes for output table `table` (one of [`TABLES`]);
/// `has_channel`: whether `input.columns.channel` is mapped.
pub fn output_schema(table: &str, has_channel: bool) -> Option<Schema> {
    Some(match table {
        schema::customers::TABLE => customers::schema(has_channel),
        schema::kpis::TABLE => kpis::schema(),
        schema::cohort::TABLE => cohort::schema(),
        schema::rfm::SEGMENTS_TABLE => rfm::segments_schema(),
        schema::pareto::TABLE => pareto::schema(),
        schema::pareto::LORENZ_TABLE => pareto::lorenz_schema(),
        schema::clv::BY_SEGMENT_TABLE => clv::by_segment_schema(),
        schema::holdout::TABLE => holdout::schema(),
        _ => return None,
    })
}

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

/// The run's timed stages, and how each stage's plans are collected.
pub struct StageLog {
    stages: Vec<Stage>,
    settings: Settings,
}

impl StageLog {
    pub fn new(settings: &Settings) -> Self {
        Self {
            stages: Vec::new(),
            settings: settings.clone(),
        }
    }

    /// Times a stage and logs it.
    pub fn timed<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
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
        self.stages.push(Stage {
            name: name.to_string(),
            seconds,
        });
        result
    }

    /// One stage: collects its plans, timed. `LOYALTY_EXPLAIN` prints the optimised
    /// plans first, `LOYALTY_PROFILE` their slowest nodes, for performance work.
    pub fn collect(
        &mut self,
        name: &str,
        plans: Vec<LazyFrame>,
        engine: Execution,
    ) -> Result<Vec<DataFrame>> {
        let plans: Vec<DslPlan> = plans.into_iter().map(|lf| lf.logical_plan).collect();
        if self.settings.explain {
            eprintln!("{}", LazyFrame::explain_all(plans.clone(), OptFlags::default())?);
        }
        if self.settings.profile {
            profile(name, &plans)?;
        }
        let plan_peaks = self.settings.plan_peaks;
        // One plan after another: each runs in parallel inside, and running them side by
        // side only added up their transient memory (0.6 GB at 100M lines, no time saved).
        // They share no expensive subplan: their inputs are in memory.
        self.timed(name, || {
            plans
                .into_iter()
                .enumerate()
                .map(|(i, plan)| {
                    if plan_peaks {
                        crate::memory::reset_peak();
                    }
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

    pub fn into_stages(self) -> Vec<Stage> {
        self.stages
    }
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

/// The §2 columns of (a slice of) the per-customer aggregates, row by row.
#[derive(Clone)]
struct CustomerColumns(CustomerParams);

impl CustomerColumns {
    fn of(&self, frame: &DataFrame) -> LazyFrame {
        customers::customer_columns(frame.clone().lazy(), &self.0)
    }
}

/// The global numbers later metrics take as parameters.
struct Scalars {
    customers: u64,
    /// SPEC §6: the share of customers whose last purchase is over 365 days old.
    annual_churn_rate: f64,
    /// Days from the latest purchase to as_of.
    latest: i64,
}

fn scalars(columns: &CustomerColumns, aggregates: &DataFrame) -> Result<Scalars> {
    let frame = columns
        .of(aggregates)
        .select([
            col(RECENCY_DAYS)
                .gt(lit(365i64))
                .cast(DataType::Float64)
                .mean()
                .alias("annual_churn_rate"),
            col(RECENCY_DAYS).min().alias("latest"),
        ])
        .collect()?;
    let scalar = |name: &str| frame.column(name).ok().and_then(|c| c.get(0).ok());
    Ok(Scalars {
        customers: aggregates.height() as u64,
        annual_churn_rate: scalar("annual_churn_rate")
            .and_then(|v| v.extract::<f64>())
            .unwrap_or(0.0),
        latest: scalar("latest").and_then(|v| v.extract::<i64>()).unwrap_or(1),
    })
}

/// Warnings about the config and the data, known before any model runs.
fn early_warnings(
    config: &JobConfig,
    columns: &CustomerColumns,
    aggregates: &DataFrame,
    scalars: &Scalars,
    as_of: NaiveDate,
) -> Result<Vec<String>> {
    let mut warnings = rfm::unreachable_segments(&config.rfm.segments, config.rfm.bins);
    warnings.extend(rfm::collapsed_bins(columns.of(aggregates), &config.rfm)?);
    if scalars.latest > 365 {
        warnings.push(format!(
            "as_of {as_of} is {} days after the latest purchase: every customer looks churned; is as_of right?",
            scalars.latest
        ));
    }
    Ok(warnings)
}

/// The model stage's result: fits, per-customer predictions, the holdout check.
struct Models {
    fits: Vec<Fit>,
    /// One row per customer, by key; null columns without a model.
    predictions: DataFrame,
    holdout: Option<holdout::Holdout>,
}

/// SPEC §6's predictive models on the summary, and the holdout validation. A fit
/// failure stops the run, or with `clv.on_fit_failure: skip` leaves the predicted
/// columns null with a warning.
fn models(
    log: &mut StageLog,
    config: &JobConfig,
    summary: &CustomerSummary,
    warnings: &mut Vec<String>,
) -> Result<Models> {
    let (fits, predictions) = match config.clv.model {
        PurchaseModel::None => (Vec::new(), None),
        _ => match log.timed("model", || {
            Ok(model::fit_and_predict(&summary.model_summary, &config.clv))
        })? {
            Ok(outcome) => (outcome.fits, Some(outcome.predictions)),
            Err(failure) if config.clv.on_fit_failure == OnFitFailure::Skip => {
                warnings.push(format!(
                    "{failure}; predicted columns are null (clv.on_fit_failure: skip)"
                ));
                (Vec::new(), None)
            }
            Err(failure) => {
                return Err(Error::Model(format!(
                    "{failure}. Set clv.on_fit_failure: skip to write the other outputs without predictions, or clv.model: none"
                )));
            }
        },
    };
    for fit in &fits {
        tracing::info!(model = %fit.model, log_likelihood = fit.log_likelihood, iterations = fit.iterations, "fitted");
    }
    let holdout = match (&summary.holdout_orders, config.clv.holdout_days) {
        (Some(orders), Some(days)) => {
            match log.timed("holdout", || {
                holdout::validate(orders.clone().lazy(), summary.as_of, days, &config.clv)
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
        None => null_predictions(&summary.model_summary)?,
    };
    Ok(Models {
        fits,
        predictions,
        holdout,
    })
}

/// The revenue ranking (a sort) and the RFM score steps, from a few columns of all
/// customers; then every Pareto table read from the ranking, so that the ranking
/// (24 bytes per customer) is freed before the wide stages.
struct Rankings {
    rfm_steps: DataFrame,
    pareto: DataFrame,
    lorenz: DataFrame,
    pareto_summary: DataFrame,
    abc_boundaries: DataFrame,
}

fn rankings(
    log: &mut StageLog,
    config: &JobConfig,
    base: &DataFrame,
    columns: &CustomerColumns,
    customers: u64,
    execution: Execution,
) -> Result<Rankings> {
    let mut frames = log
        .collect(
            "ranking",
            vec![
                pareto::ranked(base.clone().lazy()),
                rfm::rfm_thresholds(columns.of(base), &config.rfm, customers),
            ],
            execution,
        )?
        .into_iter();
    let ranked = frames.next().unwrap_or_default().lazy();
    let rfm_steps = frames.next().unwrap_or_default();
    let tables = pareto::pareto(ranked.clone(), &config.pareto);
    let plans = vec![
        tables.pareto,
        tables.lorenz,
        tables.summary,
        pareto::abc_boundaries(ranked, base.clone().lazy(), &config.pareto)?,
    ];
    let mut frames = log.collect("pareto", plans, execution)?.into_iter();
    let mut next = || frames.next().unwrap_or_default();
    Ok(Rankings {
        rfm_steps,
        pareto: next(),
        lorenz: next(),
        pareto_summary: next(),
        abc_boundaries: next(),
    })
}

/// Every customer column, row by row from the customer state (aggregates, model
/// summary, predictions) with the global numbers (ABC boundaries, RFM steps,
/// churn) as constants: SPEC §2, §4's scores, §5's class and §6's CLV.
struct CustomerScores {
    columns: CustomerColumns,
    abc_boundaries: DataFrame,
    rfm_steps: DataFrame,
    config: JobConfig,
    annual_churn_rate: f64,
}

impl CustomerScores {
    fn of(&self, frame: &DataFrame) -> Result<LazyFrame> {
        let customers = pareto::with_abc_class(self.columns.of(frame), &self.abc_boundaries)?;
        let customers = rfm::rfm_scores(customers, &self.config.rfm, &self.rfm_steps)?;
        Ok(clv::customer_clv(
            customers,
            &self.config.clv,
            self.config.customers.min_tenure_days,
            self.annual_churn_rate,
        ))
    }
}

/// The customer table a slice at a time, as it is written: each slice's columns
/// are computed from its rows of the customer state, its keys named by their text.
struct CustomerSlicer {
    base: DataFrame,
    scores: Arc<CustomerScores>,
    customer_ids: Series,
    execution: Execution,
}

impl Slicer for CustomerSlicer {
    fn slice(&self, offset: usize, len: usize) -> Result<DataFrame> {
        let part = self.base.slice(offset as i64, len);
        let frame = self
            .scores
            .of(&part)?
            .drop(cols([REVENUE_MICROS]))
            .collect_with_engine(self.execution)?
            .unwrap_single();
        named(frame, &self.customer_ids)
    }
}

/// The frame with its customer keys replaced by their customer_id text.
fn named(mut frame: DataFrame, customer_ids: &Series) -> Result<DataFrame> {
    let keys = frame.column(CUSTOMER_ID)?.u32()?.clone();
    let ids = customer_ids.take(&keys)?;
    frame.replace(CUSTOMER_ID, ids.into_column())?;
    Ok(frame)
}

/// The customer table, and (when it is whole) its scored columns with the keys.
struct CustomerTable {
    table: Table,
    /// The scored columns, computed once, when the table is not sliced.
    whole: Option<DataFrame>,
}

/// Whole, when it is small enough to hold: computed once for the segment tables
/// and the writer. Else made a slice at a time as it is written (bounded memory),
/// at the cost of computing the columns again for each use.
fn customer_table(
    log: &mut StageLog,
    base: &DataFrame,
    scores: &Arc<CustomerScores>,
    customer_ids: Series,
    (sliced, slice_rows): (bool, usize),
    execution: Execution,
) -> Result<CustomerTable> {
    if sliced {
        let slicer = CustomerSlicer {
            base: base.clone(),
            scores: scores.clone(),
            customer_ids,
            execution,
        };
        return Ok(CustomerTable {
            table: Table::sliced(base.height(), slice_rows, slicer),
            whole: None,
        });
    }
    let scored = log
        .collect("scores", vec![scores.of(base)?], execution)?
        .pop()
        .unwrap_or_default();
    let table = Table::Frame(named(scored.drop(REVENUE_MICROS)?, &customer_ids)?);
    Ok(CustomerTable {
        table,
        whole: Some(scored),
    })
}

/// `rfm_segments` and `clv_by_segment`, in one pass over the customers, a slice
/// at a time when the table is sliced (each slice's columns freed before the
/// next): from per-slice exact sums, and clv_by_segment's medians from the three
/// CLV columns stacked, picked by row number.
fn segment_tables(
    log: &mut StageLog,
    config: &JobConfig,
    customers: &CustomerTable,
    (base, scores): (&DataFrame, &CustomerScores),
    slice_rows: usize,
) -> Result<(DataFrame, DataFrame)> {
    log.timed("segments", || {
        let dimensions = &config.clv.segment_by;
        let (mut sums, mut parts, mut values) = (Vec::new(), Vec::new(), Vec::new());
        let mut add = |customers: LazyFrame, first_row: usize| -> Result<()> {
            sums.push(rfm::segment_sums(customers.clone()).collect()?);
            parts.push(clv::dimension_parts(customers.clone(), dimensions, first_row as IdxSize).collect()?);
            values.push(clv::median_values(customers).collect()?);
            Ok(())
        };
        if let Some(whole) = &customers.whole {
            add(whole.clone().lazy(), 0)?;
        } else {
            // One (empty) slice when there are no customers: the tables keep their columns.
            for offset in (0..base.height().max(1)).step_by(slice_rows) {
                let part = scores.of(&base.slice(offset as i64, slice_rows))?.collect()?;
                add(part.lazy(), offset)?;
            }
        }
        let rfm_segments = rfm::rfm_segments(stacked(sums)?.lazy()).collect()?;
        let clv_by_segment = clv::clv_by_segment(stacked(parts)?.lazy(), &stacked(values)?)?.collect()?;
        Ok((rfm_segments, clv_by_segment))
    })
}

/// Runs the whole job on a raw order scan with the in-process engine. `source`
/// names the input in messages.
pub fn compute(raw: LazyFrame, config: &JobConfig, source: &str) -> Result<Computed> {
    run(&InProcess::new(raw, source), config, &Settings::default())
}

/// Runs the whole job: the engine's summary, then the shared stages.
pub fn run(engine: &dyn Engine, config: &JobConfig, settings: &Settings) -> Result<Computed> {
    let mut log = StageLog::new(settings);
    tracing::debug!(engine = engine.name(), "engine");
    let summary = engine.summarise(Job { config, settings }, &mut log)?;
    let execution = match config.engine {
        ExecutionChoice::InMemory => Execution::InMemory,
        ExecutionChoice::Streaming => Execution::Streaming,
    };
    let as_of = summary.as_of;
    let columns = CustomerColumns(CustomerParams {
        as_of,
        min_tenure_days: config.customers.min_tenure_days,
        grain: config.cohorts.grain,
        channels: summary.channels.clone(),
    });
    let cohort_retention = cohort::cohort_retention(
        summary.cohort_activity.clone().lazy(),
        columns.of(&summary.aggregates),
        config.cohorts.grain,
        as_of,
    );
    let upsell = summary
        .upsell
        .clone()
        .map(|upsell| upsell.lazy().select([col("upsell_customers").sum()]));
    let scalars = scalars(&columns, &summary.aggregates)?;
    let mut warnings = early_warnings(config, &columns, &summary.aggregates, &scalars, as_of)?;
    let Models {
        fits,
        predictions,
        holdout,
    } = models(&mut log, config, &summary, &mut warnings)?;
    let CustomerSummary {
        cleaning,
        customer_ids,
        aggregates,
        model_summary,
        ..
    } = summary;
    // The customer state every later stage reads: aggregates, summary, predictions.
    let base = log.timed("model columns", || {
        attach(attach(aggregates, model_summary)?, predictions)
    })?;
    let rankings = rankings(&mut log, config, &base, &columns, scalars.customers, execution)?;
    let scores = Arc::new(CustomerScores {
        columns: columns.clone(),
        abc_boundaries: rankings.abc_boundaries,
        rfm_steps: rankings.rfm_steps,
        config: config.clone(),
        annual_churn_rate: scalars.annual_churn_rate,
    });
    let streaming = config.engine == ExecutionChoice::Streaming;
    let slice_rows = settings.slice_rows_or(SLICE_ROWS);
    let sliced = streaming || base.height() > IN_MEMORY_CUSTOMERS;
    let customers = customer_table(
        &mut log,
        &base,
        &scores,
        customer_ids,
        (sliced, slice_rows),
        execution,
    )?;
    let kpis = kpis::kpis(
        kpis::KpiInputs {
            customers: columns.of(&base),
            pareto_summary: rankings.pareto_summary.lazy(),
            models: fits.clone(),
            holdout: holdout.as_ref().map(|h| h.summary),
            upsell,
        },
        as_of,
        config.kpis.churn_window_days,
    );
    let (rfm_segments, clv_by_segment) =
        segment_tables(&mut log, config, &customers, (&base, &scores), slice_rows)?;
    let plans = vec![
        kpis,
        cohort_retention,
        rankings.pareto.lazy(),
        rankings.lorenz.lazy(),
        holdout.map_or_else(holdout::empty_table, |h| h.table),
    ];
    let mut frames = log.collect("metrics", plans, execution)?.into_iter();
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
    let tables = std::iter::once(customers.table).chain(frames.into_iter().map(Table::Frame));
    Ok(Computed {
        models: fits,
        as_of,
        tables: TABLES.into_iter().zip(tables).collect(),
        cleaning,
        stages: log.into_stages(),
        warnings,
    })
}
