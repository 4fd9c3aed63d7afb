//! `tool`: pure helpers that need no permission. `csv_parse` parses CSV text with the
//! `csv` crate (quotes, escaped quotes, newlines inside fields, ragged rows).

use serde::Deserialize;

use super::{HostError, blocking};

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
    blocking(move || csv_parse(&text, delimiter, has_headers.unwrap_or(true))).await
}

/// Parses CSV into `{"headers": [...], "rows": [[...], ...]}`.
pub fn csv_parse(text: &str, delimiter: u8, has_headers: bool) -> super::Answer {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(has_headers)
        .flexible(true)
        .from_reader(text.as_bytes());
    let invalid = |e: csv::Error| HostError::invalid(format!("CSV: {e}"));
    let headers: Vec<String> = if has_headers {
        reader
            .headers()
            .map_err(invalid)?
            .iter()
            .map(str::to_owned)
            .collect()
    } else {
        Vec::new()
    };
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(invalid)?;
        rows.push(record.iter().map(str::to_owned).collect::<Vec<_>>());
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
