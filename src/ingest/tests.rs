//! The fold against naive references: order numbering, batches, shards and passes.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use foldhash::fast::FixedState;

use super::book::*;
use super::dedupe::*;
use super::orders::*;
use super::*;
use crate::config;
use crate::dates::epoch_days;
use crate::ingest::plan;
use crate::schema::internal::{
    CATEGORY_MAX, CATEGORY_MIN, CHANNEL, CUSTOMER_ID, MARGIN, ORDER_DATE, ORDER_RANK, VALUE,
};

/// Order numbers against a map from (customer, order_id) to the order first
/// made for it: as the newest, in the chain, in the table, and moved from the
/// chain to the table.
fn numbers_match_a_map(lookups: &[(u32, String)]) {
    let hasher = FixedState::with_seed(1);
    let mut orders = Orders::with_capacity(0);
    // Each customer's head, as its customer table entry keeps it.
    let mut heads: BTreeMap<u32, Head> = BTreeMap::new();
    let mut expected: std::collections::BTreeMap<(u32, &str), u32> = Default::default();
    for (customer, id) in lookups {
        let head = heads.entry(*customer).or_insert(Head::NEW);
        let o = orders.number(&hasher, *customer, head, id, None);
        let next = expected.len() as u32;
        let want = *expected.entry((*customer, id.as_str())).or_insert(next);
        assert_eq!(o, want, "customer {customer} order {id}");
        assert_eq!(orders.customer[o as usize], *customer);
    }
}

#[test]
fn orders_are_found_as_the_newest_in_the_chain_and_in_the_table() {
    let lookups = |pairs: &[(u32, &str)]| -> Vec<(u32, String)> {
        pairs.iter().map(|(c, id)| (*c, id.to_string())).collect()
    };
    // Customer 0's orders found as its newest and in its chain, across another
    // customer's orders.
    numbers_match_a_map(&lookups(&[
        (0, "a"),
        (0, "b"),
        (0, "a"),
        (1, "a"),
        (0, "b"),
        (0, "c"),
        (0, "a"),
        (1, "b"),
        (1, "a"),
    ]));
    // One customer's chain past CHAIN_ORDERS (it goes to the table), then every
    // order again.
    let ids: Vec<String> = (0..3 * CHAIN_ORDERS).map(|i| format!("order-{i}")).collect();
    let mut long: Vec<(u32, String)> = ids.iter().map(|id| (7, id.clone())).collect();
    long.extend(ids.iter().rev().map(|id| (7, id.clone())));
    numbers_match_a_map(&long);
}

proptest::proptest! {
    /// Any interleaving of customers and repeats of their orders.
    #[test]
    fn any_lookups_match_a_map(
        lookups in proptest::collection::vec((0u32..6, 0u8..24), 0..300),
    ) {
        let lookups: Vec<(u32, String)> =
            lookups.into_iter().map(|(c, o)| (c, format!("o{o}"))).collect();
        numbers_match_a_map(&lookups);
    }
}

/// Lines with what makes the fold work: padded and long ids (past the 12 bytes
/// a view holds), an order split far apart, exact duplicates adjacent and far
/// apart, rows equal but for one raw column, a refund, channels and categories.
fn lines() -> DataFrame {
    let long = "customer-with-a-long-id-0001";
    df!(
        "customer_id" => [Some("c1"), Some(" c1"), Some("c2"), Some(long), Some("c1"), Some(long), Some("c2"), Some("c3"), Some("c1"), None, Some("c3"), Some("c2"), Some(" c2")],
        "order_id" => ["o1", "o1", "o9", "order-number-000000001", "o1", "order-number-000000001", "o9", "o3", "o2", "o4", "o3", "o8", "o9"],
        "order_date" => ["2024-01-05", "2024-01-05", "2024-01-06", "2024-02-01", "2024-01-04", "2024-02-01", "2024-01-06", "2024-03-01", "2024-01-04", "2024-01-01", "2024-03-01", "2024-01-06", "2024-01-06"],
        "amount" => [10.0, 10.0, 5.5, 7.25, -2.0, 7.25, 5.5, 3.0, 1.0, 1.0, 3.0, 4.0, 5.5],
        "note" => [1i64, 1, 2, 3, 4, 3, 2, 5, 6, 7, 9, 8, 2],
        "channel" => ["web", "web", "store", "app", "app", "app", "store", "web", "store", "web", "web", "app", "store"],
        "category" => ["toys", "books", "toys", "games", "toys", "games", "toys", "books", "toys", "toys", "books", "games", "toys"],
    )
    .unwrap()
}

