//! Relay-to-relay forwarding on loopback: real relays (each with its own QUIC, HTTP and
//! forward endpoints), a real desktop node running the example mini-app, and the
//! forward connection between the relays, with mutual TLS from a cluster CA.
//!
//! The device's placement is given to the entry relay directly here (the device map in
//! Redis is the cluster's part; the browser-to-browser path through it is in the cluster
//! system test): these tests are about the forward hop itself, its refusals, its TLS and
//! what happens to forwarded streams when a peer dies or the network between relays
//! drops everything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aisa_node::node::{self, RelayTarget};
use aisa_relay::RelayHandle;
use aisa_relay::cluster::forward::{ForwardError, ForwardHeader, ForwardRefusal};
use aisa_relay::cluster::peer::ClusterCa;
use aisa_testkit::system::{PASSWORD, WAIT, execute, relay_config};
use aisa_tunnel::io::{read_frame, write_frame};
use aisa_tunnel::{Body, Envelope, MAX_FRAME_LEN, RelayHeader, StreamKind};

#[path = "support/cluster.rs"]
mod cluster_support;

use cluster_support::{
    DesktopNode, FORWARD_SECRET as SECRET, Leg, Server, action_header, add_user, browser,
    desktop_node, echo, echo_until_ok, enrol, node_config, pem, relay_process, run_desktop,
    sign_in, write_cert,
};

/// A relay with forwarding on an ephemeral loopback port.
async fn relay(dir: &std::path::Path, name: &str, secret: &str, idle_ms: u64) -> RelayHandle {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = relay_config(dir, 0, None);
    config.cluster.node_name = Some(name.into());
    config.cluster.forward_listen = Some(([127, 0, 0, 1], 0).into());
    config.cluster.forward_secret = Some(secret.into());
    config.cluster.forward_idle_timeout_ms = Some(idle_ms);
    aisa_relay::start(config).await.expect("relay starts")
}

fn forward_addr(relay: &RelayHandle) -> SocketAddr {
    relay
        .state
        .forwarding
        .as_ref()
        .expect("forwarding on")
        .local_addr
}

/// Creates bob at `relay` and brings a desktop node of his online there, over QUIC.
async fn desktop(relay: &RelayHandle, dir: &std::path::Path) -> DesktopNode {
    add_user(relay, "bob@example.com").await;
    desktop_node(relay, "bob@example.com", dir, Leg::Quic).await
}

/// The forward header the entry relay writes for `desktop`, as located at `holder`.
fn forward_header(holder: &RelayHandle, desktop: &DesktopNode) -> ForwardHeader {
    let generation = holder
        .state
        .devices
        .registry
        .generation(&desktop.device_id)
        .expect("placed on the holder");
    ForwardHeader {
        device_id: desktop.device_id.clone(),
        generation,
        relay_header: RelayHeader {
            user_id: desktop.user_id.clone(),
            session_id: 1,
            kind: StreamKind::Action,
            e2e: None,
        }
        .encode(),
    }
}

/// Reads envelopes until STREAM_END or ERROR.
async fn reply(recv: &mut quinn::RecvStream) -> Vec<Envelope> {
    let mut out = Vec::new();
    loop {
        let body = tokio::time::timeout(WAIT, read_frame(recv, MAX_FRAME_LEN))
            .await
            .expect("reply in time")
            .expect("read")
            .expect("a frame before the end");
        let env = Envelope::decode(&body).unwrap();
        let last = matches!(env.body, Body::StreamEnd { .. } | Body::Error { .. });
        out.push(env);
        if last {
            return out;
        }
    }
}

