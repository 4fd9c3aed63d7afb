//! JavaScript mini-apps: where the JS runtime guest is, and the input an action of a JS
//! app gives it.
//!
//! A JS app (`"entry": "js"` in its manifest) carries `bot-logic.js` and, optionally,
//! `tools.js` instead of a `logic.wasm`. Its actions run in the JS runtime guest
//! (`runtimes/js`, QuickJS compiled to wasm32) in the same sandbox as every other guest;
//! the sources travel in the guest's input JSON:
//!
//! ```json
//! {"action": "write", "payload": {…}, "sources": {"bot-logic.js": "…", "tools.js": "…"}}
//! ```
//!
//! The runtime module is found, in this order, at `$AISA_JS_RUNTIME`, inside the
//! `desktop-node` binary itself (embedded at build time from `scripts/build-guests.sh`'s
//! output by `desktop-node/build.rs`, [`embedded_runtime`]), as `aisa-js-runtime.wasm`
//! next to the node's executable, or in `<home>/runtimes/` ([`locate_runtime`]). This module neither installs apps nor caches the loaded runtime:
//! the caller loads it once ([`load_runtime`]) and reuses the [`LoadedModule`] for every
//! action of every JS app (the sandbox gives each action a fresh instance).
//!
//! When an app is loaded, [`precompile`] has the runtime compile its sources to QuickJS
//! bytecode once (kept in the sandbox's cache directory, authenticated like compiled
//! modules); its actions then carry `"bytecode"` instead of `"sources"` and skip
//! parsing. The bytecode is only ever made by the node from the bundle's own sources:
//! QuickJS bytecode is not safe to load from untrusted input, so none is ever taken from
//! a bundle.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::ai::{AiError, AiProvider, GenerateRequest, TextStream};
use crate::sandbox::{ActionContext, ActionError, Limits, LoadedModule, Sandbox};

/// The environment variable naming the runtime module's path.
pub const RUNTIME_ENV: &str = "AISA_JS_RUNTIME";

/// The runtime module's file name next to the executable and in `<home>/runtimes/`.
pub const RUNTIME_FILE: &str = "aisa-js-runtime.wasm";

/// The logic source every JS app has (the bundle format's name).
pub const BOT_LOGIC: &str = aisa_miniapp::bundle::BOT_LOGIC;

/// The optional helper module a JS app may have; `bot-logic.js` imports it as
/// `./tools.js` (the bundle format's name).
pub const TOOLS: &str = aisa_miniapp::bundle::TOOLS;

/// Why a JS app cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum JsAppError {
    /// No runtime module at any of the places searched.
    #[error("the JavaScript runtime ({RUNTIME_FILE}) was not found; looked at: {}", display_paths(.searched))]
    RuntimeNotFound {
        /// The paths looked at, in order.
        searched: Vec<PathBuf>,
    },
    /// A file could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The runtime module could not be loaded into the sandbox.
    #[error(transparent)]
    Load(#[from] ActionError),
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where the runtime module comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeSource {
    /// A file.
    File(PathBuf),
    /// The copy built into this binary.
    Embedded(&'static [u8]),
}

impl std::fmt::Display for RuntimeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuntimeSource::File(path) => write!(f, "{}", path.display()),
            RuntimeSource::Embedded(wasm) => write!(f, "built in ({} bytes)", wasm.len()),
        }
    }
}

/// The runtime module built into this binary, when `scripts/build-guests.sh` had built
/// it before the node was compiled (see `desktop-node/build.rs`).
pub fn embedded_runtime() -> Option<&'static [u8]> {
    #[cfg(aisa_embedded_js_runtime)]
    {
        Some(include_bytes!(concat!(
            env!("OUT_DIR"),
            "/aisa-js-runtime.wasm"
        )))
    }
    #[cfg(not(aisa_embedded_js_runtime))]
    {
        None
    }
}

