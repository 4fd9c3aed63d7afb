//! `aisapp`: the mini-app author's command line. Makes a new app from a template, builds
//! it, checks it, packs it into a `.aisapp` bundle, signs and verifies bundles, and
//! publishes them to a relay's developer portal. The format and the checks live in the
//! `aisa_miniapp` library; this binary only reads files, prints, and talks HTTP.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use aisa_miniapp::bundle::{LOGIC_WASM, SIGNATURE};
use aisa_miniapp::check::{CheckError, Problem};
use aisa_miniapp::template::{self, Kind};
use aisa_miniapp::{Bundle, CheckedApp, EntryKind, PublicKey, SecretKey, TrustedKeys};
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

/// Make, check, pack, sign and publish AI SuperApp mini-apps (.aisapp bundles).
#[derive(Parser)]
#[command(name = "aisapp", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    /// bot-logic.js + tools.js on the QuickJS runtime.
    Js,
    /// A Rust crate compiled to logic.wasm with the guest SDK.
    Rust,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a new app folder from a template that passes the checks as it is.
    New {
        /// The app's name (its id is made from it: "SEO Writer" → seo-writer).
        name: String,
        /// The language.
        #[arg(long, value_enum, default_value = "js")]
        kind: KindArg,
        /// Where to create it (default: ./<id>). Must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Build the app: for Rust apps, compile to wasm32 and copy the module to logic.wasm;
    /// JS apps need no compiling. Then run the checks.
    Build {
        /// The app folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Run the static checks on an app folder or a .aisapp file.
    Validate {
        /// An app folder or a .aisapp file.
        #[arg(default_value = ".")]
        path: PathBuf,
    },
    /// Check an app folder and pack it into an (unsigned) .aisapp bundle.
    Pack {
        /// The app folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The bundle to write (default: ./<id>-<version>.aisapp).
        #[arg(short, long)]
        out: Option<PathBuf>,
        /// Use this wasm module as logic.wasm instead of the folder's own (for a module
        /// built elsewhere, e.g. target/guest/wasm32-unknown-unknown/release/hello_ai.wasm).
        #[arg(long)]
        wasm: Option<PathBuf>,
    },
    /// Sign a bundle with your own key (for self-hosted platforms; the marketplace signs
    /// what you publish with the platform key). Writes signature.sig into the zip.
    Sign {
        /// The .aisapp file.
        file: PathBuf,
        /// The secret key file (made by `aisapp keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Write the signed bundle here instead of replacing FILE.
        #[arg(short, long)]
        out: Option<PathBuf>,
    },
    /// Make a new Ed25519 signing key: KEYFILE (secret, mode 0600) and KEYFILE.pub.
    Keygen {
        /// The secret key file to create (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a bundle's signature against trusted public keys, then run the checks.
    Verify {
        /// The .aisapp file.
        file: PathBuf,
        /// A trusted public key: base64, or a file holding it (repeat for several).
        #[arg(long = "trusted-key", required = true, num_args = 1..)]
        trusted_keys: Vec<String>,
    },
    /// Write the signed release manifest of a desktop-node build, for its self-update
    /// (docs/desktop.md, "Updates"). Sign with a release key (`aisapp keygen`), not the
    /// bundle-signing key.
    Release {
        /// The desktop-node binary of the release.
        binary: PathBuf,
        /// The release's version (semver).
        #[arg(long)]
        version: String,
        /// Where nodes download the binary from.
        #[arg(long)]
        url: String,
        /// The release key's secret key file.
        #[arg(long)]
        key: PathBuf,
        /// The platform the binary is for, ARCH-OS (default: this machine's).
        #[arg(long)]
        platform: Option<String>,
        /// The channel.
        #[arg(long, default_value = "stable")]
        channel: String,
        /// The tunnel protocol the release speaks, MAJOR.MINOR (the binary's
        /// `desktop-node version` prints it).
        #[arg(long)]
        protocol: String,
        /// Where to write the signed manifest (publish it as CHANNEL/PLATFORM.json).
        #[arg(short, long)]
        out: PathBuf,
    },
    /// Upload a bundle (or an app folder, packed on the way) to a relay's developer
    /// portal, which checks, signs and publishes it.
    Publish {
        /// The .aisapp file or app folder.
        path: PathBuf,
        /// The relay's base URL, e.g. https://relay.example.com (or AISA_RELAY_URL).
        #[arg(long, env = "AISA_RELAY_URL")]
        relay: Option<String>,
        /// Your access token (else sign in with --email).
        #[arg(long, env = "AISA_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Sign in with this email; the password comes from AISA_PASSWORD or stdin.
        #[arg(long, conflicts_with = "token")]
        email: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::New { name, kind, dir } => new(&name, kind, dir),
        Cmd::Build { dir } => build(&dir),
        Cmd::Validate { path } => validate(&path),
        Cmd::Pack { dir, out, wasm } => pack(&dir, out, wasm.as_deref()),
        Cmd::Sign { file, key, out } => sign(&file, &key, out),
        Cmd::Keygen { out } => keygen(&out),
        Cmd::Verify { file, trusted_keys } => verify(&file, &trusted_keys),
        Cmd::Release {
            binary,
            version,
            url,
            key,
            platform,
            channel,
            protocol,
            out,
        } => {
            let bytes =
                std::fs::read(&binary).with_context(|| format!("reading {}", binary.display()))?;
            let release = aisa_miniapp::release::Release {
                channel,
                platform: platform.unwrap_or_else(aisa_miniapp::release::platform),
                version,
                url,
                size: bytes.len() as u64,
                sha256: aisa_miniapp::checksum::sha256_hex(&bytes),
                protocol,
                published_at: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            };
            let signed = aisa_miniapp::release::sign(&release, &SecretKey::read_file(&key)?);
            // Check what we wrote the way a node will.
            let json = serde_json::to_vec_pretty(&signed)?;
            let trusted = TrustedKeys::from_keys([SecretKey::read_file(&key)?.public_key()]);
            aisa_miniapp::release::verify(&json, &trusted)?;
            std::fs::write(&out, &json).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "{}: desktop-node {} for {} on {}, {} bytes, sha256 {}, key {}",
                out.display(),
                release.version,
                release.platform,
                release.channel,
                release.size,
                release.sha256,
                signed.key_id
            );
            Ok(())
        }
        Cmd::Publish {
            path,
            relay,
            token,
            email,
        } => {
            let Some(relay) = relay.or_else(|| renamed_var("AISA_RELAY_URL", "AISAPP_RELAY"))
            else {
                bail!("give --relay URL (or set AISA_RELAY_URL)");
            };
            let token = match (token, &email) {
                (None, None) => renamed_var("AISA_TOKEN", "AISAPP_TOKEN"),
                (token, _) => token,
            };
            publish(&path, &relay, token, email)
        }
    }
}

/// A renamed environment variable: the value of `new`, else of `old` with a one-line
/// deprecation warning on stderr naming `new`. (Clap reads `new` itself; this is the
/// fallback when neither the flag nor `new` is given.)
fn renamed_var(new: &str, old: &str) -> Option<String> {
    let (value, warning) = pick_renamed(new, old, std::env::var(old).ok());
    if let Some(warning) = warning {
        eprintln!("{warning}");
    }
    value
}

/// What [`renamed_var`] does with the old variable's value: the value (an empty one
/// counts as unset) and the warning to print.
fn pick_renamed(
    new: &str,
    old: &str,
    old_value: Option<String>,
) -> (Option<String>, Option<String>) {
    match old_value.filter(|v| !v.is_empty()) {
        Some(value) => (
            Some(value),
            Some(format!("warning: {old} is deprecated; set {new} instead")),
        ),
        None => (None, None),
    }
}

// --- new --------------------------------------------------------------------------------

/// The guest SDK of the checkout this binary was built from, if it is still there.
fn guest_sdk() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/rust");
    sdk.join("Cargo.toml")
        .is_file()
        .then(|| sdk.canonicalize().ok())?
}

