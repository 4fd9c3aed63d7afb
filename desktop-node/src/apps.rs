//! Installed mini-apps: `miniapps/<id>/<version>/` folders holding `manifest.json` and
//! `logic.wasm`. The newest version of each enabled app is loaded into the sandbox.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sandbox::{LoadedModule, Sandbox};

/// The parts of an app's manifest the node uses now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
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
pub struct App {
    /// Its manifest.
    pub manifest: Manifest,
    /// Its compiled module.
    pub module: LoadedModule,
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
    manifest: &Manifest,
) -> Result<PathBuf, AppError> {
    validate_id(&manifest.id)?;
    if parse_version(&manifest.version).is_none() {
        return Err(AppError::Manifest(format!(
            "version {:?} is not MAJOR.MINOR.PATCH",
            manifest.version
        )));
    }
    let wasm = std::fs::read(wasm_path).map_err(io(wasm_path))?;
    sandbox.load(&wasm)?;
    let dir = apps_dir.join(&manifest.id).join(&manifest.version);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let logic = dir.join("logic.wasm");
    std::fs::write(&logic, &wasm).map_err(io(&logic))?;
    let manifest_path = dir.join("manifest.json");
    let text =
        serde_json::to_string_pretty(manifest).map_err(|e| AppError::Manifest(e.to_string()))?;
    std::fs::write(&manifest_path, text).map_err(io(&manifest_path))?;
    Ok(dir)
}

/// Loads the newest version of every app in `apps_dir`. An app that fails to load is
/// reported and skipped; the others still load.
pub fn load_all(apps_dir: &Path, sandbox: &Sandbox) -> (HashMap<String, App>, Vec<String>) {
    let mut apps = HashMap::new();
    let mut problems = Vec::new();
    let Ok(entries) = std::fs::read_dir(apps_dir) else {
        return (apps, problems);
    };
    for entry in entries.flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        match load_newest(&entry.path(), sandbox) {
            Ok(Some(app)) => {
                apps.insert(id, app);
            }
            Ok(None) => {}
            Err(err) => problems.push(format!("{id}: {err}")),
        }
    }
    (apps, problems)
}

fn load_newest(app_dir: &Path, sandbox: &Sandbox) -> Result<Option<App>, AppError> {
    let newest = std::fs::read_dir(app_dir)
        .map_err(io(app_dir))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            parse_version(&name).map(|v| (v, e.path()))
        })
        .max_by_key(|(v, _)| *v);
    let Some((_, dir)) = newest else {
        return Ok(None);
    };
    let manifest_path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&manifest_path).map_err(io(&manifest_path))?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| AppError::Manifest(format!("{}: {e}", manifest_path.display())))?;
    let logic = dir.join("logic.wasm");
    let wasm = std::fs::read(&logic).map_err(io(&logic))?;
    let module = sandbox.load(&wasm)?;
    Ok(Some(App { manifest, module }))
}

fn validate_id(id: &str) -> Result<(), AppError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !id.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(AppError::Manifest(format!(
            "app id {id:?}: use 1 to 64 lowercase letters, digits and dashes"
        )))
    }
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
    fn ids_cannot_escape_the_apps_folder() {
        assert!(validate_id("hello-ai").is_ok());
        for bad in ["", "../etc", "a/b", "Hello", "-x", &"a".repeat(65)] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }
}
