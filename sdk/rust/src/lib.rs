//! Write AI SuperApp mini-apps in Rust.
//!
//! A mini-app is a `cdylib` built for `wasm32-unknown-unknown` that speaks the host ABI
//! `aisapp_v1` (`docs/guest-abi.md`). This crate hides the ABI: write a function from the
//! input JSON to `Result<(), String>` and name it in [`entry!`]:
//!
//! ```
//! fn run(input: &str) -> Result<(), String> {
//!     let input: serde_json::Value = serde_json::from_str(input).map_err(|e| e.to_string())?;
//!     let topic = input["payload"]["topic"].as_str().ok_or("topic missing")?;
//!     for text in aisapp_guest::ai::generate(&aisapp_guest::ai::Request::new(format!("About {topic}")))? {
//!         aisapp_guest::emit(&text?);
//!     }
//!     Ok(())
//! }
//! aisapp_guest::entry!(run);
//! ```
//!
//! On other targets (your tests), [`emit`] collects output that [`testing::take_output`]
//! returns, and [`ai::generate`] answers from [`testing::set_model_reply`], so the logic
//! can be tested with `cargo test` without a host.
//!
//! The permissioned host API has safe wrappers: [`fs`] (files in folders the person
//! granted, and the app's own `$APP_DATA`), [`http`] (granted hosts only), [`tools`]
//! (CSV, PDF text), [`storage`] (the app's persistent key-value store) and [`env`]. Each
//! returns `Result<_, HostError>`: a refusal ([`HostError::code`] `permission_denied`) is
//! an error value the app can handle, not a crash. On other targets they run against
//! fakes in [`testing`] (an in-memory file system, canned HTTP responses, an in-memory
//! store, real CSV parsing).

/// Log levels for [`log`].
#[derive(Debug, Clone, Copy)]
pub enum Level {
    /// Detail for debugging.
    Debug = 0,
    /// Normal events.
    Info = 1,
    /// Something odd.
    Warn = 2,
    /// Something failed.
    Error = 3,
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)] // the ABI boundary
mod host {
    #[link(wasm_import_module = "aisapp_v1")]
    unsafe extern "C" {
        pub fn emit(ptr: *const u8, len: usize);
        pub fn ai_generate(ptr: *const u8, len: usize) -> i32;
        pub fn ai_next(handle: i32, buf: *mut u8, cap: usize) -> i32;
        pub fn log(level: i32, ptr: *const u8, len: usize);
        pub fn fail(ptr: *const u8, len: usize);
        pub fn fs(ptr: *const u8, len: usize) -> i32;
        pub fn http(ptr: *const u8, len: usize) -> i32;
        pub fn tool(ptr: *const u8, len: usize) -> i32;
        pub fn storage(ptr: *const u8, len: usize) -> i32;
        pub fn env(ptr: *const u8, len: usize) -> i32;
        pub fn result(buf: *mut u8, cap: usize) -> i32;
    }
}

/// A host call that was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError {
    /// `permission_denied`, `not_found`, `invalid`, `too_large`, `failed` or
    /// `unavailable` (see `docs/guest-abi.md`).
    pub code: String,
    /// For a person.
    pub message: String,
}

impl HostError {
    /// An error with `code` and `message`.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        HostError {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// Whether the app's permissions did not allow the call.
    pub fn is_permission_denied(&self) -> bool {
        self.code == "permission_denied"
    }

