//! Calendar days as Polars holds them: a `Date` is days since 1970-01-01.

use chrono::NaiveDate;
use polars::prelude::*;

/// Days since 1970-01-01, the physical value of a Polars `Date`.
pub fn epoch_days(date: NaiveDate) -> i32 {
    (date - NaiveDate::default()).num_days() as i32
}

/// The date `days` after 1970-01-01 (a Polars `Date`'s physical value).
pub fn from_epoch_days(days: i32) -> NaiveDate {
    NaiveDate::default() + chrono::Duration::days(days.into())
}

/// A date literal (Polars' `lit(NaiveDate)` would give a datetime).
pub fn date_lit(date: NaiveDate) -> Expr {
    lit(epoch_days(date)).cast(DataType::Date)
}
