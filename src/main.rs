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

/// mimalloc's `mi_option_purge_delay` (v3's mimalloc.h; the crate names no constant).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The purge delay in force before `keep_freed` set it to never.
static PURGE_DELAY: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Row groups Polars' Parquet reader decodes ahead of the fold (its default is at
/// least 16): at 100M lines, in row groups of 2.4M rows, 2 instead of 16 lowered the
/// fold's peak by 0.4 GB, at the same speed. A value the user sets is kept.
const ROW_GROUP_PREFETCH: (&str, &str) = ("POLARS_ROW_GROUP_PREFETCH_SIZE", "2");

/// Polars' cache for files read over HTTP and object storage, when neither it nor
/// `$HOME`/`$USER` is set (cron and minimal containers): without it Polars panics.
const POLARS_TEMP_DIR: &str = "POLARS_TEMP_DIR";

/// Keeps this process's memory in small pages where the kernel would give huge pages
/// to every large mapping (THP `always`), except what is advised for them
/// ([`loyalty::memory::HugeZeroed`]; Linux 6.18+; older kernels refuse the exception,
/// and then the whole process keeps small pages). Under `madvise` or `never` only
/// advised memory gets huge pages anyway, and nothing is changed.
#[cfg(target_os = "linux")]
fn small_pages_unless_advised() {
    /// `PR_THP_DISABLE_EXCEPT_ADVISED` (linux/prctl.h, 6.18).
    const EXCEPT_ADVISED: libc::c_ulong = 1 << 1;
    let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
    if mode.is_ok_and(|mode| !mode.contains("[always]")) {
        return;
    }
    // SAFETY: PR_SET_THP_DISABLE takes no pointers; it only sets a flag of this process.
    let refused = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, EXCEPT_ADVISED, 0, 0) } != 0;
    if refused {
        // SAFETY: as above.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}

fn main() -> ExitCode {
    // mimalloc is built without transparent huge pages (`no_thp`): its arenas are
    // never advised for them. Freed pages are purged 64 KiB at a time and faulted in
    // again; in huge pages each such fault zeroed 2 MiB (at 10M lines a fifth of the
    // CPU time, in the kernel).
    #[cfg(target_os = "linux")]
    small_pages_unless_advised();
    let (name, value) = ROW_GROUP_PREFETCH;
    if std::env::var_os(name).is_none() {
        // SAFETY: no other thread exists yet, so none reads the environment meanwhile.
        unsafe { std::env::set_var(name, value) };
    }
    let unset = |name: &str| std::env::var_os(name).is_none();
    if unset(POLARS_TEMP_DIR) && unset("HOME") && unset("USER") {
        let dir = std::env::temp_dir().join("loyalty-polars");
        // SAFETY: as above, no other thread exists yet.
        unsafe { std::env::set_var(POLARS_TEMP_DIR, dir) };
    }
    // How freed memory goes back to the OS (see `loyalty::memory`).
    loyalty::memory::set_allocator_hooks(loyalty::memory::AllocatorHooks {
        // SAFETY: mi_collect may be called from any thread at any time.
        release_freed: || unsafe { libmimalloc_sys::mi_collect(true) },
        // SAFETY: mi_option_set only stores the value; any time is fine to call it.
        release_at_once: || unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) },
        // SAFETY (both): mi_collect and mi_option_get/set as above; -1 purges never.
        keep_freed: || unsafe {
            let delay = libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY);
            #[allow(clippy::useless_conversion)] // c_long is i32 on Windows
            PURGE_DELAY.store(i64::from(delay), std::sync::atomic::Ordering::Relaxed);
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        },
        release_kept: || unsafe {
            let delay = PURGE_DELAY.load(std::sync::atomic::Ordering::Relaxed);
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, delay as std::ffi::c_long);
            libmimalloc_sys::mi_collect(true);
        },
    });
    std::panic::set_hook(Box::new(|info| {
        eprintln!(
            "internal error: {info}\nThis is a bug in loyalty; please report it with the command and config that caused it."
        );
    }));
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    let signalled = stop_on_termination_signals();
    match std::panic::catch_unwind(|| loyalty::app::main(cli.command)) {
        Ok(Ok(())) => {
            // A signal that came once the outputs were published stopped nothing.
            let signal = signalled.load(std::sync::atomic::Ordering::SeqCst);
            if signal != 0 {
                let name = if signal == signal_hook::consts::SIGTERM as usize {
                    "SIGTERM"
                } else {
                    "SIGINT"
                };
                let published = loyalty::io::output::published_dir()
                    .map(|d| format!(" to {}", d.display()))
                    .unwrap_or_default();
                eprintln!(
                    "warning: {name} arrived after the outputs were published{published}; the run is complete"
                );
            }
            ExitCode::SUCCESS
        }
        Ok(Err(err)) => {
            let code = err.downcast_ref::<Error>().map_or(1, Error::exit_code);
            eprintln!("error: {err:#}");
            ExitCode::from(code as u8)
        }
        Err(_) => ExitCode::from(1),
    }
}

/// The signals that stop a run: SIGTERM (schedulers), SIGINT (Ctrl-C), SIGHUP (a
/// closed terminal).
const STOPPING: [i32; 3] = [
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGHUP,
];

fn signal_name(signal: i32) -> &'static str {
    match signal {
        signal_hook::consts::SIGTERM => "SIGTERM",
        signal_hook::consts::SIGINT => "SIGINT",
        _ => "SIGHUP",
    }
}

/// SIGTERM, SIGINT and SIGHUP stop the run at once: its temporary files are removed,
/// the previous outputs stay as they were, and the exit code is 128 + the signal
/// (143 for SIGTERM, 130 for SIGINT, 129 for SIGHUP), distinct from every error code. A signal that
/// arrives once the outputs are published (or while the swap is under way, which
/// it waits for) stops nothing: the run completes and exits 0, and says so.
fn stop_on_termination_signals() -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    let signalled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for signal in STOPPING {
        // Set in the signal handler itself: the run's end sees it even when the
        // thread below has not woken yet.
        let _ = signal_hook::flag::register_usize(signal, signalled.clone(), signal as usize);
    }
    let Ok(mut signals) = signal_hook::iterator::Signals::new(STOPPING) else {
        return signalled;
    };
    std::thread::spawn(move || {
        for signal in signals.forever() {
            let state = loyalty::io::output::stop_publishing();
            if state.published().is_some() {
                // Reported by `main` when the run ends.
                continue;
            }
            let name = signal_name(signal);
            eprintln!(
                "error: stopped by {name}; nothing was published and the previous outputs are untouched"
            );
            // Exits holding the lock: no swap can start now.
            std::process::exit(128 + signal);
        }
    });
    signalled
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal, and never with NO_COLOR set: a log file or a
    // scheduler's capture gets plain text.
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
