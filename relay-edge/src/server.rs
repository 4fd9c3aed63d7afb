//! Starting and stopping a relay: one UDP port for QUIC (desktops, ALPN `aisa/1`) and
//! WebTransport (browsers, ALPN `h3`), one TCP port for HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::auth::TokenKeys;
use crate::cert::{self, TlsIdentity};
use crate::config::RelayConfig;
use crate::state::{Accounts, Devices, EndpointInfo, Limits, Market, RelayState, Traffic};
use crate::store::Store;
use crate::{browser, desktop, http};

/// ALPN of desktop nodes' raw QUIC connections.
pub const DESKTOP_ALPN: &[u8] = b"aisa/1";
/// ALPN of browsers' HTTP/3 (WebTransport) connections.
pub const H3_ALPN: &[u8] = b"h3";

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory, a socket or a file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The certificate could not be loaded or made.
    #[error(transparent)]
    Cert(#[from] cert::CertError),
    /// Bundle storage could not be set up.
    #[error(transparent)]
    Bundles(#[from] crate::bundles::BundleError),
    /// The platform signing key could not be loaded or made.
    #[error(transparent)]
    Signing(#[from] crate::signing::SigningError),
    /// The TLS configuration was refused.
    #[error("TLS: {0}")]
    Tls(String),
    /// A configuration value is not usable (the message names the key).
    #[error("configuration: {0}")]
    Config(String),
}

/// A running relay.
pub struct RelayHandle {
    /// The bound HTTP address.
    pub http_addr: SocketAddr,
    /// The bound UDP address.
    pub quic_addr: SocketAddr,
    /// The bound metrics address (`metrics_addr`), if metrics are served.
    pub metrics_addr: Option<SocketAddr>,
    /// The relay's state, by area (for tests and metrics).
    pub state: Arc<RelayState>,
    endpoint: quinn::Endpoint,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    tls_files: Option<Arc<cert::TlsFiles>>,
}

impl RelayHandle {
    /// SHA-256 of the relay's certificate.
    pub fn cert_sha256(&self) -> [u8; 32] {
        self.state.endpoint.cert_sha256()
    }

    /// Loads the configured `tls_cert` and `tls_key` again for new connections (what
    /// `SIGHUP` does). `Ok(false)` without configured files (a development certificate
    /// renews itself).
    pub fn reload_tls(&self) -> Result<bool, StartError> {
        match &self.tls_files {
            Some(files) => reload_tls_files(&self.state, &self.endpoint, files, true),
            None => Ok(false),
        }
    }

    /// Stops accepting, tells desktops to reconnect elsewhere at once, and waits (up to
    /// `drain`) for connections to close.
    ///
    /// In order: refuse new connections and new streams; let the streams already
    /// spliced finish, for at most `drain`; then close every desktop connection with
    /// the "shutting down" code, on which desktops reconnect at once (to another node
    /// behind the load balancer, or to this one when it is back), and stop.
    pub async fn shutdown(mut self, drain: Duration) {
        self.state
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.endpoint.set_server_config(None);
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + drain;
        while self
            .state
            .traffic
            .open_streams
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for conn in self.state.devices.registry.connections() {
            conn.close(desktop::CLOSE_SHUTDOWN, b"relay shutting down");
        }
        self.endpoint.close(0u32.into(), b"relay shutting down");
        if let Some(forwarding) = &self.state.forwarding {
            forwarding
                .peers
                .endpoint()
                .close(0u32.into(), b"relay shutting down");
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        self.tasks.shutdown().await;
        // Every stream has ended: write the last counted actions (and uncounts).
        if let Err(err) = self.state.actions.flush(&self.state.store).await {
            warn!(%err, "could not write the last counted actions");
        }
        // In a cluster, and to Redis: this node's last counts (its streams now closed).
        if let Some(shared) = self.state.cluster.shared() {
            crate::limits::sync_batch(&self.state, shared).await;
        }
    }

    /// Runs until the relay's tasks end (they do not, short of a fatal error).
    pub async fn join(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Opens the store, binds both ports, and starts serving.
pub async fn start(mut config: RelayConfig) -> Result<RelayHandle, StartError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    crate::metrics::handle();
    std::fs::create_dir_all(&config.data_dir)?;
    let node = crate::cluster::NodeName::resolve(&config)
        .map_err(|e| StartError::Config(format!("node_name: {e}")))?;
    // Everything that names this node (the store's device rows, the QUIC reset key)
    // uses the resolved, unique name.
    config.node_name = node.to_string();
    info!(node = %node, "relay node");
    config
        .validate()
        .map_err(|e| StartError::Config(e.to_string()))?;
    let store = Store::open_with(&config.database_url(), &config.database).await?;
    store.reset_node(&config.node_name).await?;
    let tokens = TokenKeys::new(&jwt_secret(&config)?, config.access_token_ttl_secs);
    let proxies = crate::proxy::TrustedProxies::parse(&config.trusted_proxies)
        .map_err(|e| StartError::Config(format!("trusted_proxies: {e}")))?;
    let hashing = crate::limits::HashPool::new(
        match config.hash_concurrency {
            0 => crate::limits::HashPool::default_size(),
            n => n,
        },
        Duration::from_millis(config.hash_queue_timeout_ms),
    );
    let bundles = crate::bundles::Bundles::from_config(&config)?;
    let signing = Arc::new(crate::signing::PlatformKeys::from_config(&config)?);
    info!(bundles = %bundles.describe(), signing_key_id = %signing.signing_key_id(), "marketplace ready");
    let acme =
        crate::acme::Acme::from_config(&config).map_err(|e| StartError::Config(e.to_string()))?;
    let (identity, tls_files) = load_identity(&config, acme.as_ref())?;
    let endpoint = quinn::Endpoint::new(
        crate::quic::endpoint_config(&identity, &config.node_name),
        Some(crate::quic::server_config(&identity)?),
        std::net::UdpSocket::bind(config.quic_listen)?,
        Arc::new(quinn::TokioRuntime),
    )?;
    let quic_addr = endpoint.local_addr()?;
    let http_listener = tokio::net::TcpListener::bind(config.http_listen).await?;
    let http_addr = http_listener.local_addr()?;
    let metrics_listener = match config.metrics_addr {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await?),
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(listener) => Some(listener.local_addr()?),
        None => None,
    };
    info!(%quic_addr, %http_addr, cert_sha256 = %hex::encode(identity.sha256()), "relay listening");

    let forwarding = crate::cluster::forward::Forwarding::from_config(&config, &node)
        .map_err(|e| StartError::Config(e.to_string()))?;
    let devices = Devices::default();
    // With `[cluster] redis_url`: connects to Redis and clears this node's entries
    // from before a restart (only this node's).
    let cluster = crate::cluster::Cluster::join(&config, node.clone(), devices.registry.clone())
        .await
        .map_err(|e| StartError::Config(e.to_string()))?;
    let state = Arc::new(RelayState {
        store,
        accounts: Accounts {
            tokens,
            logins: crate::limits::LoginLimiter::new(
                config.login_max_failures,
                Duration::from_secs(config.login_window_secs),
            ),
            hashing,
            proxies,
        },
        cluster,
        devices,
        sessions: crate::sessions::Sessions::default(),
        limits: Limits::default(),
        actions: crate::actions::ActionCounter::default(),
        traffic: Traffic::default(),
        // With ACME the certificate is a CA's (the placeholder until the first one is
        // issued is not offered for pinning).
        endpoint: EndpointInfo::new(
            quic_addr,
            identity.self_signed && acme.is_none(),
            identity.sha256(),
        ),
        market: Market {
            bundles,
            signing,
            publish_slots: crate::marketplace::publish_slots(),
        },
        draining: std::sync::atomic::AtomicBool::new(false),
        forwarding,
        config,
    });
    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    if let Some(forwarding) = &state.forwarding {
        // Known before any desktop is placed: the device map names this address.
        let advertised = state
            .config
            .cluster
            .forward_advertise
            .unwrap_or(forwarding.local_addr);
        state.cluster.set_forward_addr(advertised);
        info!(listen = %forwarding.local_addr, %advertised, "relay-to-relay forwarding");
        let endpoint = forwarding.peers.endpoint().clone();
        tasks.spawn(crate::cluster::forward::serve(state.clone(), endpoint));
    }
    // Hooked up before desktops and browsers are accepted, so that no connect, status
    // or change goes unannounced.
    crate::cluster::spawn(&state, &mut tasks, stopped.clone());
    tasks.spawn(accept_loop(state.clone(), endpoint.clone()));
    let mut app = http::router(state.clone());
    if let Some(acme) = &acme {
        // HTTP-01: the CA fetches its token from this port.
        app = app.merge(acme.challenges().router());
    }
    tasks.spawn(crate::httpd::serve(
        http_listener,
        app,
        http_timeouts(&state.config),
        stopped.clone(),
    ));
    if let Some(listener) = metrics_listener {
        info!(addr = ?metrics_addr, "metrics served on their own address");
        tasks.spawn(crate::httpd::serve(
            listener,
            http::metrics_router(state.clone()),
            http_timeouts(&state.config),
            stopped.clone(),
        ));
    }
    tasks.spawn(sweep_revoked_tokens(state.clone(), stopped.clone()));
    tasks.spawn(flush_actions(state.clone(), stopped.clone()));
    let tls_files = tls_files.map(Arc::new);
    if let Some(files) = &tls_files
        && state.config.tls_reload_secs > 0
    {
        tasks.spawn(watch_tls_files(
            state.clone(),
            endpoint.clone(),
            files.clone(),
            stopped.clone(),
        ));
    }
    if let (Some(acme), Some(files)) = (acme, &tls_files) {
        let (state, endpoint, files) = (state.clone(), endpoint.clone(), files.clone());
        let install =
            move || reload_tls_files(&state, &endpoint, &files, false).map_err(|e| e.to_string());
        tasks.spawn(crate::acme::run(acme, install, stopped));
    } else if identity.self_signed {
        tasks.spawn(renew_dev_cert(state.clone(), endpoint.clone(), stopped));
    }
    Ok(RelayHandle {
        http_addr,
        quic_addr,
        metrics_addr,
        state,
        endpoint,
        stop,
        tasks,
        tls_files,
    })
}

/// The HTTP timeouts from the configuration.
fn http_timeouts(config: &RelayConfig) -> crate::httpd::Timeouts {
    crate::httpd::Timeouts {
        header: Duration::from_secs(config.http_header_timeout_secs.max(1)),
        body: Duration::from_secs(config.http_body_timeout_secs.max(1)),
    }
}

fn load_identity(
    config: &RelayConfig,
    acme: Option<&crate::acme::Acme>,
) -> Result<(TlsIdentity, Option<cert::TlsFiles>), StartError> {
    if let Some(acme) = acme {
        // The certificate kept from an earlier start, served at once; or, until the
        // first one is issued, a development certificate as a placeholder.
        let files = cert::TlsFiles::pending(&acme.cert_path(), &acme.key_path());
        let cached = files.reload_if_changed(true, |identity| {
            crate::quic::server_config(identity).map_err(|e| e.to_string())
        });
        return Ok(match cached {
            Ok(Some((identity, _))) => (identity, Some(files)),
            _ => (
                cert::dev_identity(&config.data_dir, &config.public_host)?,
                Some(files),
            ),
        });
    }
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let (files, identity) = cert::TlsFiles::load(cert, key)?;
            Ok((identity, Some(files)))
        }
        (None, None) => Ok((
            cert::dev_identity(&config.data_dir, &config.public_host)?,
            None,
        )),
        _ => Err(StartError::Tls(
            "tls_cert and tls_key must be given together".into(),
        )),
    }
}

/// The shortest `jwt_secret` accepted, in bytes: HS256 keys shorter than its 32-byte
/// output are guessable offline from any one token.
pub const MIN_JWT_SECRET_LEN: usize = 32;

fn jwt_secret(config: &RelayConfig) -> Result<Vec<u8>, StartError> {
    let from_file = match (&config.jwt_secret, &config.jwt_secret_file) {
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| {
                    StartError::Config(format!("jwt_secret_file {}: {e}", path.display()))
                })?
                .trim()
                .to_owned(),
        ),
        _ => None,
    };
    if let Some(secret) = config.jwt_secret.as_ref().or(from_file.as_ref()) {
        if secret.len() < MIN_JWT_SECRET_LEN {
            return Err(StartError::Config(format!(
                "jwt_secret has {} bytes; it needs at least {MIN_JWT_SECRET_LEN} (e.g. the output of `openssl rand -hex 32`), or leave it unset for a random one kept in the data directory",
                secret.len()
            )));
        }
        return Ok(secret.as_bytes().to_vec());
    }
    let path = config.data_dir.join("jwt-secret");
    if let Ok(existing) = std::fs::read_to_string(&path)
        && let Ok(bytes) = hex::decode(existing.trim())
        && bytes.len() >= 32
    {
        return Ok(bytes);
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| std::io::Error::other(e.to_string()))?;
    std::fs::write(&path, hex::encode(secret))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(secret.to_vec())
}

