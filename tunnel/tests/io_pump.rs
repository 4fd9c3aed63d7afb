//! The async header pump reads the header and not one byte more, and keeps the limits.

#![cfg(feature = "io")]
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use aisa_tunnel::io::read_header;
use aisa_tunnel::{OpenHeader, StreamKind, frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn open() -> OpenHeader {
    OpenHeader {
        device_id: "dev".into(),
        kind: StreamKind::Control,
        token: "t".into(),
        e2e: None,
    }
}

#[tokio::test]
async fn the_header_is_read_and_the_rest_left_for_the_splice() {
    let (mut near, mut far) = tokio::io::duplex(1024);
    let mut wire = Vec::new();
    frame::encode_frame(&open().encode(), 4096, &mut wire).unwrap();
    wire.extend_from_slice(b"rest of the stream");
    near.write_all(&wire).await.unwrap();
    drop(near);
    let (header, _) = read_header::<OpenHeader, _>(&mut far, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(header, open());
    let mut rest = Vec::new();
    far.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"rest of the stream");
}

#[tokio::test]
async fn a_silent_peer_is_refused_at_the_deadline_and_an_early_end_is_reported() {
    let (near, mut far) = tokio::io::duplex(1024);
    let refusal = read_header::<OpenHeader, _>(&mut far, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(refusal.reason(), "header_timeout");
    drop(near);
    let refusal = read_header::<OpenHeader, _>(&mut far, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(refusal.reason(), "header_missing");
}
