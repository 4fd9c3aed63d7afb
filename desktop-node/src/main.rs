//! `desktop-node`: the AI SuperApp agent on a person's own machine.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
mod cli;
mod face;
mod notify;

use aisa_node::ai::ProviderKind;
use aisa_node::config::Home;
use aisa_node::installer::Installer;
use aisa_node::installer::market::Market;
use aisa_node::node::{self, NodeContext, RelayTarget};
use aisa_node::sandbox::{Sandbox, SandboxConfig};

/// Runs AI mini-apps for your browser, on this machine, with your own AI keys.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The node's home folder (configuration, secrets, installed apps).
    #[arg(long, global = true, env = "AISA_NODE_HOME")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Register this machine as a device of your account at a relay (prints a code to
    /// approve in your browser; `--email` signs in with a password instead).
    Login(cli::login::LoginArgs),
    /// Connect to the relay and run actions until stopped.
    Run(RunArgs),
    /// Manage installed mini-apps.
    #[command(subcommand)]
    Apps(cli::apps::AppsCommand),
    /// Manage the AI providers' API keys in the node's secret store.
    #[command(subcommand)]
    Keys(cli::keys::KeysCommand),
    /// Pair a browser for end-to-end encryption: prints a one-time link and QR code.
    Pair,
    /// Manage the browsers paired for end-to-end encryption.
    #[command(subcommand)]
    Browsers(cli::pair::BrowsersCommand),
    /// Update desktop-node from the signed release manifest (or roll back).
    Update(cli::update::UpdateArgs),
    /// Print this build's version, protocol and platform.
    Version,
    /// Open the running node's desktop face (status, install approvals, keys, pairing,
    /// logs) in the browser; the node serves it with `run --face`.
    Face(face::FaceArgs),
}

#[derive(Args)]
struct RunArgs {
    /// AI provider: openai, anthropic, google or local (overrides node.toml).
    #[arg(long, env = "AISA_AI_PROVIDER", value_parser = parse_provider)]
    ai_provider: Option<ProviderKind>,
    /// Base URL of the provider's API (overrides node.toml).
    #[arg(long, env = "AISA_AI_BASE_URL")]
    ai_base_url: Option<String>,
    /// Model name (overrides node.toml).
    #[arg(long, env = "AISA_AI_MODEL")]
    ai_model: Option<String>,
    /// More models a run may choose in the web app, comma-separated (overrides
    /// `[ai] models` in node.toml).
    #[arg(long, env = "AISA_AI_MODELS", value_delimiter = ',')]
    ai_models: Option<Vec<String>>,
    /// Serve the desktop face on 127.0.0.1 beside the node (as `[face] enabled = true`);
    /// `desktop-node face` opens it.
    #[arg(long, env = "AISA_NODE_FACE")]
    face: bool,
}

fn main() -> anyhow::Result<()> {
    // Before any other thread exists: keyring credentials are per thread, and threads
    // started later inherit this one's.
    if let Err(err) = aisa_node::secrets::ensure_session_keyring() {
        eprintln!("note: no session keyring ({err}); the keyutils store may not work");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async_main())
}

async fn async_main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_)) {
        quiet_on_closed_pipe();
    }
    let home = Home::new(cli.home.or_else(|| {
        cli::env::renamed_var(cli::env::HOME_VAR, cli::env::OLD_HOME_VAR).map(PathBuf::from)
    }));
    // `run` also logs to daily files in the home folder; other commands only to stderr.
    let log_dir = matches!(cli.command, Command::Run(_)).then(|| home.log_dir().to_owned());
    let _log_guard = aisa_node::logs::init(log_dir.as_deref())?;
    match cli.command {
        Command::Login(args) => cli::login::login(&home, args).await,
        Command::Run(args) => run(&home, args).await,
        Command::Apps(cmd) => cli::apps::run(&home, cmd).await,
        Command::Keys(cmd) => cli::keys::run(&home, cmd),
        Command::Pair => cli::pair::pair(&home),
        Command::Browsers(cmd) => cli::pair::browsers(&home, cmd),
        Command::Update(args) => cli::update::update(&home, args).await,
        Command::Face(args) => face::command(&home, args),
        Command::Version => {
            println!(
                "desktop-node {}\nprotocol {}\nplatform {}",
                aisa_node::update::VERSION,
                aisa_node::update::protocol(),
                aisa_miniapp::release::platform()
            );
            Ok(())
        }
    }
}

