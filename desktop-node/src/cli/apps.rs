//! `desktop-node apps …`: install from the marketplace, approve or deny browser
//! requests, enable, disable, update, roll back, uninstall, list.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use aisa_miniapp::AppId;
use aisa_node::apps::{self, AppInfo};
use aisa_node::config::Home;
use aisa_node::installer::approvals::{Decision, PendingInstall};
use aisa_node::installer::layout::ApprovedPermissions;
use aisa_node::installer::market::Market;
use aisa_node::installer::{Fetched, Installer};
use aisa_node::sandbox::Sandbox;
use anyhow::{Context, bail};
use clap::Subcommand;

/// `desktop-node apps …`.
#[derive(Subcommand)]
pub enum AppsCommand {
    /// Install a mini-app from the relay's marketplace: ID or ID@VERSION.
    Install {
        /// `ID` for the latest version, or `ID@VERSION`.
        app: String,
        /// Approve the permissions without asking (for scripts).
        #[arg(long)]
        yes: bool,
    },
    /// Install a mini-app from a local wasm module (for development; unsigned).
    InstallLocal {
        /// The compiled module (`logic.wasm`).
        wasm: PathBuf,
        /// The app id.
        #[arg(long)]
        id: AppId,
        /// Its version, MAJOR.MINOR.PATCH.
        #[arg(long, default_value = "0.1.0")]
        version: String,
        /// The actions it accepts (repeat or comma-separate).
        #[arg(long, value_delimiter = ',', required = true)]
        action: Vec<String>,
        /// A name for people.
        #[arg(long)]
        name: Option<String>,
    },
    /// List installed mini-apps and their versions.
    List,
    /// List install requests from the browser waiting for your decision.
    Pending,
    /// Approve a waiting install request from the browser.
    Approve {
        /// The app id.
        id: String,
        /// The version, when several are waiting.
        #[arg(long)]
        version: Option<String>,
        /// The bundle's hash as `apps pending` shows it (a prefix is enough): approves
        /// exactly that bundle. Without it the request is shown and, in a terminal,
        /// confirmed.
        #[arg(long)]
        hash: Option<String>,
    },
    /// Deny a waiting install request from the browser.
    Deny {
        /// The app id.
        id: String,
        /// The version, when several are waiting.
        #[arg(long)]
        version: Option<String>,
        /// The bundle's hash, when several requests for the version are waiting.
        #[arg(long)]
        hash: Option<String>,
    },
    /// Let an installed app's actions run again.
    Enable {
        /// The app id.
        id: AppId,
    },
    /// Stop an installed app's actions from running (it stays installed).
    Disable {
        /// The app id.
        id: AppId,
    },
    /// Install the newest marketplace version of one app, or of every installed app.
    Update {
        /// The app id; every installed app when absent.
        id: Option<AppId>,
        /// Approve new permissions without asking (for scripts).
        #[arg(long)]
        yes: bool,
    },
    /// Go back to the previous installed version of an app.
    Rollback {
        /// The app id.
        id: AppId,
    },
    /// Remove an app and all its versions (its data in the home folder's `data/ID/`
    /// stays).
    Uninstall {
        /// The app id.
        id: AppId,
    },
}

/// Runs an `apps` subcommand.
pub async fn run(home: &Home, cmd: AppsCommand) -> anyhow::Result<()> {
    match cmd {
        AppsCommand::Install { app, yes } => {
            let installer = installer(home, true)?;
            let (id, version) = match app.split_once('@') {
                Some((id, v)) => (id.to_owned(), Some(v.to_owned())),
                None => (app, None),
            };
            let id = AppId::parse(&id)?.to_string();
            let fetched = download(&installer, &id, version.as_deref()).await?;
            let approved = approve_interactively(&fetched, &fetched.permissions, yes)?;
            finish_install(&installer, &fetched, approved).await
        }
        AppsCommand::InstallLocal {
            wasm,
            id,
            version,
            action,
            name,
        } => {
            let sandbox = Sandbox::new()?;
            let manifest = AppInfo {
                name: name.unwrap_or_else(|| id.to_string()),
                id: id.to_string(),
                version,
                actions: action,
                enabled: true,
            };
            let dir = apps::install_local(&home.apps_dir(), &sandbox, &wasm, &manifest)?;
            println!(
                "installed {}@{} in {}",
                manifest.id,
                manifest.version,
                dir.display()
            );
            Ok(())
        }
        AppsCommand::List => list(home),
        AppsCommand::Pending => {
            let installer = installer(home, false)?;
            let pending = installer.approvals.list();
            if pending.is_empty() {
                println!("no install requests are waiting");
            }
            for request in pending {
                println!(
                    "{}@{}  {}  (bundle sha256 {})",
                    request.id,
                    request.version,
                    request.name,
                    request.short_hash()
                );
                print_permissions(&request.permissions);
                println!(
                    "  approve: desktop-node apps approve {} --version {} --hash {}",
                    request.id,
                    request.version,
                    request.short_hash()
                );
            }
            Ok(())
        }
        AppsCommand::Approve { id, version, hash } => {
            let hash = hash.as_deref();
            decide(home, &id, version.as_deref(), hash, Decision::Approve).await
        }
        AppsCommand::Deny { id, version, hash } => {
            let hash = hash.as_deref();
            decide(home, &id, version.as_deref(), hash, Decision::Deny).await
        }
        AppsCommand::Enable { id } => {
            installer(home, false)?.set_enabled(&id, true)?;
            println!("{id} enabled");
            Ok(())
        }
        AppsCommand::Disable { id } => {
            installer(home, false)?.set_enabled(&id, false)?;
            println!(
                "{id} disabled; its actions are refused until `desktop-node apps enable {id}`"
            );
            Ok(())
        }
        AppsCommand::Update { id, yes } => update(home, id, yes).await,
        AppsCommand::Rollback { id } => {
            let version = installer(home, false)?.rollback(&id)?;
            println!("{id} now runs version {version}");
            Ok(())
        }
        AppsCommand::Uninstall { id } => {
            installer(home, false)?.uninstall(&id)?;
            println!("{id} uninstalled");
            Ok(())
        }
    }
}

