//! Sign-in with OpenID Connect providers (`[oidc]`): the authorization code flow with
//! PKCE (S256), state and nonce, for any number of providers.
//!
//! - `GET /api/auth/oidc/providers`: the configured providers (name and the name on the
//!   button), for the sign-in page. Public.
//! - `GET /api/auth/oidc/{name}/start`: makes fresh state, nonce and PKCE verifier
//!   ([`flow`]), keeps the nonce and verifier in the store under the state's hash, puts
//!   the state in this browser's [`flow::FLOW_COOKIE`], and sends the browser to the
//!   provider. With `?reauth=1` (a signed-in person confirming who they are before
//!   setting a password or deleting an account that has none) it asks the provider to
//!   authenticate the person again (`prompt=login`, `max_age=0`) and notes the
//!   browser's session (from its refresh cookie), which the new one replaces.
//! - `GET /api/auth/oidc/{name}/callback`: the provider sends the browser back here. The
//!   state must be the one in this browser's cookie and in the store (once, within
//!   `login_timeout_secs`); the code is exchanged with the verifier; the ID token is
//!   checked ([`client`]); the linking rule ([`link`]) picks the account; the relay then
//!   starts the same session as a password sign-in (the refresh cookie), recording the
//!   ID token's `auth_time` as when the person last proved who they are, and sends the
//!   browser to the web app (to its account page after `?reauth=1`).
//!
//! Every failure sends the browser to the web app's sign-in page with
//! `?oidc_error=<code>`, which the page turns into a sentence; details go to the log.
//! This module does not manage linked identities from the account screens (unlinking,
//! listing), and does not do provider-initiated or single sign-out.

mod client;
mod flow;
mod link;

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};

use super::sessions::{SessionOf, cookie_token, issue_tokens};
use crate::state::RelayState;
use crate::store::{NewIdentity, PendingLogin, StoreError};
use client::Provider;
use flow::FlowSecrets;
use link::{Decision, Refusal};

/// The configured providers and the HTTP client that talks to them.
pub(super) struct Oidc {
    http: reqwest::Client,
    providers: Vec<Provider>,
    public_url: String,
    login_timeout_secs: u64,
}

impl Oidc {
    fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.config.name == name)
    }

    /// Where the provider sends the browser back to, as registered there.
    fn redirect_uri(&self, name: &str) -> String {
        format!("{}/api/auth/oidc/{name}/callback", self.public_url)
    }
}

/// The sign-in routes, with the providers of `config`'s `[oidc]`.
pub(super) fn routes(config: &crate::config::RelayConfig) -> Router<Arc<RelayState>> {
    let http = match client::http_client() {
        Ok(http) => http,
        Err(err) => {
            tracing::error!(%err, "OpenID Connect sign-in is off: no HTTP client");
            return Router::new().route(
                "/api/auth/oidc/providers",
                get(|| async { Json(Listing { providers: vec![] }) }),
            );
        }
    };
    let oidc = Oidc {
        http,
        providers: config
            .oidc
            .providers
            .iter()
            .cloned()
            .map(Provider::new)
            .collect(),
        public_url: config
            .oidc
            .public_url
            .as_deref()
            .unwrap_or("")
            .trim_end_matches('/')
            .to_owned(),
        login_timeout_secs: config.oidc.login_timeout_secs.max(1),
    };
    Router::new()
        .route("/api/auth/oidc/providers", get(list))
        .route("/api/auth/oidc/{name}/start", get(start))
        .route("/api/auth/oidc/{name}/callback", get(callback))
        .layer(Extension(Arc::new(oidc)))
}

/// One entry of `GET /api/auth/oidc/providers`.
#[derive(Serialize)]
struct ProviderEntry {
    /// The provider's name in the URLs.
    name: String,
    /// The name on the button.
    display_name: String,
    /// Where the button goes.
    start_url: String,
}

/// `GET /api/auth/oidc/providers`.
#[derive(Serialize)]
struct Listing {
    providers: Vec<ProviderEntry>,
}

async fn list(Extension(oidc): Extension<Arc<Oidc>>) -> Json<Listing> {
    Json(Listing {
        providers: oidc
            .providers
            .iter()
            .map(|p| ProviderEntry {
                name: p.config.name.clone(),
                display_name: p.config.display_name().to_owned(),
                start_url: format!("/api/auth/oidc/{}/start", p.config.name),
            })
            .collect(),
    })
}