/// A command whose output goes to a pipe that closes early (`desktop-node version | grep
/// -q …`) ends quietly, as Unix tools do, instead of panicking on "Broken pipe": the
/// default action of SIGPIPE, which Rust's runtime ignores. Not for `run`, which keeps
/// going whatever its reader does (its sockets see EPIPE as an error either way: Rust
/// sends with MSG_NOSIGNAL on Linux and sets SO_NOSIGPIPE on macOS).
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    #[allow(unsafe_code)]
    // SAFETY: setting a signal's disposition to its default has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn parse_provider(text: &str) -> Result<ProviderKind, String> {
    match text {
        "openai" => Ok(ProviderKind::OpenAi),
        "anthropic" => Ok(ProviderKind::Anthropic),
        "google" | "gemini" => Ok(ProviderKind::Google),
        "local" => Ok(ProviderKind::Local),
        other => Err(format!(
            "unknown provider {other:?}: openai, anthropic, google or local"
        )),
    }
}

async fn run(home: &Home, args: RunArgs) -> anyhow::Result<()> {
    let mut config = home.load_config().map_err(anyhow::Error::msg)?;
    if let Some(provider) = args.ai_provider {
        config.ai.provider = provider;
    }
    if let Some(url) = args.ai_base_url {
        config.ai.base_url = Some(url);
    }
    if let Some(model) = args.ai_model {
        config.ai.model = Some(model);
    }
    if let Some(models) = args.ai_models {
        config.ai.models = models;
    }
    let cli::keys::RunSecrets {
        token,
        identity,
        provider_key,
    } = cli::keys::load_for_run(home, config.ai.provider.name())?;
    // Crash reports (aisa_node::crash): written locally for every panic, without the
    // secrets registered here; uploaded at each connection only with consent.
    let crash_dir = home.log_dir().join(aisa_node::crash::FOLDER);
    aisa_node::crash::install(crash_dir.clone());
    aisa_node::crash::register_secret("device_token", token.trim());
    if let Ok(passphrase) = std::env::var("AISA_PASSPHRASE") {
        aisa_node::crash::register_secret("passphrase", &passphrase);
    }
    aisa_node::crash::test_trigger_from_env();
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let sandbox = Sandbox::with_config(SandboxConfig {
        max_memory_bytes: config.limits.memory_mib << 20,
        cache_dir: Some(home.module_cache_dir()),
        cache_key: Some(module_cache_key(
            &aisa_node::secrets::Zeroizing::new(identity.secret_bytes())[..],
        )),
        guest_threads: config.limits.guest_threads.unwrap_or(cpus),
        host_quotas: config.limits.host_quotas(),
        ..SandboxConfig::default()
    })?;
    // Loaded when an installed JavaScript app first needs it (built into the binary,
    // or found beside it / in the home folder).
    let js_runtime =
        aisa_node::js_apps::LazyRuntime::new(aisa_node::js_apps::locate_runtime(home.dir()));
    let installer = Installer::new(
        home,
        Some(Market::new(&config.relay_url)),
        config.trusted_keys.clone(),
        Some(token.trim().to_owned()),
    );
    // The environment variable overrides the store (development, tests).
    let api_key = config
        .ai
        .api_key_env()
        .and_then(|var| std::env::var(var).ok())
        .or_else(|| provider_key.map(|k| k.to_string()));
    if let Some(key) = &api_key {
        aisa_node::crash::register_secret("provider_key", key);
    }
    let redactions: Vec<String> = api_key.iter().cloned().collect();
    // The default model and any others a run may choose (`[ai] models`), one adapter each.
    let ai_models = aisa_node::ai::AiModels::build(
        config.ai.provider,
        &config.ai.base_url(),
        &config.ai.model(),
        &config.ai.models,
        api_key,
    )?;
    let ai = ai_models
        .default_adapter()
        .ok_or_else(|| anyhow::anyhow!("no AI model is configured ([ai] model)"))?;
    tracing::info!(provider = config.ai.provider.name(), base_url = %config.ai.base_url(), models = ?ai_models.names(), "AI provider");
    // The run history (`[history]`): a run's record never holds the provider's key.
    let history = if config.history.enabled {
        let opened = aisa_node::history::History::open(home.dir(), config.history.clone())
            .map_err(|e| anyhow::anyhow!("{e} ({})", home.dir().join("history").display()))?;
        Some(opened.with_redactions(redactions))
    } else {
        None
    };
    let ctx = Arc::new(
        NodeContext::new(
            config.device_id.clone(),
            token.trim().to_owned(),
            identity.public_bytes(),
            sandbox,
            Default::default(),
            ai,
            config.limits.to_limits(),
            home.dir().to_owned(),
        )
        .with_installer(installer, None)
        .with_ai_models(ai_models)
        .with_lazy_js_runtime(js_runtime)
        .with_admission(config.limits.admission(cpus))
        .with_e2e(aisa_node::e2e::E2eState::new(
            aisa_node::secrets::Zeroizing::new(identity.secret_bytes()),
            config.e2e.required,
            home.dir().to_owned(),
            config.device_id.clone(),
        ))
        .with_history(history)
        .with_files(config.files.clone()),
    );
    ctx.reload_apps().await;
    let target = RelayTarget {
        quic_addr: config.quic_addr.clone(),
        server_name: config.server_name.clone(),
        cert_sha256: config
            .cert_sha256
            .as_deref()
            .map(node::parse_pin)
            .transpose()
            .map_err(anyhow::Error::msg)?,
        pin_from: config.cert_pin_from_relay.then(|| config.relay_url.clone()),
        // Where UDP is blocked: the relay's HTTP(S) port (docs/desktop.md).
        tcp_url: Some(config.relay_url.clone()),
        path: node::PathConfig::default(),
    };
    println!(
        "desktop-node: device {} connecting to {}; identity {}",
        config.device_id,
        config.quic_addr,
        aisa_crypto::fingerprint(&identity.public_bytes())
    );
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    // The tray icon's Quit stops the node as a signal does.
    let quit = stop_tx.clone();
    tokio::spawn(ctx.clone().watch_apps(stop.clone()));
    tokio::spawn(aisa_node::update::pending::confirm_when_online(
        home.dir().to_owned(),
        ctx.online(),
    ));
    tokio::spawn(cli::update::check_in_background(config.clone()));
    if config.crash_reports.upload {
        tokio::spawn(aisa_node::crash::upload_when_online(
            crash_dir,
            config.relay_url.clone(),
            token.trim().to_owned(),
            ctx.online(),
        ));
    }
    tokio::spawn(async move {
        let signal = stop_signal().await;
        tracing::info!(signal, "stopping");
        let _ = stop_tx.send(true);
    });
    // The desktop face (src/face/): a page on loopback for the person at the desktop.
    let face = if args.face || config.face.enabled {
        let face = face::serve(home, &config, ctx.clone(), stop.clone()).await?;
        println!(
            "desktop face on http://{}/ (open it with `desktop-node face`)",
            face.addr
        );
        if config.face.open_at_start
            && let Err(err) = face::open(&face.url)
        {
            tracing::warn!(err = %format!("{err:#}"), "cannot open the desktop face");
        }
        Some(face)
    } else {
        None
    };
    // Native notifications when an install waits for approval (src/notify/, `[notify]`).
    // And the tray icon (Linux), with Open (the face) and Quit.
    let notifier = (config.notify.enabled || config.notify.tray).then(|| {
        tokio::spawn(notify::watch(
            ctx.clone(),
            face.as_ref().map(|f| f.url.clone()),
            stop.clone(),
            notify::Options {
                notifications: config.notify.enabled,
                tray: config.notify.tray.then_some(quit),
            },
        ))
    });
    let ran = node::run(ctx, target, stop).await;
    if let Some(notifier) = notifier {
        // It withdraws its notifications when `stop` turns; bounded, it must not hold
        // the node up.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), notifier).await;
    }
    if let Some(face) = face {
        face.stop().await;
    }
    ran?;
    Ok(())
}