fn fold(
    frame: &DataFrame,
    batch_ends: &[usize],
    (shards, passes): (usize, usize),
) -> (DataFrame, Series, Vec<CleaningStep>) {
    let config = config::from_str(
        // `note` doubles as the line cost: the margin is summed through every path.
        "input:\n  orders: x.parquet\n  columns:\n    channel: channel\n    category: category\n    cost: note\n",
        "test.yaml",
        &[],
    )
    .unwrap();
    let mut lf = frame.clone().lazy();
    let schema = lf.collect_schema().unwrap();
    let normalised = plan::normalise(lf, &schema, &config.input, config.clv.margin, "test").unwrap();
    let plan = plan::line_plan(&normalised, &config.cleaning);
    let lines = plan.lines.clone().collect().unwrap();
    let mut book = OrderBook::new(
        &normalised.raw_columns,
        &plan,
        None,
        true,
        (shards, passes),
        lines.height() / 3,
    );
    for _ in 0..passes {
        let mut start = 0;
        for &end in batch_ends.iter().chain([&lines.height()]) {
            book.add(&lines.slice(start as i64, end - start)).unwrap();
            start = end;
        }
        book.end_pass();
    }
    // As `ingest` does: the copies held within batches, else the input read again.
    let candidates = book.duplicate_candidates();
    if !candidates.is_empty() {
        let raw = match book.held_candidates(&candidates).unwrap() {
            Some(held) => held,
            None => read_candidates(&normalised, &plan, candidates).unwrap(),
        };
        book.remove_duplicates(raw).unwrap();
    }
    let mut ingested = book.finish(&plan.reasons).unwrap();
    // Channel numbers named, for comparison across shard counts.
    let labels = ingested.channels.unwrap();
    let codes = ingested.orders.column(CHANNEL).unwrap().u32().unwrap().clone();
    let named = labels.take(&codes).unwrap().with_name(CHANNEL.into());
    ingested.orders.replace(CHANNEL, named.into_column()).unwrap();
    (ingested.orders, ingested.customer_ids, ingested.cleaning)
}

/// Panics unless each string column of `frame` holds only its own strings.
fn assert_owns_strings(frame: &DataFrame) {
    let mut strings = 0;
    for column in frame.columns() {
        let Ok(texts) = column.str() else { continue };
        for array in texts.downcast_iter() {
            strings += 1;
            // Buffers hold only the strings longer than 12 bytes, of these rows.
            assert!(
                array.total_buffer_len() <= array.total_bytes_len(),
                "column {}: {} buffer bytes for {} bytes of strings",
                column.name(),
                array.total_buffer_len(),
                array.total_bytes_len()
            );
        }
    }
    assert!(strings > 0, "no string column in {frame}");
}

