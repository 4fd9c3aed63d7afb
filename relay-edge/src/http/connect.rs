//! `GET /api/session`: where the page opens its WebTransport session, and which
//! certificate hash it pins.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::state::RelayState;

/// `GET /api/session`.
pub(super) fn routes() -> Router<Arc<RelayState>> {
    Router::new().route("/api/session", get(session_info))
}

#[derive(Serialize)]
struct SessionInfo {
    webtransport_url: String,
    cert_sha256: Vec<String>,
}

/// Where the page opens its WebTransport session, and the certificate hash to pin (empty
/// with a production certificate, which browsers verify normally).
async fn session_info(State(state): State<Arc<RelayState>>) -> Json<SessionInfo> {
    // `public_quic_addr` when a load balancer or NAT stands in front, else
    // `public_host` and the bound port.
    let (host, port) = state.config.advertised_quic(state.endpoint.quic_addr);
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Json(SessionInfo {
        webtransport_url: format!("https://{host}:{port}{}", crate::browser::WEBTRANSPORT_PATH),
        cert_sha256: if state.endpoint.self_signed {
            vec![hex::encode(state.endpoint.cert_sha256())]
        } else {
            vec![]
        },
    })
}
