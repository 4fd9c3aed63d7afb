//! A browser-role client of the relay's WebSocket leg (`/tunnel/browser`), shared by the
//! relay's integration tests: the mux's dialing side over tokio-tungstenite (tunnel's
//! `mux::ws` adapter, as the desktop node's TCP leg uses it), and one request run on a
//! stream of it through the browser's request machine.

use std::net::SocketAddr;

use aisa_testkit::system::{WAIT, kind_for};
use aisa_tunnel::mux::driver::{KeepAlive, MuxConnection};
use aisa_tunnel::mux::ws::{self, Tungstenite};
use aisa_tunnel::mux::{self, Side};
use aisa_tunnel::proto::{ClientEvent, ClientRequest, Refusal};
use aisa_tunnel::{Envelope, ErrorCode, OpenHeader};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;

/// A raw WebSocket to the relay's browser leg at `http_addr` (upgrade checked).
pub async fn websocket(http_addr: SocketAddr) -> WebSocketStream<TcpStream> {
    let tcp = TcpStream::connect(http_addr)
        .await
        .expect("TCP to the relay");
    let (ws, response) =
        tokio_tungstenite::client_async(format!("ws://{http_addr}/tunnel/browser"), tcp)
            .await
            .expect("WebSocket upgrade");
    assert_eq!(response.status().as_u16(), 101);
    ws
}

/// A browser session over the WebSocket leg at `http_addr`: the mux's dialing side, its
/// driver spawned.
pub async fn ws_session(http_addr: SocketAddr) -> MuxConnection {
    let (conn, driver) = ws::start::<Tungstenite, _, _>(
        Side::Dialer,
        mux::Config::default(),
        KeepAlive::default(),
        websocket(http_addr).await,
    );
    tokio::spawn(driver);
    conn
}

/// Runs `request` on a new stream of `session` (the browser's request machine, as
/// `aisa_testkit::system::run_action` does on WebTransport); the reply, ending with
/// STREAM_END or an ERROR, or cut where the stream ended early or was reset.
pub async fn run_ws(
    session: &MuxConnection,
    header: &OpenHeader,
    request: Envelope,
) -> Vec<Envelope> {
    let (mut send, mut recv) = session.open_bi().expect("open a stream");
    let mut header = header.clone();
    header.kind = kind_for(&request.body);
    let mut machine = ClientRequest::new(&header, &request);
    let opening = machine.poll_transmit().expect("header and request");
    // A relay that refuses from the header alone stops reading; its ERROR follows.
    let _ = send.write_all(&opening).await;
    let mut reply = Vec::new();
    loop {
        let read = tokio::time::timeout(WAIT, recv.read_chunk(64 << 10))
            .await
            .expect("reply in time");
        let events = match read {
            Ok(Some(chunk)) => machine.receive(&chunk),
            Ok(None) => machine.finish().into_iter().collect(),
            Err(_) => return reply,
        };
        for event in events {
            match event {
                ClientEvent::Message(envelope) => reply.push(envelope),
                ClientEvent::Done(Ok(last)) => {
                    reply.push(last);
                    return reply;
                }
                ClientEvent::Done(Err(Refusal::Remote { code, message })) => {
                    reply.push(Envelope::error(
                        request.request_id,
                        ErrorCode::parse(&code),
                        message,
                    ));
                    return reply;
                }
                ClientEvent::Done(Err(_)) => return reply,
            }
        }
    }
}
