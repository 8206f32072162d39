//! The value rules of each section, apart from reading: each check takes a typed
//! section and returns every problem it finds (none: the section is valid), each
//! naming its key within the section. [`super::read`] places them in the file.

use super::types::*;

/// One broken rule: the key within its section, and the message after the key.
pub struct Problem {
    pub key: &'static str,
    pub message: String,
}

fn problem(key: &'static str, message: impl Into<String>) -> Problem {
    Problem {
        key,
        message: message.into(),
    }
}

pub fn customers(config: &CustomersConfig) -> Vec<Problem> {
    let mut problems = Vec::new();
    if config.min_tenure_days == 0 {
        problems.push(problem(
            "min_tenure_days",
            "must be at least 1 (it divides revenue), got 0",
        ));
    }
    problems
}

pub fn kpis(config: &KpisConfig) -> Vec<Problem> {
    let mut problems = Vec::new();
    if config.churn_window_days == 0 {
        problems.push(problem("churn_window_days", "must be at least 1, got 0"));
    }
    problems
}

/// `rfm.bins`; the segment rules' ranges are checked as they are read, each at its
/// list item.
pub fn rfm_bins(bins: u32) -> Vec<Problem> {
    let mut problems = Vec::new();
    if !(2..=9).contains(&bins) {
        problems.push(problem("bins", format!("must be between 2 and 9, got {bins}")));
    }
    problems
}

/// `has_channel`: whether `input.columns.channel` is mapped.
pub fn clv(config: &ClvConfig, has_channel: bool) -> Vec<Problem> {
    let mut problems = Vec::new();
    let margin = config.margin;
    if !(margin > 0.0 && margin <= 1.0) {
        problems.push(problem(
            "margin",
            format!("must be a rate in (0, 1], got {margin}"),
        ));
    }
    let years = config.max_lifetime_years;
    if !(years.is_finite() && years > 0.0) {
        problems.push(problem(
            "max_lifetime_years",
            format!("must be a positive number of years, got {years}"),
        ));
    }
    if config.segment_by.is_empty() {
        problems.push(problem(
            "segment_by",
            "must list at least one of segment, cohort, abc_class, channel",
        ));
    }
    let horizon = config.horizon_months;
    if !(1..=1200).contains(&horizon) {
        problems.push(problem(
            "horizon_months",
            format!("must be between 1 and 1200, got {horizon}"),
        ));
    }
    let rate = config.discount_rate_annual;
    if !(0.0..=10.0).contains(&rate) {
        problems.push(problem(
            "discount_rate_annual",
            format!("must be a yearly rate between 0 and 10 (0.10 = 10%), got {rate}"),
        ));
    }
    if config.penalizer < 0.0 {
        problems.push(problem(
            "penalizer",
            format!("must be 0 or more, got {}", config.penalizer),
        ));
    }
    if config.holdout_days == Some(0) {
        problems.push(problem(
            "holdout_days",
            "must be at least 1 day (or null for no holdout)",
        ));
    }
    if config.segment_by.contains(&Dimension::Channel) && !has_channel {
        problems.push(problem(
            "segment_by",
            "lists `channel`, but `input.columns.channel` is not mapped",
        ));
    }
    problems
}

/// The `input` section's own keys; `input.columns` is [`columns`].
pub fn input(config: &InputConfig) -> Vec<Problem> {
    let mut problems = Vec::new();
    if config.orders.iter().any(|p| p.trim().is_empty()) {
        problems.push(problem("orders", "must not contain an empty path"));
    }
    for path in &config.orders {
        if let Some(reason) = crate::io::url::unsupported(path) {
            problems.push(problem("orders", format!("`{path}` {reason}")));
        }
    }
    for (key, path) in [("identities", &config.identities), ("surveys", &config.surveys)] {
        if let Some(reason) = path.as_deref().and_then(crate::io::url::refused) {
            problems.push(problem(
                key,
                format!("`{}` {reason}", path.as_deref().unwrap_or_default()),
            ));
        }
    }
    if let Some(format) = &config.date_format {
        use chrono::format::{Item, StrftimeItems};
        if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
            problems.push(problem(
                "date_format",
                format!("`{format}` is not a valid chrono/strftime format, e.g. `%Y-%m-%d`"),
            ));
        }
    }
    if let Some(message) = timezone_problem(&config.timezone) {
        problems.push(problem("timezone", message));
    }
    if config.amount_is_unit_price && config.columns.quantity.is_none() {
        problems.push(problem(
            "amount_is_unit_price",
            "is true, but `input.columns.quantity` is not mapped",
        ));
    }
    problems
}

