//! `hello-ai`: the example mini-app, in Rust, compiled to `wasm32-unknown-unknown`.
//!
//! Actions:
//! * `write` `{"topic": "…"}`: asks the model for a short paragraph on the topic and
//!   streams the answer as it arrives.
//! * `echo` `{"text": "…"}`: streams the text back word by word, without the model.
//!
//! It uses the guest SDK (`aisa-guest`), which speaks the host ABI `aisapp_v1`.

use aisa_guest::ai;
use serde::Deserialize;

/// The input the host passes to the action.
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
    /// Ask the model this prompt (with this system prompt) and stream the answer.
    Generate {
        /// The system prompt.
        system: String,
        /// The user prompt.
        prompt: String,
    },
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
            Ok(Plan::Generate {
                system: "You are a concise, friendly writer.".into(),
                prompt: format!("Write a short paragraph about {topic}."),
            })
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

/// Runs an action: the mini-app's entry point.
pub fn run(input: &str) -> Result<(), String> {
    match plan(input)? {
        Plan::Emit(pieces) => pieces.iter().for_each(|p| aisa_guest::emit(p)),
        Plan::Generate { system, prompt } => {
            let request = ai::Request {
                system: Some(system),
                max_tokens: Some(400),
                ..ai::Request::new(prompt)
            };
            for text in ai::generate(&request)? {
                aisa_guest::emit(&text?);
            }
        }
    }
    Ok(())
}

aisa_guest::entry!(run);

#[cfg(test)]
mod tests {
    use super::*;
    use aisa_guest::testing;

    #[test]
    fn write_streams_the_models_answer() {
        testing::set_model_reply(&["Hel", "lo"]);
        run(r#"{"action":"write","payload":{"topic":" QUIC "}}"#).unwrap();
        assert_eq!(testing::take_output(), ["Hel", "lo"]);
        assert_eq!(
            plan(r#"{"action":"write","payload":{"topic":" QUIC "}}"#).unwrap(),
            Plan::Generate {
                system: "You are a concise, friendly writer.".into(),
                prompt: "Write a short paragraph about QUIC.".into()
            }
        );
    }

    #[test]
    fn echo_splits_words_and_keeps_spaces() {
        run(r#"{"action":"echo","payload":{"text":"a bc d"}}"#).unwrap();
        assert_eq!(testing::take_output(), ["a ", "bc ", "d"]);
    }

    #[test]
    fn bad_inputs_are_explained() {
        assert!(
            run(r#"{"action":"write","payload":{}}"#)
                .unwrap_err()
                .contains("topic")
        );
        assert!(
            run(r#"{"action":"nope","payload":{}}"#)
                .unwrap_err()
                .contains("unknown action")
        );
        assert!(run("[").unwrap_err().contains("bad input"));
        let long = "x".repeat(201);
        let input = format!(r#"{{"action":"write","payload":{{"topic":"{long}"}}}}"#);
        assert!(run(&input).unwrap_err().contains("200"));
    }
}
