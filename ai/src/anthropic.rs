//! Anthropic messages (`POST {base_url}/v1/messages`, `stream: true`).
//!
//! Named events: `message_start`, `content_block_start`, `ping`, `content_block_delta`
//! (text in `delta.text` when `delta.type` is `text_delta`), `content_block_stop`,
//! `message_delta`, `message_stop` (the end), and `error` (`{"type": "error", "error":
//! {"type": …, "message": …}}`), which may arrive mid-stream.

use std::future::Future;
use std::pin::Pin;

use eventsource_stream::Event;
use serde_json::json;

use super::{AiError, AiProvider, Client, GenerateRequest, Step, TextStream, json_data, sse_text};

/// The API version this adapter speaks.
pub const API_VERSION: &str = "2023-06-01";
/// `max_tokens` is required by Anthropic; used when the mini-app gives none.
const DEFAULT_MAX_TOKENS: u32 = 1024;

/// Anthropic's messages API.
pub struct Anthropic {
    client: Client,
    base_url: String,
    model: String,
    api_key: Option<String>,
}

impl Anthropic {
    /// An adapter for `base_url` (e.g. `https://api.anthropic.com`) and `model`.
    pub fn new(client: Client, base_url: &str, model: &str, api_key: Option<String>) -> Self {
        Anthropic {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            model: model.to_owned(),
            api_key,
        }
    }

    async fn start(&self, request: GenerateRequest) -> Result<TextStream, AiError> {
        let key = self
            .api_key
            .clone()
            .ok_or_else(|| AiError::NoKey("anthropic".into()))?;
        let mut body = json!({
            "model": self.model,
            "max_tokens": request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            "messages": [{ "role": "user", "content": request.prompt }],
            "stream": true,
        });
        if let Some(system) = &request.system {
            body["system"] = json!(system);
        }
        let url = format!("{}/v1/messages", self.base_url);
        let response = self
            .client
            .send(
                |http| {
                    http.post(&url)
                        .header("x-api-key", &key)
                        .header("anthropic-version", API_VERSION)
                        .json(&body)
                },
                error_message,
            )
            .await?;
        Ok(sse_text(response, interpret))
    }
}

impl AiProvider for Anthropic {
    fn generate(
        &self,
        request: GenerateRequest,
    ) -> Pin<Box<dyn Future<Output = Result<TextStream, AiError>> + Send + '_>> {
        Box::pin(self.start(request))
    }
}

/// Reads one event of an Anthropic stream.
pub fn interpret(event: &Event) -> Result<Step, AiError> {
    match event.event.as_str() {
        "message_stop" => Ok(Step::Done),
        "error" => Err(AiError::Stream(
            error_message(&event.data).unwrap_or_else(|| event.data.clone()),
        )),
        "content_block_delta" => {
            let value = json_data(event)?;
            match value.pointer("/delta/type").and_then(|t| t.as_str()) {
                Some("text_delta") => Ok(value
                    .pointer("/delta/text")
                    .and_then(|t| t.as_str())
                    .filter(|t| !t.is_empty())
                    .map_or(Step::Skip, |t| Step::Text(t.to_owned()))),
                // Tool input and thinking deltas carry no answer text.
                _ => Ok(Step::Skip),
            }
        }
        _ => Ok(Step::Skip),
    }
}

/// The message of an Anthropic error body (`{"type":"error","error":{"message": …}}`).
pub fn error_message(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let error = value.get("error")?;
    let message = error.get("message").and_then(|m| m.as_str())?;
    Some(match error.get("type").and_then(|t| t.as_str()) {
        Some(kind) => format!("{message} ({kind})"),
        None => message.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, data: &str) -> Event {
        Event {
            event: name.into(),
            data: data.into(),
            ..Event::default()
        }
    }

    #[test]
    fn text_deltas_and_the_end() {
        let delta =
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#;
        assert_eq!(
            interpret(&event("content_block_delta", delta)),
            Ok(Step::Text("Hi".into()))
        );
        let json_delta = r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{"}}"#;
        assert_eq!(
            interpret(&event("content_block_delta", json_delta)),
            Ok(Step::Skip)
        );
        assert_eq!(
            interpret(&event("ping", r#"{"type": "ping"}"#)),
            Ok(Step::Skip)
        );
        assert_eq!(
            interpret(&event("message_stop", r#"{"type":"message_stop"}"#)),
            Ok(Step::Done)
        );
    }

    #[test]
    fn error_events_and_bodies() {
        let err = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(
            interpret(&event("error", err)),
            Err(AiError::Stream("Overloaded (overloaded_error)".into()))
        );
        assert_eq!(
            error_message(err).as_deref(),
            Some("Overloaded (overloaded_error)")
        );
    }
}
