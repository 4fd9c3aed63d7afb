//! `desktop-node update`: check, download, verify, swap, restart, confirm or roll back
//! (`aisa_node::update` has the rules; this is the command around them).

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use aisa_node::config::{Home, NodeConfig};
use aisa_node::update::{self, UpdateConfig, download, pending, swap};
use anyhow::{Context, bail};
use clap::Args;

/// `desktop-node update` options.
#[derive(Args)]
pub struct UpdateArgs {
    /// Only say whether a newer version exists.
    #[arg(long)]
    check: bool,
    /// Install without asking.
    #[arg(long, short = 'y')]
    yes: bool,
    /// Put the previous version back (after an update that misbehaves later).
    #[arg(long, conflicts_with_all = ["check", "yes"])]
    rollback: bool,
}

/// Runs `desktop-node update`.
pub async fn update(home: &Home, args: UpdateArgs) -> anyhow::Result<()> {
    let config = home.load_config().map_err(anyhow::Error::msg)?;
    let installed = std::env::current_exe().context("finding this binary")?;
    if args.rollback {
        return roll_back_by_hand(home.dir(), &installed);
    }
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    let Some(release) = update::check(&config.update, &config.relay_url, &client).await? else {
        println!("desktop-node {} is up to date", update::VERSION);
        return Ok(());
    };
    println!(
        "desktop-node {} is available (running {}): {} bytes from {}",
        release.version,
        update::VERSION,
        release.size,
        release.url
    );
    if args.check {
        return Ok(());
    }
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            bail!("run `desktop-node update --yes` to install it without a prompt");
        }
        eprint!("Install it now? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !answer.trim().eq_ignore_ascii_case("y") {
            println!("not installed");
            return Ok(());
        }
    }

    let download_to = swap::download_path(&installed);
    let bar = indicatif::ProgressBar::new(release.size);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let fetched = download::download(&client, &release, &download_to, |done, _| {
        bar.set_position(done)
    })
    .await;
    bar.finish_and_clear();
    fetched?;

    let swapped = swap::install(&download_to, &installed).with_context(|| {
        let _ = std::fs::remove_file(&download_to);
        format!("replacing {}", installed.display())
    })?;
    pending::write(
        home.dir(),
        &pending::Pending {
            from_version: update::VERSION.into(),
            to_version: release.version.clone(),
            installed_sha256: release.sha256.clone(),
            swapped_at: update::unix_now(),
            confirmed_at: None,
        },
    )
    .context("recording the update")?;
    println!(
        "installed desktop-node {} at {}",
        release.version,
        installed.display()
    );

    if config.update.restart_command.is_empty() {
        println!(
            "start desktop-node to finish; if it misbehaves, `desktop-node update --rollback` puts {} back",
            update::VERSION
        );
        return Ok(());
    }
    restart(&config.update).context("restarting the node")?;
    println!(
        "waiting up to {} s for desktop-node {} to connect to the relay",
        config.update.grace_secs, release.version
    );
    if wait_for_confirmation(home.dir(), config.update.grace()).await {
        swap::finish(&swapped);
        pending::clear(home.dir());
        println!("desktop-node {} is running", release.version);
        return Ok(());
    }
    swap::roll_back(&swapped).context("rolling back")?;
    pending::clear(home.dir());
    let restarted = restart(&config.update);
    bail!(
        "desktop-node {} did not connect to the relay within {} s; rolled back to {}{}",
        release.version,
        config.update.grace_secs,
        update::VERSION,
        match restarted {
            Ok(()) => " and restarted it".to_owned(),
            Err(e) => format!(", but restarting it failed: {e:#}"),
        }
    )
}

/// Runs `[update] restart_command`.
fn restart(config: &UpdateConfig) -> anyhow::Result<()> {
    let Some((program, args)) = config.restart_command.split_first() else {
        return Ok(());
    };
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("running {program}"))?;
    if !status.success() {
        bail!("{} exited with {status}", config.restart_command.join(" "));
    }
    Ok(())
}

/// Whether the new binary confirmed itself within `grace`.
async fn wait_for_confirmation(home: &Path, grace: Duration) -> bool {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if pending::read(home).is_some_and(|p| p.confirmed_at.is_some()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// `desktop-node update --rollback`.
fn roll_back_by_hand(home: &Path, installed: &Path) -> anyhow::Result<()> {
    let swapped = swap::Swapped {
        installed: installed.to_owned(),
        backup: swap::backup_path(installed),
    };
    if !swapped.backup.exists() {
        bail!(
            "there is no previous version to go back to ({} does not exist)",
            swapped.backup.display()
        );
    }
    swap::roll_back(&swapped).context("rolling back")?;
    pending::clear(home);
    println!(
        "the previous version is back at {}; restart desktop-node",
        installed.display()
    );
    Ok(())
}

/// For `run`: when `[update] check_in_background` is on, looks for a newer version a
/// minute after start and then once a day, and logs what it finds (never installs).
pub async fn check_in_background(config: NodeConfig) {
    if !config.update.check_in_background || config.update.trusted_keys.is_empty() {
        return;
    }
    let Ok(client) = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
    else {
        return;
    };
    tokio::time::sleep(Duration::from_secs(60)).await;
    loop {
        match update::check(&config.update, &config.relay_url, &client).await {
            Ok(Some(release)) => tracing::info!(
                version = %release.version,
                "a new desktop-node is available: run `desktop-node update`"
            ),
            Ok(None) => tracing::debug!("desktop-node is up to date"),
            Err(err) => tracing::warn!(%err, "update check failed"),
        }
        tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
    }
}
