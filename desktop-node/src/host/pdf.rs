//! PDF text extraction for `fs` `pdf_text`, with the `pdf-extract` crate (pure Rust, on
//! `lopdf`). It runs on the blocking pool; a panic inside the parser (malformed files
//! can cause one) becomes a `failed` answer.
//!
//! `lopdf` inflates compressed streams whole and without a limit (object and
//! cross-reference streams while loading, content streams while extracting), so a small
//! file can inflate to gigabytes. Before the file reaches it, [`check_streams`] decodes
//! every stream with the filters `lopdf` knows (Flate, LZW, ASCII85, chained) into a
//! counter, stopping at [`MAX_INFLATED_BYTES`] for the whole file: a decompression bomb is
//! refused (`too_large`) having produced at most that many bytes, none of them kept. The
//! text is written through a counting writer that stops at [`MAX_TEXT_BYTES`] (a font
//! can map one code to a long string) and when the action ends. Encrypted PDFs are
//! refused: their streams cannot be measured before they are decrypted.

use std::io::Read;

use super::{Cancel, HostError, blocking};

/// The longest text returned; a longer one is `too_large`.
pub const MAX_TEXT_BYTES: usize = 8 << 20;
/// The most bytes all the streams of one PDF may inflate to, together.
pub const MAX_INFLATED_BYTES: u64 = 32 << 20;
/// How far before a `stream` keyword its dictionary is looked for.
const MAX_DICT_BYTES: usize = 64 << 10;

/// The text of a PDF file's bytes.
pub async fn extract_text(bytes: Vec<u8>) -> Result<String, HostError> {
    blocking(move |cancel| extract_text_bounded(&bytes, MAX_INFLATED_BYTES, cancel)).await
}

/// [`extract_text`] with an inflation budget, on the calling thread.
pub fn extract_text_bounded(
    bytes: &[u8],
    max_inflated: u64,
    cancel: &Cancel,
) -> Result<String, HostError> {
    if has_name(bytes, b"Encrypt") {
        return Err(HostError::failed(
            "encrypted PDFs are not supported by pdf_text",
        ));
    }
    check_streams(bytes, max_inflated, cancel)?;
    let doc = pdf_extract::Document::load_mem(bytes)
        .map_err(|e| HostError::failed(format!("not a readable PDF: {e}")))?;
    let mut writer = CappedText {
        text: Vec::new(),
        cap: MAX_TEXT_BYTES,
        over: false,
        cancel: cancel.clone(),
    };
    let result = {
        let mut output = pdf_extract::PlainTextOutput::new(&mut writer as &mut dyn std::io::Write);
        let mut output = Checked {
            inner: &mut output,
            cancel,
        };
        pdf_extract::output_doc(&doc, &mut output)
    };
    cancel.check()?;
    if writer.over {
        return Err(HostError::too_large(format!(
            "the PDF's text is larger than {MAX_TEXT_BYTES} bytes"
        )));
    }
    result.map_err(|e| HostError::failed(format!("not a readable PDF: {e}")))?;
    // pdf-extract writes whole `str`s, so the bytes are UTF-8.
    String::from_utf8(writer.text).map_err(|e| HostError::failed(e.to_string()))
}

/// A text sink that refuses to grow past `cap` or to go on once the action ended.
struct CappedText {
    text: Vec<u8>,
    cap: usize,
    over: bool,
    cancel: Cancel,
}

impl std::io::Write for CappedText {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.cancel.is_cancelled() {
            return Err(std::io::Error::other("the action ended"));
        }
        if self.text.len() + bytes.len() > self.cap {
            self.over = true;
            return Err(std::io::Error::other("too much text"));
        }
        self.text.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An output device that stops the extraction (at its next page, word or character) once
/// the action ended.
struct Checked<'a> {
    inner: &'a mut dyn pdf_extract::OutputDev,
    cancel: &'a Cancel,
}

impl Checked<'_> {
    fn go_on(&self) -> Result<(), pdf_extract::OutputError> {
        if self.cancel.is_cancelled() {
            Err(pdf_extract::OutputError::FormatError(std::fmt::Error))
        } else {
            Ok(())
        }
    }
}

