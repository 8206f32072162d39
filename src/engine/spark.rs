//! The Spark engine (`engine: spark`, cargo feature `spark`): SPEC §1 over the
//! order lines, the part that grows with lines, runs on Apache Spark through Spark
//! Connect; the cleaned orders come back as Arrow IPC (read by Polars) and the
//! per-customer stage runs here, exactly as the in-process engine's does
//! ([`super::in_process::customers`]). So the definitions after §1 are not written
//! twice, and §1's are held to the in-process fold by differential tests
//! (`tests/it/spark.rs`): same orders, same cleaning counts, same tables.
//!
//! The SQL is generated from the config and from the input's schema as Polars
//! types it ([`crate::ingest::normalise`] runs first, so a wrong or missing column
//! is the same error as in process). Supported in this version: Parquet inputs,
//! `order_date` as a date, `amount` (and `quantity`) as floats or integers,
//! string or integer ids, the optional channel and category, `exclude` rules,
//! `returns` and `dedupe`. Anything else is a config error naming it.

use std::io::Cursor;

use chrono::Days;
use polars::prelude::*;
use polars::series::IsSorted;
use spark_connect::SparkSession;
use spark_connect::session::SparkSessionBuilder;

use super::in_process::{self, CleanedOrders, InProcess};
use super::{CustomerSummary, Engine, Job};
use crate::config::{ConfigIssue, ExcludeRule, JobConfig, Matcher, Returns, SparkConfig};
use crate::error::{Error, InputError, Result};
use crate::ingest::{self, Ingested, StepCounts, plan};
use crate::io::input::Inputs;
use crate::pipeline::StageLog;
use crate::schema::internal::{
    CATEGORY_MAX, CATEGORY_MIN, CHANNEL, CUSTOMER_ID, ORDER_DATE, ORDER_RANK, VALUE,
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
    fn clean(&self, job: Job<'_>) -> Result<CleanedOrders> {
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
        self.view("loyalty_typed", &format!("SELECT *, {typed} FROM loyalty_raw"))?;
        let present =
            "__cid IS NOT NULL AND __oid IS NOT NULL AND __date IS NOT NULL AND __value IS NOT NULL";
        let as_of = match config.as_of {
            Some(as_of) => as_of,
            None => {
                let latest = self.frame(
                    "as_of",
                    &format!("SELECT MAX(__date) AS latest FROM loyalty_typed WHERE {present}"),
                )?;
                let day = latest.column("latest")?.cast(&DataType::Int32)?.i32()?.get(0);
                let day = day.ok_or_else(|| {
                    InputError::NothingLeft(
                        "no row has a customer_id, order_id, order_date and amount".into(),
                    )
                })?;
                crate::dates::from_epoch_days(day) + Days::new(1)
            }
        };
        let as_of_sql = format!("DATE {}", text(&as_of.to_string()));
        let counts = self.frame(
            "counts",
            &format!(
                "SELECT COUNT(*) AS rows,
                    SUM(CASE WHEN __cid IS NULL THEN 1 ELSE 0 END) AS null_customer,
                    SUM(CASE WHEN __cid IS NOT NULL AND __oid IS NULL THEN 1 ELSE 0 END) AS null_order,
                    SUM(CASE WHEN __cid IS NOT NULL AND __oid IS NOT NULL AND __date IS NULL THEN 1 ELSE 0 END) AS null_date,
                    SUM(CASE WHEN __cid IS NOT NULL AND __oid IS NOT NULL AND __date IS NOT NULL AND __value IS NULL THEN 1 ELSE 0 END) AS null_value,
                    SUM(CASE WHEN {present} AND __date >= {as_of_sql} THEN 1 ELSE 0 END) AS after_as_of,
                    SUM(CASE WHEN {present} AND __date < {as_of_sql} THEN 1 ELSE 0 END) AS in_window
                 FROM loyalty_typed"
            ),
        )?;
        let number = |name: &str| -> Result<u64> {
            Ok(counts
                .column(name)?
                .cast(&DataType::Int64)?
                .i64()?
                .get(0)
                .unwrap_or(0) as u64)
        };
        self.view(
            "loyalty_window",
            &format!("SELECT * FROM loyalty_typed WHERE {present} AND __date < {as_of_sql}"),
        )?;
        // Step 3: equal in every input column (the typed ones follow from them).
        let distinct = if config.cleaning.dedupe {
            "SELECT DISTINCT * FROM loyalty_window"
        } else {
            "SELECT * FROM loyalty_window"
        };
        self.view("loyalty_distinct", distinct)?;
        let verdict = verdict_sql(config);
        // Cached: step 4's counts and the roll-up both read it (the lines in
        // window, deduplicated, each with its verdict), so it is computed once.
        self.run(&format!(
            "CACHE TABLE loyalty_verdict AS SELECT *, {verdict} AS __verdict FROM loyalty_distinct"
        ))?;
        let verdicts = self.frame(
            "step 4",
            "SELECT __verdict, COUNT(*) AS lines FROM loyalty_verdict GROUP BY __verdict",
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
        let in_window = number("in_window")?;
        let after_dedupe = kept_lines + dropped.iter().sum::<u64>();
        let has_channel = normalised.has_channel;
        let has_category = normalised.has_category;
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
        // Step 5: orders, key (customer_id, order_id).
        let orders = self.frame(
            "orders",
            &format!(
                "SELECT __cid, __oid, MIN(__date) AS __day, SUM(CAST(__value AS DECIMAL(38, 0))) AS __micros,
                    {channel} AS __first_channel, {category_min} AS __cat_min, {category_max} AS __cat_max
                 FROM loyalty_verdict WHERE __verdict = 0 GROUP BY __cid, __oid"
            ),
        )?;
        self.run("UNCACHE TABLE IF EXISTS loyalty_verdict")?;
        let ingested = ingested(
            orders,
            (has_channel, has_category),
            StepCounts {
                rows: number("rows")?,
                null_customer: number("null_customer")?,
                null_order: number("null_order")?,
                null_date: number("null_date")?,
                null_value: number("null_value")?,
                after_as_of: number("after_as_of")?,
                in_window,
                duplicates: in_window - after_dedupe,
                dropped,
                orders: 0,
                purchases: 0,
            },
            &reasons,
        )?;
        if ingested.purchases == 0 {
            return Err(InputError::NothingLeft(in_process::nothing_purchased(&ingested.cleaning)).into());
        }
        Ok(CleanedOrders {
            ingested,
            as_of,
            has_channel,
            has_category,
        })
    }
}

/// The typed columns of a line, as SQL: `__cid`, `__oid` (trimmed, empty = null),
/// `__date`, `__value` (micro-units, `floor(value × 10^6 + 0.5)`), and the channel
/// and category as text.
fn typed_columns(config: &JobConfig, schema: &Schema) -> Result<String> {
    let columns = &config.input.columns;
    if let Some((logical, _)) = columns.line_margin() {
        return Err(unsupported(
            &format!("input.columns.{logical}"),
            "a per-line margin".into(),
        ));
    }
    let dtype = |name: &str| schema.get(name).cloned().unwrap_or(DataType::Null);
    let id = |name: &str| {
        // Trimmed of Unicode white space, as Rust's `str::trim` in the fold.
        format!(
            "NULLIF(regexp_replace(CAST({} AS STRING), '(?U)^\\\\s+|\\\\s+$', ''), '')",
            quoted(name)
        )
    };
    match dtype(&columns.order_date) {
        DataType::Date => {}
        other => {
            return Err(unsupported(
                "input.columns.order_date",
                format!("an order_date of type {other} (only dates)"),
            ));
        }
    }
    let number = |logical: &str, name: &str| -> Result<(String, bool)> {
        let d = dtype(name);
        if d.is_float() {
            Ok((format!("CAST({} AS DOUBLE)", quoted(name)), false))
        } else if d.is_integer() {
            Ok((format!("CAST({} AS DECIMAL(38, 0))", quoted(name)), true))
        } else {
            Err(unsupported(
                &format!("input.columns.{logical}"),
                format!("a {logical} of type {d} (only floats and integers)"),
            ))
        }
    };
    let (amount, amount_exact) = number("amount", &columns.amount)?;
    let quantity = match (&columns.quantity, config.input.amount_is_unit_price) {
        (Some(q), true) => Some(number("quantity", q)?),
        _ => None,
    };
    let value = match quantity {
        // Integers exactly; otherwise the product of the floats, as in process.
        Some((q, true)) if amount_exact => format!("CAST({amount} * {q} * 1000000 AS BIGINT)"),
        Some((q, _)) => float_micros(&format!("(CAST({amount} AS DOUBLE) * CAST({q} AS DOUBLE))")),
        None if amount_exact => format!("CAST({amount} * 1000000 AS BIGINT)"),
        None => float_micros(&amount),
    };
    let mut typed = vec![
        format!("{} AS __cid", id(&columns.customer_id)),
        format!("{} AS __oid", id(&columns.order_id)),
        format!("{} AS __date", quoted(&columns.order_date)),
        format!("{value} AS __value"),
    ];
    if let Some(channel) = &columns.channel {
        typed.push(format!("CAST({} AS STRING) AS __channel", quoted(channel)));
    }
    if let Some(category) = &columns.category {
        typed.push(format!("CAST({} AS STRING) AS __category", quoted(category)));
    }
    Ok(typed.join(", "))
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

/// The orders Spark rolled up, as the in-process fold hands them on: sorted by
/// customer_id then order_id, customers and channels numbered in text order.
fn ingested(
    orders: DataFrame,
    (has_channel, has_category): (bool, bool),
    mut counts: StepCounts,
    reasons: &[String],
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
    // Dense numbers in text order: the rank among the sorted distinct labels.
    let number_of = |labels: &Series, values: &Column, name: &str| -> PolarsResult<Column> {
        let labels: Vec<&str> = labels.str()?.iter().flatten().collect();
        let numbers: UInt32Chunked = values
            .str()?
            .iter()
            .map(|v| v.map(|v| labels.partition_point(|l| *l < v) as u32))
            .collect();
        Ok(numbers.with_name(name.into()).into_column())
    };
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
    let purchases = values.i128()?.iter().filter(|v| v.is_some_and(|v| v > 0)).count() as u64;
    let mut columns = vec![
        key,
        rank.into_column(),
        sorted
            .column("__day")?
            .cast(&DataType::Date)?
            .with_name(ORDER_DATE.into()),
        values,
    ];
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
    counts.orders = sorted.height() as u64;
    counts.purchases = purchases;
    Ok(Ingested {
        orders: DataFrame::new_infer_height(columns)?,
        customer_ids,
        channels,
        cleaning: ingest::cleaning_report(&counts, reasons),
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
        in_process::customers(job, cleaned, log)
    }
}
