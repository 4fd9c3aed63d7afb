//! Bundle storage on an S3-compatible object store: the `[bundles] store = "s3"` the
//! relay builds from its configuration puts, reads, streams and deletes bundles in a
//! real S3 API server (moto's, which `scripts/services.sh start` runs and names in
//! `AISA_TEST_S3`).
//!
//! Without `AISA_TEST_S3` the test says so and passes: scripts/test.sh runs it with the
//! server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the panic

use aisa_relay::RelayConfig;
use aisa_relay::bundles::{BundleError, Bundles};
use aisa_relay::config::BundleStoreKind;
use bytes::Bytes;
use futures_util::TryStreamExt;

#[tokio::test]
async fn bundles_go_to_an_s3_bucket_and_come_back() {
    let Ok(endpoint) = std::env::var("AISA_TEST_S3") else {
        eprintln!("AISA_TEST_S3 is not set (scripts/services.sh start): skipped");
        return;
    };
    // The keys the store reads from the environment, as the AWS tools do (moto takes
    // any). Set before anything else in this process runs: this binary has this one test.
    #[allow(unsafe_code)]
    // SAFETY: no other thread reads or writes the environment at this point (this test
    // binary holds only this test, and nothing has been spawned yet).
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "aisa-test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "aisa-test-secret");
        // No instance-metadata lookups: everything stays on loopback.
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bucket = format!("aisa-bundles-{}", uuid::Uuid::new_v4().simple());
    let http = reqwest::Client::new();
    let created = http
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "bucket: {created:?}");

    let mut config = RelayConfig::default();
    config.bundles.store = BundleStoreKind::S3;
    config.bundles.bucket = Some(bucket.clone());
    config.bundles.endpoint = Some(endpoint.clone());
    config.bundles.allow_http = true;
    config.bundles.region = Some("us-east-1".into());
    config.bundles.prefix = "relay/".into();
    let bundles = Bundles::from_config(&config).expect("an S3 store");
    assert!(
        bundles.describe().contains(&bucket),
        "{}",
        bundles.describe()
    );

    let key = Bundles::new_key("seo-writer", "1.2.0");
    let body = Bytes::from((0..200_000u32).map(|i| i as u8).collect::<Vec<u8>>());
    bundles.put(&key, body.clone()).await.expect("put");
    // In the bucket under the prefix, as another S3 client finds it.
    let direct = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(&bucket)
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("aisa-test")
        .with_secret_access_key("aisa-test-secret")
        .build()
        .unwrap();
    let raw = object_store::ObjectStoreExt::get(
        &direct,
        &object_store::path::Path::from(format!("relay/{key}")),
    )
    .await
    .expect("the object is in the bucket under the prefix");
    assert_eq!(raw.bytes().await.unwrap(), body);

    assert_eq!(bundles.get(&key).await.unwrap(), body);
    let (size, stream) = bundles.stream(&key).await.unwrap();
    assert_eq!(size, body.len() as u64);
    let pieces: Vec<Bytes> = stream.try_collect().await.unwrap();
    assert_eq!(pieces.concat(), body);

    bundles.delete(&key).await.unwrap();
    assert!(matches!(
        bundles.get(&key).await,
        Err(BundleError::NotFound(_))
    ));
    bundles
        .delete(&key)
        .await
        .expect("deleting a missing bundle is fine");
    assert!(matches!(
        bundles.stream("apps/none/1.0.0/x.aisapp").await,
        Err(BundleError::NotFound(_))
    ));
}
