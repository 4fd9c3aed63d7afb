//! A small OpenID provider for the account tests, on loopback: discovery, its key
//! (ES256, JWKS), an authorization endpoint that signs the configured person in at once
//! (it notes what the relay asked for: `prompt`, `max_age`) and a token endpoint that
//! checks the PKCE verifier and answers a signed ID token with the `auth_time` the test
//! chose. The relay talks to it over HTTP like to any provider.
//!
//! The full flow against a certified provider (npm `oidc-provider`) in Chromium is
//! `browser-client/test/browser/oidc.test.ts`; this one lets a test say when the person
//! last authenticated (a stale `auth_time`, none at all), which a real provider decides.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// What the provider says of the person's last authentication.
#[derive(Clone, Copy, Debug)]
pub enum AuthTime {
    /// `auth_time` is the moment of the request (a fresh sign-in).
    Now,
    /// `auth_time` is this many seconds ago (a session the provider kept).
    SecondsAgo(i64),
    /// No `auth_time` claim.
    Absent,
}

struct Grant {
    nonce: String,
    challenge: String,
    redirect_uri: String,
    auth_time: Option<i64>,
}

struct Inner {
    issuer: String,
    key: jsonwebtoken::EncodingKey,
    jwk: Value,
    subject: String,
    email: String,
    auth_time: AuthTime,
    codes: HashMap<String, Grant>,
    /// Every authorization request's query, in order.
    requests: Vec<HashMap<String, String>>,
}

/// The running provider.
#[derive(Clone)]
pub struct Provider {
    inner: Arc<Mutex<Inner>>,
    /// Its issuer URL (`http://127.0.0.1:PORT`).
    pub issuer: String,
}

pub const CLIENT_ID: &str = "relay-tests";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

impl Provider {
    /// Starts the provider on loopback.
    pub async fn start() -> Provider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let key = jsonwebtoken::EncodingKey::from_ec_der(pair.serialized_der());
        let point = pair.public_key_raw();
        assert_eq!(point.len(), 65, "an uncompressed P-256 point");
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "test-key",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        let inner = Arc::new(Mutex::new(Inner {
            issuer: issuer.clone(),
            key,
            jwk,
            subject: String::new(),
            email: String::new(),
            auth_time: AuthTime::Now,
            codes: HashMap::new(),
            requests: Vec::new(),
        }));
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/auth", get(authorize))
            .route("/token", post(token))
            .with_state(inner.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Provider { inner, issuer }
    }

    /// Who signs in from now on (a verified email).
    pub fn person(&self, subject: &str, email: &str) {
        let mut inner = self.inner.lock().unwrap();
        inner.subject = subject.to_owned();
        inner.email = email.to_owned();
    }

    /// What the next ID tokens say of the person's last authentication.
    pub fn auth_time(&self, auth_time: AuthTime) {
        self.inner.lock().unwrap().auth_time = auth_time;
    }

    /// The last authorization request's query.
    pub fn last_request(&self) -> HashMap<String, String> {
        self.inner
            .lock()
            .unwrap()
            .requests
            .last()
            .cloned()
            .unwrap_or_default()
    }
}

async fn discovery(State(inner): State<Arc<Mutex<Inner>>>) -> Json<Value> {
    let issuer = inner.lock().unwrap().issuer.clone();
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "code_challenge_methods_supported": ["S256"],
    }))
}

async fn jwks(State(inner): State<Arc<Mutex<Inner>>>) -> Json<Value> {
    Json(json!({ "keys": [inner.lock().unwrap().jwk.clone()] }))
}

/// Signs the person in at once and sends the browser back with a code.
async fn authorize(
    State(inner): State<Arc<Mutex<Inner>>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut inner = inner.lock().unwrap();
    inner.requests.push(query.clone());
    let field = |name: &str| query.get(name).cloned().unwrap_or_default();
    if field("client_id") != CLIENT_ID || field("code_challenge_method") != "S256" {
        return (StatusCode::BAD_REQUEST, "bad client or PKCE method").into_response();
    }
    let code = format!("code-{}", inner.codes.len());
    let auth_time = match inner.auth_time {
        AuthTime::Now => Some(now()),
        AuthTime::SecondsAgo(secs) => Some(now() - secs),
        AuthTime::Absent => None,
    };
    inner.codes.insert(
        code.clone(),
        Grant {
            nonce: field("nonce"),
            challenge: field("code_challenge"),
            redirect_uri: field("redirect_uri"),
            auth_time,
        },
    );
    let mut back = reqwest::Url::parse(&field("redirect_uri")).unwrap();
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &field("state"));
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, back.to_string())],
    )
        .into_response()
}

/// The code for an ID token, once, with the right PKCE verifier.
async fn token(State(inner): State<Arc<Mutex<Inner>>>, body: String) -> Response {
    let form: HashMap<String, String> = reqwest::Url::parse(&format!("http://x/?{body}"))
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let mut inner = inner.lock().unwrap();
    let refuse = |why: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": why})),
        )
            .into_response()
    };
    let Some(grant) = inner
        .codes
        .remove(form.get("code").map_or("", String::as_str))
    else {
        return refuse("unknown or used code");
    };
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != grant.challenge {
        return refuse("the PKCE verifier does not match");
    }
    if form.get("redirect_uri") != Some(&grant.redirect_uri) {
        return refuse("redirect_uri differs");
    }
    let mut claims = json!({
        "iss": inner.issuer, "sub": inner.subject, "aud": CLIENT_ID,
        "iat": now(), "exp": now() + 300, "nonce": grant.nonce,
        "email": inner.email, "email_verified": true,
    });
    if let Some(at) = grant.auth_time {
        claims["auth_time"] = json!(at);
    }
    let mut head = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    head.kid = Some("test-key".into());
    let id_token = jsonwebtoken::encode(&head, &claims, &inner.key).unwrap();
    Json(json!({"id_token": id_token, "access_token": "opaque", "token_type": "Bearer"}))
        .into_response()
}
