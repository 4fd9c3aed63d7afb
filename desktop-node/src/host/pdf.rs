//! PDF text extraction for `fs` `pdf_text`, with the `pdf-extract` crate (pure Rust, on
//! `lopdf`). It runs on the blocking pool; a panic inside the parser (malformed files
//! can cause one) becomes a `failed` answer. Encrypted PDFs are refused by the parser.

use super::{HostError, blocking};

/// The longest text returned; a longer one is `too_large`.
pub const MAX_TEXT_BYTES: usize = 8 << 20;

/// The text of a PDF file's bytes.
pub async fn extract_text(bytes: Vec<u8>) -> Result<String, HostError> {
    blocking(move || {
        let text = pdf_extract::extract_text_from_mem(&bytes)
            .map_err(|e| HostError::failed(format!("not a readable PDF: {e}")))?;
        if text.len() > MAX_TEXT_BYTES {
            return Err(HostError::too_large(format!(
                "the PDF's text is larger than {MAX_TEXT_BYTES} bytes"
            )));
        }
        Ok(text)
    })
    .await
}