impl pdf_extract::OutputDev for Checked<'_> {
    fn begin_page(
        &mut self,
        page_num: u32,
        media_box: &pdf_extract::MediaBox,
        art_box: Option<(f64, f64, f64, f64)>,
    ) -> Result<(), pdf_extract::OutputError> {
        self.go_on()?;
        self.inner.begin_page(page_num, media_box, art_box)
    }

    fn end_page(&mut self) -> Result<(), pdf_extract::OutputError> {
        self.go_on()?;
        self.inner.end_page()
    }

    fn output_character(
        &mut self,
        trm: &pdf_extract::Transform,
        width: f64,
        spacing: f64,
        font_size: f64,
        char: &str,
    ) -> Result<(), pdf_extract::OutputError> {
        self.go_on()?;
        self.inner
            .output_character(trm, width, spacing, font_size, char)
    }

    fn begin_word(&mut self) -> Result<(), pdf_extract::OutputError> {
        self.go_on()?;
        self.inner.begin_word()
    }

    fn end_word(&mut self) -> Result<(), pdf_extract::OutputError> {
        self.go_on()?;
        self.inner.end_word()
    }

    fn end_line(&mut self) -> Result<(), pdf_extract::OutputError> {
        self.go_on()?;
        self.inner.end_line()
    }

    fn stroke(
        &mut self,
        ctm: &pdf_extract::Transform,
        colorspace: &pdf_extract::ColorSpace,
        color: &[f64],
        path: &pdf_extract::Path,
    ) -> Result<(), pdf_extract::OutputError> {
        self.go_on()?;
        self.inner.stroke(ctm, colorspace, color, path)
    }

    fn fill(
        &mut self,
        ctm: &pdf_extract::Transform,
        colorspace: &pdf_extract::ColorSpace,
        color: &[f64],
        path: &pdf_extract::Path,
    ) -> Result<(), pdf_extract::OutputError> {
        self.go_on()?;
        self.inner.fill(ctm, colorspace, color, path)
    }
}

/// Whether `pdf` holds the name `/<name>` anywhere (`#xx` escapes decoded, as `lopdf`
/// reads names).
fn has_name(pdf: &[u8], name: &[u8]) -> bool {
    let mut i = 0;
    while let Some(slash) = pdf[i..].iter().position(|&b| b == b'/') {
        i += slash + 1;
        let (decoded, end) = read_name(pdf, i);
        if decoded == name {
            return true;
        }
        i = end.max(i);
    }
    false
}

/// The name starting at `i` (just after its `/`), decoded, and where it ends.
fn read_name(text: &[u8], mut i: usize) -> (Vec<u8>, usize) {
    let mut name = Vec::new();
    while i < text.len() && !text[i].is_ascii_whitespace() && !is_delimiter(text[i]) {
        let decoded = (text[i] == b'#')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(byte) => {
                name.push(byte);
                i += 3;
            }
            None => {
                name.push(text[i]);
                i += 1;
            }
        }
        if name.len() > 127 {
            // Longer than any name a PDF reader accepts: not a key we look for.
            break;
        }
    }
    (name, i)
}

/// Decodes every stream of `pdf` as `lopdf` would, counting the bytes, and refuses
/// (`too_large`) once they pass `max_inflated` in total. Nothing decoded is kept but the
/// input of the next filter of a chain.
///
/// A stream starts after each `stream` keyword (not `endstream`) and its end of line;
/// its data is decoded from there to the end of the file, so a wrong or indirect
/// `/Length` cannot hide data (decoders stop at their own end marker). Its filters are
/// read from the dictionary before the keyword (names with `#xx` escapes decoded,
/// comments and strings skipped); a stream whose dictionary names none is still tried as
/// zlib data when it looks like it.
pub fn check_streams(pdf: &[u8], max_inflated: u64, cancel: &Cancel) -> Result<u64, HostError> {
    let mut budget = Budget {
        used: 0,
        max: max_inflated,
    };
    let mut at = 0;
    while let Some(found) = find(&pdf[at..], b"stream") {
        let keyword = at + found;
        // A stream's dictionary lies after the previous `stream`/`endstream` keyword:
        // each byte is looked at once, however many keywords the file has.
        let previous = at;
        at = keyword + b"stream".len();
        if keyword >= 3 && &pdf[keyword - 3..keyword] == b"end" {
            continue;
        }
        let data_start = match &pdf[at..] {
            [b'\r', b'\n', ..] => at + 2,
            [b'\n', ..] | [b'\r', ..] => at + 1,
            _ => continue,
        };
        cancel.check()?;
        let dict_from = keyword.saturating_sub(MAX_DICT_BYTES).max(previous);
        let dict = dictionary_before(&pdf[dict_from..keyword]);
        let mut filters = filters_of(dict);
        let data = &pdf[data_start..];
        if filters.is_empty() && looks_like_zlib(data) {
            filters.push(Filter::Flate);
        }
        decode_chain(data, &filters, &mut budget, cancel)?;
    }
    Ok(budget.used)
}

