//! `desktop-node`: the AI SuperApp agent on a person's own machine.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
mod cli;

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
    let home = Home::new(cli.home.or_else(|| {
        cli::env::renamed_var(cli::env::HOME_VAR, cli::env::OLD_HOME_VAR).map(PathBuf::from)
    }));
    // `run` also logs to daily files in the home folder; other commands only to stderr.
    let log_dir = matches!(cli.command, Command::Run(_)).then(|| home.dir().join("logs"));
    let _log_guard = aisa_node::logs::init(log_dir.as_deref())?;
    match cli.command {
        Command::Login(args) => cli::login::login(&home, args).await,
        Command::Run(args) => run(&home, args).await,
        Command::Apps(cmd) => cli::apps::run(&home, cmd).await,
        Command::Keys(cmd) => cli::keys::run(&home, cmd),
        Command::Pair => cli::pair::pair(&home),
        Command::Browsers(cmd) => cli::pair::browsers(&home, cmd),
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
    let cli::keys::RunSecrets {
        token,
        identity,
        provider_key,
    } = cli::keys::load_for_run(home, config.ai.provider.name())?;
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
    let js_runtime = match aisa_node::js_apps::locate_runtime(home.dir()) {
        Ok(path) => match aisa_node::js_apps::load_runtime(&sandbox, &path) {
            Ok(module) => Some(module),
            Err(err) => {
                tracing::warn!(%err, "JavaScript apps will not run");
                None
            }
        },
        Err(err) => {
            tracing::warn!(%err, "JavaScript apps will not run");
            None
        }
    };
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
    let ai = aisa_node::ai::build(
        config.ai.provider,
        &config.ai.base_url(),
        &config.ai.model(),
        api_key,
    )?;
    tracing::info!(provider = config.ai.provider.name(), base_url = %config.ai.base_url(), model = %config.ai.model(), "AI provider");
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
        .with_installer(installer, js_runtime)
        .with_admission(config.limits.admission(cpus))
        .with_e2e(aisa_node::e2e::E2eState::new(
            aisa_node::secrets::Zeroizing::new(identity.secret_bytes()),
            config.e2e.required,
            home.dir().to_owned(),
            config.device_id.clone(),
        )),
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
    tokio::spawn(ctx.clone().watch_apps(stop.clone()));
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop_tx.send(true);
    });
    node::run(ctx, target, stop).await?;
    Ok(())
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
