//! The subcommands: each a short function over the library.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{Command, ConfigArgs, FitArgs, FitModel, GenerateArgs, ReportArgs, RunArgs, TimeUnit};
use crate::config::{self, ConfigIssue, Format, JobConfig};
use crate::engine::InProcess;
use crate::error::{Error, InputError};
use crate::generate::{self, GenerateParams, TrueParameters};
use crate::io::{cloud, input, output, remote};
use crate::manifest::Manifest;
use crate::settings::Settings;
use crate::{ingest, pipeline};

pub fn main(command: Command) -> anyhow::Result<()> {
    // The one place the environment's test hooks and diagnostics are read.
    let settings = Settings::from_env();
    // Test hook: a bug, to check that panics reach the user as exit 1 with a report line.
    if settings.panic {
        panic!("LOYALTY_TEST_PANIC is set");
    }
    match command {
        Command::Run(args) => run(args, &settings),
        Command::Validate(args) => validate(args),
        Command::Generate(args) => generate(args),
        Command::Fit(args) => fit(args),
        Command::Report(args) => report(args),
    }
}

/// A spinner on a terminal; nothing when stderr is a file or pipe.
fn spinner(message: &'static str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
        bar.set_style(style);
    }
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn run(args: RunArgs, settings: &Settings) -> anyhow::Result<()> {
    let started = Utc::now();
    let mut config = config::load(&args.config.config, &args.config.set)?;
    let as_of_source = if args.as_of.is_some() {
        "--as-of"
    } else if config.as_of.is_some() {
        "config"
    } else {
        "data"
    };
    if let Some(as_of) = args.as_of {
        config.as_of = Some(as_of);
    }
    if let Some(out) = &args.out {
        let out = out.display().to_string();
        if let Some(problem) = output::unusable_name(&out) {
            return Err(Error::Config(vec![ConfigIssue {
                location: "--out".into(),
                message: format!("`{out}` {problem}"),
            }])
            .into());
        }
        config.output.dir = out;
    }
    if args.force {
        config.output.replace = true;
    }
    let run_date = started.date_naive();

    let inputs = input::resolve_as(
        &config.input.orders,
        config.input.format,
        &config.input.storage_options,
    )?;
    tracing::info!(
        files = inputs.files.len(),
        rows = inputs.total_rows(),
        "input resolved"
    );
    let protected = output::Protected {
        inputs: &inputs.roots,
        files: &inputs.files,
        config_file: Some(&args.config.config),
    };
    // The output directory is checked before the work: whole when its name is known
    // now, else (`{as_of}` from the data) its overlap with the inputs and its parent,
    // on the name it would have with today's date.
    let template = &config.output.dir;
    let known_now = !template.contains("{as_of}") || config.as_of.is_some();
    let early_dir = output::resolve_dir(template, config.as_of.unwrap_or(run_date), run_date);
    // Unknown yet, today's name may be a previous snapshot's: its ownership waits.
    let early_replace = config.output.replace || !known_now;
    if cloud::is_supported(template) {
        if config.compare_to.as_deref() == Some("{previous}") {
            return Err(Error::Config(vec![ConfigIssue {
                location: "compare_to".into(),
                message: "`{previous}` with an object storage output.dir is not supported yet; give compare_to a local output directory".into(),
            }])
            .into());
        }
        let url = early_dir.display().to_string();
        remote::check_no_overlap(&url, &inputs.roots, &inputs.files)?;
        remote::prepare(
            &url,
            output_storage(&config),
            early_replace,
            config.output.keep_runs,
        )?;
    } else {
        output::prepare(&early_dir, &protected, early_replace)?;
    }
    if inputs.total_rows() == 0 {
        return Err(Error::from(InputError::Empty {
            label: inputs.label(),
        })
        .into());
    }
    let side = pipeline::SideInputs::read(&config, run_date)?;
    let engine = engine_for(&config, &inputs)?;
    let bar = spinner("computing");
    let computed =
        pipeline::run_with(engine.as_ref(), &config, settings, &side).map_err(|e| locate_rows(e, &inputs));
    bar.finish_and_clear();
    let mut computed = computed?;

    // `compare_to: {previous}` without an earlier snapshot: the one made on demand
    // is published first, as its own `{as_of}` output (a fixed directory is the
    // current run's, so there it is only compared with).
    if let Some(previous) = computed.previous_run.take()
        && config.output.dir.contains("{as_of}")
    {
        let mut earlier = config.clone();
        earlier.as_of = Some(previous.as_of);
        earlier.compare_to = None;
        let dir = publish_run(
            &earlier,
            *previous,
            &protected,
            (started, run_date, "compare_days"),
            &inputs,
            settings,
        )?;
        if let Some(snapshot) = computed.compared_to.as_mut() {
            snapshot.dir = dir.display().to_string();
        }
    }
    publish_run(
        &config,
        computed,
        &protected,
        (started, run_date, as_of_source),
        &inputs,
        settings,
    )?;
    Ok(())
}

