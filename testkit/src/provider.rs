//! A local stand-in for the AI providers, speaking each one's streaming wire format as
//! documented: OpenAI chat completions, Anthropic messages, Google Gemini
//! `streamGenerateContent` (`alt=sse`). Tests cannot reach the real providers; the
//! desktop node's adapters are the production code, pointed at this server's URL.
//!
//! The reply is deterministic: `Echo: ` and the last user message, streamed a word per
//! event. Markers in the prompt choose other behaviour:
//!
//! * `[slow]`: 200 ms between events (to test cancellation);
//! * `[fail]`: the provider's mid-stream error event after two words;
//! * `[500]`: HTTP 500 with the provider's error body;
//! * `[busy]`: HTTP 429 (`retry-after: 0`) for the first two attempts, then the reply;
//! * `[long]`: the reply 500 times over (thousands of events, for throughput).
//!
//! A wrong or missing API key gets the provider's own refusal. `GET /stats` reports
//! requests, streams finished, and streams the client abandoned midway.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::{Value, json};

/// Counters a test can read.
#[derive(Default, Debug)]
pub struct Stats {
    /// Requests received.
    pub requests: AtomicU64,
    /// Streams sent to the end.
    pub completed: AtomicU64,
    /// Streams the client dropped before the end.
    pub aborted: AtomicU64,
    /// The model each streamed request named, in arrival order (so a test can check
    /// which model a run used).
    pub models: Mutex<Vec<String>>,
}

impl Stats {
    /// The models requests named so far, in order.
    pub fn models(&self) -> Vec<String> {
        self.models
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn record_model(&self, model: &str) {
        self.models
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(model.to_owned());
    }
}

struct Fake {
    api_key: Option<String>,
    stats: Arc<Stats>,
    busy_attempts: Mutex<HashMap<String, u32>>,
}

/// A running fake provider.
pub struct FakeProvider {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its counters.
    pub stats: Arc<Stats>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeProvider {
    /// The OpenAI-style base URL (`http://addr/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The Anthropic- and Gemini-style base URL (`http://addr`).
    pub fn root_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The text the fake answers a prompt with.
pub fn reply_for(prompt: &str) -> String {
    format!("Echo: {prompt}")
}

/// The reply split into the pieces streamed, one per event.
pub fn reply_tokens(prompt: &str) -> Vec<String> {
    let once: Vec<String> = reply_for(prompt)
        .split_inclusive(' ')
        .map(str::to_owned)
        .collect();
    let times = if prompt.contains("[long]") { 500 } else { 1 };
    let mut tokens = Vec::with_capacity(once.len() * times);
    for _ in 0..times {
        tokens.extend(once.iter().cloned());
    }
    tokens
}

/// Starts the fake on `addr` (port 0 for any). With `api_key`, requests must carry it.
pub async fn start(addr: SocketAddr, api_key: Option<String>) -> std::io::Result<FakeProvider> {
    let stats = Arc::new(Stats::default());
    let fake = Arc::new(Fake {
        api_key,
        stats: stats.clone(),
        busy_attempts: Mutex::new(HashMap::new()),
    });
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(openai))
        .route("/v1/messages", post(anthropic))
        .route("/v1beta/models/{target}", post(gemini))
        .route("/stats", get(stats_handler))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    // Events go out as soon as they are written, as a provider's do (no Nagle delay).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(FakeProvider { addr, stats, task })
}

async fn stats_handler(State(fake): State<Arc<Fake>>) -> Json<Value> {
    Json(json!({
        "requests": fake.stats.requests.load(Ordering::Relaxed),
        "completed": fake.stats.completed.load(Ordering::Relaxed),
        "aborted": fake.stats.aborted.load(Ordering::Relaxed),
        "models": fake.stats.models(),
    }))
}

/// What a request asked for, whatever the format.
struct Ask {
    prompt: String,
    slow: bool,
    fail: bool,
}

enum Gate {
    Go(Ask),
    Refuse(StatusCode, Value),
}

impl Fake {
    /// Counts the request and applies the prompt's markers that refuse it.
    fn gate(
        &self,
        prompt: String,
        key_ok: bool,
        refusal: impl Fn(&str) -> (StatusCode, Value),
    ) -> Gate {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        if !key_ok {
            let (status, body) = refusal("key");
            return Gate::Refuse(status, body);
        }
        if prompt.contains("[500]") {
            let (status, body) = refusal("500");
            return Gate::Refuse(status, body);
        }
        if prompt.contains("[busy]") {
            let mut attempts = self.busy_attempts.lock().unwrap_or_else(|e| e.into_inner());
            let n = attempts.entry(prompt.clone()).or_insert(0);
            *n += 1;
            if *n <= 2 {
                let (status, body) = refusal("429");
                return Gate::Refuse(status, body);
            }
        }
        Gate::Go(Ask {
            slow: prompt.contains("[slow]"),
            fail: prompt.contains("[fail]"),
            prompt,
        })
    }