/// The raw values of lines whose fingerprints repeat, held from their batch or read
/// again, are kept until step 3. They must own their strings: a gathered or
/// filtered string column shares its source's buffers, which kept whole decoded
/// pages alive.
#[test]
fn lines_kept_for_step_3_own_their_strings() {
    let extra = 200;
    let long = |what: &str| {
        (0..extra)
            .map(|i| format!("another-long-{what}-{i:06}"))
            .collect::<Vec<_>>()
    };
    let mut frame = lines();
    frame
        .vstack_mut_owned(
            df!(
                "customer_id" => long("customer"),
                "order_id" => long("order"),
                "order_date" => vec!["2024-01-07"; extra],
                "amount" => vec![1.0; extra],
                "note" => vec![0i64; extra],
                "channel" => vec!["web"; extra],
                "category" => vec!["toys"; extra],
            )
            .unwrap(),
        )
        .unwrap();
    frame.rechunk_mut_par();
    let config = config::from_str("input:\n  orders: x.parquet\n", "test.yaml", &[]).unwrap();
    let mut lf = frame.lazy();
    let schema = lf.collect_schema().unwrap();
    let normalised = plan::normalise(lf, &schema, &config.input, config.clv.margin, "test").unwrap();
    let plan = plan::line_plan(&normalised, &config.cleaning);
    let mut lines = plan.lines.clone().collect().unwrap();
    lines.rechunk_mut_par();
    let mut book = OrderBook::new(&normalised.raw_columns, &plan, None, true, (1, 1), lines.height());
    book.add(&lines).unwrap();
    // The two exact copies of "c2 o9" and of the long id's line, and the near copies.
    assert!(book.held_rows.len() >= 4, "{:?}", book.held_rows);
    book.held.iter().for_each(assert_owns_strings);
    // Read again: the long id's line and one of the long extra lines.
    let again = read_candidates(&normalised, &plan, vec![3, 5, 20]).unwrap();
    assert_eq!(again.height(), 3);
    assert_owns_strings(&again);
}

/// Copies of a line in one batch or in two batches one after the other are held
/// from their batches; copies further apart leave the input to be read again.
#[test]
fn copies_in_the_same_or_the_next_batch_are_held() {
    let config = config::from_str("input:\n  orders: x.parquet\n", "test.yaml", &[]).unwrap();
    let mut lf = lines().lazy();
    let schema = lf.collect_schema().unwrap();
    let normalised = plan::normalise(lf, &schema, &config.input, config.clv.margin, "test").unwrap();
    let plan = plan::line_plan(&normalised, &config.cleaning);
    let lines = plan.lines.clone().collect().unwrap();
    let held = |batch_ends: &[usize]| {
        let mut book = OrderBook::new(&normalised.raw_columns, &plan, None, true, (2, 1), lines.height());
        let mut start = 0;
        for &end in batch_ends.iter().chain([&lines.height()]) {
            book.add(&lines.slice(start as i64, end - start)).unwrap();
            start = end;
        }
        book.end_pass();
        let candidates = book.duplicate_candidates();
        assert!(candidates.len() >= 4, "{candidates:?}");
        book.held_candidates(&candidates).unwrap().is_some()
    };
    // Rows 2, 6 and 12 share a fingerprint, as do rows 3 and 5.
    assert!(held(&[]));
    assert!(held(&[4, 8]), "copies in the next batch");
    assert!(!held(&[3, 4]), "row 2 is two batches before rows 6 and 12");
}

/// An order of many lines (past the walk down its lines, into the map) finds its
/// exact copies, near and far apart, whatever the batches and shards.
#[test]
fn copies_in_an_order_of_many_lines_are_found() {
    let n = 200usize;
    // Line i costs i + 1 cents; lines 3, 40 and 150 come again (line 3 twice).
    let mut amounts: Vec<f64> = (0..n).map(|i| (i + 1) as f64 / 100.0).collect();
    amounts.extend([4.0 / 100.0, 41.0 / 100.0, 151.0 / 100.0, 4.0 / 100.0]);
    let rows = amounts.len();
    let frame = df!(
        "customer_id" => vec!["c1"; rows],
        "order_id" => vec!["o1"; rows],
        "order_date" => vec!["2024-01-05"; rows],
        "amount" => amounts,
        "note" => vec![0i64; rows],
        "channel" => vec!["web"; rows],
        "category" => vec!["toys"; rows],
    )
    .unwrap();
    for (batch_ends, shards) in [(vec![], 1), (vec![50, 120, 202], 3)] {
        let (orders, _, cleaning) = fold(&frame, &batch_ends, (shards, 1));
        assert_eq!(cleaning[2].dropped, 4, "step 3 drops the four copies");
        let value = orders.column(VALUE).unwrap().i128().unwrap().get(0).unwrap();
        let expected: i128 = (1..=n as i128).map(|cents| cents * 10_000).sum();
        assert_eq!(value, expected);
    }
}

