//! Action lists: the customers a loyalty play targets, ready for a CRM.
//!
//! Each `actions:` rule is a named filter over the `customers` columns: every `all`
//! condition holds and, when `any` is given, at least one `any` condition (a null
//! value, or a column this run does not have, such as `nps_score` without
//! `input.surveys`, never matches). `actions/NAME` lists customer_id, the columns
//! the rule tests (the reasons), and `expected_value`: the first non-null of the
//! rule's `value` columns; sorted by expected_value, highest first (nulls last),
//! then customer_id.

use polars::prelude::*;
use serde::Serialize;

use crate::config::{ActionRule, Condition, Test};
use crate::schema::CUSTOMER_ID;

pub const EXPECTED_VALUE: &str = "expected_value";

/// The folder of the action tables in the output directory.
pub const FOLDER: &str = "actions";

/// What the manifest says of one action list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionCount {
    pub name: String,
    pub customers: u64,
    /// The sum of expected_value over the list.
    pub expected_value: f64,
}

/// The output table name of a rule: `actions/NAME`.
pub fn table_name(rule: &ActionRule) -> String {
    format!("{FOLDER}/{}", rule.name)
}

fn condition(condition: &Condition, present: &[String]) -> Expr {
    if !present.iter().any(|c| c == &condition.column) {
        return lit(false);
    }
    let value = col(condition.column.as_str());
    let test = match &condition.test {
        Test::In(values) => {
            let values = Series::new("values".into(), values.clone());
            value
                .cast(DataType::String)
                .is_in(lit(values).implode(false), false)
        }
        Test::Between { min, max } => {
            let value = value.cast(DataType::Float64);
            let mut test = lit(true);
            if let Some(min) = min {
                test = test.and(value.clone().gt_eq(lit(*min)));
            }
            if let Some(max) = max {
                test = test.and(value.lt_eq(lit(*max)));
            }
            test
        }
    };
    test.fill_null(lit(false))
}

/// Whether a customer is on the rule's list, over columns `present`.
pub fn matches(rule: &ActionRule, present: &[String]) -> Expr {
    let all = rule
        .all
        .iter()
        .fold(lit(true), |acc, c| acc.and(condition(c, present)));
    if rule.any.is_empty() {
        return all;
    }
    let any = rule
        .any
        .iter()
        .fold(lit(false), |acc, c| acc.or(condition(c, present)));
    all.and(any)
}

/// The columns a rule tests, in the rule's order, each once, that this run has.
pub fn reason_columns(rule: &ActionRule, present: &[String]) -> Vec<String> {
    let mut columns: Vec<String> = Vec::new();
    for condition in rule.all.iter().chain(&rule.any) {
        let column = &condition.column;
        if column != CUSTOMER_ID && !columns.contains(column) && present.contains(column) {
            columns.push(column.clone());
        }
    }
    columns
}

/// The rule's rows among `customers` (a slice of the scored customer table):
/// customer_id, the reasons, expected_value.
pub fn action_rows(customers: LazyFrame, rule: &ActionRule, present: &[String]) -> LazyFrame {
    let values: Vec<Expr> = rule
        .value
        .iter()
        .filter(|c| present.contains(c))
        .map(|c| col(c.as_str()).cast(DataType::Float64))
        .collect();
    let expected = if values.is_empty() {
        lit(NULL).cast(DataType::Float64)
    } else {
        coalesce(&values)
    };
    let mut select = vec![col(CUSTOMER_ID)];
    select.extend(reason_columns(rule, present).iter().map(|c| col(c.as_str())));
    select.push(expected.alias(EXPECTED_VALUE));
    customers.filter(matches(rule, present)).select(select)
}

/// The list in its written order: expected_value, highest first (nulls last), then
/// customer_id. `rows` come in customer order, as every per-customer frame does
/// (ids ascending, or the customer keys, which sort as the ids do), so one stable
/// sort on expected_value keeps that order among ties. Sorted on both columns, the
/// rows were compared encoded as bytes, at random (at 30M lines 0.6 CPU-s of
/// memcmp); `tests/it/actions.rs` holds the two to the same order.
pub fn sorted(rows: LazyFrame) -> LazyFrame {
    rows.sort_by_exprs(
        [col(EXPECTED_VALUE)],
        SortMultipleOptions::default()
            .with_order_descending(true)
            .with_nulls_last(true)
            .with_maintain_order(true),
    )
}

/// An action table's columns and types: customer_id, the reasons typed as in
/// `customers` (`customers_schema`), expected_value.
pub fn schema(rule: &ActionRule, customers_schema: &Schema) -> Schema {
    let present: Vec<String> = customers_schema.iter_names().map(|n| n.to_string()).collect();
    let mut fields = vec![Field::new(CUSTOMER_ID.into(), DataType::String)];
    for column in reason_columns(rule, &present) {
        if let Some(dtype) = customers_schema.get(column.as_str()) {
            fields.push(Field::new(column.as_str().into(), dtype.clone()));
        }
    }
    fields.push(Field::new(EXPECTED_VALUE.into(), DataType::Float64));
    fields.into_iter().collect()
}
