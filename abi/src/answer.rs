//! What a capability call answers: `{"ok": <value>}` or
//! `{"error": {"code", "message"}}`, and the stable error codes. Denials are answers,
//! never traps, so a guest can handle them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The largest answer a call may produce; a bigger one becomes `too_large`.
pub const MAX_ANSWER_BYTES: usize = 16 << 20;
/// The longest request (its JSON text) a call accepts; a longer one is `too_large`
/// before it is copied out of the guest or parsed. Each op has its own smaller limits
/// (see `docs/guest-abi.md`).
pub const MAX_REQUEST_BYTES: usize = 16 << 20;

/// The stable error codes of answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The app's grants do not allow it.
    PermissionDenied,
    /// The file, folder or key does not exist.
    NotFound,
    /// The request is malformed (unknown op, missing or wrong argument, bad path).
    Invalid,
    /// Over a size limit.
    TooLarge,
    /// The operation was allowed but failed (I/O error, unreachable host, bad PDF).
    Failed,
    /// This node cannot do it (e.g. no clipboard on a headless machine).
    Unavailable,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 6] = [
        ErrorCode::PermissionDenied,
        ErrorCode::NotFound,
        ErrorCode::Invalid,
        ErrorCode::TooLarge,
        ErrorCode::Failed,
        ErrorCode::Unavailable,
    ];

    /// The code as it appears in answers.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Invalid => "invalid",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Failed => "failed",
            ErrorCode::Unavailable => "unavailable",
        }
    }

    /// The code written as `text`, if it is one.
    pub fn parse(text: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused or failed call, answered to the guest as `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct HostError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// For a person.
    pub message: String,
}

impl HostError {
    /// An error with `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        HostError {
            code,
            message: message.into(),
        }
    }

    /// `permission_denied`.
    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PermissionDenied, message)
    }

    /// `invalid`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Invalid, message)
    }

    /// `too_large`.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::TooLarge, message)
    }

    /// `failed`.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Failed, message)
    }
}

/// What a call answers.
pub type Answer = Result<Value, HostError>;

/// The bytes of an answer: `{"ok": value}` or `{"error": {...}}`, replaced by a
/// `too_large` error when over [`MAX_ANSWER_BYTES`].
pub fn encode(answer: Answer) -> Vec<u8> {
    let encode = |answer: Answer| match answer {
        Ok(value) => serde_json::json!({ "ok": value }).to_string().into_bytes(),
        Err(err) => serde_json::json!({ "error": err }).to_string().into_bytes(),
    };
    let bytes = encode(answer);
    if bytes.len() > MAX_ANSWER_BYTES {
        return encode(Err(HostError::too_large(format!(
            "the answer is {} bytes; answers are limited to {MAX_ANSWER_BYTES}",
            bytes.len()
        ))));
    }
    bytes
}

/// An answer as a guest reads it: the `ok` value, or the error's code and message (an
/// unknown code or a missing field reads as `failed`, so a newer host's code still
/// reaches the app as an error). `Err` with the code as written, for guests that keep
/// codes as text.
pub fn decode(answer: Value) -> Result<Value, (String, String)> {
    let Value::Object(mut answer) = answer else {
        return Err((
            ErrorCode::Failed.as_str().to_owned(),
            "unexpected answer from the host: not an object".to_owned(),
        ));
    };
    if let Some(value) = answer.remove("ok") {
        return Ok(value);
    }
    let error = answer.remove("error").unwrap_or_default();
    Err((
        error["code"]
            .as_str()
            .unwrap_or(ErrorCode::Failed.as_str())
            .to_owned(),
        error["message"]
            .as_str()
            .unwrap_or("the host call failed")
            .to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_round_trip_and_codes_are_snake_case() {
        let ok = encode(Ok(json!([1, 2])));
        assert_eq!(ok, br#"{"ok":[1,2]}"#);
        assert_eq!(
            decode(serde_json::from_slice(&ok).unwrap()),
            Ok(json!([1, 2]))
        );
        let err = encode(Err(HostError::denied("no")));
        assert_eq!(
            String::from_utf8(err.clone()).unwrap(),
            r#"{"error":{"code":"permission_denied","message":"no"}}"#
        );
        assert_eq!(
            decode(serde_json::from_slice(&err).unwrap()),
            Err(("permission_denied".into(), "no".into()))
        );
        assert_eq!(decode(json!({})).unwrap_err().0, "failed");
        assert_eq!(decode(json!(3)).unwrap_err().0, "failed");
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert_eq!(json!(code), json!(code.as_str()));
        }
    }

    #[test]
    fn an_answer_over_the_limit_becomes_too_large() {
        let big = encode(Ok(Value::String("x".repeat(MAX_ANSWER_BYTES))));
        let v: Value = serde_json::from_slice(&big).unwrap();
        assert_eq!(v["error"]["code"], "too_large");
    }
}
