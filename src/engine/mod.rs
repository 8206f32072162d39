//! The engine seam: where the work that grows with lines, orders and customers runs.
//!
//! An [`Engine`] takes the order lines it was built over (resolved inputs, or a
//! scan) and the job's config, and returns a [`CustomerSummary`]: SPEC §1 (the
//! cleaning and the roll-up to orders) and the per-customer roll-up every later
//! stage starts from, with the cleaning counts the manifest reports. Everything
//! after it (scores, rankings, models, the output tables) is computed from the
//! summary by [`crate::pipeline`], the same whatever the engine.
//!
//! [`InProcess`] is Polars in this process, the line pass streamed through the
//! fold of [`crate::ingest`]. [`Spark`] (cargo feature `spark`) runs the same
//! summary on Apache Spark through Spark Connect and brings back per-customer rows.
//! A second engine implements [`Engine::summarise`] and is held to the same
//! contract by differential tests against the in-process one: every table is
//! compared cell for cell, so the definitions in SPEC.md are not written twice
//! unchecked.

mod customer_pass;
mod in_process;
pub(crate) mod segment_pass;
#[cfg(feature = "spark")]
mod spark;

use chrono::NaiveDate;
use polars::prelude::*;

pub use in_process::InProcess;
#[cfg(feature = "spark")]
pub use spark::Spark;

use crate::config::JobConfig;
use crate::error::Result;
use crate::identity::{Identities, IdentityReport};
use crate::ingest::CleaningStep;
use crate::metrics::customers::AggregateWants;
use crate::pipeline::StageLog;
use crate::schema::internal::{
    CATEGORY_MAX, CATEGORY_MIN, CHANNEL, CUSTOMER_ID, MARGIN, ORDER_DATE, ORDER_RANK, VALUE,
};
use crate::settings::Settings;

/// What every engine is given besides its input: the config, and the run's settings.
#[derive(Clone, Copy)]
pub struct Job<'a> {
    pub config: &'a JobConfig,
    pub settings: &'a Settings,
    /// `input.identities`, resolved: customers are merged to canonical ids after
    /// the roll-up to orders.
    pub identities: Option<&'a Identities>,
}

/// The per-customer state every later stage reads. Customers are dense `UInt32`
/// keys (`__customer_id`) numbered in customer_id text order, so sorting by key
/// sorts by id; every frame is one row per customer with a purchase, sorted by key,
/// unless said otherwise.
pub struct CustomerSummary {
    /// The analysis date in force (exclusive): configured, or the day after the
    /// latest valid line.
    pub as_of: NaiveDate,
    /// SPEC §1's steps with their row counts and drop reasons, in order.
    pub cleaning: Vec<CleaningStep>,
    /// customer_id text by customer key.
    pub customer_ids: Series,
    /// [`crate::metrics::customers::customer_aggregates`]: the SPEC §2 inputs.
    pub aggregates: DataFrame,
    /// [`crate::model::summary::summary_frame`]: (x, t_x, T, m̄) per customer.
    pub model_summary: DataFrame,
    /// [`crate::metrics::cohort::cohort_activity`]: customers active per cohort
    /// and period, summed over customers.
    pub cohort_activity: DataFrame,
    /// [`crate::metrics::customers::upsell_customers`] per customer slice; `None`
    /// without a category column.
    pub upsell: Option<DataFrame>,
    /// [`crate::metrics::customers::period_activity`] per customer slice, over
    /// `kpis.churn_window_days` windows.
    pub period_activity: DataFrame,
    /// Channel text by channel number, when a channel column is mapped.
    pub channels: Option<Series>,
    /// [`crate::metrics::holdout::calibration`] per customer slice, only when a
    /// model and `clv.holdout_days` ask for the holdout validation.
    pub holdout: Option<DataFrame>,
    /// What the identity merge did, with `input.identities`.
    pub identities: Option<IdentityReport>,
}

/// An engine: SPEC §1 and the per-customer roll-up over its input.
pub trait Engine {
    /// Names the engine in logs.
    fn name(&self) -> &'static str;

    /// Cleans the lines, rolls them up to orders and customers. Timed stages go to
    /// `log`; an input that does not clean to a purchase is an input error.
    fn summarise(&self, job: Job<'_>, log: &mut StageLog) -> Result<CustomerSummary>;
}

/// An empty order table typed as the fold makes it, whose plans give the schemas
/// the frames an engine makes by other means are shaped to.
pub(crate) fn empty_orders(wants: &AggregateWants, has_category: bool) -> DataFrame {
    let mut columns = vec![
        Column::new_empty(CUSTOMER_ID.into(), &DataType::UInt32),
        Column::new_empty(ORDER_RANK.into(), &DataType::UInt32),
        Column::new_empty(ORDER_DATE.into(), &DataType::Date),
        Column::new_empty(VALUE.into(), &DataType::Int128),
    ];
    if wants.margin {
        columns.push(Column::new_empty(MARGIN.into(), &DataType::Int128));
    }
    if wants.channel {
        columns.push(Column::new_empty(CHANNEL.into(), &DataType::UInt32));
    }
    if has_category {
        columns.push(Column::new_empty(CATEGORY_MIN.into(), &DataType::UInt32));
        columns.push(Column::new_empty(CATEGORY_MAX.into(), &DataType::UInt32));
    }
    DataFrame::new_infer_height(columns).unwrap_or_default()
}

/// `frame`'s columns named in `schema`, in its order and of its types.
pub(crate) fn conformed(frame: &DataFrame, schema: &Schema) -> Result<DataFrame> {
    let columns = schema
        .iter()
        .map(|(name, dtype)| frame.column(name)?.cast(dtype))
        .collect::<PolarsResult<Vec<_>>>()?;
    Ok(DataFrame::new_infer_height(columns)?)
}