/// The mini-app manager for this home; `online` needs the relay from `node.toml`.
fn installer(home: &Home, online: bool) -> anyhow::Result<Installer> {
    match home.load_config() {
        Ok(config) => {
            // The device token (in the secret store) only lets the marketplace count the
            // install; commands that install open the store, the others need not.
            let token = if online { device_token(home) } else { None };
            Ok(Installer::new(
                home,
                Some(Market::new(&config.relay_url)),
                config.trusted_keys.clone(),
                token,
            ))
        }
        Err(err) if online => bail!(err),
        Err(_) => Ok(Installer::new(home, None, Vec::new(), None)),
    }
}

/// The device token from the node's secret store; `None` (with a warning) when the store
/// cannot be opened.
fn device_token(home: &Home) -> Option<String> {
    let token = crate::cli::keys::with_store(home, |store| {
        Ok(store.get(aisa_node::secrets::DEVICE_TOKEN)?)
    });
    match token {
        Ok(Some(token)) => Some(String::from_utf8_lossy(&token).trim().to_owned()),
        Ok(None) => None,
        Err(err) => {
            eprintln!("warning: the install will not be counted by the marketplace: {err:#}");
            None
        }
    }
}

/// Downloads and checks a bundle with a progress bar on the terminal.
async fn download(
    installer: &Installer,
    id: &str,
    version: Option<&str>,
) -> anyhow::Result<Fetched> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(format!("downloading {id}"));
    let fetched = installer
        .fetch(id, version, |received, total| {
            if let Some(total) = total {
                bar.set_length(total);
            }
            bar.set_position(received);
        })
        .await;
    bar.finish_and_clear();
    let fetched = fetched?;
    println!(
        "{} {} ({}): checksum and signature (key {}) verified",
        fetched.name(),
        fetched.version(),
        fetched.id(),
        fetched.key_id
    );
    Ok(fetched)
}

/// Prints what an app asks for, one `  - ` line each: the lines the desktop face shows
/// too ([`ApprovedPermissions::shown`]).
fn print_permissions(permissions: &ApprovedPermissions) {
    for line in permissions.shown() {
        println!("  - {line}");
    }
}

/// Shows what the app asks for and asks the person; `yes` approves without asking.
fn approve_interactively(
    fetched: &Fetched,
    asked: &ApprovedPermissions,
    yes: bool,
) -> anyhow::Result<ApprovedPermissions> {
    println!("{} {} asks to:", fetched.name(), fetched.version());
    print_permissions(asked);
    if yes {
        println!("approved (--yes)");
        return Ok(asked.clone());
    }
    if !std::io::stdin().is_terminal() {
        bail!("not installed: approve in a terminal, or pass --yes");
    }
    print!("Install and allow this? [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(asked.clone())
    } else {
        bail!("not installed: you declined")
    }
}

async fn finish_install(
    installer: &Installer,
    fetched: &Fetched,
    approved: ApprovedPermissions,
) -> anyhow::Result<()> {
    let dir = installer.install(fetched, approved)?;
    installer.report_install(fetched).await;
    println!(
        "installed {}@{} in {}",
        fetched.id(),
        fetched.version(),
        dir.display()
    );
    Ok(())
}