    fn key_ok(&self, sent: Option<&str>) -> bool {
        self.api_key.as_deref().is_none_or(|key| sent == Some(key))
    }

    /// Streams `events`, counting completion and abandonment.
    fn stream(&self, events: Vec<Bytes>, slow: bool) -> Response {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let stats = self.stats.clone();
        tokio::spawn(async move {
            for event in events {
                if slow {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                if tx.send(Ok(event)).await.is_err() {
                    stats.aborted.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            // Every event is handed over; dropping the sender ends the body.
            drop(tx);
            stats.completed.fetch_add(1, Ordering::Relaxed);
        });
        let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/event-stream; charset=utf-8")
            .header("cache-control", "no-cache")
            .body(body)
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    }
}

fn refused(status: StatusCode, body: Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("0"));
    }
    response
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

// --- OpenAI -------------------------------------------------------------------------

fn openai_error(status: StatusCode, message: &str, kind: &str, code: Value) -> (StatusCode, Value) {
    (
        status,
        json!({ "error": { "message": message, "type": kind, "param": null, "code": code } }),
    )
}

fn openai_chunk(model: &str, delta: Value, finish: Value) -> Bytes {
    let event = json!({
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "system_fingerprint": "fp_test",
        "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
    });
    Bytes::from(format!("data: {event}\n\n"))
}

async fn openai(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    Json(request): Json<Value>,
) -> Response {
    let key = header(&headers, "authorization").and_then(|v| v.strip_prefix("Bearer "));
    let prompt = request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    let ask = match fake.gate(prompt, fake.key_ok(key), |why| match why {
        "key" => openai_error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided: sk-***. You can find your API key at https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            json!("invalid_api_key"),
        ),
        "429" => openai_error(StatusCode::TOO_MANY_REQUESTS, "Rate limit reached for requests", "requests", json!("rate_limit_exceeded")),
        _ => openai_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            Value::Null,
        ),
    }) {
        Gate::Go(ask) => ask,
        Gate::Refuse(status, body) => return refused(status, body),
    };
    if request["stream"] != json!(true) {
        let (status, body) = openai_error(
            StatusCode::BAD_REQUEST,
            "this fake only streams",
            "invalid_request_error",
            Value::Null,
        );
        return refused(status, body);
    }
    let model = request["model"]
        .as_str()
        .unwrap_or("gpt-4o-mini")
        .to_owned();
    fake.stats.record_model(&model);
    let mut events = vec![openai_chunk(
        &model,
        json!({ "role": "assistant", "content": "", "refusal": null }),
        Value::Null,
    )];
    for (i, token) in reply_tokens(&ask.prompt).into_iter().enumerate() {
        if ask.fail && i == 2 {
            let error = json!({ "error": { "message": "The model is overloaded. Please try again later.", "type": "server_error", "param": null, "code": null } });
            events.push(Bytes::from(format!("data: {error}\n\n")));
            return fake.stream(events, ask.slow);
        }
        events.push(openai_chunk(
            &model,
            json!({ "content": token }),
            Value::Null,
        ));
    }
    events.push(openai_chunk(&model, json!({}), json!("stop")));
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    fake.stream(events, ask.slow)
}

// --- Anthropic ----------------------------------------------------------------------

fn anthropic_error(status: StatusCode, kind: &str, message: &str) -> (StatusCode, Value) {
    (
        status,
        json!({ "type": "error", "error": { "type": kind, "message": message } }),
    )
}

fn anthropic_event(name: &str, data: Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

async fn anthropic(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    Json(request): Json<Value>,
) -> Response {
    if header(&headers, "anthropic-version").is_none() {
        let (status, body) = anthropic_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "anthropic-version: header is required",
        );
        return refused(status, body);
    }
    let prompt = request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    let ask = match fake.gate(
        prompt,
        fake.key_ok(header(&headers, "x-api-key")),
        |why| match why {
            "key" => anthropic_error(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid x-api-key",
            ),
            "429" => anthropic_error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "Number of request tokens has exceeded your per-minute rate limit",
            ),
            _ => anthropic_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                "Internal server error",
            ),
        },
    ) {
        Gate::Go(ask) => ask,
        Gate::Refuse(status, body) => return refused(status, body),
    };
    if request["max_tokens"].as_u64().is_none() {
        let (status, body) = anthropic_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "max_tokens: Field required",
        );
        return refused(status, body);
    }
    let model = request["model"].as_str().unwrap_or("claude").to_owned();
    fake.stats.record_model(&model);
    let mut events = vec![
        anthropic_event(
            "message_start",
            json!({ "type": "message_start", "message": { "id": "msg_test", "type": "message", "role": "assistant", "content": [], "model": model, "stop_reason": null, "stop_sequence": null, "usage": { "input_tokens": 12, "output_tokens": 1 } } }),
        ),
        anthropic_event(
            "content_block_start",
            json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } }),
        ),
        anthropic_event("ping", json!({ "type": "ping" })),
    ];
    for (i, token) in reply_tokens(&ask.prompt).into_iter().enumerate() {
        if ask.fail && i == 2 {
            events.push(anthropic_event("error", json!({ "type": "error", "error": { "type": "overloaded_error", "message": "Overloaded" } })));
            return fake.stream(events, ask.slow);
        }
        events.push(anthropic_event("content_block_delta", json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": token } })));
    }
    events.push(anthropic_event(
        "content_block_stop",
        json!({ "type": "content_block_stop", "index": 0 }),
    ));
    events.push(anthropic_event("message_delta", json!({ "type": "message_delta", "delta": { "stop_reason": "end_turn", "stop_sequence": null }, "usage": { "output_tokens": 15 } })));
    events.push(anthropic_event(
        "message_stop",
        json!({ "type": "message_stop" }),
    ));
    fake.stream(events, ask.slow)
}

// --- Google Gemini ------------------------------------------------------------------

fn gemini_error(status: StatusCode, code: u16, message: &str, kind: &str) -> (StatusCode, Value) {
    (
        status,
        json!({ "error": { "code": code, "message": message, "status": kind } }),
    )
}

fn gemini_chunk(model: &str, text: &str, finish: Option<&str>) -> Bytes {
    let mut candidate =
        json!({ "content": { "parts": [{ "text": text }], "role": "model" }, "index": 0 });
    if let Some(reason) = finish {
        candidate["finishReason"] = json!(reason);
    }
    let data = json!({
        "candidates": [candidate],
        "usageMetadata": { "promptTokenCount": 9, "candidatesTokenCount": 1, "totalTokenCount": 10 },
        "modelVersion": model,
    });
    // Gemini ends its event lines with CRLF.
    Bytes::from(format!("data: {data}\r\n\r\n"))
}

async fn gemini(
    State(fake): State<Arc<Fake>>,
    Path(target): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    Json(request): Json<Value>,
) -> Response {
    let Some(model) = target.strip_suffix(":streamGenerateContent") else {
        let (status, body) = gemini_error(
            StatusCode::NOT_FOUND,
            404,
            "this fake only serves streamGenerateContent",
            "NOT_FOUND",
        );
        return refused(status, body);
    };
    fake.stats.record_model(model);
    if query.get("alt").map(String::as_str) != Some("sse") {
        let (status, body) = gemini_error(
            StatusCode::BAD_REQUEST,
            400,
            "this fake only streams with alt=sse",
            "INVALID_ARGUMENT",
        );
        return refused(status, body);
    }
    let prompt = request["contents"]
        .as_array()
        .and_then(|c| c.iter().rev().find(|c| c["role"] == "user"))
        .and_then(|c| c["parts"][0]["text"].as_str())
        .unwrap_or_default()
        .to_owned();
    let ask = match fake.gate(prompt, fake.key_ok(header(&headers, "x-goog-api-key")), |why| match why {
        "key" => gemini_error(StatusCode::BAD_REQUEST, 400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT"),
        "429" => gemini_error(StatusCode::TOO_MANY_REQUESTS, 429, "Resource has been exhausted (e.g. check quota).", "RESOURCE_EXHAUSTED"),
        _ => gemini_error(StatusCode::INTERNAL_SERVER_ERROR, 500, "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting", "INTERNAL"),
    }) {
        Gate::Go(ask) => ask,
        Gate::Refuse(status, body) => return refused(status, body),
    };
    let mut events = Vec::new();
    for (i, token) in reply_tokens(&ask.prompt).into_iter().enumerate() {
        if ask.fail && i == 2 {
            let error = json!({ "error": { "code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE" } });
            events.push(Bytes::from(format!("data: {error}\r\n\r\n")));
            return fake.stream(events, ask.slow);
        }
        events.push(gemini_chunk(model, &token, None));
    }
    events.push(gemini_chunk(model, "", Some("STOP")));
    fake.stream(events, ask.slow)
}
