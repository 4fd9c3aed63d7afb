//! Regression tests for the relay's defences: header limits, connection and
//! stream limits before authentication, event-stream limits, the daily action limit,
//! sign-in limits behind proxies, bounded password hashing, upload timeouts, the
//! metrics listener, the token secret, and access tokens revoked on open sessions.
//!
//! Each test runs a real relay on loopback (QUIC, WebTransport and HTTP) with its data in
//! a temporary folder (embedded SQLite, or a fresh PostgreSQL database when
//! `AISA_TEST_POSTGRES` names a server), and plays the browser (wtransport) or the
//! desktop (raw QUIC, ALPN `aisa/1`) against it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the panic

use std::time::{Duration, Instant};

use aisa_relay::{RelayConfig, RelayHandle};
use aisa_testkit::fakes::test_database;
use aisa_tunnel::io::{read_frame, write_frame};
use aisa_tunnel::{Body, Envelope, ErrorCode, Hello, MAX_FRAME_LEN, OpenHeader, StreamKind};
use serde_json::{Value, json};

/// How long any step may take before a test fails.
const WAIT: Duration = Duration::from_secs(20);
const PASSWORD: &str = "correct horse battery";

/// A relay on loopback with its data in a temporary folder (and on PostgreSQL when
/// `AISA_TEST_POSTGRES` names a server, as the system tests).
struct Relay {
    relay: Option<RelayHandle>,
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Relay {
    async fn start() -> Relay {
        Relay::start_with(|_| {}).await
    }

    async fn start_with(adjust: impl FnOnce(&mut RelayConfig)) -> Relay {
        let _ = rustls::crypto::ring::default_provider().install_default();
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
            _dir: dir,
        }
    }

    fn handle(&self) -> &RelayHandle {
        self.relay.as_ref().unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Signs up a user; returns the sign-up answer (token, refresh_token, user_id).
    async fn user(&self, email: &str) -> Value {
        let (status, reply) = self
            .post(
                "/api/auth/signup",
                json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(status, 201, "{reply}");
        reply
    }

    /// Enrolls a device for a signed-up user; returns (device id, device token).
    async fn device(&self, email: &str) -> (String, String) {
        let (status, reply) = self
            .post(
                "/api/devices/enroll",
                json!({"email": email, "password": PASSWORD, "name": "laptop"}),
            )
            .await;
        assert_eq!(status, 200, "{reply}");
        (
            reply["device_id"].as_str().unwrap().to_owned(),
            reply["device_token"].as_str().unwrap().to_owned(),
        )
    }

    /// A new WebTransport session, as a browser opens one.
    async fn browser(&self) -> Result<wtransport::Connection, wtransport::error::ConnectingError> {
        let config = wtransport::ClientConfig::builder()
            .with_bind_default()
            .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(
                self.handle().cert_sha256(),
            )])
            .build();
        let endpoint = wtransport::Endpoint::client(config).unwrap();
        endpoint
            .connect(format!(
                "https://127.0.0.1:{}/wt",
                self.handle().quic_addr.port()
            ))
            .await
    }

    /// A raw QUIC connection as a desktop node makes one, its control stream open.
    async fn desktop(&self) -> (quinn::Endpoint, quinn::Connection) {
        let endpoint = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).unwrap();
        let conn = endpoint
            .connect_with(
                aisa_node::node::client_config(Some(self.handle().cert_sha256())),
                self.handle().quic_addr,
                "localhost",
            )
            .unwrap()
            .await
            .expect("desktop connects");
        (endpoint, conn)
    }

    async fn stop(mut self) {
        if let Some(relay) = self.relay.take() {
            relay.shutdown(Duration::from_millis(100)).await;
        }
    }
}

/// Sends `hello` on a new desktop connection and returns the relay's first answer.
async fn say_hello(relay: &Relay, hello: &[u8]) -> (Desktop, Envelope) {
    let (endpoint, conn) = relay.desktop().await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut frame = Vec::new();
    // Written as raw bytes: the test sends what a broken or hostile node would.
    aisa_tunnel::frame::encode_frame(hello, u32::MAX, &mut frame).unwrap();
    // The relay may refuse before it has read everything; that is not a test failure.
    let _ = tokio::io::AsyncWriteExt::write_all(&mut send, &frame).await;
    let reply = tokio::time::timeout(WAIT, read_frame(&mut recv, MAX_FRAME_LEN))
        .await
        .expect("an answer in time")
        .expect("read")
        .expect("a frame");
    (
        Desktop {
            _endpoint: endpoint,
            conn,
            _control: (send, recv),
        },
        Envelope::decode(&reply).unwrap(),
    )
}

/// A desktop's connection, the endpoint that drives it, and its control stream (ending
/// it takes the desktop offline).
struct Desktop {
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    _control: (quinn::SendStream, quinn::RecvStream),
}

fn error_of(env: &Envelope) -> (ErrorCode, String) {
    match &env.body {
        Body::Error { code, message } => (ErrorCode::parse(code), message.clone()),
        other => panic!("expected an ERROR, got {other:?}"),
    }
}

