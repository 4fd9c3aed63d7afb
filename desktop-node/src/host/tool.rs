//! `tool`: pure helpers that need no permission. `csv_parse` parses CSV text with the
//! `csv` crate (quotes, escaped quotes, newlines inside fields, ragged rows).
//!
//! Bounds: the text is at most [`MAX_CSV_INPUT_BYTES`]; while rows are produced, the
//! memory they take ([`MAX_CSV_WORK_BYTES`], counted per field with its overhead) and the
//! size of the answer they make ([`MAX_CSV_ANSWER_BYTES`], JSON escaping included) are
//! counted, and parsing stops with `too_large` at the first row over either, so a small
//! text of many empty fields cannot make a huge answer. Parsing stops when the action
//! ends.

use serde::Deserialize;

use super::{Cancel, HostError, blocking};

/// The longest CSV text `csv_parse` accepts.
pub const MAX_CSV_INPUT_BYTES: usize = 8 << 20;
/// The largest answer `csv_parse` builds (its JSON text).
pub const MAX_CSV_ANSWER_BYTES: usize = 8 << 20;
/// The most memory the parsed rows may take while they are built: each field counts its
/// bytes plus [`FIELD_OVERHEAD`], each row [`FIELD_OVERHEAD`].
pub const MAX_CSV_WORK_BYTES: usize = 32 << 20;
/// What one field or row costs besides its bytes (a JSON value and its allocation).
pub const FIELD_OVERHEAD: usize = 48;

/// The ops of `tool`.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Parses CSV text into `{headers, rows}`.
    CsvParse {
        /// The CSV text.
        text: String,
        /// One ASCII character; default `,`.
        #[serde(default)]
        delimiter: Option<String>,
        /// Whether the first record is the header row (default `true`); without one,
        /// `headers` is empty and every record is a row.
        #[serde(default)]
        has_headers: Option<bool>,
    },
}

/// Runs one `tool` call (parsing on the blocking pool: a large text takes a while).
pub async fn call(request: Request) -> super::Answer {
    let Request::CsvParse {
        text,
        delimiter,
        has_headers,
    } = request;
    let delimiter = match delimiter.as_deref() {
        None => b',',
        Some(d) if d.len() == 1 && d.is_ascii() => d.as_bytes()[0],
        Some(d) => {
            return Err(HostError::invalid(format!(
                "delimiter {d:?}: use one ASCII character"
            )));
        }
    };
    if text.len() > MAX_CSV_INPUT_BYTES {
        return Err(HostError::too_large(format!(
            "CSV text of {} bytes; csv_parse takes at most {MAX_CSV_INPUT_BYTES}",
            text.len()
        )));
    }
    blocking(move |cancel| csv_parse_bounded(&text, delimiter, has_headers.unwrap_or(true), cancel))
        .await
}

/// Parses CSV into `{"headers": [...], "rows": [[...], ...]}` within the default bounds.
pub fn csv_parse(text: &str, delimiter: u8, has_headers: bool) -> super::Answer {
    csv_parse_bounded(text, delimiter, has_headers, &Cancel::default())
}

/// The bytes `s` takes as a JSON string, quotes included.
fn json_string_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..0x20 => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// What the rows built so far cost; `too_large` as soon as a bound is passed.
struct Budget {
    work: usize,
    answer: usize,
}

impl Budget {
    fn add_row(&mut self, fields: &csv::StringRecord) -> Result<(), HostError> {
        self.work += FIELD_OVERHEAD;
        self.answer += 2;
        for field in fields {
            self.work += field.len() + FIELD_OVERHEAD;
            self.answer += json_string_len(field) + 1;
        }
        if self.work > MAX_CSV_WORK_BYTES || self.answer > MAX_CSV_ANSWER_BYTES {
            return Err(HostError::too_large(format!(
                "the parsed CSV would pass {MAX_CSV_ANSWER_BYTES} bytes as an answer or {MAX_CSV_WORK_BYTES} bytes in memory; parse a smaller part"
            )));
        }
        Ok(())
    }
}

/// [`csv_parse`], counting what the rows cost as they are produced and stopping at the
/// first bound passed or when `cancel` says the action ended.
fn csv_parse_bounded(
    text: &str,
    delimiter: u8,
    has_headers: bool,
    cancel: &Cancel,
) -> super::Answer {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(has_headers)
        .flexible(true)
        .from_reader(text.as_bytes());
    let invalid = |e: csv::Error| HostError::invalid(format!("CSV: {e}"));
    let mut budget = Budget { work: 0, answer: 0 };
    let headers: Vec<serde_json::Value> = if has_headers {
        let headers = reader.headers().map_err(invalid)?;
        budget.add_row(headers)?;
        headers.iter().map(|h| h.to_owned().into()).collect()
    } else {
        Vec::new()
    };
    let mut rows = Vec::new();
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record).map_err(invalid)? {
        if rows.len() % 1024 == 0 {
            cancel.check()?;
        }
        budget.add_row(&record)?;
        rows.push(serde_json::Value::Array(
            record.iter().map(|f| f.to_owned().into()).collect(),
        ));
    }
    Ok(serde_json::json!({ "headers": headers, "rows": rows }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_newlines_and_ragged_rows() {
        let text = "name,note\n\"Smith, J\",\"said \"\"hi\"\"\"\nb,\"two\nlines\"\nc\n";
        let parsed = csv_parse(text, b',', true).expect("parses");
        assert_eq!(
            parsed,
            serde_json::json!({
                "headers": ["name", "note"],
                "rows": [["Smith, J", "said \"hi\""], ["b", "two\nlines"], ["c"]]
            })
        );
        let parsed = csv_parse("a;b\n1;2\n", b';', false).expect("parses");
        assert_eq!(
            parsed,
            serde_json::json!({ "headers": [], "rows": [["a", "b"], ["1", "2"]] })
        );
    }

    #[test]
    fn many_empty_fields_stop_at_the_bound_while_parsing() {
        // 4 MiB of commas: 4 Mi empty fields, far more as JSON values than as text.
        let text = ",".repeat(4 << 20);
        let err = csv_parse(&text, b',', false).expect_err("refused");
        assert_eq!(err.code, super::super::ErrorCode::TooLarge);
        // Control characters take 6 bytes each in the answer: counted as such.
        let text = "\u{1}".repeat(2 << 20);
        let err = csv_parse(&text, b',', false).expect_err("refused");
        assert_eq!(err.code, super::super::ErrorCode::TooLarge);
        assert_eq!(json_string_len("a\u{1}\"\n"), 2 + 1 + 6 + 2 + 2);
    }

    #[test]
    fn parsing_stops_when_the_action_ends() {
        let text = "a,b\n".repeat(100_000);
        let cancel = Cancel::default();
        cancel.cancel();
        let err = csv_parse_bounded(&text, b',', false, &cancel).expect_err("stopped");
        assert!(err.message.contains("abandoned"), "{err}");
    }

    #[test]
    fn a_bad_delimiter_is_invalid() {
        let request = Request::CsvParse {
            text: "a".into(),
            delimiter: Some("ab".into()),
            has_headers: None,
        };
        let err = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(call(request))
            .expect_err("refused");
        assert_eq!(err.code, super::super::ErrorCode::Invalid);
    }
}