    fn bad_answer(what: &str) -> Self {
        HostError::new("failed", format!("unexpected answer from the host: {what}"))
    }
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for HostError {}

impl From<HostError> for String {
    fn from(err: HostError) -> String {
        err.to_string()
    }
}

/// Calls one capability import of the host (`fs`, `http`, …): only the imports an app
/// uses end up in its module, so its imports match the permissions it asks for.
macro_rules! host_call {
    ($import:ident, $request:expr $(,)?) => {{
        #[cfg(target_arch = "wasm32")]
        let raw = |ptr: *const u8, len: usize| -> i32 {
            #[allow(unsafe_code)]
            // SAFETY: the pointer and length describe the request, valid for the call.
            unsafe {
                $crate::host::$import(ptr, len)
            }
        };
        #[cfg(not(target_arch = "wasm32"))]
        let raw = ();
        $crate::call(raw, stringify!($import), $request)
    }};
}

/// Makes one host call and unwraps its `{"ok"}` / `{"error"}` answer.
#[cfg(target_arch = "wasm32")]
fn call(
    raw: impl FnOnce(*const u8, usize) -> i32,
    _import: &'static str,
    request: serde_json::Value,
) -> Result<serde_json::Value, HostError> {
    let request = request.to_string();
    let n = raw(request.as_ptr(), request.len());
    let mut buf = vec![0u8; n.max(0) as usize];
    #[allow(unsafe_code)]
    // SAFETY: `result` writes at most `buf.len()` bytes into `buf`.
    let copied = unsafe { host::result(buf.as_mut_ptr(), buf.len()) };
    if copied < 0 {
        return Err(HostError::bad_answer("no answer"));
    }
    buf.truncate(copied as usize);
    let answer = serde_json::from_slice(&buf).map_err(|_| HostError::bad_answer("not JSON"))?;
    unwrap_answer(answer)
}

/// On the host: answered by the fakes in [`testing`].
#[cfg(not(target_arch = "wasm32"))]
fn call(
    _raw: (),
    import: &'static str,
    request: serde_json::Value,
) -> Result<serde_json::Value, HostError> {
    unwrap_answer(testing::answer(import, &request))
}

fn unwrap_answer(answer: serde_json::Value) -> Result<serde_json::Value, HostError> {
    let serde_json::Value::Object(mut answer) = answer else {
        return Err(HostError::bad_answer("not an object"));
    };
    if let Some(value) = answer.remove("ok") {
        return Ok(value);
    }
    let error = answer.remove("error").unwrap_or_default();
    Err(HostError::new(
        error["code"].as_str().unwrap_or("failed"),
        error["message"].as_str().unwrap_or("the host call failed"),
    ))
}

fn string_of(value: serde_json::Value) -> Result<String, HostError> {
    match value {
        serde_json::Value::String(s) => Ok(s),
        _ => Err(HostError::bad_answer("expected a string")),
    }
}

fn strings_of(value: &serde_json::Value) -> Result<Vec<String>, HostError> {
    value
        .as_array()
        .ok_or_else(|| HostError::bad_answer("expected a list"))?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| HostError::bad_answer("expected strings"))
        })
        .collect()
}

/// Files: in folders the person granted (`filesystem` in `permissions.json`) and in the
/// app's own folder `$APP_DATA`. Paths are absolute or start with `$HOME`, `$DOCUMENTS`,
/// `$DOWNLOADS`, `$DESKTOP` or `$APP_DATA`.
pub mod fs {
    use super::HostError;
    use serde_json::json;

    /// One entry of a folder.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Entry {
        /// File or folder name.
        pub name: String,
        /// Whether it is a folder.
        pub dir: bool,
        /// Size in bytes.
        pub size: u64,
    }

    /// A UTF-8 text file's content.
    pub fn read_to_string(path: &str) -> Result<String, HostError> {
        super::string_of(host_call!(fs, json!({"op": "read", "path": path}))?)
    }

    /// Creates or replaces a file (missing folders are created).
    pub fn write(path: &str, content: &str) -> Result<(), HostError> {
        host_call!(fs, json!({"op": "write", "path": path, "content": content}),).map(drop)
    }

    /// A folder's entries, sorted by name.
    pub fn list(path: &str) -> Result<Vec<Entry>, HostError> {
        let value = host_call!(fs, json!({"op": "list", "path": path}))?;
        let entries = value
            .as_array()
            .ok_or_else(|| HostError::bad_answer("expected a list"))?;
        entries
            .iter()
            .map(|e| {
                Ok(Entry {
                    name: e["name"]
                        .as_str()
                        .ok_or_else(|| HostError::bad_answer("entry without a name"))?
                        .to_owned(),
                    dir: e["dir"].as_bool().unwrap_or(false),
                    size: e["size"].as_u64().unwrap_or(0),
                })
            })
            .collect()
    }
}