fn new(name: &str, kind: KindArg, dir: Option<PathBuf>) -> Result<()> {
    let id = template::id_from_name(name);
    if id.is_empty() {
        bail!("{name:?} has no letters or digits to make an app id from");
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(&id));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    let kind = match kind {
        KindArg::Js => Kind::Js,
        KindArg::Rust => Kind::Rust,
    };
    let sdk = guest_sdk();
    for (rel, contents) in template::files(kind, name, sdk.as_deref()) {
        let path = dir.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("created {} ({id}) in {}", name.trim(), dir.display());
    match kind {
        Kind::Js => println!(
            "next: edit bot-logic.js, then `aisapp validate {0}` and `aisapp pack {0}`",
            dir.display()
        ),
        Kind::Rust => {
            if sdk.is_none() {
                println!(
                    "note: point the aisa-guest dependency in Cargo.toml at the SDK (sdk/rust)"
                );
            }
            println!(
                "next: edit src/lib.rs, then `aisapp build {0}` and `aisapp pack {0}`",
                dir.display()
            )
        }
    }
    Ok(())
}

// --- checks -----------------------------------------------------------------------------

fn print_app(app: &CheckedApp) {
    let m = &app.manifest;
    println!("  {} {} ({}), entry {}", m.id, m.version, m.name, m.entry);
    println!("  actions: {}", app.actions.join(", "));
    let perms = app.permissions.describe();
    if perms.is_empty() {
        println!("  permissions: none");
    } else {
        println!("  permissions: {}", perms.join("; "));
    }
}

/// Reads an app folder's bundle; `wasm` replaces its logic.wasm.
fn read_dir_bundle(dir: &Path, wasm: Option<&Path>) -> Result<Bundle> {
    if !dir.join("manifest.json").is_file() {
        bail!(
            "{} has no manifest.json: is it an app folder?",
            dir.display()
        );
    }
    let mut bundle = Bundle::from_dir(dir)?;
    if let Some(wasm) = wasm {
        let bytes = std::fs::read(wasm).with_context(|| format!("reading {}", wasm.display()))?;
        bundle.insert(LOGIC_WASM, bytes)?;
    }
    Ok(bundle)
}

fn read_file_bundle(file: &Path) -> Result<(Vec<u8>, Bundle)> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let bundle = Bundle::from_zip_bytes(&bytes).with_context(|| format!("{}", file.display()))?;
    Ok((bytes, bundle))
}