/// Opens a stream and writes raw bytes on it.
async fn open_raw(
    session: &wtransport::Connection,
    bytes: &[u8],
) -> (wtransport::SendStream, wtransport::RecvStream) {
    let (mut send, recv) = session.open_bi().await.unwrap().await.unwrap();
    if !bytes.is_empty() {
        send.write_all(bytes).await.unwrap();
    }
    (send, recv)
}

/// Opens a stream whose first frame is `header`.
async fn open_with(
    session: &wtransport::Connection,
    header: &OpenHeader,
) -> (wtransport::SendStream, wtransport::RecvStream) {
    let (mut send, recv) = session.open_bi().await.unwrap().await.unwrap();
    write_frame(&mut send, &header.encode(), MAX_FRAME_LEN)
        .await
        .unwrap();
    (send, recv)
}

/// The next envelope on a stream.
async fn next(recv: &mut wtransport::RecvStream) -> Envelope {
    let frame = tokio::time::timeout(WAIT, read_frame(recv, MAX_FRAME_LEN))
        .await
        .expect("a frame in time")
        .expect("read")
        .expect("a frame, not the end");
    Envelope::decode(&frame).unwrap()
}

fn events_header(token: &str) -> OpenHeader {
    OpenHeader {
        device_id: String::new(),
        kind: StreamKind::Control,
        token: token.to_owned(),
        e2e: None,
    }
}

/// The process's metrics page (the recorder is process-wide).
fn metrics_text() -> String {
    aisa_relay::metrics::handle().render()
}

fn refusals(reason: &str) -> u64 {
    let prefix = format!("aisa_refusals_total{{reason=\"{reason}\"}} ");
    metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(|n| n.trim().parse().unwrap()))
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// The desktop's HELLO is checked field by field.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_with_a_bad_identity_key_is_refused_and_nothing_is_stored() {
    let relay = Relay::start().await;
    relay.user("ada@example.com").await;
    let (device_id, device_token) = relay.device("ada@example.com").await;
    let hello = |key_len: usize| Hello {
        device_token: device_token.clone(),
        node_version: "0.1.0".into(),
        identity_key: vec![9; key_len],
    };
    // The lengths the review sent; each was accepted, stored and served before.
    for len in [0usize, 5, 33] {
        let (_conn, reply) = say_hello(&relay, &hello(len).encode()).await;
        let (code, message) = error_of(&reply);
        assert_eq!(code, ErrorCode::MalformedFrame, "{message}");
        assert!(
            message.contains(&format!("identity_key is {len} bytes long, not 32")),
            "{message}"
        );
    }
    // 65,536 bytes do not even fit the header cap: refused from the length prefix.
    let (_conn, reply) = say_hello(&relay, &hello(65_536).encode()).await;
    let (code, message) = error_of(&reply);
    assert_eq!(code, ErrorCode::MalformedFrame);
    assert!(message.contains("exceeds the maximum of 4096"), "{message}");

    let store = &relay.handle().state.store;
    let device = store.device(&device_id).await.unwrap().unwrap();
    assert_eq!(device.identity_key, None, "nothing was stored");
    assert!(
        relay
            .handle()
            .state
            .devices
            .registry
            .get(&device_id)
            .is_none()
    );
    assert!(refusals("invalid_hello") >= 4);

    // A well-formed HELLO still works, and its key is what is stored.
    let (_conn, reply) = say_hello(&relay, &hello(32).encode()).await;
    assert!(matches!(reply.body, Body::Welcome { .. }), "{reply:?}");
    let device = store.device(&device_id).await.unwrap().unwrap();
    assert_eq!(device.identity_key, Some(hex::encode([9u8; 32])));
    relay.stop().await;
}