fn text(reply: &[Envelope]) -> String {
    aisa_testkit::system::chunks_text(reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_runs_on_a_desktop_of_another_relay_over_one_pooled_connection() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = relay(da.path(), "node-a", SECRET, 10_000).await;
    let b = relay(db.path(), "node-b", SECRET, 10_000).await;
    let desk = desktop(&b, db.path()).await;
    let forwarding = a.state.forwarding.as_ref().unwrap();
    for round in 0..3 {
        let (mut send, mut recv) = forwarding
            .open(forward_addr(&b), &forward_header(&b, &desk))
            .await
            .expect("the holder accepts");
        let words = format!("hello over two relays, round {round}");
        let request = execute("hello-ai", "echo", serde_json::json!({ "text": words }));
        write_frame(&mut send, &request.encode(), MAX_FRAME_LEN)
            .await
            .unwrap();
        send.finish().unwrap();
        let reply = reply(&mut recv).await;
        assert!(
            matches!(reply.last().unwrap().body, Body::StreamEnd { .. }),
            "{reply:?}"
        );
        assert_eq!(text(&reply), words);
    }
    // Every stream went over one connection to the peer; the holder spliced them.
    assert_eq!(forwarding.peers.connected(), 1);
    assert!(
        b.state
            .traffic
            .bytes_spliced
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    let _ = desk.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_refuses_a_stale_generation_an_absent_device_and_a_stranger() {
    let (da, db, dc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = relay(da.path(), "node-a", SECRET, 10_000).await;
    let b = relay(db.path(), "node-b", SECRET, 10_000).await;
    let desk = desktop(&b, db.path()).await;
    let forwarding = a.state.forwarding.as_ref().unwrap();

    // The device reconnected since it was located: a later generation is there now.
    let mut stale = forward_header(&b, &desk);
    stale.generation -= 1;
    let err = forwarding.open(forward_addr(&b), &stale).await.unwrap_err();
    assert!(
        matches!(
            err,
            ForwardError::Refused {
                refusal: ForwardRefusal::Generation,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.code(), aisa_tunnel::ErrorCode::DeviceOffline);

    // The browser's path is pipelined (the request flows before the reply): the same
    // refusal reaches the browser as one ERROR frame, then the clean end.
    let placement = aisa_relay::cluster::Placement {
        node: aisa_relay::cluster::NodeName::new("node-b").unwrap(),
        forward_addr: forward_addr(&b),
        generation: stale.generation,
    };
    let relay_header = RelayHeader {
        user_id: desk.user_id.clone(),
        session_id: 1,
        kind: StreamKind::Action,
        e2e: None,
    };
    let (_send, mut recv) =
        aisa_relay::cluster::forward::open_to(&a.state, &desk.device_id, &placement, &relay_header)
            .await
            .expect("written without waiting for the reply");
    use aisa_relay::splice::SpliceRecv;
    let chunk = recv
        .read_chunk(1 << 16)
        .await
        .unwrap()
        .expect("the ERROR frame");
    let mut frames = aisa_tunnel::FrameBuffer::new(MAX_FRAME_LEN);
    frames.push(&chunk);
    let error = Envelope::decode(&frames.next_frame().unwrap().expect("one whole frame")).unwrap();
    match error.body {
        Body::Error { code, message } => {
            assert_eq!(
                aisa_tunnel::ErrorCode::parse(&code),
                aisa_tunnel::ErrorCode::DeviceOffline
            );
            assert!(message.contains("reconnected"), "{message}");
        }
        other => panic!("expected an ERROR, got {other:?}"),
    }
    assert_eq!(
        recv.read_chunk(1 << 16).await,
        Ok(None),
        "then the clean end"
    );

    // Not on that node at all.
    let mut absent = forward_header(&b, &desk);
    absent.device_id = "no-such-device".into();
    let err = forwarding
        .open(forward_addr(&b), &absent)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ForwardError::Refused {
                refusal: ForwardRefusal::DeviceGone,
                ..
            }
        ),
        "{err:?}"
    );

    // A relay of another cluster (another CA): the handshake fails both ways.
    let stranger = relay(
        dc.path(),
        "node-x",
        "another cluster's secret, also 32+ bytes long",
        10_000,
    )
    .await;
    let err = stranger
        .state
        .forwarding
        .as_ref()
        .unwrap()
        .open(forward_addr(&b), &forward_header(&b, &desk))
        .await
        .unwrap_err();
    assert!(matches!(err, ForwardError::Unreachable(_)), "{err:?}");
    // And the right one still works after all that.
    let (mut send, mut recv) = forwarding
        .open(forward_addr(&b), &forward_header(&b, &desk))
        .await
        .expect("accepted");
    let request = execute(
        "hello-ai",
        "echo",
        serde_json::json!({ "text": "still fine" }),
    );
    write_frame(&mut send, &request.encode(), MAX_FRAME_LEN)
        .await
        .unwrap();
    assert_eq!(text(&reply(&mut recv).await), "still fine");
    let _ = desk.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_files_from_the_operator_work_and_a_cert_of_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::generate().unwrap();
    let other = ClusterCa::generate().unwrap();
    let write = |name: &str, ca: &ClusterCa, node: &str| {
        let tls = ca.issue(node).unwrap();
        let base = dir.path().join(name);
        std::fs::create_dir_all(&base).unwrap();
        std::fs::write(base.join("ca.pem"), ca.cert_pem()).unwrap();
        std::fs::write(base.join("cert.pem"), pem("CERTIFICATE", &tls.chain[0])).unwrap();
        std::fs::write(
            base.join("key.pem"),
            pem("PRIVATE KEY", tls.key.secret_der()),
        )
        .unwrap();
        base
    };
    let start = |base: std::path::PathBuf, node: &'static str| async move {
        let mut config = relay_config(&base, 0, None);
        config.cluster.node_name = Some(node.into());
        config.cluster.forward_listen = Some(([127, 0, 0, 1], 0).into());
        config.cluster.forward_ca = Some(base.join("ca.pem"));
        config.cluster.forward_cert = Some(base.join("cert.pem"));
        config.cluster.forward_key = Some(base.join("key.pem"));
        aisa_relay::start(config).await.expect("relay starts")
    };
    let a = start(write("a", &ca, "node-a"), "node-a").await;
    let b = start(write("b", &ca, "node-b"), "node-b").await;
    // Node x trusts the cluster CA but its own certificate is from another CA.
    let x_dir = write("x", &other, "node-x");
    std::fs::write(x_dir.join("ca.pem"), ca.cert_pem()).unwrap();
    let x = start(x_dir, "node-x").await;
    let desk = desktop(&b, dir.path()).await;
    let (mut send, mut recv) = a
        .state
        .forwarding
        .as_ref()
        .unwrap()
        .open(forward_addr(&b), &forward_header(&b, &desk))
        .await
        .expect("accepted");
    let request = execute("hello-ai", "echo", serde_json::json!({ "text": "files" }));
    write_frame(&mut send, &request.encode(), MAX_FRAME_LEN)
        .await
        .unwrap();
    assert_eq!(text(&reply(&mut recv).await), "files");
    let err = x
        .state
        .forwarding
        .as_ref()
        .unwrap()
        .open(forward_addr(&b), &forward_header(&b, &desk))
        .await
        .unwrap_err();
    assert!(matches!(err, ForwardError::Unreachable(_)), "{err:?}");
    // Half a configuration is refused at start, naming what is missing.
    let mut config = relay_config(&dir.path().join("half"), 0, None);
    config.cluster.forward_listen = Some(([127, 0, 0, 1], 0).into());
    config.cluster.forward_ca = Some(dir.path().join("a/ca.pem"));
    let err = aisa_relay::start(config).await.err().expect("refused");
    assert!(err.to_string().contains("forward_cert"), "{err}");
    let _ = desk.stop.send(true);
}

/// A UDP relay between two forward endpoints that can be told to drop everything (a
/// partition between relays).
struct Partition {
    addr: SocketAddr,
    drop: Arc<AtomicBool>,
}

async fn partition_to(target: SocketAddr) -> Partition {
    let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(target).await.unwrap();
    let drop = Arc::new(AtomicBool::new(false));
    let client: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
    let addr = front.local_addr().unwrap();
    {
        let (front, back, drop, client) =
            (front.clone(), back.clone(), drop.clone(), client.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().unwrap() = Some(from);
                if !drop.load(Ordering::Relaxed) {
                    let _ = back.send(&buf[..n]).await;
                }
            }
        });
    }
    let cut = drop.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = back.recv(&mut buf).await {
            let to = *client.lock().unwrap();
            if let Some(to) = to
                && !drop.load(Ordering::Relaxed)
            {
                let _ = front.send_to(&buf[..n], to).await;
            }
        }
    });
    Partition { addr, drop: cut }
}