/// HTTP to hosts the person granted (`network` in `permissions.json`).
pub mod http {
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
}

/// Helpers the host runs for the app: CSV parsing, PDF text.
pub mod tools {
    use super::HostError;
    use serde_json::json;

    /// A parsed CSV text.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct Csv {
        /// The header row (empty without one).
        pub headers: Vec<String>,
        /// The records; rows may differ in length.
        pub rows: Vec<Vec<String>>,
    }

    /// How to parse CSV.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct CsvOptions {
        /// The field separator (ASCII).
        pub delimiter: char,
        /// Whether the first record is the header row.
        pub has_headers: bool,
    }

    impl Default for CsvOptions {
        fn default() -> Self {
            CsvOptions {
                delimiter: ',',
                has_headers: true,
            }
        }
    }

    /// Parses comma-separated text whose first row is the header.
    pub fn parse_csv(text: &str) -> Result<Csv, HostError> {
        parse_csv_with(text, CsvOptions::default())
    }

    /// Parses CSV text with `options`.
    pub fn parse_csv_with(text: &str, options: CsvOptions) -> Result<Csv, HostError> {
        let value = host_call!(
            tool,
            json!({
                "op": "csv_parse",
                "text": text,
                "delimiter": options.delimiter.to_string(),
                "has_headers": options.has_headers,
            }),
        )?;
        Ok(Csv {
            headers: super::strings_of(&value["headers"])?,
            rows: value["rows"]
                .as_array()
                .ok_or_else(|| HostError::bad_answer("no rows"))?
                .iter()
                .map(super::strings_of)
                .collect::<Result<_, _>>()?,
        })
    }

    /// The text of a PDF file (needs read access to it, as [`crate::fs`]).
    pub fn pdf_text(path: &str) -> Result<String, HostError> {
        super::string_of(host_call!(fs, json!({"op": "pdf_text", "path": path}))?)
    }
}

/// The app's own persistent key-value store (JSON values, 1 MiB in all). Needs no
/// permission; no other app can see it.
pub mod storage {
    use super::HostError;
    use serde_json::{Value, json};

    /// The value of `key`, if set.
    pub fn get(key: &str) -> Result<Option<Value>, HostError> {
        let value = host_call!(storage, json!({"op": "get", "key": key}))?;
        Ok((!value.is_null()).then_some(value))
    }

    /// Sets `key` to `value`.
    pub fn set(key: &str, value: &Value) -> Result<(), HostError> {
        host_call!(storage, json!({"op": "set", "key": key, "value": value}),).map(drop)
    }

    /// Removes `key`.
    pub fn delete(key: &str) -> Result<(), HostError> {
        host_call!(storage, json!({"op": "delete", "key": key})).map(drop)
    }

    /// Every key, sorted.
    pub fn keys() -> Result<Vec<String>, HostError> {
        super::strings_of(&host_call!(storage, json!({"op": "keys"}))?)
    }
}

/// Where the app runs: safe facts only (no environment variables, no paths).
pub mod env {
    use super::HostError;
    use serde_json::json;

    /// What `env::get` tells.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct Env {
        /// This app's id.
        pub app_id: String,
        /// This app's version.
        pub app_version: String,
        /// The desktop node's version.
        pub node_version: String,
        /// `linux`, `macos`, `windows`, …
        pub os: String,
        /// `x86_64`, `aarch64`, …
        pub arch: String,
    }

    /// The facts.
    pub fn get() -> Result<Env, HostError> {
        let value = host_call!(env, json!({"op": "get"}))?;
        let field = |name: &str| value[name].as_str().unwrap_or_default().to_owned();
        Ok(Env {
            app_id: field("app_id"),
            app_version: field("app_version"),
            node_version: field("node_version"),
            os: field("os"),
            arch: field("arch"),
        })
    }
}

/// Sends a piece of output to the browser now. Waits while the browser is slower.
pub fn emit(text: &str) {
    #[cfg(target_arch = "wasm32")]
    #[allow(unsafe_code)]
    // SAFETY: the pointer and length describe `text`, valid for the call.
    unsafe {
        host::emit(text.as_ptr(), text.len())
    }
    #[cfg(not(target_arch = "wasm32"))]
    testing::OUTPUT.with(|o| o.borrow_mut().push(text.to_owned()));
}

