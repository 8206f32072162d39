//! Stage 2 of the in-process engine in one pass over the orders, a customer at a
//! time: the per-customer aggregates ([`customers::customer_aggregates`]), the
//! cohort activity ([`cohort::cohort_activity`]), the upsell count
//! ([`customers::upsell_customers`]) and the model summary ([`summary_frame`]).
//!
//! Those functions define the frames, and other engines make them so; here they are
//! made from each customer's few orders, which lie together in the order table, in
//! one parallel pass. Polars' group-bys over every order (one per frame, each
//! hashing or sorting the customer keys again) took 1.6–1.8 s at 10M lines; this
//! pass takes a tenth of that. `tests/it/properties.rs` holds the two together on
//! random orders, frame for frame.
//!
//! [`customers::customer_aggregates`]: crate::metrics::customers::customer_aggregates
//! [`customers::upsell_customers`]: crate::metrics::customers::upsell_customers
//! [`cohort::cohort_activity`]: crate::metrics::cohort::cohort_activity
//! [`summary_frame`]: crate::model::summary::summary_frame

use chrono::NaiveDate;
use polars::prelude::*;
use polars::series::IsSorted;
use rayon::prelude::*;

use crate::config::Grain;
use crate::dates::{epoch_days, from_epoch_days};
use crate::error::Result;
use crate::metrics::cohort::{self, period_number_of};
use crate::metrics::customers::{self, AggregateWants};
use crate::model::summary::{PurchaseDays, summary_columns};
use crate::schema::cohort::ACTIVE_CUSTOMERS;
use crate::schema::customers::{CHANNEL, FIRST_ORDER_DATE, LAST_ORDER_DATE};
use crate::schema::internal::{
    BEFORE_WINDOW_LAST, CATEGORY_MAX, CATEGORY_MIN, CHANNEL as CHANNEL_IN, CUSTOMER_ID as CID,
    FIRST_ORDER_MICROS, GROSS_MARGIN_MICROS, MARGIN, ORDER_DATE, ORDER_RANK, REVENUE_MICROS, RFM_ORDERS,
    RFM_REVENUE_MICROS, VALUE,
};

use super::{conformed, empty_orders};
use crate::schema::{CUSTOMER_ID, ORDERS};

/// What the pass makes: the frames the named functions make of the same orders
/// (the aggregates and the summary sorted by customer key, the activity cells in
/// no particular order).
pub struct CustomerFrames {
    pub aggregates: DataFrame,
    pub cohort_activity: DataFrame,
    /// With categories mapped.
    pub upsell: Option<DataFrame>,
    pub model_summary: DataFrame,
}

/// What the pass needs to know beyond the orders.
#[derive(Clone, Copy)]
pub struct PassParams {
    pub wants: AggregateWants,
    pub grain: Grain,
    pub obs_end: NaiveDate,
    /// Days per model time unit.
    pub unit_days: f64,
    pub has_category: bool,
}

/// An order's channel or category numbers (null: none).
type LabelArray = <UInt32Type as PolarsDataType>::Array;

/// The orders' columns as slices (one chunk each).
struct OrderColumns<'a> {
    customer: &'a [u32],
    rank: &'a [u32],
    day: &'a [i32],
    value: &'a [i128],
    margin: Option<&'a [i128]>,
    channel: Option<&'a LabelArray>,
    category: Option<(&'a LabelArray, &'a LabelArray)>,
}

/// One customer with a purchase.
#[derive(Clone, Copy)]
struct Row {
    key: u32,
    first: i32,
    last: i32,
    purchases: i64,
    revenue: i128,
    first_value: i128,
    margin: i128,
    channel: Option<u32>,
    before_window_last: Option<i32>,
    rfm_orders: i64,
    rfm_revenue: i128,
    summary: [f64; 4],
    upsell: bool,
}

/// One task's customers as columns, each customer's fields pushed as its row is
/// made: the frames' columns are then copies of whole runs. (Read from rows of 176
/// bytes, one field at a time, each column was a strided pass over every row: a
/// fifth of the stage at 30M lines.)
struct Part {
    key: Vec<u32>,
    first: Vec<i32>,
    last: Vec<i32>,
    purchases: Vec<i64>,
    revenue: Vec<i128>,
    first_value: Vec<i128>,
    margin: Vec<i128>,
    channel: Vec<Option<u32>>,
    before_window_last: Vec<Option<i32>>,
    rfm_orders: Vec<i64>,
    rfm_revenue: Vec<i128>,
    summary: Vec<[f64; 4]>,
    /// Customers with an upsell.
    upsells: usize,
}

