//! Helpers the host runs for the app: CSV parsing, PDF text.

use super::HostError;
use serde_json::json;

/// A parsed CSV text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Csv {
    /// The header row (empty without one).
    pub headers: Vec<String>,
    /// The records; rows may differ in length.
    pub rows: Vec<Vec<String>>,
}

/// How to parse CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvOptions {
    /// The field separator (ASCII).
    pub delimiter: char,
    /// Whether the first record is the header row.
    pub has_headers: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: ',',
            has_headers: true,
        }
    }
}

/// Parses comma-separated text whose first row is the header.
pub fn parse_csv(text: &str) -> Result<Csv, HostError> {
    parse_csv_with(text, CsvOptions::default())
}

/// Parses CSV text with `options`.
pub fn parse_csv_with(text: &str, options: CsvOptions) -> Result<Csv, HostError> {
    let value = host_call!(
        tool,
        json!({
            "op": "csv_parse",
            "text": text,
            "delimiter": options.delimiter.to_string(),
            "has_headers": options.has_headers,
        }),
    )?;
    Ok(Csv {
        headers: super::strings_of(&value["headers"])?,
        rows: value["rows"]
            .as_array()
            .ok_or_else(|| HostError::bad_answer("no rows"))?
            .iter()
            .map(super::strings_of)
            .collect::<Result<_, _>>()?,
    })
}

/// The text of a PDF file (needs read access to it, as [`crate::fs`]).
pub fn pdf_text(path: &str) -> Result<String, HostError> {
    super::string_of(host_call!(fs, json!({"op": "pdf_text", "path": path}))?)
}
