//! `manifest.json` (SPEC §8): what ran, on what, and what it wrote.

use chrono::NaiveDate;
use serde::Serialize;

use crate::config::JobConfig;
use crate::ingest::CleaningStep;
use crate::io::input::InputFile;

#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub tool: &'static str,
    pub version: &'static str,
    /// UTC timestamp of the start of the run.
    pub started_at: String,
    pub run_date: NaiveDate,
    pub as_of: NaiveDate,
    /// `config`, `--as-of`, or `data` (latest order date + 1 day).
    pub as_of_source: String,
    pub config_hash: String,
    pub config: JobConfig,
    pub inputs: Vec<InputFile>,
    pub input_rows: u64,
    pub cleaning: Vec<CleaningStep>,
    /// Fitted models: parameters, standard errors, log-likelihood, iterations, convergence.
    pub models: Vec<crate::model::Fit>,
    pub outputs: Vec<OutputFile>,
    pub stages: Vec<Stage>,
    pub warnings: Vec<String>,
    /// `input.identities`: rows, conflicts, self-loops, customers merged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identities: Option<crate::identity::IdentityReport>,
    /// `input.surveys`: rows, those ignored, respondents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub surveys: Option<crate::metrics::nps::SurveyReport>,
    /// Each action list's customers and summed expected value.
    pub actions: Vec<crate::metrics::actions::ActionCount>,
    /// The snapshot `segment_migration` compares with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compared_to: Option<crate::metrics::migration::PreviousSnapshot>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutputFile {
    pub table: String,
    pub format: String,
    /// File name inside the output directory.
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

impl OutputFile {
    pub fn new(table: &str, format: &str, file: &str, rows: u64, bytes: &[u8]) -> OutputFile {
        OutputFile {
            table: table.into(),
            format: format.into(),
            file: file.into(),
            rows,
            bytes: bytes.len() as u64,
            sha256: crate::checksum::sha256_hex(bytes),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub name: String,
    pub seconds: f64,
}
