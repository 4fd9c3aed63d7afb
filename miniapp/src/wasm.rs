//! A static check of `logic.wasm`: it must be a valid core module whose imports are all
//! `aisapp_v1` functions, with the signatures of the contract, that the app's permissions
//! cover, and which exports what the host calls. The import table, its signatures and the
//! capability→permission map are `aisa_abi::imports`, the same table the desktop node's
//! linker is built from.

use aisa_abi::imports::{self, ValType};
use wasmparser::{
    CompositeInnerType, Encoding, ExternalKind, FuncType, Parser, Payload, TypeRef, Validator,
};

use crate::permissions::Permissions;

/// The host ABI's import module ([`aisa_abi::MODULE`]).
pub const HOST_MODULE: &str = aisa_abi::MODULE;

/// The exports the host needs, as `(name, "memory" | "function")`
/// ([`aisa_abi::imports::REQUIRED_EXPORTS`] has their signatures).
pub const REQUIRED_EXPORTS: &[(&str, &str)] = &[
    (imports::EXPORT_MEMORY, "memory"),
    (imports::EXPORT_ALLOC, "function"),
    (imports::EXPORT_RUN, "function"),
];

/// What a capability import needs: `(permission, granted?)`, from the contract's
/// capability→permission map.
fn needs(name: &str, p: &Permissions) -> Option<(&'static str, bool)> {
    aisa_abi::Permission::for_import(name).map(|perm| (perm.as_str(), perm.asked_by(p)))
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
    /// An `aisapp_v1` function imported with another signature than the contract's.
    #[error(
        "logic.wasm imports aisapp_v1::{import} as {found}; the host provides it as {expected}"
    )]
    WrongSignature {
        /// The import.
        import: String,
        /// The signature the contract gives it, e.g. `(i32, i32) -> ()`.
        expected: String,
        /// The signature the module declares.
        found: String,
    },
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
    let mut types: Vec<Option<FuncType>> = Vec::new();
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
            Payload::TypeSection(reader) => {
                for group in reader {
                    let group = match group {
                        Ok(g) => g,
                        Err(e) => return vec![WasmProblem::Invalid(e.to_string())],
                    };
                    types.extend(group.into_types().map(|t| match t.composite_type.inner {
                        CompositeInnerType::Func(f) => Some(f),
                        _ => None,
                    }));
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = match import {
                        Ok(i) => i,
                        Err(e) => return vec![WasmProblem::Invalid(e.to_string())],
                    };
                    let ty = match import.ty {
                        TypeRef::Func(t) | TypeRef::FuncExact(t) => {
                            Some(types.get(t as usize).cloned().flatten())
                        }
                        _ => None,
                    };
                    problems.extend(check_import(
                        import.module,
                        import.name,
                        ty.as_ref().map(Option::as_ref),
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

/// Checks one import. `func` is `None` when it is not a function, `Some(None)` when its
/// type is not a function type. A known import may have two problems (its permission is
/// missing and its signature is wrong); granting the permission removes only the first.
fn check_import(
    module: &str,
    name: &str,
    func: Option<Option<&FuncType>>,
    permissions: &Permissions,
) -> Vec<WasmProblem> {
    if module != HOST_MODULE {
        return vec![WasmProblem::ForeignImport {
            module: module.to_owned(),
            name: name.to_owned(),
        }];
    }
    let (Some(contract), Some(func)) = (imports::import(name), func) else {
        return vec![WasmProblem::UnknownHostImport(name.to_owned())];
    };
    let mut problems = Vec::new();
    if let Some((permission, false)) = needs(name, permissions) {
        problems.push(WasmProblem::NotPermitted {
            import: name.to_owned(),
            permission,
        });
    }
    let matches = func.is_some_and(|f| {
        same_types(f.params(), contract.params) && same_types(f.results(), contract.results)
    });
    if !matches {
        problems.push(WasmProblem::WrongSignature {
            import: name.to_owned(),
            expected: signature(contract.params, contract.results),
            found: func.map_or_else(|| "a non-function type".to_owned(), describe),
        });
    }
    problems
}

fn same_types(found: &[wasmparser::ValType], contract: &[ValType]) -> bool {
    found.len() == contract.len()
        && found.iter().zip(contract).all(|(f, c)| match c {
            ValType::I32 => *f == wasmparser::ValType::I32,
        })
}

fn signature(params: &[ValType], results: &[ValType]) -> String {
    let names = |types: &[ValType]| -> Vec<&str> {
        types
            .iter()
            .map(|t| match t {
                ValType::I32 => "i32",
            })
            .collect()
    };
    format!(
        "({}) -> ({})",
        names(params).join(", "),
        names(results).join(", ")
    )
}

fn describe(f: &FuncType) -> String {
    let names = |types: &[wasmparser::ValType]| -> Vec<String> {
        types.iter().map(|t| t.to_string()).collect()
    };
    format!(
        "({}) -> ({})",
        names(f.params()).join(", "),
        names(f.results()).join(", ")
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn module(imports: &str) -> Vec<u8> {
        wat::parse_str(format!(
            r#"(module {imports}
                 (memory (export "memory") 1)
                 (func (export "aisapp_alloc") (param i32) (result i32) i32.const 0)
                 (func (export "aisapp_run") (param i32 i32) (result i32) i32.const 0))"#
        ))
        .unwrap()
    }

    #[test]
    fn every_import_of_the_contract_passes_with_its_signature() {
        let imports: String = aisa_abi::IMPORTS
            .iter()
            .map(|i| {
                format!(
                    "(import \"aisapp_v1\" \"{}\" (func (param{}) (result{})))",
                    i.name,
                    " i32".repeat(i.params.len()),
                    " i32".repeat(i.results.len())
                )
            })
            .collect();
        let all = Permissions::from_json(
            br#"{"ai": true, "clipboard": true, "network": ["a.example"],
                 "filesystem": {"write": ["$APP_DATA"]}}"#,
        )
        .unwrap();
        assert_eq!(check(&module(&imports), &all), []);
        assert_eq!(
            host_imports(&module(&imports)).len(),
            aisa_abi::IMPORTS.len()
        );
    }

    #[test]
    fn granting_a_permission_removes_only_the_permission_problem() {
        let wasm = module(r#"(import "aisapp_v1" "http" (func (param i32) (result i32)))"#);
        let wrong = WasmProblem::WrongSignature {
            import: "http".into(),
            expected: "(i32, i32) -> (i32)".into(),
            found: "(i32) -> (i32)".into(),
        };
        let none = check(&wasm, &Permissions::default());
        assert_eq!(
            none,
            [
                WasmProblem::NotPermitted {
                    import: "http".into(),
                    permission: "network"
                },
                wrong.clone()
            ]
        );
        let granted = Permissions::from_json(br#"{"network": ["a.example"]}"#).unwrap();
        assert_eq!(check(&wasm, &granted), [wrong]);
    }
}