/// Starts a slow action (a chunk every 200 ms) through `forwarding` and returns its
/// stream once the first chunk arrived.
async fn slow_action(
    forwarding: &aisa_relay::cluster::forward::Forwarding,
    to: SocketAddr,
    header: &ForwardHeader,
) -> (quinn::SendStream, quinn::RecvStream) {
    let (mut send, mut recv) = forwarding.open(to, header).await.expect("accepted");
    let request = execute(
        "hello-ai",
        "write",
        serde_json::json!({ "topic": "[slow] a long story" }),
    );
    write_frame(&mut send, &request.encode(), MAX_FRAME_LEN)
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, read_frame(&mut recv, MAX_FRAME_LEN))
        .await
        .expect("first chunk in time")
        .unwrap()
        .expect("a frame");
    assert!(matches!(
        Envelope::decode(&first).unwrap().body,
        Body::StreamChunk { .. }
    ));
    (send, recv)
}

/// Reads until the stream ends; returns whether it ended with an error (a reset, a lost
/// connection) rather than a clean finish, and when.
async fn read_to_end(recv: &mut quinn::RecvStream) -> (bool, Instant) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match recv.read(&mut buf).await {
            Ok(Some(_)) => continue,
            Ok(None) => return (false, Instant::now()),
            Err(_) => return (true, Instant::now()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_between_relays_ends_forwarded_streams_on_both_sides() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let idle = 1_500;
    let a = relay(da.path(), "node-a", SECRET, idle).await;
    let b = relay(db.path(), "node-b", SECRET, idle).await;
    let desk = desktop(&b, db.path()).await;
    let cut = partition_to(forward_addr(&b)).await;
    let forwarding = a.state.forwarding.as_ref().unwrap();
    let (_send, mut recv) = slow_action(forwarding, cut.addr, &forward_header(&b, &desk)).await;
    assert_eq!(
        b.state.traffic.open_streams.load(Ordering::Relaxed),
        1,
        "the holder splices the forwarded stream"
    );
    cut.drop.store(true, Ordering::Relaxed);
    let dropped_at = Instant::now();
    // The entry side: the connection is declared lost after the idle timeout, and the
    // stream fails (the browser's stream would be reset with PEER_GONE by the splice).
    let (failed, at) = tokio::time::timeout(WAIT, read_to_end(&mut recv))
        .await
        .expect("the entry side's stream ends: nothing hangs");
    assert!(failed, "a partition is an error, not a clean end");
    let took = at - dropped_at;
    assert!(
        took < Duration::from_millis(idle * 3),
        "ended {took:?} after the partition"
    );
    // The holding side: its splice ends too (the desktop's stream is reset, the action
    // cancelled), and nothing stays open.
    tokio::time::timeout(WAIT, async {
        while b.state.traffic.open_streams.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the holder's splice ends");
    // Healed: the next stream dials a new connection and works.
    cut.drop.store(false, Ordering::Relaxed);
    let (mut send, mut recv) = forwarding
        .open(cut.addr, &forward_header(&b, &desk))
        .await
        .expect("a new connection after the partition");
    let request = execute("hello-ai", "echo", serde_json::json!({ "text": "healed" }));
    write_frame(&mut send, &request.encode(), MAX_FRAME_LEN)
        .await
        .unwrap();
    assert_eq!(text(&reply(&mut recv).await), "healed");
    let _ = desk.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_stops_ends_forwarded_streams_at_once_and_is_redialed() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = relay(da.path(), "node-a", SECRET, 10_000).await;
    let b = relay(db.path(), "node-b", SECRET, 10_000).await;
    let mut desk = desktop(&b, db.path()).await;
    let forwarding = a.state.forwarding.as_ref().unwrap();
    let to = forward_addr(&b);
    let (_send, mut recv) = slow_action(forwarding, to, &forward_header(&b, &desk)).await;
    let stopped_at = Instant::now();
    b.shutdown(Duration::ZERO).await;
    let (failed, at) = tokio::time::timeout(WAIT, read_to_end(&mut recv))
        .await
        .expect("the forwarded stream ends: nothing hangs");
    assert!(failed, "the holder going away is an error, not a clean end");
    assert!(
        at - stopped_at < Duration::from_secs(3),
        "{:?}",
        at - stopped_at
    );
    tokio::time::timeout(WAIT, desk.online.wait_for(|o| !*o))
        .await
        .expect("the desktop noticed")
        .unwrap();
    // The next stream to that address is refused promptly: nothing listens there.
    let err = forwarding
        .open(
            to,
            &ForwardHeader {
                device_id: desk.device_id.clone(),
                generation: 1,
                relay_header: vec![1, 1, 0],
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ForwardError::Unreachable(_)), "{err:?}");
    assert_eq!(err.code(), aisa_tunnel::ErrorCode::PeerGone);
    // Many streams for the dead peer at once: one dial is waited out, not one each.
    tokio::time::sleep(aisa_relay::cluster::peer::FAILED_DIAL_MEMORY).await;
    let started = Instant::now();
    let header = ForwardHeader {
        device_id: desk.device_id.clone(),
        generation: 1,
        relay_header: vec![1, 1, 0],
    };
    let attempts = (0..8).map(|_| forwarding.open(to, &header));
    for result in futures_util::future::join_all(attempts).await {
        assert!(matches!(result, Err(ForwardError::Unreachable(_))));
    }
    assert!(
        started.elapsed() < aisa_relay::cluster::peer::CONNECT_TIMEOUT + Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let _ = desk.stop.send(true);
}

// ---------------------------------------------------------------------------------------
// The cluster system test: three relay processes, Redis, a shared database.

/// A UDP load balancer in front of the relays' QUIC ports: it sends everything to one
/// backend, which the test moves (as a health-checking L4 balancer moves traffic off a
/// dead node).
struct Balancer {
    addr: SocketAddr,
    backend: Arc<std::sync::Mutex<SocketAddr>>,
}

async fn balancer(backend: SocketAddr) -> Balancer {
    let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = front.local_addr().unwrap();
    let target = Arc::new(std::sync::Mutex::new(backend));
    let client: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
    {
        let (front, back, target, client) =
            (front.clone(), back.clone(), target.clone(), client.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().unwrap() = Some(from);
                let to = *target.lock().unwrap();
                let _ = back.send_to(&buf[..n], to).await;
            }
        });
    }
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, _)) = back.recv_from(&mut buf).await {
            let to = *client.lock().unwrap();
            if let Some(to) = to {
                let _ = front.send_to(&buf[..n], to).await;
            }
        }
    });
    Balancer {
        addr,
        backend: target,
    }
}