fn checked(bundle: &Bundle) -> Result<CheckedApp> {
    aisa_miniapp::check(bundle).map_err(|e| anyhow::anyhow!("the checks failed: {e}"))
}

fn validate(path: &Path) -> Result<()> {
    if path.is_dir() {
        let bundle = read_dir_bundle(path, None)?;
        match aisa_miniapp::check(&bundle) {
            Ok(app) => {
                println!("ok: {} passes every check", path.display());
                print_app(&app);
            }
            // A Rust app before its first build: everything but the module checks out.
            Err(CheckError { problems })
                if problems == [Problem::Missing(LOGIC_WASM)]
                    && path.join("Cargo.toml").is_file() =>
            {
                println!(
                    "ok: {} passes every check but the module's: run `aisapp build {}` to make logic.wasm",
                    path.display(),
                    path.display()
                );
            }
            Err(e) => bail!("{} failed the checks: {e}", path.display()),
        }
    } else {
        let (bytes, bundle) = read_file_bundle(path)?;
        let app = checked(&bundle)?;
        println!("ok: {} passes every check", path.display());
        print_app(&app);
        println!("  sha256: {}", aisa_miniapp::checksum::sha256_hex(&bytes));
        if bundle.is_signed() {
            println!("  signed (check it with `aisapp verify --trusted-key …`)");
        } else {
            println!("  unsigned");
        }
    }
    Ok(())
}

// --- build ------------------------------------------------------------------------------

