//! The in-process engine: Polars in this process. Two stages:
//! 1. scan and clean: streaming passes over the lines ([`crate::ingest`]; one, or
//!    past a size one per part of the customers) fold SPEC §1 into orders keyed by
//!    dense integer customer keys, with every cleaning count; the lines are never
//!    held in memory, whatever the input's size;
//! 2. customers: a slice of whole customers' orders at a time, the per-customer
//!    aggregates and model summary, and the cohort activity and upsell counts,
//!    which add up over customers (and the holdout's calibration summaries);
//!    the orders are then freed.

use chrono::Days;
use polars::prelude::*;

use super::customer_pass::{CustomerFrames, PassParams, customer_frames};
use super::{CustomerSummary, Engine, Job};
use crate::config::Engine as Execution;
use crate::error::{Error, InputError, Result};
use crate::ingest::{self, CleaningStep, Ingested, Normalised};
use crate::io::input::{self, Inputs};
use crate::io::table::stacked;
use crate::metrics::customers;
use crate::pipeline::StageLog;
use crate::schema;

/// Input lines past which freed memory goes back to the OS at once with the
/// in-memory engine (always with `engine: streaming`). It costs time: the freed
/// pages are faulted in and zeroed again. At 30M lines it cost 12% of the wall time
/// to save 0.23 GiB; at 100M it saves 2 GiB (37% of the peak).
pub const LOW_MEMORY_LINES: usize = 64_000_000;

/// Polars in this process, over one scan of the order lines.
pub struct InProcess {
    raw: LazyFrame,
    /// Names the input in messages.
    source: String,
}

/// Stage 1's result: the cleaned orders and what the rest needs to know of them.
pub(super) struct CleanedOrders {
    pub(super) ingested: Ingested,
    pub(super) as_of: chrono::NaiveDate,
    pub(super) has_channel: bool,
    pub(super) has_category: bool,
}

impl InProcess {
    /// Over a scan of the order lines (tests feed in-memory frames); `source`
    /// names it in messages.
    pub fn new(raw: LazyFrame, source: impl Into<String>) -> Self {
        Self {
            raw,
            source: source.into(),
        }
    }

    /// Over resolved input files, scanned together.
    pub fn over(inputs: &Inputs) -> Result<Self> {
        Ok(Self::new(input::scan(inputs)?, inputs.label()))
    }

    /// An error of the query engine on the data itself (a damaged page, a value
    /// its reader refuses): an input error naming the input, not an internal one.
    fn unreadable(&self, e: PolarsError) -> Error {
        InputError::Unreadable {
            source_label: self.source.clone(),
            reason: e.to_string(),
        }
        .into()
    }

    /// Stage 1: SPEC §1 steps 1–5, folded into orders keyed by integer customer
    /// keys (in customer_id order).
    fn scan_and_clean(&self, job: Job<'_>, log: &mut StageLog) -> Result<CleanedOrders> {
        let config = job.config;
        // The schema of a copy: a plan whose schema was collected is resolved as it
        // stands, and the row numbers added next would stay a step of their own
        // instead of going into the scan, where a filter on them (the rows read again
        // for step 3) skips the other rows undecoded (at 100M lines the whole input
        // was decoded again: 2-4 GB more).
        let schema = log.timed("schema", || {
            self.raw.clone().collect_schema().map_err(|e| self.unreadable(e))
        })?;
        let normalised: Normalised = ingest::normalise(
            self.raw.clone(),
            &schema,
            &config.input,
            config.clv.margin,
            &self.source,
        )?;

        // Past a size, or with `engine: streaming`, memory comes first.
        let input_lines = ingest::input_lines(&normalised);
        let streaming = config.engine == Execution::Streaming;
        if streaming || input_lines > LOW_MEMORY_LINES {
            crate::memory::release_at_once();
        }
        let (ingested, as_of) = log
            .timed("scan and clean", || {
                ingest::ingest(
                    &normalised,
                    &config.cleaning,
                    config.as_of,
                    (input_lines, streaming),
                    job.settings,
                )
            })
            .map_err(|e| match e {
                Error::Polars(e) => self.unreadable(e),
                other => other,
            })?;
        crate::memory::keep_freed();
        tracing::info!(%as_of, "analysis date (exclusive)");
        for step in &ingested.cleaning {
            tracing::info!(step = step.step, name = %step.name, rows_in = step.rows_in, rows_out = step.rows_out, "cleaning");
        }
        if ingested.purchases == 0 {
            return Err(InputError::NothingLeft(nothing_purchased(&ingested.cleaning)).into());
        }
        Ok(CleanedOrders {
            ingested,
            as_of,
            has_channel: normalised.has_channel,
            has_category: normalised.has_category,
        })
    }

    /// The order lines' scan as given, for another engine to type its input alike.
    #[cfg(feature = "spark")]
    pub(super) fn raw(&self) -> &LazyFrame {
        &self.raw
    }
}

