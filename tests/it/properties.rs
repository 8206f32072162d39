//! Property tests: random order sets through the pipeline against a naive,
//! row-by-row implementation of SPEC §1–§7 written here from the text.

use std::collections::BTreeMap;

use chrono::{Datelike, Days, NaiveDate};
use loyalty::config::{SegmentRule, default_segments};
use polars::prelude::*;
use proptest::prelude::*;

use crate::common::*;

#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub(crate) customer: String,
    pub(crate) order: String,
    pub(crate) day: u32,
    pub(crate) cents: i64,
}

/// Random order lines: few customers and orders, refunds, zeros, exact duplicates
/// (also the Spark engine's differential tests).
pub(crate) fn lines() -> impl Strategy<Value = Vec<Line>> {
    prop::collection::vec(
        (
            0..6u8,
            0..5u8,
            0..200u32,
            prop_oneof![-3000i64..0, Just(0i64), 1i64..20_000],
        ),
        1..40,
    )
    .prop_map(|raw| {
        let mut lines: Vec<Line> = raw
            .into_iter()
            .map(|(c, o, day, cents)| Line {
                customer: format!("c{c}"),
                order: format!("o{o}"),
                day,
                cents,
            })
            .collect();
        // Exact duplicates on purpose, so dedupe has work.
        if lines.len() > 3 {
            let copy = lines[1].clone();
            lines.push(copy);
        }
        lines
    })
}

const START: &str = "2024-01-01";
pub(crate) const AS_OF: &str = "2024-06-01";

pub(crate) fn date(day: u32) -> NaiveDate {
    NaiveDate::parse_from_str(START, "%Y-%m-%d").unwrap() + Days::new(day as u64)
}

pub(crate) fn frame(lines: &[Line]) -> DataFrame {
    let days: Vec<String> = lines.iter().map(|l| date(l.day).to_string()).collect();
    let days: Vec<&str> = days.iter().map(|s| s.as_str()).collect();
    DataFrame::new_infer_height(vec![
        Column::new(
            "customer_id".into(),
            lines.iter().map(|l| l.customer.clone()).collect::<Vec<_>>(),
        ),
        Column::new(
            "order_id".into(),
            lines.iter().map(|l| l.order.clone()).collect::<Vec<_>>(),
        ),
        dates("order_date", &days),
        Column::new(
            "amount".into(),
            lines.iter().map(|l| l.cents as f64 / 100.0).collect::<Vec<_>>(),
        ),
    ])
    .unwrap()
}

/// What the naive implementation says about one customer.
#[derive(Debug, Clone, PartialEq)]
struct Customer {
    id: String,
    first: NaiveDate,
    last: NaiveDate,
    orders: i64,
    revenue: i64,
    recency: i64,
    tenure: i64,
    cohort: NaiveDate,
    abc: String,
    r: i64,
    f: i64,
    m: i64,
    segment: String,
}

fn period_start(d: NaiveDate, grain: &str) -> NaiveDate {
    match grain {
        "week" => d - Days::new(d.weekday().num_days_from_monday() as u64),
        "month" => NaiveDate::from_ymd_opt(d.year(), d.month(), 1).unwrap(),
        _ => NaiveDate::from_ymd_opt(d.year(), (d.month() - 1) / 3 * 3 + 1, 1).unwrap(),
    }
}

fn period_index(from: NaiveDate, to: NaiveDate, grain: &str) -> i64 {
    match grain {
        "week" => (period_start(to, grain) - period_start(from, grain)).num_days() / 7,
        "month" => {
            (to.year() as i64 * 12 + to.month() as i64) - (from.year() as i64 * 12 + from.month() as i64)
        }
        _ => {
            (to.year() as i64 * 4 + (to.month() as i64 - 1) / 3)
                - (from.year() as i64 * 4 + (from.month() as i64 - 1) / 3)
        }
    }
}

struct Naive {
    customers: Vec<Customer>,
    /// Revenue of customers with revenue > 0, best first (ties by id).
    positive: Vec<i64>,
    /// (cohort, index) -> (size, active, purchases, revenue micros)
    cohorts: BTreeMap<(NaiveDate, i64), (i64, i64, i64, i64)>,
    gini: Option<f64>,
    customers_for_80pct: Option<i64>,
    top20: Option<f64>,
}