/// Finds the runtime module: `$AISA_JS_RUNTIME` if set (it must exist: a set variable
/// that points nowhere is an error, not a reason to look elsewhere), else the one built
/// into this binary, else `aisa-js-runtime.wasm` next to the current executable, else
/// `<home>/runtimes/aisa-js-runtime.wasm`.
pub fn locate_runtime(home: &Path) -> Result<RuntimeSource, JsAppError> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_owned));
    locate_runtime_in(
        std::env::var_os(RUNTIME_ENV),
        embedded_runtime(),
        exe_dir.as_deref(),
        home,
    )
}

/// [`locate_runtime`] with its inputs given: the variable's value, the built-in module,
/// the executable's folder and the node's home folder.
pub fn locate_runtime_in(
    env: Option<OsString>,
    embedded: Option<&'static [u8]>,
    exe_dir: Option<&Path>,
    home: &Path,
) -> Result<RuntimeSource, JsAppError> {
    if let Some(path) = env.filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(RuntimeSource::File(path))
        } else {
            Err(JsAppError::RuntimeNotFound {
                searched: vec![path],
            })
        };
    }
    if let Some(wasm) = embedded {
        return Ok(RuntimeSource::Embedded(wasm));
    }
    let mut searched = Vec::with_capacity(2);
    if let Some(dir) = exe_dir {
        searched.push(dir.join(RUNTIME_FILE));
    }
    searched.push(home.join("runtimes").join(RUNTIME_FILE));
    match searched.iter().find(|p| p.is_file()) {
        Some(found) => Ok(RuntimeSource::File(found.clone())),
        None => Err(JsAppError::RuntimeNotFound { searched }),
    }
}

/// [`load_runtime`] from wherever [`locate_runtime`] found it.
pub fn load_runtime_from(
    sandbox: &Sandbox,
    source: &RuntimeSource,
) -> Result<LoadedModule, JsAppError> {
    match source {
        RuntimeSource::File(path) => load_runtime(sandbox, path),
        RuntimeSource::Embedded(wasm) => load_runtime_bytes(sandbox, wasm),
    }
}

/// The JS runtime, loaded the first time an installed JavaScript app needs it.
///
/// Compiling QuickJS takes about a second in a release build (far longer in a debug
/// one) and its result is cached in the module cache: a node with no JavaScript app
/// never pays it, and one with such an app pays it once, when its apps are loaded.
pub struct LazyRuntime {
    source: Result<RuntimeSource, String>,
    module: std::sync::OnceLock<Option<LoadedModule>>,
}

impl std::fmt::Debug for LazyRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyRuntime")
            .field("source", &self.source)
            .field("loaded", &self.module.get().map(Option::is_some))
            .finish()
    }
}

impl LazyRuntime {
    /// A runtime to be loaded from `source` when first needed, or the reason there is
    /// none (reported when a JavaScript app would need it).
    pub fn new(source: Result<RuntimeSource, JsAppError>) -> LazyRuntime {
        LazyRuntime {
            source: source.map_err(|e| e.to_string()),
            module: std::sync::OnceLock::new(),
        }
    }

    /// The loaded runtime if an app under `apps_root` is a JavaScript app (loading it
    /// now, blocking, the first time), else `None`.
    pub fn for_apps(&self, apps_root: &Path, sandbox: &Sandbox) -> Option<&LoadedModule> {
        if let Some(loaded) = self.module.get() {
            return loaded.as_ref();
        }
        if !any_js_app(apps_root) {
            return None;
        }
        self.module
            .get_or_init(|| match &self.source {
                Ok(source) => match load_runtime_from(sandbox, source) {
                    Ok(module) => {
                        tracing::info!(runtime = %source, "JavaScript runtime loaded");
                        Some(module)
                    }
                    Err(err) => {
                        tracing::warn!(%err, "JavaScript apps will not run");
                        None
                    }
                },
                Err(err) => {
                    tracing::warn!(%err, "JavaScript apps will not run");
                    None
                }
            })
            .as_ref()
    }
}

