//! The HTTP/1.1 server loop, with the timeouts `axum::serve` does not have.
//!
//! A client must send a request's headers within `http_header_timeout_secs` (hyper's
//! header-read timeout: the connection is closed otherwise), and its whole body within
//! `http_body_timeout_secs` of the headers (the body then fails with [`BodyTimedOut`],
//! which handlers answer with 408, and the connection is closed). So a client that
//! trickles bytes (a "slow loris") holds a connection and a task for a bounded time,
//! and nothing that is shared, such as a publish slot, while it does.
//!
//! Each connection's requests carry `ConnectInfo<SocketAddr>` as `axum::serve` sets it.
//! The loop stops accepting when `stop` turns true and lets open connections finish
//! their current request.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, warn};

/// The timeouts of one HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Time to receive a request's headers.
    pub header: Duration,
    /// Time to receive a request's whole body, counted from its headers.
    pub body: Duration,
}

/// A request body that was not received in full within the body timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(pub Duration);

impl BodyTimedOut {
    /// Whether `err` (or an error it wraps) is a body timeout.
    pub fn is_cause_of(err: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(err);
        while let Some(e) = next {
            if e.is::<BodyTimedOut>() {
                return true;
            }
            next = e.source();
        }
        false
    }
}

/// A body that fails with [`BodyTimedOut`] once its deadline passes.
pub struct DeadlineBody<B> {
    inner: B,
    limit: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<B> DeadlineBody<B> {
    /// `inner`, which must be received in full within `limit` from now.
    pub fn new(inner: B, limit: Duration) -> Self {
        DeadlineBody {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            let limit = self.limit;
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut(limit)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `app` on `listener` until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    timeouts: Timeouts,
    stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let mut stopping = stop.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // The WebSocket tunnels (`/tunnel/browser`, `/tunnel/desktop`) carry
                    // small frames that must not wait for Nagle's algorithm.
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(stream, peer, app.clone(), timeouts, stop.clone()));
                }
                Err(err) => {
                    // Out of file descriptors and the like: wait a little, do not spin.
                    warn!(%err, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = stopped(&mut stopping) => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
) {
    let app = TowerToHyperService::new(app);
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut req = req.map(|body| DeadlineBody::new(body, timeouts.body));
        req.extensions_mut().insert(ConnectInfo(peer));
        app.call(req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header);
    // With upgrades: the WebSocket paths (`/tunnel/desktop`) take the connection over.
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(err) = result {
                debug!(%err, %peer, "HTTP connection ended");
            }
            return;
        }
        () = stopped(&mut stop) => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(err) = conn.await {
        debug!(%err, %peer, "HTTP connection ended");
    }
}
