//! The JSON Schemas of the bundle's JSON files (shipped in `miniapp/schemas/` for
//! authors and editors) and validation against them.

use std::sync::OnceLock;

use jsonschema::Validator;
use serde_json::Value;

/// `manifest.schema.json`.
pub const MANIFEST: &str = include_str!("../schemas/manifest.schema.json");
/// `permissions.schema.json`.
pub const PERMISSIONS: &str = include_str!("../schemas/permissions.schema.json");
/// `action-schema.schema.json`.
pub const ACTION_SCHEMA: &str = include_str!("../schemas/action-schema.schema.json");
/// `ui-schema.schema.json`.
pub const UI_SCHEMA: &str = include_str!("../schemas/ui-schema.schema.json");
/// `signature.schema.json`.
pub const SIGNATURE: &str = include_str!("../schemas/signature.schema.json");

/// The schema text for a bundle file name, if it is a JSON file of the format.
pub fn schema_text(file: &str) -> Option<&'static str> {
    Some(match file {
        crate::bundle::MANIFEST => MANIFEST,
        crate::bundle::PERMISSIONS => PERMISSIONS,
        crate::bundle::ACTION_SCHEMA => ACTION_SCHEMA,
        crate::bundle::UI_SCHEMA => UI_SCHEMA,
        crate::bundle::SIGNATURE => SIGNATURE,
        _ => return None,
    })
}

fn validator(file: &str) -> Option<&'static Validator> {
    static CELLS: [OnceLock<Validator>; 5] = [const { OnceLock::new() }; 5];
    let index = [
        crate::bundle::MANIFEST,
        crate::bundle::PERMISSIONS,
        crate::bundle::ACTION_SCHEMA,
        crate::bundle::UI_SCHEMA,
        crate::bundle::SIGNATURE,
    ]
    .iter()
    .position(|n| *n == file)?;
    let text = schema_text(file)?;
    Some(CELLS[index].get_or_init(|| {
        // The schemas are part of this crate and covered by its tests.
        let schema: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        jsonschema::validator_for(&schema).unwrap_or_else(|_| {
            jsonschema::validator_for(&Value::Bool(true)).expect("`true` is a valid schema")
        })
    }))
}

/// Validates `value` against the schema of the bundle file `file`; one message per
/// violation, `"<file> at <JSON pointer>: <what>"`. Files without a schema pass.
pub fn validate(file: &str, value: &Value) -> Vec<String> {
    let Some(validator) = validator(file) else {
        return Vec::new();
    };
    validator
        .iter_errors(value)
        .map(|e| {
            let at = e.instance_path().to_string();
            let at = if at.is_empty() { "/".to_owned() } else { at };
            format!("{file} at {at}: {}", e.masked())
        })
        .collect()
}

/// Checks that `schema` is itself a valid JSON Schema (against its meta-schema, then by
/// compiling it, which also refuses references that cannot be resolved offline).
pub fn check_is_schema(schema: &Value) -> Result<(), String> {
    jsonschema::meta::validate(schema).map_err(|e| {
        let at = e.instance_path().to_string();
        format!(
            "at {}: {}",
            if at.is_empty() { "/" } else { &at },
            e.masked()
        )
    })?;
    jsonschema::validator_for(schema)
        .map(drop)
        .map_err(|e| e.masked().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shipped_schemas_are_valid_schemas() {
        for file in crate::bundle::ENTRY_NAMES {
            if let Some(text) = schema_text(file) {
                let schema: Value = serde_json::from_str(text).expect(file);
                check_is_schema(&schema).expect(file);
            }
        }
    }

    #[test]
    fn violations_name_file_and_place() {
        let errors = validate("manifest.json", &json!({"id": "X"}));
        assert!(
            errors.iter().any(|e| e.contains("manifest.json at /id")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("\"version\"")),
            "{errors:?}"
        );
        assert!(validate("permissions.json", &json!({"ai": true})).is_empty());
        assert!(!validate("permissions.json", &json!({"ai": 1})).is_empty());
        assert!(check_is_schema(&json!({"type": "nope"})).is_err());
        assert!(check_is_schema(&json!({"$ref": "https://example.com/s.json"})).is_err());
    }
}
