//! The Spark engine (`engine: spark`, cargo feature `spark`): what grows with
//! lines and orders runs on Apache Spark through Spark Connect, and only one row
//! per customer and one per cohort cell come back (as Arrow IPC, read by Polars):
//! 1. SPEC §1 over the lines, in SQL generated from the config and from the
//!    input's schema as Polars types it ([`crate::ingest::normalise`] runs first,
//!    so a wrong or missing column is the same error as in process), rolled up to
//!    an order table cached on the cluster;
//! 2. per customer: the sums and dates of the in-process aggregates
//!    ([`crate::metrics::customers::customer_aggregates`]), the purchase days the
//!    model summary is made of ([`crate::model::summary::PurchaseDays`]), upsell and
//!    the holdout's calibration; per cohort × period cell, the cohort activity.
//!
//! Here the rows are numbered, typed and shaped to the in-process frames' schemas
//! (taken from the in-process plans themselves), and everything after (scores,
//! ranks, models, tables) is the shared pipeline. The SQL is a second copy of
//! those definitions, so it is held to the in-process engine by differential
//! tests (`tests/it/spark.rs`): same cleaning counts, same tables cell for cell.
//! With `input.identities` the orders come back instead and the in-process stage
//! merges and aggregates them ([`super::in_process::customers`]).
//!
//! Read in this version: Parquet inputs; `order_date` as a date or a timestamp
//! (micro- or milliseconds); amounts, quantities, costs and margins as floats,
//! integers or decimals (a decimal only without `amount_is_unit_price`); string or
//! integer ids; channels, categories, `exclude`, `returns` and `dedupe`. Anything
//! else is a config error naming the key.

use std::io::Cursor;

use chrono::Days;
use polars::prelude::*;
use polars::series::IsSorted;
use spark_connect::SparkSession;
use spark_connect::session::SparkSessionBuilder;

use super::in_process::{self, CleanedOrders, InProcess};
use super::{CustomerSummary, Engine, Job, conformed, empty_orders};
use crate::config::{ConfigIssue, ExcludeRule, Grain, JobConfig, Matcher, Returns, SparkConfig};
use crate::error::{Error, InputError, Result};
use crate::ingest::{self, Ingested, StepCounts, plan};
use crate::io::input::Inputs;
use crate::metrics::{cohort, customers};
use crate::model::summary;
use crate::pipeline::StageLog;
use crate::schema::customers::{FIRST_ORDER_DATE, LAST_ORDER_DATE};
use crate::schema::internal::{
    CATEGORY_MAX, CATEGORY_MIN, CHANNEL, CUSTOMER_ID, MARGIN, ORDER_DATE, ORDER_RANK, VALUE,
};

/// A Spark Connect session over the resolved input files.
pub struct Spark {
    session: SparkSession,
    remote: String,
    /// The files and their hive partitions, as the resolver listed them.
    files: Vec<(String, Vec<(String, String)>)>,
    /// The same input scanned by Polars, for its schema and typing rules.
    local: InProcess,
}

/// Whether `sc://host:port` accepts a TCP connection within 10 s.
fn reachable(remote: &str) -> std::result::Result<(), String> {
    use std::net::ToSocketAddrs;
    let authority = remote
        .trim_start_matches("sc://")
        .split(['/', ';'])
        .next()
        .unwrap_or_default();
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:15002")
    };
    let addresses = authority
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?;
    let mut last = format!("{authority}: no address");
    for address in addresses {
        match std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(10)) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("{address}: {e}"),
        }
    }
    Err(last)
}

