//! `relay-edge`: the AI SuperApp relay and its operator tasks.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use aisa_relay::RelayConfig;
use aisa_relay::store::Store;
use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

/// The AI SuperApp relay: accounts, device registry, and the WebTransport/QUIC gateway.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    common: Common,
}

/// Options every subcommand takes. Each overrides the config file; flags override
/// environment variables. The variables' old names (`RELAY_*`, without `AISA_`) still
/// work, with a deprecation warning ([`apply_old_env_names`]).
#[derive(Args)]
struct Common {
    /// TOML configuration file.
    #[arg(long, global = true, env = "AISA_RELAY_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (database, development certificate, secrets).
    #[arg(long, global = true, env = "AISA_RELAY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Database URL (`sqlite://…`).
    #[arg(long, global = true, env = "AISA_RELAY_DATABASE_URL")]
    database_url: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay.
    Serve(ServeArgs),
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Manage user accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Look after the marketplace's mini-apps.
    #[command(subcommand)]
    Apps(AppsCommand),
}

#[derive(Subcommand)]
enum AppsCommand {
    /// List every app with its owner, latest version and every version (yanked ones
    /// marked), hidden apps included.
    List,
    /// Yank a version: it is no longer anyone's "latest", but stays downloadable by
    /// exact version.
    Yank {
        /// The app id.
        id: String,
        /// The version to yank.
        version: String,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// UDP address for QUIC and WebTransport.
    #[arg(long, env = "AISA_RELAY_QUIC_LISTEN")]
    quic_listen: Option<SocketAddr>,
    /// TCP address for the web app and the HTTP API.
    #[arg(long, env = "AISA_RELAY_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,
    /// Host name browsers use to reach the QUIC port.
    #[arg(long, env = "AISA_RELAY_PUBLIC_HOST")]
    public_host: Option<String>,
    /// Folder with the built web app.
    #[arg(long, env = "AISA_RELAY_WEB_ROOT")]
    web_root: Option<PathBuf>,
    /// PEM certificate chain (production); without it a development certificate is made.
    #[arg(long, env = "AISA_RELAY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "AISA_RELAY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// This node's name in the device registry.
    #[arg(long, env = "AISA_RELAY_NODE_NAME")]
    node_name: Option<String>,
    /// QUIC connections one client address may have open at once (load tests from one
    /// machine need more than the default 64).
    #[arg(long, env = "AISA_RELAY_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// TCP address for Prometheus metrics (`GET /metrics`), off the public API.
    #[arg(long, env = "AISA_RELAY_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Secret for access tokens, at least 32 bytes (prefer the environment variable to
    /// the flag).
    #[arg(long, env = "AISA_RELAY_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user. The password is read from standard input unless --password is given.
    Add {
        /// The user's email.
        email: String,
        /// The password (prefer standard input: flags show in process lists).
        #[arg(long)]
        password: Option<String>,
        /// Succeed without change if the user already exists.
        #[arg(long)]
        if_missing: bool,
    },
    /// List users.
    List,
    /// Stop a user from signing in or reaching devices.
    Disable {
        /// The user's email.
        email: String,
    },
    /// Delete a user with their devices (their device tokens stop working).
    Delete {
        /// The user's email.
        email: String,
    },
    /// Let a disabled user back in.
    Enable {
        /// The user's email.
        email: String,
    },
    /// Move a user to another plan (`free`, `pro`, or one added to the plans table).
    Plan {
        /// The user's email.
        email: String,
        /// The plan id.
        plan: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    // Read before logging starts (the file and the environment say how to log); what
    // they have to say is logged once it has.
    let old_names = apply_old_env_names(&mut cli)?;
    let (mut config, applied) = load_config(&cli.common)?;
    init_logging(&config.log);
    for warning in old_names {
        tracing::warn!("{warning}");
    }
    for (var, key) in &applied.used {
        tracing::debug!(%var, %key, "setting from the environment");
    }
    for var in &applied.unknown {
        tracing::warn!(%var, "ignored: no setting has this name (AISA_RELAY_<KEY> or AISA_RELAY_<SECTION>_<KEY>)");
    }
    match cli.command {
        Command::Serve(args) => {
            apply_serve_args(&mut config, args);
            serve(config).await
        }
        Command::Migrate => {
            std::fs::create_dir_all(&config.data_dir)?;
            Store::open_with(&config.database_url(), &config.database).await?;
            println!("database is up to date: {}", config.database_url());
            Ok(())
        }
        Command::User(cmd) => user(config, cmd).await,
        Command::Apps(cmd) => apps(config, cmd).await,
    }
}

/// Log lines to standard error, as `[log]` says: text or JSON, with `[log] filter` (or
/// `RUST_LOG`, which wins) choosing which.
fn init_logging(log: &aisa_relay::config::LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        log.filter
            .as_deref()
            .unwrap_or("info,quinn=warn,wtransport=warn")
            .into()
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format {
        aisa_relay::config::LogFormat::Text => builder.init(),
        aisa_relay::config::LogFormat::Json => builder.json().flatten_event(false).init(),
    }
}

/// Fills each option that neither a flag nor its `AISA_RELAY_*` variable set from the
/// variable's old name (`RELAY_*`), and returns a deprecation warning for every old name
/// set, to log. (clap reads one variable per option; the old names are read here.)
fn apply_old_env_names(cli: &mut Cli) -> anyhow::Result<Vec<String>> {
    let mut warnings = Vec::new();
    let mut note = |warning: Option<String>| warnings.extend(warning);
    note(fill_from_old(&mut cli.common.config, "AISA_RELAY_CONFIG")?);
    note(fill_from_old(
        &mut cli.common.data_dir,
        "AISA_RELAY_DATA_DIR",
    )?);
    note(fill_from_old(
        &mut cli.common.database_url,
        "AISA_RELAY_DATABASE_URL",
    )?);
    if let Command::Serve(args) = &mut cli.command {
        note(fill_from_old(
            &mut args.quic_listen,
            "AISA_RELAY_QUIC_LISTEN",
        )?);
        note(fill_from_old(
            &mut args.http_listen,
            "AISA_RELAY_HTTP_LISTEN",
        )?);
        note(fill_from_old(
            &mut args.public_host,
            "AISA_RELAY_PUBLIC_HOST",
        )?);
        note(fill_from_old(&mut args.web_root, "AISA_RELAY_WEB_ROOT")?);
        note(fill_from_old(&mut args.tls_cert, "AISA_RELAY_TLS_CERT")?);
        note(fill_from_old(&mut args.tls_key, "AISA_RELAY_TLS_KEY")?);
        note(fill_from_old(&mut args.node_name, "AISA_RELAY_NODE_NAME")?);
        note(fill_from_old(
            &mut args.max_connections_per_ip,
            "AISA_RELAY_MAX_CONNECTIONS_PER_IP",
        )?);
        note(fill_from_old(
            &mut args.metrics_addr,
            "AISA_RELAY_METRICS_ADDR",
        )?);
        note(fill_from_old(
            &mut args.jwt_secret,
            "AISA_RELAY_JWT_SECRET",
        )?);
        if args.tls_cert.is_some() != args.tls_key.is_some() {
            anyhow::bail!("AISA_RELAY_TLS_CERT and AISA_RELAY_TLS_KEY must be given together");
        }
    }
    Ok(warnings)
}

/// Fills `field` from the old name of the variable `name` when neither a flag nor the
/// variable set it; returns the deprecation warning when the old name is set.
fn fill_from_old<T: std::str::FromStr>(
    field: &mut Option<T>,
    name: &str,
) -> anyhow::Result<Option<String>>
where
    T::Err: std::fmt::Display,
{
    let Some(old) = aisa_relay::config::old_env_name(name, |k| std::env::var(k).ok()) else {
        return Ok(None);
    };
    if let (None, Some(value)) = (field.as_ref(), old.value) {
        *field = Some(
            value
                .parse()
                .map_err(|e| anyhow::anyhow!("{name} (set as its old name): {e}"))?,
        );
    }
    Ok(Some(old.warning))
}

/// The configuration file (if any) with every `AISA_RELAY_*` variable applied on top
/// (`aisa_relay::config::env`), then `--data-dir` and `--database-url`.
fn load_config(common: &Common) -> anyhow::Result<(RelayConfig, aisa_relay::config::env::Applied)> {
    let text = match &common.config {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => String::new(),
    };
    let (mut config, applied) = RelayConfig::from_toml_and_env(&text, std::env::vars())
        .with_context(|| match &common.config {
            Some(path) => format!("in {} or the AISA_RELAY_* variables", path.display()),
            None => "in the AISA_RELAY_* variables".into(),
        })?;
    if let Some(dir) = &common.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(url) = &common.database_url {
        config.database_url = Some(url.clone());
    }
    config.validate()?;
    Ok((config, applied))
}

fn apply_serve_args(config: &mut RelayConfig, args: ServeArgs) {
    if let Some(v) = args.quic_listen {
        config.quic_listen = v;
    }
    if let Some(v) = args.http_listen {
        config.http_listen = v;
    }
    if let Some(v) = args.public_host {
        config.public_host = v;
    }
    if let Some(v) = args.web_root {
        config.web_root = Some(v);
    }
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls_cert = Some(cert);
        config.tls_key = Some(key);
    }
    if let Some(v) = args.node_name {
        config.node_name = v;
    }
    if let Some(v) = args.max_connections_per_ip {
        config.max_connections_per_ip = v;
    }
    if let Some(v) = args.metrics_addr {
        config.metrics_addr = Some(v);
    }
    if let Some(v) = args.jwt_secret {
        config.jwt_secret = Some(v);
    }
}

async fn serve(config: RelayConfig) -> anyhow::Result<()> {
    let relay = aisa_relay::start(config).await?;
    println!(
        "relay-edge: http://{} (QUIC/WebTransport on udp {}), certificate sha-256 {}",
        relay.http_addr,
        relay.quic_addr,
        hex::encode(relay.cert_sha256())
    );
    shutdown_signal(&relay).await;
    eprintln!("relay-edge: shutting down");
    relay.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// Waits for Ctrl-C or `SIGTERM`; on `SIGHUP` meanwhile, loads the TLS certificate
/// files again.
async fn shutdown_signal(relay: &aisa_relay::RelayHandle) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hangup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            let _ = ctrl_c.await;
            return;
        };
        tokio::pin!(ctrl_c);
        loop {
            tokio::select! {
                _ = &mut ctrl_c => return,
                _ = term.recv() => return,
                _ = hangup.recv() => match relay.reload_tls() {
                    Ok(true) => tracing::info!("SIGHUP: TLS certificate files loaded"),
                    Ok(false) => tracing::info!("SIGHUP: no TLS certificate files configured (a development certificate renews itself)"),
                    Err(err) => tracing::warn!(%err, "SIGHUP: TLS certificate files not loaded; keeping the current certificate"),
                },
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = relay;
        let _ = ctrl_c.await;
    }
}

async fn user(config: RelayConfig, cmd: UserCommand) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)?;
    let store = Store::open_with(&config.database_url(), &config.database).await?;
    match cmd {
        UserCommand::Add {
            email,
            password,
            if_missing,
        } => {
            if !email.contains('@') {
                bail!("{email:?} is not an email address");
            }
            if store.user_by_email(&email).await?.is_some() {
                if if_missing {
                    println!("user {email} already exists");
                    return Ok(());
                }
                bail!("a user with email {email} already exists");
            }
            let password = match password {
                Some(p) => p,
                None => {
                    let mut p = String::new();
                    std::io::stdin().read_to_string(&mut p)?;
                    p.trim_end_matches(['\n', '\r']).to_owned()
                }
            };
            if password.len() < 8 {
                bail!("a password has at least 8 characters");
            }
            let hash = aisa_relay::auth::hash_password(&password)?;
            let user = store.create_user(&email, &hash).await?;
            println!("added user {} ({})", user.email, user.id);
        }
        UserCommand::List => {
            for u in store.list_users().await? {
                println!(
                    "{}\t{}\t{}\t{}",
                    u.id,
                    u.email,
                    u.plan_id,
                    if u.disabled { "disabled" } else { "active" }
                );
            }
        }
        UserCommand::Disable { email } => {
            if !store.set_user_disabled(&email, true).await? {
                bail!("no user with email {email}");
            }
            println!("disabled {email}");
        }
        UserCommand::Delete { email } => {
            if !store.delete_user(&email).await? {
                bail!("no user with email {email}");
            }
            println!("deleted {email} and their devices");
        }
        UserCommand::Enable { email } => {
            if !store.set_user_disabled(&email, false).await? {
                bail!("no user with email {email}");
            }
            println!("enabled {email}");
        }
        UserCommand::Plan { email, plan } => {
            if !store.set_user_plan(&email, &plan).await? {
                bail!("no user with email {email}, or no plan {plan:?}");
            }
            println!("{email} is on plan {plan}");
        }
    }
    Ok(())
}

