//! Column names: the interface that notebooks and warehouse loads rely on (SPEC §2–§8),
//! plus the internal names the pipeline uses between stages.

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
    /// Revenue of a customer in micro-units.
    pub const REVENUE_MICROS: &str = "__revenue_micros";
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
    pub const RECENCY_DAYS: &str = "recency_days";
    pub const TENURE_DAYS: &str = "tenure_days";
    pub const ANNUAL_VALUE: &str = "annual_value";
    pub const COHORT: &str = "cohort";
    pub const CHANNEL: &str = "channel";
    pub const ABC_CLASS: &str = "abc_class";
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
    pub const PURCHASE_FREQUENCY: &str = "purchase_frequency";
    pub const REPEAT_PURCHASE_RATE: &str = "repeat_purchase_rate";
    pub const CHURN_WINDOW_DAYS: &str = "churn_window_days";
    pub const CHURN_RATE: &str = "churn_rate";
    pub const ANNUAL_CHURN_RATE: &str = "annual_churn_rate";
    pub const UPSELL_RATIO: &str = "upsell_ratio";
    pub const GINI: &str = "gini";
    pub const TOP_20PCT_REVENUE_SHARE: &str = "top_20pct_revenue_share";
    pub const CUSTOMERS_FOR_80PCT: &str = "customers_for_80pct";
    pub const CUSTOMERS_FOR_80PCT_SHARE: &str = "customers_for_80pct_share";
    /// Fitted model parameters; null until a predictive model is configured.
    pub const MODEL: &str = "model";
    pub const MODEL_PARAMETERS: [&str; 7] = [
        "model_r",
        "model_alpha",
        "model_a",
        "model_b",
        "gg_p",
        "gg_q",
        "gg_v",
    ];
    pub const MODEL_LOG_LIKELIHOOD: &str = "model_log_likelihood";
}
