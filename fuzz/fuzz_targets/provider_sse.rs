//! Provider answers (desktop-node/src/ai): the streamed body of each provider, through
//! `ai::sse_text` (the server-sent-event parser and the adapter's `interpret`, exactly as
//! a provider response is read), and each adapter's `error_message` on an error body.
//!
//! The first input byte picks the provider and the size of the pieces the body arrives
//! in. Nothing may panic; the text must not depend on how the body was split into
//! pieces; an error ends the stream.

#![no_main]

use std::convert::Infallible;

use bytes::Bytes;
use aisa_ai::{AiError, Step, anthropic, gemini, openai, sse_text};
use eventsource_stream::Event;
use futures_util::{FutureExt, StreamExt, stream};
use libfuzzer_sys::fuzz_target;

type Interpret = fn(&Event) -> Result<Step, AiError>;

/// Everything `sse_text` yields for `body` delivered in `pieces`.
fn read(pieces: Vec<Bytes>, interpret: Interpret) -> Vec<Result<String, AiError>> {
    let body =
        reqwest::Body::wrap_stream(stream::iter(pieces.into_iter().map(Ok::<_, Infallible>)));
    let response = reqwest::Response::from(http::Response::new(body));
    sse_text(response, interpret)
        .collect::<Vec<_>>()
        .now_or_never()
        .expect("an in-memory body never waits")
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let interpret: Interpret = match first % 3 {
        0 => openai::interpret,
        1 => anthropic::interpret,
        _ => gemini::interpret,
    };
    let step = usize::from(first / 3).max(1);
    let whole = read(vec![Bytes::copy_from_slice(body)], interpret);
    let pieces = read(
        body.chunks(step).map(Bytes::copy_from_slice).collect(),
        interpret,
    );
    assert_eq!(whole, pieces, "the text depends on how the body was split");
    if let Some(at) = whole.iter().position(Result::is_err) {
        assert_eq!(at + 1, whole.len(), "the stream went on after an error");
    }
    let text = String::from_utf8_lossy(body);
    let _ = openai::error_message(&text);
    let _ = anthropic::error_message(&text);
    let _ = gemini::error_message(&text);
});