/// SPEC §1 steps 2, 3 (when `dedupe`) and 5: (customer, order) → (date, value micros).
pub(crate) fn naive_orders(lines: &[Line], dedupe: bool) -> BTreeMap<(String, String), (NaiveDate, i64)> {
    let as_of = NaiveDate::parse_from_str(AS_OF, "%Y-%m-%d").unwrap();
    // Steps 2 and 3: before as_of, exact duplicates once.
    let mut kept: Vec<&Line> = Vec::new();
    for line in lines.iter().filter(|l| date(l.day) < as_of) {
        let dup = dedupe
            && kept.iter().any(|k| {
                k.customer == line.customer
                    && k.order == line.order
                    && k.day == line.day
                    && k.cents == line.cents
            });
        if !dup {
            kept.push(line);
        }
    }
    // Step 5: orders.
    let mut orders: BTreeMap<(String, String), (NaiveDate, i64)> = BTreeMap::new();
    for line in kept {
        let micros = (line.cents as f64 / 100.0 * 1e6 + 0.5).floor() as i64;
        let entry = orders
            .entry((line.customer.clone(), line.order.clone()))
            .or_insert((date(line.day), 0));
        entry.0 = entry.0.min(date(line.day));
        entry.1 += micros;
    }
    orders
}

fn naive(lines: &[Line], grain: &str, rules: &[SegmentRule]) -> Naive {
    let as_of = NaiveDate::parse_from_str(AS_OF, "%Y-%m-%d").unwrap();
    let orders = naive_orders(lines, true);
    let mut customers: Vec<Customer> = Vec::new();
    let ids: std::collections::BTreeSet<&String> = orders.keys().map(|(c, _)| c).collect();
    for id in ids {
        let mine: Vec<&(NaiveDate, i64)> = orders
            .iter()
            .filter(|((c, _), _)| c == id)
            .map(|(_, v)| v)
            .collect();
        let purchases: Vec<&&(NaiveDate, i64)> = mine.iter().filter(|(_, v)| *v > 0).collect();
        if purchases.is_empty() {
            continue;
        }
        let first = purchases.iter().map(|(d, _)| *d).min().unwrap();
        let last = purchases.iter().map(|(d, _)| *d).max().unwrap();
        customers.push(Customer {
            id: id.clone(),
            first,
            last,
            orders: purchases.len() as i64,
            revenue: mine.iter().map(|(_, v)| v).sum(),
            recency: (as_of - last).num_days(),
            tenure: (as_of - first).num_days(),
            cohort: period_start(first, grain),
            abc: "C".into(),
            r: 0,
            f: 0,
            m: 0,
            segment: String::new(),
        });
    }
    // RFM: rank = 1 + number of strictly better values (SQL RANK).
    let n = customers.len() as i64;
    let snapshot = customers.clone();
    let score = |rank: i64| 1 + 5 * (rank - 1) / n;
    for c in customers.iter_mut() {
        c.r = score(1 + snapshot.iter().filter(|o| o.recency > c.recency).count() as i64);
        c.f = score(1 + snapshot.iter().filter(|o| o.orders < c.orders).count() as i64);
        c.m = score(1 + snapshot.iter().filter(|o| o.revenue < c.revenue).count() as i64);
        let fm = ((c.f + c.m) as u32).div_ceil(2); // = floor((f + m + 1) / 2)
        c.segment = rules
            .iter()
            .find(|rule| rule.matches(c.r as u32, c.f as u32, c.m as u32, fm))
            .map_or("Other".to_string(), |rule| rule.name.clone());
    }
    // Pareto over revenue > 0, descending, ties by id.
    let mut positive: Vec<(i64, String)> = customers
        .iter()
        .filter(|c| c.revenue > 0)
        .map(|c| (c.revenue, c.id.clone()))
        .collect();
    positive.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let total: i64 = positive.iter().map(|p| p.0).sum();
    let mut before = 0i64;
    let mut customers_for_80pct = None;
    for (i, (revenue, id)) in positive.iter().enumerate() {
        let class = if (before as i128) * 10 < 8 * total as i128 {
            "A"
        } else if (before as i128) * 100 < 95 * total as i128 {
            "B"
        } else {
            "C"
        };
        customers.iter_mut().find(|c| &c.id == id).unwrap().abc = class.into();
        before += revenue;
        if customers_for_80pct.is_none() && (before as i128) * 10 >= 8 * total as i128 {
            customers_for_80pct = Some(i as i64 + 1);
        }
    }
    let np = positive.len() as i64;
    let (gini, top20) = if np == 0 {
        (None, None)
    } else {
        let weighted: i128 = positive
            .iter()
            .rev()
            .enumerate()
            .map(|(i, p)| (i as i128 + 1) * p.0 as i128)
            .sum();
        let gini = 2.0 * weighted as f64 / (np as f64 * total as f64) - (np as f64 + 1.0) / np as f64;
        let k = (2 * np + 9) / 10;
        let top: i64 = positive.iter().take(k as usize).map(|p| p.0).sum();
        (Some(gini), Some(top as f64 / total as f64))
    };
    // Cohorts.
    let obs_end = as_of - Days::new(1);
    let mut cohorts = BTreeMap::new();
    for c in &customers {
        for k in 0..=period_index(c.cohort, obs_end, grain) {
            cohorts.entry((c.cohort, k)).or_insert((0, 0, 0, 0)).0 += 1;
        }
    }
    for c in &customers {
        let mut active = std::collections::BTreeSet::new();
        for ((id, _), (d, v)) in &orders {
            if id != &c.id || *d < c.first {
                continue;
            }
            let k = period_index(c.cohort, *d, grain);
            let cell = cohorts.get_mut(&(c.cohort, k)).unwrap();
            cell.3 += v;
            if *v > 0 {
                cell.2 += 1;
                active.insert(k);
            }
        }
        for k in active {
            cohorts.get_mut(&(c.cohort, k)).unwrap().1 += 1;
        }
    }
    Naive {
        customers,
        positive: positive.iter().map(|p| p.0).collect(),
        cohorts,
        gini,
        customers_for_80pct,
        top20,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn every_table_matches_the_naive_implementation(
        lines in lines(),
        grain in prop_oneof![Just("week"), Just("month"), Just("quarter")],
    ) {
        let expected = naive(&lines, grain, &default_segments());
        let result = try_compute(frame(&lines), &format!("as_of: {AS_OF}\ncohorts:\n  grain: {grain}\n"), &[]);
        let computed = match result {
            Err(e) => {
                prop_assert!(expected.customers.is_empty(), "pipeline failed but customers exist: {e}");
                return Ok(());
            }
            Ok(c) => c,
        };
        let customers = &table(&computed, "customers");
        prop_assert_eq!(customers.height(), expected.customers.len());
        for (i, c) in expected.customers.iter().enumerate() {
            prop_assert_eq!(str_at(customers, "customer_id", i), Some(c.id.clone()));
            prop_assert_eq!(str_at(customers, "first_order_date", i), Some(c.first.to_string()));
            prop_assert_eq!(str_at(customers, "last_order_date", i), Some(c.last.to_string()));
            prop_assert_eq!(i64_at(customers, "orders", i), Some(c.orders));
            prop_assert!(close(f64_at(customers, "revenue", i).unwrap(), c.revenue as f64 / 1e6));
            prop_assert_eq!(i64_at(customers, "recency_days", i), Some(c.recency));
            prop_assert_eq!(i64_at(customers, "tenure_days", i), Some(c.tenure));
            let annual = c.revenue as f64 / 1e6 / c.tenure.max(30) as f64 * 365.25;
            prop_assert!(close(f64_at(customers, "annual_value", i).unwrap(), annual));
            prop_assert_eq!(str_at(customers, "cohort", i), Some(c.cohort.to_string()));
            prop_assert_eq!(str_at(customers, "abc_class", i), Some(c.abc.clone()));
            prop_assert_eq!(
                (i64_at(customers, "r_score", i), i64_at(customers, "f_score", i), i64_at(customers, "m_score", i)),
                (Some(c.r), Some(c.f), Some(c.m))
            );
            prop_assert_eq!(str_at(customers, "segment", i), Some(c.segment.clone()));
        }

        let kpis = &table(&computed, "kpis");
        let n = expected.customers.len() as f64;
        prop_assert_eq!(i64_at(kpis, "customers", 0), Some(expected.customers.len() as i64));
        let orders: i64 = expected.customers.iter().map(|c| c.orders).sum();
        prop_assert_eq!(i64_at(kpis, "orders", 0), Some(orders));
        let repeat = expected.customers.iter().filter(|c| c.orders >= 2).count() as f64 / n;
        prop_assert!(close(f64_at(kpis, "repeat_purchase_rate", 0).unwrap(), repeat));
        prop_assert_eq!(i64_at(kpis, "customers_for_80pct", 0), expected.customers_for_80pct);
        match (f64_at(kpis, "gini", 0), expected.gini) {
            (Some(a), Some(b)) => prop_assert!(close(a, b), "gini {} vs {}", a, b),
            (a, b) => prop_assert_eq!(a, b),
        }
        match (f64_at(kpis, "top_20pct_revenue_share", 0), expected.top20) {
            (Some(a), Some(b)) => prop_assert!(close(a, b)),
            (a, b) => prop_assert_eq!(a, b),
        }

        let revenue: i64 = expected.customers.iter().map(|c| c.revenue).sum();
        prop_assert!(close(f64_at(kpis, "aov", 0).unwrap(), revenue as f64 / 1e6 / orders as f64));
        prop_assert!(close(f64_at(kpis, "purchase_frequency", 0).unwrap(), orders as f64 / n));
        let churned = expected.customers.iter().filter(|c| c.recency > 365).count() as f64 / n;
        prop_assert!(close(f64_at(kpis, "churn_rate", 0).unwrap(), churned));

        // CLV (§6.1–6.2): margin 1; lifetime = min(1 / annual churn, 10).
        let lifetime = if churned > 0.0 { (1.0 / churned).min(10.0) } else { 10.0 };
        for (i, c) in expected.customers.iter().enumerate() {
            let revenue = c.revenue as f64 / 1e6;
            prop_assert!(close(f64_at(customers, "historical_clv", i).unwrap(), revenue));
            let per_year = c.orders as f64 / c.tenure.max(30) as f64 * 365.25;
            let formula = revenue / c.orders as f64 * per_year * lifetime;
            prop_assert!(close(f64_at(customers, "formula_clv", i).unwrap(), formula));
        }

        // Pareto (§5): ceil(p N⁺) exactly, top revenue over total.
        let positive = &expected.positive;
        let total: i64 = positive.iter().sum();
        let pareto = &table(&computed, "pareto");
        for (i, (num, den)) in [(1i64, 100i64), (5, 100), (1, 10), (2, 10), (5, 10)].iter().enumerate() {
            let k = (num * positive.len() as i64 + den - 1) / den;
            prop_assert_eq!(i64_at(pareto, "customers", i), Some(k));
            let top: i64 = positive.iter().take(k as usize).sum();
            let share = (total > 0).then(|| top as f64 / total as f64);
            match (f64_at(pareto, "revenue_share", i), share) {
                (Some(a), Some(b)) => prop_assert!(close(a, b)),
                (a, b) => prop_assert_eq!(a, b),
            }
        }
        let lorenz = &table(&computed, "lorenz");
        prop_assert_eq!(lorenz.height(), 101);
        for i in 0..=100usize {
            let m = i * positive.len() / 100;
            prop_assert_eq!(i64_at(lorenz, "customers", i), Some(m as i64));
            let bottom: i64 = positive.iter().rev().take(m).sum();
            if total > 0 {
                prop_assert!(close(f64_at(lorenz, "revenue_share", i).unwrap(), bottom as f64 / total as f64));
            }
        }

        // rfm_segments (§4): customers and revenue per segment.
        let mut by_segment: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        for c in &expected.customers {
            let entry = by_segment.entry(c.segment.as_str()).or_insert((0, 0));
            entry.0 += 1;
            entry.1 += c.revenue;
        }
        let segments = &table(&computed, "rfm_segments");
        prop_assert_eq!(segments.height(), by_segment.len());
        for (i, (name, (count, revenue))) in by_segment.iter().enumerate() {
            prop_assert_eq!(str_at(segments, "segment", i), Some(name.to_string()));
            prop_assert_eq!(i64_at(segments, "customers", i), Some(*count));
            prop_assert!(close(f64_at(segments, "revenue", i).unwrap(), *revenue as f64 / 1e6));
        }

        // Cohort retention (§3).
        let as_of = NaiveDate::parse_from_str(AS_OF, "%Y-%m-%d").unwrap();
        let last_index = |cohort: NaiveDate| period_index(cohort, as_of - Days::new(1), grain);
        let as_of_starts_period = period_start(as_of, grain) == as_of;
        let grid = &table(&computed, "cohort_retention");
        prop_assert_eq!(grid.height(), expected.cohorts.len());
        let mut cumulative = 0i64;
        for (i, ((cohort, k), (size, active, purchases, revenue))) in expected.cohorts.iter().enumerate() {
            prop_assert_eq!(str_at(grid, "cohort", i), Some(cohort.to_string()));
            prop_assert_eq!(i64_at(grid, "period_index", i), Some(*k));
            prop_assert_eq!(i64_at(grid, "cohort_size", i), Some(*size));
            prop_assert_eq!(i64_at(grid, "active_customers", i), Some(*active));
            prop_assert_eq!(i64_at(grid, "orders", i), Some(*purchases));
            prop_assert!(close(f64_at(grid, "revenue", i).unwrap(), *revenue as f64 / 1e6));
            prop_assert!(close(f64_at(grid, "retention_rate", i).unwrap(), *active as f64 / *size as f64));
            cumulative = if *k == 0 { *revenue } else { cumulative + revenue };
            prop_assert!(close(
                f64_at(grid, "cumulative_revenue_per_customer", i).unwrap(),
                cumulative as f64 / 1e6 / *size as f64
            ));
            let first = expected.cohorts[&(*cohort, 0)].3;
            let retention = (first != 0).then(|| *revenue as f64 / first as f64);
            match (f64_at(grid, "revenue_retention", i), retention) {
                (Some(a), Some(b)) => prop_assert!(close(a, b)),
                (a, b) => prop_assert_eq!(a, b),
            }
            let complete = *k < last_index(*cohort) || as_of_starts_period;
            prop_assert_eq!(
                grid.column("is_complete").unwrap().get(i).unwrap(),
                AnyValue::Boolean(complete)
            );
        }
    }
}

/// A customer's id, (r, f, m) scores when scored, and segment.
type WindowScored = (String, Option<(i64, i64, i64)>, String);

/// `rfm.window_days`, naively: customers with a purchase in the last `window` days
/// are ranked among themselves on the window's purchases and revenue (recency as
/// ever); the others have no scores and the segment Inactive.
fn naive_window_rfm(lines: &[Line], window: u32, average: bool) -> Vec<WindowScored> {
    let as_of = NaiveDate::parse_from_str(AS_OF, "%Y-%m-%d").unwrap();
    let since = as_of - Days::new(window as u64);
    let orders = naive_orders(lines, true);
    // id → (has a purchase at all, recency, window purchases, window revenue)
    let mut customers: BTreeMap<String, (bool, i64, i64, i64)> = BTreeMap::new();
    for ((id, _), (day, value)) in &orders {
        let entry = customers.entry(id.clone()).or_insert((false, i64::MAX, 0, 0));
        if *value > 0 {
            entry.0 = true;
            entry.1 = entry.1.min((as_of - *day).num_days());
        }
        if *day >= since {
            entry.2 += (*value > 0) as i64;
            entry.3 += value;
        }
    }
    customers.retain(|_, c| c.0);
    // Monetary: the window's revenue, or its revenue per purchase.
    let monetary = |purchases: i64, revenue: i64| {
        if average {
            revenue as f64 / purchases as f64
        } else {
            revenue as f64
        }
    };
    let scored: Vec<(i64, i64, f64)> = customers
        .values()
        .filter(|c| c.2 > 0)
        .map(|c| (c.1, c.2, monetary(c.2, c.3)))
        .collect();
    let n = scored.len() as i64;
    let score = |rank: i64| 1 + 5 * (rank - 1) / n;
    let rules = default_segments();
    customers
        .into_iter()
        .map(|(id, (_, recency, purchases, revenue))| {
            if purchases == 0 {
                return (id, None, "Inactive".to_string());
            }
            let r = score(1 + scored.iter().filter(|o| o.0 > recency).count() as i64);
            let f = score(1 + scored.iter().filter(|o| o.1 < purchases).count() as i64);
            let m = score(
                1 + scored
                    .iter()
                    .filter(|o| o.2 < monetary(purchases, revenue))
                    .count() as i64,
            );
            let fm = ((f + m) as u32).div_ceil(2);
            let segment = rules
                .iter()
                .find(|rule| rule.matches(r as u32, f as u32, m as u32, fm))
                .map_or("Other".to_string(), |rule| rule.name.clone());
            (id, Some((r, f, m)), segment)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn rfm_window_matches_the_naive_implementation(lines in lines(), window in 1..170u32, average: bool) {
        let expected = naive_window_rfm(&lines, window, average);
        let monetary = if average { "average" } else { "total" };
        let yaml = format!("as_of: {AS_OF}\nrfm:\n  window_days: {window}\n  monetary: {monetary}\n");
        let computed = match try_compute(frame(&lines), &yaml, &[]) {
            Err(e) => {
                prop_assert!(expected.is_empty(), "pipeline failed but customers exist: {e}");
                return Ok(());
            }
            Ok(c) => c,
        };
        let customers = &table(&computed, "customers");
        prop_assert_eq!(customers.height(), expected.len());
        for (i, (id, scores, segment)) in expected.iter().enumerate() {
            prop_assert_eq!(str_at(customers, "customer_id", i), Some(id.clone()));
            let got = match (i64_at(customers, "r_score", i), i64_at(customers, "f_score", i), i64_at(customers, "m_score", i)) {
                (Some(r), Some(f), Some(m)) => Some((r, f, m)),
                (None, None, None) => None,
                other => panic!("scores partly null: {other:?}"),
            };
            prop_assert_eq!(got, *scores, "customer {}", id);
            prop_assert_eq!(str_at(customers, "segment", i), Some(segment.clone()));
        }
    }
}
