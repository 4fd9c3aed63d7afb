//! The desktop face: a small page the running node serves on 127.0.0.1, so a person at
//! the desktop needs no terminal to see what the node does, approve or deny an install
//! from the browser, set or remove an AI provider's key, pair a browser (QR code) and
//! find the logs.
//!
//! Why a page on loopback and not a native toolkit: it looks the same on Windows, macOS
//! and Linux with no GUI library in the binary (which stays one file, and builds in CI
//! without GTK development packages), and the person's own browser draws it. The
//! security of a local web server is in [`guard`]: a per-launch token traded for an
//! `HttpOnly`, `SameSite=Strict` cookie, Host and Origin checks, no CORS.
//!
//! Everything the page does goes through the code the CLI runs: the permission lines
//! (`ApprovedPermissions::shown`), a decision (`cli::apps::apply_decision`), keys
//! (`cli::keys::set_provider_key` …), pairing (`cli::pair::new_pairing`). The CLI keeps
//! working beside it.
//!
//! `desktop-node run --face` (or `[face] enabled = true`) serves it and writes its URL to
//! `face.json` in the node's folder (this user only); `desktop-node face` opens it.
//!
//! Not here: the Linux tray icon and the notifications that lead to the face
//! (`src/notify/`), a key's value ever shown or
//! sent back, anything reachable from another machine.

mod api;
pub mod guard;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aisa_node::config::{Home, NodeConfig};
use aisa_node::node::NodeContext;
use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use guard::{Guard, Refusal};

/// The file, in the node's folder, that holds the URL of the face being served.
pub const FACE_FILE: &str = "face.json";
/// Environment variable naming the program that opens a URL or a folder (default:
/// `xdg-open` on Linux, `open` on macOS, `explorer` on Windows). Tests set it.
pub const OPENER_VAR: &str = "AISA_NODE_OPENER";

/// `face.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct FaceFile {
    /// The login URL, with this launch's token.
    pub url: String,
    /// The node's process id.
    pub pid: u32,
}

/// What every handler shares.
pub(crate) struct FaceState {
    pub(crate) guard: Guard,
    pub(crate) home: Home,
    pub(crate) ctx: Arc<NodeContext>,
    pub(crate) relay_url: String,
    pub(crate) provider: String,
}

/// A face being served.
pub struct Face {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The login URL (with the token).
    pub url: String,
    file: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Face {
    /// Stops serving (when the node has stopped) and removes `face.json`.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Starts the face beside the node `ctx` on 127.0.0.1 (`config.face.port`, or a free
/// port), writes `face.json`, and serves until `stop` turns true.
pub async fn serve(
    home: &Home,
    config: &NodeConfig,
    ctx: Arc<NodeContext>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Face> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.face.port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", config.face.port))?;
    let addr = listener.local_addr()?;
    let guard = Guard::new(addr.port());
    let url = guard.login_url();
    let state = Arc::new(FaceState {
        guard,
        home: home.clone(),
        ctx,
        relay_url: config.relay_url.clone(),
        provider: config.ai.provider.name().to_owned(),
    });
    let file = home.dir().join(FACE_FILE);
    write_private(
        &file,
        &serde_json::to_vec_pretty(&FaceFile {
            url: url.clone(),
            pid: std::process::id(),
        })?,
    )
    .with_context(|| format!("cannot write {}", file.display()))?;
    let router = api::router(state.clone())
        .layer(axum::middleware::from_fn_with_state(state, check_request));
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(err) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(%err, "the desktop face stopped");
        }
    });
    tracing::info!(%addr, "desktop face served (open it with `desktop-node face`)");
    Ok(Face {
        addr,
        url,
        file,
        task,
    })
}

/// Writes `bytes` to `path`, readable by this user only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Every request: Host, Origin, then the session (except `/login`, which checks the
/// token itself); and the headers every answer carries.
async fn check_request(
    State(state): State<Arc<FaceState>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let host = text(header::HOST);
    let checked = state.guard.check_host(host).and_then(|()| {
        state.guard.check_origin(
            request.method(),
            host.unwrap_or_default(),
            text(header::ORIGIN),
        )
    });
    let checked = checked.and_then(|()| {
        if request.uri().path() == "/login" {
            Ok(())
        } else {
            state.guard.check_session(text(header::COOKIE))
        }
    });
    let mut response = match checked {
        Ok(()) => next.run(request).await,
        Err(refusal) => refused(refusal),
    };
    secure_headers(response.headers_mut());
    response
}

/// The answer to a refused request: 403 (421 for a wrong Host), or 401 without a
/// session, with a sentence saying why.
pub(crate) fn refused(refusal: Refusal) -> Response {
    let status = match refusal {
        Refusal::Host => StatusCode::MISDIRECTED_REQUEST,
        Refusal::Session => StatusCode::UNAUTHORIZED,
        Refusal::Origin | Refusal::Token => StatusCode::FORBIDDEN,
    };
    (status, refusal.message()).into_response()
}

/// No caching, no framing, no referrer (the login URL's token), script and styles only
/// from the face itself.
fn secure_headers(headers: &mut HeaderMap) {
    let set = |headers: &mut HeaderMap, name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    );
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::CACHE_CONTROL, "no-store");
}

/// Opens `target` (a URL or a folder) with the desktop's default program.
pub fn open(target: &str) -> anyhow::Result<()> {
    let program = std::env::var(OPENER_VAR).unwrap_or_else(|_| {
        if cfg!(target_os = "macos") {
            "open".into()
        } else if cfg!(windows) {
            "explorer".into()
        } else {
            "xdg-open".into()
        }
    });
    std::process::Command::new(&program)
        .arg(target)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {program}"))?;
    Ok(())
}

/// `desktop-node face`.
#[derive(Args)]
pub struct FaceArgs {
    /// Only print the URL (with its one-launch token); do not open a browser.
    #[arg(long)]
    print: bool,
}

/// `desktop-node face`: the running node's face URL, opened in the default browser.
pub fn command(home: &Home, args: FaceArgs) -> anyhow::Result<()> {
    let path = home.dir().join(FACE_FILE);
    let not_served = || {
        anyhow::anyhow!(
            "the node is not serving its desktop face: start it with `desktop-node run --face` (or `[face] enabled = true` in node.toml)"
        )
    };
    let file: FaceFile = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is damaged", path.display()))?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Err(not_served()),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    // A node that died without cleaning up leaves the file: is anything listening?
    let port = file
        .url
        .strip_prefix("http://127.0.0.1:")
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse::<u16>().ok())
        .with_context(|| format!("{} is damaged", path.display()))?;
    if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        return Err(not_served());
    }
    println!("{}", file.url);
    if !args.print {
        open(&file.url)?;
    }
    Ok(())
}
