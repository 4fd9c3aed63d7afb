//! The app's own persistent key-value store (JSON values, 1 MiB in all). Needs no
//! permission; no other app can see it.

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
