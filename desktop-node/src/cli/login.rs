//! `desktop-node login`: registers this machine as a device of a person's account.
//!
//! Two ways, both ending with the device token in the secret store and the relay's
//! address in `node.toml`:
//!
//! * **Device login** (the default, no password on the desktop): asks the relay for a
//!   code (`POST /api/device/code`), prints it with a link, and polls
//!   (`POST /api/device/token`, RFC 8628: `authorization_pending`, `slow_down`,
//!   `access_denied`, `expired_token`) until the person approves it in the browser where
//!   they are signed in.
//! * **Password** (`--email`, with `--password-stdin` or `AISA_PASSWORD`), for scripts:
//!   `POST /api/devices/enroll`.
//!
//! The relay registers the device before this machine has stored its token; asked with
//! `"confirm": true`, it keeps it *pending* (not listed, deleted after a while) until the
//! login finishes: once the token and settings are saved the node says so (`POST
//! /api/device/confirm`); when saving fails it withdraws the device (`DELETE
//! /api/device/pending`), so a failed login leaves no device behind in the account. A
//! node that dies in between leaves a pending device, which the relay deletes when its
//! time runs out.

use std::io::Read;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use aisa_node::config::{Home, NodeConfig};
use aisa_node::installer::market::Market;

/// `desktop-node login`'s flags.
#[derive(Args)]
pub struct LoginArgs {
    /// The relay's HTTP URL (the address you open the web app at).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub relay: String,
    /// Sign in with this account's email and password instead of approving a code in
    /// the browser (for scripts).
    #[arg(long)]
    pub email: Option<String>,
    /// With --email: read the password from standard input (otherwise from AISA_PASSWORD).
    #[arg(long, requires = "email")]
    pub password_stdin: bool,
    /// A name for this device.
    #[arg(long)]
    pub name: Option<String>,
    /// Pin this SHA-256 (hex) of the relay's certificate instead of the one the relay
    /// reports; use `--webpki` for a relay with a public certificate.
    #[arg(long, conflicts_with = "webpki")]
    pub cert_sha256: Option<String>,
    /// Verify the relay's certificate with the public web PKI.
    #[arg(long)]
    pub webpki: bool,
}

/// What the relay answers when a device is registered.
struct Registered {
    device_id: String,
    device_token: String,
    quic_port: u64,
    cert_sha256: String,
}

impl Registered {
    fn from_json(body: &serde_json::Value) -> anyhow::Result<Self> {
        let field = |name: &str| {
            body[name]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("the relay's answer lacks {name}"))
        };
        Ok(Registered {
            device_id: field("device_id")?,
            device_token: field("device_token")?,
            quic_port: body["quic_port"]
                .as_u64()
                .context("the relay's answer lacks quic_port")?,
            cert_sha256: field("cert_sha256")?,
        })
    }
}

/// Runs `desktop-node login`.
pub async fn login(home: &Home, args: LoginArgs) -> anyhow::Result<()> {
    let name = args.name.clone().unwrap_or_else(default_name);
    let relay = args.relay.trim_end_matches('/').to_owned();
    let url = reqwest::Url::parse(&relay).with_context(|| format!("relay URL {relay:?}"))?;
    let host = url
        .host_str()
        .context("the relay URL has no host")?
        .to_owned();
    let http = reqwest::Client::new();
    let registered = match &args.email {
        Some(email) => with_password(&http, &relay, email, &name, args.password_stdin).await?,
        None => with_code(&http, &relay, &name).await?,
    };
    let token = registered.device_token.clone();
    let device_id = registered.device_id.clone();
    if let Err(err) = save(home, &relay, &host, registered, &args).await {
        // Nothing on this machine can use the device: take it back off the account.
        withdraw(&http, &relay, &token).await;
        return Err(err.context("the login did not finish, and this computer was not added"));
    }
    finish(&http, &relay, &token).await?;
    println!(
        "device {device_id} registered as {name:?}; settings in {}",
        home.config_path().display()
    );
    println!("Start it with: desktop-node run");
    Ok(())
}

