//! Testing helpers for running a mini-app's logic on the host (not wasm). State is per
//! thread (each test has its own); [`reset`] empties it.

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::HostError;
use crate::env::Env;
use crate::http::Response;

thread_local! {
    pub(crate) static OUTPUT: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    pub(crate) static FAILURE: RefCell<Option<String>> = const { RefCell::new(None) };
    pub(crate) static MODEL_REPLY: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
    static WORLD: RefCell<World> = RefCell::new(World::default());
}

/// The fake host's state.
#[derive(Default)]
struct World {
    files: BTreeMap<String, String>,
    pdfs: BTreeMap<String, String>,
    responses: BTreeMap<String, Response>,
    store: BTreeMap<String, Value>,
    env: Option<Env>,
    errors: BTreeMap<String, HostError>,
}

/// Forgets fake files, responses, storage, env, errors and output on this thread.
pub fn reset() {
    WORLD.with(|w| *w.borrow_mut() = World::default());
    take_output();
    take_failure();
    MODEL_REPLY.with(|r| *r.borrow_mut() = None);
}

/// Puts a text file at `path` (as the app writes it, e.g. `$DOCUMENTS/a.txt`).
pub fn set_file(path: &str, content: &str) {
    WORLD.with(|w| w.borrow_mut().files.insert(path.into(), content.into()));
}

/// The content of the fake file at `path` (e.g. one the app wrote).
pub fn file(path: &str) -> Option<String> {
    WORLD.with(|w| w.borrow().files.get(path).cloned())
}

/// What `tools::pdf_text(path)` returns.
pub fn set_pdf_text(path: &str, text: &str) {
    WORLD.with(|w| w.borrow_mut().pdfs.insert(path.into(), text.into()));
}

/// What `http::fetch` answers for `url`; other URLs are `permission_denied`.
pub fn set_http_response(url: &str, response: Response) {
    WORLD.with(|w| w.borrow_mut().responses.insert(url.into(), response));
}

/// What `env::get` answers (default: app `test-app` 0.0.0).
pub fn set_env(env: Env) {
    WORLD.with(|w| w.borrow_mut().env = Some(env));
}

/// Makes every call of `op` (e.g. `"fs.read"`, `"http.fetch"`, `"storage.set"`)
/// answer `error`.
pub fn set_error(op: &str, error: HostError) {
    WORLD.with(|w| w.borrow_mut().errors.insert(op.into(), error));
}

/// A value in the fake store.
pub fn stored(key: &str) -> Option<Value> {
    WORLD.with(|w| w.borrow().store.get(key).cloned())
}

/// The fake host's answer to one call.
pub(crate) fn answer(name: &str, request: &Value) -> Value {
    let op = request["op"].as_str().unwrap_or_default();
    let result = WORLD.with(|w| {
        let mut w = w.borrow_mut();
        if let Some(err) = w.errors.get(&format!("{name}.{op}")) {
            return Err(err.clone());
        }
        fake(&mut w, name, op, request)
    });
    match result {
        Ok(value) => json!({ "ok": value }),
        Err(err) => json!({ "error": { "code": err.code, "message": err.message } }),
    }
}

fn fake(w: &mut World, import: &str, op: &str, request: &Value) -> Result<Value, HostError> {
    let text = |field: &str| request[field].as_str().unwrap_or_default().to_owned();
    let not_found = |path: &str| HostError::new("not_found", format!("{path} does not exist"));
    match (import, op) {
        ("fs", "read") => {
            let path = text("path");
            w.files
                .get(&path)
                .cloned()
                .map(Value::from)
                .ok_or_else(|| not_found(&path))
        }
        ("fs", "write") => {
            w.files.insert(text("path"), text("content"));
            Ok(Value::Null)
        }
        ("fs", "list") => {
            let dir = format!("{}/", text("path").trim_end_matches('/'));
            let mut seen = BTreeMap::new();
            for (path, content) in &w.files {
                if let Some(rest) = path.strip_prefix(&dir) {
                    match rest.split_once('/') {
                        Some((sub, _)) => seen.insert(sub.to_owned(), (true, 0)),
                        None => seen.insert(rest.to_owned(), (false, content.len())),
                    };
                }
            }
            Ok(seen
                .into_iter()
                .map(|(name, (dir, size))| json!({"name": name, "dir": dir, "size": size}))
                .collect())
        }
        ("fs", "pdf_text") => {
            let path = text("path");
            w.pdfs
                .get(&path)
                .cloned()
                .map(Value::from)
                .ok_or_else(|| not_found(&path))
        }
        ("http", "fetch") => {
            let url = text("url");
            let response = w.responses.get(&url).ok_or_else(|| {
                HostError::new("permission_denied", format!("{url} is not a granted host"))
            })?;
            Ok(json!({
                "status": response.status,
                "headers": response.headers,
                "body": response.body,
            }))
        }
        ("tool", "csv_parse") => {
            let delimiter = text("delimiter");
            let mut reader = csv::ReaderBuilder::new()
                .delimiter(*delimiter.as_bytes().first().unwrap_or(&b','))
                .has_headers(request["has_headers"].as_bool().unwrap_or(true))
                .flexible(true)
                .from_reader(request["text"].as_str().unwrap_or_default().as_bytes());
            let invalid = |e: csv::Error| HostError::new("invalid", format!("CSV: {e}"));
            let headers: Vec<String> = if request["has_headers"].as_bool().unwrap_or(true) {
                reader
                    .headers()
                    .map_err(invalid)?
                    .iter()
                    .map(str::to_owned)
                    .collect()
            } else {
                Vec::new()
            };
            let mut rows = Vec::new();
            for record in reader.records() {
                rows.push(
                    record
                        .map_err(invalid)?
                        .iter()
                        .map(str::to_owned)
                        .collect::<Vec<_>>(),
                );
            }
            Ok(json!({ "headers": headers, "rows": rows }))
        }
        ("storage", "get") => Ok(w.store.get(&text("key")).cloned().unwrap_or_default()),
        ("storage", "set") => {
            w.store.insert(text("key"), request["value"].clone());
            Ok(Value::Null)
        }
        ("storage", "delete") => {
            w.store.remove(&text("key"));
            Ok(Value::Null)
        }
        ("storage", "keys") => Ok(w.store.keys().cloned().collect()),
        ("env", "get") => {
            let env = w.env.clone().unwrap_or_else(|| Env {
                app_id: "test-app".into(),
                app_version: "0.0.0".into(),
                node_version: "0.0.0".into(),
                os: std::env::consts::OS.into(),
                arch: std::env::consts::ARCH.into(),
            });
            Ok(json!({
                "app_id": env.app_id,
                "app_version": env.app_version,
                "node_version": env.node_version,
                "os": env.os,
                "arch": env.arch,
            }))
        }
        _ => Err(HostError::new("invalid", format!("unknown op {op:?}"))),
    }
}

/// The pieces emitted so far on this thread, emptying the buffer.
pub fn take_output() -> Vec<String> {
    OUTPUT.with(|o| std::mem::take(&mut *o.borrow_mut()))
}

/// The last message passed to `fail` on this thread.
pub fn take_failure() -> Option<String> {
    FAILURE.with(|f| f.borrow_mut().take())
}

/// What `ai::generate` streams on this thread.
pub fn set_model_reply(pieces: &[&str]) {
    MODEL_REPLY.with(|r| *r.borrow_mut() = Some(pieces.iter().map(|p| p.to_string()).collect()));
}