/// Whether any installed version under `apps_root` (`<id>/<version>/`) carries
/// `bot-logic.js`.
fn any_js_app(apps_root: &Path) -> bool {
    let Ok(apps) = std::fs::read_dir(apps_root) else {
        return false;
    };
    apps.flatten().any(|app| {
        std::fs::read_dir(app.path()).is_ok_and(|versions| {
            versions
                .flatten()
                .any(|version| version.path().join(BOT_LOGIC).is_file())
        })
    })
}

/// The runtime's export that makes the QuickJS runtime and context every action starts
/// from ([`load_runtime`] snapshots the memory after it).
pub const INIT_EXPORT: &str = "aisa_js_init";

/// Reads the runtime module at `path` and loads it into `sandbox` (compiled once, or
/// taken from the sandbox's compiled-module cache).
///
/// With a cache directory, the module loaded is the pre-initialized one: the runtime is
/// instantiated once, [`INIT_EXPORT`] makes QuickJS's runtime and context, and the
/// instance's memory becomes the module's initial memory image
/// ([`crate::sandbox::with_memory_image`]), so every action's fresh instance starts with
/// them made (copy-on-write) instead of making them. The image is kept in the cache
/// directory beside the compiled code, sealed like it. If that fails (a runtime without
/// the export, say) the plain module is used and the reason logged. Without a cache
/// directory the plain module is used: the pre-initialized one would be compiled again
/// at every start.
pub fn load_runtime(sandbox: &Sandbox, path: &Path) -> Result<LoadedModule, JsAppError> {
    let wasm = std::fs::read(path).map_err(|source| JsAppError::Read {
        path: path.to_owned(),
        source,
    })?;
    load_runtime_bytes(sandbox, &wasm)
}

/// [`load_runtime`] of a module already in memory (the one built into the binary).
pub fn load_runtime_bytes(sandbox: &Sandbox, wasm: &[u8]) -> Result<LoadedModule, JsAppError> {
    let plain = sandbox.load(wasm)?;
    if sandbox.cache_dir().is_none() {
        return Ok(plain);
    }
    match pre_initialized(sandbox, &plain, wasm) {
        Ok(module) => Ok(module),
        Err(err) => {
            tracing::warn!(%err, "the JavaScript runtime is not pre-initialized; each action makes its QuickJS runtime");
            Ok(plain)
        }
    }
}

/// The runtime with its memory image after [`INIT_EXPORT`], loaded.
fn pre_initialized(
    sandbox: &Sandbox,
    plain: &LoadedModule,
    wasm: &[u8],
) -> Result<LoadedModule, ActionError> {
    let name = format!("js-runtime-{}.init.wasm", hex::encode(plain.sha256()));
    let (image, _) = sandbox.cached_artifact(
        &name,
        |bytes| bytes.starts_with(b"\0asm"),
        || {
            let ctx = ActionContext::new(
                "js-runtime",
                "0.0.0",
                std::env::temp_dir(),
                Arc::new(NoModel),
            );
            let memory = sandbox.memory_after(plain, &ctx, INIT_EXPORT)?;
            crate::sandbox::with_memory_image(wasm, &memory).map_err(ActionError::Load)
        },
    )?;
    sandbox.load(&image)
}

/// A JS app's sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsSources {
    /// `bot-logic.js`: one exported function per action.
    pub bot_logic: String,
    /// `tools.js`, when the app has one.
    pub tools: Option<String>,
    /// Their QuickJS bytecode, once [`precompile`] made it (only it can); `None` runs
    /// the sources.
    pub bytecode: Option<Arc<JsBytecode>>,
}

/// A JS app's modules compiled to QuickJS bytecode by the runtime guest for this node:
/// its `compile` answer, `{"bot-logic.js": base64, "tools.js": base64?}`. Made only by
/// [`precompile`], from sources; never read from a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsBytecode {
    json: String,
}