fn build(dir: &Path) -> Result<()> {
    let manifest = aisa_miniapp::Manifest::from_json(
        &std::fs::read(dir.join("manifest.json"))
            .with_context(|| format!("reading {}/manifest.json", dir.display()))?,
    )?;
    match manifest.entry {
        EntryKind::Js => println!("{} is a JS app: nothing to compile", manifest.id),
        EntryKind::Wasm => {
            if !dir.join("Cargo.toml").is_file() {
                bail!(
                    "{} has no Cargo.toml: build its logic.wasm yourself, or pack with --wasm PATH",
                    dir.display()
                );
            }
            let module = cargo_build_wasm(dir)?;
            std::fs::copy(&module, dir.join(LOGIC_WASM))
                .with_context(|| format!("copying {}", module.display()))?;
            println!(
                "built {} → {}",
                module.display(),
                dir.join(LOGIC_WASM).display()
            );
        }
    }
    validate(dir)
}

/// Runs cargo for wasm32-unknown-unknown in `dir` and returns the cdylib it made.
fn cargo_build_wasm(dir: &Path) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo")?;
    if !output.status.success() {
        bail!(
            "cargo build failed (is the target installed? `rustup target add wasm32-unknown-unknown`)"
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let module = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|f| f.as_str().map(PathBuf::from))
        })
        .rfind(|f| f.extension().is_some_and(|e| e == "wasm"));
    module.context("cargo built no .wasm module: is the crate-type \"cdylib\"?")
}

// --- pack, sign, keys, verify -------------------------------------------------------------

fn write_new_or_replace(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("aisapp.tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn pack(dir: &Path, out: Option<PathBuf>, wasm: Option<&Path>) -> Result<()> {
    let bundle = read_dir_bundle(dir, wasm)?;
    let app = checked(&bundle)?;
    let out = out.unwrap_or_else(|| {
        PathBuf::from(format!(
            "{}-{}.aisapp",
            app.manifest.id, app.manifest.version
        ))
    });
    let zip = bundle.to_zip_bytes();
    write_new_or_replace(&out, &zip)?;
    println!(
        "packed {} ({} bytes, {} files)",
        out.display(),
        zip.len(),
        bundle.files().len()
    );
    print_app(&app);
    println!("  sha256: {}", aisa_miniapp::checksum::sha256_hex(&zip));
    Ok(())
}

fn sign(file: &Path, key: &Path, out: Option<PathBuf>) -> Result<()> {
    let key = SecretKey::read_file(key)?;
    let (_, mut bundle) = read_file_bundle(file)?;
    checked(&bundle)?;
    let sig = aisa_miniapp::sign(&mut bundle, &key)?;
    let zip = bundle.to_zip_bytes();
    let out = out.unwrap_or_else(|| file.to_owned());
    write_new_or_replace(&out, &zip)?;
    println!("signed {} with key {}", out.display(), sig.key_id);
    println!("  sha256: {}", aisa_miniapp::checksum::sha256_hex(&zip));
    Ok(())
}

fn keygen(out: &Path) -> Result<()> {
    let key = SecretKey::generate()?;
    let public = key.public_key();
    let mut pub_path = out.as_os_str().to_owned();
    pub_path.push(".pub");
    let pub_path = PathBuf::from(pub_path);
    if pub_path.exists() {
        bail!("{} exists; refusing to overwrite it", pub_path.display());
    }
    key.write_file(out)?;
    std::fs::write(&pub_path, format!("{}\n", public.to_base64()))
        .with_context(|| format!("writing {}", pub_path.display()))?;
    println!("secret key: {} (keep it private)", out.display());
    println!(
        "public key: {} ({})",
        public.to_base64(),
        pub_path.display()
    );
    println!("key id:     {}", public.key_id());
    Ok(())
}

/// A trusted key given as base64 or as a file holding it.
fn trusted_key(arg: &str) -> Result<PublicKey> {
    let path = Path::new(arg);
    if path.is_file() {
        return Ok(PublicKey::read_file(path)?);
    }
    PublicKey::from_base64(arg)
        .with_context(|| format!("{arg:?} is neither a key file nor a base64 public key"))
}

fn verify(file: &Path, keys: &[String]) -> Result<()> {
    let trusted = TrustedKeys::from_keys(
        keys.iter()
            .map(|k| trusted_key(k))
            .collect::<Result<Vec<_>>>()?,
    );
    let (_, bundle) = read_file_bundle(file)?;
    let verified = aisa_miniapp::verify(&bundle, &trusted)
        .with_context(|| format!("{} is not accepted", file.display()))?;
    let app = checked(&bundle)?;
    println!(
        "ok: {} is signed by trusted key {} and passes every check",
        file.display(),
        verified.key_id()
    );
    print_app(&app);
    Ok(())
}

// --- publish ----------------------------------------------------------------------------

fn publish(path: &Path, relay: &str, token: Option<String>, email: Option<String>) -> Result<()> {
    let zip = if path.is_dir() {
        let bundle = read_dir_bundle(path, None)?;
        checked(&bundle)?;
        bundle.to_zip_bytes()
    } else {
        let (bytes, bundle) = read_file_bundle(path)?;
        checked(&bundle)?;
        if bundle.is_signed() {
            println!("note: the portal replaces {SIGNATURE} with the platform's signature");
        }
        bytes
    };
    let password = match (&token, &email) {
        (Some(_), _) => None,
        (None, Some(_)) => Some(password()?),
        (None, None) => bail!("give --token (or AISA_TOKEN), or --email to sign in"),
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let relay = relay.trim_end_matches('/').to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()?;
        let token = match (token, email, password) {
            (Some(token), _, _) => token,
            (None, Some(email), Some(password)) => {
                login(&client, &relay, &email, &password).await?
            }
            _ => unreachable!("checked above"),
        };
        let response = client
            .post(format!("{relay}/api/portal/apps"))
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/zip")
            .body(zip)
            .send()
            .await
            .with_context(|| format!("uploading to {relay}"))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            let message = body["error"].as_str().unwrap_or("no message");
            bail!("the portal refused the bundle ({status}): {message}");
        }
        println!(
            "published {} {} ({} bytes), signed by platform key {}",
            body["id"].as_str().unwrap_or("?"),
            body["version"].as_str().unwrap_or("?"),
            body["size"],
            body["key_id"].as_str().unwrap_or("?"),
        );
        println!("  sha256: {}", body["sha256"].as_str().unwrap_or("?"));
        Ok(())
    })
}