/// A redirect (303) setting these cookies, never cached.
fn redirect(to: &str, cookies: Vec<String>) -> Response {
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    for cookie in cookies {
        if let Ok(value) = cookie.parse() {
            headers.append(header::SET_COOKIE, value);
        }
    }
    response
}

/// Back to the sign-in page with an error code (and the flow cookie deleted).
fn fail(oidc: &Oidc, code: &str) -> Response {
    crate::metrics::refused("oidc_sign_in");
    metrics::counter!("aisa_relay_oidc_sign_ins_total", "result" => code.to_owned()).increment(1);
    redirect(
        &format!("{}/?oidc_error={code}", oidc.public_url),
        vec![flow::flow_cookie(None, 0)],
    )
}

/// The query of `/start`.
#[derive(Deserialize)]
struct StartQuery {
    /// `1`: a signed-in person confirming who they are (see the module's doc).
    #[serde(default)]
    reauth: Option<String>,
}

/// The live session this browser's refresh cookie belongs to, if any.
async fn cookie_session(state: &RelayState, headers: &HeaderMap) -> Option<String> {
    let token = cookie_token(headers)?;
    let stored = state
        .store
        .session_token(&crate::auth::hash_token(&token))
        .await
        .ok()??;
    (!stored.revoked && stored.expires_at > crate::auth::now_secs() as i64)
        .then_some(stored.session_id)
}

/// `GET /api/auth/oidc/{name}/start`: to the provider.
async fn start(
    State(state): State<Arc<RelayState>>,
    Extension(oidc): Extension<Arc<Oidc>>,
    Path(name): Path<String>,
    Query(query): Query<StartQuery>,
    headers: HeaderMap,
) -> Response {
    let reauth = query
        .reauth
        .as_deref()
        .is_some_and(|v| v == "1" || v == "true");
    let Some(provider) = oidc.provider(&name) else {
        return fail(&oidc, "unknown_provider");
    };
    let meta = match provider.metadata(&oidc.http).await {
        Ok(meta) => meta,
        Err(err) => {
            tracing::warn!(provider = %name, %err, "OpenID provider unreachable");
            return fail(&oidc, "unreachable");
        }
    };
    let secrets = FlowSecrets::new();
    let redirect_uri = oidc.redirect_uri(&name);
    let scope = provider.config.scope();
    let url = match (flow::AuthRequest {
        endpoint: &meta.authorization_endpoint,
        client_id: &provider.config.client_id,
        redirect_uri: &redirect_uri,
        scope: &scope,
        reauth,
    })
    .url(&secrets)
    {
        Ok(url) => url,
        Err(err) => {
            tracing::warn!(provider = %name, %err, "the provider's authorization endpoint is not a URL");
            return fail(&oidc, "unreachable");
        }
    };
    let now = crate::auth::now_secs() as i64;
    let pending = PendingLogin {
        provider: name.clone(),
        nonce: secrets.nonce.clone(),
        verifier: secrets.verifier.clone(),
        expires_at: now + oidc.login_timeout_secs as i64,
        replaces_session: match reauth {
            true => cookie_session(&state, &headers).await,
            false => None,
        },
    };
    if let Err(err) = state
        .store
        .insert_oidc_login(&flow::state_key(&secrets.state), &pending, now)
        .await
    {
        tracing::warn!(%err, "could not keep a sign-in under way");
        return fail(&oidc, "failed");
    }
    redirect(
        url.as_str(),
        vec![flow::flow_cookie(
            Some(&secrets.state),
            oidc.login_timeout_secs,
        )],
    )
}

