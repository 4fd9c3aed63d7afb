//! HTTP to hosts the person granted (`network` in `permissions.json`).

use std::collections::BTreeMap;

use super::HostError;
use serde_json::json;

/// A request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `http://` or `https://` URL.
    pub url: String,
    /// `GET`, `POST`, …
    pub method: String,
    /// Request headers.
    pub headers: BTreeMap<String, String>,
    /// Request body.
    pub body: Option<String>,
}

impl Request {
    /// A GET request.
    pub fn get(url: impl Into<String>) -> Self {
        Request {
            url: url.into(),
            method: "GET".into(),
            headers: BTreeMap::new(),
            body: None,
        }
    }

    /// A POST request with a body.
    pub fn post(url: impl Into<String>, body: impl Into<String>) -> Self {
        Request {
            method: "POST".into(),
            body: Some(body.into()),
            ..Request::get(url)
        }
    }

    /// The same request with a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }
}

/// A response (the body as text).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Response headers, lower-case names.
    pub headers: BTreeMap<String, String>,
    /// The body.
    pub body: String,
}

/// Sends a request; redirects are followed to granted hosts only.
pub fn fetch(request: &Request) -> Result<Response, HostError> {
    let value = host_call!(
        http,
        json!({
            "op": "fetch",
            "url": request.url,
            "method": request.method,
            "headers": request.headers,
            "body": request.body,
        }),
    )?;
    Ok(Response {
        status: value["status"]
            .as_u64()
            .ok_or_else(|| HostError::bad_answer("no status"))? as u16,
        headers: value["headers"]
            .as_object()
            .map(|h| {
                h.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default(),
        body: value["body"].as_str().unwrap_or_default().to_owned(),
    })
}
