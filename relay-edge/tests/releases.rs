//! The relay serving desktop-node's release files (`releases_dir`, `/releases/`) over
//! HTTP on loopback: the bytes exactly as written, no listing, no web-app fallback for a
//! missing file, nothing outside the folder, and `Cache-Control: no-cache`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the panic

use aisa_relay::{RelayConfig, RelayHandle};
use aisa_testkit::fakes::test_database;

async fn relay(adjust: impl FnOnce(&mut RelayConfig)) -> (RelayHandle, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = RelayConfig {
        quic_listen: ([127, 0, 0, 1], 0).into(),
        http_listen: ([127, 0, 0, 1], 0).into(),
        data_dir: dir.path().join("relay"),
        database_url: test_database().await,
        ..RelayConfig::default()
    };
    adjust(&mut config);
    let relay = aisa_relay::start(config).await.expect("relay starts");
    let base = format!("http://{}", relay.http_addr);
    (relay, base, dir)
}

/// `GET path` as written, on a fresh connection; the whole answer as text.
async fn raw_get(base: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn release_manifests_and_binaries_are_served_from_the_configured_folder() {
    let files = tempfile::tempdir().unwrap();
    let releases = files.path().join("releases");
    std::fs::create_dir_all(releases.join("stable")).unwrap();
    // A manifest as `aisapp release` writes it, and a binary with every byte value.
    let manifest = br#"{"manifest":"e30=","key_id":"0011223344556677","signature":"AA=="}"#;
    std::fs::write(releases.join("stable/x86_64-linux.json"), manifest).unwrap();
    let binary: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    std::fs::write(releases.join("desktop-node-0.2.0-x86_64-linux"), &binary).unwrap();
    // A secret beside the folder, and the web app (whose index.html must not answer
    // for a missing release file).
    std::fs::write(files.path().join("secret.txt"), "not for you").unwrap();
    let web = files.path().join("web");
    std::fs::create_dir_all(&web).unwrap();
    std::fs::write(web.join("index.html"), "<title>AI SuperApp</title>").unwrap();

    let (_relay, base, _dir) = relay(|c| {
        c.releases_dir = Some(releases.clone());
        c.web_root = Some(web.clone());
    })
    .await;
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{base}{path}")).send();

    let answer = get("/releases/stable/x86_64-linux.json").await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "application/json");
    assert_eq!(answer.headers()["cache-control"], "no-cache");
    assert!(answer.headers().contains_key("last-modified"));
    assert_eq!(answer.bytes().await.unwrap().as_ref(), manifest);

    let answer = get("/releases/desktop-node-0.2.0-x86_64-linux")
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.headers()["content-length"],
        binary.len().to_string().as_str()
    );
    assert_eq!(answer.bytes().await.unwrap().as_ref(), binary.as_slice());

    // A release that is not there is a 404, not the web app's page; no listing.
    for missing in [
        "/releases/beta/x86_64-linux.json",
        "/releases/stable/",
        "/releases/",
    ] {
        let answer = get(missing).await.unwrap();
        let status = answer.status();
        let body = answer.text().await.unwrap();
        assert_eq!(status, 404, "{missing}: {body:?}");
        assert!(
            !body.contains("AI SuperApp"),
            "{missing}: the web app answered"
        );
        assert!(!body.contains("x86_64"), "{missing}: a listing");
    }
    // Nothing outside the folder. Sent as raw bytes: an HTTP client library would
    // resolve the dots itself before sending.
    for escape in [
        "/releases/../secret.txt",
        "/releases/%2e%2e/secret.txt",
        "/releases/stable/..%2f..%2fsecret.txt",
        "/releases/stable/%2e%2e/%2e%2e/secret.txt",
    ] {
        let answer = raw_get(&base, escape).await;
        assert!(
            answer.starts_with("HTTP/1.1 404") || answer.starts_with("HTTP/1.1 400"),
            "{escape}: {answer}"
        );
        assert!(!answer.contains("not for you"), "{escape}: {answer}");
        assert!(!answer.contains("AI SuperApp"), "{escape}: {answer}");
    }
    // The web app still answers elsewhere.
    let page = get("/some/page").await.unwrap().text().await.unwrap();
    assert!(page.contains("AI SuperApp"), "{page}");
}

#[tokio::test]
async fn without_a_releases_folder_nothing_is_served_there() {
    let (_relay, base, _dir) = relay(|_| {}).await;
    let answer = reqwest::get(format!("{base}/releases/stable/x86_64-linux.json"))
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
}
