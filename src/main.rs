//! Thin entry point: parse the CLI, set up logging, run, map the error to an exit code.

use std::process::ExitCode;

use clap::Parser;
use loyalty::cli::{Cli, LogFormat};
use loyalty::error::Error;
use tracing_subscriber::EnvFilter;

// Polars allocates and frees many large buffers; mimalloc returns them faster
// than the system allocator and keeps peak memory lower.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (mimalloc.h; the crate names no constant).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Row groups Polars' Parquet reader decodes ahead of the fold (its default is at
/// least 16): at 100M lines, in row groups of 2.4M rows, 2 instead of 16 lowered the
/// fold's peak by 0.4 GB, at the same speed. A value the user sets is kept.
const ROW_GROUP_PREFETCH: (&str, &str) = ("POLARS_ROW_GROUP_PREFETCH_SIZE", "2");

fn main() -> ExitCode {
    let (name, value) = ROW_GROUP_PREFETCH;
    if std::env::var_os(name).is_none() {
        // SAFETY: no other thread exists yet, so none reads the environment meanwhile.
        unsafe { std::env::set_var(name, value) };
    }
    // How freed memory goes back to the OS (see `loyalty::memory`).
    loyalty::memory::set_allocator_hooks(loyalty::memory::AllocatorHooks {
        // SAFETY: mi_collect may be called from any thread at any time.
        release_freed: || unsafe { libmimalloc_sys::mi_collect(true) },
        // SAFETY: mi_option_set only stores the value; any time is fine to call it.
        release_at_once: || unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) },
    });
    std::panic::set_hook(Box::new(|info| {
        eprintln!(
            "internal error: {info}\nThis is a bug in loyalty; please report it with the command and config that caused it."
        );
    }));
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    stop_on_termination_signals();
    match std::panic::catch_unwind(|| loyalty::app::main(cli.command)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(err)) => {
            let code = err.downcast_ref::<Error>().map_or(1, Error::exit_code);
            eprintln!("error: {err:#}");
            ExitCode::from(code as u8)
        }
        Err(_) => ExitCode::from(1),
    }
}

/// SIGTERM and SIGINT stop the run at once: its temporary files are removed, the
/// previous outputs stay as they were, and the exit code is 128 + the signal (143
/// for SIGTERM, 130 for SIGINT), distinct from every error code.
fn stop_on_termination_signals() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGTERM, SIGINT]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let _no_publish_after_this = loyalty::io::output::remove_in_progress();
            let name = if signal == SIGTERM { "SIGTERM" } else { "SIGINT" };
            eprintln!(
                "error: stopped by {name}; nothing was published and the previous outputs are untouched"
            );
            std::process::exit(128 + signal);
        }
    });
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
