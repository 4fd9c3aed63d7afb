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
/// The most bytes of content the extractor may go through, counting every time a form
/// or image is drawn again (`Do`) and every level of nesting.
pub const MAX_CONTENT_WORK: u64 = 256 << 20;
/// The most tokens one content stream may hold (`pdf-extract` parses a whole stream into
/// a vector of operations at once).
pub const MAX_STREAM_TOKENS: usize = 500_000;
/// The deepest nesting of forms drawn inside forms.
pub const MAX_FORM_DEPTH: usize = 16;

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
    check_content_work(&doc, cancel)?;
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

/// Walks the pages as `pdf-extract` will, without drawing anything: counts the bytes of
/// content it would go through (a form or image drawn again with `Do` counts again,
/// nested forms count at every level) and the tokens of each stream, and refuses
/// (`too_large`) a document over [`MAX_CONTENT_WORK`], [`MAX_STREAM_TOKENS`] or
/// [`MAX_FORM_DEPTH`], and one whose forms draw themselves (which would recurse without
/// end in the extractor).
fn check_content_work(doc: &pdf_extract::Document, cancel: &Cancel) -> Result<(), HostError> {
    let mut walk = Walk {
        doc,
        cancel,
        memo: std::collections::HashMap::new(),
        drawing: Vec::new(),
    };
    let mut total = 0u64;
    for page_id in doc.get_pages().into_values() {
        cancel.check()?;
        let content = doc.get_page_content(page_id).unwrap_or_default();
        let resources = inherited_resources(doc, page_id);
        total = total.saturating_add(walk.content(&content, resources, 0)?);
        if total > MAX_CONTENT_WORK {
            return Err(too_much_work());
        }
    }
    Ok(())
}

fn too_much_work() -> HostError {
    HostError::too_large(format!(
        "the PDF would make the extractor go through more than {MAX_CONTENT_WORK} bytes of content (forms or images drawn many times); it is not extracted"
    ))
}

/// The page's `/Resources`, from it or the nearest `/Parent` that has one.
fn inherited_resources(
    doc: &pdf_extract::Document,
    page_id: pdf_extract::ObjectId,
) -> Option<&pdf_extract::Dictionary> {
    let mut dict = doc.get_dictionary(page_id).ok()?;
    for _ in 0..64 {
        if let Ok(resources) = dict.get(b"Resources") {
            return doc.dereference(resources).ok()?.1.as_dict().ok();
        }
        let parent = dict.get(b"Parent").ok()?.as_reference().ok()?;
        dict = doc.get_dictionary(parent).ok()?;
    }
    None
}

struct Walk<'a> {
    doc: &'a pdf_extract::Document,
    cancel: &'a Cancel,
    /// What drawing a stream (under the resources it is drawn with) costs.
    memo: std::collections::HashMap<(pdf_extract::ObjectId, usize), u64>,
    /// The forms being drawn, outermost first.
    drawing: Vec<pdf_extract::ObjectId>,
}