impl Part {
    fn with_capacity(customers: usize) -> Self {
        Self {
            key: Vec::with_capacity(customers),
            first: Vec::with_capacity(customers),
            last: Vec::with_capacity(customers),
            purchases: Vec::with_capacity(customers),
            revenue: Vec::with_capacity(customers),
            first_value: Vec::with_capacity(customers),
            margin: Vec::with_capacity(customers),
            channel: Vec::with_capacity(customers),
            before_window_last: Vec::with_capacity(customers),
            rfm_orders: Vec::with_capacity(customers),
            rfm_revenue: Vec::with_capacity(customers),
            summary: Vec::with_capacity(customers),
            upsells: 0,
        }
    }

    fn push(&mut self, row: Row) {
        self.key.push(row.key);
        self.first.push(row.first);
        self.last.push(row.last);
        self.purchases.push(row.purchases);
        self.revenue.push(row.revenue);
        self.first_value.push(row.first_value);
        self.margin.push(row.margin);
        self.channel.push(row.channel);
        self.before_window_last.push(row.before_window_last);
        self.rfm_orders.push(row.rfm_orders);
        self.rfm_revenue.push(row.rfm_revenue);
        self.summary.push(row.summary);
        self.upsells += usize::from(row.upsell);
    }
}

/// Per cohort × period cell: active customers, purchases, revenue in micro-units.
type Cells = hashbrown::HashMap<i64, (i64, i64, i128)>;

/// Customers per task of the parallel pass.
const CUSTOMERS_PER_TASK: usize = 1 << 13;

/// The frames of stage 2 from the cleaned orders (see [`crate::ingest::Ingested`]).
pub fn customer_frames(orders: &DataFrame, params: PassParams) -> Result<CustomerFrames> {
    // The pass reads each customer's orders as one run: sorted by key (and order
    // rank within it) they are, as the fold and the identity merge leave them.
    let sorted;
    let orders = if is_grouped(orders)? {
        orders
    } else {
        sorted = orders.sort(
            [CID, ORDER_RANK],
            SortMultipleOptions::default().with_maintain_order(true),
        )?;
        &sorted
    };
    let mut orders = orders.clone();
    orders.rechunk_mut();
    let customer = orders.column(CID)?.u32()?;
    let rank = orders.column(ORDER_RANK)?.u32()?;
    let day = orders.column(ORDER_DATE)?.cast(&DataType::Int32)?;
    let day = day.i32()?;
    let value = orders.column(VALUE)?.cast(&DataType::Int128)?;
    let value = value.i128()?;
    let margin = match params.wants.margin {
        true => Some(orders.column(MARGIN)?.cast(&DataType::Int128)?),
        false => None,
    };
    let margin = margin.as_ref().map(|m| m.i128()).transpose()?;
    let labels =
        |name: &str| -> PolarsResult<&LabelArray> { Ok(orders.column(name)?.u32()?.downcast_as_array()) };
    let channel = params.wants.channel.then(|| labels(CHANNEL_IN)).transpose()?;
    let category = match params.has_category {
        true => Some((labels(CATEGORY_MIN)?, labels(CATEGORY_MAX)?)),
        false => None,
    };
    let columns = OrderColumns {
        customer: no_nulls(customer)?,
        rank: no_nulls(rank)?,
        day: no_nulls(day)?,
        value: no_nulls(value)?,
        margin: margin.map(no_nulls).transpose()?,
        channel,
        category,
    };

    // Where each customer's run of orders starts, and one past the last.
    let mut starts: Vec<usize> = (0..columns.customer.len())
        .filter(|&i| i == 0 || columns.customer[i] != columns.customer[i - 1])
        .collect();
    starts.push(columns.customer.len());
    let periods = PeriodTable::new(columns.day, params.grain);
    let parts: Vec<(Part, Cells)> = starts
        .par_windows(2)
        .chunks(CUSTOMERS_PER_TASK)
        .map(|runs| {
            let mut part = Part::with_capacity(runs.len());
            let mut cells = Cells::new();
            let mut scratch = Scratch::default();
            for run in runs {
                if let Some(row) = one_customer(
                    &columns,
                    run[0]..run[1],
                    params,
                    &periods,
                    &mut cells,
                    &mut scratch,
                ) {
                    part.push(row);
                }
            }
            (part, cells)
        })
        .collect();
    let mut cells = Cells::new();
    let mut rows = Vec::with_capacity(parts.len());
    for (part, part_cells) in parts {
        rows.push(part);
        for (cell, (active, purchases, revenue)) in part_cells {
            let total = cells.entry(cell).or_default();
            total.0 += active;
            total.1 += purchases;
            total.2 += revenue;
        }
    }
    let rows = Rows(rows);
    let (aggregates, model_summary) = rayon::join(
        || aggregates_frame(&rows, params.wants),
        || {
            let summaries = rows.column(|p| &p.summary);
            summary_columns(rows.keys(CUSTOMER_ID), &summaries)
        },
    );
    Ok(CustomerFrames {
        aggregates: aggregates?,
        cohort_activity: activity_frame(cells, params.grain)?,
        upsell: params.has_category.then(|| upsell_frame(&rows)).transpose()?,
        model_summary: model_summary?,
    })
}

