//! AI provider adapters: one streaming interface, one adapter per wire format.
//!
//! * [`openai`]: OpenAI chat completions, and every OpenAI-compatible server (Ollama,
//!   llama.cpp, vLLM) by base URL;
//! * [`anthropic`]: Anthropic messages;
//! * [`gemini`]: Google Gemini `streamGenerateContent`.
//!
//! `testing` (this crate's tests, and the `test-utils` feature, which `aisa-node`'s
//! `test-utils` turns on) holds fake providers. The desktop node re-exports this crate as
//! `aisa_node::ai`.
//!
//! All three stream server-sent events. The shared part lives here: the HTTP client,
//! retries with backoff on 429 and 5xx before the first token, timeouts, and turning an
//! event stream into text. The key stays in the adapter; a mini-app only ever sees the
//! text that streams back. Dropping a [`TextStream`] aborts the provider request.

pub mod anthropic;
pub mod choice;
pub mod gemini;
pub mod openai;
#[cfg(any(test, feature = "test-utils"))]
pub mod testing;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

pub use choice::AiModels;
pub use openai::OpenAiCompatible;

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

/// Which wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI chat completions.
    #[default]
    OpenAi,
    /// Anthropic messages.
    Anthropic,
    /// Google Gemini.
    Google,
    /// An OpenAI-compatible local server (Ollama, llama.cpp, vLLM); no key needed.
    Local,
}

impl ProviderKind {
    /// The provider's public API base URL (for `local`, Ollama's default).
    pub fn default_base_url(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "https://api.openai.com/v1",
            ProviderKind::Anthropic => "https://api.anthropic.com",
            ProviderKind::Google => "https://generativelanguage.googleapis.com",
            ProviderKind::Local => "http://127.0.0.1:11434/v1",
        }
    }

    /// A reasonable default model.
    pub fn default_model(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "gpt-4o-mini",
            ProviderKind::Anthropic => "claude-3-5-haiku-latest",
            ProviderKind::Google => "gemini-2.0-flash",
            ProviderKind::Local => "llama3.2",
        }
    }

    /// The name used in `desktop-node keys` and messages.
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Google => "google",
            ProviderKind::Local => "local",
        }
    }
}

/// Builds the adapter for `kind`.
pub fn build(
    kind: ProviderKind,
    base_url: &str,
    model: &str,
    api_key: Option<String>,
) -> Result<Arc<dyn AiProvider>, AiError> {
    let client = Client::new()?;
    Ok(match kind {
        ProviderKind::OpenAi | ProviderKind::Local => Arc::new(OpenAiCompatible::with_client(
            client, base_url, model, api_key,
        )),
        ProviderKind::Anthropic => {
            Arc::new(anthropic::Anthropic::new(client, base_url, model, api_key))
        }
        ProviderKind::Google => Arc::new(gemini::Gemini::new(client, base_url, model, api_key)),
    })
}

/// The HTTP side every adapter shares: one connection pool, timeouts, retries.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    retry: RetryPolicy,
}

/// When to try a request again.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub retries: u32,
    /// Delay before the first retry; doubled each time, plus jitter.
    pub base_delay: Duration,
    /// Longest wait, also the cap on a provider's `Retry-After`.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 3,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl Client {
    /// A client with TLS 1.2/1.3 (Mozilla roots, ring), a 10 s connect timeout, and a
    /// 60 s limit on silence between bytes of a stream.
    pub fn new() -> Result<Self, AiError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .tls_backend_preconfigured(tls_config())
            .build()
            .map_err(|e| AiError::Transport(e.to_string()))?;
        Ok(Client {
            http,
            retry: RetryPolicy::default(),
        })
    }

    /// The same client with another retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sends a request built by `build`, retrying on connection failures, 429 and 5xx
    /// (which all happen before the first token), and returns a successful response.
    /// `error_message` extracts the provider's message from an error body.
    pub async fn send(
        &self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
        error_message: fn(&str) -> Option<String>,
    ) -> Result<reqwest::Response, AiError> {
        let mut attempt = 0;
        loop {
            let outcome = build(&self.http).send().await;
            let retry_after = match &outcome {
                Ok(response) if response.status().is_success() => {
                    return outcome.map_err(|e| AiError::Transport(e.to_string()));
                }
                Ok(response) if retryable(response.status()) => Some(retry_after(response)),
                Err(e) if e.is_connect() || e.is_timeout() => Some(None),
                _ => None,
            };
            if retry_after.is_none() || attempt >= self.retry.retries {
                return Err(match outcome {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let text = response.text().await.unwrap_or_default();
                        AiError::Provider {
                            status,
                            message: error_message(&text).unwrap_or(text),
                        }
                    }
                    Err(e) => AiError::Transport(e.to_string()),
                });
            }
            let backoff = self.retry.base_delay.saturating_mul(1 << attempt.min(16));
            let jitter = backoff.mul_f64(rand::random::<f64>() / 2.0);
            let delay = retry_after
                .flatten()
                .unwrap_or(backoff + jitter)
                .min(self.retry.max_delay);
            tracing::debug!(attempt, ?delay, "AI provider busy; retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

fn retryable(status: reqwest::StatusCode) -> bool {
    status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// A `Retry-After` given in seconds.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// One server-sent event, interpreted by an adapter.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Text for the caller.
    Text(String),
    /// An event without text (metadata, keep-alive, role announcement).
    Skip,
    /// The stream is complete.
    Done,
}

/// Turns a successful streaming response into text, ending at [`Step::Done`], at the
/// first error, or where the body ends.
pub fn sse_text(
    response: reqwest::Response,
    interpret: fn(&Event) -> Result<Step, AiError>,
) -> TextStream {
    let stream = response
        .bytes_stream()
        .eventsource()
        .map(move |event| match event {
            Err(e) => Err(AiError::Transport(e.to_string())),
            Ok(event) => interpret(&event),
        })
        .scan(false, |ended, step| {
            if *ended {
                return std::future::ready(None);
            }
            *ended = matches!(step, Ok(Step::Done) | Err(_));
            std::future::ready(Some(step))
        })
        .filter_map(|step| {
            std::future::ready(match step {
                Ok(Step::Text(text)) => Some(Ok(text)),
                Ok(Step::Skip | Step::Done) => None,
                Err(e) => Some(Err(e)),
            })
        });
    Box::pin(stream)
}

/// Parses an event's JSON data.
pub fn json_data(event: &Event) -> Result<serde_json::Value, AiError> {
    serde_json::from_str(&event.data)
        .map_err(|e| AiError::Protocol(format!("{e}: {:.200}", event.data)))
}

/// TLS for provider connections: TLS 1.2/1.3 with the Mozilla root store, ring crypto.
fn tls_config() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("the ring provider supports TLS 1.2 and 1.3")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}
