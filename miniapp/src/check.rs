//! The static checks a bundle passes before it is signed or installed: every JSON file
//! against its schema, each action's payload schema is itself a JSON Schema, the entry's
//! files are there, wasm imports stay within the permissions, JS uses no forbidden API.

use aisa_abi::ActionSchema;
use serde_json::Value;

use crate::bundle::{
    ACTION_SCHEMA, BOT_LOGIC, Bundle, LOGIC_WASM, MANIFEST, PERMISSIONS, REQUIRED, SIGNATURE,
    TOOLS, UI_SCHEMA,
};
use crate::js::Finding;
use crate::manifest::{EntryKind, Manifest, ManifestError};
use crate::permissions::{Permissions, PermissionsError};
use crate::wasm::WasmProblem;
use crate::{js, schemas, wasm};

/// One thing wrong with a bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A required file is absent.
    #[error("the bundle has no {0}")]
    Missing(&'static str),
    /// A JSON file does not parse.
    #[error("{file} is not valid JSON: {error}")]
    NotJson {
        /// The file.
        file: &'static str,
        /// The parser's message.
        error: String,
    },
    /// A JSON file breaks its schema (the message names file and place).
    #[error("{0}")]
    Schema(String),
    /// The manifest's values are invalid.
    #[error(transparent)]
    Manifest(ManifestError),
    /// The permissions' values are invalid.
    #[error(transparent)]
    Permissions(PermissionsError),
    /// An action's payload schema is not a valid JSON Schema.
    #[error(
        "action-schema.json: the schema of action {action:?} is not a valid JSON Schema: {error}"
    )]
    ActionSchema {
        /// The action.
        action: String,
        /// What is wrong.
        error: String,
    },
    /// `ui-schema.json` has a key that is not an action.
    #[error("ui-schema.json: {0:?} is not an action of action-schema.json")]
    UiSchemaAction(String),
    /// A code file of the other entry kind is present.
    #[error("manifest.json says entry {entry}, but the bundle holds {file}")]
    WrongEntryFile {
        /// The manifest's entry kind.
        entry: EntryKind,
        /// The file that does not belong.
        file: &'static str,
    },
    /// A text file is not UTF-8.
    #[error("{0} is not UTF-8 text")]
    NotUtf8(&'static str),
    /// An action of `action-schema.json` that `bot-logic.js` does not export.
    #[error(
        "bot-logic.js does not export a function for action {0:?} (export async function {0}(payload, context) {{ … }})"
    )]
    MissingExport(String),
    /// A forbidden JS API.
    #[error("{0}")]
    Js(Finding),
    /// A wasm problem.
    #[error(transparent)]
    Wasm(WasmProblem),
}

/// A bundle failed its checks: every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe(.problems))]
pub struct CheckError {
    /// What is wrong, in the order found.
    pub problems: Vec<Problem>,
}

fn describe(problems: &[Problem]) -> String {
    match problems {
        [one] => one.to_string(),
        many => {
            let mut s = format!("{} problems:", many.len());
            for p in many {
                s.push_str("\n  - ");
                s.push_str(&p.to_string());
            }
            s
        }
    }
}

/// What a bundle that passed the checks declares.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedApp {
    /// The manifest.
    pub manifest: Manifest,
    /// The permissions it asks for.
    pub permissions: Permissions,
    /// The actions, sorted.
    pub actions: Vec<String>,
    /// `action-schema.json`.
    pub action_schema: Value,
    /// `ui-schema.json`.
    pub ui_schema: Value,
}

/// Parses a JSON file and checks it against its schema; `None` (with problems recorded)
/// when it is not JSON or breaks the schema.
fn json_file(file: &'static str, bytes: &[u8], problems: &mut Vec<Problem>) -> Option<Value> {
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            problems.push(Problem::NotJson {
                file,
                error: e.to_string(),
            });
            return None;
        }
    };
    let errors = schemas::validate(file, &value);
    if errors.is_empty() {
        Some(value)
    } else {
        problems.extend(errors.into_iter().map(Problem::Schema));
        None
    }
}