impl<'a> Walk<'a> {
    /// What going through `content` costs: its bytes and those of everything it draws.
    fn content(
        &mut self,
        content: &[u8],
        resources: Option<&'a pdf_extract::Dictionary>,
        depth: usize,
    ) -> Result<u64, HostError> {
        let mut cost = content.len() as u64;
        let (tokens, drawn) = scan_content(content);
        if tokens > MAX_STREAM_TOKENS {
            return Err(HostError::too_large(format!(
                "a content stream of the PDF has more than {MAX_STREAM_TOKENS} tokens; it is not extracted"
            )));
        }
        for name in drawn {
            self.cancel.check()?;
            let Some((id, stream)) = self.xobject(resources, &name) else {
                continue;
            };
            let key = (id, resources.map_or(0, |r| r as *const _ as usize));
            let one = match self.memo.get(&key) {
                Some(cost) => *cost,
                None => {
                    if self.drawing.contains(&id) {
                        return Err(HostError::failed(
                            "the PDF's forms draw themselves; it is not extracted",
                        ));
                    }
                    if depth >= MAX_FORM_DEPTH {
                        return Err(HostError::too_large(format!(
                            "the PDF nests forms deeper than {MAX_FORM_DEPTH}; it is not extracted"
                        )));
                    }
                    // pdf-extract draws it with its own resources, else the caller's.
                    let inner = stream
                        .dict
                        .get(b"Resources")
                        .ok()
                        .and_then(|r| self.doc.dereference(r).ok())
                        .and_then(|(_, r)| r.as_dict().ok())
                        .or(resources);
                    let data = stream
                        .decompressed_content()
                        .unwrap_or_else(|_| stream.content.clone());
                    self.drawing.push(id);
                    let cost = self.content(&data, inner, depth + 1);
                    self.drawing.pop();
                    let cost = cost?;
                    self.memo.insert(key, cost);
                    cost
                }
            };
            cost = cost.saturating_add(one);
            if cost > MAX_CONTENT_WORK {
                return Err(too_much_work());
            }
        }
        Ok(cost)
    }

    /// The stream `/XObject /<name>` of `resources` names, and its object id.
    fn xobject(
        &self,
        resources: Option<&'a pdf_extract::Dictionary>,
        name: &[u8],
    ) -> Option<(pdf_extract::ObjectId, &'a pdf_extract::Stream)> {
        let xobjects = resources?.get(b"XObject").ok()?;
        let xobjects = self.doc.dereference(xobjects).ok()?.1.as_dict().ok()?;
        let id = xobjects.get(name).ok()?.as_reference().ok()?;
        let stream = self.doc.get_object(id).ok()?.as_stream().ok()?;
        Some((id, stream))
    }
}

