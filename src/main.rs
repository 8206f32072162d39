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

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        eprintln!(
            "internal error: {info}\nThis is a bug in loyalty; please report it with the command and config that caused it."
        );
    }));
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
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