/// Waits for the first request to stop and names it: SIGTERM (service managers,
/// `kill`), SIGINT (Ctrl-C), SIGHUP (the terminal closed) on Unix; Ctrl-C, Ctrl-Break,
/// the console window closing, logoff and system shutdown on Windows. The node then
/// lets its running actions finish (bounded) and tells the relay it is leaving.
#[cfg(unix)]
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = hup.recv() => "SIGHUP",
    }
}

/// See the Unix version. Windows gives a console handler about 5 s after a close,
/// logoff or shutdown event before it ends the process, so those get what draining
/// fits in that time.
#[cfg(windows)]
async fn stop_signal() -> &'static str {
    use tokio::signal::windows;
    let (Ok(mut c), Ok(mut brk), Ok(mut close), Ok(mut logoff), Ok(mut shutdown)) = (
        windows::ctrl_c(),
        windows::ctrl_break(),
        windows::ctrl_close(),
        windows::ctrl_logoff(),
        windows::ctrl_shutdown(),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return "Ctrl-C";
    };
    tokio::select! {
        _ = c.recv() => "Ctrl-C",
        _ = brk.recv() => "Ctrl-Break",
        _ = close.recv() => "console closed",
        _ = logoff.recv() => "logoff",
        _ = shutdown.recv() => "system shutdown",
    }
}

/// The key that authenticates the compiled-module cache, derived from the identity
/// secret (so only this node can write entries it will load).
fn module_cache_key(identity_secret: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(b"aisa desktop-node module cache key v1\0");
    hash.update(identity_secret);
    hash.finalize().into()
}