#[test]
fn any_batch_split_shard_count_and_pass_count_fold_to_the_same_orders() {
    let frame = lines();
    let (orders, ids, cleaning) = fold(&frame, &[], (1, 1));
    // Step 1: one null customer. Step 3: "c2 o9" twice and the long id's line
    // twice are exact duplicates; "c3 o3" differs in `note`, " c2 o9" only in the
    // raw text of its id (one order after trimming, but not a duplicate).
    assert_eq!(cleaning[0].dropped, 1);
    assert_eq!(cleaning[2].dropped, 2, "{cleaning:?}");
    assert_eq!(cleaning[4].rows_out, 6);
    let texts: Vec<&str> = ids.str().unwrap().iter().flatten().collect();
    assert_eq!(texts, ["c1", "c2", "c3", "customer-with-a-long-id-0001"]);
    let expected = df!(
        CUSTOMER_ID => [0u32, 0, 1, 1, 2, 3],
        ORDER_RANK => [0u32, 1, 2, 3, 4, 5],
        VALUE => [18_000_000i64, 1_000_000, 4_000_000, 11_000_000, 6_000_000, 7_250_000],
        CHANNEL => ["app", "store", "app", "store", "web", "app"],
    )
    .unwrap();
    let got = orders.select([CUSTOMER_ID, ORDER_RANK, VALUE, CHANNEL]).unwrap();
    assert!(got.equals(&expected), "{got}\n{expected}");
    let first: Vec<i32> = orders
        .column(ORDER_DATE)
        .unwrap()
        .cast(&DataType::Int32)
        .unwrap()
        .i32()
        .unwrap()
        .into_no_null_iter()
        .collect();
    assert_eq!(first[0], epoch_days(NaiveDate::from_ymd_opt(2024, 1, 4).unwrap()));
    // c1's o1 has toys and books among its positive lines: a range, not a point.
    let (min, max) = (
        orders.column(CATEGORY_MIN).unwrap(),
        orders.column(CATEGORY_MAX).unwrap(),
    );
    assert_ne!(min.get(0).unwrap(), max.get(0).unwrap());
    assert_eq!(min.get(4).unwrap(), max.get(4).unwrap());

    // Per customer: two distinct categories among positive lines of purchases?
    let upsell = |orders: &DataFrame| {
        orders
            .clone()
            .lazy()
            .filter(col(VALUE).gt(lit(0i64)))
            .group_by([col(CUSTOMER_ID)])
            .agg([col(CATEGORY_MIN)
                .min()
                .neq(col(CATEGORY_MAX).max())
                .alias("upsell")])
            .sort([CUSTOMER_ID], SortMultipleOptions::default())
            .collect()
            .unwrap()
    };
    let expected_upsell =
        df!(CUSTOMER_ID => [0u32, 1, 2, 3], "upsell" => [true, true, false, false]).unwrap();
    assert!(upsell(&orders).equals(&expected_upsell), "{}", upsell(&orders));
    // Category numbers are per shard; everything else is the same at any split.
    let without_categories = |o: &DataFrame| o.drop_many([CATEGORY_MIN, CATEGORY_MAX]);
    for (shards, passes) in [(1, 1), (2, 1), (3, 1), (8, 1), (1, 2), (2, 3), (3, 4)] {
        for ends in [
            vec![1],
            vec![3, 6],
            vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
            vec![5],
        ] {
            let (o, i, c) = fold(&frame, &ends, (shards, passes));
            let context = format!("{shards} shards, {passes} passes, batches ending {ends:?}");
            assert!(
                without_categories(&o).equals_missing(&without_categories(&orders)),
                "{context}\n{o}"
            );
            assert!(upsell(&o).equals(&expected_upsell), "{context}\n{}", upsell(&o));
            assert!(i.equals(&ids));
            assert_eq!(c, cleaning);
        }
    }
}