/// Writes to the desktop node's log, tagged with the app.
pub fn log(level: Level, text: &str) {
    #[cfg(target_arch = "wasm32")]
    #[allow(unsafe_code)]
    // SAFETY: as in `emit`.
    unsafe {
        host::log(level as i32, text.as_ptr(), text.len())
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {text}");
}

/// Records why the action failed; [`entry!`] calls it for an `Err`.
pub fn fail(message: &str) {
    #[cfg(target_arch = "wasm32")]
    #[allow(unsafe_code)]
    // SAFETY: as in `emit`.
    unsafe {
        host::fail(message.as_ptr(), message.len())
    }
    #[cfg(not(target_arch = "wasm32"))]
    testing::FAILURE.with(|f| *f.borrow_mut() = Some(message.to_owned()));
}

/// The model, through the node's AI adapter. The app never sees a key.
pub mod ai {
    /// What to ask the model.
    #[derive(Debug, Clone)]
    pub struct Request {
        /// The user prompt.
        pub prompt: String,
        /// An optional system prompt.
        pub system: Option<String>,
        /// An optional cap on output tokens.
        pub max_tokens: Option<u32>,
    }

    impl Request {
        /// A request with just a prompt.
        pub fn new(prompt: impl Into<String>) -> Self {
            Request {
                prompt: prompt.into(),
                system: None,
                max_tokens: None,
            }
        }

        fn to_json(&self) -> String {
            serde_json::json!({
                "prompt": self.prompt,
                "system": self.system,
                "max_tokens": self.max_tokens,
            })
            .to_string()
        }
    }

    /// The model's answer as it streams: each item is the next piece of text.
    pub struct Generation {
        #[cfg(target_arch = "wasm32")]
        handle: i32,
        #[cfg(target_arch = "wasm32")]
        buf: Vec<u8>,
        #[cfg(not(target_arch = "wasm32"))]
        pieces: std::vec::IntoIter<String>,
    }

    /// Starts a generation.
    pub fn generate(request: &Request) -> Result<Generation, String> {
        let json = request.to_json();
        #[cfg(target_arch = "wasm32")]
        {
            #[allow(unsafe_code)]
            // SAFETY: the pointer and length describe `json`, valid for the call.
            let handle = unsafe { super::host::ai_generate(json.as_ptr(), json.len()) };
            if handle < 0 {
                return Err("the model could not be asked".into());
            }
            Ok(Generation {
                handle,
                buf: vec![0; 4096],
            })
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = json;
            let reply = super::testing::MODEL_REPLY.with(|r| r.borrow().clone());
            let pieces = reply.ok_or("no model on this target: call testing::set_model_reply")?;
            Ok(Generation {
                pieces: pieces.into_iter(),
            })
        }
    }

    impl Iterator for Generation {
        type Item = Result<String, String>;

        fn next(&mut self) -> Option<Self::Item> {
            #[cfg(target_arch = "wasm32")]
            {
                #[allow(unsafe_code)]
                // SAFETY: `buf` is writable for `buf.len()` bytes during the call.
                let n = unsafe {
                    super::host::ai_next(self.handle, self.buf.as_mut_ptr(), self.buf.len())
                };
                match n {
                    0 => None,
                    n if n < 0 => Some(Err("the model stream failed".into())),
                    n => Some(
                        std::str::from_utf8(&self.buf[..n as usize])
                            .map(str::to_owned)
                            .map_err(|_| "the model sent invalid UTF-8".to_owned()),
                    ),
                }
            }
            #[cfg(not(target_arch = "wasm32"))]
            self.pieces.next().map(Ok)
        }
    }
}

/// Testing helpers for running a mini-app's logic on the host (not wasm). State is per
/// thread (each test has its own); [`reset`] empties it.
#[cfg(not(target_arch = "wasm32"))]
pub mod testing {
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
        MODEL_REPLY
            .with(|r| *r.borrow_mut() = Some(pieces.iter().map(|p| p.to_string()).collect()));
    }
}