/// Records a decision on exactly one waiting request (its bundle hash and permissions);
/// a running node acts on it. Without a running node (the request is still there after a
/// few seconds), this command installs the approved bundle itself.
async fn decide(
    home: &Home,
    id: &str,
    version: Option<&str>,
    hash: Option<&str>,
    decision: Decision,
) -> anyhow::Result<()> {
    let installer = installer(home, false)?;
    let id = AppId::parse(id)?;
    let request = installer.approvals.select(id.as_str(), version, hash)?;
    if decision == Decision::Approve {
        println!(
            "{} {} ({}, bundle sha256 {}) asks to:",
            request.name,
            request.version,
            request.id,
            request.short_hash()
        );
        print_permissions(&request.permissions);
        // Without the hash the person has not named what they saw: confirm it here.
        if hash.is_none() && std::io::stdin().is_terminal() {
            print!("Approve this request? [y/N] ");
            std::io::stdout().flush()?;
            let mut answer = String::new();
            std::io::stdin().lock().read_line(&mut answer)?;
            if !matches!(answer.trim(), "y" | "Y" | "yes") {
                bail!("not approved: you declined");
            }
        }
    }
    println!("{}", apply_decision(home, &request, decision).await?);
    Ok(())
}

/// Records `decision` on exactly `request` (its bundle hash and permissions) and waits
/// (up to 5 s) for a running node to act on it; without one, installs the approved
/// bundle here. Returns what happened, for the person (`installed ID@VERSION`,
/// `denied ID@VERSION`). `desktop-node apps approve|deny` and the desktop face's buttons
/// both end here.
pub async fn apply_decision(
    home: &Home,
    request: &PendingInstall,
    decision: Decision,
) -> anyhow::Result<String> {
    let installer = installer(home, false)?;
    let request = request.clone();
    installer.approvals.decide(&request, decision)?;
    for _ in 0..50 {
        if !installer.approvals.is_pending(&request) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let still_pending = installer.approvals.is_pending(&request);
    match decision {
        Decision::Deny => {
            if still_pending {
                installer.approvals.remove(&request);
            }
            Ok(format!("denied {}@{}", request.id, request.version))
        }
        Decision::Approve => {
            if still_pending {
                // No node picked it up: install here.
                let installer = self::installer(home, true)?;
                let fetched = installer.install_pending(&request);
                installer.approvals.remove(&request);
                let fetched = fetched?;
                installer.report_install(&fetched).await;
            }
            let state = installer
                .apps
                .state(&AppId::parse(&request.id)?)?
                .context("the install did not complete; see the node's log")?;
            if state.active != request.version {
                bail!(
                    "the install of {}@{} did not complete; see the node's log",
                    request.id,
                    request.version
                );
            }
            Ok(format!("installed {}@{}", request.id, request.version))
        }
    }
}

async fn update(home: &Home, only: Option<AppId>, yes: bool) -> anyhow::Result<()> {
    let installer = installer(home, true)?;
    let ids = match only {
        Some(id) => vec![id],
        None => installer.apps.ids(),
    };
    for id in ids {
        let Some(state) = installer.apps.state(&id)? else {
            bail!("{id} is not installed");
        };
        let Some(record) = installer.apps.record(&id, &state.active_version()?)? else {
            println!("{id}: a development install; nothing to update from");
            continue;
        };
        let newest = installer.apps.versions(&id).last().cloned();
        let detail = match Market::new(&record.source).detail(id.as_str()).await {
            Ok(detail) => detail,
            Err(err) => {
                println!("{id}: {err}");
                continue;
            }
        };
        let latest = detail.pick(None)?.version.clone();
        let latest_v = semver::Version::parse(&latest)?;
        if newest.as_ref().is_some_and(|n| *n >= latest_v) {
            println!("{id}: {} is the newest", state.active);
            continue;
        }
        let fetched = download(&installer, id.as_str(), Some(&latest)).await?;
        // New permissions need a new approval; the same ones carry over.
        let approved = if fetched.permissions.exceeds(&record.approved) {
            println!("{id} {latest} asks for more than you approved before.");
            approve_interactively(&fetched, &fetched.permissions, yes)?
        } else {
            fetched.permissions.clone()
        };
        finish_install(&installer, &fetched, approved).await?;
    }
    Ok(())
}

fn list(home: &Home) -> anyhow::Result<()> {
    let installer = installer(home, false)?;
    let ids = installer.apps.ids();
    if ids.is_empty() {
        println!("no apps installed");
    }
    for id in ids {
        let Some(state) = installer.apps.state(&id)? else {
            continue;
        };
        let versions: Vec<String> = installer
            .apps
            .versions(&id)
            .iter()
            .map(|v| {
                if v.to_string() == state.active {
                    format!("{v} (active)")
                } else {
                    v.to_string()
                }
            })
            .collect();
        // Read from the files, not by loading the code: listing compiles nothing.
        let active = state.active_version()?;
        let actions = match apps::actions_of(&installer.apps.version_dir(&id, &active)) {
            Ok(actions) => actions.join(","),
            Err(err) => format!("(broken: {err})"),
        };
        println!(
            "{id}\t{}\t{}\tactions: {actions}",
            if state.enabled { "enabled" } else { "disabled" },
            versions.join(", ")
        );
    }
    Ok(())
}