/// Runs every static check on a bundle.
pub fn check(bundle: &Bundle) -> Result<CheckedApp, CheckError> {
    let mut problems = Vec::new();
    for file in REQUIRED {
        if bundle.file(file).is_none() {
            problems.push(Problem::Missing(file));
        }
    }
    let mut parsed = |file| json_file(file, bundle.file(file)?, &mut problems);
    let manifest_json = parsed(MANIFEST);
    let permissions_json = parsed(PERMISSIONS);
    let action_schema = parsed(ACTION_SCHEMA);
    let ui_schema = parsed(UI_SCHEMA);
    let _ = parsed(SIGNATURE);

    // The typed parsers add what a schema cannot say (semver, ranges, paths).
    let manifest = manifest_json.and_then(|_| {
        Manifest::from_json(bundle.file(MANIFEST).unwrap_or_default())
            .map_err(|e| problems.push(Problem::Manifest(e)))
            .ok()
    });
    let permissions = permissions_json.and_then(|_| {
        Permissions::from_json(bundle.file(PERMISSIONS).unwrap_or_default())
            .map_err(|e| problems.push(Problem::Permissions(e)))
            .ok()
    });

    let mut actions = Vec::new();
    if let Some(Ok(declared)) = action_schema.as_ref().map(ActionSchema::from_value) {
        for (action, schema) in declared.iter() {
            actions.push(action.to_owned());
            if let Err(error) = schemas::check_is_schema(schema) {
                problems.push(Problem::ActionSchema {
                    action: action.to_owned(),
                    error,
                });
            }
        }
        actions.sort();
        if let Some(Value::Object(ui)) = &ui_schema {
            problems.extend(
                ui.keys()
                    .filter(|k| !declared.contains(k))
                    .map(|k| Problem::UiSchemaAction(k.clone())),
            );
        }
    }

    if let Some(m) = &manifest {
        check_code(bundle, m, permissions.as_ref(), &mut problems);
        if m.entry == EntryKind::Js
            && let Some(Ok(src)) = bundle.file(BOT_LOGIC).map(std::str::from_utf8)
            && let Some(exported) = js::exports(src)
        {
            problems.extend(
                actions
                    .iter()
                    .filter(|a| !exported.contains(a))
                    .map(|a| Problem::MissingExport(a.clone())),
            );
        }
    }

    match (manifest, permissions, action_schema, ui_schema) {
        (Some(manifest), Some(permissions), Some(action_schema), Some(ui_schema))
            if problems.is_empty() =>
        {
            Ok(CheckedApp {
                manifest,
                permissions,
                actions,
                action_schema,
                ui_schema,
            })
        }
        _ => Err(CheckError { problems }),
    }
}

fn check_code(
    bundle: &Bundle,
    manifest: &Manifest,
    permissions: Option<&Permissions>,
    problems: &mut Vec<Problem>,
) {
    let (needed, foreign): (&[&'static str], &[&'static str]) = match manifest.entry {
        EntryKind::Js => (&[BOT_LOGIC], &[LOGIC_WASM]),
        EntryKind::Wasm => (&[LOGIC_WASM], &[BOT_LOGIC, TOOLS]),
    };
    for file in needed {
        if bundle.file(file).is_none() {
            problems.push(Problem::Missing(file));
        }
    }
    for file in foreign {
        if bundle.file(file).is_some() {
            problems.push(Problem::WrongEntryFile {
                entry: manifest.entry,
                file,
            });
        }
    }
    match manifest.entry {
        EntryKind::Js => {
            for file in [BOT_LOGIC, TOOLS] {
                let Some(bytes) = bundle.file(file) else {
                    continue;
                };
                match std::str::from_utf8(bytes) {
                    Ok(src) => problems.extend(js::scan(file, src).into_iter().map(Problem::Js)),
                    Err(_) => problems.push(Problem::NotUtf8(file)),
                }
            }
        }
        EntryKind::Wasm => {
            if let (Some(bytes), Some(p)) = (bundle.file(LOGIC_WASM), permissions) {
                problems.extend(wasm::check(bytes, p).into_iter().map(Problem::Wasm));
            }
        }
    }
}