/// Accepts connections and hands each to the browser or desktop handler by ALPN.
async fn accept_loop(state: Arc<RelayState>, endpoint: quinn::Endpoint) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                connections.spawn(handle_incoming(state.clone(), incoming));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

async fn handle_incoming(state: Arc<RelayState>, incoming: quinn::Incoming) {
    let ip = incoming.remote_address().ip();
    // Counted for as long as this connection is served.
    let Some(_per_ip) = state
        .limits
        .connections_per_ip
        .try_open(&ip, state.config.max_connections_per_ip as i64)
    else {
        info!(%ip, max = state.config.max_connections_per_ip, "connection refused: too many from this address");
        crate::metrics::refused("connections_per_ip");
        incoming.refuse();
        return;
    };
    let mut connecting = match incoming.accept() {
        Ok(c) => c,
        Err(err) => {
            debug!(%err, "incoming connection failed");
            return;
        }
    };
    let alpn = match connecting.handshake_data().await {
        Ok(data) => data
            .downcast::<quinn::crypto::rustls::HandshakeData>()
            .ok()
            .and_then(|d| d.protocol),
        Err(err) => {
            debug!(%err, "handshake failed");
            return;
        }
    };
    match alpn.as_deref() {
        Some(H3_ALPN) => {
            let future =
                wtransport::endpoint::IncomingSessionFuture::with_quic_connecting(connecting);
            match future.await {
                Ok(request) => browser::serve(state, request).await,
                Err(err) => debug!(%err, "WebTransport session not established"),
            }
        }
        Some(DESKTOP_ALPN) => match connecting.await {
            Ok(conn) => desktop::serve(state, crate::link::DesktopLink::quic(conn)).await,
            Err(err) => debug!(%err, "desktop connection failed"),
        },
        _ => debug!("connection without a known ALPN"),
    }
}