fn password() -> Result<String> {
    if let Ok(p) = std::env::var("AISA_PASSWORD") {
        return Ok(p);
    }
    let mut p = String::new();
    std::io::stdin()
        .read_to_string(&mut p)
        .context("reading the password from stdin")?;
    let p = p.lines().next().unwrap_or_default().to_owned();
    if p.is_empty() {
        bail!("no password: set AISA_PASSWORD or pipe it on stdin");
    }
    Ok(p)
}

/// Signs in; the relay answers `{"token", "refresh_token", …}`.
async fn login(
    client: &reqwest::Client,
    relay: &str,
    email: &str,
    password: &str,
) -> Result<String> {
    let response = client
        .post(format!("{relay}/api/auth/login"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .with_context(|| format!("signing in at {relay}"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!(
            "signing in failed ({status}): {}",
            body["error"].as_str().unwrap_or("no message")
        );
    }
    body["token"]
        .as_str()
        .or(body["access_token"].as_str())
        .map(str::to_owned)
        .context("the relay's sign-in answer has no token")
}

#[cfg(test)]
mod tests {
    use super::pick_renamed;

    #[test]
    fn an_old_variable_still_works_and_warns_naming_the_new_one() {
        let (value, warning) = pick_renamed("AISA_TOKEN", "AISAPP_TOKEN", Some("tok-1".to_owned()));
        assert_eq!(value.as_deref(), Some("tok-1"));
        let warning = warning.expect("a deprecation warning");
        assert_eq!(
            warning,
            "warning: AISAPP_TOKEN is deprecated; set AISA_TOKEN instead"
        );
        assert_eq!(
            pick_renamed("AISA_RELAY_URL", "AISAPP_RELAY", None),
            (None, None)
        );
        assert_eq!(
            pick_renamed("AISA_RELAY_URL", "AISAPP_RELAY", Some(String::new())),
            (None, None)
        );
    }
}
