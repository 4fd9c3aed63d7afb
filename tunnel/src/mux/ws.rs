//! The mux over a WebSocket: one mux frame per binary message, both ways (the browser's
//! and the desktop's TCP legs, `docs/protocol.md`).
//!
//! [`WsSource`] and [`WsSink`] turn the two halves of any WebSocket that is a
//! `futures` `Stream` of messages and a `Sink` of them into the driver's
//! [`FrameSource`] and [`FrameSink`]; [`start`] splits a WebSocket and starts a mux
//! connection on it. Which WebSocket library it is only shows in a [`WsCodec`]: how a
//! message is made from a frame's bytes and what a received message is. [`Tungstenite`]
//! is the one for `tokio-tungstenite` (the desktop node, test clients); the relay brings
//! one for axum's WebSocket.
//!
//! The rules, once for every side: a binary message is one frame (anything after it, or
//! less than one, closes the connection with [`code::PROTOCOL_ERROR`](super::code)), a
//! text message is not a frame (closed the same way), a close message or the end of the
//! WebSocket is the transport ending, pings and pongs are the WebSocket layer's own and
//! are skipped. Frames written between two flushes leave in one write.
//!
//! What it does not do: the HTTP upgrade, TLS, or WebSocket size limits (the caller
//! configures its WebSocket; a message needs at most [`MAX_FRAME`](super::MAX_FRAME)).

use std::future::Future;
use std::io;
use std::marker::PhantomData;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, SinkExt, Stream, StreamExt};

use super::conn::{Config, Side};
use super::driver::{FrameSink, FrameSource, KeepAlive, MuxConnection, SourceError};
use super::frame::Frame;

/// What a received WebSocket message is, to the mux.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A binary message: one frame's bytes.
    Binary(Bytes),
    /// A text message (never a frame).
    Text,
    /// A close message: the transport ends.
    Close,
    /// A ping or pong, answered by the WebSocket layer: skipped.
    Control,
}

/// One WebSocket library's message type, as the mux sees it.
pub trait WsCodec: Send + Sync + 'static {
    /// The library's message.
    type Message: Send + 'static;
    /// A binary message holding `bytes` (one encoded frame).
    fn binary(bytes: Bytes) -> Self::Message;
    /// What a received message is.
    fn incoming(message: Self::Message) -> Incoming;
}

/// The peer's mux frames from the receiving half of a WebSocket, one per binary message.
pub struct WsSource<S, C> {
    stream: S,
    codec: PhantomData<C>,
}

impl<S, C> WsSource<S, C> {
    /// Reads frames from `stream`.
    pub fn new(stream: S) -> Self {
        WsSource {
            stream,
            codec: PhantomData,
        }
    }
}

impl<S, C> std::fmt::Debug for WsSource<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WsSource")
    }
}

impl<S, C, E> FrameSource for WsSource<S, C>
where
    C: WsCodec,
    S: Stream<Item = Result<C::Message, E>> + Unpin + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    async fn recv(&mut self) -> Result<Option<Frame>, SourceError> {
        loop {
            let Some(message) = self.stream.next().await else {
                return Ok(None);
            };
            match C::incoming(message.map_err(io::Error::other)?) {
                Incoming::Binary(bytes) => return Ok(Some(Frame::decode_message(bytes)?)),
                Incoming::Text => {
                    return Err(SourceError::NotAFrame("a WebSocket text message".into()));
                }
                Incoming::Close => return Ok(None),
                Incoming::Control => {}
            }
        }
    }
}

/// Our mux frames onto the sending half of a WebSocket, one per binary message. A send
/// only queues the message in the WebSocket's write buffer; [`FrameSink::flush`] writes
/// them all out.
pub struct WsSink<K, C> {
    sink: K,
    codec: PhantomData<C>,
}

impl<K, C> WsSink<K, C> {
    /// Writes frames to `sink`.
    pub fn new(sink: K) -> Self {
        WsSink {
            sink,
            codec: PhantomData,
        }
    }
}

impl<K, C> std::fmt::Debug for WsSink<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WsSink")
    }
}

impl<K, C, E> FrameSink for WsSink<K, C>
where
    C: WsCodec,
    K: Sink<C::Message, Error = E> + Unpin + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    async fn send(&mut self, frame: Frame) -> io::Result<()> {
        self.sink
            .feed(C::binary(frame.to_bytes()))
            .await
            .map_err(io::Error::other)
    }
    async fn flush(&mut self) -> io::Result<()> {
        self.sink.flush().await.map_err(io::Error::other)
    }
    async fn close(&mut self) {
        let _ = self.sink.close().await;
    }
}

/// Starts a mux connection on `ws` (see [`super::driver::start`]): returns the
/// connection and the driver future, which the caller spawns (or joins) and owns.
pub fn start<C, W, E>(
    side: Side,
    config: Config,
    keepalive: KeepAlive,
    ws: W,
) -> (MuxConnection, impl Future<Output = ()> + Send + 'static)
where
    C: WsCodec,
    W: Stream<Item = Result<C::Message, E>> + Sink<C::Message, Error = E> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let (sink, stream): (SplitSink<W, C::Message>, SplitStream<W>) = ws.split();
    super::driver::start(
        side,
        config,
        keepalive,
        WsSource::<_, C>::new(stream),
        WsSink::<_, C>::new(sink),
    )
}

/// `tokio-tungstenite`'s messages (feature `websocket`).
#[derive(Debug, Clone, Copy)]
pub struct Tungstenite;

impl WsCodec for Tungstenite {
    type Message = tokio_tungstenite::tungstenite::Message;