/// Counts the tokens of a content stream and lists the names drawn with `Do`, without
/// building its operations. Strings, comments and inline image data (`ID` … `EI`) are
/// skipped.
fn scan_content(content: &[u8]) -> (usize, Vec<Vec<u8>>) {
    let mut tokens = 0usize;
    let mut drawn = Vec::new();
    let mut last_name: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < content.len() {
        let b = content[i];
        if b.is_ascii_whitespace() || b == 0 {
            i += 1;
            continue;
        }
        tokens += 1;
        match b {
            b'%' => {
                while i < content.len() && !matches!(content[i], b'\r' | b'\n') {
                    i += 1;
                }
            }
            b'(' => {
                let mut depth = 0usize;
                while i < content.len() {
                    match content[i] {
                        b'\\' => i += 1,
                        b'(' => depth += 1,
                        b')' => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'<' if content.get(i + 1) != Some(&b'<') => {
                while i < content.len() && content[i] != b'>' {
                    i += 1;
                }
                i += 1;
            }
            b'/' => {
                let (name, end) = read_name(content, i + 1);
                last_name = Some(name);
                i = end;
                continue;
            }
            _ if is_delimiter(b) => i += if content.get(i + 1) == Some(&b) { 2 } else { 1 },
            _ => {
                let start = i;
                while i < content.len()
                    && !content[i].is_ascii_whitespace()
                    && !is_delimiter(content[i])
                {
                    i += 1;
                }
                match &content[start..i] {
                    b"Do" => {
                        if let Some(name) = last_name.take() {
                            drawn.push(name);
                        }
                    }
                    b"ID" => {
                        // Inline image data runs to `EI` after white space.
                        let rest = &content[i..];
                        let end = rest
                            .windows(4)
                            .position(|w| {
                                w[0].is_ascii_whitespace()
                                    && &w[1..3] == b"EI"
                                    && (w[3].is_ascii_whitespace())
                            })
                            .map_or(rest.len(), |p| p + 3);
                        i += end;
                    }
                    _ => {}
                }
                continue;
            }
        }
    }
    (tokens, drawn)
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

    /// A one-page PDF whose page draws `content` with a form XObject `/F0` whose own
    /// content is `form` (and whose own resources are `form_resources`).
    fn pdf_with_form(content: &[u8], form: &[u8], form_resources: &str) -> Vec<u8> {
        let stream = |dict: &str, data: &[u8]| {
            let mut s = format!("<< {dict} /Length {} >>\nstream\n", data.len()).into_bytes();
            s.extend_from_slice(data);
            s.extend_from_slice(b"\nendstream");
            s
        };
        let objects: Vec<Vec<u8>> = vec![
            b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /XObject << /F0 5 0 R >> /Font << /F1 6 0 R >> >> >>".to_vec(),
            stream("", content),
            stream(
                &format!("/Type /XObject /Subtype /Form /BBox [0 0 10 10] {form_resources}"),
                form,
            ),
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec(),
        ];
        let mut pdf = b"%PDF-1.4\n".to_vec();
        let mut offsets = Vec::new();
        for (i, body) in objects.iter().enumerate() {
            offsets.push(pdf.len());
            pdf.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
            pdf.extend_from_slice(body);
            pdf.extend_from_slice(b"\nendobj\n");
        }
        let xref = pdf.len();
        pdf.extend_from_slice(
            format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
        );
        for offset in offsets {
            pdf.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
        }
        pdf.extend_from_slice(
            format!(
                "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
                objects.len() + 1
            )
            .as_bytes(),
        );
        pdf
    }

    #[test]
    fn a_form_that_draws_itself_is_refused_not_recursed_into() {
        // Without the check, pdf-extract recurses until the stack overflows, which
        // takes the whole node down.
        let pdf = pdf_with_form(
            b"/F0 Do",
            b"/F0 Do",
            "/Resources << /XObject << /F0 5 0 R >> >>",
        );
        let err = extract_text_bounded(&pdf, MAX_INFLATED_BYTES, &Cancel::default()).unwrap_err();
        assert!(err.message.contains("draw themselves"), "{err}");
        // Drawing it through the page's resources (no resources of its own): the same.
        let pdf = pdf_with_form(b"/F0 Do", b"q /F0 Do Q", "");
        let err = extract_text_bounded(&pdf, MAX_INFLATED_BYTES, &Cancel::default()).unwrap_err();
        assert!(err.message.contains("draw themselves"), "{err}");
    }

    #[test]
    fn a_form_drawn_very_many_times_is_refused_before_extraction() {
        // 8 KiB of form drawn 40,000 times: over 300 MiB of content to go through.
        let form = vec![b' '; 8 << 10];
        let content = b"/F0 Do\n".repeat(40_000);
        let pdf = pdf_with_form(&content, &form, "");
        let err = extract_text_bounded(&pdf, MAX_INFLATED_BYTES, &Cancel::default()).unwrap_err();
        assert_eq!(err.code, super::super::ErrorCode::TooLarge, "{err}");
        assert!(err.message.contains("drawn many times"), "{err}");
        // Drawn a few times, with text in it: extracted.
        let pdf = pdf_with_form(
            b"/F0 Do /F0 Do",
            b"BT /F1 12 Tf 1 1 Td (inform) Tj ET",
            "/Resources << /Font << /F1 6 0 R >> >>",
        );
        let text = extract_text_bounded(&pdf, MAX_INFLATED_BYTES, &Cancel::default()).unwrap();
        assert!(text.contains("inform"), "{text:?}");
    }

    #[test]
    fn content_tokens_and_drawn_names_are_counted() {
        let (tokens, drawn) =
            scan_content(b"q /Im#31 Do (a /X Do) Tj BI /W 1 ID \x00/Y Do EI Q % /Z Do\n/F0 Do");
        assert_eq!(drawn, [b"Im1".to_vec(), b"F0".to_vec()]);
        assert!(tokens >= 10, "{tokens}");
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