/// A random line: customer, order, date, amount, note, channel.
type Row = (String, String, String, f64, i64, String);

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

    /// Random lines, with copies near and far and padded ids: at any shard count,
    /// pass count and batch split, the fold gives the orders of a naive roll-up
    /// (equal rows once; per trimmed customer and order, in id order, the
    /// earliest date, the summed value and the smallest channel).
    #[test]
    fn passes_shards_and_batches_never_change_the_orders(
        raw in proptest::collection::vec((0..6u8, proptest::bool::ANY, 0..4u8, 0..40u32, -300i64..3000, 0..3u8), 1..60),
        copies in proptest::collection::vec(0..60usize, 0..6),
        (shards, passes) in (1..4usize, 1..5usize),
        cut in 1..20usize,
    ) {
        let mut rows: Vec<Row> = raw
            .iter()
            .map(|&(c, padded, o, day, cents, channel)| {
                let customer = if padded { format!(" c{c}") } else { format!("c{c}") };
                let date = (NaiveDate::from_ymd_opt(2024, 1, 1).unwrap() + chrono::Duration::days(day as i64)).to_string();
                (customer, format!("o{o}"), date, cents as f64 / 100.0, i64::from(channel), ["web", "app", "store"][channel as usize].to_string())
            })
            .collect();
        for &i in &copies {
            let copy = rows[i % rows.len()].clone();
            rows.push(copy);
        }
        let column = |f: fn(&Row) -> String| -> Vec<String> { rows.iter().map(f).collect() };
        let frame = df!(
            "customer_id" => column(|r| r.0.clone()),
            "order_id" => column(|r| r.1.clone()),
            "order_date" => column(|r| r.2.clone()),
            "amount" => rows.iter().map(|r| r.3).collect::<Vec<_>>(),
            "note" => rows.iter().map(|r| r.4).collect::<Vec<_>>(),
            "channel" => column(|r| r.5.clone()),
            "category" => column(|r| r.5.clone()),
        )
        .unwrap();
        // Naively: equal rows once, then per (trimmed customer, order), in id order:
        // the earliest date, the summed value and the smallest channel.
        let mut distinct = rows.clone();
        distinct.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        distinct.dedup();
        // The margin: the value less the cost (`note`, in whole units).
        let mut naive: BTreeMap<(String, String), (String, i64, String, i64)> = BTreeMap::new();
        for (customer, order, date, amount, cost, channel) in &distinct {
            let micros = (amount * 100.0).round() as i64 * 10_000;
            let entry = naive
                .entry((customer.trim().to_string(), order.clone()))
                .or_insert_with(|| (date.clone(), 0, channel.clone(), 0));
            entry.0 = entry.0.clone().min(date.clone());
            entry.1 += micros;
            entry.2 = entry.2.clone().min(channel.clone());
            entry.3 += micros - cost * 1_000_000;
        }
        let ends: Vec<usize> = (cut..frame.height()).step_by(cut).collect();
        let (orders, ids, cleaning) = fold(&frame, &ends, (shards, passes));
        let texts: Vec<String> = ids.str().unwrap().iter().flatten().map(String::from).collect();
        let mut customers: Vec<String> = naive.keys().map(|(c, _)| c.clone()).collect();
        customers.dedup();
        proptest::prop_assert_eq!(texts, customers);
        let keys: Vec<u32> = orders.column(CUSTOMER_ID).unwrap().u32().unwrap().into_no_null_iter().collect();
        let dates = orders.column(ORDER_DATE).unwrap().cast(&DataType::String).unwrap();
        let values: Vec<i64> = orders.column(VALUE).unwrap().i128().unwrap().into_no_null_iter().map(|v| v as i64).collect();
        let channels = orders.column(CHANNEL).unwrap().cast(&DataType::String).unwrap();
        let margins: Vec<i64> = orders.column(MARGIN).unwrap().i128().unwrap().into_no_null_iter().map(|v| v as i64).collect();
        let got: Vec<(String, String, i64, String, i64)> = (0..orders.height())
            .map(|k| {
                let text = |c: &Column| c.str().unwrap().get(k).unwrap().to_string();
                (ids.str().unwrap().get(keys[k] as usize).unwrap().to_string(), text(&dates), values[k], text(&channels), margins[k])
            })
            .collect();
        let want: Vec<(String, String, i64, String, i64)> = naive
            .iter()
            .map(|((customer, _), (date, value, channel, margin))| (customer.clone(), date.clone(), *value, channel.clone(), *margin))
            .collect();
        proptest::prop_assert_eq!(got, want);
        proptest::prop_assert_eq!(cleaning[2].dropped as usize, rows.len() - distinct.len());
    }
}

