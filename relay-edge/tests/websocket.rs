//! The browser's WebSocket leg (`/tunnel/browser`, tunnel's mux over one WebSocket) end
//! to end: a real relay and desktop node on loopback, a browser-role client speaking the
//! mux over a real WebSocket (tokio-tungstenite). An action streams as on WebTransport;
//! every refusal is the same ERROR as on WebTransport; a stream whose reader stalls
//! holds back only itself; a malformed mux frame closes the connection with a GOAWAY
//! that says what was wrong.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use aisa_testkit::system::{System, WAIT, chunks_text, error_of, execute, kind_for, run_action};
use aisa_testkit::ws_browser::{run_ws, websocket, ws_session};
use aisa_tunnel::mux::{self, Frame};
use aisa_tunnel::proto::{ClientEvent, ClientRequest, Refusal};
use aisa_tunnel::{Body, Envelope, ErrorCode, OpenHeader};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_streams_over_the_websocket_as_over_webtransport() {
    let system = System::start().await;
    let session = ws_session(system.relay().http_addr).await;
    let request = execute("hello-ai", "write", serde_json::json!({ "topic": "QUIC" }));
    let over_ws = run_ws(&session, &system.header(&system.device_id), request.clone()).await;
    let over_wt = run_action(&system, &system.device_id, request).await;
    let expected = aisa_testkit::provider::reply_tokens("Write a short paragraph about QUIC.");
    let chunks: Vec<&str> = over_ws
        .iter()
        .filter_map(|e| match &e.body {
            Body::StreamChunk { data, .. } => Some(data.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(chunks, expected, "one chunk per provider token, in order");
    assert!(
        matches!(
            over_ws.last().map(|e| &e.body),
            Some(Body::StreamEnd { .. })
        ),
        "{over_ws:?}"
    );
    assert_eq!(chunks_text(&over_ws), chunks_text(&over_wt));

    // Several streams on the one WebSocket, at once.
    let header = system.header(&system.device_id);
    let runs = (0..6).map(|i| {
        let (session, header) = (session.clone(), header.clone());
        tokio::spawn(async move {
            let text = format!("stream {i} says hi");
            let reply = run_ws(
                &session,
                &header,
                execute("hello-ai", "echo", serde_json::json!({ "text": text })),
            )
            .await;
            (text, chunks_text(&reply))
        })
    });
    for run in runs {
        let (sent, got) = run.await.unwrap();
        assert_eq!(sent, got);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_the_same_errors_as_on_webtransport() {
    let system = System::start().await;
    let session = ws_session(system.relay().http_addr).await;
    let echo = || execute("hello-ai", "echo", serde_json::json!({ "text": "hi" }));
    let mut cases: Vec<(&str, OpenHeader, Envelope)> = Vec::new();
    cases.push(("unknown device", system.header("no-such-device"), echo()));
    cases.push((
        "offline device",
        system.header(&system.offline_device_id),
        echo(),
    ));
    let mut forged = system.header(&system.device_id);
    forged.token = format!("{}x", system.token);
    cases.push(("forged token", forged, echo()));
    let mut empty = system.header(&system.device_id);
    empty.token = String::new();
    cases.push(("no token", empty, echo()));
    cases.push((
        "unknown app",
        system.header(&system.device_id),
        execute("nope", "x", serde_json::json!({})),
    ));
    for (what, header, request) in cases {
        let ws = error_of(&run_ws(&session, &header, request.clone()).await);
        let wt_session = system.browser().await;
        let (mut send, mut recv) = wt_session.open_bi().await.unwrap().await.unwrap();
        let mut h = header.clone();
        h.kind = kind_for(&request.body);
        let mut machine = ClientRequest::new(&h, &request);
        let _ = send.write_all(&machine.poll_transmit().unwrap()).await;
        let mut wt = None;
        let mut buf = vec![0u8; 65536];
        while wt.is_none() {
            let events = match tokio::time::timeout(WAIT, recv.read(&mut buf))
                .await
                .unwrap()
            {
                Ok(Some(n)) => machine.receive(&buf[..n]),
                _ => machine.finish().into_iter().collect(),
            };
            for event in events {
                if let ClientEvent::Done(Err(Refusal::Remote { code, message })) = event {
                    wt = Some((ErrorCode::parse(&code), message));
                }
            }
        }
        assert_eq!(
            Some(ws.clone()),
            wt,
            "{what}: WebSocket and WebTransport refuse alike"
        );
        assert_ne!(ws.0, ErrorCode::Internal, "{what}: {}", ws.1);
    }
    // The refusals did not hurt the session: it still runs actions.
    let reply = run_ws(&session, &system.header(&system.device_id), echo()).await;
    assert_eq!(chunks_text(&reply), "hi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_reader_stalls_does_not_block_another() {
    // Room for an answer bigger than a stream's window.
    let system = System::start_with(aisa_node::sandbox::Limits {
        output_bytes: 4 << 20,
        ..Default::default()
    })
    .await;
    let session = ws_session(system.relay().http_addr).await;
    // About 400 KiB of answer, more than a stream's window (256 KiB): never read, its
    // splice must wait for credit while the other stream on the same WebSocket flows.
    let word = "x".repeat(10_000) + " ";
    let big = word.repeat(40);
    let header = system.header(&system.device_id);
    let request = execute("hello-ai", "echo", serde_json::json!({ "text": big }));
    let mut h = header.clone();
    h.kind = kind_for(&request.body);
    let mut machine = ClientRequest::new(&h, &request);
    let (mut stalled_send, mut stalled_recv) = session.open_bi().unwrap();
    stalled_send
        .write_all(&machine.poll_transmit().unwrap())
        .await
        .unwrap();
    // Wait until the big answer has started arriving (the window is then filling).
    let first = tokio::time::timeout(WAIT, stalled_recv.read_chunk(1))
        .await
        .unwrap()
        .unwrap();
    assert!(first.is_some());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = std::time::Instant::now();
    let reply = run_ws(
        &session,
        &header,
        execute(
            "hello-ai",
            "echo",
            serde_json::json!({ "text": "unaffected" }),
        ),
    )
    .await;
    assert_eq!(chunks_text(&reply), "unaffected");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );

    // The stalled stream resumes once read, intact.
    let mut bytes = first.unwrap().to_vec();
    while let Some(chunk) = tokio::time::timeout(WAIT, stalled_recv.read_chunk(1 << 16))
        .await
        .unwrap()
        .unwrap()
    {
        bytes.extend_from_slice(&chunk);
    }
    let mut events = machine.receive(&bytes);
    events.extend(machine.finish());
    let mut text = String::new();
    let mut ended = false;
    for event in events {
        match event {
            ClientEvent::Message(Envelope {
                body: Body::StreamChunk { data, .. },
                ..
            }) => text.push_str(&data),
            ClientEvent::Done(Ok(_)) => ended = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(ended);
    assert_eq!(text, big);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_mux_frame_is_answered_with_a_goaway_saying_why() {
    let system = System::start().await;
    let mut ws = websocket(system.relay().http_addr).await;
    // Type 0x0a does not exist.
    ws.send(Message::Binary(vec![0x0a, 0, 0, 0, 1, 0, 0, 0, 0].into()))
        .await
        .unwrap();
    let goaway = loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Binary(b))) => break Frame::decode_message(b).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("expected a GOAWAY, got {other:?}"),
        }
    };
    let Frame::GoAway { code, reason } = goaway else {
        panic!("{goaway:?}")
    };
    assert_eq!(code, mux::code::PROTOCOL_ERROR);
    assert!(reason.contains("unknown mux frame type 0x0a"), "{reason}");
    // Then the relay closes the WebSocket.
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                None | Some(Ok(Message::Close(_))) | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the relay closed the WebSocket");

    // A text message, and a message holding two frames, are refused the same way.
    for (message, says) in [
        (Message::Text("hello".into()), "text"),
        (
            Message::Binary(
                [
                    Frame::Open { id: 1 }.to_bytes(),
                    Frame::Open { id: 3 }.to_bytes(),
                ]
                .concat()
                .into(),
            ),
            "after its frame",
        ),
    ] {
        let mut ws = websocket(system.relay().http_addr).await;
        ws.send(message).await.unwrap();
        let goaway = loop {
            match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
                Some(Ok(Message::Binary(b))) => break Frame::decode_message(b).unwrap(),
                Some(Ok(_)) => continue,
                other => panic!("expected a GOAWAY, got {other:?}"),
            }
        };
        let Frame::GoAway { code, reason } = goaway else {
            panic!("{goaway:?}")
        };
        assert_eq!(code, mux::code::PROTOCOL_ERROR);
        assert!(reason.contains(says), "{reason}");
    }
}
