//! Installed mini-apps, as the running node holds them.
//!
//! Two layouts load: bundles installed by the mini-app manager ([`crate::installer`]:
//! `manifest.json`, `action-schema.json`, `logic.wasm` or `bot-logic.js` + `tools.js`,
//! `install.json` with the approved permissions, and `state.json` naming the active
//! version), and development installs by `apps install-local` (an [`AppInfo`] written as
//! `manifest.json`, listing the actions, and `logic.wasm`). A bundle's files are read with
//! the guest contract's types (`aisa_abi::Manifest`, `aisa_abi::ActionSchema`); an
//! [`AppInfo`] is what the node keeps of either.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use aisa_miniapp::AppId;

use crate::installer::layout::{ApprovedPermissions, AppsDir};
use crate::sandbox::{LoadedModule, Sandbox};

/// What the node keeps of a loaded app (read from a bundle's `manifest.json` and
/// `action-schema.json`), and the whole descriptor of a development install.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AppInfo {
    /// The app id, e.g. `hello-ai`.
    pub id: String,
    /// Semantic version.
    pub version: String,
    /// A name for people.
    #[serde(default)]
    pub name: String,
    /// The actions the app accepts.
    pub actions: Vec<String>,
    /// Whether actions may run.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// A loaded app.
#[derive(Clone)]
pub struct App {
    /// What the node knows of it.
    pub manifest: AppInfo,
    /// Its compiled module (for a JavaScript app, the JS runtime guest).
    pub module: LoadedModule,
    /// A JavaScript app's sources (`bot-logic.js`, `tools.js`).
    pub js_sources: Option<Arc<crate::js_apps::JsSources>>,
    /// Each action's payload schema; an action without one takes any JSON.
    pub schemas: HashMap<String, Arc<jsonschema::Validator>>,
    /// What the person approved at install.
    pub approved: ApprovedPermissions,
}

impl App {
    /// A wasm app without payload schemas that may use the model and nothing else (the
    /// grants of a development install).
    pub fn wasm(manifest: AppInfo, module: LoadedModule) -> Self {
        App {
            manifest,
            module,
            js_sources: None,
            schemas: HashMap::new(),
            approved: ApprovedPermissions {
                ai: true,
                ..ApprovedPermissions::default()
            },
        }
    }

    /// The sandbox input for one action: `{"action", "payload"}`, plus the sources for a
    /// JavaScript app.
    pub fn action_input(&self, action: &str, payload: &serde_json::Value) -> String {
        match &self.js_sources {
            Some(sources) => crate::js_apps::action_input(action, payload, sources),
            None => aisa_abi::ActionInput {
                action: action.to_owned(),
                payload: payload.clone(),
            }
            .to_json(),
        }
    }

    /// Checks an action's payload against its schema; the message lists what is wrong.
    pub fn validate_payload(
        &self,
        action: &str,
        payload: &serde_json::Value,
    ) -> Result<(), String> {
        let Some(schema) = self.schemas.get(action) else {
            return Ok(());
        };
        let problems: Vec<String> = schema
            .iter_errors(payload)
            .take(5)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{at}: {e}")
                }
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the payload does not match the {action} schema: {}",
                problems.join("; ")
            ))
        }
    }
}

/// Why an app could not be installed or loaded.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The manifest is invalid.
    #[error("{0}")]
    Manifest(String),
    /// The module could not be loaded.
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::ActionError),
    /// A JavaScript app, and this node has no JS runtime to run it on.
    #[error("a JavaScript app, but the JS runtime module was not found (set AISA_JS_RUNTIME)")]
    NoJsRuntime,
}

impl AppError {
    /// Why the app cannot run, in one sentence for the person using the web app (the
    /// error itself, with paths and details, goes to the node's log).
    pub fn for_person(&self) -> String {
        match self {
            AppError::NoJsRuntime => {
                "This desktop has no JavaScript runtime, which this app needs: \
                 install the desktop node's full release (its runtime is built in), or put \
                 aisa-js-runtime.wasm next to desktop-node (or point AISA_JS_RUNTIME at it)."
                    .into()
            }
            AppError::Io { .. } => "Its installed files could not be read: reinstall it.".into(),
            AppError::Manifest(_) => {
                "Its installed files do not pass this desktop's checks: reinstall it.".into()
            }
            AppError::Sandbox(_) => "Its code does not load on this desktop (it may need a newer \
                 desktop node): update the desktop node, or reinstall the app."
                .into(),
        }
    }
}

/// An installed app that did not load, as [`load_all`] reports it.
#[derive(Debug)]
pub struct LoadProblem {
    /// The app id.
    pub id: String,
    /// The version that should be active (empty when its state could not be read).
    pub version: String,
    /// What went wrong.
    pub error: AppError,
}