/// Customer keys follow customer_id text order at any split: each shard's
/// customers are sorted at its seal and the shards' lists merged, with ids that
/// tie on their first 16 bytes (the text decides) among short ones. Each
/// customer's orders follow its key.
#[test]
fn customer_keys_follow_the_text_at_any_split() {
    let shared = "customer-with-a-shared-prefix-";
    let ids: Vec<String> = (0..60u32)
        .map(|i| match i % 3 {
            0 => format!("{shared}{:03}", (i * 37) % 101),
            1 => format!("c{:02}", (i * 53) % 97),
            _ => format!("{shared}{}", (i * 11) % 7),
        })
        .collect();
    let n = ids.len();
    let frame = df!(
        "customer_id" => &ids,
        "order_id" => (0..n).map(|i| format!("o{}", i % 4)).collect::<Vec<_>>(),
        "order_date" => (0..n).map(|i| format!("2024-01-{:02}", 1 + i % 28)).collect::<Vec<_>>(),
        "amount" => (0..n).map(|i| 1.0 + i as f64).collect::<Vec<_>>(),
        "note" => (0..n as i64).collect::<Vec<_>>(),
        "channel" => (0..n).map(|i| ["web", "app"][i % 2]).collect::<Vec<_>>(),
        "category" => (0..n).map(|i| ["toys", "books"][i % 2]).collect::<Vec<_>>(),
    )
    .unwrap();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.sort_unstable();
    expected.dedup();
    for (shards, passes) in [(1, 1), (3, 1), (8, 1), (2, 3)] {
        let (orders, customer_ids, _) = fold(&frame, &[7, 30], (shards, passes));
        let got: Vec<&str> = customer_ids.str().unwrap().iter().map(Option::unwrap).collect();
        assert_eq!(got, expected, "{shards} shards, {passes} passes");
        // Each order's customer has the order's (customer, order_id) lines.
        let keys = orders.column(CUSTOMER_ID).unwrap().u32().unwrap();
        let values = orders.column(VALUE).unwrap().i128().unwrap();
        let mut totals: BTreeMap<&str, i128> = BTreeMap::new();
        for (key, value) in keys.into_no_null_iter().zip(values.into_no_null_iter()) {
            *totals.entry(got[key as usize]).or_default() += value;
        }
        for id in &expected {
            let lines: f64 = (0..n).filter(|&i| ids[i] == *id).map(|i| 1.0 + i as f64).sum();
            assert_eq!(
                totals[id],
                (lines * 1e6) as i128,
                "{id}: {shards} shards, {passes} passes"
            );
        }
    }
}
