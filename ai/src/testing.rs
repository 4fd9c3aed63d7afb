//! Fake providers for tests and benchmarks (compiled for this crate's own tests, and for
//! other crates with the `test-utils` feature; `aisa_testkit::fakes` re-exports them).

use std::time::Duration;

use super::{AiError, AiProvider, GenerateRequest, TextStream};

/// A model that is never configured: every generation fails with [`AiError::NoKey`], as
/// an adapter without a key does. For guests that do not ask the model.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAi;

impl AiProvider for NoAi {
    fn generate(
        &self,
        _: GenerateRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<TextStream, AiError>> + Send + '_>>
    {
        Box::pin(async { Err(AiError::NoKey("test".into())) })
    }
}

/// A model that answers every prompt with the same chunks, after `delay` (none: at once).
#[derive(Debug, Clone, Default)]
pub struct ScriptedAi {
    /// The chunks of every answer, in order.
    pub chunks: Vec<String>,
    /// How long the model takes before its answer starts.
    pub delay: Duration,
}

impl ScriptedAi {
    /// A model that answers `chunks` at once.
    pub fn new(chunks: &[&str]) -> ScriptedAi {
        ScriptedAi {
            chunks: chunks.iter().map(|c| (*c).to_owned()).collect(),
            delay: Duration::ZERO,
        }
    }

    /// The same model, starting its answers only after `delay`.
    pub fn after(mut self, delay: Duration) -> ScriptedAi {
        self.delay = delay;
        self
    }
}

impl AiProvider for ScriptedAi {
    fn generate(
        &self,
        _: GenerateRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<TextStream, AiError>> + Send + '_>>
    {
        let chunks = self.chunks.clone();
        let delay = self.delay;
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let stream: TextStream =
                Box::pin(futures_util::stream::iter(chunks.into_iter().map(Ok)));
            Ok(stream)
        })
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    #[tokio::test]
    async fn no_ai_answers_no_key() {
        let err = NoAi.generate(GenerateRequest::default()).await.err();
        assert_eq!(err, Some(AiError::NoKey("test".into())));
    }

    #[tokio::test]
    async fn scripted_ai_answers_its_chunks_after_its_delay() {
        let ai = ScriptedAi::new(&["a", "b"]).after(Duration::from_millis(30));
        let started = std::time::Instant::now();
        let stream = ai.generate(GenerateRequest::default()).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(30));
        let chunks: Vec<_> = stream.collect().await;
        assert_eq!(chunks, [Ok("a".to_owned()), Ok("b".to_owned())]);
    }
}