/// Tells the relay the login finished (the token is stored), so that it lists the
/// device. A relay from before pending devices has no such endpoint: its devices are
/// listed at once.
async fn finish(http: &reqwest::Client, relay: &str, token: &str) -> anyhow::Result<()> {
    let answer = http
        .post(format!("{relay}/api/device/confirm"))
        .bearer_auth(token)
        .send()
        .await;
    match answer {
        Ok(r) if r.status().is_success() || r.status() == reqwest::StatusCode::NOT_FOUND => Ok(()),
        Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED => bail!(
            "the relay no longer knows this device (its login took too long); run the login again"
        ),
        // Connecting with the stored token finishes the login too (`desktop-node run`).
        Ok(r) => {
            eprintln!(
                "note: the relay did not confirm the login ({}); it will when this computer connects",
                r.status()
            );
            Ok(())
        }
        Err(err) => {
            eprintln!(
                "note: cannot reach the relay to confirm the login ({err}); it will when this computer connects"
            );
            Ok(())
        }
    }
}

/// Takes the device of a login that failed back off the account (best effort: the
/// relay deletes it anyway when its pending time runs out).
async fn withdraw(http: &reqwest::Client, relay: &str, token: &str) {
    match http
        .delete(format!("{relay}/api/device/pending"))
        .bearer_auth(token)
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => eprintln!(
            "note: the relay did not take back the unfinished device ({}); it deletes it within 15 minutes",
            r.status()
        ),
        Err(err) => eprintln!(
            "note: cannot reach the relay to take back the unfinished device ({err}); it deletes it within 15 minutes"
        ),
    }
}

/// The machine's name, or "my desktop".
fn default_name() -> String {
    ["HOSTNAME", "COMPUTERNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|n| !n.trim().is_empty()))
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
        })
        .unwrap_or_else(|| "my desktop".into())
}

async fn with_password(
    http: &reqwest::Client,
    relay: &str,
    email: &str,
    name: &str,
    stdin: bool,
) -> anyhow::Result<Registered> {
    let password = if stdin {
        let mut p = String::new();
        std::io::stdin().read_to_string(&mut p)?;
        p.trim_end_matches(['\n', '\r']).to_owned()
    } else {
        std::env::var("AISA_PASSWORD").context(
            "give the password on standard input with --password-stdin, or in AISA_PASSWORD \
             (or leave out --email to approve this desktop in your browser instead)",
        )?
    };
    let response = http
        .post(format!("{relay}/api/devices/enroll"))
        // "confirm": the device stays pending until `finish` (or is withdrawn).
        .json(&serde_json::json!({ "email": email, "password": password, "name": name, "confirm": true }))
        .send()
        .await
        .with_context(|| format!("cannot reach the relay at {relay}"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!(
            "the relay refused the login ({status}): {}",
            body["error"].as_str().unwrap_or("no reason given")
        );
    }
    Registered::from_json(&body)
}

/// What a poll of `/api/device/token` means.
#[derive(Debug, PartialEq, Eq)]
pub enum Poll {
    /// Registered: the answer holds the device's credentials.
    Done,
    /// Keep polling, after this many seconds.
    Wait(u64),
    /// Give up, saying this.
    Fail(String),
}

/// Reads one answer of `/api/device/token` (RFC 8628 §3.5), given the current interval.
pub fn read_poll(status: u16, body: &serde_json::Value, interval: u64) -> Poll {
    if (200..300).contains(&status) {
        return Poll::Done;
    }
    match body["error"].as_str().unwrap_or("") {
        "authorization_pending" => Poll::Wait(interval),
        "slow_down" => Poll::Wait(body["interval"].as_u64().unwrap_or(interval + 5)),
        "access_denied" => Poll::Fail("the login was denied in the browser".into()),
        "expired_token" => {
            Poll::Fail("the code expired before it was approved; run the login again".into())
        }
        _ => Poll::Fail(format!(
            "the relay refused the login (HTTP {status}): {}",
            body["error_description"]
                .as_str()
                .or(body["error"].as_str())
                .unwrap_or("no reason given")
        )),
    }
}

async fn with_code(http: &reqwest::Client, relay: &str, name: &str) -> anyhow::Result<Registered> {
    let response = http
        .post(format!("{relay}/api/device/code"))
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await
        .with_context(|| format!("cannot reach the relay at {relay}"))?;
    let status = response.status();
    let start: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!(
            "the relay cannot start a device login ({status}): {}",
            start["error"]
                .as_str()
                .unwrap_or("it may be older than this node: use --email")
        );
    }
    let text = |name: &str| {
        start[name]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("the relay's answer lacks {name}"))
    };
    let device_code = text("device_code")?;
    let user_code = text("user_code")?;
    let link = text("verification_uri_complete")?;
    let page = text("verification_uri")?;
    let mut interval = start["interval"].as_u64().unwrap_or(5).max(1);
    let expires_in = start["expires_in"].as_u64().unwrap_or(600);
    println!("To add this computer ({name:?}) to your account, open");
    println!();
    println!("    {link}");
    println!();
    println!("in the browser where you are signed in, and check that it shows the code");
    println!();
    println!("    {user_code}");
    println!();
    println!("(or open {page} and type the code). Waiting for your approval…");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(expires_in);
    loop {
        tokio::time::sleep(Duration::from_secs(interval)).await;
        if tokio::time::Instant::now() > deadline {
            bail!("the code expired before it was approved; run the login again");
        }
        let response = match http
            .post(format!("{relay}/api/device/token"))
            .json(&serde_json::json!({ "device_code": device_code, "confirm": true }))
            .send()
            .await
        {
            Ok(response) => response,
            // A network blip: keep waiting (the code is still good on the relay).
            Err(err) => {
                eprintln!("note: cannot reach the relay ({err}); still waiting");
                continue;
            }
        };
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        match read_poll(status, &body, interval) {
            Poll::Done => return Registered::from_json(&body),
            Poll::Wait(next) => interval = next,
            Poll::Fail(why) => bail!(why),
        }
    }
}