/// The customers, in key order, as the pass's tasks made them.
struct Rows(Vec<Part>);

impl Rows {
    fn len(&self) -> usize {
        self.0.iter().map(|part| part.key.len()).sum()
    }

    /// One field's values, in key order.
    fn values<'a, T: Copy + 'a>(
        &'a self,
        field: impl Fn(&'a Part) -> &'a [T] + 'a,
    ) -> impl Iterator<Item = T> + 'a {
        self.0.iter().flat_map(move |part| field(part).iter().copied())
    }

    /// One value per customer, in key order.
    fn column<'a, T: Copy + 'a>(&'a self, field: impl Fn(&'a Part) -> &'a [T]) -> Vec<T> {
        let mut values = Vec::with_capacity(self.len());
        for part in &self.0 {
            values.extend_from_slice(field(part));
        }
        values
    }

    /// The customer keys, as a column named `name`.
    fn keys(&self, name: &str) -> Column {
        let mut keys = UInt32Chunked::from_vec(name.into(), self.column(|p| &p.key));
        keys.set_sorted_flag(IsSorted::Ascending);
        keys.into_column()
    }
}

/// Whether the orders come sorted by customer key, and by rank within a customer.
fn is_grouped(orders: &DataFrame) -> Result<bool> {
    let (customer, rank) = (orders.column(CID)?.u32()?, orders.column(ORDER_RANK)?.u32()?);
    let (Ok(customer), Ok(rank)) = (customer.cont_slice(), rank.cont_slice()) else {
        return Ok(false);
    };
    Ok((1..customer.len()).all(|i| (customer[i - 1], rank[i - 1]) <= (customer[i], rank[i])))
}

fn no_nulls<T: PolarsNumericType>(column: &ChunkedArray<T>) -> PolarsResult<&[T::Native]> {
    polars_ensure!(column.null_count() == 0, ComputeError: "column {} has nulls", column.name());
    column.cont_slice()
}

/// [`period_number_of`] for every day of the orders' range, looked up by day.
struct PeriodTable {
    first_day: i32,
    numbers: Vec<i64>,
}

impl PeriodTable {
    fn new(days: &[i32], grain: Grain) -> Self {
        let (lo, hi) = days
            .iter()
            .fold((i32::MAX, i32::MIN), |(lo, hi), &d| (lo.min(d), hi.max(d)));
        // Dates are checked to lie in years 1 to 9999: at most 3.7M days.
        let numbers = if lo <= hi {
            (lo..=hi)
                .map(|d| period_number_of(from_epoch_days(d), grain))
                .collect()
        } else {
            Vec::new()
        };
        PeriodTable {
            first_day: lo,
            numbers,
        }
    }

    fn of(&self, day: i32) -> i64 {
        self.numbers[(day - self.first_day) as usize]
    }
}

/// One customer's purchases (day, value) and the cells it bought in, reused
/// between customers.
#[derive(Default)]
struct Scratch {
    purchases: Vec<(i32, i128)>,
    cells: Vec<i64>,
}

