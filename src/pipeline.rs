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
use crate::identity::{Identities, IdentityReport};
use crate::ingest::CleaningStep;
use crate::io::table::{SLICE_ROWS, Slicer, Table, stacked};
use crate::manifest::Stage;
use crate::metrics::actions::{self, ActionCount};
use crate::metrics::customers::{self, CustomerParams};
use crate::metrics::migration::{self, Previous, PreviousSnapshot};
use crate::metrics::nps::{self, SurveyReport, Surveys};
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
/// `has_channel`: whether `input.columns.channel` is mapped; `has_surveys`: whether
/// `input.surveys` is given. Also the optional `nps` and `segment_migration`; each
/// action list's is [`actions::schema`].
pub fn output_schema(table: &str, has_channel: bool, has_surveys: bool) -> Option<Schema> {
    Some(match table {
        schema::customers::TABLE => customers::schema(has_channel, has_surveys),
        nps::TABLE => nps::schema(),
        migration::TABLE => migration::schema(),
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
    /// written (see [`Table`]). Action lists are named `actions/NAME`.
    pub tables: Vec<(String, Table)>,
    pub cleaning: Vec<CleaningStep>,
    pub stages: Vec<Stage>,
    pub warnings: Vec<String>,
    pub identities: Option<IdentityReport>,
    pub surveys: Option<SurveyReport>,
    pub actions: Vec<ActionCount>,
    /// The snapshot `segment_migration` compares with.
    pub compared_to: Option<PreviousSnapshot>,
    /// The back-dated snapshot made on demand for `compare_to: {previous}`: the
    /// caller publishes it as its own output first.
    pub previous_run: Option<Box<Computed>>,
}

/// The inputs beside the order lines, read once before the run.
#[derive(Default)]
pub struct SideInputs {
    pub identities: Option<Identities>,
    pub surveys: Option<Surveys>,
    /// Where `compare_to` points, resolved once as_of is known.
    pub compare_to: Option<CompareTo>,
}

/// `compare_to`, before as_of is known.
#[derive(Clone)]
pub enum CompareTo {
    Dir(std::path::PathBuf),
    /// `{previous}`: the latest earlier `{as_of}` sibling of the output directory,
    /// or (a fixed directory) what it holds now; else made on demand.
    Previous {
        template: String,
        run_date: NaiveDate,
    },
}

impl SideInputs {
    /// Reads the side tables the config names; `run_date` dates `{run_date}` in the
    /// output template for `compare_to: {previous}`.
    pub fn read(config: &JobConfig, run_date: NaiveDate) -> Result<Self> {
        let identities = config
            .input
            .identities
            .as_deref()
            .map(Identities::read)
            .transpose()?;
        let surveys = config
            .input
            .surveys
            .as_deref()
            .map(|path| Surveys::read(path, identities.as_ref()))
            .transpose()?;
        let compare_to = config.compare_to.as_deref().map(|target| match target {
            "{previous}" => CompareTo::Previous {
                template: config.output.dir.clone(),
                run_date,
            },
            dir => CompareTo::Dir(dir.into()),
        });
        Ok(Self {
            identities,
            surveys,
            compare_to,
        })
    }
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

    /// The stages another log timed (run beside this one's), after this one's.
    pub fn absorb(&mut self, other: StageLog) {
        self.stages.extend(other.stages);
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

/// Whether the customers carry their gross margin (`input.columns.cost` or `margin`).
fn has_margin(aggregates: &DataFrame) -> bool {
    aggregates
        .column(crate::schema::internal::GROSS_MARGIN_MICROS)
        .is_ok()
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
    // With per-line margins the model predicts revenue (margin 1); each customer's
    // own margin rate is applied with the other CLV columns.
    let clv = crate::config::ClvConfig {
        margin: if has_margin(&summary.aggregates) {
            1.0
        } else {
            config.clv.margin
        },
        ..config.clv.clone()
    };
    let (fits, predictions) = match config.clv.model {
        PurchaseModel::None => (Vec::new(), None),
        _ => match log.timed("model", || {
            Ok(model::fit_and_predict(&summary.model_summary, &clv))
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
    let holdout = match (&summary.holdout, config.clv.holdout_days) {
        (Some(calibration), Some(days)) => {
            match log.timed("holdout", || {
                holdout::validate(calibration.clone(), summary.as_of, days, &config.clv)
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
    execution: Execution,
) -> Result<Rankings> {
    let scored = rfm::scored_customers(base, &config.rfm)?;
    let mut frames = log
        .collect(
            "ranking",
            vec![
                pareto::ranked(base.clone().lazy()),
                rfm::rfm_thresholds(columns.of(base), &config.rfm, scored),
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
    /// Per-line margins were given: customers carry `__gross_margin_micros`.
    has_margin: bool,
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
            self.has_margin,
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
            .collect_with_engine(self.execution)?
            .unwrap_single();
        named(without_internal(frame), &self.customer_ids)
    }
}

/// The frame without the customer state's internal columns (`__revenue_micros` …).
fn without_internal(frame: DataFrame) -> DataFrame {
    let internal: Vec<PlSmallStr> = frame
        .get_column_names()
        .into_iter()
        .filter(|name| name.starts_with("__"))
        .cloned()
        .collect();
    frame.drop_many(internal)
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
    let table = Table::Frame(named(without_internal(scored.clone()), &customer_ids)?);
    Ok(CustomerTable {
        table,
        whole: Some(scored),
    })
}

/// What the one pass over the scored customers gathers besides the two segment
/// tables, each only when the run asks for it.
struct PassWants<'a> {
    nps: bool,
    actions: &'a [crate::config::ActionRule],
    /// Each customer's (key, segment, revenue micro-units), for segment_migration.
    segments: bool,
    /// The scored columns' names (what an action may test).
    present: Vec<String>,
}

/// The customer pass's tables.
struct CustomerPass {
    rfm_segments: DataFrame,
    clv_by_segment: DataFrame,
    nps: Option<DataFrame>,
    /// Each rule's rows (customer keys), unsorted.
    actions: Vec<DataFrame>,
    segments: Option<DataFrame>,
}

/// `rfm_segments` and `clv_by_segment` (and the NPS counts, the action lists and
/// the segments for migration, when asked), in one pass over the customers, a slice
/// at a time when the table is sliced (each slice's columns freed before the
/// next): from per-slice exact sums, and clv_by_segment's medians from the three
/// CLV columns stacked, picked by row number.
fn customer_pass(
    log: &mut StageLog,
    config: &JobConfig,
    customers: &CustomerTable,
    (base, scores): (&DataFrame, &CustomerScores),
    slice_rows: usize,
    wants: &PassWants,
) -> Result<CustomerPass> {
    log.timed("segments", || {
        let dimensions = &config.clv.segment_by;
        let (mut sums, mut parts, mut values) = (Vec::new(), Vec::new(), Vec::new());
        let (mut nps_parts, mut segments) = (Vec::new(), Vec::new());
        let mut action_rows: Vec<Vec<DataFrame>> = wants.actions.iter().map(|_| Vec::new()).collect();
        let mut add = |frame: &DataFrame, first_row: usize| -> Result<()> {
            let customers = frame.clone().lazy();
            // The parts in one pass ([`crate::engine::segment_pass`]); the plans
            // that define them where a column's type is one it does not read.
            match crate::engine::segment_pass::segment_parts(frame, dimensions, first_row as IdxSize)? {
                Some((segment_sums, dimension_parts)) => {
                    sums.push(segment_sums);
                    parts.push(dimension_parts);
                }
                None => {
                    sums.push(rfm::segment_sums(customers.clone()).collect()?);
                    parts.push(
                        clv::dimension_parts(customers.clone(), dimensions, first_row as IdxSize)
                            .collect()?,
                    );
                }
            }
            values.push(clv::median_values(customers.clone()).collect()?);
            if wants.nps {
                nps_parts.push(nps::nps_parts(customers.clone()).collect()?);
            }
            for (rule, rows) in wants.actions.iter().zip(action_rows.iter_mut()) {
                rows.push(actions::action_rows(customers.clone(), rule, &wants.present).collect()?);
            }
            if wants.segments {
                segments.push(
                    customers
                        .select([col(CUSTOMER_ID), col(schema::rfm::SEGMENT), col(REVENUE_MICROS)])
                        .collect()?,
                );
            }
            Ok(())
        };
        if let Some(whole) = &customers.whole {
            add(whole, 0)?;
        } else {
            // One (empty) slice when there are no customers: the tables keep their columns.
            for offset in (0..base.height().max(1)).step_by(slice_rows) {
                let part = scores.of(&base.slice(offset as i64, slice_rows))?.collect()?;
                add(&part, offset)?;
            }
        }
        let rfm_segments = rfm::rfm_segments(stacked(sums)?.lazy()).collect()?;
        let clv_by_segment = clv::clv_by_segment(stacked(parts)?.lazy(), &stacked(values)?)?.collect()?;
        let nps = if wants.nps {
            Some(nps::nps_table(stacked(nps_parts)?.lazy()).collect()?)
        } else {
            None
        };
        let actions = action_rows
            .into_iter()
            .map(stacked)
            .collect::<PolarsResult<Vec<_>>>()?;
        let segments = if wants.segments {
            Some(stacked(segments)?)
        } else {
            None
        };
        Ok(CustomerPass {
            rfm_segments,
            clv_by_segment,
            nps,
            actions,
            segments,
        })
    })
}

/// The previous snapshot `compare_to` names: read from its directory, or, for
/// `{previous}` without one, made now by running the job as of `compare_days`
/// earlier (returned too, to be published as its own snapshot).
fn previous_snapshot(
    engine: &dyn Engine,
    config: &JobConfig,
    settings: &Settings,
    side: &SideInputs,
    as_of: NaiveDate,
) -> Result<Option<(Previous, Option<Box<Computed>>)>> {
    let Some(target) = &side.compare_to else {
        return Ok(None);
    };
    let identities = side.identities.as_ref();
    let dir = match target {
        CompareTo::Dir(dir) => Some(dir.clone()),
        CompareTo::Previous { template, run_date } => {
            if template.contains("{as_of}") {
                migration::previous_sibling(template, as_of, *run_date)
            } else {
                // A fixed output directory: the output it holds now, if one of ours.
                let dir = crate::io::output::resolve_dir(template, as_of, *run_date);
                migration::snapshot_as_of(&dir).is_some().then_some(dir)
            }
        }
    };
    if let Some(dir) = dir {
        return Ok(Some((Previous::read(&dir, identities)?, None)));
    }
    let back = as_of - chrono::Days::new(config.compare_days as u64);
    tracing::info!(as_of = %back, "no previous snapshot: making one as of compare_days earlier");
    let mut earlier = config.clone();
    earlier.as_of = Some(back);
    earlier.compare_to = None;
    let side_earlier = SideInputs {
        identities: side.identities.clone(),
        surveys: side.surveys.clone(),
        compare_to: None,
    };
    let computed = run_with(engine, &earlier, settings, &side_earlier)?;
    let customers = computed
        .tables
        .iter()
        .find(|(name, _)| name == schema::customers::TABLE)
        .map(|(_, table)| table.collect(Some(&[CUSTOMER_ID, schema::rfm::SEGMENT, schema::REVENUE])))
        .transpose()?
        .unwrap_or_default();
    let previous =
        Previous::from_customers(customers, identities, format!("(made as of {back})"), Some(back))?;
    Ok(Some((previous, Some(Box::new(computed)))))
}

/// Runs the whole job on a raw order scan with the in-process engine. `source`
/// names the input in messages; the side tables the config names are read.
pub fn compute(raw: LazyFrame, config: &JobConfig, source: &str) -> Result<Computed> {
    run(&InProcess::new(raw, source), config, &Settings::default())
}

/// Runs the whole job, reading the side tables the config names.
pub fn run(engine: &dyn Engine, config: &JobConfig, settings: &Settings) -> Result<Computed> {
    let side = SideInputs::read(config, chrono::Utc::now().date_naive())?;
    run_with(engine, config, settings, &side)
}

/// Runs the whole job: the engine's summary, then the shared stages.
pub fn run_with(
    engine: &dyn Engine,
    config: &JobConfig,
    settings: &Settings,
    side: &SideInputs,
) -> Result<Computed> {
    let mut log = StageLog::new(settings);
    tracing::debug!(engine = engine.name(), "engine");
    let job = Job {
        config,
        settings,
        identities: side.identities.as_ref(),
    };
    let summary = engine.summarise(job, &mut log)?;
    let execution = match config.engine {
        ExecutionChoice::InMemory | ExecutionChoice::Spark => Execution::InMemory,
        ExecutionChoice::Streaming => Execution::Streaming,
    };
    let as_of = summary.as_of;
    let previous = previous_snapshot(engine, config, settings, side, as_of)?;
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
        .map(|upsell| upsell.lazy().select([col(customers::UPSELL_CUSTOMERS).sum()]));
    let scalars = scalars(&columns, &summary.aggregates)?;
    let mut warnings = early_warnings(config, &columns, &summary.aggregates, &scalars, as_of)?;
    // The model (its fits run on the thread pool) and the rankings (Polars' own
    // pool) at once: neither reads the other's results, and each alone left part of
    // the two cores idle (the model about a fifth of its time).
    let (models, rankings) = std::thread::scope(|scope| {
        let ranking = scope.spawn(|| {
            let mut ranking_log = StageLog::new(settings);
            let ranked = rankings(&mut ranking_log, config, &summary.aggregates, &columns, execution);
            (ranked, ranking_log)
        });
        let models = models(&mut log, config, &summary, &mut warnings);
        let rankings = ranking.join();
        (models, rankings)
    });
    let (rankings, ranking_log) =
        rankings.map_err(|_| Error::Internal("the ranking thread panicked".into()))?;
    let Models {
        fits,
        predictions,
        holdout,
    } = models?;
    log.absorb(ranking_log);
    let rankings = rankings?;
    let survey_scores = match &side.surveys {
        Some(surveys) => Some(log.timed("surveys", || surveys.latest(&summary.customer_ids, as_of))?),
        None => None,
    };
    let CustomerSummary {
        cleaning,
        customer_ids,
        aggregates,
        model_summary,
        identities,
        period_activity,
        ..
    } = summary;
    let (scores_by_customer, survey_report) = survey_scores.unzip();
    // The customer state every later stage reads: aggregates, summary, predictions
    // (and each customer's latest survey score).
    let base = log.timed("model columns", || {
        let base = attach(attach(aggregates, model_summary)?, predictions)?;
        match scores_by_customer {
            Some(scores) => attach(base, scores),
            None => Ok(base),
        }
    })?;
    let scores = Arc::new(CustomerScores {
        columns: columns.clone(),
        abc_boundaries: rankings.abc_boundaries,
        rfm_steps: rankings.rfm_steps,
        config: config.clone(),
        annual_churn_rate: scalars.annual_churn_rate,
        has_margin: has_margin(&base),
    });
    let streaming = config.engine == ExecutionChoice::Streaming;
    let slice_rows = settings.slice_rows_or(SLICE_ROWS);
    let sliced = streaming || base.height() > IN_MEMORY_CUSTOMERS;
    let customers = customer_table(
        &mut log,
        &base,
        &scores,
        customer_ids.clone(),
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
            period_activity: period_activity
                .lazy()
                .select([col("previous_active").sum(), col("retained").sum()]),
        },
        as_of,
        config.kpis.churn_window_days,
    );
    let present: Vec<String> = scores
        .of(&base.slice(0, 0))?
        .collect_schema()?
        .iter_names()
        .map(|n| n.to_string())
        .collect();
    // An `all` condition on a column the run lacks can never hold (`any` ones may).
    for rule in &config.actions {
        let mut missing: Vec<&str> = rule
            .all
            .iter()
            .map(|c| c.column.as_str())
            .filter(|c| !present.iter().any(|p| p == c))
            .collect();
        missing.dedup();
        for column in missing {
            warnings.push(format!(
                "actions: `{}` tests `{column}`, which this run does not have (no input.surveys or channel column): its list is empty",
                rule.name
            ));
        }
    }
    let wants = PassWants {
        nps: side.surveys.is_some(),
        actions: &config.actions,
        segments: previous.is_some(),
        present,
    };
    let pass = customer_pass(&mut log, config, &customers, (&base, &scores), slice_rows, &wants)?;
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
    // In TABLES order, then the tables the run asks for.
    let frames = [
        kpis,
        cohort_retention,
        pass.rfm_segments,
        pareto_table,
        lorenz,
        pass.clv_by_segment,
        holdout_table,
    ];
    let mut tables: Vec<(String, Table)> = std::iter::once(customers.table)
        .chain(frames.into_iter().map(Table::Frame))
        .zip(TABLES)
        .map(|(table, name)| (name.to_string(), table))
        .collect();
    if let Some(nps_table) = pass.nps {
        tables.push((nps::TABLE.into(), Table::Frame(nps_table)));
    }
    let (compared_to, previous_run) = match (previous, pass.segments) {
        (Some((previous, made)), Some(segments)) => {
            let current = named(segments, &customer_ids)?;
            let table = log
                .collect(
                    "migration",
                    vec![migration::migration(current.lazy(), previous.customers.lazy())],
                    execution,
                )?
                .pop()
                .unwrap_or_default();
            tables.push((migration::TABLE.into(), Table::Frame(table)));
            (Some(previous.snapshot), made)
        }
        _ => (None, None),
    };
    let mut action_counts = Vec::new();
    for (rule, rows) in config.actions.iter().zip(pass.actions) {
        // Sorted while keyed (in key order, which is customer_id order, as `sorted`
        // needs), then named: the sort moves integer keys, not id text.
        let list = named(actions::sorted(rows.lazy()).collect()?, &customer_ids)?;
        let expected = list
            .column(actions::EXPECTED_VALUE)?
            .as_materialized_series()
            .sum::<f64>()
            .unwrap_or(0.0);
        action_counts.push(ActionCount {
            name: rule.name.clone(),
            customers: list.height() as u64,
            expected_value: expected,
        });
        tables.push((actions::table_name(rule), Table::Frame(list)));
    }
    Ok(Computed {
        models: fits,
        as_of,
        tables,
        cleaning,
        stages: log.into_stages(),
        warnings,
        identities,
        surveys: survey_report,
        actions: action_counts,
        compared_to,
        previous_run,
    })
}