/// Starts a slow streaming action on `session` and reads its first chunk: its stream's
/// halves, the answer still coming.
async fn slow_action_streaming(
    session: &wtransport::Connection,
    header: &aisa_tunnel::OpenHeader,
) -> (wtransport::SendStream, wtransport::RecvStream) {
    let slow = execute(
        "hello-ai",
        "write",
        serde_json::json!({ "topic": "[slow] a long story" }),
    );
    let (send, mut recv) =
        aisa_testkit::system::open(session, &[header.encode(), slow.encode()]).await;
    let first = tokio::time::timeout(WAIT, read_frame(&mut recv, MAX_FRAME_LEN))
        .await
        .expect("first chunk in time")
        .unwrap()
        .expect("a frame");
    assert!(matches!(
        Envelope::decode(&first).unwrap().body,
        Body::StreamChunk { .. }
    ));
    (send, recv)
}

/// Reads a browser's stream whose answer was cut: every frame until the first ERROR
/// (chunks before it are skipped), then what follows. Returns the ERROR's code and
/// message, and whether the stream then ended cleanly (`false`: reset, or more frames).
/// Panics if the stream ends without an ERROR (a bare reset) or hangs.
async fn error_then_end(
    recv: &mut wtransport::RecvStream,
) -> ((aisa_tunnel::ErrorCode, String), bool) {
    tokio::time::timeout(WAIT, async {
        let error = loop {
            match read_frame(recv, MAX_FRAME_LEN).await {
                Ok(Some(body)) => match Envelope::decode(&body).unwrap().body {
                    Body::StreamChunk { .. } => continue,
                    Body::Error { code, message } => {
                        break (aisa_tunnel::ErrorCode::parse(&code), message);
                    }
                    other => panic!("neither a chunk nor an ERROR: {other:?}"),
                },
                Ok(None) => panic!("a clean end without an ERROR"),
                Err(err) => panic!("ended without an ERROR: {err}"),
            }
        };
        let ended = matches!(read_frame(recv, MAX_FRAME_LEN).await, Ok(None));
        (error, ended)
    })
    .await
    .expect("the cut stream ends: nothing hangs")
}

