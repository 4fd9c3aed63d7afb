//! Google Gemini (`POST {base_url}/v1beta/models/{model}:streamGenerateContent?alt=sse`).
//!
//! Each event's data is a `GenerateContentResponse`; text is in
//! `candidates[0].content.parts[*].text`. The stream ends with the body. Errors come as
//! `{"error": {"code": …, "message": …, "status": …}}`, in the body of a failed request
//! or as an event.

use std::future::Future;
use std::pin::Pin;

use eventsource_stream::Event;
use serde_json::json;

use super::{AiError, AiProvider, Client, GenerateRequest, Step, TextStream, json_data, sse_text};

/// Google's Gemini API.
pub struct Gemini {
    client: Client,
    base_url: String,
    model: String,
    api_key: Option<String>,
}

impl Gemini {
    /// An adapter for `base_url` (e.g. `https://generativelanguage.googleapis.com`).
    pub fn new(client: Client, base_url: &str, model: &str, api_key: Option<String>) -> Self {
        Gemini {
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
            .ok_or_else(|| AiError::NoKey("google".into()))?;
        let mut body = json!({
            "contents": [{ "role": "user", "parts": [{ "text": request.prompt }] }],
        });
        if let Some(system) = &request.system {
            body["systemInstruction"] = json!({ "parts": [{ "text": system }] });
        }
        if let Some(max) = request.max_tokens {
            body["generationConfig"] = json!({ "maxOutputTokens": max });
        }
        let url = format!(
            "{}/v1beta/models/{}:streamGenerateContent?alt=sse",
            self.base_url, self.model
        );
        let response = self
            .client
            .send(
                |http| http.post(&url).header("x-goog-api-key", &key).json(&body),
                error_message,
            )
            .await?;
        Ok(sse_text(response, interpret))
    }
}

impl AiProvider for Gemini {
    fn generate(
        &self,
        request: GenerateRequest,
    ) -> Pin<Box<dyn Future<Output = Result<TextStream, AiError>> + Send + '_>> {
        Box::pin(self.start(request))
    }
}

/// Reads one event of a Gemini stream.
pub fn interpret(event: &Event) -> Result<Step, AiError> {
    let value = json_data(event)?;
    if let Some(error) = value.get("error") {
        return Err(AiError::Stream(error_text(error)));
    }
    let text: String = value
        .pointer("/candidates/0/content/parts")
        .and_then(|p| p.as_array())
        .map(|parts| parts.iter().filter_map(|p| p["text"].as_str()).collect())
        .unwrap_or_default();
    if text.is_empty() {
        if let Some(reason) = value
            .pointer("/promptFeedback/blockReason")
            .and_then(|r| r.as_str())
        {
            return Err(AiError::Stream(format!("the prompt was blocked: {reason}")));
        }
        return Ok(Step::Skip);
    }
    Ok(Step::Text(text))
}

fn error_text(error: &serde_json::Value) -> String {
    let message = error["message"].as_str().unwrap_or("unknown error");
    match error["status"].as_str() {
        Some(status) => format!("{message} ({status})"),
        None => message.to_owned(),
    }
}

/// The message of a Gemini error body.
pub fn error_message(body: &str) -> Option<String> {
    // Errors may come as one object or, from the streaming endpoint, a one-element array.
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let value = value
        .as_array()
        .and_then(|a| a.first().cloned())
        .unwrap_or(value);
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
    fn parts_text_and_metadata() {
        let chunk = r#"{"candidates": [{"content": {"parts": [{"text": "Hel"}, {"text": "lo"}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 4},"modelVersion": "gemini-2.0-flash"}"#;
        assert_eq!(interpret(&event(chunk)), Ok(Step::Text("Hello".into())));
        let last = r#"{"candidates": [{"content": {"parts": [{"text": ""}],"role": "model"},"finishReason": "STOP","index": 0}]}"#;
        assert_eq!(interpret(&event(last)), Ok(Step::Skip));
        let blocked = r#"{"promptFeedback": {"blockReason": "SAFETY"}}"#;
        assert!(
            matches!(interpret(&event(blocked)), Err(AiError::Stream(m)) if m.contains("SAFETY"))
        );
    }

    #[test]
    fn error_bodies_in_both_shapes() {
        let body = r#"{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT"}}"#;
        let want =
            Some("API key not valid. Please pass a valid API key. (INVALID_ARGUMENT)".to_owned());
        assert_eq!(error_message(body), want);
        assert_eq!(error_message(&format!("[{body}]")), want);
    }
}
