//! A local stand-in for OpenAI's `POST /v1/chat/completions` with `stream: true`.
//!
//! The reply is deterministic: `Echo: ` and the last user message, streamed a word per
//! event, framed exactly as OpenAI frames it (`data: {chunk}\n\n`, a first chunk with the
//! role, a last chunk with `finish_reason`, then `data: [DONE]`). Markers in the prompt
//! choose other behaviour:
//!
//! * `[slow]`: 200 ms between events (to test cancellation);
//! * `[fail]`: an `error` event after two words, as OpenAI sends mid-stream errors;
//! * `[500]`: HTTP 500 with OpenAI's error body.
//!
//! A wrong or missing API key gets OpenAI's 401 body. `GET /stats` reports how many
//! streams finished and how many the client abandoned (aborted) midway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
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
}

struct Provider {
    api_key: Option<String>,
    stats: Arc<Stats>,
}

/// A running fake provider.
pub struct FakeOpenAi {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its counters.
    pub stats: Arc<Stats>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeOpenAi {
    /// The base URL to configure the adapter with (`http://addr/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

impl Drop for FakeOpenAi {
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
    reply_for(prompt)
        .split_inclusive(' ')
        .map(str::to_owned)
        .collect()
}

/// Starts the fake on `addr` (port 0 for any). With `api_key`, requests must carry it.
pub async fn start(addr: SocketAddr, api_key: Option<String>) -> std::io::Result<FakeOpenAi> {
    let stats = Arc::new(Stats::default());
    let provider = Arc::new(Provider {
        api_key,
        stats: stats.clone(),
    });
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/stats", get(stats_handler))
        .with_state(provider);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(FakeOpenAi { addr, stats, task })
}

async fn stats_handler(State(p): State<Arc<Provider>>) -> Json<Value> {
    Json(json!({
        "requests": p.stats.requests.load(Ordering::Relaxed),
        "completed": p.stats.completed.load(Ordering::Relaxed),
        "aborted": p.stats.aborted.load(Ordering::Relaxed),
    }))
}

fn openai_error(status: StatusCode, message: &str, kind: &str, code: Value) -> Response {
    let body =
        json!({ "error": { "message": message, "type": kind, "param": null, "code": code } });
    (status, Json(body)).into_response()
}

fn chunk(model: &str, delta: Value, finish: Value) -> Bytes {
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

async fn completions(
    State(p): State<Arc<Provider>>,
    headers: HeaderMap,
    Json(request): Json<Value>,
) -> Response {
    p.stats.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(key) = &p.api_key {
        let sent = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if sent != Some(key.as_str()) {
            return openai_error(
                StatusCode::UNAUTHORIZED,
                "Incorrect API key provided: sk-***. You can find your API key at https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                json!("invalid_api_key"),
            );
        }
    }
    if request["stream"] != json!(true) {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "this fake only streams",
            "invalid_request_error",
            Value::Null,
        );
    }
    let model = request["model"]
        .as_str()
        .unwrap_or("gpt-4o-mini")
        .to_owned();
    let prompt = request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    if prompt.contains("[500]") {
        return openai_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            Value::Null,
        );
    }
    let slow = prompt.contains("[slow]");
    let fail = prompt.contains("[fail]");
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let stats = p.stats.clone();
    tokio::spawn(async move {
        let mut events = vec![chunk(
            &model,
            json!({ "role": "assistant", "content": "", "refusal": null }),
            Value::Null,
        )];
        for (i, token) in reply_tokens(&prompt).into_iter().enumerate() {
            if fail && i == 2 {
                let error = json!({ "error": { "message": "The model is overloaded. Please try again later.", "type": "server_error", "param": null, "code": null } });
                events.push(Bytes::from(format!("data: {error}\n\n")));
                break;
            }
            events.push(chunk(&model, json!({ "content": token }), Value::Null));
        }
        if !fail {
            events.push(chunk(&model, json!({}), json!("stop")));
            events.push(Bytes::from_static(b"data: [DONE]\n\n"));
        }
        for event in events {
            if slow {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if tx.send(Ok(event)).await.is_err() {
                stats.aborted.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        // The body ends when the sender is dropped; wait until the client has it all.
        tx.closed().await;
        stats.completed.fetch_add(1, Ordering::Relaxed);
    });
    let body = Body::from_stream(tokio_stream(rx));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("cache-control", "no-cache")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn tokio_stream(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
