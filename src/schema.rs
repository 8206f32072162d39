//! Column names: the interface that notebooks and warehouse loads rely on (SPEC §2–§8),
//! plus the internal names the pipeline uses between stages. Each output table's
//! full schema (names, types, order) is a `schema()` beside the code that makes it,
//! listed by [`crate::pipeline::output_schema`].

use polars::prelude::{DataType, Field, Schema};

/// A table's schema from its columns written `name type, name type, …` in order,
/// with the types `str`, `date`, `i64`, `f64` and `bool`.
pub fn parse(spec: &str) -> Schema {
    spec.split(',')
        .map(|column| {
            let (name, kind) = column.trim().split_once(' ').unwrap_or((column.trim(), ""));
            let dtype = match kind.trim() {
                "str" => DataType::String,
                "date" => DataType::Date,
                "i64" => DataType::Int64,
                "f64" => DataType::Float64,
                "bool" => DataType::Boolean,
                other => panic!("column `{name}`: unknown type `{other}` in a schema"),
            };
            Field::new(name.into(), dtype)
        })
        .collect()
}

/// Internal columns of cleaned lines and orders. Prefixed so they never collide
/// with a physical input column of the same logical name.
pub mod internal {
    pub const CUSTOMER_ID: &str = "__customer_id";
    pub const ORDER_ID: &str = "__order_id";
    pub const ORDER_DATE: &str = "__order_date";
    /// Line or order value in integer micro-units (SPEC preamble).
    pub const VALUE: &str = "__value_micros";
    pub const CATEGORY: &str = "__category";
    pub const CHANNEL: &str = "__channel";
    /// An order's row number among the orders sorted by customer, then order_id.
    pub const ORDER_RANK: &str = "__order_rank";
    /// The smallest and largest category number among an order's positive lines.
    pub const CATEGORY_MIN: &str = "__category_min";
    pub const CATEGORY_MAX: &str = "__category_max";
    /// Revenue of a customer in micro-units.
    pub const REVENUE_MICROS: &str = "__revenue_micros";
    /// The first purchase's value in micro-units (by date, then order_id).
    pub const FIRST_ORDER_MICROS: &str = "__first_order_micros";
    /// A line's or order's gross margin in micro-units (`input.columns.cost` or
    /// `margin`), and a customer's summed.
    pub const MARGIN: &str = "__margin_micros";
    pub const GROSS_MARGIN_MICROS: &str = "__gross_margin_micros";
    /// A customer's latest purchase before the current retention window.
    pub const BEFORE_WINDOW_LAST: &str = "__before_window_last";
    /// With `rfm.window_days`: purchases and revenue (micro-units) in the window.
    pub const RFM_ORDERS: &str = "__rfm_orders";
    pub const RFM_REVENUE_MICROS: &str = "__rfm_revenue_micros";
}

/// Shared by several output tables.
pub const CUSTOMER_ID: &str = "customer_id";
pub const CUSTOMERS: &str = "customers";
pub const ORDERS: &str = "orders";
pub const REVENUE: &str = "revenue";
pub const REVENUE_SHARE: &str = "revenue_share";

/// `customers` (SPEC §2, §5).
pub mod customers {
    pub const TABLE: &str = "customers";
    pub const FIRST_ORDER_DATE: &str = "first_order_date";
    pub const LAST_ORDER_DATE: &str = "last_order_date";
    pub const AOV: &str = "aov";
    pub const FIRST_ORDER_VALUE: &str = "first_order_value";
    pub const RECENCY_DAYS: &str = "recency_days";
    pub const TENURE_DAYS: &str = "tenure_days";
    pub const ANNUAL_VALUE: &str = "annual_value";
    pub const COHORT: &str = "cohort";
    pub const CHANNEL: &str = "channel";
    pub const ABC_CLASS: &str = "abc_class";
    pub const HISTORICAL_CLV: &str = "historical_clv";
    pub const FORMULA_CLV: &str = "formula_clv";
}

/// RFM columns of `customers` and the `rfm_segments` table (SPEC §4).
pub mod rfm {
    pub const SEGMENTS_TABLE: &str = "rfm_segments";
    pub const R_SCORE: &str = "r_score";
    pub const F_SCORE: &str = "f_score";
    pub const M_SCORE: &str = "m_score";
    pub const RFM_CELL: &str = "rfm_cell";
    pub const FM: &str = "fm";
    pub const SEGMENT: &str = "segment";
    pub const OTHER: &str = "Other";
    pub const SHARE_OF_CUSTOMERS: &str = "share_of_customers";
    pub const SHARE_OF_REVENUE: &str = "share_of_revenue";
    pub const MEAN_RECENCY_DAYS: &str = "mean_recency_days";
    pub const MEAN_ORDERS: &str = "mean_orders";
    pub const MEAN_REVENUE: &str = "mean_revenue";
    pub const MEAN_HISTORICAL_CLV: &str = "mean_historical_clv";
    pub const MEAN_FORMULA_CLV: &str = "mean_formula_clv";
    pub const MEAN_PREDICTED_CLV: &str = "mean_predicted_clv";
}