/// The engine `engine:` names: Polars here, or Spark through Spark Connect.
fn engine_for(config: &JobConfig, inputs: &input::Inputs) -> Result<Box<dyn crate::engine::Engine>, Error> {
    if config.engine == config::Engine::Spark {
        #[cfg(feature = "spark")]
        return Ok(Box::new(crate::engine::Spark::connect(&config.spark, inputs)?));
        #[cfg(not(feature = "spark"))]
        return Err(Error::Config(vec![ConfigIssue {
            location: "engine".into(),
            message: "`spark` needs a binary built with the Spark engine: cargo build --release --features spark (needs protoc)".into(),
        }]));
    }
    Ok(Box::new(InProcess::over(inputs)?))
}

/// Where a run publishes: a local directory (swapped into place) or an object
/// storage prefix (the `_latest` commit protocol).
enum Target {
    Local(output::Destination),
    Remote(remote::RemoteDestination),
}

/// The storage options of a URL output.dir: its own, else the input's.
fn output_storage(config: &JobConfig) -> &crate::config::StorageOptions {
    if config.output.storage_options.0.is_empty() {
        &config.input.storage_options
    } else {
        &config.output.storage_options
    }
}

/// Publishes one run's outputs with its manifest (and report); says what it wrote.
fn publish_run(
    config: &JobConfig,
    computed: pipeline::Computed,
    protected: &output::Protected,
    (started, run_date, as_of_source): (chrono::DateTime<Utc>, chrono::NaiveDate, &str),
    inputs: &input::Inputs,
    settings: &Settings,
) -> anyhow::Result<std::path::PathBuf> {
    let dir = output::resolve_dir(&config.output.dir, computed.as_of, run_date);
    let remote_url = cloud::is_supported(&config.output.dir).then(|| dir.display().to_string());
    // Checked again: the name may only be known now, and the directory may have
    // changed while the job ran.
    let destination = match &remote_url {
        Some(url) => {
            remote::check_no_overlap(url, &inputs.roots, &inputs.files)?;
            Target::Remote(remote::prepare(
                url,
                output_storage(config),
                config.output.replace,
                config.output.keep_runs,
            )?)
        }
        None => Target::Local(output::prepare(&dir, protected, config.output.replace)?),
    };
    let mut manifest = Manifest {
        tool: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
        started_at: started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        run_date,
        as_of: computed.as_of,
        as_of_source: as_of_source.into(),
        config_hash: config.hash(),
        config: config.clone(),
        input_rows: inputs.total_rows(),
        inputs: inputs.files.clone(),
        cleaning: computed.cleaning.clone(),
        models: computed.models.clone(),
        outputs: Vec::new(),
        stages: computed.stages.clone(),
        warnings: computed.warnings.clone(),
        identities: computed.identities.clone(),
        surveys: computed.surveys.clone(),
        actions: computed.actions.clone(),
        compared_to: computed.compared_to.clone(),
    };
    let write_start = std::time::Instant::now();
    manifest.stages.push(crate::manifest::Stage {
        name: "write".into(),
        seconds: 0.0,
    });
    // The report, made while the kept memory is handed back and the tables are
    // written (see `output::publish`).
    let json = serde_json::to_value(&manifest).map_err(|e| Error::Output(e.to_string()))?;
    let documents = || -> crate::error::Result<Vec<output::Document>> {
        if !config.output.report {
            return Ok(Vec::new());
        }
        let html = crate::report::render(&crate::report::ReportData::from_tables(
            &computed.tables,
            json.clone(),
        )?)?;
        Ok(vec![output::Document {
            name: "report",
            format: "html",
            file: crate::report::FILE,
            bytes: html.into_bytes(),
        }])
    };
    let shown = match &destination {
        Target::Local(local) => {
            output::publish(
                local,
                &computed.tables,
                &config.output.formats,
                &documents,
                &mut manifest,
                &settings.publish_holds,
            )?;
            dir.display().to_string()
        }
        Target::Remote(remote) => remote::publish(
            remote,
            &computed.tables,
            &config.output.formats,
            &documents,
            &mut manifest,
            &settings.publish_holds,
        )?,
    };
    tracing::info!(stage = "write", seconds = write_start.elapsed().as_secs_f64(), dir = %shown, "finished");
    // What is freed from here on (every table, at the end of the run) stays with
    // the process, which exits: handed back page by page, it took 0.1 s at 30M lines.
    crate::memory::keep_freed();
    for warning in &computed.warnings {
        tracing::warn!("{warning}");
    }
    // The outputs are published: a closed stdout must not turn that into a failure.
    use std::io::Write;
    let _ = writeln!(
        std::io::stdout(),
        "wrote {} ({})",
        shown,
        computed
            .tables
            .iter()
            .map(|(name, table)| format!("{name}: {} rows", table.height()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(dir)
}

/// An input error that names a row of the whole input names its file and row there.
fn locate_rows(error: Error, inputs: &input::Inputs) -> Error {
    match error {
        Error::Input(mut boxed) => {
            if let InputError::OutOfRange { row, .. } = boxed.as_mut()
                && let Some(index) = row.strip_prefix("input row ").and_then(|r| r.parse::<u64>().ok())
                && let Some((file, line)) = inputs.locate(index - 1)
            {
                *row = format!("row {line} of {file}");
            }
            Error::Input(boxed)
        }
        other => other,
    }
}

fn validate(args: ConfigArgs) -> anyhow::Result<()> {
    let config = config::load(&args.config, &args.set)?;
    let inputs = input::resolve_as(
        &config.input.orders,
        config.input.format,
        &config.input.storage_options,
    )?;
    let mut raw = input::scan(&inputs)?;
    let schema = raw.collect_schema().map_err(Error::from)?;
    // Builds the typed columns: wrong or missing columns fail here, from metadata alone.
    ingest::normalise(raw, &schema, &config.input, config.clv.margin, &inputs.label())?;
    print!("{}", describe(&args.config, &config, &inputs, &schema));
    Ok(())
}

fn describe(
    path: &Path,
    config: &JobConfig,
    inputs: &input::Inputs,
    schema: &polars::prelude::Schema,
) -> String {
    let mut text = format!(
        "config {} is valid (sha256 {})\n",
        path.display(),
        &config.hash()[..12]
    );
    text.push_str(&format!(
        "input: {} file(s), {} rows\n",
        inputs.files.len(),
        inputs.total_rows()
    ));
    for file in &inputs.files {
        text.push_str(&format!("  {} ({} rows)\n", file.path, file.rows));
    }
    text.push_str("columns:\n");
    for (logical, physical) in config.input.columns.mapped() {
        let dtype = schema.get(physical).map(|d| d.to_string()).unwrap_or_default();
        text.push_str(&format!("  {logical:<12} <- `{physical}` ({dtype})\n"));
    }
    match config.as_of {
        Some(as_of) => text.push_str(&format!("as_of: {as_of} (from the config)\n")),
        None => text.push_str("as_of: latest valid order date + 1 day (computed when the job runs)\n"),
    }
    let formats: Vec<&str> = config
        .output
        .formats
        .iter()
        .map(|f| match f {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
        })
        .collect();
    text.push_str(&format!(
        "would write: {} as {} + {} to {}\n",
        pipeline::TABLES.join(", "),
        formats.join(", "),
        output::MANIFEST_FILE,
        config.output.dir
    ));
    text
}

fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    if args.end <= args.start {
        return Err(Error::Output(format!(
            "--end ({}) must be after --start ({})",
            args.end, args.start
        ))
        .into());
    }
    for (name, value) in [
        ("--r", args.r),
        ("--alpha", args.alpha),
        ("--a", args.a),
        ("--b", args.b),
        ("--gg-p", args.gg_p),
        ("--gg-q", args.gg_q),
        ("--gg-v", args.gg_v),
    ] {
        if !(value.is_finite() && value > 0.0) {
            return Err(Error::Output(format!("{name} must be a positive number, got {value}")).into());
        }
    }
    let params = GenerateParams {
        customers: args.customers,
        seed: args.seed,
        start: args.start,
        end: args.end,
        truth: TrueParameters {
            r: args.r,
            alpha: args.alpha,
            a: args.a,
            b: args.b,
            p: args.gg_p,
            q: args.gg_q,
            v: args.gg_v,
        },
        dirty: !args.clean,
    };
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    // Written as generated (bounded memory at any size), then renamed into place.
    let tmp = args.out.with_extension("parquet.tmp");
    let bar = spinner("generating");
    let mut lines = 0;
    let written = output::write_synced(&tmp, |file| {
        lines = generate::write_parquet(&params, file)
            .map_err(|e| Error::io(&tmp, std::io::Error::other(e.to_string())))?;
        Ok(())
    });
    bar.finish_and_clear();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    std::fs::rename(&tmp, &args.out).map_err(|e| Error::io(&args.out, e))?;
    println!(
        "wrote {} ({} lines, {} customers)",
        args.out.display(),
        lines,
        args.customers
    );
    Ok(())
}

fn fit(args: FitArgs) -> anyhow::Result<()> {
    use crate::config::PurchaseModel;
    use crate::error::InputError;
    use crate::model::{CountModel, gamma_gamma, summary};

    let path = args.summary.display().to_string();
    let text = std::fs::read_to_string(&args.summary).map_err(|e| {
        Error::from(InputError::BadSummary {
            path: path.clone(),
            reason: format!("cannot read it ({e})"),
        })
    })?;
    let customers = summary::read_csv(&text).map_err(|reason| {
        Error::from(InputError::BadSummary {
            path: path.clone(),
            reason,
        })
    })?;
    let unit = match args.time_unit {
        TimeUnit::Day => "days",
        TimeUnit::Week => "weeks",
    };
    let triples = summary::triples(&customers);
    let (kind, title) = match args.model {
        FitModel::Bgnbd => (PurchaseModel::Bgnbd, "BG/NBD"),
        FitModel::ParetoNbd => (PurchaseModel::ParetoNbd, "Pareto/NBD"),
        FitModel::Mbgnbd => (PurchaseModel::Mbgnbd, "MBG/NBD"),
    };
    let (fitted, _) = CountModel::fit(kind, &triples, args.penalizer)
        .unwrap_or_else(|| unreachable!("the CLI offers no `none` model"))
        .map_err(|e| Error::Model(e.to_string()))?;
    println!(
        "{title} on {} customers ({} distinct (x, t_x, T)), time in {unit}",
        customers.len(),
        triples.len()
    );
    print_fit(&fitted);
    let repeat: Vec<(f64, f64)> = customers
        .iter()
        .filter(|c| c.x > 0.0 && c.monetary > 0.0)
        .map(|c| (c.x, c.monetary))
        .collect();
    if !repeat.is_empty() {
        let fitted = gamma_gamma::fit(&repeat, args.penalizer).map_err(|e| Error::Model(e.to_string()))?;
        println!("\nGamma-Gamma on {} customers with x > 0", repeat.len());
        print_fit(&fitted);
    }
    Ok(())
}

fn report(args: ReportArgs) -> anyhow::Result<()> {
    let path = crate::report::rebuild(&args.dir)?;
    println!("wrote {}", path.display());
    Ok(())
}

fn print_fit(fit: &crate::model::Fit) {
    println!("  {:<10} {:>12} {:>12}", "parameter", "value", "std. error");
    for p in &fit.parameters {
        let se = p
            .standard_error
            .map_or("n/a".to_string(), |se| format!("{se:.4}"));
        println!("  {:<10} {:>12.4} {:>12}", p.name, p.value, se);
    }
    println!(
        "  log-likelihood {:.2} ({} iterations)",
        fit.log_likelihood, fit.iterations
    );
}