/// Each logical column needs its own input column; margins come from a cost or a
/// margin column, not both.
pub fn columns(columns: &ColumnMap) -> Vec<Problem> {
    let mut problems = Vec::new();
    if columns.cost.is_some() && columns.margin.is_some() {
        problems.push(problem(
            "margin",
            "and `input.columns.cost` are both mapped; map one (margin = value − cost)",
        ));
    }
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (logical, physical) in columns.mapped() {
        if let Some((other, _)) = seen.iter().find(|(_, p)| *p == physical) {
            problems.push(problem(
                logical,
                format!("maps to column `{physical}`, which `input.columns.{other}` already uses; each logical column needs its own input column"),
            ));
        }
        seen.push((logical, physical));
    }
    problems
}

/// The `pareto` section's own keys; `pareto.abc` is [`abc`].
pub fn pareto(config: &ParetoConfig) -> Vec<Problem> {
    let mut problems = Vec::new();
    if config.top_shares.is_empty() {
        problems.push(problem("top_shares", "must list at least one share, e.g. [0.2]"));
    }
    for share in &config.top_shares {
        if share.num == 0 || share.num > share.den {
            problems.push(problem(
                "top_shares",
                format!("must hold shares in (0, 1], got {}", share.value()),
            ));
        }
    }
    let points = config.lorenz_points;
    if !(1..=1_000_000).contains(&points) {
        problems.push(problem(
            "lorenz_points",
            format!("must be between 1 and 1000000, got {points}"),
        ));
    }
    problems
}

pub fn abc(config: &AbcConfig) -> Vec<Problem> {
    let mut problems = Vec::new();
    let AbcConfig { a, b } = *config;
    for (key, f) in [("a", a), ("b", b)] {
        if f.num == 0 || f.num > f.den {
            problems.push(problem(
                key,
                format!("must be a share in (0, 1], got {}", f.value()),
            ));
        }
    }
    if (a.num as u128) * (b.den as u128) >= (b.num as u128) * (a.den as u128) {
        problems.push(problem(
            "b",
            format!(
                "must be greater than `pareto.abc.a` ({}), got {}",
                a.value(),
                b.value()
            ),
        ));
    }
    problems
}

pub fn output(config: &OutputConfig) -> Vec<Problem> {
    let mut problems = Vec::new();
    let dir = &config.dir;
    if let Some(reason) = crate::io::output::unusable_name(dir) {
        problems.push(problem("dir", format!("`{dir}` {reason}")));
    }
    let mut rest = dir.as_str();
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').map(|c| open + c);
        let name = close.map(|c| &rest[open + 1..c]);
        if !matches!(name, Some("as_of" | "run_date")) {
            problems.push(problem(
                "dir",
                format!("`{dir}` may only use the placeholders {{as_of}} and {{run_date}}"),
            ));
            break;
        }
        rest = &rest[close.map_or(rest.len(), |c| c + 1)..];
    }
    if config.formats.is_empty() {
        problems.push(problem("formats", "must list at least one of parquet, csv"));
    }
    problems
}