/// What the provider sends back (RFC 6749 4.1.2 and 4.1.2.1).
#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /api/auth/oidc/{name}/callback`: the provider's answer.
async fn callback(
    State(state): State<Arc<RelayState>>,
    Extension(oidc): Extension<Arc<Oidc>>,
    Path(name): Path<String>,
    Query(query): Query<CallbackQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(provider) = oidc.provider(&name) else {
        return fail(&oidc, "unknown_provider");
    };
    let cookies: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let held = flow::cookie_state(&cookies);
    let ours = flow::state_matches(held.as_deref(), query.state.as_deref());
    // The sign-in is used up whatever happens next.
    let pending = match (&query.state, ours) {
        (Some(returned), true) => match state
            .store
            .take_oidc_login(&flow::state_key(returned))
            .await
        {
            Ok(pending) => pending,
            Err(err) => {
                tracing::warn!(%err, "could not read a sign-in under way");
                return fail(&oidc, "failed");
            }
        },
        _ => None,
    };
    if let Some(error) = &query.error {
        tracing::info!(
            provider = %name,
            error,
            description = query.error_description.as_deref().unwrap_or(""),
            "the provider ended the sign-in"
        );
        let code = match error.as_str() {
            "access_denied" | "consent_required" | "interaction_required" | "login_required" => {
                "denied"
            }
            _ => "provider_error",
        };
        return fail(&oidc, code);
    }
    if !ours {
        tracing::info!(provider = %name, cookie = held.is_some(), "sign-in refused: the state is not this browser's");
        return fail(&oidc, "state");
    }
    let Some(pending) = pending.filter(|p| p.provider == name) else {
        tracing::info!(provider = %name, "sign-in refused: no such sign-in under way (used, or another provider's)");
        return fail(&oidc, "state");
    };
    let now = crate::auth::now_secs() as i64;
    if pending.expires_at < now {
        return fail(&oidc, "expired");
    }
    let Some(code) = query.code.as_deref().filter(|c| !c.is_empty()) else {
        return fail(&oidc, "provider_error");
    };
    let identity = match provider
        .finish(
            &oidc.http,
            code,
            &oidc.redirect_uri(&name),
            &pending.verifier,
            &pending.nonce,
        )
        .await
    {
        Ok(identity) => identity,
        Err(err) => {
            tracing::warn!(provider = %name, %err, "sign-in with the provider failed");
            return fail(&oidc, "failed");
        }
    };
    let user = match open_account(&state, &name, &identity, now).await {
        Ok(Ok(user)) => user,
        Ok(Err(refusal)) => {
            tracing::info!(provider = %name, subject = %identity.subject, refusal = refusal.code(), "sign-in refused");
            return fail(&oidc, refusal.code());
        }
        Err(err) => {
            tracing::warn!(%err, "sign-in failed in the store");
            return fail(&oidc, "failed");
        }
    };
    // Confirming who they are: the browser's old session gives way to the new one (when
    // it is the same account's; another account's sign-in leaves it alone).
    let reauth = pending.replaces_session.is_some();
    if let Some(old) = &pending.replaces_session
        && let Err(err) = state.store.revoke_session(&user.id, old).await
    {
        tracing::warn!(%err, "could not end the session a confirmation replaces");
    }
    let session = SessionOf::Provider(&headers, identity.auth_time);
    let issued = match issue_tokens(&state, &user, session, true).await {
        Ok(issued) => issued,
        Err(_) => return fail(&oidc, "failed"),
    };
    metrics::counter!("aisa_relay_oidc_sign_ins_total", "result" => "ok").increment(1);
    tracing::info!(provider = %name, user_id = %user.id, reauth, auth_time = ?identity.auth_time, "signed in with an OpenID provider");
    let mut cookies = vec![flow::flow_cookie(None, 0)];
    cookies.extend(issued.cookie().map(str::to_owned));
    let back = if reauth { "/#/account" } else { "/" };
    redirect(&format!("{}{back}", oidc.public_url), cookies)
}

/// Applies the linking rule: the account to sign in, or why none.
async fn open_account(
    state: &RelayState,
    provider: &str,
    identity: &client::VerifiedIdentity,
    now: i64,
) -> Result<Result<crate::store::User, Refusal>, StoreError> {
    let linked = state
        .store
        .identity_user(&identity.issuer, &identity.subject, now)
        .await?;
    let by_email = match (&linked, &identity.account.email) {
        (None, Some(email)) => state.store.user_by_email(email).await?,
        _ => None,
    };
    let new = NewIdentity {
        issuer: &identity.issuer,
        subject: &identity.subject,
        provider,
        email: identity.account.email.as_deref(),
        now,
    };
    match link::decide(
        linked,
        &identity.account,
        by_email,
        state.config.allow_signup,
    ) {
        Decision::SignIn(user) => Ok(Ok(user)),
        Decision::Link(user) => {
            state.store.link_identity(&user.id, &new).await?;
            tracing::info!(%provider, user_id = %user.id, "identity linked to an account by its verified email");
            Ok(Ok(user))
        }
        Decision::Create(email) => Ok(Ok(state
            .store
            .create_user_with_identity(&email, &new)
            .await?)),
        Decision::Refuse(refusal) => Ok(Err(refusal)),
    }
}