impl std::fmt::Display for LoadProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.id, self.error)
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AppError + '_ {
    move |source| AppError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Copies a local wasm module into the apps folder as `id@version` (development installs;
/// signed marketplace bundles come later). The module is checked first.
pub fn install_local(
    apps_dir: &Path,
    sandbox: &Sandbox,
    wasm_path: &Path,
    manifest: &AppInfo,
) -> Result<PathBuf, AppError> {
    let id = AppId::parse(&manifest.id).map_err(|e| AppError::Manifest(e.to_string()))?;
    let version = semver::Version::parse(&manifest.version).map_err(|e| {
        AppError::Manifest(format!(
            "version {:?} is not MAJOR.MINOR.PATCH: {e}",
            manifest.version
        ))
    })?;
    if manifest.actions.is_empty() {
        return Err(AppError::Manifest(
            "an app needs at least one action".into(),
        ));
    }
    // The same checks a bundle's code passes at install: the format's size limit, the
    // import list (a development install may ask the model and nothing else), the
    // exports the host calls; then it must compile and link.
    let max = aisa_abi::limits::MAX_FILE_BYTES;
    let size = std::fs::metadata(wasm_path).map_err(io(wasm_path))?.len();
    if size > max {
        return Err(AppError::Manifest(format!(
            "{} is {size} bytes; the format allows {max} bytes of logic.wasm",
            wasm_path.display()
        )));
    }
    let wasm = std::fs::read(wasm_path).map_err(io(wasm_path))?;
    let development = aisa_abi::Permissions {
        ai: true,
        ..Default::default()
    };
    let problems = aisa_miniapp::wasm::check(&wasm, &development);
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
        return Err(AppError::Manifest(format!(
            "{} cannot be installed:\n{}",
            wasm_path.display(),
            list.join("\n")
        )));
    }
    sandbox.load(&wasm)?;
    let apps = AppsDir::new(apps_dir);
    let dir = apps.version_dir(&id, &version);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let logic = dir.join("logic.wasm");
    std::fs::write(&logic, &wasm).map_err(io(&logic))?;
    let manifest_path = dir.join("manifest.json");
    let text =
        serde_json::to_string_pretty(manifest).map_err(|e| AppError::Manifest(e.to_string()))?;
    std::fs::write(&manifest_path, text).map_err(io(&manifest_path))?;
    let enabled = apps.state(&id).ok().flatten().is_none_or(|s| s.enabled);
    apps.set_state(
        &id,
        &crate::installer::layout::AppState {
            active: manifest.version.clone(),
            enabled,
        },
    )
    .map_err(|e| AppError::Manifest(e.to_string()))?;
    Ok(dir)
}

/// Loads the active version of every app in `apps_dir`. JavaScript apps run on
/// `js_runtime`; without it they are reported and skipped. An app that fails to load is
/// reported and skipped; the others still load.
pub fn load_all(
    apps_dir: &Path,
    sandbox: &Sandbox,
    js_runtime: Option<&LoadedModule>,
) -> (HashMap<String, Arc<App>>, Vec<LoadProblem>) {
    load_all_reusing(apps_dir, sandbox, js_runtime, &HashMap::new())
}

/// [`load_all`], reusing the loaded app from `previous` where its active version is
/// unchanged (only its enabled flag is read again).
pub fn load_all_reusing(
    apps_dir: &Path,
    sandbox: &Sandbox,
    js_runtime: Option<&LoadedModule>,
    previous: &HashMap<String, Arc<App>>,
) -> (HashMap<String, Arc<App>>, Vec<LoadProblem>) {
    let dir = AppsDir::new(apps_dir);
    let mut apps = HashMap::new();
    let mut problems = Vec::new();
    for id in dir.ids() {
        if let (Some(old), Ok(Some(state))) = (previous.get(id.as_str()), dir.state(&id))
            && old.manifest.version == state.active
        {
            let mut app = App::clone(old);
            app.manifest.enabled = state.enabled;
            apps.insert(id.to_string(), Arc::new(app));
            continue;
        }
        match load_active(&dir, &id, sandbox, js_runtime) {
            Ok(Some(app)) => {
                apps.insert(id.to_string(), Arc::new(app));
            }
            Ok(None) => {}
            Err(error) => problems.push(LoadProblem {
                id: id.to_string(),
                version: dir
                    .state(&id)
                    .ok()
                    .flatten()
                    .map(|s| s.active)
                    .unwrap_or_default(),
                error,
            }),
        }
    }
    (apps, problems)
}

