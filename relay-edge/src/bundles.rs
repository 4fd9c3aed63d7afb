//! Bundle storage: where the signed `.aisapp` files of published versions live.
//!
//! A thin layer over [`object_store`]: a local folder by default (`<data_dir>/bundles`),
//! or an S3-compatible bucket by configuration (`[bundles] store = "s3"`, see
//! [`crate::config::BundlesConfig`]). The database keeps each version's object key, size
//! and SHA-256; this module only puts, streams and deletes bytes. Keys are
//! `apps/<id>/<version>/<random>.aisapp`: never overwritten, so a stored bundle never
//! changes under a version that names it.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::config::{BundleStoreKind, RelayConfig};

/// A bundle-storage failure.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The configuration cannot make a store (a missing bucket, a bad endpoint, …).
    #[error("bundle storage configuration: {0}")]
    Config(String),
    /// The stored object does not exist.
    #[error("bundle {0} is missing from storage")]
    NotFound(String),
    /// The store failed (disk, network, permissions).
    #[error("bundle storage: {0}")]
    Store(#[from] object_store::Error),
    /// The local folder could not be created.
    #[error("bundle storage folder: {0}")]
    Io(#[from] std::io::Error),
}

/// The bundle store the relay was configured with.
#[derive(Clone)]
pub struct Bundles {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    description: String,
}

impl std::fmt::Debug for Bundles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl Bundles {
    /// The store `[bundles]` describes: a local folder (created if needed) or an S3
    /// bucket, whose access keys come from the `AWS_*` environment variables.
    pub fn from_config(config: &RelayConfig) -> Result<Self, BundleError> {
        let cfg = &config.bundles;
        match cfg.store {
            BundleStoreKind::Local => {
                let dir = config.bundles_dir();
                std::fs::create_dir_all(&dir)?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)?
                    .with_automatic_cleanup(true);
                Ok(Bundles {
                    store: Arc::new(store),
                    prefix: cfg.prefix.clone(),
                    description: format!("local folder {}", dir.display()),
                })
            }
            BundleStoreKind::S3 => {
                let bucket = cfg.bucket.clone().ok_or_else(|| {
                    BundleError::Config("[bundles] store = \"s3\" needs a bucket".into())
                })?;
                let mut builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(&bucket)
                    .with_allow_http(cfg.allow_http);
                if let Some(endpoint) = &cfg.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(region) = &cfg.region {
                    builder = builder.with_region(region);
                }
                let store = builder
                    .build()
                    .map_err(|e| BundleError::Config(e.to_string()))?;
                Ok(Bundles {
                    store: Arc::new(store),
                    prefix: cfg.prefix.clone(),
                    description: format!(
                        "S3 bucket {bucket} at {}",
                        cfg.endpoint.as_deref().unwrap_or("AWS")
                    ),
                })
            }
        }
    }

    /// A store over any [`ObjectStore`] (tests use the in-memory one).
    pub fn with_store(store: Arc<dyn ObjectStore>, description: &str) -> Self {
        Bundles {
            store,
            prefix: String::new(),
            description: description.to_owned(),
        }
    }

    /// Where bundles go, for logs.
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// A fresh key for a new bundle of `id` at `version` (both already validated as an
    /// app id and a semantic version, so they are safe path segments).
    pub fn new_key(id: &str, version: &str) -> String {
        format!(
            "apps/{id}/{version}/{}.aisapp",
            uuid::Uuid::new_v4().simple()
        )
    }

    fn path(&self, key: &str) -> Result<Path, BundleError> {
        Path::parse(format!("{}{key}", self.prefix))
            .map_err(|e| BundleError::Config(format!("bad object key {key:?}: {e}")))
    }

    /// Stores `bytes` under `key`.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), BundleError> {
        self.store
            .put(&self.path(key)?, PutPayload::from_bytes(bytes))
            .await?;
        Ok(())
    }

    /// The whole object under `key`.
    pub async fn get(&self, key: &str) -> Result<Bytes, BundleError> {
        match self.store.get(&self.path(key)?).await {
            Ok(found) => Ok(found.bytes().await?),
            Err(object_store::Error::NotFound { .. }) => Err(BundleError::NotFound(key.into())),
            Err(err) => Err(err.into()),
        }
    }

    /// The object under `key` as a stream of pieces, with its size, for serving it
    /// without holding it in memory.
    pub async fn stream(
        &self,
        key: &str,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes, BundleError>>), BundleError> {
        match self.store.get(&self.path(key)?).await {
            Ok(found) => {
                let size = found.meta.size;
                Ok((size, found.into_stream().map_err(BundleError::from).boxed()))
            }
            Err(object_store::Error::NotFound { .. }) => Err(BundleError::NotFound(key.into())),
            Err(err) => Err(err.into()),
        }
    }

    /// Removes the object under `key` (a bundle whose publication failed). A missing
    /// object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), BundleError> {
        match self.store.delete(&self.path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_folder_stores_streams_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let config = RelayConfig {
            data_dir: dir.path().to_owned(),
            ..RelayConfig::default()
        };
        let bundles = Bundles::from_config(&config).unwrap();
        let key = Bundles::new_key("seo-writer", "1.2.0");
        assert!(key.starts_with("apps/seo-writer/1.2.0/") && key.ends_with(".aisapp"));
        bundles
            .put(&key, Bytes::from_static(b"zip bytes"))
            .await
            .unwrap();
        assert!(dir.path().join("bundles").join(&key).is_file());
        assert_eq!(
            bundles.get(&key).await.unwrap(),
            Bytes::from_static(b"zip bytes")
        );
        let (size, stream) = bundles.stream(&key).await.unwrap();
        assert_eq!(size, 9);
        let pieces: Vec<Bytes> = stream.try_collect().await.unwrap();
        assert_eq!(pieces.concat(), b"zip bytes");
        bundles.delete(&key).await.unwrap();
        assert!(matches!(
            bundles.get(&key).await,
            Err(BundleError::NotFound(_))
        ));
        bundles.delete(&key).await.unwrap();
    }

    #[test]
    fn s3_without_a_bucket_is_a_configuration_error() {
        let mut config = RelayConfig::default();
        config.bundles.store = BundleStoreKind::S3;
        let err = Bundles::from_config(&config).unwrap_err();
        assert!(err.to_string().contains("bucket"), "{err}");
    }

    #[test]
    fn s3_with_a_bucket_builds_without_contacting_anything() {
        let mut config = RelayConfig::default();
        config.bundles.store = BundleStoreKind::S3;
        config.bundles.bucket = Some("apps".into());
        config.bundles.endpoint = Some("http://127.0.0.1:9".into());
        config.bundles.allow_http = true;
        config.bundles.region = Some("eu-west-1".into());
        let bundles = Bundles::from_config(&config).unwrap();
        assert!(bundles.describe().contains("apps"));
    }
}