/// Stores the device token (secret store) and the settings (`node.toml`).
async fn save(
    home: &Home,
    relay: &str,
    host: &str,
    registered: Registered,
    args: &LoginArgs,
) -> anyhow::Result<()> {
    let (cert_sha256, cert_pin_from_relay) = match (&args.cert_sha256, args.webpki) {
        (Some(pin), _) => (Some(pin.clone()), false),
        (None, true) => (None, false),
        (None, false) => (Some(registered.cert_sha256.clone()), true),
    };
    // The platform keys that sign marketplace bundles, pinned now like the certificate.
    let trusted_keys = match Market::new(relay).platform_keys().await {
        Ok(keys) => keys,
        Err(err) => {
            eprintln!(
                "warning: no platform signing keys from the relay ({err}); installs from its marketplace will be refused until the next login"
            );
            Vec::new()
        }
    };
    let quic_host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let old = home.load_config().ok();
    let config = NodeConfig {
        relay_url: relay.to_owned(),
        quic_addr: format!("{quic_host}:{}", registered.quic_port),
        server_name: if host.parse::<std::net::IpAddr>().is_ok() {
            "localhost".into()
        } else {
            host.to_owned()
        },
        cert_sha256,
        cert_pin_from_relay,
        device_id: registered.device_id.clone(),
        ai: old.as_ref().map(|c| c.ai.clone()).unwrap_or_default(),
        limits: old.as_ref().map(|c| c.limits.clone()).unwrap_or_default(),
        trusted_keys,
        secrets: old.as_ref().map(|c| c.secrets.clone()).unwrap_or_default(),
        e2e: old.as_ref().map(|c| c.e2e.clone()).unwrap_or_default(),
        update: old.as_ref().map(|c| c.update.clone()).unwrap_or_default(),
        face: old.as_ref().map(|c| c.face.clone()).unwrap_or_default(),
        notify: old.as_ref().map(|c| c.notify.clone()).unwrap_or_default(),
        files: old.as_ref().map(|c| c.files.clone()).unwrap_or_default(),
        history: old.as_ref().map(|c| c.history.clone()).unwrap_or_default(),
        crash_reports: old
            .as_ref()
            .map(|c| c.crash_reports.clone())
            .unwrap_or_default(),
    };
    super::keys::save_login(home, &registered.device_token)?;
    home.save_config(&config)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn polls_follow_rfc_8628() {
        assert_eq!(read_poll(200, &json!({"device_id": "d"}), 5), Poll::Done);
        assert_eq!(
            read_poll(400, &json!({"error": "authorization_pending"}), 5),
            Poll::Wait(5)
        );
        assert_eq!(
            read_poll(400, &json!({"error": "slow_down", "interval": 10}), 5),
            Poll::Wait(10)
        );
        assert_eq!(
            read_poll(400, &json!({"error": "slow_down"}), 7),
            Poll::Wait(12)
        );
        assert!(matches!(
            read_poll(400, &json!({"error": "access_denied"}), 5),
            Poll::Fail(why) if why.contains("denied")
        ));
        assert!(matches!(
            read_poll(400, &json!({"error": "expired_token"}), 5),
            Poll::Fail(why) if why.contains("expired")
        ));
        assert!(matches!(
            read_poll(500, &json!({"error": "internal error"}), 5),
            Poll::Fail(why) if why.contains("internal error")
        ));
    }
}