fn load_active(
    dir: &AppsDir,
    id: &AppId,
    sandbox: &Sandbox,
    js_runtime: Option<&LoadedModule>,
) -> Result<Option<App>, AppError> {
    let state = dir
        .state(id)
        .map_err(|e| AppError::Manifest(e.to_string()))?;
    let Some(state) = state else {
        return Ok(None);
    };
    let active = state
        .active_version()
        .map_err(|e| AppError::Manifest(e.to_string()))?;
    let version_dir = dir.version_dir(id, &active);
    let mut app = if version_dir.join("action-schema.json").exists() {
        load_bundle(dir, id, &active, sandbox, js_runtime)?
    } else {
        load_development(&version_dir, sandbox)?
    };
    app.manifest.enabled = state.enabled && app.manifest.enabled;
    Ok(Some(app))
}

/// The actions of the app version installed in `dir`, read from its files (the keys of
/// `action-schema.json`, or the node-format manifest's list), sorted.
pub fn actions_of(dir: &Path) -> Result<Vec<String>, AppError> {
    let read_json = |name: &str| -> Result<serde_json::Value, AppError> {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        serde_json::from_str(&text)
            .map_err(|e| AppError::Manifest(format!("{}: {e}", path.display())))
    };
    let mut actions: Vec<String> = if dir.join("action-schema.json").exists() {
        read_action_schema(dir)?.actions()
    } else {
        let manifest: AppInfo = serde_json::from_value(read_json("manifest.json")?)
            .map_err(|e| AppError::Manifest(format!("manifest.json: {e}")))?;
        manifest.actions
    };
    actions.sort();
    Ok(actions)
}

/// `action-schema.json` of the app version in `dir` (`aisa_abi`'s one reader).
fn read_action_schema(dir: &Path) -> Result<aisa_abi::ActionSchema, AppError> {
    let path = dir.join("action-schema.json");
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    aisa_abi::ActionSchema::from_json(&bytes)
        .map_err(|e| AppError::Manifest(format!("{}: {e}", path.display())))
}

/// A development install: an [`AppInfo`] as `manifest.json`, and `logic.wasm`.
fn load_development(dir: &Path, sandbox: &Sandbox) -> Result<App, AppError> {
    let manifest_path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&manifest_path).map_err(io(&manifest_path))?;
    let manifest: AppInfo = serde_json::from_str(&text)
        .map_err(|e| AppError::Manifest(format!("{}: {e}", manifest_path.display())))?;
    let logic = dir.join("logic.wasm");
    let wasm = std::fs::read(&logic).map_err(io(&logic))?;
    let module = sandbox.load(&wasm)?;
    Ok(App::wasm(manifest, module))
}

/// An installed bundle (already verified when it was installed).
fn load_bundle(
    apps: &AppsDir,
    id: &AppId,
    version: &semver::Version,
    sandbox: &Sandbox,
    js_runtime: Option<&LoadedModule>,
) -> Result<App, AppError> {
    let dir = apps.version_dir(id, version);
    let manifest_path = dir.join("manifest.json");
    let text = std::fs::read(&manifest_path).map_err(io(&manifest_path))?;
    let manifest = aisa_abi::Manifest::from_json(&text)
        .map_err(|e| AppError::Manifest(format!("{}: {e}", manifest_path.display())))?;
    if manifest.id != id.as_str() || manifest.version != *version {
        return Err(AppError::Manifest(format!(
            "{}: the manifest says {}@{}",
            dir.display(),
            manifest.id,
            manifest.version
        )));
    }
    let action_schema = read_action_schema(&dir)?;
    let mut schemas = HashMap::new();
    for (action, schema) in action_schema.iter() {
        let validator = jsonschema::validator_for(schema)
            .map_err(|e| AppError::Manifest(format!("action-schema.json: {action}: {e}")))?;
        schemas.insert(action.to_owned(), Arc::new(validator));
    }
    let actions = action_schema.sorted_actions();
    let approved = apps
        .record(id, version)
        .map_err(|e| AppError::Manifest(e.to_string()))?
        .map(|r| r.approved)
        .unwrap_or_default();
    let (module, js_sources) = match manifest.entry {
        aisa_abi::EntryKind::Wasm => {
            let logic = dir.join("logic.wasm");
            let wasm = std::fs::read(&logic).map_err(io(&logic))?;
            (sandbox.load(&wasm)?, None)
        }
        aisa_abi::EntryKind::Js => {
            let runtime = js_runtime.ok_or(AppError::NoJsRuntime)?;
            let mut sources = crate::js_apps::JsSources::read(&dir)
                .map_err(|e| AppError::Manifest(e.to_string()))?;
            // QuickJS bytecode, made here from the signed bundle's sources (never taken
            // from a bundle); if they do not compile, actions report why.
            if let crate::js_apps::Precompiled::Failed(err) =
                crate::js_apps::precompile(sandbox, runtime, id.as_str(), &mut sources)
            {
                tracing::info!(app = %id, %err, "JavaScript app not precompiled; running its sources");
            }
            (runtime.clone(), Some(Arc::new(sources)))
        }
    };
    Ok(App {
        manifest: AppInfo {
            id: id.to_string(),
            version: version.to_string(),
            name: manifest.name,
            actions,
            enabled: true,
        },
        module,
        js_sources,
        schemas,
        approved,
    })
}

