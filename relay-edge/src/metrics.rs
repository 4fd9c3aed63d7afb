//! Prometheus metrics at `GET /metrics` on their own listener (`metrics_addr`, off by
//! default), never on the public API.
//!
//! Counters are recorded where things happen (`metrics::counter!`); gauges of what is
//! open now are read from the relay's state when the page is scraped. The recorder is
//! process-wide, as the `metrics` crate's are.
//!
//! | metric | kind | meaning |
//! | --- | --- | --- |
//! | `aisa_relay_connected_devices` | gauge | desktops connected to this node |
//! | `aisa_relay_browser_sessions` | gauge | WebTransport sessions open |
//! | `aisa_relay_open_streams` | gauge | streams being spliced |
//! | `aisa_relay_bytes_spliced_total` | counter | bytes copied between browsers and desktops |
//! | `aisa_relay_streams_total{kind}` | counter | streams authorized, by kind (`action`, `control`) |
//! | `aisa_relay_errors_total{code}` | counter | streams refused, by ERROR code |
//! | `aisa_relay_logins_total{result}` | counter | sign-ins (`ok`, `refused`, `limited`) |
//! | `aisa_relay_desktop_connections_total{result}` | counter | desktop HELLOs (`ok`, `refused`) |
//! | `aisa_installs_total{app}` | counter | installs desktop nodes reported (once per device and version) |
//! | `aisa_publishes_total` | counter | versions published through the developer portal |
//! | `aisa_refusals_total{reason}` | counter | requests, streams and connections refused, by reason (see [`refused`]) |

use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::state::RelayState;

/// The process-wide Prometheus recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then ours just renders
        // nothing recorded through the macros, which the gauges below still fill.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Counts one refusal in `aisa_refusals_total{reason}`. `reason` is a short stable
/// label (`header_too_large`, `invalid_header`, `unauthenticated`, `connections_per_ip`,
/// `event_streams_per_user`, `plan_streams`, `plan_actions`, `login_limited`,
/// `hashing_busy`, `token_revoked`, …); the log line that goes with it has the detail.
pub fn refused(reason: &'static str) {
    metrics::counter!("aisa_refusals_total", "reason" => reason).increment(1);
}

/// The metrics page.
pub fn render(state: &RelayState) -> String {
    let handle = handle();
    let traffic = &state.traffic;
    metrics::gauge!("aisa_relay_connected_devices").set(state.devices.registry.len() as f64);
    metrics::gauge!("aisa_relay_browser_sessions")
        .set(traffic.browser_sessions.load(Ordering::Relaxed) as f64);
    metrics::gauge!("aisa_relay_open_streams")
        .set(traffic.open_streams.load(Ordering::Relaxed) as f64);
    metrics::counter!("aisa_relay_bytes_spliced_total")
        .absolute(traffic.bytes_spliced.load(Ordering::Relaxed));
    // Shown from the start (at 0), not only after the first publication.
    metrics::counter!("aisa_publishes_total").increment(0);
    handle.render()
}