/// Exports the ABI entry points (`aisapp_alloc`, `aisapp_run`) for a function
/// `fn(&str) -> Result<(), String>` that receives the input JSON. An `Err` is reported
/// to the browser as the action's failure.
#[macro_export]
macro_rules! entry {
    ($run:path) => {
        /// Gives the host `len` bytes for the input; `aisapp_run` takes them back.
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn aisapp_alloc(len: usize) -> *mut u8 {
            let mut buf = ::std::vec::Vec::<u8>::with_capacity(len);
            let ptr = buf.as_mut_ptr();
            ::std::mem::forget(buf);
            ptr
        }

        /// Runs the action whose input JSON the host wrote at `ptr`.
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        // The host is the only caller, with the buffer `aisapp_alloc` returned.
        #[allow(clippy::not_unsafe_ptr_arg_deref)]
        #[unsafe(no_mangle)]
        pub extern "C" fn aisapp_run(ptr: *mut u8, len: usize) -> i32 {
            // SAFETY: the host wrote `len` bytes into the buffer `aisapp_alloc(len)` gave.
            let input = unsafe { ::std::vec::Vec::from_raw_parts(ptr, len, len) };
            let result = match ::std::string::String::from_utf8(input) {
                Ok(input) => $run(&input),
                Err(_) => Err("the input is not UTF-8".to_owned()),
            };
            match result {
                Ok(()) => 0,
                Err(message) => {
                    $crate::fail(&message);
                    1
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_side_helpers_collect_output_and_fake_the_model() {
        testing::set_model_reply(&["a", "b"]);
        let pieces: Result<Vec<String>, String> =
            ai::generate(&ai::Request::new("x")).unwrap().collect();
        for p in pieces.unwrap() {
            emit(&p);
        }
        assert_eq!(testing::take_output(), ["a", "b"]);
        fail("nope");
        assert_eq!(testing::take_failure().as_deref(), Some("nope"));
    }

    #[test]
    fn host_api_wrappers_run_against_the_fakes() {
        testing::reset();
        testing::set_file("$DOCUMENTS/a.txt", "hello");
        assert_eq!(fs::read_to_string("$DOCUMENTS/a.txt").unwrap(), "hello");
        let err = fs::read_to_string("$DOCUMENTS/missing").unwrap_err();
        assert_eq!(err.code, "not_found");
        fs::write("$APP_DATA/out/r.md", "# r").unwrap();
        assert_eq!(testing::file("$APP_DATA/out/r.md").as_deref(), Some("# r"));
        assert_eq!(
            fs::list("$APP_DATA").unwrap(),
            [fs::Entry {
                name: "out".into(),
                dir: true,
                size: 0
            }]
        );

        testing::set_http_response(
            "https://api.example.com/x",
            http::Response {
                status: 200,
                body: "hi".into(),
                ..Default::default()
            },
        );
        let response = http::fetch(&http::Request::get("https://api.example.com/x")).unwrap();
        assert_eq!((response.status, response.body.as_str()), (200, "hi"));
        let denied = http::fetch(&http::Request::get("https://evil.example.net/")).unwrap_err();
        assert!(denied.is_permission_denied());

        let csv = tools::parse_csv("a,b\n1,\"x, y\"\n").unwrap();
        assert_eq!(csv.headers, ["a", "b"]);
        assert_eq!(csv.rows, [["1", "x, y"]]);
        testing::set_pdf_text("$DOCUMENTS/r.pdf", "report");
        assert_eq!(tools::pdf_text("$DOCUMENTS/r.pdf").unwrap(), "report");

        storage::set("n", &serde_json::json!(3)).unwrap();
        assert_eq!(storage::get("n").unwrap(), Some(serde_json::json!(3)));
        assert_eq!(storage::keys().unwrap(), ["n"]);
        storage::delete("n").unwrap();
        assert_eq!(storage::get("n").unwrap(), None);

        assert_eq!(env::get().unwrap().app_id, "test-app");
        testing::set_error("storage.set", HostError::new("too_large", "full"));
        assert_eq!(
            storage::set("k", &serde_json::json!(1)).unwrap_err().code,
            "too_large"
        );
    }
}