/// `cohort_retention` (SPEC §3), long format keyed by (cohort, period_index).
pub mod cohort {
    pub const TABLE: &str = "cohort_retention";
    pub const COHORT: &str = "cohort";
    pub const PERIOD_INDEX: &str = "period_index";
    pub const COHORT_SIZE: &str = "cohort_size";
    pub const ACTIVE_CUSTOMERS: &str = "active_customers";
    pub const RETENTION_RATE: &str = "retention_rate";
    pub const CUMULATIVE_REVENUE_PER_CUSTOMER: &str = "cumulative_revenue_per_customer";
    pub const REVENUE_RETENTION: &str = "revenue_retention";
    pub const IS_COMPLETE: &str = "is_complete";
}

/// `clv_by_segment` (SPEC §6), keyed by (dimension, value).
pub mod clv {
    pub const BY_SEGMENT_TABLE: &str = "clv_by_segment";
    pub const DIMENSION: &str = "dimension";
    pub const VALUE: &str = "value";
    pub const MEAN_P_ALIVE: &str = "mean_p_alive";
}

/// `pareto` and `lorenz` (SPEC §5).
pub mod pareto {
    pub const TABLE: &str = "pareto";
    pub const LORENZ_TABLE: &str = "lorenz";
    pub const TOP_SHARE: &str = "top_share";
    pub const CUSTOMER_SHARE: &str = "customer_share";
}

/// `kpis` (SPEC §7), one row.
pub mod kpis {
    pub const TABLE: &str = "kpis";
    pub const AS_OF: &str = "as_of";
    pub const AOV: &str = "aov";
    pub const SALES_PER_CUSTOMER: &str = "sales_per_customer";
    pub const MEAN_FIRST_ORDER_VALUE: &str = "mean_first_order_value";
    pub const PURCHASE_FREQUENCY: &str = "purchase_frequency";
    pub const REPEAT_PURCHASE_RATE: &str = "repeat_purchase_rate";
    pub const CHURN_WINDOW_DAYS: &str = "churn_window_days";
    pub const CHURN_RATE: &str = "churn_rate";
    pub const PERIOD_RETENTION_RATE: &str = "period_retention_rate";
    pub const ANNUAL_CHURN_RATE: &str = "annual_churn_rate";
    pub const UPSELL_RATIO: &str = "upsell_ratio";
    pub const GINI: &str = "gini";
    pub const TOP_20PCT_REVENUE_SHARE: &str = "top_20pct_revenue_share";
    pub const CUSTOMERS_FOR_80PCT: &str = "customers_for_80pct";
    pub const CUSTOMERS_FOR_80PCT_SHARE: &str = "customers_for_80pct_share";
    /// Fitted model parameters; null until a predictive model is configured.
    pub const MODEL: &str = "model";
    /// (column, model parameter): BG/NBD and MBG/NBD use r, α, a, b; Pareto/NBD r, α, s, β.
    pub const MODEL_PARAMETERS: [(&str, &str); 6] = [
        ("model_r", "r"),
        ("model_alpha", "alpha"),
        ("model_a", "a"),
        ("model_b", "b"),
        ("model_s", "s"),
        ("model_beta", "beta"),
    ];
    pub const GG_PARAMETERS: [(&str, &str); 3] = [("gg_p", "p"), ("gg_q", "q"), ("gg_v", "v")];
    pub const MODEL_LOG_LIKELIHOOD: &str = "model_log_likelihood";
}

/// The §6.3 summary and predictions, columns of `customers`.
pub mod model {
    pub const FREQUENCY: &str = "frequency";
    pub const T_X: &str = "t_x";
    pub const BIG_T: &str = "T";
    pub const MONETARY_VALUE: &str = "monetary_value";
    pub const P_ALIVE: &str = "p_alive";
    pub const EXPECTED_PURCHASES: &str = "expected_purchases";
    pub const EXPECTED_SPEND: &str = "expected_spend";
    pub const PREDICTED_CLV: &str = "predicted_clv";
}

/// `clv_holdout` and the holdout KPIs (`clv.holdout_days`).
pub mod holdout {
    pub const TABLE: &str = "clv_holdout";
    pub const CALIBRATION_FREQUENCY: &str = "calibration_frequency";
    pub const ACTUAL: &str = "actual_purchases";
    pub const PREDICTED: &str = "predicted_purchases";
    pub const NAIVE: &str = "naive_purchases";
    pub const HOLDOUT_DAYS: &str = "holdout_days";
    /// kpis columns: `{model,naive}_holdout_{mae,rmse,error_pct,rank_correlation}`.
    pub const PREDICTORS: [&str; 2] = ["model", "naive"];
    pub const MEASURES: [&str; 4] = ["mae", "rmse", "error_pct", "rank_correlation"];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_gives_its_columns_in_order() {
        let schema = parse("cohort date, size i64, rate f64, name str, complete bool");
        let fields: Vec<(String, DataType)> =
            schema.iter().map(|(n, t)| (n.to_string(), t.clone())).collect();
        assert_eq!(
            fields,
            [
                ("cohort".to_string(), DataType::Date),
                ("size".to_string(), DataType::Int64),
                ("rate".to_string(), DataType::Float64),
                ("name".to_string(), DataType::String),
                ("complete".to_string(), DataType::Boolean),
            ]
        );
    }

    #[test]
    #[should_panic(expected = "unknown type `int`")]
    fn an_unknown_type_is_refused() {
        parse("orders int");
    }
}