async fn apps(config: RelayConfig, cmd: AppsCommand) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)?;
    let store = Store::open_with(&config.database_url(), &config.database).await?;
    match cmd {
        AppsCommand::List => {
            let owners: std::collections::HashMap<String, String> = store
                .list_users()
                .await?
                .into_iter()
                .map(|u| (u.id, u.email))
                .collect();
            for listing in store.list_apps(None, None, true).await? {
                let app = &listing.app;
                let mut versions = store.app_versions(&app.id).await?;
                versions.sort_by(|a, b| {
                    let parse = |v: &str| semver::Version::parse(v).ok();
                    parse(&b.version).cmp(&parse(&a.version))
                });
                let latest = aisa_relay::marketplace::newest(
                    listing.live_versions.iter().map(String::as_str),
                )
                .unwrap_or("-");
                let versions: Vec<String> = versions
                    .iter()
                    .map(|v| {
                        if v.yanked {
                            format!("{} (yanked)", v.version)
                        } else {
                            v.version.clone()
                        }
                    })
                    .collect();
                println!(
                    "{}\t{}\t{}\tlatest {}\t{} installs\t{}",
                    app.id,
                    app.name,
                    owners
                        .get(&app.owner_id)
                        .map_or("(deleted user)", String::as_str),
                    latest,
                    listing.installs,
                    versions.join(", ")
                );
            }
        }
        AppsCommand::Yank { id, version } => {
            if !aisa_relay::marketplace::yank_version(&store, &id, &version).await? {
                bail!("no version {version} of app {id}");
            }
            println!("yanked {id} {version}");
        }
    }
    Ok(())
}