/// `MAJOR.MINOR.PATCH` as numbers.
pub fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    let mut parts = text.split('.').map(|p| p.parse::<u64>().ok());
    let v = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order_numerically() {
        assert_eq!(parse_version("1.10.0"), Some((1, 10, 0)));
        assert!(parse_version("1.10.0") > parse_version("1.9.9"));
        assert_eq!(parse_version("1.2"), None);
        assert_eq!(parse_version("1.2.3.4"), None);
        assert_eq!(parse_version("../x"), None);
    }

    #[test]
    fn actions_are_read_from_either_layout_without_loading_code() {
        let tmp = tempfile::tempdir().unwrap();
        let bundle = tmp.path().join("bundle");
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::write(
            bundle.join("action-schema.json"),
            r#"{"write": {"type": "object"}, "echo": {"type": "object"}}"#,
        )
        .unwrap();
        assert_eq!(actions_of(&bundle).unwrap(), ["echo", "write"]);
        let dev = tmp.path().join("dev");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(
            dev.join("manifest.json"),
            r#"{"id": "a", "version": "0.1.0", "actions": ["run"]}"#,
        )
        .unwrap();
        assert_eq!(actions_of(&dev).unwrap(), ["run"]);
        assert!(actions_of(&tmp.path().join("missing")).is_err());
    }

    const GOOD_WAT: &str = r#"(module
      (import "aisapp_v1" "emit" (func (param i32 i32)))
      (memory (export "memory") 1)
      (func (export "aisapp_alloc") (param i32) (result i32) i32.const 1024)
      (func (export "aisapp_run") (param i32 i32) (result i32) i32.const 0))"#;

    fn install_wat(id: &str, wat: &str) -> (tempfile::TempDir, Result<PathBuf, AppError>) {
        let tmp = tempfile::tempdir().unwrap();
        let wasm = tmp.path().join("logic.wasm");
        std::fs::write(&wasm, wat::parse_str(wat).unwrap()).unwrap();
        let manifest = AppInfo {
            id: id.into(),
            version: "0.1.0".into(),
            name: id.into(),
            actions: vec!["run".into()],
            enabled: true,
        };
        let sandbox = Sandbox::new().unwrap();
        let result = install_local(&tmp.path().join("miniapps"), &sandbox, &wasm, &manifest);
        (tmp, result)
    }

    #[test]
    fn install_local_checks_what_install_checks() {
        let (_tmp, ok) = install_wat("good", GOOD_WAT);
        assert!(ok.is_ok(), "{ok:?}");
        // No aisapp_run export: refused now, not at the first run.
        let (_tmp, err) = install_wat(
            "no-run",
            r#"(module (memory (export "memory") 1)
                 (func (export "aisapp_alloc") (param i32) (result i32) i32.const 0))"#,
        );
        let err = err.unwrap_err().to_string();
        assert!(err.contains("aisapp_run"), "{err}");
        // A WASI import, and a capability a development install is not granted.
        let (_tmp, err) = install_wat(
            "wasi",
            &GOOD_WAT.replace(
                r#"(import "aisapp_v1" "emit" (func (param i32 i32)))"#,
                r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
                   (import "aisapp_v1" "http" (func (param i32 i32) (result i32)))"#,
            ),
        );
        let err = err.unwrap_err().to_string();
        assert!(err.contains("fd_write") && err.contains("http"), "{err}");
    }

    #[test]
    fn ids_cannot_escape_the_apps_folder() {
        for bad in [
            "../etc",
            "/tmp/x",
            "a/b",
            "Hello",
            "-x",
            "a\0b",
            &"a".repeat(65),
        ] {
            let (tmp, result) = install_wat(bad, GOOD_WAT);
            assert!(result.is_err(), "{bad}");
            // Nothing was written anywhere.
            let written: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().collect();
            assert_eq!(written.len(), 1, "only logic.wasm is there: {written:?}");
        }
    }
}