/// The QUIC application close code of `conn`, once the relay closed it.
async fn closed_with(conn: &quinn::Connection) -> Option<u32> {
    match tokio::time::timeout(WAIT, conn.closed())
        .await
        .expect("closed in time")
    {
        quinn::ConnectionError::ApplicationClosed(close) => {
            Some(u32::try_from(close.error_code.into_inner()).unwrap())
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_replaced_by_another_cannot_take_the_device_back_with_a_late_hello() {
    let relay = Relay::start().await;
    relay.user("ada@example.com").await;
    let (device_id, device_token) = relay.device("ada@example.com").await;
    let hello = |key: u8| {
        Hello {
            device_token: device_token.clone(),
            node_version: "0.1.0".into(),
            identity_key: vec![key; 32],
        }
        .encode()
    };
    let (first, reply) = say_hello(&relay, &hello(1)).await;
    assert!(matches!(reply.body, Body::Welcome { .. }), "{reply:?}");
    // Another node with the same token (its own identity key) replaces the first.
    let (second, reply) = say_hello(&relay, &hello(2)).await;
    assert!(matches!(reply.body, Body::Welcome { .. }), "{reply:?}");
    assert_eq!(
        closed_with(&first.conn).await,
        Some(aisa_relay::desktop::CLOSE_REPLACED)
    );

    // The HELLO the first node had in flight (a path probe) arrives afterwards: refused
    // with the same code, and the second node stays the device's connection.
    let (endpoint, conn) = relay.desktop().await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    write_frame(&mut send, &hello(1), MAX_FRAME_LEN)
        .await
        .unwrap();
    assert_eq!(
        closed_with(&conn).await,
        Some(aisa_relay::desktop::CLOSE_REPLACED)
    );
    drop(endpoint);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        second.conn.close_reason().is_none(),
        "the second node is still connected"
    );
    let online = relay
        .handle()
        .state
        .devices
        .registry
        .get(&device_id)
        .unwrap();
    assert_eq!(online.connection.node_key(), Some([2; 32]));
    assert!(refusals("replaced") >= 1);

    // The second node itself reconnecting is a move, not refused.
    let (third, reply) = say_hello(&relay, &hello(2)).await;
    assert!(matches!(reply.body, Body::Welcome { .. }), "{reply:?}");
    drop((second, third));
    relay.stop().await;
}

// ---------------------------------------------------------------------------------------
// Nothing large is held for a peer that has not authenticated.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_stream_header_is_refused_from_its_length_alone() {
    let relay = Relay::start().await;
    let session = relay.browser().await.unwrap();
    // Announce a 1 MiB header (the frame cap, which headers used to be read with) and
    // send none of it: the relay must answer at once, not wait for (and buffer) the body.
    let started = Instant::now();
    let (_send, mut recv) = open_raw(&session, &(1u32 << 20).to_be_bytes()).await;
    let (code, message) = error_of(&next(&mut recv).await);
    assert_eq!(code, ErrorCode::MalformedFrame);
    assert!(
        message.contains("frame of 1048576 bytes exceeds the maximum of 4096"),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused from the prefix, not after the 10 s header timeout"
    );
    // Just over the cap is refused too; a header at the cap is read (and then judged).
    let (_send, mut recv) = open_raw(&session, &4097u32.to_be_bytes()).await;
    assert_eq!(
        error_of(&next(&mut recv).await).0,
        ErrorCode::MalformedFrame
    );
    assert!(refusals("header_too_large") >= 2);

    // A header whose fields break the rules is refused naming the field.
    let bad = OpenHeader {
        device_id: "d\u{7}".into(),
        kind: StreamKind::Action,
        token: "t".into(),
        e2e: None,
    };
    let (_send, mut recv) = open_with(&session, &bad).await;
    let (code, message) = error_of(&next(&mut recv).await);
    assert_eq!(code, ErrorCode::MalformedFrame);
    assert!(message.contains("device_id has a character"), "{message}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_from_one_address_are_limited() {
    let relay = Relay::start_with(|c| c.max_connections_per_ip = 2).await;
    let first = relay.browser().await.expect("first session");
    let second = relay.browser().await.expect("second session");
    assert!(
        relay.browser().await.is_err(),
        "a third connection from 127.0.0.1 is refused"
    );
    assert!(refusals("connections_per_ip") >= 1);
    // The limit counts open connections: closing one frees its place.
    first.close(0u32.into(), b"done");
    drop(first);
    let deadline = Instant::now() + WAIT;
    let third = loop {
        match relay.browser().await {
            Ok(session) => break session,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("no place came free: {err}"),
        }
    };
    drop((second, third));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_gets_few_streams_until_one_authenticates() {
    let relay = Relay::start().await;
    let token = relay.user("bo@example.com").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    relay.device("bo@example.com").await;
    let session = relay.browser().await.unwrap();
    // The session's own stream takes one of the pre-auth streams; open the rest and say
    // nothing on them.
    let mut idle = Vec::new();
    for _ in 1..aisa_relay::browser::PRE_AUTH_STREAMS {
        let (send, recv) = tokio::time::timeout(WAIT, session.open_bi())
            .await
            .expect("in time")
            .unwrap()
            .await
            .expect("a pre-auth stream");
        idle.push((send, recv));
    }
    // One more must wait: the relay has not granted it.
    let mut more = Box::pin(async { session.open_bi().await.unwrap().await.unwrap() });
    assert!(
        tokio::time::timeout(Duration::from_millis(700), &mut more)
            .await
            .is_err(),
        "an unauthenticated session cannot open more than {} streams",
        aisa_relay::browser::PRE_AUTH_STREAMS
    );
    // Authenticate on one of the open streams (the status events): the session now gets
    // its full allowance, and the waiting stream opens.
    let (send, recv) = &mut idle[0];
    write_frame(send, &events_header(&token).encode(), MAX_FRAME_LEN)
        .await
        .unwrap();
    assert!(matches!(
        next(recv).await.body,
        Body::DeviceStatus { online: false, .. }
    ));
    let (_send, _recv) = tokio::time::timeout(WAIT, more)
        .await
        .expect("the stream opens once the session authenticated");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_per_user_are_limited() {
    let relay = Relay::start_with(|c| c.max_event_streams_per_user = 2).await;
    let token = relay.user("cy@example.com").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    relay.device("cy@example.com").await;
    let session = relay.browser().await.unwrap();
    let mut open = Vec::new();
    for _ in 0..2 {
        let (send, mut recv) = open_with(&session, &events_header(&token)).await;
        assert!(matches!(
            next(&mut recv).await.body,
            Body::DeviceStatus { .. }
        ));
        open.push((send, recv));
    }
    // A second session of the same user counts against the same limit.
    let other = relay.browser().await.unwrap();
    let (_send, mut recv) = open_with(&other, &events_header(&token)).await;
    let (code, message) = error_of(&next(&mut recv).await);
    assert_eq!(code, ErrorCode::LimitExceeded);
    assert!(message.contains("status-event streams"), "{message}");
    assert!(refusals("event_streams_per_user") >= 1);

    // Ending one frees its place.
    let (mut send, _recv) = open.remove(0);
    send.finish().await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let (_send, mut recv) = open_with(&other, &events_header(&token)).await;
        match next(&mut recv).await.body {
            Body::DeviceStatus { .. } => break,
            Body::Error { .. } if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("no place came free: {other:?}"),
        }
    }
    relay.stop().await;
}

// ---------------------------------------------------------------------------------------
// Refused streams do not count; Control streams never do.
// ---------------------------------------------------------------------------------------

/// A desktop that says HELLO and answers every stream the relay opens with one
/// STREAM_END (after reading the relay's header), as a node would after an action.
async fn answering_desktop(relay: &Relay, device_token: &str) -> Desktop {
    let hello = Hello {
        device_token: device_token.to_owned(),
        node_version: "0.1.0".into(),
        identity_key: vec![1; 32],
    };
    let (desktop, reply) = say_hello(relay, &hello.encode()).await;
    assert!(matches!(reply.body, Body::Welcome { .. }), "{reply:?}");
    let streams = desktop.conn.clone();
    tokio::spawn(async move {
        while let Ok((mut send, mut recv)) = streams.accept_bi().await {
            tokio::spawn(async move {
                let header = read_frame(&mut recv, MAX_FRAME_LEN).await.unwrap().unwrap();
                aisa_tunnel::RelayHeader::decode(&header).unwrap();
                let end = Envelope::new(
                    1,
                    Body::StreamEnd {
                        chunks: 0,
                        elapsed_ms: 0,
                    },
                );
                write_frame(&mut send, &end.encode(), MAX_FRAME_LEN)
                    .await
                    .unwrap();
                let _ = send.finish();
                let _ = send.stopped().await;
            });
        }
    });
    desktop
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_action_streams_do_not_count_and_control_streams_never_do() {
    let relay = Relay::start().await;
    let reply = relay.user("di@example.com").await;
    let token = reply["token"].as_str().unwrap().to_owned();
    let user_id = reply["user_id"].as_str().unwrap().to_owned();
    let (device_id, device_token) = relay.device("di@example.com").await;
    let store = &relay.handle().state.store;
    store
        .upsert_plan(&aisa_relay::store::Plan {
            id: "tiny".into(),
            name: "Tiny".into(),
            max_devices: 3,
            max_concurrent_streams: 8,
            max_actions_per_day: 2,
        })
        .await
        .unwrap();
    assert!(store.set_user_plan("di@example.com", "tiny").await.unwrap());
    let _desktop = answering_desktop(&relay, &device_token).await;

    let session = relay.browser().await.unwrap();
    let header = |kind| OpenHeader {
        device_id: device_id.clone(),
        kind,
        token: token.clone(),
        e2e: None,
    };
    for _ in 0..2 {
        let (_send, mut recv) = open_with(&session, &header(StreamKind::Action)).await;
        let reply = next(&mut recv).await;
        assert!(matches!(reply.body, Body::StreamEnd { .. }), "{reply:?}");
    }
    // Over the limit: refused, again and again, and none of the refusals counts.
    for _ in 0..3 {
        let (_send, mut recv) = open_with(&session, &header(StreamKind::Action)).await;
        let (code, message) = error_of(&next(&mut recv).await);
        assert_eq!(code, ErrorCode::LimitExceeded);
        assert!(message.contains("2 actions per day"), "{message}");
    }
    // Actions are counted in memory and written in batches: write them now.
    let actions = &relay.handle().state.actions;
    assert_eq!(actions.counted_today(&user_id), Some(2));
    actions.flush(store).await.unwrap();
    let today = aisa_relay::auth::today_utc();
    assert_eq!(
        store.actions_on(&user_id, &today).await.unwrap(),
        2,
        "refused streams are not counted"
    );
    assert!(refusals("plan_actions") >= 3);

    // Control streams (status, installs) reach the device and are not actions.
    for _ in 0..2 {
        let (_send, mut recv) = open_with(&session, &header(StreamKind::Control)).await;
        let reply = next(&mut recv).await;
        assert!(matches!(reply.body, Body::StreamEnd { .. }), "{reply:?}");
    }
    actions.flush(store).await.unwrap();
    assert_eq!(store.actions_on(&user_id, &today).await.unwrap(), 2);
    assert_eq!(actions.counted_today(&user_id), Some(2));
    relay.stop().await;
}

// ---------------------------------------------------------------------------------------
// Sign-in limits behind proxies, per account, and bounded hashing.
// ---------------------------------------------------------------------------------------

/// Signs in with `password`, as coming from `forwarded_for` (an `X-Forwarded-For`
/// header, when given); returns the status and the `Retry-After` header.
async fn login_from(
    relay: &Relay,
    email: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> (u16, Option<String>) {
    let mut request = relay
        .http
        .post(relay.url("/api/auth/login"))
        .json(&json!({"email": email, "password": password}));
    if let Some(client) = forwarded_for {
        request = request.header("x-forwarded-for", client);
    }
    let response = request.send().await.unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), retry_after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_limits_key_on_the_client_a_trusted_proxy_names_and_on_the_account() {
    let relay = Relay::start_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1".into()];
        c.login_max_failures = 2;
    })
    .await;
    relay.user("eve@example.com").await;
    relay.user("fay@example.com").await;
    relay.user("gus@example.com").await;

    // One client behind the proxy fails twice: that client is limited...
    for _ in 0..2 {
        let (status, _) = login_from(&relay, "eve@example.com", "wrong", Some("203.0.113.5")).await;
        assert_eq!(status, 401);
    }
    let (status, retry_after) =
        login_from(&relay, "fay@example.com", PASSWORD, Some("203.0.113.5")).await;
    assert_eq!(status, 429, "the failing client's address is limited");
    assert!(retry_after.is_some_and(|s| s.parse::<u64>().unwrap() >= 1));
    // ...but everyone else behind the same proxy still signs in.
    let (status, _) = login_from(&relay, "fay@example.com", PASSWORD, Some("198.51.100.8")).await;
    assert_eq!(
        status, 200,
        "other clients behind the proxy are not locked out"
    );

    // Failures against one account from many addresses limit that account.
    for client in ["192.0.2.1", "192.0.2.2"] {
        let (status, _) = login_from(&relay, "gus@example.com", "wrong", Some(client)).await;
        assert_eq!(status, 401);
    }
    let (status, _) = login_from(&relay, "gus@example.com", PASSWORD, Some("192.0.2.3")).await;
    assert_eq!(status, 429, "the account is limited from any address");
    assert!(refusals("login_limited") >= 2);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    let relay = Relay::start_with(|c| c.login_max_failures = 2).await;
    relay.user("hal@example.com").await;
    // A client cannot dodge the address limit by claiming other addresses.
    for (email, claimed) in [("x@example.com", "1.1.1.1"), ("y@example.com", "1.1.1.2")] {
        let (status, _) = login_from(&relay, email, "wrong", Some(claimed)).await;
        assert_eq!(status, 401);
    }
    let (status, _) = login_from(&relay, "hal@example.com", PASSWORD, Some("1.1.1.3")).await;
    assert_eq!(
        status, 429,
        "limited by the TCP peer, whatever the header says"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_hashing_is_bounded_and_answers_503_with_retry_after() {
    let relay = Relay::start_with(|c| {
        c.hash_concurrency = 1;
        c.hash_queue_timeout_ms = 1;
    })
    .await;
    relay.user("ida@example.com").await;
    let attempts = (0..12).map(|_| login_from(&relay, "ida@example.com", PASSWORD, None));
    let results = futures_util::future::join_all(attempts).await;
    let busy: Vec<_> = results
        .iter()
        .filter(|(status, _)| *status == 503)
        .collect();
    assert!(
        !busy.is_empty(),
        "12 sign-ins at once on one hashing place: some must be told to come back: {results:?}"
    );
    for (status, retry_after) in &results {
        match status {
            200 => {}
            503 => assert_eq!(retry_after.as_deref(), Some("1")),
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(results.iter().any(|(status, _)| *status == 200));
    assert_eq!(relay.handle().state.accounts.hashing.in_use(), 0);
    assert!(refusals("hashing_busy") >= 1);
    relay.stop().await;
}

// ---------------------------------------------------------------------------------------
// Slow HTTP clients hold nothing shared, and not for long.
// ---------------------------------------------------------------------------------------

/// Reads until the server closes the connection (or `limit` passes: `None`).
async fn read_until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_trickles_its_headers_is_disconnected() {
    use tokio::io::AsyncWriteExt;
    let relay = Relay::start_with(|c| c.http_header_timeout_secs = 1).await;
    let mut stream = tokio::net::TcpStream::connect(relay.handle().http_addr)
        .await
        .unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n")
        .await
        .unwrap();
    // One more header line every 200 ms, never the blank line that ends them.
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for i in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer
                .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 1024];
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection is still open after 5 s");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed after the 1 s header timeout, not later ({:?})",
        started.elapsed()
    );
    trickle.abort();
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uploads_hold_no_publish_slot_and_are_cut_off() {
    use tokio::io::AsyncWriteExt;
    let relay = Relay::start_with(|c| c.http_body_timeout_secs = 1).await;
    let token = relay.user("jo@example.com").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    // More slow uploads than there are publish slots: each sends its headers and 10 of
    // the 100,000 bytes it announces, then stalls.
    let slots = aisa_relay::marketplace::PUBLISH_CONCURRENCY;
    let mut slow = Vec::new();
    for _ in 0..slots + 1 {
        let mut stream = tokio::net::TcpStream::connect(relay.handle().http_addr)
            .await
            .unwrap();
        let request = format!(
            "POST /api/portal/apps HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/zip\r\nContent-Length: 100000\r\n\r\nPK\x03\x04......"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        slow.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        relay
            .handle()
            .state
            .market
            .publish_slots
            .available_permits(),
        slots,
        "no slot is held while bodies are still arriving"
    );
    // Publishing is not blocked meanwhile: a complete upload is judged at once.
    let started = Instant::now();
    let response = tokio::time::timeout(
        Duration::from_secs(3),
        relay
            .http
            .post(relay.url("/api/portal/apps"))
            .bearer_auth(&token)
            .header("content-type", "application/zip")
            .body(b"not a zip".to_vec())
            .send(),
    )
    .await
    .expect("a complete upload is not held up by slow ones")
    .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert!(started.elapsed() < Duration::from_secs(3));

    // The slow ones are answered 408 once the body timeout passes, and disconnected.
    for stream in &mut slow {
        let answer = read_until_closed(stream, Duration::from_secs(5))
            .await
            .expect("the connection is closed after the body timeout");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    assert!(refusals("body_timeout") >= 1);
    relay.stop().await;
}

// ---------------------------------------------------------------------------------------
// Metrics off the public API, a strong token secret, and
// revoked access tokens that stop working on open sessions.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_only_on_their_own_address() {
    let relay = Relay::start_with(|c| c.metrics_addr = Some(([127, 0, 0, 1], 0).into())).await;
    let public = relay.http.get(relay.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status().as_u16(), 404, "not on the public API");
    let addr = relay.handle().metrics_addr.expect("metrics listener");
    assert_ne!(addr, relay.handle().http_addr);
    let page = relay
        .http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("aisa_relay_connected_devices")
    );
    relay.stop().await;

    // By default metrics are not served at all.
    let relay = Relay::start().await;
    assert_eq!(relay.handle().metrics_addr, None);
    let public = relay.http.get(relay.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status().as_u16(), 404);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_jwt_secret_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = |secret: &str| RelayConfig {
        quic_listen: ([127, 0, 0, 1], 0).into(),
        http_listen: ([127, 0, 0, 1], 0).into(),
        data_dir: dir.path().to_owned(),
        jwt_secret: Some(secret.to_owned()),
        ..RelayConfig::default()
    };
    let err = match aisa_relay::start(config("secret")).await {
        Ok(_) => panic!("a 6-byte secret was accepted"),
        Err(err) => err.to_string(),
    };
    assert!(
        err.contains("jwt_secret has 6 bytes; it needs at least 32"),
        "{err}"
    );
    let relay = aisa_relay::start(config(&"k".repeat(32)))
        .await
        .expect("a 32-byte secret is fine");
    relay.shutdown(Duration::from_millis(100)).await;
}

/// Waits until the session is closed by the relay; panics after `limit`.
async fn closed_within(session: &wtransport::Connection, limit: Duration, what: &str) {
    tokio::time::timeout(limit, session.closed())
        .await
        .unwrap_or_else(|_| panic!("{what}: the session is still open after {limit:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_access_tokens_stop_working_on_open_sessions() {
    let relay = Relay::start_with(|c| c.revocation_check_secs = 1).await;
    let signup = relay.user("kim@example.com").await;
    relay.device("kim@example.com").await;
    let token = signup["token"].as_str().unwrap().to_owned();
    let refresh = signup["refresh_token"].as_str().unwrap().to_owned();

    // 1. Sign out everywhere: an open session using the token is closed at once.
    let session = relay.browser().await.unwrap();
    let (_send, mut recv) = open_with(&session, &events_header(&token)).await;
    assert!(matches!(
        next(&mut recv).await.body,
        Body::DeviceStatus { .. }
    ));
    let (status, _) = relay
        .post(
            "/api/auth/logout",
            json!({"refresh_token": refresh, "everywhere": true}),
        )
        .await;
    assert_eq!(status, 204);
    closed_within(&session, Duration::from_secs(3), "signed out everywhere").await;
    // The token no longer opens streams or calls the API, though it has not expired.
    let fresh = relay.browser().await.unwrap();
    let (_send, mut recv) = open_with(&fresh, &events_header(&token)).await;
    let (code, message) = error_of(&next(&mut recv).await);
    assert_eq!(code, ErrorCode::Unauthenticated);
    assert!(message.contains("revoked"), "{message}");
    let status = relay
        .http
        .get(relay.url("/api/devices"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 401);

    // Signing in again (even within the same second) gives a token that works.
    let (status, login) = relay
        .post(
            "/api/auth/login",
            json!({"email": "kim@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 200);
    let token = login["token"].as_str().unwrap().to_owned();
    let used_refresh = login["refresh_token"].as_str().unwrap().to_owned();
    let (_send, mut recv) = open_with(&fresh, &events_header(&token)).await;
    assert!(matches!(
        next(&mut recv).await.body,
        Body::DeviceStatus { .. }
    ));

    // 2. A refresh token presented twice: every session of the user is closed.
    let (status, _) = relay
        .post("/api/auth/refresh", json!({"refresh_token": used_refresh}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = relay
        .post("/api/auth/refresh", json!({"refresh_token": used_refresh}))
        .await;
    assert_eq!(status, 401);
    closed_within(&fresh, Duration::from_secs(3), "refresh token reused").await;

    // 3. Disabled by the operator (the CLI writes the database; this node is not told):
    // the sweep closes the session within seconds.
    let (status, login) = relay
        .post(
            "/api/auth/login",
            json!({"email": "kim@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 200);
    let token = login["token"].as_str().unwrap().to_owned();
    let session = relay.browser().await.unwrap();
    let (_send, mut recv) = open_with(&session, &events_header(&token)).await;
    assert!(matches!(
        next(&mut recv).await.body,
        Body::DeviceStatus { .. }
    ));
    let other_store = aisa_relay::store::Store::open(&relay.handle().state.config.database_url())
        .await
        .unwrap();
    assert!(
        other_store
            .set_user_disabled("kim@example.com", true)
            .await
            .unwrap()
    );
    closed_within(&session, Duration::from_secs(5), "account disabled").await;
    // Enabling the account again does not bring that token back.
    assert!(
        other_store
            .set_user_disabled("kim@example.com", false)
            .await
            .unwrap()
    );
    let session = relay.browser().await.unwrap();
    let (_send, mut recv) = open_with(&session, &events_header(&token)).await;
    assert_eq!(
        error_of(&next(&mut recv).await).0,
        ErrorCode::Unauthenticated
    );

    // 4. Deleted by the operator: the sweep closes the session too.
    let (status, login) = relay
        .post(
            "/api/auth/login",
            json!({"email": "kim@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 200);
    let token = login["token"].as_str().unwrap().to_owned();
    let session = relay.browser().await.unwrap();
    let (_send, mut recv) = open_with(&session, &events_header(&token)).await;
    assert!(matches!(
        next(&mut recv).await.body,
        Body::DeviceStatus { .. }
    ));
    assert!(other_store.delete_user("kim@example.com").await.unwrap());
    closed_within(&session, Duration::from_secs(5), "account deleted").await;
    relay.stop().await;
}

// ---------------------------------------------------------------------------------------
// The hot path reads no database. The facts a stream's authorization needs are
// cached in memory and the day's actions are counted there; every change made through
// this relay is seen by the very next stream.
// ---------------------------------------------------------------------------------------

fn action_header(device_id: &str, token: &str) -> OpenHeader {
    OpenHeader {
        device_id: device_id.to_owned(),
        kind: StreamKind::Action,
        token: token.to_owned(),
        e2e: None,
    }
}

/// Opens an Action stream and returns its first answer: `Ok(())` for the desktop's
/// STREAM_END, or the relay's refusal.
async fn act(
    session: &wtransport::Connection,
    header: &OpenHeader,
) -> Result<(), (ErrorCode, String)> {
    let (_send, mut recv) = open_with(session, header).await;
    let reply = next(&mut recv).await;
    match reply.body {
        Body::StreamEnd { .. } => Ok(()),
        _ => Err(error_of(&reply)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_is_refused_on_the_very_next_stream() {
    let relay = Relay::start().await;
    let reply = relay.user("rev@example.com").await;
    let token = reply["token"].as_str().unwrap().to_owned();
    let user_id = reply["user_id"].as_str().unwrap().to_owned();
    let (device_id, device_token) = relay.device("rev@example.com").await;
    let _desktop = answering_desktop(&relay, &device_token).await;
    let session = relay.browser().await.unwrap();
    let header = action_header(&device_id, &token);
    act(&session, &header).await.expect("allowed");
    act(&session, &header).await.expect("allowed");
    let facts = relay.handle().state.store.facts();
    assert!(facts.user(&user_id).is_some(), "the user is in memory");
    assert!(
        facts.device(&device_id).is_some(),
        "the device is in memory"
    );

    // Renamed: the next refusal names the new name (the cached record was dropped).
    let status = relay
        .http
        .patch(relay.url(&format!("/api/devices/{device_id}")))
        .bearer_auth(&token)
        .json(&json!({"name": "renamed"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 204);
    assert!(facts.device(&device_id).is_none());
    act(&session, &header).await.expect("still allowed");
    assert_eq!(facts.device(&device_id).unwrap().name, "renamed");

    let status = relay
        .http
        .delete(relay.url(&format!("/api/devices/{device_id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 204);
    let (code, _) = act(&session, &header).await.expect_err("revoked");
    assert_eq!(code, ErrorCode::UnknownDevice);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_user_and_a_changed_plan_apply_on_the_very_next_stream() {
    // No sweep during the test: only the cache's invalidation can make it pass.
    let relay = Relay::start_with(|c| c.revocation_check_secs = 3600).await;
    let reply = relay.user("dis@example.com").await;
    let token = reply["token"].as_str().unwrap().to_owned();
    let (device_id, device_token) = relay.device("dis@example.com").await;
    let _desktop = answering_desktop(&relay, &device_token).await;
    let session = relay.browser().await.unwrap();
    let header = action_header(&device_id, &token);
    act(&session, &header).await.expect("allowed");

    // The plan changes under a user whose plan is cached: the new limit applies at once.
    let store = &relay.handle().state.store;
    store
        .upsert_plan(&aisa_relay::store::Plan {
            id: "two".into(),
            name: "Two".into(),
            max_devices: 3,
            max_concurrent_streams: 8,
            max_actions_per_day: 2,
        })
        .await
        .unwrap();
    assert!(store.set_user_plan("dis@example.com", "two").await.unwrap());
    act(&session, &header)
        .await
        .expect("the second action of two");
    let (code, message) = act(&session, &header).await.expect_err("over the new plan");
    assert_eq!(code, ErrorCode::LimitExceeded);
    assert!(message.contains("2 actions per day"), "{message}");
    // The plan's limits change: at once too.
    store
        .upsert_plan(&aisa_relay::store::Plan {
            id: "two".into(),
            name: "Two".into(),
            max_devices: 3,
            max_concurrent_streams: 8,
            max_actions_per_day: 3,
        })
        .await
        .unwrap();
    act(&session, &header).await.expect("the raised limit");

    // Disabled: the very next stream on the same, still open, session is refused.
    assert!(
        store
            .set_user_disabled("dis@example.com", true)
            .await
            .unwrap()
    );
    let (code, message) = act(&session, &header).await.expect_err("disabled");
    assert_eq!(code, ErrorCode::Unauthenticated);
    assert!(message.contains("disabled"), "{message}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signed_out_everywhere_is_refused_on_the_very_next_stream() {
    let relay = Relay::start_with(|c| c.revocation_check_secs = 3600).await;
    let reply = relay.user("out@example.com").await;
    let token = reply["token"].as_str().unwrap().to_owned();
    let refresh = reply["refresh_token"].as_str().unwrap().to_owned();
    let (device_id, device_token) = relay.device("out@example.com").await;
    let _desktop = answering_desktop(&relay, &device_token).await;
    let header = action_header(&device_id, &token);
    // Two sessions have verified (and cached) the token.
    let first = relay.browser().await.unwrap();
    let second = relay.browser().await.unwrap();
    act(&first, &header).await.expect("allowed");
    act(&second, &header).await.expect("allowed");
    let (status, _) = relay
        .post(
            "/api/auth/logout",
            json!({"refresh_token": refresh, "everywhere": true}),
        )
        .await;
    assert_eq!(status, 204);
    closed_within(&first, Duration::from_secs(3), "signed out everywhere").await;
    closed_within(&second, Duration::from_secs(3), "signed out everywhere").await;
    let fresh = relay.browser().await.unwrap();
    let (code, message) = act(&fresh, &header).await.expect_err("revoked");
    assert_eq!(code, ErrorCode::Unauthenticated);
    assert!(message.contains("revoked"), "{message}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counted_actions_reach_the_store_in_batches_and_at_shutdown() {
    let relay = Relay::start_with(|c| c.action_flush_ms = 200).await;
    let reply = relay.user("cnt@example.com").await;
    let token = reply["token"].as_str().unwrap().to_owned();
    let user_id = reply["user_id"].as_str().unwrap().to_owned();
    let (device_id, device_token) = relay.device("cnt@example.com").await;
    let _desktop = answering_desktop(&relay, &device_token).await;
    let session = relay.browser().await.unwrap();
    let header = action_header(&device_id, &token);
    let store = relay.handle().state.store.clone();
    let today = aisa_relay::auth::today_utc();
    for _ in 0..3 {
        act(&session, &header).await.expect("allowed");
    }
    // The background flush writes them within about a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.actions_on(&user_id, &today).await.unwrap() < 3 {
        assert!(
            Instant::now() < deadline,
            "the counted actions were never written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.actions_on(&user_id, &today).await.unwrap(), 3);
    relay.stop().await;

    // A relay whose periodic flush never comes in time: stopping writes the count.
    let relay = Relay::start_with(|c| c.action_flush_ms = 3_600_000).await;
    let reply = relay.user("stop@example.com").await;
    let token = reply["token"].as_str().unwrap().to_owned();
    let user_id = reply["user_id"].as_str().unwrap().to_owned();
    let (device_id, device_token) = relay.device("stop@example.com").await;
    let _desktop = answering_desktop(&relay, &device_token).await;
    let session = relay.browser().await.unwrap();
    let header = action_header(&device_id, &token);
    let store = relay.handle().state.store.clone();
    act(&session, &header).await.expect("allowed");
    act(&session, &header).await.expect("allowed");
    assert_eq!(
        store.actions_on(&user_id, &today).await.unwrap(),
        0,
        "not yet written"
    );
    drop(session);
    relay.stop().await;
    assert_eq!(store.actions_on(&user_id, &today).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desktop_that_stops_its_heartbeats_is_closed_and_goes_offline() {
    let relay = Relay::start_with(|c| c.heartbeat_secs = 1).await;
    relay.user("silent@example.com").await;
    let (device_id, device_token) = relay.device("silent@example.com").await;
    let hello = Hello {
        device_token,
        node_version: "0.1.0".into(),
        identity_key: vec![1; 32],
    };
    // A desktop that says HELLO and then nothing: its QUIC connection stays alive (the
    // test's endpoint answers ACKs), but it never PINGs.
    let (desktop, reply) = say_hello(&relay, &hello.encode()).await;
    assert!(matches!(reply.body, Body::Welcome { .. }), "{reply:?}");
    let registry = &relay.handle().state.devices.registry;
    assert!(registry.get(&device_id).is_some());
    let closed = tokio::time::timeout(WAIT, desktop.conn.closed())
        .await
        .expect("the relay closes a silent desktop after three heartbeat intervals");
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, aisa_relay::desktop::CLOSE_SILENT.into());
            let reason = String::from_utf8_lossy(&close.reason);
            assert!(reason.contains("no heartbeat for 3 intervals"), "{reason}");
        }
        other => panic!("expected an application close, got {other:?}"),
    }
    // The relay marks it offline as its connection task ends.
    tokio::time::timeout(WAIT, async {
        while registry.get(&device_id).is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the device goes offline");
    relay.stop().await;
}