/// One customer's orders (`run`, ordered by rank): its row, when it has a purchase,
/// and its cohort cells added to `cells`.
fn one_customer(
    columns: &OrderColumns,
    run: std::ops::Range<usize>,
    params: PassParams,
    periods: &PeriodTable,
    cells: &mut Cells,
    scratch: &mut Scratch,
) -> Option<Row> {
    let Scratch {
        purchases,
        cells: purchased,
    } = scratch;
    let wants = params.wants;
    let window_start = wants.window_start.map(epoch_days);
    let rfm_since = wants.rfm_since.map(epoch_days);
    let mut row = Row {
        key: columns.customer[run.start],
        first: i32::MAX,
        last: i32::MIN,
        purchases: 0,
        revenue: 0,
        first_value: 0,
        margin: 0,
        channel: None,
        before_window_last: None,
        rfm_orders: 0,
        rfm_revenue: 0,
        summary: [0.0; 4],
        upsell: false,
    };
    // The first purchase by (date, rank), and the category range of the purchases.
    let mut first_purchase: Option<(i32, u32)> = None;
    let mut categories: Option<(u32, u32)> = None;
    purchases.clear();
    for i in run.clone() {
        let (day, value) = (columns.day[i], columns.value[i]);
        row.revenue += value;
        if let Some(margin) = columns.margin {
            row.margin += margin[i];
        }
        if rfm_since.is_some_and(|since| day >= since) {
            row.rfm_revenue += value;
            row.rfm_orders += i64::from(value > 0);
        }
        if value <= 0 {
            continue;
        }
        row.purchases += 1;
        row.first = row.first.min(day);
        row.last = row.last.max(day);
        purchases.push((day, value));
        let key = (day, columns.rank[i]);
        if first_purchase.is_none_or(|first| key < first) {
            first_purchase = Some(key);
            row.first_value = value;
            row.channel = columns.channel.and_then(|c| c.get(i));
        }
        if window_start.is_some_and(|start| day < start) {
            row.before_window_last = row.before_window_last.max(Some(day));
        }
        if let Some((min, max)) = columns.category
            && let (Some(low), Some(high)) = (min.get(i), max.get(i))
        {
            categories = Some(categories.map_or((low, high), |(a, b)| (a.min(low), b.max(high))));
        }
    }
    if row.purchases == 0 {
        return None;
    }
    row.upsell = categories.is_some_and(|(low, high)| low != high);

    // SPEC §6.3: by purchase day.
    purchases.sort_unstable();
    let days = PurchaseDays {
        first: row.first,
        last: row.last,
        repeat_days: purchases.windows(2).filter(|w| w[0].0 != w[1].0).count() as u64,
        first_day_value: purchases
            .iter()
            .take_while(|p| p.0 == row.first)
            .map(|p| p.1)
            .sum(),
        total: purchases.iter().map(|p| p.1).sum(),
    };
    row.summary = days.summary(epoch_days(params.obs_end), params.unit_days);

    // SPEC §3: the orders from the first purchase on, by cohort × period cell; a
    // cell's active customers count this customer once.
    let cohort = periods.of(row.first);
    purchased.clear();
    for i in run {
        let day = columns.day[i];
        if day < row.first {
            continue;
        }
        let cell = cohort::cell_number(cohort, periods.of(day) - cohort);
        let value = columns.value[i];
        let total = cells.entry(cell).or_default();
        total.1 += i64::from(value > 0);
        total.2 += value;
        if value > 0 {
            purchased.push(cell);
        }
    }
    purchased.sort_unstable();
    purchased.dedup();
    for &cell in purchased.iter() {
        cells.entry(cell).or_default().0 += 1;
    }
    Some(row)
}

