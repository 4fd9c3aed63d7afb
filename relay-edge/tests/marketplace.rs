//! The developer portal and the marketplace against a real relay over HTTP on loopback,
//! with bundles built by `aisa_miniapp` and verified with the keys the relay publishes.
//!
//! The relay runs on embedded SQLite, or on a fresh PostgreSQL database when
//! `AISA_TEST_POSTGRES` names a server (`scripts/services.sh start`), as in the system
//! tests.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the panic

use std::collections::BTreeMap;

use aisa_miniapp::{Bundle, TrustedKeys};
use aisa_relay::{RelayConfig, RelayHandle};
use aisa_testkit::fakes::test_database;
use serde_json::{Value, json};

/// A relay on loopback with its data in a temporary folder.
struct Relay {
    relay: Option<RelayHandle>,
    base: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Relay {
    async fn start() -> Relay {
        Relay::start_with(|_| {}).await
    }

    async fn start_with(adjust: impl FnOnce(&mut RelayConfig)) -> Relay {
        let dir = tempfile::tempdir().unwrap();
        let mut config = RelayConfig {
            quic_listen: ([127, 0, 0, 1], 0).into(),
            http_listen: ([127, 0, 0, 1], 0).into(),
            data_dir: dir.path().to_owned(),
            database_url: test_database().await,
            ..RelayConfig::default()
        };
        adjust(&mut config);
        let relay = aisa_relay::start(config).await.expect("relay starts");
        Relay {
            base: format!("http://{}", relay.http_addr),
            relay: Some(relay),
            http: reqwest::Client::new(),
            dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Signs up a user; returns their access token.
    async fn user(&self, email: &str) -> String {
        let reply: Value = self
            .http
            .post(self.url("/api/auth/signup"))
            .json(&json!({"email": email, "password": "correct horse battery"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        reply["token"].as_str().expect("signed up").to_owned()
    }

    /// Enrolls a device for a signed-up user; returns its device token.
    async fn device(&self, email: &str) -> String {
        let reply: Value = self
            .http
            .post(self.url("/api/devices/enroll"))
            .json(&json!({"email": email, "password": "correct horse battery", "name": "laptop"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        reply["device_token"].as_str().expect("enrolled").to_owned()
    }

    async fn publish(&self, token: &str, zip: Vec<u8>) -> (u16, Value) {
        let response = self
            .http
            .post(self.url("/api/portal/apps"))
            .bearer_auth(token)
            .header("content-type", "application/zip")
            .body(zip)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, auth: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .header("authorization", auth)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn stop(mut self) {
        if let Some(relay) = self.relay.take() {
            relay.shutdown(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// The files of a small valid JS mini-app.
fn app_files(id: &str, version: &str, name: &str, category: &str) -> BTreeMap<String, Vec<u8>> {
    let manifest = json!({
        "id": id, "name": name, "version": version,
        "description": format!("{name}: writes things for you"),
        "category": category,
        "author": {"name": "Ada Author", "email": "ada@example.com"},
        "entry": "js", "runtime": ">=0.1.0, <0.2.0"
    });
    let action_schema = json!({"write": {
        "type": "object", "title": "Write", "description": "Write about a topic",
        "properties": {"topic": {"type": "string", "title": "Topic"}}, "required": ["topic"]
    }});
    let ui_schema = json!({"write": {"topic": {"ui:placeholder": "a topic"}}});
    let permissions = json!({"ai": true, "network": ["api.example.com"]});
    let mut files = BTreeMap::new();
    files.insert("manifest.json".into(), manifest.to_string().into_bytes());
    files.insert(
        "action-schema.json".into(),
        action_schema.to_string().into_bytes(),
    );
    files.insert("ui-schema.json".into(), ui_schema.to_string().into_bytes());
    files.insert(
        "permissions.json".into(),
        permissions.to_string().into_bytes(),
    );
    files.insert(
        "bot-logic.js".into(),
        b"export async function write(payload, context) {\n  context.emit('About ' + payload.topic);\n}\n"
            .to_vec(),
    );
    files
}

/// An unsigned `.aisapp` zip packed with `aisa_miniapp`.
fn pack(files: BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    Bundle::from_files(files)
        .expect("valid files")
        .to_zip_bytes()
}

fn app_zip(id: &str, version: &str, name: &str, category: &str) -> Vec<u8> {
    pack(app_files(id, version, name, category))
}

fn ids(list: &Value) -> Vec<&str> {
    list["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn publish_list_search_detail_and_a_download_that_verifies() {
    let web = tempfile::tempdir().unwrap();
    std::fs::write(web.path().join("index.html"), "<title>AI SuperApp</title>").unwrap();
    let web_root = web.path().to_owned();
    let relay = Relay::start_with(|c| c.web_root = Some(web_root)).await;
    let ada = relay.user("ada@example.com").await;

    let zip = app_zip("seo-writer", "1.2.0", "SEO Writer", "writing");
    let (status, published) = relay.publish(&ada, zip.clone()).await;
    assert_eq!(status, 201, "{published}");
    assert_eq!(published["id"], "seo-writer");
    assert_eq!(published["version"], "1.2.0");
    let sha = published["sha256"].as_str().unwrap().to_owned();
    assert_eq!(sha.len(), 64);
    let key_id = published["key_id"].as_str().unwrap().to_owned();
    assert!(published["size"].as_u64().unwrap() > 0);
    let (status, _) = relay
        .publish(
            &ada,
            app_zip("csv-summarizer", "0.1.0", "CSV Summarizer", "data"),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = relay
        .publish(&ada, app_zip("file-qa", "0.3.1", "File Q&A", "files"))
        .await;
    assert_eq!(status, 201);

    // Listing, search (case-insensitive, over id, name and description) and category.
    let (_, all) = relay.get("/api/marketplace/apps").await;
    assert_eq!(ids(&all), ["csv-summarizer", "file-qa", "seo-writer"]);
    let seo = &all["apps"][2];
    assert_eq!(seo["name"], "SEO Writer");
    assert_eq!(seo["category"], "writing");
    assert_eq!(seo["author"], "Ada Author");
    assert_eq!(seo["latest_version"], "1.2.0");
    assert_eq!(seo["rating"], json!({"average": 0.0, "count": 0}));
    assert_eq!(seo["installs"], 0);
    assert_eq!(
        ids(&relay.get("/api/marketplace/apps?q=seo%20WRI").await.1),
        ["seo-writer"]
    );
    assert_eq!(
        ids(&relay.get("/api/marketplace/apps?q=SUMMARIZER").await.1),
        ["csv-summarizer"]
    );
    assert_eq!(
        ids(&relay.get("/api/marketplace/apps?q=writes%20things").await.1).len(),
        3,
        "descriptions are searched too"
    );
    assert!(ids(&relay.get("/api/marketplace/apps?q=%25").await.1).is_empty());
    assert_eq!(
        ids(&relay.get("/api/marketplace/apps?category=files").await.1),
        ["file-qa"]
    );
    assert_eq!(
        ids(&relay
            .get("/api/marketplace/apps?category=files&q=seo")
            .await
            .1),
        Vec::<&str>::new()
    );
    let (_, categories) = relay.get("/api/marketplace/categories").await;
    assert_eq!(
        categories,
        json!({"categories": [
            {"name": "data", "count": 1}, {"name": "files", "count": 1}, {"name": "writing", "count": 1}
        ]})
    );

    // Detail: list fields, versions, and the latest's permissions and schemas.
    let (status, detail) = relay.get("/api/marketplace/apps/seo-writer").await;
    assert_eq!(status, 200);
    assert_eq!(detail["latest_version"], "1.2.0");
    assert_eq!(
        detail["permissions"],
        json!({"ai": true, "network": ["api.example.com"]})
    );
    assert_eq!(detail["action_schema"]["write"]["title"], "Write");
    assert_eq!(detail["actions"], json!(["write"]));
    assert_eq!(
        detail["ui_schema"]["write"]["topic"]["ui:placeholder"],
        "a topic"
    );
    let version = &detail["versions"][0];
    assert_eq!(version["version"], "1.2.0");
    assert_eq!(version["sha256"], sha.as_str());
    assert_eq!(version["yanked"], false);
    assert_eq!(version["runtime"], ">=0.1.0, <0.2.0");
    assert!(version["published_at"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(relay.get("/api/marketplace/apps/nope").await.0, 404);

    // The download (at the listed URL) is the signed bundle: its checksum matches, and
    // the signature verifies with the keys the relay lists.
    let download_url = version["download_url"].as_str().unwrap();
    assert_eq!(
        download_url,
        "/api/marketplace/apps/seo-writer/versions/1.2.0/bundle"
    );
    let response = relay
        .http
        .get(relay.url(download_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-aisapp-sha256"], sha.as_str());
    assert_eq!(response.headers()["content-type"], "application/zip");
    let bytes = response.bytes().await.unwrap();
    assert_eq!(aisa_miniapp::checksum::sha256_hex(&bytes), sha);
    let (_, keys) = relay.get("/api/platform/keys").await;
    let listed = keys["keys"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["alg"], "ed25519");
    assert_eq!(listed[0]["key_id"], key_id.as_str());
    let trusted =
        TrustedKeys::from_base64(listed.iter().map(|k| k["public_key"].as_str().unwrap())).unwrap();
    let bundle = Bundle::from_zip_bytes(&bytes).unwrap();
    let verified =
        aisa_miniapp::verify(&bundle, &trusted).expect("the platform signature verifies");
    assert_eq!(verified.key_id(), key_id);
    assert_eq!(
        bundle.file("bot-logic.js"),
        Bundle::from_zip_bytes(&zip).unwrap().file("bot-logic.js")
    );
    // ... and a bundle changed after signing does not.
    let mut tampered = bundle.clone();
    tampered
        .insert("bot-logic.js", b"export async function write() {}".to_vec())
        .unwrap();
    let err = aisa_miniapp::verify(&tampered, &trusted).unwrap_err();
    assert!(err.to_string().contains("bot-logic.js"), "{err}");
    assert_eq!(
        relay
            .http
            .get(relay.url("/api/marketplace/apps/seo-writer/versions/9.9.9/bundle"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // The bundle lives in the default local store.
    assert!(
        relay
            .dir
            .path()
            .join("bundles/apps/seo-writer/1.2.0")
            .is_dir()
    );

    // The web app is still served next to the API.
    let page = relay
        .http
        .get(relay.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("AI SuperApp"), "{page}");
    let page = relay
        .http
        .get(relay.url("/marketplace/seo-writer"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("AI SuperApp"),
        "client-side routes get index.html: {page}"
    );
    relay.stop().await;
}

#[tokio::test]
async fn versions_are_immutable_ids_are_owned_and_yanked_versions_are_never_latest() {
    let relay = Relay::start().await;
    let ada = relay.user("ada@example.com").await;
    let bob = relay.user("bob@example.com").await;
    assert_eq!(
        relay
            .publish(
                &ada,
                app_zip("seo-writer", "1.0.0", "SEO Writer", "writing")
            )
            .await
            .0,
        201
    );

    // The same version again, even with other contents: 409.
    let (status, reply) = relay
        .publish(
            &ada,
            app_zip("seo-writer", "1.0.0", "SEO Writer 2", "writing"),
        )
        .await;
    assert_eq!(status, 409, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("immutable"),
        "{reply}"
    );
    // Another author cannot publish under Ada's id, not even a new version: 403.
    let (status, reply) = relay
        .publish(&bob, app_zip("seo-writer", "2.0.0", "Bob's SEO", "writing"))
        .await;
    assert_eq!(status, 403, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("another author"),
        "{reply}"
    );
    // Without a token: 401.
    assert_eq!(
        relay
            .publish("garbage", app_zip("x-app", "1.0.0", "X", "fun"))
            .await
            .0,
        401
    );

    // Newer versions: latest follows semver order, not publication order.
    for v in ["1.10.0", "1.9.0"] {
        assert_eq!(
            relay
                .publish(&ada, app_zip("seo-writer", v, "SEO Writer", "writing"))
                .await
                .0,
            201
        );
    }
    let (_, detail) = relay.get("/api/marketplace/apps/seo-writer").await;
    assert_eq!(detail["latest_version"], "1.10.0");
    let order: Vec<&str> = detail["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["1.10.0", "1.9.0", "1.0.0"]);

    // Only the owner yanks.
    let yank = "/api/portal/apps/seo-writer/versions/1.10.0/yank";
    assert_eq!(
        relay
            .post(yank, &format!("Bearer {bob}"), json!({}))
            .await
            .0,
        403
    );
    let (status, reply) = relay.post(yank, &format!("Bearer {ada}"), json!({})).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        relay
            .post(
                "/api/portal/apps/seo-writer/versions/7.7.7/yank",
                &format!("Bearer {ada}"),
                json!({})
            )
            .await
            .0,
        404
    );
    let (_, list) = relay.get("/api/marketplace/apps").await;
    assert_eq!(list["apps"][0]["latest_version"], "1.9.0");
    let (_, detail) = relay.get("/api/marketplace/apps/seo-writer").await;
    assert_eq!(detail["latest_version"], "1.9.0");
    assert_eq!(detail["versions"][0]["yanked"], true);
    // A yanked version can still be fetched by exact version.
    assert_eq!(
        relay
            .http
            .get(relay.url("/api/marketplace/apps/seo-writer/versions/1.10.0/bundle"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // With every version yanked the app leaves the list and the categories.
    for v in ["1.9.0", "1.0.0"] {
        let path = format!("/api/portal/apps/seo-writer/versions/{v}/yank");
        assert_eq!(
            relay
                .post(&path, &format!("Bearer {ada}"), json!({}))
                .await
                .0,
            200
        );
    }
    assert!(ids(&relay.get("/api/marketplace/apps").await.1).is_empty());
    assert_eq!(
        relay.get("/api/marketplace/categories").await.1,
        json!({"categories": []})
    );
    let (_, detail) = relay.get("/api/marketplace/apps/seo-writer").await;
    assert_eq!(detail["latest_version"], Value::Null);
    // The id stays Ada's.
    assert_eq!(
        relay
            .publish(&bob, app_zip("seo-writer", "3.0.0", "Bob's SEO", "writing"))
            .await
            .0,
        403
    );
    relay.stop().await;
}

#[tokio::test]
async fn bad_uploads_are_refused_with_a_message_naming_the_problem() {
    let relay = Relay::start().await;
    let ada = relay.user("ada@example.com").await;
    let refused = |zip: Vec<u8>| {
        let relay = &relay;
        let ada = ada.clone();
        async move {
            let (status, reply) = relay.publish(&ada, zip).await;
            assert_eq!(status, 400, "{reply}");
            reply["error"].as_str().unwrap().to_owned()
        }
    };

    let err = refused(b"this is not a zip".to_vec()).await;
    assert!(err.contains("zip"), "{err}");
    assert!(refused(Vec::new()).await.contains("empty"));

    let mut files = app_files("bad-one", "1.0.0", "Bad", "writing");
    files.remove("action-schema.json");
    let err = refused(pack(files)).await;
    assert!(err.contains("action-schema.json"), "{err}");

    let mut files = app_files("bad-one", "1.0.0", "Bad", "writing");
    files.insert(
        "bot-logic.js".into(),
        b"const fs = require('fs');\nexport function write() {}\n".to_vec(),
    );
    let err = refused(pack(files)).await;
    assert!(err.contains("require("), "{err}");

    let mut files = app_files("bad-one", "1.0.0", "Bad", "writing");
    files.insert(
        "manifest.json".into(),
        json!({"id": "Bad Id!", "name": "Bad", "version": "one", "description": "d",
               "category": "writing", "author": {"name": "A"}, "entry": "js", "runtime": "*"})
        .to_string()
        .into_bytes(),
    );
    let err = refused(pack(files)).await;
    assert!(err.contains("manifest.json"), "{err}");

    // A wasm app importing a capability its permissions do not ask for.
    let mut files = app_files("wasm-app", "1.0.0", "W", "developer");
    files.remove("bot-logic.js");
    let manifest = String::from_utf8(files["manifest.json"].clone()).unwrap();
    files.insert(
        "manifest.json".into(),
        manifest
            .replace("\"entry\":\"js\"", "\"entry\":\"wasm\"")
            .into_bytes(),
    );
    files.insert("permissions.json".into(), b"{\"ai\": true}".to_vec());
    let wasm = wat::parse_str(
        r#"(module
          (import "aisapp_v1" "http" (func (param i32 i32) (result i32)))
          (memory (export "memory") 1)
          (func (export "aisapp_alloc") (param i32) (result i32) i32.const 1024)
          (func (export "aisapp_run") (param i32 i32) (result i32) i32.const 0))"#,
    )
    .unwrap();
    files.insert("logic.wasm".into(), wasm);
    let err = refused(pack(files)).await;
    assert!(
        err.contains("aisapp_v1::http") && err.contains("network"),
        "{err}"
    );

    // A zip with an entry that climbs out of the bundle (built by hand: the packer
    // refuses such names).
    let err = refused(zip_with_entries(&[("../evil.js", b"x")])).await;
    assert!(err.contains("../evil.js"), "{err}");

    // A zip whose file was altered in transit (its CRC no longer matches).
    let files = app_files("corrupt", "1.0.0", "C", "fun");
    let entries: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(name, data)| (name.as_str(), data.as_slice()))
        .collect();
    let mut zip = zip_with_entries(&entries);
    let logic = files["bot-logic.js"].as_slice();
    let at = zip
        .windows(logic.len())
        .position(|w| w == logic)
        .expect("stored entry");
    zip[at + 7] ^= 0x20;
    let err = refused(zip).await;
    assert!(err.contains("bot-logic.js"), "{err}");

    // A signed bundle whose file was changed afterwards: the portal re-signs what it
    // checked, so the change is published only if it passes the checks itself.
    let mut bundle = Bundle::from_files(app_files("tampered", "1.0.0", "T", "fun")).unwrap();
    aisa_miniapp::sign(&mut bundle, &aisa_miniapp::SecretKey::generate().unwrap()).unwrap();
    bundle
        .insert(
            "bot-logic.js",
            b"eval('1');\nexport function write() {}\n".to_vec(),
        )
        .unwrap();
    let err = refused(bundle.to_zip_bytes()).await;
    assert!(err.contains("eval("), "{err}");

    // Over the 16 MiB upload limit: 413, before the body is read in full.
    let response = relay
        .http
        .post(relay.url("/api/portal/apps"))
        .bearer_auth(&ada)
        .body(vec![0u8; (16 << 20) + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let reply: Value = response.json().await.unwrap();
    assert!(
        reply["error"].as_str().unwrap().contains("16 MiB"),
        "{reply}"
    );

    // Nothing was published and nothing stored.
    assert!(ids(&relay.get("/api/marketplace/apps").await.1).is_empty());
    let stored = walk_files(&relay.dir.path().join("bundles"));
    assert!(stored.is_empty(), "{stored:?}");
    relay.stop().await;
}

/// A zip holding exactly these entries, stored (uncompressed), written with the zip
/// crate directly: `aisa_miniapp`'s packer refuses the names these tests need.
fn zip_with_entries(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        zip.start_file(*name, options).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(walk_files(&path));
            } else {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test]
async fn ratings_count_once_per_user_and_installs_count_with_a_device_token() {
    // Metrics have their own listener (`metrics_addr`), off the public API.
    let relay = Relay::start_with(|c| c.metrics_addr = Some(([127, 0, 0, 1], 0).into())).await;
    let ada = relay.user("ada@example.com").await;
    let bob = relay.user("bob@example.com").await;
    let app = "rated-app";
    assert_eq!(
        relay
            .publish(&ada, app_zip(app, "1.0.0", "Rated", "fun"))
            .await
            .0,
        201
    );

    let ratings = format!("/api/marketplace/apps/{app}/ratings");
    let (status, reply) = relay
        .post(&ratings, &format!("Bearer {bob}"), json!({"stars": 2}))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply, json!({"average": 2.0, "count": 1}));
    // Bob again: replaces his rating.
    let (_, reply) = relay
        .post(&ratings, &format!("Bearer {bob}"), json!({"stars": 4}))
        .await;
    assert_eq!(reply, json!({"average": 4.0, "count": 1}));
    let (_, reply) = relay
        .post(&ratings, &format!("Bearer {ada}"), json!({"stars": 5}))
        .await;
    assert_eq!(reply, json!({"average": 4.5, "count": 2}));
    for bad in [
        json!({"stars": 0}),
        json!({"stars": 6}),
        json!({"stars": "five"}),
    ] {
        let (status, reply) = relay.post(&ratings, &format!("Bearer {bob}"), bad).await;
        assert_eq!(status, 400, "{reply}");
        assert!(
            reply["error"].as_str().unwrap().contains("stars"),
            "{reply}"
        );
    }
    assert_eq!(
        relay
            .post(&ratings, "Bearer nope", json!({"stars": 3}))
            .await
            .0,
        401
    );
    assert_eq!(
        relay
            .post(
                "/api/marketplace/apps/nope/ratings",
                &format!("Bearer {bob}"),
                json!({"stars": 3})
            )
            .await
            .0,
        404
    );

    // Installs: reported by desktop nodes with their device token.
    let laptop = relay.device("bob@example.com").await;
    let desktop = relay.device("ada@example.com").await;
    let installs = format!("/api/marketplace/apps/{app}/installs");
    let (status, reply) = relay
        .post(
            &installs,
            &format!("Device {laptop}"),
            json!({"version": "1.0.0"}),
        )
        .await;
    assert_eq!(status, 204, "{reply}");
    // A retried report is not a second install.
    assert_eq!(
        relay
            .post(
                &installs,
                &format!("Device {laptop}"),
                json!({"version": "1.0.0"})
            )
            .await
            .0,
        204
    );
    assert_eq!(
        relay
            .post(
                &installs,
                &format!("Device {desktop}"),
                json!({"version": "1.0.0"})
            )
            .await
            .0,
        204
    );
    for auth in [
        "Device aisa_dt_forged".to_owned(),
        format!("Bearer {bob}"),
        String::new(),
    ] {
        let (status, reply) = relay
            .post(&installs, &auth, json!({"version": "1.0.0"}))
            .await;
        assert_eq!(status, 401, "{auth}: {reply}");
    }
    assert_eq!(
        relay
            .post(
                &installs,
                &format!("Device {laptop}"),
                json!({"version": "9.0.0"})
            )
            .await
            .0,
        404
    );

    let (_, list) = relay.get("/api/marketplace/apps").await;
    assert_eq!(list["apps"][0]["installs"], 2);
    assert_eq!(
        list["apps"][0]["rating"],
        json!({"average": 4.5, "count": 2})
    );
    let (_, detail) = relay.get(&format!("/api/marketplace/apps/{app}")).await;
    assert_eq!(detail["installs"], 2);

    let metrics_addr = relay.relay.as_ref().unwrap().metrics_addr.unwrap();
    let metrics = relay
        .http
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let installs_line = metrics
        .lines()
        .find(|l| l.starts_with(&format!("aisa_installs_total{{app=\"{app}\"}}")))
        .unwrap_or_else(|| panic!("no installs metric for {app} in:\n{metrics}"));
    assert!(installs_line.ends_with(" 2"), "{installs_line}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("aisa_publishes_total ")),
        "{metrics}"
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_rotated_key_signs_while_the_old_one_stays_trusted_across_restarts() {
    let old = aisa_miniapp::SecretKey::generate().unwrap();
    let new = aisa_miniapp::SecretKey::generate().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let new_file = keys.path().join("new.key");
    new.write_file(&new_file).unwrap();
    let old_public = old.public_key().to_base64();
    let relay = Relay::start_with(|c| {
        c.signing.key_file = Some(new_file);
        c.signing.trusted_public_keys = vec![old_public];
    })
    .await;
    let (_, keys_reply) = relay.get("/api/platform/keys").await;
    let listed: Vec<&str> = keys_reply["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_str().unwrap())
        .collect();
    let new_id = new.public_key().key_id();
    let old_id = old.public_key().key_id();
    assert_eq!(listed, [new_id.as_str(), old_id.as_str()]);
    let ada = relay.user("ada@example.com").await;
    let (_, published) = relay
        .publish(&ada, app_zip("rotated", "1.0.0", "R", "fun"))
        .await;
    assert_eq!(published["key_id"], new_id.as_str());
    relay.stop().await;

    // The default key is made once and kept: a restart on the same data directory signs
    // with the same key.
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let first = Relay::start_with(|c| c.data_dir = data_dir.clone()).await;
    let (_, a) = first.get("/api/platform/keys").await;
    first.stop().await;
    let data_dir = dir.path().to_owned();
    let second = Relay::start_with(|c| c.data_dir = data_dir).await;
    let (_, b) = second.get("/api/platform/keys").await;
    assert_eq!(a, b);
    second.stop().await;
}

/// Bundles in S3-compatible storage. Runs when `AISA_TEST_S3` names an endpoint, e.g.
/// `moto_server -p 5055` (PyPI `moto[server]`) with `AISA_TEST_S3=http://127.0.0.1:5055`
/// and any `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` in the environment (the relay
/// reads its S3 credentials from there). The bucket is created with a plain request,
/// which moto allows; elsewhere it must exist (`AISA_TEST_S3_BUCKET`).
#[tokio::test]
async fn bundles_can_live_in_s3_compatible_storage() {
    let Ok(endpoint) = std::env::var("AISA_TEST_S3") else {
        eprintln!("skipped: set AISA_TEST_S3 to an S3-compatible endpoint to run this test");
        return;
    };
    let bucket = std::env::var("AISA_TEST_S3_BUCKET").unwrap_or_else(|_| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("aisa-test-{nanos}")
    });
    let http = reqwest::Client::new();
    let _ = http.put(format!("{endpoint}/{bucket}")).send().await;
    let (s3_endpoint, s3_bucket) = (endpoint.clone(), bucket.clone());
    let relay = Relay::start_with(move |c| {
        c.bundles.store = aisa_relay::config::BundleStoreKind::S3;
        c.bundles.bucket = Some(s3_bucket);
        c.bundles.endpoint = Some(s3_endpoint);
        c.bundles.region = Some("us-east-1".into());
        c.bundles.allow_http = true;
        c.bundles.prefix = "relay-test/".into();
    })
    .await;
    let ada = relay.user("ada@example.com").await;
    let (status, published) = relay
        .publish(&ada, app_zip("s3-app", "1.0.0", "S3 App", "data"))
        .await;
    assert_eq!(status, 201, "{published}");
    let bytes = relay
        .http
        .get(relay.url("/api/marketplace/apps/s3-app/versions/1.0.0/bundle"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        aisa_miniapp::checksum::sha256_hex(&bytes),
        published["sha256"].as_str().unwrap()
    );
    assert!(
        walk_files(&relay.dir.path().join("bundles")).is_empty(),
        "nothing is stored locally"
    );
    let listing = http
        .get(format!("{endpoint}/{bucket}?list-type=2"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        listing.contains("relay-test/apps/s3-app/1.0.0/"),
        "{listing}"
    );
    relay.stop().await;
}

/// Runs the `relay-edge` binary on the test relay's data directory and database.
fn operator(relay: &Relay, database_url: Option<&str>, args: &[&str]) -> (bool, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_relay-edge"));
    command.arg("--data-dir").arg(relay.dir.path());
    if let Some(url) = database_url {
        command.arg("--database-url").arg(url);
    }
    let output = command
        .args(args)
        .env_remove("AISA_RELAY_CONFIG")
        .env_remove("RELAY_CONFIG")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("relay-edge runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test]
async fn operators_list_and_yank_apps_from_the_command_line() {
    let relay = Relay::start().await;
    let database_url = relay
        .relay
        .as_ref()
        .unwrap()
        .state
        .config
        .database_url
        .clone();
    let db = database_url.as_deref();
    let ada = relay.user("ada@example.com").await;
    for v in ["1.0.0", "1.1.0"] {
        assert_eq!(
            relay
                .publish(&ada, app_zip("cli-app", v, "CLI App", "utilities"))
                .await
                .0,
            201
        );
    }
    let (ok, out) = operator(&relay, db, &["apps", "list"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("cli-app\tCLI App\tada@example.com\tlatest 1.1.0"),
        "{out}"
    );
    assert!(out.contains("1.1.0, 1.0.0"), "{out}");

    let (ok, out) = operator(&relay, db, &["apps", "yank", "cli-app", "1.1.0"]);
    assert!(ok, "{out}");
    let (_, list) = relay.get("/api/marketplace/apps").await;
    assert_eq!(list["apps"][0]["latest_version"], "1.0.0");
    let (_, out) = operator(&relay, db, &["apps", "list"]);
    assert!(out.contains("1.1.0 (yanked), 1.0.0"), "{out}");

    let (ok, out) = operator(&relay, db, &["apps", "yank", "cli-app", "9.9.9"]);
    assert!(!ok, "{out}");
    assert!(out.contains("no version 9.9.9 of app cli-app"), "{out}");
    relay.stop().await;
}
