//! Knobs for tests and performance work, outside the config: the environment is
//! read once, at the command-line edge ([`Settings::from_env`]), and the struct is
//! passed down. No module below `app` reads the environment, so a library caller
//! (or a test in-process) sets these fields directly.

use std::time::Duration;

/// Test hooks and diagnostics of one run. The default is a production run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// `LOYALTY_TEST_FOLD_PASSES`: passes over the input instead of the size rule's
    /// ([`crate::ingest::passes_for`]), so that small inputs fold in several passes.
    pub fold_passes: Option<usize>,
    /// `LOYALTY_TEST_SLICE_ROWS`: rows per slice of every table made in slices (the
    /// customer table, the orders' customer slices), so that small inputs make many.
    pub slice_rows: Option<usize>,
    /// `LOYALTY_TEST_HOLD_{BEFORE,DURING,AFTER}_PUBLISH_MS`: pauses around the
    /// publishing swap, so fault tests can signal at those moments.
    pub publish_holds: PublishHolds,
    /// `LOYALTY_TEST_PANIC`: the run panics at once (the exit code of a bug).
    pub panic: bool,
    /// `LOYALTY_EXPLAIN`: print each stage's optimised plan.
    pub explain: bool,
    /// `LOYALTY_PROFILE`: run each plan on its own first and print its slowest nodes.
    pub profile: bool,
    /// `LOYALTY_PLAN_PEAKS`: reset the peak resident size before each plan, so the
    /// log's peak is that plan's own (the process's peak is then lost).
    pub plan_peaks: bool,
}

/// Pauses of the publishing step (see [`crate::io::output::publish`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishHolds {
    /// After every file is written, before publishing: a signal then stops the run.
    pub before: Option<Duration>,
    /// With the swap under way: a signal then waits for it.
    pub during: Option<Duration>,
    /// Once it is done: a signal then stops nothing.
    pub after: Option<Duration>,
}

impl Settings {
    /// The settings the environment gives (unset, empty or unparsable: the default).
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`Settings::from_env`], from any variable lookup (tests).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Self {
        let count = |name: &str| var(name)?.parse::<usize>().ok().filter(|&n| n > 0);
        let millis = |name: &str| Some(Duration::from_millis(var(name)?.parse::<u64>().ok()?));
        let flag = |name: &str| var(name).is_some();
        Self {
            fold_passes: count("LOYALTY_TEST_FOLD_PASSES"),
            slice_rows: count("LOYALTY_TEST_SLICE_ROWS"),
            publish_holds: PublishHolds {
                before: millis("LOYALTY_TEST_HOLD_BEFORE_PUBLISH_MS"),
                during: millis("LOYALTY_TEST_HOLD_DURING_PUBLISH_MS"),
                after: millis("LOYALTY_TEST_HOLD_AFTER_PUBLISH_MS"),
            },
            panic: flag("LOYALTY_TEST_PANIC"),
            explain: flag("LOYALTY_EXPLAIN"),
            profile: flag("LOYALTY_PROFILE"),
            plan_peaks: flag("LOYALTY_PLAN_PEAKS"),
        }
    }

    /// Rows per slice of a sliced table: `default` unless a test says otherwise.
    pub fn slice_rows_or(&self, default: usize) -> usize {
        self.slice_rows.unwrap_or(default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_environment_is_a_production_run() {
        assert_eq!(Settings::from_lookup(|_| None), Settings::default());
    }

    #[test]
    fn hooks_are_read_and_bad_values_ignored() {
        let settings = Settings::from_lookup(|name| match name {
            "LOYALTY_TEST_FOLD_PASSES" => Some("3".into()),
            "LOYALTY_TEST_SLICE_ROWS" => Some("0".into()),
            "LOYALTY_TEST_HOLD_DURING_PUBLISH_MS" => Some("250".into()),
            "LOYALTY_TEST_HOLD_AFTER_PUBLISH_MS" => Some("soon".into()),
            "LOYALTY_EXPLAIN" => Some(String::new()),
            _ => None,
        });
        assert_eq!(settings.fold_passes, Some(3));
        assert_eq!(settings.slice_rows, None, "0 rows per slice is no hook");
        assert_eq!(settings.publish_holds.during, Some(Duration::from_millis(250)));
        assert_eq!(settings.publish_holds.after, None);
        assert!(settings.explain, "a set variable is on, even empty");
        assert!(!settings.profile);
    }
}
