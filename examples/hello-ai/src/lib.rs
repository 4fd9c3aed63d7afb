//! `hello-ai`: the example mini-app, in Rust, compiled to `wasm32-unknown-unknown`.
//!
//! Actions:
//! * `write` `{"topic": "…"}`: asks the model for a short paragraph on the topic and
//!   streams the answer as it arrives.
//! * `echo` `{"text": "…"}`: streams the text back word by word, without the model.
//!
//! It speaks the host ABI `aisapp_v1` (see `docs/guest-abi.md`). The FFI boundary is in
//! [`abi`]; the logic in [`plan`] is plain Rust, tested on the host.

#![allow(unsafe_code)] // the wasm FFI boundary needs it; nothing else uses it

use serde::Deserialize;

/// The input the host passes to `aisapp_run`.
#[derive(Debug, Deserialize)]
pub struct Input {
    /// The action's name.
    pub action: String,
    /// The action's payload.
    pub payload: serde_json::Value,
}

/// What an action does, decided from its input alone.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Ask the model with this request (JSON for `ai_generate`) and stream the answer.
    Generate(String),
    /// Emit these pieces.
    Emit(Vec<String>),
}

/// Decides what to do, or explains why the input is refused.
pub fn plan(input: &str) -> Result<Plan, String> {
    let input: Input = serde_json::from_str(input).map_err(|e| format!("bad input: {e}"))?;
    match input.action.as_str() {
        "write" => {
            let topic = input.payload["topic"]
                .as_str()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or("write needs a non-empty \"topic\"")?;
            if topic.chars().count() > 200 {
                return Err("the topic is longer than 200 characters".into());
            }
            let request = serde_json::json!({
                "system": "You are a concise, friendly writer.",
                "prompt": format!("Write a short paragraph about {topic}."),
                "max_tokens": 400,
            });
            Ok(Plan::Generate(request.to_string()))
        }
        "echo" => {
            let text = input.payload["text"]
                .as_str()
                .ok_or("echo needs \"text\"")?;
            Ok(Plan::Emit(
                text.split_inclusive(' ').map(str::to_owned).collect(),
            ))
        }
        other => Err(format!("unknown action {other:?}")),
    }
}

#[cfg(target_arch = "wasm32")]
mod abi {
    use super::{Plan, plan};

    #[link(wasm_import_module = "aisapp_v1")]
    unsafe extern "C" {
        fn emit(ptr: *const u8, len: usize);
        fn ai_generate(ptr: *const u8, len: usize) -> i32;
        fn ai_next(handle: i32, buf: *mut u8, cap: usize) -> i32;
        fn fail(ptr: *const u8, len: usize);
    }

    fn emit_str(text: &str) {
        unsafe { emit(text.as_ptr(), text.len()) }
    }

    fn fail_str(text: &str) -> i32 {
        unsafe { fail(text.as_ptr(), text.len()) };
        1
    }

    /// Gives the host `len` bytes to write the input into. Ownership passes to
    /// `aisapp_run`, which frees it.
    #[unsafe(no_mangle)]
    pub extern "C" fn aisapp_alloc(len: usize) -> *mut u8 {
        let mut buf = Vec::<u8>::with_capacity(len);
        let ptr = buf.as_mut_ptr();
        std::mem::forget(buf);
        ptr
    }

    /// Runs the action whose input JSON the host wrote at `ptr`.
    #[unsafe(no_mangle)]
    pub extern "C" fn aisapp_run(ptr: *mut u8, len: usize) -> i32 {
        // SAFETY: the host wrote `len` bytes into the buffer `aisapp_alloc(len)` returned.
        let input = unsafe { Vec::from_raw_parts(ptr, len, len) };
        let Ok(input) = String::from_utf8(input) else {
            return fail_str("input is not UTF-8");
        };
        match plan(&input) {
            Err(message) => fail_str(&message),
            Ok(Plan::Emit(pieces)) => {
                pieces.iter().for_each(|p| emit_str(p));
                0
            }
            Ok(Plan::Generate(request)) => {
                let handle = unsafe { ai_generate(request.as_ptr(), request.len()) };
                if handle < 0 {
                    return fail_str("the model could not be asked");
                }
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = unsafe { ai_next(handle, buf.as_mut_ptr(), buf.len()) };
                    if n <= 0 {
                        return if n == 0 {
                            0
                        } else {
                            fail_str("the model stream failed")
                        };
                    }
                    match std::str::from_utf8(&buf[..n as usize]) {
                        Ok(text) => emit_str(text),
                        Err(_) => return fail_str("the model sent invalid UTF-8"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_builds_a_prompt() {
        let Plan::Generate(request) =
            plan(r#"{"action":"write","payload":{"topic":" QUIC "}}"#).unwrap()
        else {
            panic!("expected a generation");
        };
        let request: serde_json::Value = serde_json::from_str(&request).unwrap();
        assert_eq!(request["prompt"], "Write a short paragraph about QUIC.");
    }

    #[test]
    fn echo_splits_words_and_keeps_spaces() {
        assert_eq!(
            plan(r#"{"action":"echo","payload":{"text":"a bc d"}}"#).unwrap(),
            Plan::Emit(vec!["a ".into(), "bc ".into(), "d".into()])
        );
    }

    #[test]
    fn bad_inputs_are_explained() {
        assert!(
            plan(r#"{"action":"write","payload":{}}"#)
                .unwrap_err()
                .contains("topic")
        );
        assert!(
            plan(r#"{"action":"nope","payload":{}}"#)
                .unwrap_err()
                .contains("unknown action")
        );
        assert!(plan("[").unwrap_err().contains("bad input"));
        let long = "x".repeat(201);
        let input = format!(r#"{{"action":"write","payload":{{"topic":"{long}"}}}}"#);
        assert!(plan(&input).unwrap_err().contains("200"));
    }
}