/// The rows as [`customers::customer_aggregates`] makes them: its columns, in its
/// order and types. Each column is made in a task of its own.
fn aggregates_frame(rows: &Rows, wants: AggregateWants) -> Result<DataFrame> {
    type Make<'a> = Box<dyn Fn() -> PolarsResult<Column> + Send + Sync + 'a>;
    let dates = |name: &'static str, f: fn(&Part) -> &[i32]| -> Make {
        Box::new(move || {
            Int32Chunked::from_iter_options(name.into(), rows.values(f).map(Some))
                .into_column()
                .cast(&DataType::Date)
        })
    };
    let i128s = |name: &'static str, f: fn(&Part) -> &[i128]| -> Make {
        Box::new(move || Ok(Int128Chunked::from_vec(name.into(), rows.column(f)).into_column()))
    };
    let i64s = |name: &'static str, f: fn(&Part) -> &[i64]| -> Make {
        Box::new(move || Ok(Int64Chunked::from_vec(name.into(), rows.column(f)).into_column()))
    };
    let mut makers: Vec<Make> = vec![
        Box::new(|| Ok(rows.keys(CUSTOMER_ID))),
        dates(FIRST_ORDER_DATE, |p| &p.first),
        dates(LAST_ORDER_DATE, |p| &p.last),
        i64s(ORDERS, |p| &p.purchases),
        i128s(REVENUE_MICROS, |p| &p.revenue),
        i128s(FIRST_ORDER_MICROS, |p| &p.first_value),
    ];
    if wants.margin {
        makers.push(i128s(GROSS_MARGIN_MICROS, |p| &p.margin));
    }
    if wants.channel {
        makers.push(Box::new(|| {
            Ok(UInt32Chunked::from_iter_options(CHANNEL.into(), rows.values(|p| &p.channel)).into_column())
        }));
    }
    if wants.window_start.is_some() {
        makers.push(Box::new(|| {
            Int32Chunked::from_iter_options(BEFORE_WINDOW_LAST.into(), rows.values(|p| &p.before_window_last))
                .into_column()
                .cast(&DataType::Date)
        }));
    }
    if wants.rfm_since.is_some() {
        makers.push(i64s(RFM_ORDERS, |p| &p.rfm_orders));
        makers.push(i128s(RFM_REVENUE_MICROS, |p| &p.rfm_revenue));
    }
    let columns = makers
        .par_iter()
        .map(|make| make())
        .collect::<PolarsResult<Vec<Column>>>()?;
    let no_orders = empty_orders(&wants, false).lazy();
    let schema = customers::customer_aggregates(no_orders, wants).collect_schema()?;
    let mut frame = conformed(&DataFrame::new(rows.len(), columns)?, schema.as_ref())?;
    // Sorted by key, as the plan's sort leaves it.
    frame.replace(CUSTOMER_ID, rows.keys(CUSTOMER_ID))?;
    Ok(frame)
}

/// The cells as [`cohort::cohort_activity`] makes them.
fn activity_frame(cells: Cells, grain: Grain) -> Result<DataFrame> {
    let mut cells: Vec<(i64, (i64, i64, i128))> = cells.into_iter().collect();
    cells.sort_unstable_by_key(|&(cell, _)| cell);
    let frame = DataFrame::new(
        cells.len(),
        vec![
            Int64Chunked::from_vec(cohort::CELL.into(), cells.iter().map(|c| c.0).collect()).into_column(),
            Int64Chunked::from_vec(ACTIVE_CUSTOMERS.into(), cells.iter().map(|c| c.1.0).collect())
                .into_column(),
            Int64Chunked::from_vec(ORDERS.into(), cells.iter().map(|c| c.1.1).collect()).into_column(),
            Int128Chunked::from_vec(REVENUE_MICROS.into(), cells.iter().map(|c| c.1.2).collect())
                .into_column(),
        ],
    )?;
    let no_orders = empty_orders(&AggregateWants::default(), false).lazy();
    conformed(
        &frame,
        cohort::cohort_activity(no_orders, grain)
            .collect_schema()?
            .as_ref(),
    )
}

/// The count as [`customers::upsell_customers`] makes it.
fn upsell_frame(rows: &Rows) -> Result<DataFrame> {
    let count = rows.0.iter().map(|part| part.upsells).sum::<usize>() as i64;
    Ok(DataFrame::new(
        1,
        vec![Column::new(customers::UPSELL_CUSTOMERS.into(), [count])],
    )?)
}

#[cfg(test)]
mod tests {
    use chrono::Days;
    use proptest::prelude::*;

    use super::*;
    use crate::model::summary::summary_frame;

    /// An order: customer key, day offset, value in micro-units, margin, channel,
    /// category range.
    type Order = (u32, i32, i64, i64, Option<u32>, Option<(u32, u32)>);

