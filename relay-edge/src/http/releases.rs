//! `/releases/`: desktop-node's signed release manifests and binaries, served from the
//! folder `releases_dir` names, so a relay can be the `manifest_url` of
//! `desktop-node update` (its default is `{relay_url}/releases`).
//!
//! The folder is laid out as `aisapp release` writes it (`docs/desktop.md`, "Updates"):
//! `{channel}/{platform}.json` for the signed manifests, and the binaries wherever their
//! `url` points (this folder or another host). The relay only serves the files: it does
//! not read, sign or check them (the node checks the signature with its own trusted
//! keys, so a relay cannot forge a release). No directory listings, no `index.html`
//! fallback (a missing file is a plain 404, not the web app), no path outside the
//! folder (`tower_http::services::ServeDir` refuses `..`). Every answer says
//! `Cache-Control: no-cache`, so a cache in front revalidates a manifest (cheaply, by
//! `Last-Modified`) rather than hiding a new release.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use tower_http::services::ServeDir;

use crate::state::RelayState;

/// Where the release files are served.
pub const PATH: &str = "/releases";

/// The `/releases/` routes for the files in `dir`.
pub(super) fn routes(dir: &Path) -> Router<Arc<RelayState>> {
    Router::new()
        .nest_service(
            PATH,
            ServeDir::new(dir).append_index_html_on_directories(false),
        )
        .layer(axum::middleware::map_response(no_cache))
}

async fn no_cache(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
