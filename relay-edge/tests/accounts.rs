//! The account API the web app lives on: the refresh token in an HttpOnly cookie (sign
//! in, refresh, two tabs refreshing at once, sign out), the sessions list, changing the
//! password, deleting the account, device login (`desktop-node login` approved in
//! the browser, RFC 8628 style: pending, slow_down, approve, collect once, deny), devices
//! listed only once their login finished, accounts made by an OpenID provider
//! (no password) that set a password or delete themselves after a recent sign-in at the
//! provider, and the account's sign-in methods (listed; an identity unlinked with the
//! same fresh proof, never the last way in, never another account's).
//!
//! Each test runs a real relay on loopback with its data in a temporary folder
//! (embedded SQLite, or PostgreSQL when `AISA_TEST_POSTGRES` names a server); the
//! provider is `accounts/provider.rs`, a small OpenID provider on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the panic

#[path = "accounts/provider.rs"]
mod provider;

use aisa_relay::{RelayConfig, RelayHandle};
use aisa_testkit::fakes::test_database;
use provider::{AuthTime, Provider};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

struct Relay {
    _relay: RelayHandle,
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// An answer: status, the `Set-Cookie` header if any, and the JSON body.
struct Answer {
    status: u16,
    cookie: Option<String>,
    body: Value,
}

impl Relay {
    async fn start() -> Relay {
        Relay::start_with(RelayConfig::default()).await
    }

