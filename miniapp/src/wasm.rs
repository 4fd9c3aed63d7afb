//! A static check of `logic.wasm`: it must be a valid core module whose imports are all
//! `aisapp_v1` functions the app's permissions cover, and which exports what the host
//! calls.

use wasmparser::{Encoding, ExternalKind, Parser, Payload, TypeRef, Validator};

use crate::permissions::Permissions;

/// The host ABI's import module.
pub const HOST_MODULE: &str = "aisapp_v1";

/// The exports the host needs.
pub const REQUIRED_EXPORTS: &[(&str, &str)] = &[
    ("memory", "memory"),
    ("aisapp_alloc", "function"),
    ("aisapp_run", "function"),
];

/// Host functions every app may import.
pub const ALWAYS_ALLOWED: &[&str] = &["emit", "log", "fail", "tool", "storage", "env", "result"];

/// What a capability import needs: `(import, permission, granted?)`.
fn needs(name: &str, p: &Permissions) -> Option<(&'static str, bool)> {
    Some(match name {
        "ai_generate" | "ai_next" => ("ai", p.ai),
        "fs" => ("filesystem", p.uses_filesystem()),
        "http" => ("network", !p.network.is_empty()),
        "clipboard" => ("clipboard", p.clipboard),
        _ => return None,
    })
}

/// A problem found in a wasm module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WasmProblem {
    /// Not a valid core wasm module.
    #[error("logic.wasm is not a valid WebAssembly module: {0}")]
    Invalid(String),
    /// A component, not a core module.
    #[error("logic.wasm is a WebAssembly component; mini-apps are core modules")]
    Component,
    /// An import from another module (WASI, `env`, …).
    #[error(
        "logic.wasm imports {module}::{name}; mini-apps may import only from \"aisapp_v1\" (no WASI, no env)"
    )]
    ForeignImport {
        /// The import module.
        module: String,
        /// The imported name.
        name: String,
    },
    /// An `aisapp_v1` name the host does not provide, or not a function.
    #[error("logic.wasm imports aisapp_v1::{0}, which the host does not provide as a function")]
    UnknownHostImport(String),
    /// A capability import without its permission.
    #[error(
        "logic.wasm imports aisapp_v1::{import}, which needs the \"{permission}\" permission; permissions.json does not ask for it"
    )]
    NotPermitted {
        /// The import.
        import: String,
        /// The permission it needs.
        permission: &'static str,
    },
    /// A required export is missing or of the wrong kind.
    #[error("logic.wasm does not export the {kind} {name:?} the host calls")]
    MissingExport {
        /// The export name.
        name: &'static str,
        /// What it must be.
        kind: &'static str,
    },
}

/// Checks a module against the permissions; every problem found.
pub fn check(bytes: &[u8], permissions: &Permissions) -> Vec<WasmProblem> {
    if let Err(e) = Validator::new().validate_all(bytes) {
        return vec![WasmProblem::Invalid(e.to_string())];
    }
    let mut problems = Vec::new();
    let mut exports: Vec<(String, ExternalKind)> = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = match payload {
            Ok(p) => p,
            Err(e) => return vec![WasmProblem::Invalid(e.to_string())],
        };
        match payload {
            Payload::Version {
                encoding: Encoding::Component,
                ..
            } => return vec![WasmProblem::Component],
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = match import {
                        Ok(i) => i,
                        Err(e) => return vec![WasmProblem::Invalid(e.to_string())],
                    };
                    problems.extend(check_import(
                        import.module,
                        import.name,
                        matches!(import.ty, TypeRef::Func(_) | TypeRef::FuncExact(_)),
                        permissions,
                    ));
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    match export {
                        Ok(e) => exports.push((e.name.to_owned(), e.kind)),
                        Err(e) => return vec![WasmProblem::Invalid(e.to_string())],
                    }
                }
            }
            _ => {}
        }
    }
    for (name, kind) in REQUIRED_EXPORTS {
        let found = exports.iter().any(|(n, k)| {
            n == name
                && match *kind {
                    "memory" => *k == ExternalKind::Memory,
                    _ => matches!(k, ExternalKind::Func | ExternalKind::FuncExact),
                }
        });
        if !found {
            problems.push(WasmProblem::MissingExport { name, kind });
        }
    }
    problems
}

fn check_import(
    module: &str,
    name: &str,
    is_func: bool,
    permissions: &Permissions,
) -> Option<WasmProblem> {
    if module != HOST_MODULE {
        return Some(WasmProblem::ForeignImport {
            module: module.to_owned(),
            name: name.to_owned(),
        });
    }
    if !is_func {
        return Some(WasmProblem::UnknownHostImport(name.to_owned()));
    }
    if ALWAYS_ALLOWED.contains(&name) {
        return None;
    }
    match needs(name, permissions) {
        None => Some(WasmProblem::UnknownHostImport(name.to_owned())),
        Some((_, true)) => None,
        Some((permission, false)) => Some(WasmProblem::NotPermitted {
            import: name.to_owned(),
            permission,
        }),
    }
}

/// The capability imports of a valid module (for display): `aisapp_v1` function names.
pub fn host_imports(bytes: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    for payload in Parser::new(0).parse_all(bytes).flatten() {
        if let Payload::ImportSection(reader) = payload {
            names.extend(
                reader
                    .into_imports()
                    .flatten()
                    .filter(|i| i.module == HOST_MODULE)
                    .map(|i| i.name.to_owned()),
            );
        }
    }
    names
}
