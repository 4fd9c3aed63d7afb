//! AI provider adapters: one streaming interface, one adapter per wire format.
//!
//! Now: OpenAI-compatible chat completions with server-sent events (OpenAI itself, and
//! local servers such as Ollama, llama.cpp and vLLM, by base URL). The key stays in the
//! adapter; a mini-app only ever sees the text that streams back.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;

/// Why a generation failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AiError {
    /// The provider could not be reached or the connection broke.
    #[error("cannot reach the AI provider: {0}")]
    Transport(String),
    /// The provider answered with an error.
    #[error("the AI provider refused the request (HTTP {status}): {message}")]
    Provider {
        /// The HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// The provider sent an error event mid-stream.
    #[error("the AI provider failed mid-stream: {0}")]
    Stream(String),
    /// The provider's bytes did not follow its documented format.
    #[error("unexpected answer from the AI provider: {0}")]
    Protocol(String),
    /// No API key is configured.
    #[error("no API key for {0}; set one with `desktop-node keys` or the environment")]
    NoKey(String),
}

/// What a mini-app asks of the model.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct GenerateRequest {
    /// The user prompt.
    pub prompt: String,
    /// An optional system prompt.
    #[serde(default)]
    pub system: Option<String>,
    /// An optional cap on output tokens.
    #[serde(default)]
    pub max_tokens: Option<u32>,
}

/// Text as it streams from the model.
pub type TextStream = Pin<Box<dyn Stream<Item = Result<String, AiError>> + Send>>;

/// A streaming text generator.
pub trait AiProvider: Send + Sync {
    /// Starts a generation. Dropping the stream aborts the provider request.
    fn generate(
        &self,
        request: GenerateRequest,
    ) -> Pin<Box<dyn Future<Output = Result<TextStream, AiError>> + Send + '_>>;
}

/// OpenAI chat completions (`POST {base_url}/chat/completions`, `stream: true`).
pub struct OpenAiCompatible {
    client: reqwest::Client,
    base_url: String,
    model: String,
    api_key: Option<String>,
}

impl OpenAiCompatible {
    /// An adapter for `base_url` (e.g. `https://api.openai.com/v1`) and `model`.
    pub fn new(base_url: &str, model: &str, api_key: Option<String>) -> Result<Self, AiError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .tls_backend_preconfigured(tls_config())
            .build()
            .map_err(|e| AiError::Transport(e.to_string()))?;
        Ok(OpenAiCompatible {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            model: model.to_owned(),
            api_key,
        })
    }

    async fn start(&self, request: GenerateRequest) -> Result<TextStream, AiError> {
        let mut messages = Vec::new();
        if let Some(system) = &request.system {
            messages.push(json!({ "role": "system", "content": system }));
        }
        messages.push(json!({ "role": "user", "content": request.prompt }));
        let mut body = json!({ "model": self.model, "messages": messages, "stream": true });
        if let Some(max) = request.max_tokens {
            body["max_tokens"] = json!(max);
        }
        let mut http = self
            .client
            .post(format!("{}/chat/completions", self.base_url))
            .json(&body);
        if let Some(key) = &self.api_key {
            http = http.bearer_auth(key);
        }
        let response = http
            .send()
            .await
            .map_err(|e| AiError::Transport(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(AiError::Provider {
                status: status.as_u16(),
                message: openai_error_message(&text).unwrap_or(text),
            });
        }
        let events = response.bytes_stream().eventsource();
        let stream = events
            .map(|event| match event {
                Err(e) => Step::Item(Err(AiError::Transport(e.to_string()))),
                Ok(event) if event.data.trim() == "[DONE]" => Step::Done,
                Ok(event) => match parse_openai_chunk(&event.data) {
                    Ok(Some(text)) => Step::Item(Ok(text)),
                    Ok(None) => Step::Skip,
                    Err(e) => Step::Item(Err(e)),
                },
            })
            .scan(false, |failed, step| {
                // Nothing follows [DONE] or an error.
                if *failed || matches!(step, Step::Done) {
                    return std::future::ready(None);
                }
                *failed = matches!(step, Step::Item(Err(_)));
                std::future::ready(Some(step))
            })
            .filter_map(|step| {
                std::future::ready(match step {
                    Step::Item(item) => Some(item),
                    Step::Skip | Step::Done => None,
                })
            });
        Ok(Box::pin(stream))
    }
}

impl AiProvider for OpenAiCompatible {
    fn generate(
        &self,
        request: GenerateRequest,
    ) -> Pin<Box<dyn Future<Output = Result<TextStream, AiError>> + Send + '_>> {
        Box::pin(self.start(request))
    }
}

/// One server-sent event, interpreted.
enum Step {
    /// Text or a failure for the caller.
    Item(Result<String, AiError>),
    /// An event without text (role announcement, finish reason).
    Skip,
    /// `[DONE]`: the stream is complete.
    Done,
}

/// Reads one `data:` payload of an OpenAI stream: `Ok(Some(text))` for content,
/// `Ok(None)` for a chunk without content (role announcement, finish reason).
fn parse_openai_chunk(data: &str) -> Result<Option<String>, AiError> {
    let value: serde_json::Value =
        serde_json::from_str(data).map_err(|e| AiError::Protocol(format!("{e}: {data:.200}")))?;
    if let Some(message) = value.get("error").map(error_text) {
        return Err(AiError::Stream(message));
    }
    let content = value
        .pointer("/choices/0/delta/content")
        .and_then(|c| c.as_str())
        .filter(|c| !c.is_empty());
    Ok(content.map(str::to_owned))
}

fn error_text(error: &serde_json::Value) -> String {
    error
        .get("message")
        .and_then(|m| m.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| error.to_string())
}

fn openai_error_message(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    value.get("error").map(error_text)
}

/// TLS for provider connections: TLS 1.2/1.3 with the Mozilla root store, ring crypto.
fn tls_config() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("the ring provider supports TLS 1.2 and 1.3")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_role_and_finish_chunks() {
        let role = r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
        assert_eq!(parse_openai_chunk(role).unwrap(), None);
        let text = r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#;
        assert_eq!(parse_openai_chunk(text).unwrap(), Some("Hel".into()));
        let fin = r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
        assert_eq!(parse_openai_chunk(fin).unwrap(), None);
    }

    #[test]
    fn error_event_and_garbage_are_errors() {
        let err = parse_openai_chunk(r#"{"error":{"message":"overloaded","type":"server_error"}}"#);
        assert_eq!(err, Err(AiError::Stream("overloaded".into())));
        assert!(matches!(
            parse_openai_chunk("not json"),
            Err(AiError::Protocol(_))
        ));
    }

    #[test]
    fn http_error_body_message_is_extracted() {
        let body = r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        assert_eq!(
            openai_error_message(body).as_deref(),
            Some("Incorrect API key provided")
        );
    }
}
