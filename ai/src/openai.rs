//! OpenAI chat completions (`POST {base_url}/chat/completions`, `stream: true`), which
//! OpenAI-compatible local servers (Ollama, llama.cpp, vLLM) also speak.
//!
//! Each event's data is a `chat.completion.chunk` whose `choices[0].delta.content`
//! carries text; `data: [DONE]` ends the stream; an `error` object reports a failure.

use std::future::Future;
use std::pin::Pin;

use eventsource_stream::Event;
use serde_json::json;

use super::{AiError, AiProvider, Client, GenerateRequest, Step, TextStream, json_data, sse_text};

/// An OpenAI-compatible provider.
pub struct OpenAiCompatible {
    client: Client,
    base_url: String,
    model: String,
    api_key: Option<String>,
}

impl OpenAiCompatible {
    /// An adapter for `base_url` (e.g. `https://api.openai.com/v1`) and `model`.
    pub fn new(base_url: &str, model: &str, api_key: Option<String>) -> Result<Self, AiError> {
        Ok(Self::with_client(Client::new()?, base_url, model, api_key))
    }

    /// The same, sharing an existing client.
    pub fn with_client(
        client: Client,
        base_url: &str,
        model: &str,
        api_key: Option<String>,
    ) -> Self {
        OpenAiCompatible {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            model: model.to_owned(),
            api_key,
        }
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
        let url = format!("{}/chat/completions", self.base_url);
        let response = self
            .client
            .send(
                |http| {
                    let request = http.post(&url).json(&body);
                    match &self.api_key {
                        Some(key) => request.bearer_auth(key),
                        None => request,
                    }
                },
                error_message,
            )
            .await?;
        Ok(sse_text(response, interpret))
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

/// Reads one event of an OpenAI stream.
pub fn interpret(event: &Event) -> Result<Step, AiError> {
    if event.data.trim() == "[DONE]" {
        return Ok(Step::Done);
    }
    let value = json_data(event)?;
    if let Some(error) = value.get("error") {
        return Err(AiError::Stream(error_text(error)));
    }
    Ok(value
        .pointer("/choices/0/delta/content")
        .and_then(|c| c.as_str())
        .filter(|c| !c.is_empty())
        .map_or(Step::Skip, |c| Step::Text(c.to_owned())))
}

fn error_text(error: &serde_json::Value) -> String {
    error
        .get("message")
        .and_then(|m| m.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| error.to_string())
}

/// The message of an OpenAI error body (`{"error": {"message": …}}`).
pub fn error_message(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    value.get("error").map(error_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: &str) -> Event {
        Event {
            data: data.into(),
            ..Event::default()
        }
    }

    #[test]
    fn content_role_and_finish_chunks() {
        let role = r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
        assert_eq!(interpret(&event(role)), Ok(Step::Skip));
        let text = r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#;
        assert_eq!(interpret(&event(text)), Ok(Step::Text("Hel".into())));
        let fin = r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
        assert_eq!(interpret(&event(fin)), Ok(Step::Skip));
        assert_eq!(interpret(&event("[DONE]")), Ok(Step::Done));
    }

    #[test]
    fn error_event_and_garbage_are_errors() {
        let err = interpret(&event(
            r#"{"error":{"message":"overloaded","type":"server_error"}}"#,
        ));
        assert_eq!(err, Err(AiError::Stream("overloaded".into())));
        assert!(matches!(
            interpret(&event("not json")),
            Err(AiError::Protocol(_))
        ));
    }

    #[test]
    fn http_error_body_message_is_extracted() {
        let body = r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        assert_eq!(
            error_message(body).as_deref(),
            Some("Incorrect API key provided")
        );
    }
}