    fn order_table(orders: &[Order], wants: AggregateWants, has_category: bool) -> DataFrame {
        let day0 = epoch_days(NaiveDate::from_ymd_opt(2023, 12, 20).unwrap());
        let mut columns = vec![
            Column::new(CID.into(), orders.iter().map(|o| o.0).collect::<Vec<_>>()),
            Column::new(ORDER_RANK.into(), (0..orders.len() as u32).collect::<Vec<_>>()),
            Column::new(
                ORDER_DATE.into(),
                orders.iter().map(|o| day0 + o.1).collect::<Vec<_>>(),
            )
            .cast(&DataType::Date)
            .unwrap(),
            Column::new(VALUE.into(), orders.iter().map(|o| o.2).collect::<Vec<_>>())
                .cast(&DataType::Int128)
                .unwrap(),
        ];
        if wants.margin {
            columns.push(
                Column::new(MARGIN.into(), orders.iter().map(|o| o.3).collect::<Vec<_>>())
                    .cast(&DataType::Int128)
                    .unwrap(),
            );
        }
        if wants.channel {
            columns.push(Column::new(
                CHANNEL_IN.into(),
                orders.iter().map(|o| o.4).collect::<Vec<_>>(),
            ));
        }
        if has_category {
            let range =
                |pick: fn((u32, u32)) -> u32| orders.iter().map(move |o| o.5.map(pick)).collect::<Vec<_>>();
            columns.push(Column::new(CATEGORY_MIN.into(), range(|r| r.0)));
            columns.push(Column::new(CATEGORY_MAX.into(), range(|r| r.1)));
        }
        DataFrame::new_infer_height(columns).unwrap()
    }

    fn sorted(frame: DataFrame, by: &str) -> DataFrame {
        frame.sort([by], SortMultipleOptions::default()).unwrap()
    }

    /// Orders grouped by customer, as the fold writes them: keys ascending.
    fn orders() -> impl Strategy<Value = Vec<Order>> {
        prop::collection::vec(
            (
                0..8u32,
                0..160i32,
                prop_oneof![-5_000i64..0, Just(0i64), 1i64..90_000],
                -1_000i64..5_000,
                prop::option::of(0..3u32),
                prop::option::of((0..4u32, 0..4u32).prop_map(|(a, b)| (a.min(b), a.max(b)))),
            ),
            1..60,
        )
        .prop_map(|mut orders| {
            orders.sort_by_key(|o| o.0);
            orders
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
        /// Every frame of the pass equals what the Polars plans (and the summary)
        /// make of the same orders, given in key order or shuffled.
        #[test]
        fn the_pass_makes_the_plans_frames(
            orders in orders(),
            grain in prop_oneof![Just(Grain::Week), Just(Grain::Month), Just(Grain::Quarter)],
            (margin, channel, has_category) in (any::<bool>(), any::<bool>(), any::<bool>()),
            (window, rfm) in (prop::option::of(1..200u64), prop::option::of(1..200u64)),
            shuffled in any::<bool>(),
        ) {
            let as_of = NaiveDate::from_ymd_opt(2024, 6, 1).unwrap();
            let wants = AggregateWants {
                channel,
                margin,
                rfm_since: rfm.map(|days| as_of - Days::new(days)),
                window_start: window.map(|days| as_of - Days::new(days)),
            };
            let mut table = order_table(&orders, wants, has_category);
            if shuffled {
                let reversed: Vec<IdxSize> = (0..table.height() as IdxSize).rev().collect();
                table = table.take(&IdxCa::from_vec("rows".into(), reversed)).unwrap();
            }
            let params = PassParams { wants, grain, obs_end: as_of - Days::new(1), unit_days: 7.0, has_category };
            let pass = customer_frames(&table, params).unwrap();

            let aggregates = customers::customer_aggregates(table.clone().lazy(), wants).collect().unwrap();
            prop_assert!(pass.aggregates.equals_missing(&aggregates), "{}\n{}", pass.aggregates, aggregates);
            prop_assert!(pass.aggregates.column(CUSTOMER_ID).unwrap().as_materialized_series().is_sorted_flag() == IsSorted::Ascending);

            let activity = cohort::cohort_activity(table.clone().lazy(), grain).collect().unwrap();
            let (got, want) = (sorted(pass.cohort_activity, cohort::CELL), sorted(activity, cohort::CELL));
            prop_assert!(got.equals_missing(&want), "{got}\n{want}");

            if has_category {
                let upsell = customers::upsell_customers(table.clone().lazy()).collect().unwrap();
                prop_assert!(pass.upsell.unwrap().equals_missing(&upsell));
            }

            let summary = sorted(summary_frame(&table, params.obs_end, params.unit_days).unwrap(), CUSTOMER_ID);
            prop_assert!(pass.model_summary.equals_missing(&summary), "{}\n{}", pass.model_summary, summary);
        }
    }
}