/// Closes sessions whose tokens were revoked elsewhere (the operator's CLI disabling or
/// deleting a user, another relay node), every `revocation_check_secs`. Revocations made through
/// this node's HTTP API close its sessions at once.
async fn sweep_revoked_tokens(state: Arc<RelayState>, mut stopped: watch::Receiver<bool>) {
    let every = Duration::from_secs(state.config.revocation_check_secs.max(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        // Tokens issued before now minus their lifetime have expired anyway.
        let since = crate::auth::now_secs()
            .saturating_sub(state.config.access_token_ttl_secs + every.as_secs() + 5)
            as i64;
        let revoked = match state.store.revoked_users(since).await {
            Ok(rows) => rows,
            Err(err) => {
                warn!(%err, "revoked-token sweep failed");
                continue;
            }
        };
        // Changes made elsewhere: drop the cached records first, so that the next
        // stream reads the user again (even with no session open now).
        for (user_id, _, _) in &revoked {
            state.store.facts().invalidate_user(user_id);
        }
        if state.sessions.is_empty() {
            continue;
        }
        let users = state.sessions.users();
        // Deleted users: their sessions go, whatever token they hold.
        match state.store.existing_users(&users).await {
            Ok(existing) => {
                for user_id in users.iter().filter(|u| !existing.contains(*u)) {
                    state.store.facts().invalidate_user(user_id);
                    state.store.facts().invalidate_devices_of(user_id);
                    let closed =
                        state
                            .sessions
                            .revoke(user_id, i64::MAX, "the account was deleted");
                    if closed > 0 {
                        info!(%user_id, closed, "sessions of a deleted account closed");
                        crate::metrics::refused("token_revoked");
                    }
                }
            }
            Err(err) => warn!(%err, "revoked-token sweep failed"),
        }
        let active: std::collections::HashSet<String> = users.into_iter().collect();
        for (user_id, disabled, generation) in revoked {
            if !active.contains(&user_id) {
                continue;
            }
            let (generation, why) = if disabled {
                (i64::MAX, "the account was disabled")
            } else {
                (generation, "the access token was revoked")
            };
            let closed = state.sessions.revoke(&user_id, generation, why);
            if closed > 0 {
                info!(%user_id, closed, why, "sessions closed");
                crate::metrics::refused("token_revoked");
            }
        }
    }
}

/// Writes the actions counted in memory to the store every `action_flush_ms`, and once
/// more when the relay stops ([`RelayHandle::shutdown`] writes those of the streams
/// that drained after this).
async fn flush_actions(state: Arc<RelayState>, mut stopped: watch::Receiver<bool>) {
    let every = Duration::from_millis(state.config.action_flush_ms.max(1));
    loop {
        let stop = tokio::select! {
            _ = tokio::time::sleep(every) => false,
            _ = stopped.wait_for(|s| *s) => true,
        };
        if let Err(err) = state.actions.flush(&state.store).await {
            warn!(%err, "could not write counted actions; kept for the next flush");
        }
        if stop {
            return;
        }
    }
}

/// Loads the certificate files again if they changed (or always, with `force`) and
/// hands the new certificate to new connections. `Ok(true)` when it was loaded.
fn reload_tls_files(
    state: &RelayState,
    endpoint: &quinn::Endpoint,
    files: &cert::TlsFiles,
    force: bool,
) -> Result<bool, StartError> {
    let reloaded = files.reload_if_changed(force, |identity| {
        crate::quic::server_config(identity).map_err(|e| e.to_string())
    })?;
    let Some((identity, config)) = reloaded else {
        return Ok(false);
    };
    if state.is_draining() {
        // Shutting down: the endpoint takes no new connections any more.
        return Ok(false);
    }
    endpoint.set_server_config(Some(config));
    state.endpoint.set_cert_sha256(identity.sha256());
    info!(cert = %files.cert_path().display(), cert_sha256 = %hex::encode(identity.sha256()), "TLS certificate loaded");
    Ok(true)
}

/// Looks at the certificate files every `tls_reload_secs` and loads them when they
/// change.
async fn watch_tls_files(
    state: Arc<RelayState>,
    endpoint: quinn::Endpoint,
    files: Arc<cert::TlsFiles>,
    mut stopped: watch::Receiver<bool>,
) {
    let every = Duration::from_secs(state.config.tls_reload_secs.max(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        if let Err(err) = reload_tls_files(&state, &endpoint, &files, false) {
            warn!(%err, "the changed TLS certificate files were not loaded; keeping the current certificate");
        }
    }
}

/// Replaces the development certificate before it expires, without a restart.
async fn renew_dev_cert(
    state: Arc<RelayState>,
    endpoint: quinn::Endpoint,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        let fresh = match cert::dev_identity(&state.config.data_dir, &state.config.public_host) {
            Ok(identity) => identity,
            Err(err) => {
                warn!(%err, "development certificate renewal failed");
                continue;
            }
        };
        if fresh.sha256() == state.endpoint.cert_sha256() {
            continue;
        }
        match crate::quic::server_config(&fresh) {
            Ok(config) => {
                endpoint.set_server_config(Some(config));
                state.endpoint.set_cert_sha256(fresh.sha256());
                info!(cert_sha256 = %hex::encode(fresh.sha256()), "development certificate renewed");
            }
            Err(err) => warn!(%err, "renewed certificate refused"),
        }
    }
}