impl JsBytecode {
    /// The compile answer if it has the expected shape.
    fn parse(json: String) -> Option<JsBytecode> {
        let value: serde_json::Value = serde_json::from_str(&json).ok()?;
        let object = value.as_object()?;
        let shaped = object.get(BOT_LOGIC)?.is_string()
            && object.keys().all(|k| k == BOT_LOGIC || k == TOOLS)
            && object.values().all(serde_json::Value::is_string);
        shaped.then_some(JsBytecode { json })
    }

    /// Its size in bytes (base64 in JSON).
    pub fn len(&self) -> usize {
        self.json.len()
    }

    /// Whether it is empty (never, for one [`precompile`] made).
    pub fn is_empty(&self) -> bool {
        self.json.is_empty()
    }
}

/// How [`precompile`] went.
#[derive(Debug)]
pub enum Precompiled {
    /// The bytecode was taken from the cache (its tag verified).
    Cached,
    /// The runtime compiled the sources (and the bytecode was cached, if there is a
    /// cache directory).
    Compiled,
    /// The sources do not compile (or the runtime failed): the app keeps running from
    /// its sources, so each action reports the same error it would have without
    /// bytecode.
    Failed(ActionError),
}

/// The name of a cache entry: everything the bytecode is made from (the runtime build
/// and both sources) hashed.
fn bytecode_cache_name(runtime: &LoadedModule, sources: &JsSources) -> String {
    let mut hash = Sha256::new();
    hash.update(runtime.sha256());
    for source in [Some(&sources.bot_logic), sources.tools.as_ref()] {
        match source {
            Some(text) => {
                hash.update([1]);
                hash.update((text.len() as u64).to_le_bytes());
                hash.update(text.as_bytes());
            }
            None => hash.update([0]),
        }
    }
    format!("js-{}.qjsbc", hex::encode(hash.finalize()))
}

/// A model for the compile call, which never asks one.
struct NoModel;

impl AiProvider for NoModel {
    fn generate(
        &self,
        _: GenerateRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<TextStream, AiError>> + Send + '_>>
    {
        Box::pin(async { Err(AiError::NoKey("compiling a JavaScript app".into())) })
    }
}

/// Compiles `sources` to QuickJS bytecode with the runtime (a fresh instance running its
/// `compile` entry), or takes it from the sandbox's cache directory, and sets
/// `sources.bytecode`. Blocks the calling thread for the compile (about a millisecond
/// for a small app): call it where apps are loaded, not on the guest threads.
pub fn precompile(
    sandbox: &Sandbox,
    runtime: &LoadedModule,
    app_id: &str,
    sources: &mut JsSources,
) -> Precompiled {
    sources.bytecode = None;
    let name = bytecode_cache_name(runtime, sources);
    let compile = || {
        let mut files = serde_json::Map::new();
        files.insert(BOT_LOGIC.into(), sources.bot_logic.clone().into());
        if let Some(tools) = &sources.tools {
            files.insert(TOOLS.into(), tools.clone().into());
        }
        let input = serde_json::json!({ "compile": files }).to_string();
        let ctx = ActionContext::new(app_id, "0.0.0", std::env::temp_dir(), Arc::new(NoModel))
            .with_limits(Limits {
                timeout: Duration::from_secs(30),
                output_bytes: 256 << 20,
                ..Limits::default()
            });
        let answer = sandbox.run_to_end(runtime, &ctx, &input)?;
        if JsBytecode::parse(answer.clone()).is_none() {
            return Err(ActionError::Failed(
                "the JavaScript runtime's compile answer is malformed".into(),
            ));
        }
        Ok(answer.into_bytes())
    };
    let accept = |bytes: &[u8]| {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| JsBytecode::parse(text.to_owned()))
            .is_some()
    };
    match sandbox.cached_artifact(&name, accept, compile) {
        Ok((bytes, cached)) => {
            let Some(bytecode) = String::from_utf8(bytes).ok().and_then(JsBytecode::parse) else {
                return Precompiled::Failed(ActionError::Failed(
                    "the JavaScript bytecode is malformed".into(),
                ));
            };
            sources.bytecode = Some(Arc::new(bytecode));
            if cached {
                Precompiled::Cached
            } else {
                Precompiled::Compiled
            }
        }
        Err(err) => Precompiled::Failed(err),
    }
}