/// Why `zone` is not a time zone Polars converts to (an IANA name such as
/// `Europe/Berlin`, `UTC`, or a whole-hour offset such as `+02:00`), with the
/// closest names.
fn timezone_problem(zone: &str) -> Option<String> {
    if !zone.trim().is_empty()
        && polars::prelude::TimeZone::opt_try_new(Some(zone)).is_ok_and(|tz| tz.is_some())
    {
        return None;
    }
    let lower = zone.to_lowercase();
    let mut scored: Vec<(f64, &str)> = chrono_tz::TZ_VARIANTS
        .iter()
        .map(|tz| {
            let name = tz.name();
            let score = if name.to_lowercase() == lower {
                2.0
            } else {
                strsim::jaro_winkler(&name.to_lowercase(), &lower)
            };
            (score, name)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let suggestions: Vec<String> = scored.iter().take(3).map(|(_, n)| format!("`{n}`")).collect();
    Some(format!(
        "`{zone}` is not a time zone; use an IANA name such as `Europe/Berlin` or `UTC`, or an offset such as `+02:00`; closest: {}",
        suggestions.join(", ")
    ))
}

/// What an action condition may test on a `customers` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// Text (and dates, as YYYY-MM-DD): `[values]` only.
    Text,
    /// Whole numbers: `[values]` or `{min, max}`.
    Integer,
    /// Numbers: `{min, max}` only.
    Number,
}

/// The `customers` columns an action may test, and of what kind (a test holds this
/// list to the written schema).
pub const ACTION_COLUMNS: &[(&str, ColumnKind)] = &[
    ("customer_id", ColumnKind::Text),
    ("first_order_date", ColumnKind::Text),
    ("last_order_date", ColumnKind::Text),
    ("orders", ColumnKind::Integer),
    ("revenue", ColumnKind::Number),
    ("aov", ColumnKind::Number),
    ("first_order_value", ColumnKind::Number),
    ("recency_days", ColumnKind::Integer),
    ("tenure_days", ColumnKind::Integer),
    ("annual_value", ColumnKind::Number),
    ("cohort", ColumnKind::Text),
    ("channel", ColumnKind::Text),
    ("frequency", ColumnKind::Number),
    ("p_alive", ColumnKind::Number),
    ("expected_purchases", ColumnKind::Number),
    ("expected_spend", ColumnKind::Number),
    ("predicted_clv", ColumnKind::Number),
    ("nps_score", ColumnKind::Integer),
    ("abc_class", ColumnKind::Text),
    ("r_score", ColumnKind::Integer),
    ("f_score", ColumnKind::Integer),
    ("m_score", ColumnKind::Integer),
    ("fm", ColumnKind::Integer),
    ("rfm_cell", ColumnKind::Text),
    ("segment", ColumnKind::Text),
    ("historical_clv", ColumnKind::Number),
    ("formula_clv", ColumnKind::Number),
];

pub fn action_column(name: &str) -> Option<ColumnKind> {
    ACTION_COLUMNS.iter().find(|(c, _)| *c == name).map(|(_, k)| *k)
}

/// One action rule: a file-safe unique name, known columns tested as their kind
/// allows, numeric value columns.
pub fn action(
    name: Option<&str>,
    all: &[Condition],
    any: &[Condition],
    value: &[String],
    earlier: &[ActionRule],
) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Some(name) = name {
        let safe = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !safe {
            problems.push(problem(
                "name",
                format!(
                    "must be letters, digits, `_` or `-` (it names the file actions/NAME.csv), got `{name}`"
                ),
            ));
        }
        if earlier.iter().any(|rule| rule.name == name) {
            problems.push(problem("name", format!("`{name}` is used by an earlier action")));
        }
    }
    let known = || {
        ACTION_COLUMNS
            .iter()
            .map(|(c, _)| *c)
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (key, conditions) in [("all", all), ("any", any)] {
        for condition in conditions {
            let column = &condition.column;
            match (action_column(column), &condition.test) {
                (None, _) => {
                    let hint = super::read::closest(
                        column,
                        &ACTION_COLUMNS.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
                    )
                    .map(|c| format!("did you mean `{c}`? "))
                    .unwrap_or_default();
                    problems.push(problem(
                        key,
                        format!(
                            "tests `{column}`, which is not a customers column; {hint}columns: {}",
                            known()
                        ),
                    ))
                }
                (Some(ColumnKind::Text), Test::Between { .. }) => problems.push(problem(
                    key,
                    format!("`{column}` is text: test it with a list of values, e.g. `{column}: [A, B]`"),
                )),
                (Some(ColumnKind::Number), Test::In(_)) => problems.push(problem(
                    key,
                    format!("`{column}` is a number: test it with `{{min: x, max: y}}`"),
                )),
                _ => {}
            }
        }
    }
    if all.is_empty() && any.is_empty() {
        problems.push(problem("all", "or `any` must give at least one condition"));
    }
    if value.is_empty() {
        problems.push(problem(
            "value",
            "must name at least one numeric customers column",
        ));
    }
    for column in value {
        if !matches!(
            action_column(column),
            Some(ColumnKind::Number | ColumnKind::Integer)
        ) {
            problems.push(problem(
                "value",
                format!("`{column}` is not a numeric customers column"),
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::DataType;

    /// The columns an action may test are the written customers columns, each of
    /// the kind its type allows.
    #[test]
    fn action_columns_are_customers_columns_of_their_kind() {
        let schema = crate::metrics::customers::schema(true, true);
        for (column, kind) in ACTION_COLUMNS {
            let dtype = schema
                .get(column)
                .unwrap_or_else(|| panic!("{column} is not a customers column"));
            let expected = match dtype {
                DataType::String | DataType::Date => ColumnKind::Text,
                DataType::Int64 => ColumnKind::Integer,
                _ => ColumnKind::Number,
            };
            assert_eq!(*kind, expected, "{column}");
        }
    }
}
