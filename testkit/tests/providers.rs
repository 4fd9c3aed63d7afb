//! Each AI adapter (the production code) against the local server replaying that
//! provider's streaming format: text, mid-stream errors, HTTP errors, a wrong key,
//! retries on 429 before the first token, and abandoning a stream mid-way.

use std::sync::atomic::Ordering;
use std::time::Duration;

use aisa_node::ai::{self, AiError, GenerateRequest, ProviderKind};
use aisa_testkit::provider::{self, FakeProvider};
use futures_util::StreamExt;

const KEY: &str = "test-key";

async fn fake() -> FakeProvider {
    provider::start(([127, 0, 0, 1], 0).into(), Some(KEY.into()))
        .await
        .expect("fake provider")
}

fn adapter(
    fake: &FakeProvider,
    kind: ProviderKind,
    key: &str,
) -> std::sync::Arc<dyn ai::AiProvider> {
    let base = match kind {
        ProviderKind::OpenAi | ProviderKind::Local => fake.base_url(),
        ProviderKind::Anthropic | ProviderKind::Google => fake.root_url(),
    };
    ai::build(kind, &base, kind.default_model(), Some(key.into())).expect("adapter")
}

fn ask(prompt: &str) -> GenerateRequest {
    GenerateRequest {
        prompt: prompt.into(),
        system: Some("be brief".into()),
        max_tokens: Some(64),
    }
}

/// Collects a generation: the texts received, and the error that ended it, if any.
async fn collect(
    provider: &dyn ai::AiProvider,
    prompt: &str,
) -> Result<(Vec<String>, Option<AiError>), AiError> {
    let mut stream = provider.generate(ask(prompt)).await?;
    let mut texts = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(text) => texts.push(text),
            Err(e) => return Ok((texts, Some(e))),
        }
    }
    Ok((texts, None))
}

const KINDS: [ProviderKind; 3] = [
    ProviderKind::OpenAi,
    ProviderKind::Anthropic,
    ProviderKind::Google,
];

#[tokio::test]
async fn every_adapter_streams_the_text_in_order() {
    let fake = fake().await;
    for kind in KINDS {
        let provider = adapter(&fake, kind, KEY);
        let (texts, error) = collect(provider.as_ref(), "tell me about QUIC")
            .await
            .expect("generation");
        assert_eq!(error, None, "{kind:?}");
        assert_eq!(
            texts,
            provider::reply_tokens("tell me about QUIC"),
            "{kind:?}"
        );
    }
    assert_eq!(fake.stats.completed.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn mid_stream_error_events_end_the_stream_with_the_providers_message() {
    let fake = fake().await;
    for (kind, message) in [
        (ProviderKind::OpenAi, "The model is overloaded"),
        (ProviderKind::Anthropic, "Overloaded (overloaded_error)"),
        (
            ProviderKind::Google,
            "The model is overloaded. Please try again later. (UNAVAILABLE)",
        ),
    ] {
        let provider = adapter(&fake, kind, KEY);
        let (texts, error) = collect(provider.as_ref(), "[fail] a b c d")
            .await
            .expect("started");
        assert_eq!(
            texts,
            ["Echo: ", "[fail] "],
            "{kind:?}: the text before the error arrives"
        );
        match error {
            Some(AiError::Stream(m)) => assert!(m.contains(message), "{kind:?}: {m}"),
            other => panic!("{kind:?}: expected a stream error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn http_errors_and_wrong_keys_are_clear_and_not_retried_forever() {
    let fake = fake().await;
    for (kind, key_message, server_message) in [
        (
            ProviderKind::OpenAi,
            "Incorrect API key provided",
            "error while processing your request",
        ),
        (
            ProviderKind::Anthropic,
            "invalid x-api-key (authentication_error)",
            "Internal server error (api_error)",
        ),
        (
            ProviderKind::Google,
            "API key not valid. Please pass a valid API key. (INVALID_ARGUMENT)",
            "(INTERNAL)",
        ),
    ] {
        let wrong = adapter(&fake, kind, "wrong-key");
        match collect(wrong.as_ref(), "hello").await {
            Err(AiError::Provider { status, message }) => {
                assert!(status == 401 || status == 400, "{kind:?}: {status}");
                assert!(message.contains(key_message), "{kind:?}: {message}");
            }
            other => panic!("{kind:?}: expected a refusal, got {other:?}"),
        }
        let before = fake.stats.requests.load(Ordering::Relaxed);
        let right = adapter(&fake, kind, KEY);
        match collect(right.as_ref(), "[500]").await {
            Err(AiError::Provider {
                status: 500,
                message,
            }) => assert!(message.contains(server_message), "{kind:?}: {message}"),
            other => panic!("{kind:?}: expected HTTP 500, got {other:?}"),
        }
        let attempts = fake.stats.requests.load(Ordering::Relaxed) - before;
        assert_eq!(
            attempts, 4,
            "{kind:?}: a 5xx before the first token is retried 3 times, then reported"
        );
    }
}

#[tokio::test]
async fn rate_limits_before_the_first_token_are_retried() {
    let fake = fake().await;
    for kind in KINDS {
        let provider = adapter(&fake, kind, KEY);
        let prompt = format!("[busy] {kind:?}");
        let before = fake.stats.requests.load(Ordering::Relaxed);
        let (texts, error) = collect(provider.as_ref(), &prompt)
            .await
            .expect("succeeds after retries");
        assert_eq!(error, None);
        assert_eq!(texts.concat(), provider::reply_for(&prompt));
        assert_eq!(
            fake.stats.requests.load(Ordering::Relaxed) - before,
            3,
            "{kind:?}: two 429s, then success"
        );
    }
}

#[tokio::test]
async fn dropping_the_stream_aborts_the_provider_request() {
    let fake = fake().await;
    for (i, kind) in KINDS.into_iter().enumerate() {
        let provider = adapter(&fake, kind, KEY);
        let mut stream = provider
            .generate(ask("[slow] a long answer"))
            .await
            .expect("started");
        assert!(stream.next().await.is_some());
        drop(stream);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while fake.stats.aborted.load(Ordering::Relaxed) < i as u64 + 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{kind:?}: the provider never saw the abort"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_missing_key_is_named() {
    for kind in [ProviderKind::Anthropic, ProviderKind::Google] {
        let provider =
            ai::build(kind, "http://127.0.0.1:9", kind.default_model(), None).expect("adapter");
        match provider.generate(ask("x")).await {
            Err(AiError::NoKey(name)) => assert_eq!(name, kind.name()),
            Err(other) => panic!("{kind:?}: expected NoKey, got {other:?}"),
            Ok(_) => panic!("{kind:?}: expected NoKey, got a stream"),
        }
    }
}