impl JsSources {
    /// Reads `bot-logic.js` and, if present, `tools.js` from an app's folder (an
    /// extracted bundle or a source folder).
    pub fn read(app_dir: &Path) -> Result<Self, JsAppError> {
        let read = |name: &str| {
            let path = app_dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| JsAppError::Read { path, source })
        };
        let bot_logic = read(BOT_LOGIC)?;
        let tools = match read(TOOLS) {
            Ok(tools) => Some(tools),
            Err(JsAppError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                None
            }
            Err(e) => return Err(e),
        };
        Ok(JsSources {
            bot_logic,
            tools,
            bytecode: None,
        })
    }
}

/// The runtime guest's input for one action:
/// `{"action", "payload", "sources": {"bot-logic.js", "tools.js"?}}`, or, once the app
/// is precompiled, `{"action", "payload", "bytecode": {"bot-logic.js", "tools.js"?}}`.
pub fn action_input(action: &str, payload: &serde_json::Value, sources: &JsSources) -> String {
    if let Some(bytecode) = &sources.bytecode {
        return format!(
            "{{\"action\":{},\"payload\":{},\"bytecode\":{}}}",
            serde_json::Value::from(action),
            payload,
            bytecode.json
        );
    }
    let mut files = serde_json::Map::new();
    files.insert(BOT_LOGIC.into(), sources.bot_logic.clone().into());
    if let Some(tools) = &sources.tools {
        files.insert(TOOLS.into(), tools.clone().into());
    }
    serde_json::json!({
        "action": action,
        "payload": payload,
        "sources": files,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("aisa-js-apps-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn the_runtime_is_found_in_the_documented_order() {
        let root = temp_dir("locate");
        let (exe, home) = (root.join("bin"), root.join("home"));
        std::fs::create_dir_all(&exe).expect("bin");
        std::fs::create_dir_all(home.join("runtimes")).expect("runtimes");
        let file = |p: &Path| RuntimeSource::File(p.to_owned());

        let err = locate_runtime_in(None, None, Some(&exe), &home).expect_err("nothing there yet");
        let text = err.to_string();
        assert!(
            text.contains(&exe.join(RUNTIME_FILE).display().to_string()),
            "{text}"
        );
        assert!(text.contains("runtimes"), "{text}");

        let in_home = home.join("runtimes").join(RUNTIME_FILE);
        std::fs::write(&in_home, b"home").expect("write");
        assert_eq!(
            locate_runtime_in(None, None, Some(&exe), &home).expect("home"),
            file(&in_home)
        );

        let next_to_exe = exe.join(RUNTIME_FILE);
        std::fs::write(&next_to_exe, b"exe").expect("write");
        assert_eq!(
            locate_runtime_in(None, None, Some(&exe), &home).expect("exe"),
            file(&next_to_exe)
        );

        // The built-in copy wins over the files beside the binary and in the home.
        static BUILT_IN: &[u8] = b"\0asm built in";
        assert_eq!(
            locate_runtime_in(None, Some(BUILT_IN), Some(&exe), &home).expect("embedded"),
            RuntimeSource::Embedded(BUILT_IN)
        );

        let custom = root.join("custom.wasm");
        std::fs::write(&custom, b"env").expect("write");
        assert_eq!(
            locate_runtime_in(
                Some(custom.clone().into()),
                Some(BUILT_IN),
                Some(&exe),
                &home
            )
            .expect("env"),
            file(&custom)
        );
        // A variable that points nowhere is an error naming it, not a silent fallback.
        let missing = root.join("missing.wasm");
        let err = locate_runtime_in(
            Some(missing.clone().into()),
            Some(BUILT_IN),
            Some(&exe),
            &home,
        )
        .expect_err("missing");
        assert!(err.to_string().contains("missing.wasm"), "{err}");
        std::fs::remove_dir_all(&root).expect("cleanup");
    }

    /// A build made after `scripts/build-guests.sh` (as CI's is) carries the runtime,
    /// byte for byte the module that script built. `AISA_EXPECT_EMBEDDED_JS_RUNTIME=1`
    /// (set by the scripts that build the guests first) makes its absence a failure.
    #[test]
    fn the_built_runtime_is_inside_the_binary() {
        let Some(wasm) = embedded_runtime() else {
            assert!(
                std::env::var_os("AISA_EXPECT_EMBEDDED_JS_RUNTIME").is_none(),
                "the JS runtime was expected inside the binary"
            );
            eprintln!(
                "the JS runtime was not built before this build (scripts/build-guests.sh); skipped"
            );
            return;
        };
        assert!(wasm.starts_with(b"\0asm"));
        let built = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/guest/wasm32-unknown-unknown/release/aisa_js_runtime.wasm");
        if let Ok(on_disk) = std::fs::read(&built) {
            assert_eq!(
                Sha256::digest(&on_disk),
                Sha256::digest(wasm),
                "the embedded runtime is stale: cargo did not rebuild after build-guests.sh"
            );
        }
    }

    /// The runtime is loaded only when an installed app is a JavaScript app: a node
    /// without one never compiles it.
    #[test]
    fn the_runtime_is_loaded_only_for_a_javascript_app() {
        let root = temp_dir("lazy");
        let apps = root.join("miniapps");
        std::fs::create_dir_all(apps.join("wasm-app/1.0.0")).expect("app");
        std::fs::write(apps.join("wasm-app/1.0.0/logic.wasm"), b"\0asm").expect("write");
        let sandbox = Sandbox::new().expect("sandbox");
        // A source that cannot load: asked for, it would be tried (and fail).
        let lazy = LazyRuntime::new(Ok(RuntimeSource::File(root.join("no-such.wasm"))));
        assert!(lazy.for_apps(&apps, &sandbox).is_none());
        assert!(lazy.module.get().is_none(), "no JS app: nothing was loaded");
        std::fs::create_dir_all(apps.join("js-app/1.0.0")).expect("app");
        std::fs::write(apps.join("js-app/1.0.0").join(BOT_LOGIC), "").expect("write");
        assert!(lazy.for_apps(&apps, &sandbox).is_none());
        assert!(
            matches!(lazy.module.get(), Some(None)),
            "a JS app: the load was tried once, and its failure kept"
        );
        std::fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    fn sources_are_read_and_put_into_the_input() {
        let dir = temp_dir("sources");
        std::fs::write(dir.join(BOT_LOGIC), "export function a() {}").expect("write");
        let without = JsSources::read(&dir).expect("read");
        assert_eq!(without.tools, None);
        let input: serde_json::Value =
            serde_json::from_str(&action_input("a", &serde_json::json!({"x": 1}), &without))
                .expect("json");
        assert_eq!(
            input,
            serde_json::json!({"action": "a", "payload": {"x": 1},
                "sources": {"bot-logic.js": "export function a() {}"}})
        );

        std::fs::write(dir.join(TOOLS), "export const t = 1;").expect("write");
        let with = JsSources::read(&dir).expect("read");
        let input: serde_json::Value =
            serde_json::from_str(&action_input("a", &serde_json::Value::Null, &with))
                .expect("json");
        assert_eq!(input["sources"][TOOLS], "export const t = 1;");

        std::fs::remove_file(dir.join(BOT_LOGIC)).expect("remove");
        let err = JsSources::read(&dir).expect_err("no bot-logic.js");
        assert!(err.to_string().contains(BOT_LOGIC), "{err}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