    fn binary(bytes: Bytes) -> Self::Message {
        tokio_tungstenite::tungstenite::Message::Binary(bytes)
    }

    fn incoming(message: Self::Message) -> Incoming {
        use tokio_tungstenite::tungstenite::Message;
        match message {
            Message::Binary(bytes) => Incoming::Binary(bytes),
            Message::Text(_) => Incoming::Text,
            Message::Close(_) => Incoming::Close,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Incoming::Control,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;
    use crate::mux::code;

    async fn ws(io: DuplexStream, role: Role) -> WebSocketStream<DuplexStream> {
        WebSocketStream::from_raw_socket(io, role, None).await
    }

    /// A mux acceptor on one end of a WebSocket; the raw client WebSocket on the other.
    async fn acceptor_and_raw_peer() -> (MuxConnection, WebSocketStream<DuplexStream>) {
        let (a, b) = tokio::io::duplex(256 * 1024);
        let (conn, driver) = start::<Tungstenite, _, _>(
            Side::Acceptor,
            Config::default(),
            KeepAlive::default(),
            ws(a, Role::Server).await,
        );
        tokio::spawn(driver);
        (conn, ws(b, Role::Client).await)
    }

    #[tokio::test]
    async fn streams_echo_over_a_websocket_one_frame_per_message() {
        let (a, b) = tokio::io::duplex(256 * 1024);
        let (dialer, da) = start::<Tungstenite, _, _>(
            Side::Dialer,
            Config::default(),
            KeepAlive::default(),
            ws(a, Role::Client).await,
        );
        let (acceptor, db) = start::<Tungstenite, _, _>(
            Side::Acceptor,
            Config::default(),
            KeepAlive::default(),
            ws(b, Role::Server).await,
        );
        tokio::spawn(da);
        tokio::spawn(db);
        tokio::spawn(async move {
            while let Some((mut send, mut recv)) = acceptor.accept_bi().await {
                tokio::spawn(async move {
                    while let Some(chunk) = recv.read_chunk(usize::MAX).await.unwrap() {
                        send.write_chunk(chunk).await.unwrap();
                    }
                    send.finish().unwrap();
                });
            }
        });
        // More than a window, so CREDIT has to travel too.
        let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7) as u8).collect();
        let (mut send, mut recv) = dialer.open_bi().unwrap();
        let data = payload.clone();
        let writer = tokio::spawn(async move {
            send.write_all(&data).await.unwrap();
            send.shutdown().await.unwrap();
        });
        let mut back = Vec::new();
        recv.read_to_end(&mut back).await.unwrap();
        writer.await.unwrap();
        assert!(back == payload);
        dialer.close(3, "bye");
    }

    #[tokio::test]
    async fn each_frame_is_its_own_binary_message_and_pings_are_skipped() {
        let (conn, mut peer) = acceptor_and_raw_peer().await;
        // A WebSocket ping is the WebSocket layer's business, not a frame.
        peer.send(Message::Ping(Bytes::from_static(b"p")))
            .await
            .unwrap();
        peer.send(Message::Binary(Frame::Open { id: 1 }.to_bytes()))
            .await
            .unwrap();
        peer.send(Message::Binary(
            Frame::Data {
                id: 1,
                data: Bytes::from_static(b"hi"),
            }
            .to_bytes(),
        ))
        .await
        .unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        assert_eq!(recv.read_chunk(10).await.unwrap().unwrap(), &b"hi"[..]);
        send.write_chunk(Bytes::from_static(b"yo")).await.unwrap();
        send.finish().unwrap();
        let mut got = Vec::new();
        while got.len() < 2 {
            match peer.next().await.unwrap().unwrap() {
                Message::Binary(bytes) => got.push(Frame::decode_message(bytes).unwrap()),
                Message::Pong(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            got,
            [
                Frame::Data {
                    id: 1,
                    data: Bytes::from_static(b"yo")
                },
                Frame::Finish { id: 1 }
            ]
        );
    }

    #[tokio::test]
    async fn a_text_message_closes_with_a_protocol_error() {
        let (conn, mut peer) = acceptor_and_raw_peer().await;
        peer.send(Message::text("hello")).await.unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .unwrap();
        assert_eq!(closed.code, code::PROTOCOL_ERROR);
        assert!(closed.reason.contains("text message"), "{}", closed.reason);
        // The peer is told why, in a GOAWAY.
        let Some(Ok(Message::Binary(bytes))) = peer.next().await else {
            panic!("no GOAWAY")
        };
        assert!(matches!(
            Frame::decode_message(bytes).unwrap(),
            Frame::GoAway {
                code: code::PROTOCOL_ERROR,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn a_message_with_two_frames_closes_with_a_protocol_error() {
        let (conn, mut peer) = acceptor_and_raw_peer().await;
        let mut two = bytes::BytesMut::new();
        Frame::Open { id: 1 }.encode(&mut two);
        Frame::Open { id: 3 }.encode(&mut two);
        peer.send(Message::Binary(two.freeze())).await.unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .unwrap();
        assert_eq!(closed.code, code::PROTOCOL_ERROR);
        assert!(
            closed.reason.contains("after its frame"),
            "{}",
            closed.reason
        );
    }

    #[tokio::test]
    async fn a_close_message_is_the_transport_ending() {
        let (conn, mut peer) = acceptor_and_raw_peer().await;
        peer.close(None).await.unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .unwrap();
        assert_eq!(closed.code, code::CONNECTION_LOST);
        assert!(closed.by_peer);
        assert!(conn.accept_bi().await.is_none());
    }
}