/// A Spark SQL identifier.
fn quoted(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A Spark SQL string literal.
fn text(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn unsupported(key: &str, what: String) -> Error {
    Error::Config(vec![ConfigIssue {
        location: key.into(),
        message: format!(
            "{what} is not supported with `engine: spark` yet; use the in-process engine (engine: in_memory)"
        ),
    }])
}

impl Spark {
    /// Connects to `spark.remote` and sets the session's configuration.
    pub fn connect(config: &SparkConfig, inputs: &Inputs) -> Result<Self> {
        let remote = config.remote.clone().unwrap_or_default();
        let mut url = remote.trim_end_matches('/').to_string();
        let mut params = Vec::new();
        if let Some(token) = &config.token {
            params.push(format!("token={token}"));
        }
        if config.use_ssl {
            params.push("use_ssl=true".into());
        }
        if !params.is_empty() {
            url = format!("{url}/;{}", params.join(";"));
        }
        let unreachable = |e: String| InputError::Unreachable {
            url: remote.clone(),
            cause: format!("cannot connect to Spark Connect: {e}"),
        };
        // A plain TCP connect first: the client retries a refused connection for
        // minutes before it gives up.
        reachable(&remote).map_err(unreachable)?;
        let session = SparkSessionBuilder::new()
            .remote(&url)
            .get_or_create()
            .map_err(|e| unreachable(e.to_string()))?;
        let conf = session.conf();
        // Days are calendar days in UTC, as in process.
        conf.set("spark.sql.session.timeZone", "UTC")
            .map_err(|e| unreachable(e.to_string()))?;
        for (key, value) in &config.conf.0 {
            conf.set(key, value)
                .map_err(|e| unreachable(format!("spark.conf.{key}: {e}")))?;
        }
        Ok(Spark {
            session,
            remote,
            files: inputs
                .files
                .iter()
                .map(|f| (f.path.clone(), f.partitions.clone()))
                .collect(),
            local: InProcess::over(inputs)?,
        })
    }

    fn failed(&self, what: &str) -> impl Fn(spark_connect::SparkError) -> Error + '_ {
        let what = what.to_string();
        move |e| {
            InputError::Unreadable {
                source_label: self.remote.clone(),
                reason: format!("{what}: {}", e.to_string().lines().next().unwrap_or_default()),
            }
            .into()
        }
    }

    fn view(&self, name: &str, sql: &str) -> Result<()> {
        tracing::debug!(view = name, sql, "spark");
        let frame = self.session.sql(sql).map_err(self.failed(name))?;
        frame.create_or_replace_temp_view(name).map_err(self.failed(name))
    }

    /// Runs a statement for its effect.
    fn run(&self, sql: &str) -> Result<()> {
        tracing::debug!(sql, "spark");
        let frame = self.session.sql(sql).map_err(self.failed(sql))?;
        frame.collect().map_err(self.failed(sql))?;
        Ok(())
    }

    /// A query's result, read by Polars from Arrow IPC.
    fn frame(&self, what: &str, sql: &str) -> Result<DataFrame> {
        tracing::debug!(query = what, sql, "spark");
        let frame = self.session.sql(sql).map_err(self.failed(what))?;
        let bytes = frame.to_arrow().map_err(self.failed(what))?;
        Ok(IpcReader::new(Cursor::new(bytes)).finish()?)
    }

    /// SPEC §1 on Spark: the cleaned orders, as the in-process fold makes them.
    fn clean(&self, job: Job<'_>) -> Result<Cleaned> {
        let config = job.config;
        let schema = self.local.raw().clone().collect_schema()?;
        // The same typing checks as in process: missing columns, wrong types.
        let normalised = ingest::normalise(
            self.local.raw().clone(),
            &schema,
            &config.input,
            config.clv.margin,
            "input",
        )?;
        let reasons = plan::line_plan(&normalised, &config.cleaning).reasons;
        let typed = typed_columns(config, &schema)?;

        let raw_sql = self
            .files
            .iter()
            .map(|(path, partitions)| {
                let literals: String = partitions
                    .iter()
                    .filter(|(key, _)| schema.contains(key))
                    .map(|(key, _)| {
                        let dtype = schema.get(key).cloned().unwrap_or(DataType::String);
                        let value = partitions
                            .iter()
                            .find(|(k, _)| k == key)
                            .map(|(_, v)| v.as_str())
                            .unwrap_or("");
                        let literal = match dtype {
                            // As the in-process scan types them (`partition_value`).
                            _ if crate::io::input::is_null_partition(value) => "NULL".to_string(),
                            DataType::Int64 | DataType::Float64 => value.to_string(),
                            DataType::Date => format!("DATE {}", text(value)),
                            _ => text(value),
                        };
                        format!(", {literal} AS {}", quoted(key))
                    })
                    .collect();
                format!("SELECT *{literals} FROM parquet.{}", quoted(path))
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        self.view("loyalty_raw", &raw_sql)?;
        // The lines, typed, hashed by customer once (every later step groups by the
        // customer and more: the distinct lines, the orders, the windows over a
        // customer's orders, the customers, so none shuffles again), and with
        // `dedupe` each distinct line once with its multiplicity `__n`: exact
        // duplicates share their typed columns, so steps 1 and 2 count `__n` and
        // step 3 drops `__n − 1`. Cached: every count and the roll-up read it.
        let lines = format!("SELECT *, {typed} FROM loyalty_raw DISTRIBUTE BY __cid");
        let lines = if config.cleaning.dedupe {
            format!("SELECT *, COUNT(*) AS __n FROM ({lines}) GROUP BY ALL")
        } else {
            format!("SELECT *, 1 AS __n FROM ({lines})")
        };
        self.run(&format!("CACHE TABLE loyalty_lines AS {lines}"))?;
        let present =
            "__cid IS NOT NULL AND __oid IS NOT NULL AND __date IS NOT NULL AND __value IS NOT NULL";
        let after = match config.as_of {
            Some(as_of) => format!("{present} AND __date >= {}", date_sql(as_of)),
            // The day after the latest valid line: none is on or after it.
            None => "false".into(),
        };
        let counts = self.frame(
            "counts",
            &format!(
                "SELECT COALESCE(SUM(__n), 0) AS rows,
                    SUM(CASE WHEN __cid IS NULL THEN __n ELSE 0 END) AS null_customer,
                    SUM(CASE WHEN __cid IS NOT NULL AND __oid IS NULL THEN __n ELSE 0 END) AS null_order,
                    SUM(CASE WHEN __cid IS NOT NULL AND __oid IS NOT NULL AND __date IS NULL THEN __n ELSE 0 END) AS null_date,
                    SUM(CASE WHEN __cid IS NOT NULL AND __oid IS NOT NULL AND __date IS NOT NULL AND __value IS NULL THEN __n ELSE 0 END) AS null_value,
                    SUM(CASE WHEN {present} THEN __n ELSE 0 END) AS present,
                    SUM(CASE WHEN {present} THEN 1 ELSE 0 END) AS present_distinct,
                    SUM(CASE WHEN {after} THEN __n ELSE 0 END) AS after_as_of,
                    SUM(CASE WHEN {after} THEN 1 ELSE 0 END) AS after_distinct,
                    MAX(CASE WHEN {present} THEN __date END) AS latest
                 FROM loyalty_lines"
            ),
        )?;
        let number = |name: &str| count(&counts, name);
        let as_of = match config.as_of {
            Some(as_of) => as_of,
            None => {
                let day = counts.column("latest")?.cast(&DataType::Int32)?.i32()?.get(0);
                let day = day.ok_or_else(|| {
                    InputError::NothingLeft(
                        "no row has a customer_id, order_id, order_date and amount".into(),
                    )
                })?;
                crate::dates::from_epoch_days(day) + Days::new(1)
            }
        };
        let in_window_sql = format!("{present} AND __date < {}", date_sql(as_of));
        let verdict = verdict_sql(config);
        let verdicts = self.frame(
            "step 4",
            &format!(
                "SELECT {verdict} AS __verdict, COUNT(*) AS lines FROM loyalty_lines WHERE {in_window_sql} GROUP BY 1"
            ),
        )?;
        let mut dropped = vec![0u64; reasons.len()];
        let mut kept_lines = 0u64;
        for (verdict, lines) in verdicts
            .column("__verdict")?
            .cast(&DataType::Int64)?
            .i64()?
            .iter()
            .zip(verdicts.column("lines")?.cast(&DataType::Int64)?.i64()?.iter())
        {
            match (verdict.unwrap_or(0), lines.unwrap_or(0) as u64) {
                (0, n) => kept_lines += n,
                (v, n) => dropped[v as usize - 1] += n,
            }
        }
        let in_window = number("present")? - number("after_as_of")?;
        let after_dedupe = number("present_distinct")? - number("after_distinct")?;
        debug_assert_eq!(after_dedupe, kept_lines + dropped.iter().sum::<u64>());
        let has_channel = normalised.has_channel;
        let has_category = normalised.has_category;
        let has_margin = config.input.columns.line_margin().is_some();
        let margin = if has_margin {
            "SUM(CAST(__margin AS DECIMAL(38, 0)))"
        } else {
            "CAST(NULL AS DECIMAL(38, 0))"
        };
        let channel = if has_channel {
            "MIN(__channel)"
        } else {
            "CAST(NULL AS STRING)"
        };
        let (category_min, category_max) = if has_category {
            (
                "MIN(CASE WHEN __value > 0 THEN __category END)",
                "MAX(CASE WHEN __value > 0 THEN __category END)",
            )
        } else {
            ("CAST(NULL AS STRING)", "CAST(NULL AS STRING)")
        };
        // Step 5: orders, key (customer_id, order_id), cached for the customer stage,
        // each with its customer's first purchase day and whether it is the first
        // purchase (by order_id) of its customer and day: the purchase days the model
        // summary counts, without a distinct count per window.
        self.run(&format!(
            "CACHE TABLE loyalty_orders AS
             SELECT *,
                MIN(CASE WHEN __micros > 0 THEN __day END) OVER (PARTITION BY __cid) AS __first_purchase,
                CASE WHEN __micros > 0 AND ROW_NUMBER() OVER (PARTITION BY __cid, __day, __micros > 0 ORDER BY __oid) = 1
                    THEN 1 ELSE 0 END AS __new_day
             FROM (
                SELECT __cid, __oid, MIN(__date) AS __day, SUM(CAST(__value AS DECIMAL(38, 0))) AS __micros,
                    {margin} AS __margin_micros, {channel} AS __first_channel, {category_min} AS __cat_min, {category_max} AS __cat_max
                FROM loyalty_lines WHERE {in_window_sql} AND {verdict} = 0 GROUP BY __cid, __oid
             )"
        ))?;
        self.run("UNCACHE TABLE IF EXISTS loyalty_lines")?;
        let totals = self.frame(
            "orders",
            "SELECT COUNT(*) AS orders, COALESCE(SUM(CASE WHEN __micros > 0 THEN 1 ELSE 0 END), 0) AS purchases
             FROM loyalty_orders",
        )?;
        let total = |name: &str| count(&totals, name);
        let counts = StepCounts {
            rows: number("rows")?,
            null_customer: number("null_customer")?,
            null_order: number("null_order")?,
            null_date: number("null_date")?,
            null_value: number("null_value")?,
            after_as_of: number("after_as_of")?,
            in_window,
            duplicates: in_window - after_dedupe,
            dropped,
            orders: total("orders")?,
            purchases: total("purchases")?,
        };
        let cleaning = ingest::cleaning_report(&counts, &reasons);
        if counts.purchases == 0 {
            return Err(InputError::NothingLeft(in_process::nothing_purchased(&cleaning)).into());
        }
        Ok(Cleaned {
            as_of,
            cleaning,
            purchases: counts.purchases,
            has_channel,
            has_category,
            has_margin,
        })
    }

    /// The cached orders brought back, for the in-process customer stage (with
    /// `input.identities`, whose merge runs here).
    fn orders_back(&self, cleaned: Cleaned) -> Result<CleanedOrders> {
        let orders = self.frame(
            "orders",
            "SELECT __cid, __oid, __day, __micros, __margin_micros, __first_channel, __cat_min, __cat_max
             FROM loyalty_orders",
        )?;
        Ok(CleanedOrders {
            ingested: ingested(
                orders,
                (cleaned.has_channel, cleaned.has_category, cleaned.has_margin),
                cleaned.cleaning,
                cleaned.purchases,
            )?,
            as_of: cleaned.as_of,
            has_channel: cleaned.has_channel,
            has_category: cleaned.has_category,
        })
    }

    /// The per-customer stage on Spark: one row per customer and one per cohort
    /// cell come back, never the orders. Spark sums and counts per customer (the
    /// SQL of [`customer_sql`]); the columns are then typed and shaped here as the
    /// in-process stage's are, and the model summaries are made by the same
    /// [`summary::PurchaseDays`] arithmetic.
    fn customers(&self, job: Job<'_>, cleaned: Cleaned) -> Result<CustomerSummary> {
        let config = job.config;
        let as_of = cleaned.as_of;
        let wants = customers::AggregateWants {
            channel: cleaned.has_channel,
            margin: cleaned.has_margin,
            rfm_since: config.rfm.window_days.map(|days| as_of - Days::new(days.into())),
            window_start: Some(as_of - Days::new(config.kpis.churn_window_days.into())),
        };
        let holdout_cut = config
            .clv
            .model_holdout_days()
            .map(|days| as_of - Days::new(days.into()));
        let sql = customer_sql(wants, cleaned.has_category, holdout_cut);
        let rows = self.frame("customers", &sql)?;
        let rows = rows.sort(["__cid"], SortMultipleOptions::default())?;
        // Keys in customer_id text order, every customer with an order numbered, as
        // the fold numbers them.
        let mut key = UInt32Chunked::from_vec(
            crate::schema::CUSTOMER_ID.into(),
            (0..rows.height() as u32).collect(),
        );
        key.set_sorted_flag(IsSorted::Ascending);
        let customer_ids = rows
            .column("__cid")?
            .as_materialized_series()
            .clone()
            .with_name(CUSTOMER_ID.into());
        let mut rows = rows;
        rows.with_column(key.into_column())?;
        let purchasers = rows
            .lazy()
            .filter(col(crate::schema::ORDERS).gt(lit(0i64)))
            .collect()?;

        let channels = if cleaned.has_channel {
            let labels = self.frame(
                "channels",
                "SELECT DISTINCT __first_channel AS label FROM loyalty_orders WHERE __first_channel IS NOT NULL",
            )?;
            let labels = labels
                .column("label")?
                .as_materialized_series()
                .sort(SortOptions::default())?
                .with_name("channel_labels".into());
            Some(labels)
        } else {
            None
        };
        let mut shaped = purchasers.clone();
        if let Some(labels) = &channels {
            let numbers = number_of(labels, purchasers.column("__channel_text")?, CHANNEL)?;
            shaped.with_column(numbers.with_name(crate::schema::customers::CHANNEL.into()))?;
        }
        // The in-process plans over no orders give the schemas to shape to.
        let no_orders = empty_orders(&wants, cleaned.has_category);
        let aggregates = conformed(
            &shaped,
            customers::customer_aggregates(no_orders.clone().lazy(), wants)
                .collect_schema()?
                .as_ref(),
        )?;

        let obs_end = crate::dates::epoch_days(as_of - Days::new(1));
        let unit_days = config.clv.time_unit.days();
        let days = purchase_days(&purchasers, LAST_ORDER_DATE, "__days", "__purchased")?;
        let summaries: Vec<[f64; 4]> = days.iter().map(|d| d.summary(obs_end, unit_days)).collect();
        let keys = purchasers.column(crate::schema::CUSTOMER_ID)?.clone();
        let model_summary = summary::summary_columns(keys, &summaries)?;

        let holdout = match holdout_cut {
            Some(cut) => {
                let calibrated = purchasers
                    .clone()
                    .lazy()
                    .filter(col(FIRST_ORDER_DATE).lt(lit(cut)))
                    .collect()?;
                let cut_end = crate::dates::epoch_days(cut - Days::new(1));
                let rows: Vec<[f64; 4]> =
                    purchase_days(&calibrated, "__cal_last", "__cal_days", "__cal_purchased")?
                        .iter()
                        .map(|d| d.summary(cut_end, unit_days))
                        .collect();
                let mut frame =
                    summary::summary_columns(calibrated.column(crate::schema::CUSTOMER_ID)?.clone(), &rows)?;
                frame.with_column(
                    calibrated
                        .column("__actual")?
                        .cast(&DataType::Float64)?
                        .with_name(crate::schema::holdout::ACTUAL.into()),
                )?;
                Some(frame)
            }
            None => None,
        };

        let upsell = if cleaned.has_category {
            let upsell = purchasers.column("__upsell")?.cast(&DataType::Int64)?;
            let total = upsell.i64()?.sum().unwrap_or(0);
            Some(df!(customers::UPSELL_CUSTOMERS => [total])?)
        } else {
            None
        };
        let grain = config.cohorts.grain;
        let activity = self.frame("cohort activity", &cohort_sql(grain))?;
        let cohort_activity = conformed(
            &activity,
            cohort::cohort_activity(no_orders.lazy(), grain)
                .collect_schema()?
                .as_ref(),
        )?;
        let period_activity =
            customers::period_activity(aggregates.clone().lazy(), as_of, config.kpis.churn_window_days)
                .collect()?;
        Ok(CustomerSummary {
            as_of,
            cleaning: cleaned.cleaning,
            customer_ids,
            aggregates,
            model_summary,
            cohort_activity,
            upsell,
            period_activity,
            channels,
            holdout,
            identities: None,
        })
    }
}

/// The count in column `name` of a one-row result (0 when null).
fn count(frame: &DataFrame, name: &str) -> Result<u64> {
    Ok(frame
        .column(name)?
        .cast(&DataType::Int64)?
        .i64()?
        .get(0)
        .unwrap_or(0) as u64)
}

/// What SPEC §1 on Spark leaves: the order table `loyalty_orders` is cached there.
struct Cleaned {
    as_of: chrono::NaiveDate,
    cleaning: Vec<crate::ingest::CleaningStep>,
    purchases: u64,
    has_channel: bool,
    has_category: bool,
    has_margin: bool,
}

/// A SQL date literal.
fn date_sql(date: chrono::NaiveDate) -> String {
    format!("DATE {}", text(&date.to_string()))
}

/// One row per customer with an order (from `loyalty_orders`), named for the
/// in-process aggregates ([`customers::customer_aggregates`]) where they are
/// theirs, plus what the model summary ([`summary::PurchaseDays`]), upsell and
/// holdout need. A purchase is an order of value > 0; sums of money are
/// DECIMAL(38, 0) micro-units, which Spark refuses rather than wraps.
fn customer_sql(
    wants: customers::AggregateWants,
    has_category: bool,
    holdout_cut: Option<chrono::NaiveDate>,
) -> String {
    use crate::schema::internal::{
        BEFORE_WINDOW_LAST, FIRST_ORDER_MICROS, GROSS_MARGIN_MICROS, REVENUE_MICROS, RFM_ORDERS,
        RFM_REVENUE_MICROS,
    };
    let p = "__micros > 0";
    // The first purchase by (date, order_id), as `min_by` over the fold's key.
    let first_purchase = format!("CASE WHEN {p} THEN struct(__day, __oid) END");
    let mut columns = vec![
        "__cid".to_string(),
        format!("MIN(__first_purchase) AS {}", quoted(FIRST_ORDER_DATE)),
        format!("MAX(CASE WHEN {p} THEN __day END) AS {}", quoted(LAST_ORDER_DATE)),
        format!(
            "SUM(CASE WHEN {p} THEN 1 ELSE 0 END) AS {}",
            quoted(crate::schema::ORDERS)
        ),
        format!("SUM(__micros) AS {}", quoted(REVENUE_MICROS)),
        format!(
            "min_by(__micros, {first_purchase}) AS {}",
            quoted(FIRST_ORDER_MICROS)
        ),
        "SUM(__new_day) AS __days".to_string(),
        format!("SUM(CASE WHEN {p} THEN __micros ELSE 0 END) AS __purchased"),
        format!("SUM(CASE WHEN {p} AND __day = __first_purchase THEN __micros ELSE 0 END) AS __first_day"),
    ];
    if wants.margin {
        columns.push(format!("SUM(__margin_micros) AS {}", quoted(GROSS_MARGIN_MICROS)));
    }
    if wants.channel {
        columns.push(format!(
            "min_by(__first_channel, {first_purchase}) AS __channel_text"
        ));
    }
    if let Some(start) = wants.window_start {
        columns.push(format!(
            "MAX(CASE WHEN {p} AND __day < {} THEN __day END) AS {}",
            date_sql(start),
            quoted(BEFORE_WINDOW_LAST)
        ));
    }
    if let Some(since) = wants.rfm_since {
        let since = date_sql(since);
        columns.push(format!(
            "SUM(CASE WHEN {p} AND __day >= {since} THEN 1 ELSE 0 END) AS {}",
            quoted(RFM_ORDERS)
        ));
        columns.push(format!(
            "SUM(CASE WHEN __day >= {since} THEN __micros ELSE 0 END) AS {}",
            quoted(RFM_REVENUE_MICROS)
        ));
    }
    if has_category {
        // Two distinct categories among the purchases' positive lines (SPEC §7).
        columns.push(format!(
            "CASE WHEN MIN(CASE WHEN {p} THEN __cat_min END) <> MAX(CASE WHEN {p} THEN __cat_max END) \
             THEN 1 ELSE 0 END AS __upsell"
        ));
    }
    if let Some(cut) = holdout_cut {
        let cut = date_sql(cut);
        columns.push(format!(
            "MAX(CASE WHEN {p} AND __day < {cut} THEN __day END) AS __cal_last"
        ));
        columns.push(format!(
            "SUM(CASE WHEN __day < {cut} THEN __new_day ELSE 0 END) AS __cal_days"
        ));
        columns.push(format!(
            "SUM(CASE WHEN {p} AND __day < {cut} THEN __micros ELSE 0 END) AS __cal_purchased"
        ));
        columns.push(format!(
            "SUM(CASE WHEN __day >= {cut} THEN __new_day ELSE 0 END) AS __actual"
        ));
    }
    format!("SELECT {} FROM loyalty_orders GROUP BY __cid", columns.join(", "))
}

/// [`crate::metrics::cohort::period_number`] in SQL.
fn period_sql(date: &str, grain: Grain) -> String {
    match grain {
        Grain::Month => format!("(YEAR({date}) * 12 + MONTH({date}) - 1)"),
        Grain::Quarter => format!("(YEAR({date}) * 4 + (MONTH({date}) - 1) DIV 3)"),
        Grain::Week => format!("FLOOR((DATEDIFF({date}, DATE '1970-01-01') + 3) / 7)"),
    }
}

/// [`crate::metrics::cohort::cohort_activity`] in SQL: per cohort × period cell,
/// the orders from each customer's first purchase on.
fn cohort_sql(grain: Grain) -> String {
    use crate::schema::cohort::ACTIVE_CUSTOMERS;
    let cohort = period_sql("__first_purchase", grain);
    let period = period_sql("__day", grain);
    format!(
        "SELECT CAST({cohort} AS BIGINT) * 16777216 + (CAST({period} AS BIGINT) - CAST({cohort} AS BIGINT)) AS __cell,
            COUNT(DISTINCT CASE WHEN __micros > 0 THEN __cid END) AS {active},
            SUM(CASE WHEN __micros > 0 THEN 1 ELSE 0 END) AS {orders},
            SUM(__micros) AS __revenue_micros
         FROM loyalty_orders WHERE __day >= __first_purchase GROUP BY 1",
        active = quoted(ACTIVE_CUSTOMERS),
        orders = quoted(crate::schema::ORDERS),
    )
}

/// The purchase days of each row of `rows` (purchasers): first purchase
/// `first_order_date` and first day's value `__first_day`, with the named last
/// day, purchase-day count and purchased value.
fn purchase_days(
    rows: &DataFrame,
    last: &str,
    days: &str,
    purchased: &str,
) -> Result<Vec<summary::PurchaseDays>> {
    let day = |name: &str| -> Result<Int32Chunked> {
        Ok(rows.column(name)?.cast(&DataType::Int32)?.i32()?.clone())
    };
    let money = |name: &str| -> Result<Int128Chunked> {
        Ok(rows.column(name)?.cast(&DataType::Int128)?.i128()?.clone())
    };
    let day_counts = rows.column(days)?.cast(&DataType::Int64)?;
    let (first, last, day_counts) = (day(FIRST_ORDER_DATE)?, day(last)?, day_counts.i64()?.clone());
    let (first_day, purchased) = (money("__first_day")?, money(purchased)?);
    Ok((0..rows.height())
        .map(|i| summary::PurchaseDays {
            first: first.get(i).unwrap_or_default(),
            last: last.get(i).unwrap_or_default(),
            repeat_days: day_counts.get(i).unwrap_or(1).saturating_sub(1) as u64,
            first_day_value: first_day.get(i).unwrap_or_default(),
            total: purchased.get(i).unwrap_or_default(),
        })
        .collect())
}

/// The characters of Unicode's White_Space property, which `str::trim` trims.
const WHITE_SPACE: &str = "\u{9}\u{a}\u{b}\u{c}\u{d}\u{20}\u{85}\u{a0}\u{1680}\u{2000}\u{2001}\u{2002}\u{2003}\u{2004}\u{2005}\u{2006}\u{2007}\u{2008}\u{2009}\u{200a}\u{2028}\u{2029}\u{202f}\u{205f}\u{3000}";

/// A numeric input column as SQL: exact (integers and decimals, as a DECIMAL with
/// `scale` places) or a float.
enum Number {
    Exact { value: String, scale: u32 },
    Float(String),
}

/// The typed columns of a line, as SQL: `__cid`, `__oid` (trimmed, empty = null),
/// `__date`, `__value` (micro-units, `floor(value × 10^6 + 0.5)`), `__margin` with
/// a per-line cost or margin, and the channel and category as text.
fn typed_columns(config: &JobConfig, schema: &Schema) -> Result<String> {
    let columns = &config.input.columns;
    let dtype = |name: &str| schema.get(name).cloned().unwrap_or(DataType::Null);
    let id = |name: &str| {
        // Trimmed of Unicode white space, as Rust's `str::trim` in the fold (a
        // regular expression took several times as long).
        format!(
            "NULLIF(btrim(CAST({} AS STRING), {}), '')",
            quoted(name),
            text(WHITE_SPACE)
        )
    };
    let order_date = quoted(&columns.order_date);
    let date = match dtype(&columns.order_date) {
        DataType::Date => order_date,
        // A timestamp without a zone is a wall-clock time: its calendar day.
        DataType::Datetime(TimeUnit::Microseconds | TimeUnit::Milliseconds, None) => {
            format!("CAST({order_date} AS DATE)")
        }
        // An instant: its day in input.timezone, as in process.
        DataType::Datetime(TimeUnit::Microseconds | TimeUnit::Milliseconds, Some(_)) => format!(
            "CAST(from_utc_timestamp({order_date}, {}) AS DATE)",
            text(&config.input.timezone)
        ),
        other => {
            return Err(unsupported(
                "input.columns.order_date",
                format!("an order_date of type {other} (dates, and timestamps in micro- or milliseconds)"),
            ));
        }
    };
    let number = |logical: &str, name: &str| -> Result<Number> {
        let d = dtype(name);
        match d {
            _ if d.is_float() => Ok(Number::Float(format!("CAST({} AS DOUBLE)", quoted(name)))),
            _ if d.is_integer() => Ok(Number::Exact {
                value: format!("CAST({} AS DECIMAL(38, 0))", quoted(name)),
                scale: 0,
            }),
            // 29 digits leave room for the scaling in `exact_micros` within Spark's 38
            // (past 38 it drops decimal places); a larger value is refused by the cast
            // (ANSI), never rounded.
            DataType::Decimal(_, scale) => Ok(Number::Exact {
                value: format!("CAST({} AS DECIMAL(29, {scale}))", quoted(name)),
                scale: scale as u32,
            }),
            _ => Err(unsupported(
                &format!("input.columns.{logical}"),
                format!("a {logical} of type {d} (floats, integers and decimals)"),
            )),
        }
    };
    let quantity = match (&columns.quantity, config.input.amount_is_unit_price) {
        (Some(q), true) => Some(number("quantity", q)?),
        _ => None,
    };
    let micros = |logical: &str, name: &str| -> Result<String> {
        let amount = number(logical, name)?;
        Ok(match (&amount, &quantity) {
            (Number::Exact { value, scale }, None) => exact_micros(value, *scale),
            // Integers times integers exactly, as in process.
            (Number::Exact { value: a, scale: 0 }, Some(Number::Exact { value: q, scale: 0 })) => {
                format!("CAST({a} * {q} * 1000000 AS BIGINT)")
            }
            (Number::Exact { scale, .. }, Some(_)) if *scale > 0 => {
                return Err(unsupported(
                    &format!("input.columns.{logical}"),
                    format!("a decimal {logical} with amount_is_unit_price"),
                ));
            }
            (_, Some(Number::Exact { scale, .. })) if *scale > 0 => {
                return Err(unsupported(
                    "input.columns.quantity",
                    "a decimal quantity with amount_is_unit_price".into(),
                ));
            }
            (amount, Some(q)) => float_micros(&format!("({} * {})", as_double(amount), as_double(q))),
            (Number::Float(value), None) => float_micros(value),
        })
    };
    let value = micros("amount", &columns.amount)?;
    let mut typed = vec![
        format!("{} AS __cid", id(&columns.customer_id)),
        format!("{} AS __oid", id(&columns.order_id)),
        format!("{date} AS __date"),
        format!("{value} AS __value"),
    ];
    if let Some((logical, physical)) = columns.line_margin() {
        let given = micros(logical, physical)?;
        let given = if logical == "cost" {
            format!("({value}) - ({given})")
        } else {
            given
        };
        // No cost or margin on the line: the configured rate of its value.
        let at_rate = format!(
            "CAST(FLOOR(CAST({value} AS DOUBLE) * CAST({} AS DOUBLE) + 0.5D) AS BIGINT)",
            text(&format!("{:?}", config.clv.margin))
        );
        typed.push(format!("COALESCE({given}, {at_rate}) AS __margin"));
    }
    if let Some(channel) = &columns.channel {
        typed.push(format!("CAST({} AS STRING) AS __channel", quoted(channel)));
    }
    if let Some(category) = &columns.category {
        typed.push(format!("CAST({} AS STRING) AS __category", quoted(category)));
    }
    Ok(typed.join(", "))
}

fn as_double(number: &Number) -> String {
    match number {
        Number::Exact { value, .. } => format!("CAST({value} AS DOUBLE)"),
        Number::Float(value) => value.clone(),
    }
}

/// An exact value's micro-units, `floor(value × 10^6 + 0.5)` in decimal
/// arithmetic: a DECIMAL(29, s) times a DECIMAL(7, 0) is 37 digits and adding 0.5
/// makes 38, so Spark keeps every place (past 38 it rounds them away). With at
/// most 6 places the product is whole. Micro-units past a BIGINT fail the cast
/// (ANSI): refused, as in process, never wrapped.
fn exact_micros(value: &str, scale: u32) -> String {
    let micros = format!("{value} * CAST(1000000 AS DECIMAL(7, 0))");
    if scale <= 6 {
        format!("CAST({micros} AS BIGINT)")
    } else {
        format!("CAST(FLOOR({micros} + 0.5BD) AS BIGINT)")
    }
}

/// A float value's micro-units; null when it is null or not finite.
fn float_micros(value: &str) -> String {
    format!(
        "CASE WHEN {value} IS NULL OR isnan({value}) OR ABS({value}) = DOUBLE('Infinity') THEN NULL \
         ELSE CAST(FLOOR({value} * 1000000D + 0.5D) AS BIGINT) END"
    )
}

/// Step 4 as SQL: 0 kept, i + 1 dropped by reason i (the first that applies), in
/// the order of [`plan::line_plan`]'s reasons.
fn verdict_sql(config: &JobConfig) -> String {
    let mut conditions: Vec<String> = config.cleaning.exclude.iter().map(exclude_sql).collect();
    if config.cleaning.returns == Returns::Drop {
        conditions.push("__value < 0".into());
    }
    if conditions.is_empty() {
        return "0".into();
    }
    let cases: String = conditions
        .iter()
        .enumerate()
        .map(|(i, c)| format!(" WHEN COALESCE({c}, false) THEN {}", i + 1))
        .collect();
    format!("CASE{cases} ELSE 0 END")
}

fn exclude_sql(rule: &ExcludeRule) -> String {
    let column = format!("CAST({} AS STRING)", quoted(&rule.column));
    match &rule.matcher {
        Matcher::Equals(v) => format!("{column} = {}", text(v)),
        Matcher::In(values) => format!(
            "{column} IN ({})",
            values.iter().map(|v| text(v)).collect::<Vec<_>>().join(", ")
        ),
        Matcher::StartsWith(prefix) => format!("startswith({column}, {})", text(prefix)),
        Matcher::Regex(pattern) => format!("{column} RLIKE {}", text(pattern)),
    }
}

/// Dense numbers in text order: each value's rank among the sorted distinct `labels`.
fn number_of(labels: &Series, values: &Column, name: &str) -> PolarsResult<Column> {
    let labels: Vec<&str> = labels.str()?.iter().flatten().collect();
    let numbers: UInt32Chunked = values
        .str()?
        .iter()
        .map(|v| v.map(|v| labels.partition_point(|l| *l < v) as u32))
        .collect();
    Ok(numbers.with_name(name.into()).into_column())
}

/// The orders Spark rolled up, as the in-process fold hands them on: sorted by
/// customer_id then order_id, customers and channels numbered in text order.
fn ingested(
    orders: DataFrame,
    (has_channel, has_category, has_margin): (bool, bool, bool),
    cleaning: Vec<crate::ingest::CleaningStep>,
    purchases: u64,
) -> Result<Ingested> {
    let sorted = orders
        .lazy()
        .sort(["__cid", "__oid"], SortMultipleOptions::default())
        .collect()?;
    let customer_ids = sorted
        .column("__cid")?
        .as_materialized_series()
        .unique_stable()?
        .with_name(CUSTOMER_ID.into());
    let sorted_labels = |columns: &[&str]| -> PolarsResult<Series> {
        let mut all: Vec<String> = Vec::new();
        for c in columns {
            all.extend(sorted.column(c)?.str()?.iter().flatten().map(String::from));
        }
        all.sort_unstable();
        all.dedup();
        Ok(Series::new("labels".into(), all))
    };
    let mut key = number_of(&customer_ids, sorted.column("__cid")?, CUSTOMER_ID)?;
    if let Ok(ca) = key.as_materialized_series().u32() {
        let mut ca = ca.clone();
        ca.set_sorted_flag(IsSorted::Ascending);
        key = ca.into_column();
    }
    let mut rank = UInt32Chunked::from_vec(ORDER_RANK.into(), (0..sorted.height() as u32).collect());
    rank.set_sorted_flag(IsSorted::Ascending);
    let values = sorted
        .column("__micros")?
        .cast(&DataType::Int128)?
        .with_name(VALUE.into());
    let mut columns = vec![
        key,
        rank.into_column(),
        sorted
            .column("__day")?
            .cast(&DataType::Date)?
            .with_name(ORDER_DATE.into()),
        values,
    ];
    if has_margin {
        columns.push(
            sorted
                .column("__margin_micros")?
                .cast(&DataType::Int128)?
                .with_name(MARGIN.into()),
        );
    }
    let channels = if has_channel {
        let labels = sorted_labels(&["__first_channel"])?;
        if labels.is_empty() {
            None
        } else {
            columns.push(number_of(&labels, sorted.column("__first_channel")?, CHANNEL)?);
            Some(labels.with_name("channel_labels".into()))
        }
    } else {
        None
    };
    if has_category {
        let labels = sorted_labels(&["__cat_min", "__cat_max"])?;
        if !labels.is_empty() {
            columns.push(number_of(&labels, sorted.column("__cat_min")?, CATEGORY_MIN)?);
            columns.push(number_of(&labels, sorted.column("__cat_max")?, CATEGORY_MAX)?);
        }
    }
    Ok(Ingested {
        orders: DataFrame::new_infer_height(columns)?,
        customer_ids,
        channels,
        cleaning,
        purchases,
    })
}

impl Engine for Spark {
    fn name(&self) -> &'static str {
        "spark"
    }

    fn summarise(&self, job: Job<'_>, log: &mut StageLog) -> Result<CustomerSummary> {
        let cleaned = log.timed("scan and clean (spark)", || self.clean(job))?;
        tracing::info!(as_of = %cleaned.as_of, "analysis date (exclusive)");
        let summary = if job.identities.is_some() {
            // The identity merge re-keys orders: it runs here, over the orders.
            let orders = log.timed("orders (spark)", || self.orders_back(cleaned))?;
            in_process::customers(job, orders, log)
        } else {
            log.timed("customers (spark)", || self.customers(job, cleaned))
        };
        self.run("UNCACHE TABLE IF EXISTS loyalty_orders")?;
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::WHITE_SPACE;

    /// `btrim` with these characters trims what the fold's `str::trim` trims.
    #[test]
    fn white_space_is_what_str_trim_trims() {
        let expected: String = (0..=u32::from(char::MAX))
            .filter_map(char::from_u32)
            .filter(|c| c.is_whitespace())
            .collect();
        assert_eq!(WHITE_SPACE, expected);
    }
}
