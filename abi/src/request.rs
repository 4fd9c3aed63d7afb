//! What the host hands a guest and what a guest asks the host, besides the capability
//! requests (`{"op", …}`, one op enum per capability in the host).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The input of `aisapp_run`: `{"action", "payload"}`. The JavaScript runtime's input
/// adds `"sources"` (see `docs/js-apps.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionInput {
    /// The action's name (a key of `action-schema.json`).
    pub action: String,
    /// The payload, valid against the action's schema.
    #[serde(default)]
    pub payload: Value,
}

impl ActionInput {
    /// The input as the JSON text the host writes into the guest.
    pub fn to_json(&self) -> String {
        serde_json::json!({ "action": self.action, "payload": self.payload }).to_string()
    }
}

/// The request of `ai_generate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AiRequest {
    /// The user prompt.
    pub prompt: String,
    /// An optional system prompt.
    #[serde(default)]
    pub system: Option<String>,
    /// An optional cap on output tokens.
    #[serde(default)]
    pub max_tokens: Option<u32>,
}

/// The `level` argument of `log`: 0 debug, 1 info, 2 warn, anything else error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Detail for debugging.
    Debug = 0,
    /// Normal events.
    Info = 1,
    /// Something odd.
    Warn = 2,
    /// Something failed.
    Error = 3,
}

impl LogLevel {
    /// The level a guest's number means.
    pub fn from_i32(level: i32) -> LogLevel {
        match level {
            0 => LogLevel::Debug,
            1 => LogLevel::Info,
            2 => LogLevel::Warn,
            _ => LogLevel::Error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_and_requests_have_their_wire_shape() {
        let input = ActionInput {
            action: "write".into(),
            payload: json!({"topic": "x"}),
        };
        let text = input.to_json();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"action": "write", "payload": {"topic": "x"}})
        );
        assert_eq!(serde_json::from_str::<ActionInput>(&text).unwrap(), input);
        let req: AiRequest = serde_json::from_str(r#"{"prompt": "hi", "system": null}"#).unwrap();
        assert_eq!((req.prompt.as_str(), req.max_tokens), ("hi", None));
        assert_eq!(LogLevel::from_i32(1), LogLevel::Info);
        assert_eq!(LogLevel::from_i32(99), LogLevel::Error);
    }
}