/// The bytes decoded so far and the bound.
struct Budget {
    used: u64,
    max: u64,
}

impl Budget {
    fn left(&self) -> u64 {
        self.max.saturating_sub(self.used)
    }

    fn spend(&mut self, n: u64) -> Result<(), HostError> {
        self.used += n;
        if self.used > self.max {
            return Err(HostError::too_large(format!(
                "the PDF's streams inflate to more than {} bytes; it is not extracted",
                self.max
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    Flate,
    Lzw,
    Ascii85,
}

/// Runs `filters` in order over `data`; the last one only counts its output.
fn decode_chain(
    data: &[u8],
    filters: &[Filter],
    budget: &mut Budget,
    cancel: &Cancel,
) -> Result<(), HostError> {
    let mut input: std::borrow::Cow<'_, [u8]> = std::borrow::Cow::Borrowed(data);
    for (i, filter) in filters.iter().enumerate() {
        let keep = i + 1 < filters.len();
        let mut kept = Vec::new();
        let sink = |chunk: &[u8], budget: &mut Budget| -> Result<(), HostError> {
            budget.spend(chunk.len() as u64)?;
            if keep {
                kept.extend_from_slice(chunk);
            }
            Ok(())
        };
        match filter {
            Filter::Flate => inflate(&input, budget, cancel, sink)?,
            Filter::Lzw => lzw(&input, budget, cancel, sink)?,
            Filter::Ascii85 => ascii85(&input, budget, sink)?,
        }
        input = std::borrow::Cow::Owned(kept);
    }
    Ok(())
}

const CHUNK: usize = 64 << 10;

/// zlib-inflates `data` chunk by chunk into `sink`; like `lopdf`, falls back to raw
/// deflate after the two header bytes when zlib fails at once.
fn inflate(
    data: &[u8],
    budget: &mut Budget,
    cancel: &Cancel,
    mut sink: impl FnMut(&[u8], &mut Budget) -> Result<(), HostError>,
) -> Result<(), HostError> {
    let mut buf = vec![0u8; CHUNK];
    let mut run = |reader: &mut dyn Read, budget: &mut Budget| -> Result<u64, HostError> {
        let mut total = 0u64;
        loop {
            cancel.check()?;
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => return Ok(total),
                Ok(n) => {
                    total += n as u64;
                    sink(&buf[..n], budget)?;
                    if budget.left() == 0 {
                        // One more byte would pass the bound: find out without keeping it.
                        let mut probe = [0u8; 1];
                        if matches!(reader.read(&mut probe), Ok(1)) {
                            budget.spend(1)?;
                        }
                        return Ok(total);
                    }
                }
            }
        }
    };
    let produced = run(&mut flate2::read::ZlibDecoder::new(data), budget)?;
    if produced == 0 && data.len() > 2 {
        run(&mut flate2::read::DeflateDecoder::new(&data[2..]), budget)?;
    }
    Ok(())
}

/// LZW-decodes `data` both with and without the early code-size change (`lopdf` picks
/// one from `/DecodeParms`; counting both covers either).
fn lzw(
    data: &[u8],
    budget: &mut Budget,
    cancel: &Cancel,
    mut sink: impl FnMut(&[u8], &mut Budget) -> Result<(), HostError>,
) -> Result<(), HostError> {
    use weezl::{BitOrder, LzwStatus, decode::Decoder};
    let mut buf = vec![0u8; CHUNK];
    for early in [true, false] {
        let mut decoder = if early {
            Decoder::with_tiff_size_switch(BitOrder::Msb, 8)
        } else {
            Decoder::new(BitOrder::Msb, 8)
        };
        let mut input = data;
        loop {
            cancel.check()?;
            let result = decoder.decode_bytes(input, &mut buf);
            input = &input[result.consumed_in..];
            // Only the first pass is handed on; the second only counts.
            if early {
                sink(&buf[..result.consumed_out], budget)?;
            } else {
                budget.spend(result.consumed_out as u64)?;
            }
            match result.status {
                Ok(LzwStatus::Ok) if result.consumed_in + result.consumed_out > 0 => {}
                _ => break,
            }
        }
    }
    Ok(())
}

/// ASCII85-decodes `data` (whitespace skipped, `z` for four zeros, stopping at `~` or
/// any other byte outside the alphabet), as `lopdf` does.
fn ascii85(
    data: &[u8],
    budget: &mut Budget,
    mut sink: impl FnMut(&[u8], &mut Budget) -> Result<(), HostError>,
) -> Result<(), HostError> {
    let mut out = Vec::with_capacity(CHUNK);
    let (mut group, mut count) = (0u64, 0usize);
    for &ch in data {
        if ch == b'z' && count == 0 {
            out.extend_from_slice(&[0; 4]);
        } else if ch.is_ascii_whitespace() {
            continue;
        } else if (b'!'..=b'u').contains(&ch) {
            group = group * 85 + u64::from(ch - b'!');
            count += 1;
            if count == 5 {
                out.extend_from_slice(&(group as u32).to_be_bytes());
                (group, count) = (0, 0);
            }
        } else {
            break;
        }
        if out.len() >= CHUNK {
            sink(&out, budget)?;
            out.clear();
        }
    }
    if count > 0 {
        out.extend_from_slice(&[0; 3][..count - 1]);
    }
    sink(&out, budget)
}

/// Whether `data` starts with a zlib header that declares deflate.
fn looks_like_zlib(data: &[u8]) -> bool {
    match data {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The part of `before` (the bytes before a `stream` keyword) from its object's `obj`
/// keyword on: the stream's dictionary.
fn dictionary_before(before: &[u8]) -> &[u8] {
    let mut end = before.len();
    while let Some(i) = before[..end].windows(3).rposition(|w| w == b"obj") {
        let is_endobj = i >= 3 && &before[i - 3..i] == b"end";
        if !is_endobj {
            return &before[i + 3..];
        }
        end = i;
    }
    before
}

/// A token of PDF syntax, as far as finding `/Filter` needs.
#[derive(Debug, PartialEq, Eq)]
enum Token {
    Name(Vec<u8>),
    ArrayOpen,
    ArrayClose,
    DictOpen,
    DictClose,
    Other,
}

fn is_delimiter(b: u8) -> bool {
    matches!(
        b,
        b'(' | b')' | b'<' | b'>' | b'[' | b']' | b'{' | b'}' | b'/' | b'%'
    )
}

/// Splits dictionary text into tokens: names (with `#xx` decoded), brackets and
/// anything else; comments, strings and hex strings are skipped.
fn tokens(text: &[u8]) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        match b {
            _ if b.is_ascii_whitespace() || b == 0 => i += 1,
            b'%' => {
                while i < text.len() && !matches!(text[i], b'\r' | b'\n') {
                    i += 1;
                }
            }
            b'(' => {
                let mut depth = 0usize;
                while i < text.len() {
                    match text[i] {
                        b'\\' => i += 1,
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                out.push(Token::Other);
            }
            b'<' if text.get(i + 1) == Some(&b'<') => {
                out.push(Token::DictOpen);
                i += 2;
            }
            b'>' if text.get(i + 1) == Some(&b'>') => {
                out.push(Token::DictClose);
                i += 2;
            }
            b'<' => {
                while i < text.len() && text[i] != b'>' {
                    i += 1;
                }
                i += 1;
                out.push(Token::Other);
            }
            b'[' => {
                out.push(Token::ArrayOpen);
                i += 1;
            }
            b']' => {
                out.push(Token::ArrayClose);
                i += 1;
            }
            b'/' => {
                let (name, end) = read_name(text, i + 1);
                i = end;
                out.push(Token::Name(name));
            }
            _ => {
                i += 1;
                while i < text.len() && !text[i].is_ascii_whitespace() && !is_delimiter(text[i]) {
                    i += 1;
                }
                out.push(Token::Other);
            }
        }
    }
    out
}

/// The filters the stream's dictionary names under `/Filter` (one name or an array), in
/// decoding order, up to the first one `lopdf` does not decode (it stops there too).
fn filters_of(dict: &[u8]) -> Vec<Filter> {
    let tokens = tokens(dict);
    let mut names = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::DictOpen => depth += 1,
            Token::DictClose => depth = depth.saturating_sub(1),
            Token::Name(key) if depth <= 1 && key == b"Filter" => {
                match tokens.get(i + 1) {
                    Some(Token::Name(name)) => names.push(name.clone()),
                    Some(Token::ArrayOpen) => {
                        for token in &tokens[i + 2..] {
                            match token {
                                Token::Name(name) => names.push(name.clone()),
                                _ => break,
                            }
                        }
                    }
                    _ => {}
                }
                break;
            }
            _ => {}
        }
        i += 1;
    }
    names
        .iter()
        .map_while(|name| match name.as_slice() {
            b"FlateDecode" => Some(Filter::Flate),
            b"LZWDecode" => Some(Filter::Lzw),
            b"ASCII85Decode" => Some(Filter::Ascii85),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::Write;

    use super::*;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn stream_object(dict: &str, data: &[u8]) -> Vec<u8> {
        let mut out =
            format!("1 0 obj\n<< {dict} /Length {} >>\nstream\n", data.len()).into_bytes();
        out.extend_from_slice(data);
        out.extend_from_slice(b"\nendstream\nendobj\n");
        out
    }

    #[test]
    fn filters_are_read_as_lopdf_reads_them() {
        assert_eq!(filters_of(b" << /Filter /FlateDecode >>"), [Filter::Flate]);
        assert_eq!(
            filters_of(b"<</Filter[/Flat#65Decode/LZWDecode /ASCII85Decode]>>"),
            [Filter::Flate, Filter::Lzw, Filter::Ascii85]
        );
        assert_eq!(
            filters_of(b"<< /Fil#74er % a comment /DCTDecode\n /FlateDecode >>"),
            [Filter::Flate]
        );
        // A string that mentions /Filter is not a key; an unknown filter ends the chain.
        assert_eq!(filters_of(b"<< /T (/Filter /FlateDecode) >>"), []);
        assert_eq!(
            filters_of(b"<< /Filter [/ASCIIHexDecode /FlateDecode] >>"),
            []
        );
        assert_eq!(
            dictionary_before(b"endobj\n2 0 obj\n<< /A 1 >>\n"),
            b"\n<< /A 1 >>\n"
        );
    }

    #[test]
    fn a_bomb_is_refused_after_at_most_the_budget() {
        let bomb = zlib(&vec![0u8; 24 << 20]);
        assert!(bomb.len() < (24 << 20) / 50, "{}", bomb.len());
        let pdf = stream_object("/Filter /FlateDecode", &bomb);
        let err = check_streams(&pdf, 4 << 20, &Cancel::default()).unwrap_err();
        assert_eq!(err.code, super::super::ErrorCode::TooLarge);
        // Doubly compressed, and declared under an escaped name: the same.
        let double = zlib(&bomb);
        let pdf = stream_object("/Filter [/FlateDecode /Fl#61teDecode]", &double);
        let err = check_streams(&pdf, 4 << 20, &Cancel::default()).unwrap_err();
        assert_eq!(err.code, super::super::ErrorCode::TooLarge);
        // No /Filter the scanner can see, but zlib data: still counted.
        let pdf = stream_object("/Filter 7 0 R", &bomb);
        let err = check_streams(&pdf, 4 << 20, &Cancel::default()).unwrap_err();
        assert_eq!(err.code, super::super::ErrorCode::TooLarge);
    }

    #[test]
    fn lzw_and_ascii85_are_counted() {
        let mut lzw = Vec::new();
        weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8)
            .into_stream(&mut lzw)
            .encode_all(&vec![b'a'; 2 << 20][..])
            .status
            .unwrap();
        let pdf = stream_object("/Filter /LZWDecode", &lzw);
        let err = check_streams(&pdf, 1 << 20, &Cancel::default()).unwrap_err();
        assert_eq!(err.code, super::super::ErrorCode::TooLarge);
        let used = check_streams(&pdf, 16 << 20, &Cancel::default()).unwrap();
        assert!(used >= 2 << 20, "{used}");
        let pdf = stream_object("/Filter /ASCII85Decode", &vec![b'z'; 2 << 20]);
        let err = check_streams(&pdf, 4 << 20, &Cancel::default()).unwrap_err();
        assert_eq!(err.code, super::super::ErrorCode::TooLarge);
    }

    #[test]
    fn a_small_compressed_stream_passes_and_work_stops_when_the_action_ends() {
        let pdf = stream_object("/Filter /FlateDecode", &zlib(b"BT (hello) Tj ET"));
        assert_eq!(
            check_streams(&pdf, 1 << 20, &Cancel::default()).unwrap(),
            16
        );
        let cancel = Cancel::default();
        cancel.cancel();
        let err = check_streams(&pdf, 1 << 20, &cancel).unwrap_err();
        assert!(err.message.contains("abandoned"), "{err}");
    }
}