/// Stage 2, a slice of customers at a time (all of their orders, in key order): one
/// pass over each customer's orders ([`customer_frames`]) per slice, whose
/// per-customer rows are freed before the next starts. Any engine that makes the
/// cleaned orders hands them on here.
pub(super) fn customers(job: Job<'_>, cleaned: CleanedOrders, log: &mut StageLog) -> Result<CustomerSummary> {
    {
        let config = job.config;
        let CleanedOrders {
            ingested,
            as_of,
            has_channel,
            has_category,
        } = cleaned;
        let Ingested {
            orders: mut order_table,
            mut customer_ids,
            channels,
            cleaning,
            ..
        } = ingested;
        let mut identity_report = None;
        if let Some(identities) = job.identities {
            let merged = log.timed("identities", || identities.rekey(order_table, &customer_ids))?;
            tracing::info!(
                before = merged.report.customers_before,
                after = merged.report.customers_after,
                "customers merged by input.identities"
            );
            (order_table, customer_ids) = (merged.orders, merged.customer_ids);
            identity_report = Some(merged.report);
        }
        let channels = match (has_channel, channels) {
            (false, _) => None,
            (true, Some(labels)) => Some(labels),
            // A mapped channel column with no values: every order's channel is null.
            (true, None) => {
                let nulls = Column::full_null(
                    schema::internal::CHANNEL.into(),
                    order_table.height(),
                    &DataType::UInt32,
                );
                order_table.with_column(nulls)?;
                Some(Series::new_empty("channel_labels".into(), &DataType::String))
            }
        };
        let obs_end = as_of - Days::new(1);
        let window = config.kpis.churn_window_days;
        let wants = customers::AggregateWants {
            channel: channels.is_some(),
            margin: order_table.column(schema::internal::MARGIN).is_ok(),
            rfm_since: config.rfm.window_days.map(|days| as_of - Days::new(days.into())),
            window_start: Some(as_of - Days::new(config.kpis.churn_window_days.into())),
        };
        let holdout_days = config.clv.model_holdout_days();
        let unit_days = config.clv.time_unit.days();
        let params = PassParams {
            wants,
            grain: config.cohorts.grain,
            obs_end,
            unit_days,
            has_category,
        };
        let order_rows = job.settings.slice_rows_or(crate::metrics::ORDER_SLICE_ROWS);
        let (frames, periods, holdout) = log.timed("customers", || {
            // A slice of whole customers at a time: each slice's per-customer rows are
            // freed before the next (at 100M lines, all at once would be 2 GB).
            let (mut aggregates, mut activity, mut upsell, mut summaries, mut holdout) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for slice in crate::metrics::customer_slices(&order_table, order_rows)? {
                let frames = customer_frames(&slice, params)?;
                aggregates.push(frames.aggregates);
                activity.push(frames.cohort_activity);
                upsell.extend(frames.upsell);
                summaries.push(frames.model_summary);
                // The holdout's calibration summaries.
                if let Some(days) = holdout_days {
                    holdout.push(crate::metrics::holdout::calibration(
                        &slice, as_of, days, unit_days,
                    )?);
                }
            }
            let frames = CustomerFrames {
                aggregates: stacked(aggregates)?,
                cohort_activity: stacked(activity)?,
                upsell: has_category.then(|| stacked(upsell)).transpose()?,
                model_summary: stacked(summaries)?,
            };
            let periods =
                customers::period_activity(frames.aggregates.clone().lazy(), as_of, window).collect()?;
            Ok((frames, periods, stacked(holdout)?))
        })?;
        drop(order_table);
        Ok(CustomerSummary {
            as_of,
            cleaning,
            customer_ids,
            aggregates: frames.aggregates,
            model_summary: frames.model_summary,
            cohort_activity: frames.cohort_activity,
            upsell: frames.upsell,
            period_activity: periods,
            channels,
            holdout: holdout_days.map(|_| holdout),
            identities: identity_report,
        })
    }
}

/// Why no purchase is left: the first step that left no rows, else the orders.
pub(super) fn nothing_purchased(cleaning: &[CleaningStep]) -> String {
    cleaning
        .iter()
        .find(|s| s.rows_out == 0)
        .map(|s| format!("step {} ({}) left no rows", s.step, s.name))
        .unwrap_or_else(|| {
            let orders = cleaning.last().map_or(0, |s| s.rows_out);
            format!("{orders} orders, none with value > 0")
        })
}

impl Engine for InProcess {
    fn name(&self) -> &'static str {
        "in-process"
    }

    fn summarise(&self, job: Job<'_>, log: &mut StageLog) -> Result<CustomerSummary> {
        let cleaned = self.scan_and_clean(job, log)?;
        customers(job, cleaned, log)
    }
}
