//! Fake providers for tests and benchmarks (compiled for this crate's own tests, and for
//! other crates with the `test-utils` feature; `testkit::fakes` re-exports them).

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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_ai_answers_no_key() {
        let err = NoAi.generate(GenerateRequest::default()).await.err();
        assert_eq!(err, Some(AiError::NoKey("test".into())));
    }
}
