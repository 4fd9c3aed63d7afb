//! The models a desktop offers to runs: the configured default (`[ai] model`) and any
//! others named in `[ai] models`, each with its own adapter, and what DEVICE_STATUS
//! says about them (the provider's and the models' names, and whether a key is
//! configured; never the key).
//!
//! A browser that sees several models offers a choice; its EXECUTE_ACTION then names one
//! ([`aisa_tunnel::Body::ExecuteAction`]'s `model`), and [`AiModels::choose`] gives the
//! adapter for it, or a sentence refusing a model this desktop does not offer. This
//! module does not call a provider or list a provider's models: it offers exactly what
//! the person configured.

use std::sync::Arc;

use aisa_tunnel::message::ProviderStatus;

use super::{AiError, AiProvider, ProviderKind};

/// One provider's models, the default first, each with its adapter.
#[derive(Clone)]
pub struct AiModels {
    provider: String,
    configured: bool,
    models: Vec<(String, Arc<dyn AiProvider>)>,
}

impl std::fmt::Debug for AiModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AiModels")
            .field("provider", &self.provider)
            .field("configured", &self.configured)
            .field("models", &self.names())
            .finish()
    }
}

impl AiModels {
    /// Adapters of `kind` at `base_url` for `default_model` and then each of `more`
    /// (duplicates and empty names dropped), all with `api_key`.
    pub fn build(
        kind: ProviderKind,
        base_url: &str,
        default_model: &str,
        more: &[String],
        api_key: Option<String>,
    ) -> Result<Self, AiError> {
        let configured = api_key.is_some() || kind == ProviderKind::Local;
        let mut models: Vec<(String, Arc<dyn AiProvider>)> = Vec::new();
        for name in std::iter::once(default_model).chain(more.iter().map(String::as_str)) {
            let name = name.trim();
            if name.is_empty() || models.iter().any(|(m, _)| m == name) {
                continue;
            }
            let adapter = super::build(kind, base_url, name, api_key.clone())?;
            models.push((name.to_owned(), adapter));
        }
        Ok(AiModels {
            provider: kind.name().to_owned(),
            configured,
            models,
        })
    }

    /// Models given with their adapters (tests, embedders), the default first.
    pub fn from_parts(
        provider: &str,
        configured: bool,
        models: Vec<(String, Arc<dyn AiProvider>)>,
    ) -> Self {
        AiModels {
            provider: provider.to_owned(),
            configured,
            models,
        }
    }

    /// The models' names, the default first.
    pub fn names(&self) -> Vec<String> {
        self.models.iter().map(|(m, _)| m.clone()).collect()
    }

    /// The default model's adapter (`None` when no model is configured at all).
    pub fn default_adapter(&self) -> Option<Arc<dyn AiProvider>> {
        self.models.first().map(|(_, a)| a.clone())
    }

    /// The adapter for `model`, or why not, as a sentence for the person.
    pub fn choose(&self, model: &str) -> Result<Arc<dyn AiProvider>, String> {
        self.models
            .iter()
            .find(|(m, _)| m == model)
            .map(|(_, a)| a.clone())
            .ok_or_else(|| {
                format!(
                    "This desktop does not offer the model “{}”; it offers {}.",
                    model.chars().take(80).collect::<String>(),
                    self.names().join(", ")
                )
            })
    }

    /// What DEVICE_STATUS says: names and "configured", nothing about the key itself.
    pub fn status(&self) -> ProviderStatus {
        ProviderStatus {
            name: self.provider.clone(),
            models: self.names(),
            configured: self.configured,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_comes_first_and_others_are_refused_with_a_sentence() {
        let models = AiModels::build(
            ProviderKind::OpenAi,
            "http://127.0.0.1:9/v1",
            "small",
            &["large".into(), "small".into(), " ".into()],
            Some("sk-secret".into()),
        )
        .unwrap();
        assert_eq!(models.names(), ["small", "large"]);
        assert!(models.choose("large").is_ok());
        let refused = models.choose("huge").err().unwrap();
        assert_eq!(
            refused,
            "This desktop does not offer the model “huge”; it offers small, large."
        );
        let status = models.status();
        assert_eq!(
            status,
            ProviderStatus {
                name: "openai".into(),
                models: vec!["small".into(), "large".into()],
                configured: true,
            }
        );
        // Neither the status nor the debug form carries the key.
        assert!(!format!("{status:?}{models:?}").contains("sk-secret"));
    }

    #[test]
    fn a_provider_without_a_key_is_not_configured_unless_local() {
        let openai = AiModels::build(
            ProviderKind::OpenAi,
            "http://127.0.0.1:9/v1",
            "m",
            &[],
            None,
        )
        .unwrap();
        assert!(!openai.status().configured);
        let local =
            AiModels::build(ProviderKind::Local, "http://127.0.0.1:9/v1", "m", &[], None).unwrap();
        assert!(local.status().configured);
    }
}
