//! The node's action admission through a real relay: a full queue answers
//! `busy` at once, a queued action can be cancelled, and an action's time limit counts
//! from when the node received it, queue time included.

use std::time::{Duration, Instant};

use aisa_node::sandbox::Limits;
use aisa_node::scheduler::AdmissionConfig;
use aisa_testkit::system::{System, error_of, execute, open, read_reply};
use aisa_tunnel::io::write_frame;
use aisa_tunnel::{Body, Envelope, ErrorCode, MAX_FRAME_LEN};

/// One action runs, one waits; each browser may hold both.
fn one_and_one() -> AdmissionConfig {
    AdmissionConfig {
        max_running: 1,
        max_queued: 1,
        max_running_per_browser: 1,
        max_running_per_app: 1,
        max_queued_per_browser: 1,
    }
}

async fn system(limit: Duration) -> System {
    System::start_with_admission(
        Limits {
            timeout: limit,
            memory_bytes: 16 << 20,
            output_bytes: 256 << 10,
        },
        one_and_one(),
    )
    .await
}

/// Opens an action stream for `app` on a new session; returns everything to read it.
async fn start(
    system: &System,
    app: &str,
) -> (
    wtransport::Connection,
    wtransport::SendStream,
    wtransport::RecvStream,
) {
    let session = system.browser().await;
    let request = execute(app, "run", serde_json::json!({}));
    let (send, recv) = open(
        &session,
        &[system.header(&system.device_id).encode(), request.encode()],
    )
    .await;
    (session, send, recv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_says_busy_and_a_queued_action_can_be_cancelled() {
    let system = system(Duration::from_secs(5)).await;
    let (_s1, _send1, mut running) = start(&system, "spinner").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_s2, mut send2, mut queued) = start(&system, "spinner").await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The third is refused at once, and says why.
    let asked = Instant::now();
    let (_s3, _send3, mut third) = start(&system, "spinner").await;
    let reply = read_reply(&mut third).await;
    let (code, message) = error_of(&reply);
    assert_eq!(code, ErrorCode::Busy, "{message}");
    assert!(message.contains("try again"), "{message}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "busy comes at once, not after a wait: {:?}",
        asked.elapsed()
    );

    // The queued one is cancelled while it waits.
    write_frame(
        &mut send2,
        &Envelope::new(42, Body::Cancel).encode(),
        MAX_FRAME_LEN,
    )
    .await
    .expect("cancel");
    let reply = read_reply(&mut queued).await;
    let (code, message) = error_of(&reply);
    assert_eq!(code, ErrorCode::Cancelled, "{message}");
    assert!(message.contains("waited"), "{message}");

    // Its place is free again: a new request queues instead of being refused, and runs
    // once the spinner has timed out.
    let (_s4, _send4, mut next) = {
        let session = system.browser().await;
        let request = execute("hello-ai", "echo", serde_json::json!({ "text": "after" }));
        let (send, recv) = open(
            &session,
            &[system.header(&system.device_id).encode(), request.encode()],
        )
        .await;
        (session, send, recv)
    };
    let (code, message) = error_of(&read_reply(&mut running).await);
    assert_eq!(code, ErrorCode::AppFailed, "{message}");
    assert!(message.contains("ran out of time after 5 s"), "{message}");
    let reply = read_reply(&mut next).await;
    assert!(
        matches!(reply.last().map(|e| &e.body), Some(Body::StreamEnd { .. })),
        "{reply:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_spent_waiting_in_the_queue_counts_against_the_limit() {
    let system = system(Duration::from_secs(2)).await;
    let (_s1, _send1, mut running) = start(&system, "spinner").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    let (_s2, _send2, mut queued) = start(&system, "spinner").await;
    let reply = read_reply(&mut queued).await;
    let waited = asked.elapsed();
    let (code, message) = error_of(&reply);
    assert_eq!(code, ErrorCode::AppFailed, "{message}");
    // It got the slot after ~1.7 s and had ~0.3 s left, not a fresh 2 s.
    assert!(
        waited < Duration::from_millis(3_000),
        "ended {waited:?} after it was sent"
    );
    assert!(
        message.contains("ran out of time after 2 s"),
        "says which limit: {message}"
    );
    let (code, _) = error_of(&read_reply(&mut running).await);
    assert_eq!(code, ErrorCode::AppFailed);
}