/// A free UDP port on loopback (for a forward endpoint whose address a test needs before
/// the relay starts).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_mid_answer_ends_the_browsers_stream_with_an_error_from_its_node() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let redis = Server::start(dir.path(), &[]);
    let redis_url = format!("redis://127.0.0.1:{}", redis.port);
    let db = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("relay.db").display()
    );
    let idle = 1_500;
    // Node b's forward endpoint is reached through a partition-able UDP relay: b
    // advertises the relay's address in the device map.
    let b_forward: SocketAddr = ([127, 0, 0, 1], free_udp_port()).into();
    let cut = partition_to(b_forward).await;
    let node = |name: &str, forward: SocketAddr, advertise: Option<SocketAddr>| {
        let mut config = node_config(&dir.path().join(name), name, &db, &redis_url);
        config.cluster.forward_listen = Some(forward);
        config.cluster.forward_advertise = advertise;
        config.cluster.forward_idle_timeout_ms = Some(idle);
        aisa_relay::start(config)
    };
    let a = node("node-a", ([127, 0, 0, 1], 0).into(), None)
        .await
        .expect("a starts");
    let b = node("node-b", b_forward, Some(cut.addr))
        .await
        .expect("b starts");
    let desk = desktop(&b, dir.path()).await;
    let token = sign_in(a.http_addr, "bob@example.com").await;
    let header = action_header(&desk.device_id, &token);
    let session = browser(a.quic_addr, a.cert_sha256()).await;
    echo_until_ok(&session, &header, "forwarded through the cut").await;

    // A slow action streams from b's desktop through a to the browser; the network
    // between the relays then drops everything.
    let (_send, mut recv) = slow_action_streaming(&session, &header).await;
    cut.drop.store(true, Ordering::Relaxed);
    let cut_at = Instant::now();
    let (error, ended) = error_then_end(&mut recv).await;
    let took = cut_at.elapsed();
    assert_eq!(error.0, aisa_tunnel::ErrorCode::PeerGone, "{}", error.1);
    assert!(error.1.contains("lost mid-answer"), "{}", error.1);
    assert!(ended, "a clean end after the ERROR, not a reset");
    // Bounded by the forward connection's idle timeout (plus the splice's stop grace).
    assert!(
        took < Duration::from_millis(idle * 3),
        "ended {took:?} after the partition"
    );
    // The holding node's side ends too (the desktop's stream is reset, the action
    // cancelled): nothing stays open on either node.
    tokio::time::timeout(WAIT, async {
        while b.state.traffic.open_streams.load(Ordering::Relaxed) > 0
            || a.state.traffic.open_streams.load(Ordering::Relaxed) > 0
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("both splices end");
    // Healed: the browser's next action goes through a new forward connection.
    cut.drop.store(false, Ordering::Relaxed);
    echo_until_ok(&session, &header, "after the partition").await;
    let _ = desk.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relay_processes_a_desktop_on_one_a_browser_on_another_then_a_node_dies() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut redis = Server::start(dir.path(), &[]);
    let database_url = match aisa_testkit::fakes::test_database().await {
        Some(url) => url,
        None => format!("sqlite://{}/shared.db?mode=rwc", dir.path().display()),
    };
    // One certificate for the three nodes' public port, as behind one balanced name.
    let cert_sha256 = write_cert(dir.path());
    {
        let store = aisa_relay::store::Store::open(&database_url).await.unwrap();
        let hash = aisa_relay::auth::hash_password(PASSWORD).unwrap();
        store.create_user("carol@example.com", &hash).await.unwrap();
    }
    let redis_url = format!("redis://127.0.0.1:{}", redis.port);
    let r1 = relay_process(dir.path(), "relay-1", &database_url, &redis_url, 1);
    let r2 = relay_process(dir.path(), "relay-2", &database_url, &redis_url, 1);
    let r3 = relay_process(dir.path(), "relay-3", &database_url, &redis_url, 1);

    let (device_id, device_token) = enrol(r1.http, "carol@example.com").await;
    let token = sign_in(r2.http, "carol@example.com").await;

    // The desktop reaches the relays through a balancer, which sends it to relay 1.
    let lb = balancer(r1.quic).await;
    let target = RelayTarget {
        quic_addr: lb.addr.to_string(),
        server_name: "localhost".into(),
        cert_sha256: Some(cert_sha256),
        pin_from: None,
        tcp_url: None,
        path: node::PathConfig::default(),
    };
    let desk = run_desktop(&device_id, &device_token, &dir.path().join("node"), target).await;

    // A browser on relay 2 runs actions on the desktop at relay 1: forwarded.
    let header = action_header(&device_id, &token);
    let session = browser(r2.quic, cert_sha256).await;
    echo_until_ok(&session, &header, "across the cluster").await;
    for i in 0..3 {
        let reply = echo(&session, &header, &format!("action {i}")).await;
        assert_eq!(
            aisa_testkit::system::chunks_text(&reply),
            format!("action {i}")
        );
    }

    // A slow action is streaming through relay 1 when it dies (SIGKILL); the balancer
    // moves the desktop's traffic to relay 3.
    let (_send, mut recv) = slow_action_streaming(&session, &header).await;
    *lb.backend.lock().unwrap() = r3.quic;
    let killed_at = Instant::now();
    drop(r1);
    // The browser's stream through the dead node ends with an ERROR from relay 2, the
    // browser's own node (peer_gone, saying the node holding the device was lost), and a
    // clean end, soon (the forward connection's idle timeout here is 1.5 s): not a bare
    // reset, and it does not hang.
    let (error, ended) = error_then_end(&mut recv).await;
    assert_eq!(error.0, aisa_tunnel::ErrorCode::PeerGone, "{}", error.1);
    assert!(error.1.contains("lost mid-answer"), "{}", error.1);
    assert!(ended, "a clean end after the ERROR");
    assert!(
        killed_at.elapsed() < Duration::from_secs(10),
        "{:?}",
        killed_at.elapsed()
    );

    // The desktop reconnects (to relay 3, through the balancer) and new actions from
    // relay 2 go there; until then they are refused with an ERROR, never hang.
    let errors = echo_until_ok(&session, &header, "after the failover").await;
    for code in &errors {
        assert!(
            matches!(
                code,
                aisa_tunnel::ErrorCode::DeviceOffline | aisa_tunnel::ErrorCode::PeerGone
            ),
            "{errors:?}"
        );
    }
    assert!(killed_at.elapsed() < WAIT, "{:?}", killed_at.elapsed());

    // Redis goes away: a cross-node action is refused with `unavailable` (relay 2 cannot
    // locate the device; not `peer_gone`: nothing went away), then works again once Redis
    // is back.
    redis.kill();
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = echo(&session, &header, "during the outage").await;
        if let Some(Body::Error { code, message }) = reply.last().map(|e| &e.body) {
            assert_eq!(
                aisa_tunnel::ErrorCode::parse(code),
                aisa_tunnel::ErrorCode::Unavailable,
                "{message}"
            );
            assert!(message.contains("shared state"), "{message}");
            break;
        }
        assert!(Instant::now() < deadline, "never refused during the outage");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    redis.spawn();
    echo_until_ok(&session, &header, "after the outage").await;
    let _ = desk.stop.send(true);
    drop((r2, r3));
}