    /// A relay with these settings (its addresses, data and database are the test's).
    async fn start_with(config: RelayConfig) -> Relay {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let config = RelayConfig {
            quic_listen: ([127, 0, 0, 1], 0).into(),
            http_listen: ([127, 0, 0, 1], 0).into(),
            data_dir: dir.path().to_owned(),
            database_url: test_database().await,
            ..config
        };
        let relay = aisa_relay::start(config).await.expect("relay starts");
        Relay {
            base: format!("http://{}", relay.http_addr),
            _relay: relay,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// `method path` with an optional bearer token, cookie and JSON body.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
        cookie: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        if let Some(cookie) = cookie {
            req = req.header("cookie", cookie);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let cookie = res
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_owned());
        Answer {
            status,
            cookie,
            body: res.json().await.unwrap_or(Value::Null),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(reqwest::Method::POST, path, None, None, Some(body))
            .await
    }

    /// `GET path` as `token`.
    async fn get(&self, path: &str, token: &str) -> Answer {
        self.call(reqwest::Method::GET, path, Some(token), None, None)
            .await
    }

    /// `POST path` with a JSON body as `token` (no cookie).
    async fn post_as(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call(reqwest::Method::POST, path, Some(token), None, Some(body))
            .await
    }

    /// `DELETE path` as `token`, with a JSON body if given (no cookie).
    async fn delete(&self, path: &str, token: &str, body: Option<Value>) -> Answer {
        self.call(reqwest::Method::DELETE, path, Some(token), None, body)
            .await
    }

    /// `POST path` with only the cookie and `{}`, as a page with no token sends
    /// `/api/auth/refresh` and `/api/auth/logout`.
    async fn post_cookie(&self, path: &str, cookie: &str) -> Answer {
        self.call(
            reqwest::Method::POST,
            path,
            None,
            Some(cookie),
            Some(json!({})),
        )
        .await
    }

    /// `GET /api/devices` as `token`.
    async fn devices(&self, token: &str) -> Vec<Value> {
        let a = self.get("/api/devices", token).await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.body.as_array().unwrap().clone()
    }

    async fn signup(&self, email: &str) -> Answer {
        let a = self
            .post(
                "/api/auth/signup",
                json!({"email": email, "password": PASSWORD, "cookie": true}),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.body);
        a
    }
}

/// `aisa_refresh=<value>` from a `Set-Cookie` header, as a browser would send it back.
fn jar(set_cookie: &Option<String>) -> String {
    let header = set_cookie.as_deref().expect("a Set-Cookie header");
    header.split(';').next().unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresh_token_lives_in_an_http_only_cookie_scoped_to_the_token_endpoints() {
    let relay = Relay::start().await;
    let signed = relay.signup("cookie@example.com").await;
    let set = signed.cookie.clone().expect("sign-up sets the cookie");
    for attribute in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/api/auth",
        "Max-Age=",
    ] {
        assert!(set.contains(attribute), "{attribute} missing from {set}");
    }
    assert!(
        signed.body.get("refresh_token").is_none(),
        "the page must not see the refresh token: {}",
        signed.body
    );
    assert!(signed.body["token"].as_str().unwrap().len() > 20);

    // A reload: the page has only the cookie.
    let first = jar(&signed.cookie);
    let refreshed = relay.post_cookie("/api/auth/refresh", &first).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    assert_eq!(refreshed.body["email"], "cookie@example.com");
    let second = jar(&refreshed.cookie);
    assert_ne!(first, second, "each refresh rotates the cookie");

    // A second tab refreshing with the old cookie at the same moment: refused, but not
    // treated as a stolen token (the new cookie still works).
    let again = relay.post_cookie("/api/auth/refresh", &first).await;
    assert_eq!(again.status, 401);
    assert!(again.body["error"].as_str().unwrap().contains("just used"));
    let third = relay.post_cookie("/api/auth/refresh", &second).await;
    assert_eq!(
        third.status, 200,
        "the rotated cookie survives a racing tab: {}",
        third.body
    );

    // Sign out deletes the cookie and the session.
    let current = jar(&third.cookie);
    let out = relay.post_cookie("/api/auth/logout", &current).await;
    assert_eq!(out.status, 204);
    assert!(out.cookie.unwrap().contains("Max-Age=0"));
    let after = relay.post_cookie("/api/auth/refresh", &current).await;
    assert_eq!(after.status, 401);
    // No cookie at all: not signed in, nothing else.
    let none = relay.post("/api/auth/refresh", json!({})).await;
    assert_eq!(none.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_listed_with_the_current_one_marked_and_can_be_ended() {
    let relay = Relay::start().await;
    let a = relay.signup("sessions@example.com").await;
    let b = relay
        .post(
            "/api/auth/login",
            json!({"email": "sessions@example.com", "password": PASSWORD, "cookie": true}),
        )
        .await;
    assert_eq!(b.status, 200);
    let token = a.body["token"].as_str().unwrap();
    let list = relay
        .call(
            reqwest::Method::GET,
            "/api/auth/sessions",
            Some(token),
            Some(&jar(&a.cookie)),
            None,
        )
        .await;
    assert_eq!(list.status, 200, "{}", list.body);
    let sessions = list.body.as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{}", list.body);
    assert_eq!(
        sessions.iter().filter(|s| s["current"] == true).count(),
        1,
        "{}",
        list.body
    );
    let other = sessions.iter().find(|s| s["current"] == false).unwrap();
    let other_id = other["id"].as_str().unwrap();

    // A refresh keeps the session (same id), it does not add one.
    let refreshed = relay
        .post_cookie("/api/auth/refresh", &jar(&b.cookie))
        .await;
    assert_eq!(refreshed.status, 200);
    let list = relay.get("/api/auth/sessions", token).await;
    let ids: Vec<&str> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&other_id));

    let ended = relay
        .delete(&format!("/api/auth/sessions/{other_id}"), token, None)
        .await;
    assert_eq!(ended.status, 204);
    let dead = relay
        .post_cookie("/api/auth/refresh", &jar(&refreshed.cookie))
        .await;
    assert_eq!(dead.status, 401, "the ended session cannot refresh");
    // Another user's session id is not found.
    let stranger = relay.signup("stranger@example.com").await;
    let theirs = relay
        .delete(
            &format!("/api/auth/sessions/{other_id}"),
            stranger.body["token"].as_str().unwrap(),
            None,
        )
        .await;
    assert_eq!(theirs.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_password_signs_out_every_other_session() {
    let relay = Relay::start().await;
    let a = relay.signup("password@example.com").await;
    let other = relay
        .post(
            "/api/auth/login",
            json!({"email": "password@example.com", "password": PASSWORD}),
        )
        .await;
    let token = a.body["token"].as_str().unwrap();
    let wrong = relay
        .call(
            reqwest::Method::POST,
            "/api/account/password",
            Some(token),
            Some(&jar(&a.cookie)),
            Some(json!({"current_password": "not it at all", "new_password": "a new password 1"})),
        )
        .await;
    assert_eq!(wrong.status, 403, "{}", wrong.body);
    let short = relay
        .call(
            reqwest::Method::POST,
            "/api/account/password",
            Some(token),
            Some(&jar(&a.cookie)),
            Some(json!({"current_password": PASSWORD, "new_password": "short"})),
        )
        .await;
    assert_eq!(short.status, 400);
    // The browser does not send its cookie here (outside /api/auth): `cookie` asks for
    // the new one.
    let changed = relay
        .post_as(
            "/api/account/password",
            token,
            json!({"current_password": PASSWORD, "new_password": "a new password 1", "cookie": true}),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert!(changed.body.get("refresh_token").is_none());
    assert!(changed.cookie.is_some(), "this session gets a new cookie");
    // The old access token and the other session's refresh token are dead.
    let old = relay.get("/api/account", token).await;
    assert_eq!(old.status, 401);
    let other_refresh = relay
        .post(
            "/api/auth/refresh",
            json!({"refresh_token": other.body["refresh_token"]}),
        )
        .await;
    assert_eq!(other_refresh.status, 401);
    assert!(
        other_refresh.body["error"]
            .as_str()
            .unwrap()
            .contains("signed out"),
        "a signed-out session's token is not a stolen copy: {}",
        other_refresh.body
    );
    // The new token works; the old password does not, the new one does.
    let new_token = changed.body["token"].as_str().unwrap();
    let account = relay.get("/api/account", new_token).await;
    assert_eq!(account.status, 200, "{}", account.body);
    let login = |password: &'static str| {
        relay.post(
            "/api/auth/login",
            json!({"email": "password@example.com", "password": password}),
        )
    };
    assert_eq!(login(PASSWORD).await.status, 401);
    let fresh = login("a new password 1").await;
    assert_eq!(fresh.status, 200, "{}", fresh.body);
}

/// Starts a device login and returns its answer.
async fn start_login(relay: &Relay, name: &str) -> Value {
    let a = relay.post("/api/device/code", json!({"name": name})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body
}

/// A poll as `desktop-node login` makes it (it confirms once it stored the token).
async fn poll(relay: &Relay, device_code: &Value) -> Answer {
    relay
        .post(
            "/api/device/token",
            json!({"device_code": device_code, "confirm": true}),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_login_registers_a_desktop_the_person_approves_in_the_browser() {
    let relay = Relay::start().await;
    let user = relay.signup("device-login@example.com").await;
    let token = user.body["token"].as_str().unwrap().to_owned();
    let started = start_login(&relay, "studio mac").await;
    let user_code = started["user_code"].as_str().unwrap();
    assert_eq!(user_code.len(), 9);
    assert_eq!(started["interval"], 5);
    assert_eq!(started["expires_in"], 600);
    assert_eq!(
        started["verification_uri"].as_str().unwrap(),
        format!("{}/activate", relay.base)
    );
    assert_eq!(
        started["verification_uri_complete"].as_str().unwrap(),
        format!("{}/activate?code={user_code}", relay.base)
    );

    // Before the person answers: pending, then slow_down for polling at once again.
    let first = poll(&relay, &started["device_code"]).await;
    assert_eq!(first.status, 400);
    assert_eq!(first.body["error"], "authorization_pending");
    let fast = poll(&relay, &started["device_code"]).await;
    assert_eq!(fast.body["error"], "slow_down");
    assert_eq!(fast.body["interval"], 10);

    // The approval page: the code typed loosely finds the login and its name.
    let typed = user_code.to_lowercase().replace('-', " ");
    let shown = relay
        .get(&format!("/api/device/code/{typed}"), &token)
        .await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(shown.body["name"], "studio mac");
    // Not without signing in.
    let anonymous = relay
        .post(
            "/api/device/approve",
            json!({"user_code": user_code, "approve": true}),
        )
        .await;
    assert_eq!(anonymous.status, 401);
    let approved = relay
        .post_as(
            "/api/device/approve",
            &token,
            json!({"user_code": typed, "approve": true}),
        )
        .await;
    assert_eq!(approved.status, 204, "{}", approved.body);

    let done = poll(&relay, &started["device_code"]).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(
        done.body["device_token"]
            .as_str()
            .unwrap()
            .starts_with("aisa_dt_")
    );
    assert!(done.body["quic_port"].as_u64().unwrap() > 0);
    let device_id = done.body["device_id"].as_str().unwrap();
    // Not listed until the desktop has stored its token and says so.
    assert_eq!(relay.devices(&token).await.len(), 0);
    let confirmed = as_device(
        &relay,
        reqwest::Method::POST,
        "/api/device/confirm",
        done.body["device_token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    assert_eq!(confirmed.body["device_id"], device_id);
    let devices = relay.get("/api/devices", &token).await;
    let listed = devices.body.as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], device_id);
    assert_eq!(listed[0]["name"], "studio mac");

    // Collected once only; the code cannot be approved again.
    let twice = poll(&relay, &started["device_code"]).await;
    assert_eq!(twice.body["error"], "expired_token");
    let reapproved = relay
        .post_as(
            "/api/device/approve",
            &token,
            json!({"user_code": user_code, "approve": true}),
        )
        .await;
    assert_eq!(reapproved.status, 404);
    let unknown = poll(&relay, &json!("aisa_dc_nothing")).await;
    assert_eq!(unknown.body["error"], "invalid_grant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_device_login_registers_nothing_and_wrong_codes_are_limited() {
    let relay = Relay::start().await;
    let user = relay.signup("deny@example.com").await;
    let token = user.body["token"].as_str().unwrap().to_owned();
    let started = start_login(&relay, "someone else's laptop").await;
    let denied = relay
        .post_as(
            "/api/device/approve",
            &token,
            json!({"user_code": started["user_code"], "approve": false}),
        )
        .await;
    assert_eq!(denied.status, 204);
    let answer = poll(&relay, &started["device_code"]).await;
    assert_eq!(answer.body["error"], "access_denied");
    let devices = relay.get("/api/devices", &token).await;
    assert_eq!(devices.body.as_array().unwrap().len(), 0);

    // Guessing codes: 404 each, then 429 once the sign-in limit's failures are used up.
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let a = relay.get("/api/device/code/BCDF-GHJK", &token).await;
        statuses.push(a.status);
    }
    assert_eq!(statuses[0], 404);
    assert_eq!(*statuses.last().unwrap(), 429, "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_account_removes_its_devices_and_sessions() {
    let relay = Relay::start().await;
    let user = relay.signup("leaving@example.com").await;
    let token = user.body["token"].as_str().unwrap().to_owned();
    let enrolled = relay
        .post(
            "/api/devices/enroll",
            json!({"email": "leaving@example.com", "password": PASSWORD, "name": "old pc"}),
        )
        .await;
    assert_eq!(enrolled.status, 200, "{}", enrolled.body);
    let wrong = relay
        .delete(
            "/api/account",
            &token,
            Some(json!({"password": "not the password"})),
        )
        .await;
    assert_eq!(wrong.status, 403);
    let deleted = relay
        .call(
            reqwest::Method::DELETE,
            "/api/account",
            Some(&token),
            Some(&jar(&user.cookie)),
            Some(json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    assert!(deleted.cookie.unwrap().contains("Max-Age=0"));
    let login = relay
        .post(
            "/api/auth/login",
            json!({"email": "leaving@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(login.status, 401);
    let refresh = relay
        .post_cookie("/api/auth/refresh", &jar(&user.cookie))
        .await;
    assert_eq!(refresh.status, 401);
    // The email is free again, and the new account has no devices.
    let again = relay.signup("leaving@example.com").await;
    let devices = relay
        .get("/api/devices", again.body["token"].as_str().unwrap())
        .await;
    assert_eq!(devices.body.as_array().unwrap().len(), 0);
}

/// `POST /api/device/confirm` or `DELETE /api/device/pending` with a device token.
async fn as_device(relay: &Relay, method: reqwest::Method, path: &str, token: &str) -> Answer {
    relay.call(method, path, Some(token), None, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_is_listed_only_once_its_login_finished_and_an_unfinished_one_goes_away() {
    let relay = Relay::start_with(RelayConfig {
        pending_device_ttl_secs: 2,
        ..RelayConfig::default()
    })
    .await;
    let user = relay.signup("pending@example.com").await;
    let token = user.body["token"].as_str().unwrap().to_owned();
    let enroll = |name: &str| {
        relay.post(
            "/api/devices/enroll",
            json!({"email": "pending@example.com", "password": PASSWORD, "name": name, "confirm": true}),
        )
    };

    // Registered, token handed out, login not finished: not listed, not in the events.
    let finished = enroll("finishes").await;
    assert_eq!(finished.status, 200, "{}", finished.body);
    let finished_token = finished.body["device_token"].as_str().unwrap().to_owned();
    assert!(relay.devices(&token).await.is_empty());
    // The desktop stored its token: listed from now on (and a retry answers the same).
    for _ in 0..2 {
        let ok = as_device(
            &relay,
            reqwest::Method::POST,
            "/api/device/confirm",
            &finished_token,
        )
        .await;
        assert_eq!(ok.status, 200, "{}", ok.body);
        assert_eq!(ok.body["device_id"], finished.body["device_id"]);
    }
    let listed = relay.devices(&token).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], "finishes");
    // A finished device cannot be withdrawn with its token (only removed by its owner).
    let late = as_device(
        &relay,
        reqwest::Method::DELETE,
        "/api/device/pending",
        &finished_token,
    )
    .await;
    assert_eq!(late.status, 404, "{}", late.body);

    // A client that does not say it confirms (a node from before) gets a finished device.
    let old = relay
        .post(
            "/api/devices/enroll",
            json!({"email": "pending@example.com", "password": PASSWORD, "name": "old node"}),
        )
        .await;
    assert_eq!(old.status, 200, "{}", old.body);
    assert_eq!(relay.devices(&token).await.len(), 2);
    let revoked = relay
        .delete(
            &format!("/api/devices/{}", old.body["device_id"].as_str().unwrap()),
            &token,
            None,
        )
        .await;
    assert_eq!(revoked.status, 204);

    // A login whose desktop could not store the token: withdrawn, gone for good.
    let failed = enroll("store refused").await;
    let failed_token = failed.body["device_token"].as_str().unwrap().to_owned();
    let withdrawn = as_device(
        &relay,
        reqwest::Method::DELETE,
        "/api/device/pending",
        &failed_token,
    )
    .await;
    assert_eq!(withdrawn.status, 204, "{}", withdrawn.body);
    let dead = as_device(
        &relay,
        reqwest::Method::POST,
        "/api/device/confirm",
        &failed_token,
    )
    .await;
    assert_eq!(dead.status, 401, "{}", dead.body);

    // A desktop that died mid-login: its device waits pending_until, then its token is
    // refused and the row deleted; it never showed in the list.
    let died = enroll("died").await;
    let died_token = died.body["device_token"].as_str().unwrap().to_owned();
    let account = relay.get("/api/account", &token).await;
    assert_eq!(account.body["usage"]["devices"], 2, "{}", account.body);
    tokio::time::sleep(std::time::Duration::from_millis(3_100)).await;
    let expired = as_device(
        &relay,
        reqwest::Method::POST,
        "/api/device/confirm",
        &died_token,
    )
    .await;
    assert_eq!(expired.status, 401, "{}", expired.body);
    assert!(
        expired.body["error"]
            .as_str()
            .unwrap()
            .contains("did not finish in time"),
        "{}",
        expired.body
    );
    let account = relay.get("/api/account", &token).await;
    assert_eq!(
        account.body["usage"]["devices"], 1,
        "the expired one no longer counts against the plan: {}",
        account.body
    );
    // The next registration sweeps the expired row away; the list never changed.
    let next = enroll("next").await;
    assert_eq!(next.status, 200, "{}", next.body);
    let listed = relay.devices(&token).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["name"], "finishes");
    // No token, or a user's access token, confirms nothing.
    let anonymous = relay.post("/api/device/confirm", json!({})).await;
    assert_eq!(anonymous.status, 401);
    let user_token = as_device(&relay, reqwest::Method::POST, "/api/device/confirm", &token).await;
    assert_eq!(user_token.status, 401);
}

/// The relay's `[oidc] public_url` in these tests: nothing listens there; the test
/// carries the provider's redirect to the relay itself.
const PUBLIC_URL: &str = "http://127.0.0.1:9";

/// A relay offering the test provider as `test` ("Test ID").
async fn relay_with_provider(provider: &Provider) -> Relay {
    relay_with_providers(&[(provider, "test", "Test ID")]).await
}

/// Two providers and a relay offering them as `test` ("Test ID") and `other` ("Other ID").
async fn relay_with_two_providers() -> (Provider, Provider, Relay) {
    let test = Provider::start().await;
    let other = Provider::start().await;
    let relay =
        relay_with_providers(&[(&test, "test", "Test ID"), (&other, "other", "Other ID")]).await;
    (test, other, relay)
}

/// A relay offering each provider under a name and a display name.
async fn relay_with_providers(providers: &[(&Provider, &str, &str)]) -> Relay {
    let mut toml = format!("[oidc]\npublic_url = \"{PUBLIC_URL}\"\n");
    for (provider, name, display_name) in providers {
        toml += &format!(
            "[[oidc.providers]]\nname = \"{name}\"\ndisplay_name = \"{display_name}\"\nissuer = \"{}\"\nclient_id = \"{}\"\n",
            provider.issuer,
            provider::CLIENT_ID
        );
    }
    let mut config = RelayConfig::from_toml(&toml).unwrap();
    config.oidc.reauth_max_age_secs = 300;
    Relay::start_with(config).await
}

/// Every `Set-Cookie` of an answer, `name=value` only.
fn set_cookies(res: &reqwest::Response) -> Vec<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect()
}

fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get("location")
        .expect("a redirect")
        .to_str()
        .unwrap()
        .to_owned()
}

/// A browser signing in with the provider: `/start` (with this browser's refresh
/// cookie `jar`, and `?reauth=1` when confirming who it is), the provider, the callback.
/// Returns the new refresh cookie and where the relay sent the browser.
async fn provider_sign_in(relay: &Relay, jar: Option<&str>, reauth: bool) -> (String, String) {
    provider_sign_in_at(relay, "test", jar, reauth).await
}

/// [`provider_sign_in`] with the provider configured as `name`.
async fn provider_sign_in_at(
    relay: &Relay,
    name: &str,
    jar: Option<&str>,
    reauth: bool,
) -> (String, String) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let query = if reauth { "?reauth=1" } else { "" };
    let mut start = http.get(format!("{}/api/auth/oidc/{name}/start{query}", relay.base));
    if let Some(jar) = jar {
        start = start.header("cookie", jar);
    }
    let start = start.send().await.unwrap();
    assert_eq!(start.status(), 303);
    let flow = set_cookies(&start)
        .into_iter()
        .find(|c| c.starts_with("aisa_oidc="))
        .expect("the flow cookie");
    let at_provider = http.get(location(&start)).send().await.unwrap();
    assert_eq!(
        at_provider.status(),
        303,
        "the provider signs the person in"
    );
    let callback = location(&at_provider).replacen(PUBLIC_URL, &relay.base, 1);
    let back = http
        .get(callback)
        .header("cookie", flow)
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), 303);
    let refresh = set_cookies(&back)
        .into_iter()
        .find(|c| c.starts_with("aisa_refresh=") && c.len() > "aisa_refresh=".len())
        .unwrap_or_else(|| panic!("signed in, not sent to {}", location(&back)));
    (refresh, location(&back))
}

/// The access token of the session in `jar`, and the jar's next cookie.
async fn access(relay: &Relay, jar: &str) -> (String, String) {
    let a = relay.post_cookie("/api/auth/refresh", jar).await;
    assert_eq!(a.status, 200, "{}", a.body);
    (
        a.body["token"].as_str().unwrap().to_owned(),
        crate::jar(&a.cookie),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_without_a_password_sets_one_after_signing_in_at_its_provider_again() {
    let provider = Provider::start().await;
    let relay = relay_with_provider(&provider).await;
    provider.person("sub-olivia", "olivia@example.com");

    // Signed in this morning at the provider: the relay makes the account, no password.
    provider.auth_time(AuthTime::SecondsAgo(3 * 3600));
    let (jar, _) = provider_sign_in(&relay, None, false).await;
    let (token, jar) = access(&relay, &jar).await;
    let account = relay.get("/api/account", &token).await;
    assert_eq!(account.body["has_password"], false, "{}", account.body);
    assert_eq!(account.body["providers"], json!(["test"]));
    assert_eq!(account.body["reauth_max_age_secs"], 300);
    let new_password = json!({"new_password": "olivia's new password", "cookie": true});

    // Stale: the provider's sign-in is hours old. Refused, saying so and how to fix it.
    let stale = relay
        .post_as("/api/account/password", &token, new_password.clone())
        .await;
    assert_eq!(stale.status, 403, "{}", stale.body);
    assert_eq!(stale.body["code"], "reauth_required");
    assert_eq!(stale.body["providers"], json!(["test"]));
    let why = stale.body["error"].as_str().unwrap();
    assert!(
        why.contains("was 3 hours ago") && why.contains("sign in with Test ID again"),
        "{why}"
    );
    // A current password is no way round it: there is none to check.
    let guessed = relay
        .post_as(
            "/api/account/password",
            &token,
            json!({"current_password": "", "new_password": "olivia's new password"}),
        )
        .await;
    assert_eq!(guessed.body["code"], "reauth_required", "{}", guessed.body);

    // A provider that does not say when: no recent sign-in either.
    provider.auth_time(AuthTime::Absent);
    let (jar_unknown, _) = provider_sign_in(&relay, None, false).await;
    let (token_unknown, _) = access(&relay, &jar_unknown).await;
    let unknown = relay
        .post_as(
            "/api/account/password",
            &token_unknown,
            new_password.clone(),
        )
        .await;
    assert_eq!(unknown.status, 403);
    assert!(
        unknown.body["error"]
            .as_str()
            .unwrap()
            .starts_with("this account has no password: sign in with Test ID again"),
        "{}",
        unknown.body
    );

    // Confirming with a provider that keeps its old session (ignores max_age): still
    // stale, still refused.
    provider.auth_time(AuthTime::SecondsAgo(3600));
    let (jar_lazy, back) = provider_sign_in(&relay, Some(&jar), true).await;
    assert_eq!(back, format!("{PUBLIC_URL}/#/account"));
    let asked = provider.last_request();
    assert_eq!(asked.get("prompt").map(String::as_str), Some("login"));
    assert_eq!(asked.get("max_age").map(String::as_str), Some("0"));
    let (token_lazy, jar) = access(&relay, &jar_lazy).await;
    let lazy = relay
        .post_as("/api/account/password", &token_lazy, new_password.clone())
        .await;
    assert_eq!(lazy.status, 403, "{}", lazy.body);
    assert!(
        lazy.body["error"]
            .as_str()
            .unwrap()
            .contains("was 60 minutes ago")
    );

    // Confirmed now at the provider: the session from before is replaced, not doubled.
    provider.auth_time(AuthTime::Now);
    let sessions_before = relay.get("/api/auth/sessions", &token_lazy).await;
    let (fresh_jar, _) = provider_sign_in(&relay, Some(&jar), true).await;
    let old = relay.post_cookie("/api/auth/refresh", &jar).await;
    assert_eq!(
        old.status, 401,
        "the confirmed session replaces the old one"
    );
    let (fresh, _) = access(&relay, &fresh_jar).await;
    let sessions_after = relay.get("/api/auth/sessions", &fresh).await;
    assert_eq!(
        sessions_after.body.as_array().unwrap().len(),
        sessions_before.body.as_array().unwrap().len(),
        "{}",
        sessions_after.body
    );
    let account = relay.get("/api/account", &fresh).await;
    let auth_time = account.body["auth_time"].as_i64().unwrap();
    let now = aisa_relay::auth::now_secs() as i64;
    assert!((now - 10..=now).contains(&auth_time), "{}", account.body);
    let set = relay
        .post_as("/api/account/password", &fresh, new_password.clone())
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert!(set.cookie.unwrap().starts_with("aisa_refresh="));

    // The account signs in with the password too now, and needs it for changes.
    let login = relay
        .post(
            "/api/auth/login",
            json!({"email": "olivia@example.com", "password": "olivia's new password"}),
        )
        .await;
    assert_eq!(login.status, 200, "{}", login.body);
    let with_password = login.body["token"].as_str().unwrap();
    let account = relay.get("/api/account", with_password).await;
    assert_eq!(account.body["has_password"], true);
    let no_current = relay
        .delete("/api/account", with_password, Some(json!({})))
        .await;
    assert_eq!(no_current.status, 400, "{}", no_current.body);
    assert_eq!(no_current.body["error"], "the current password is required");
    // Every session from before the password was set is signed out.
    let earlier = relay.get("/api/account", &token_unknown).await;
    assert_eq!(earlier.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_without_a_password_deletes_itself_and_its_devices_after_signing_in_again() {
    let provider = Provider::start().await;
    let relay = relay_with_provider(&provider).await;
    provider.person("sub-pat", "pat@example.com");
    provider.auth_time(AuthTime::SecondsAgo(600));
    let (jar, _) = provider_sign_in(&relay, None, false).await;
    let (token, jar) = access(&relay, &jar).await;

    // A desktop added with a device login, finished.
    let started = start_login(&relay, "pat's desk").await;
    let approved = relay
        .post_as(
            "/api/device/approve",
            &token,
            json!({"user_code": started["user_code"], "approve": true}),
        )
        .await;
    assert_eq!(approved.status, 204, "{}", approved.body);
    let device = poll(&relay, &started["device_code"]).await;
    assert_eq!(device.status, 200, "{}", device.body);
    let device_token = device.body["device_token"].as_str().unwrap().to_owned();
    let confirmed = as_device(
        &relay,
        reqwest::Method::POST,
        "/api/device/confirm",
        &device_token,
    )
    .await;
    assert_eq!(confirmed.status, 200);
    assert_eq!(relay.devices(&token).await.len(), 1);

    // Ten minutes since the provider saw the person: refused.
    let stale = relay.delete("/api/account", &token, Some(json!({}))).await;
    assert_eq!(stale.status, 403, "{}", stale.body);
    assert_eq!(stale.body["code"], "reauth_required");
    assert!(
        stale.body["error"]
            .as_str()
            .unwrap()
            .contains("was 10 minutes ago"),
        "{}",
        stale.body
    );
    assert_eq!(relay.devices(&token).await.len(), 1, "nothing was deleted");

    provider.auth_time(AuthTime::Now);
    let (fresh_jar, _) = provider_sign_in(&relay, Some(&jar), true).await;
    let (fresh, fresh_jar) = access(&relay, &fresh_jar).await;
    let deleted = relay.delete("/api/account", &fresh, Some(json!({}))).await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    // The device's token is dead, the sessions are gone, and the provider's next
    // sign-in makes a new, empty account.
    let device_gone = as_device(
        &relay,
        reqwest::Method::POST,
        "/api/device/confirm",
        &device_token,
    )
    .await;
    assert_eq!(device_gone.status, 401);
    let refresh = relay.post_cookie("/api/auth/refresh", &fresh_jar).await;
    assert_eq!(refresh.status, 401);
    let (again, _) = provider_sign_in(&relay, None, false).await;
    let (again, _) = access(&relay, &again).await;
    let account = relay.get("/api/account", &again).await;
    assert_ne!(account.body["user_id"], json!(null));
    assert!(relay.devices(&again).await.is_empty());
}

/// `GET /api/account/identities` as `token`.
async fn sign_in_methods(relay: &Relay, token: &str) -> Value {
    let a = relay.get("/api/account/identities", token).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body
}

/// `DELETE /api/account/identities/{id}` as `token` with `body`.
async fn unlink(relay: &Relay, token: &str, id: &str, body: Value) -> Answer {
    relay
        .delete(&format!("/api/account/identities/{id}"), token, Some(body))
        .await
}

/// The listed identities' providers, in the relay's order.
fn providers_of(methods: &Value) -> Vec<String> {
    methods["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["provider"].as_str().unwrap().to_owned())
        .collect()
}

/// The id of the listed identity of `provider`.
fn id_of(methods: &Value, provider: &str) -> String {
    methods["identities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["provider"] == provider)
        .unwrap_or_else(|| panic!("no {provider} identity in {methods}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_methods_are_listed_and_an_identity_is_unlinked_with_the_password() {
    let (test, other, relay) = relay_with_two_providers().await;
    let signed = relay.signup("ann@example.com").await;
    let token = signed.body["token"].as_str().unwrap().to_owned();
    let methods = sign_in_methods(&relay, &token).await;
    assert_eq!(
        methods,
        json!({"has_password": true, "identities": []}),
        "a password account with no provider yet"
    );

    // Two providers vouch for ann's address: both identities link to her account.
    test.person("sub-ann-248289761001", "ann@example.com");
    other.person("other-ann-77", "ann@example.com");
    let before = aisa_relay::auth::now_secs() as i64;
    provider_sign_in_at(&relay, "test", None, false).await;
    provider_sign_in_at(&relay, "other", None, false).await;
    let methods = sign_in_methods(&relay, &token).await;
    assert_eq!(methods["has_password"], true);
    let mut listed = providers_of(&methods);
    listed.sort();
    assert_eq!(listed, ["other", "test"], "{methods}");
    let identity = methods["identities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["provider"] == "test")
        .unwrap();
    assert_eq!(identity["provider_name"], "Test ID");
    assert_eq!(identity["email"], "ann@example.com");
    assert_eq!(identity["subject_hint"], "…1001");
    assert_eq!(identity["id"].as_str().unwrap().len(), 32);
    let linked_at = identity["linked_at"].as_i64().unwrap();
    assert!(
        (before..=before + 30).contains(&linked_at),
        "{linked_at} vs {before}"
    );
    // Neither the whole subject nor the issuer leave the relay.
    let text = methods.to_string();
    assert!(!text.contains("sub-ann-248289761001"), "{text}");
    assert!(!text.contains(&test.issuer), "{text}");
    let test_id = id_of(&methods, "test");

    // Unlinking needs the current password, like the other sensitive changes.
    let none = unlink(&relay, &token, &test_id, json!({})).await;
    assert_eq!(none.status, 400, "{}", none.body);
    assert_eq!(none.body["error"], "the current password is required");
    let wrong = unlink(&relay, &token, &test_id, json!({"password": "not it"})).await;
    assert_eq!(wrong.status, 403, "{}", wrong.body);
    assert_eq!(wrong.body["error"], "the current password is wrong");
    assert_eq!(
        sign_in_methods(&relay, &token).await["identities"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let done = unlink(&relay, &token, &test_id, json!({"password": PASSWORD})).await;
    assert_eq!(done.status, 204, "{}", done.body);
    let methods = sign_in_methods(&relay, &token).await;
    assert_eq!(providers_of(&methods), ["other"], "{methods}");
    let account = relay.get("/api/account", &token).await;
    assert_eq!(account.body["providers"], json!(["other"]));
    // Gone: a second time finds nothing.
    let again = unlink(&relay, &token, &test_id, json!({"password": PASSWORD})).await;
    assert_eq!(again.status, 404, "{}", again.body);

    // With a password, the last identity may go too: the password still opens it.
    let other_id = id_of(&methods, "other");
    let last = unlink(&relay, &token, &other_id, json!({"password": PASSWORD})).await;
    assert_eq!(last.status, 204, "{}", last.body);
    assert_eq!(
        sign_in_methods(&relay, &token).await,
        json!({"has_password": true, "identities": []})
    );
    let login = relay
        .post(
            "/api/auth/login",
            json!({"email": "ann@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(login.status, 200, "{}", login.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_password_the_last_identity_stays_and_unlinking_needs_a_recent_sign_in() {
    let (test, other, relay) = relay_with_two_providers().await;
    test.person("sub-nina", "nina@example.com");
    other.person("other-nina", "nina@example.com");

    // An account the provider made an hour ago, and a second provider linked to it.
    test.auth_time(AuthTime::SecondsAgo(3600));
    other.auth_time(AuthTime::SecondsAgo(3600));
    let (jar, _) = provider_sign_in_at(&relay, "test", None, false).await;
    provider_sign_in_at(&relay, "other", None, false).await;
    let (stale, jar) = access(&relay, &jar).await;
    let methods = sign_in_methods(&relay, &stale).await;
    assert_eq!(methods["has_password"], false, "{methods}");
    let test_id = id_of(&methods, "test");
    let other_id = id_of(&methods, "other");

    // Stale: refused with the way out, nothing unlinked; a password is no way round it.
    for body in [json!({}), json!({"password": "guess"})] {
        let refused = unlink(&relay, &stale, &test_id, body).await;
        assert_eq!(refused.status, 403, "{}", refused.body);
        assert_eq!(refused.body["code"], "reauth_required");
        assert_eq!(refused.body["providers"], json!(["other", "test"]));
        assert!(
            refused.body["error"]
                .as_str()
                .unwrap()
                .contains("was 60 minutes ago"),
            "{}",
            refused.body
        );
    }
    assert_eq!(
        sign_in_methods(&relay, &stale).await["identities"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Confirmed at the provider just now: one identity may go.
    test.auth_time(AuthTime::Now);
    let (fresh_jar, _) = provider_sign_in_at(&relay, "test", Some(&jar), true).await;
    let (fresh, _) = access(&relay, &fresh_jar).await;
    let done = unlink(&relay, &fresh, &test_id, json!({})).await;
    assert_eq!(done.status, 204, "{}", done.body);
    let methods = sign_in_methods(&relay, &fresh).await;
    assert_eq!(providers_of(&methods), ["other"]);

    // The last way in stays, however fresh the proof, with a sentence saying why.
    let last = unlink(&relay, &fresh, &other_id, json!({})).await;
    assert_eq!(last.status, 409, "{}", last.body);
    assert_eq!(last.body["code"], "last_sign_in_method");
    let why = last.body["error"].as_str().unwrap();
    assert!(
        why.contains("only way left to sign in") && why.contains("set a password"),
        "{why}"
    );
    assert_eq!(
        providers_of(&sign_in_methods(&relay, &fresh).await),
        ["other"]
    );

    // Once the account has a password, the identity may go.
    let set = relay
        .post_as(
            "/api/account/password",
            &fresh,
            json!({"new_password": "nina's new password"}),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    let with_password = set.body["token"].as_str().unwrap().to_owned();
    let gone = unlink(
        &relay,
        &with_password,
        &other_id,
        json!({"password": "nina's new password"}),
    )
    .await;
    assert_eq!(gone.status, 204, "{}", gone.body);
    assert_eq!(
        sign_in_methods(&relay, &with_password).await,
        json!({"has_password": true, "identities": []})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_unlinks_at_once_leave_one_way_in() {
    let (test, other, relay) = relay_with_two_providers().await;
    test.person("sub-raj", "raj@example.com");
    other.person("other-raj", "raj@example.com");
    let (jar, _) = provider_sign_in_at(&relay, "test", None, false).await;
    for round in 0..3 {
        // Both identities linked, the session fresh (AuthTime::Now by default).
        let (jar_other, _) = provider_sign_in_at(&relay, "other", None, false).await;
        provider_sign_in_at(&relay, "test", Some(&jar), false).await;
        let (token, _) = access(&relay, &jar_other).await;
        let methods = sign_in_methods(&relay, &token).await;
        assert_eq!(
            methods["identities"].as_array().unwrap().len(),
            2,
            "{methods}"
        );
        let (test_id, other_id) = (id_of(&methods, "test"), id_of(&methods, "other"));
        let (a, b) = tokio::join!(
            unlink(&relay, &token, &test_id, json!({})),
            unlink(&relay, &token, &other_id, json!({})),
        );
        let mut statuses = [a.status, b.status];
        statuses.sort();
        assert_eq!(
            statuses,
            [204, 409],
            "round {round}: {} / {}",
            a.body,
            b.body
        );
        assert_eq!(
            sign_in_methods(&relay, &token).await["identities"]
                .as_array()
                .unwrap()
                .len(),
            1,
            "round {round}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_accounts_identity_cannot_be_unlinked() {
    let test = Provider::start().await;
    let relay = relay_with_provider(&test).await;
    let ann = relay.signup("ann@example.com").await;
    let ann = ann.body["token"].as_str().unwrap().to_owned();
    test.person("sub-ann", "ann@example.com");
    provider_sign_in(&relay, None, false).await;
    let ann_id = id_of(&sign_in_methods(&relay, &ann).await, "test");

    let bob = relay.signup("bob@example.com").await;
    let bob = bob.body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        sign_in_methods(&relay, &bob).await["identities"],
        json!([]),
        "bob sees none of ann's"
    );
    // Bob, with his own right password, asks to unlink ann's identity: not his.
    let refused = unlink(&relay, &bob, &ann_id, json!({"password": PASSWORD})).await;
    assert_eq!(refused.status, 404, "{}", refused.body);
    assert_eq!(
        refused.body["error"],
        "this account has no such sign-in method"
    );
    let made_up = unlink(&relay, &bob, &"0".repeat(32), json!({"password": PASSWORD})).await;
    assert_eq!(made_up.status, 404);
    let anonymous = relay
        .call(
            reqwest::Method::DELETE,
            &format!("/api/account/identities/{ann_id}"),
            None,
            None,
            Some(json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        providers_of(&sign_in_methods(&relay, &ann).await),
        ["test"],
        "ann keeps her identity"
    );
}
