//! `aisapp new`: starting points for a JS or Rust mini-app that pass the checks as they
//! are (a Rust app once `aisapp build` has made its `logic.wasm`).

use std::path::Path;

use serde_json::json;

/// Which language the app is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `bot-logic.js` + `tools.js`.
    Js,
    /// A Rust crate compiled to `logic.wasm` with the guest SDK `aisa-guest`.
    Rust,
}

/// An app id made from a name: lowercase, runs of other characters turned into `-`.
pub fn id_from_name(name: &str) -> String {
    let mut id = String::new();
    for c in name.trim().chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            id.push(c);
        } else if !id.is_empty() && !id.ends_with('-') {
            id.push('-');
        }
    }
    let id = id.trim_end_matches('-');
    id.chars()
        .take(crate::manifest::MAX_ID_LEN)
        .collect::<String>()
        .trim_end_matches('-')
        .to_owned()
}

/// The runtime range an app made by this version of the tools asks for: this minor
/// series of the desktop node (`>=0.1.0, <0.2.0`; `>=1.0.0, <2.0.0` from 1.0 on).
pub fn default_runtime() -> String {
    let v =
        semver::Version::parse(env!("CARGO_PKG_VERSION")).unwrap_or(semver::Version::new(0, 1, 0));
    if v.major == 0 {
        format!(">=0.{}.0, <0.{}.0", v.minor, v.minor + 1)
    } else {
        format!(">={}.0.0, <{}.0.0", v.major, v.major + 1)
    }
}

fn pretty(value: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(value).unwrap_or_default();
    s.push('\n');
    s
}

/// The files of a new app, as `(relative path, contents)`. `guest_sdk` is how a Rust app's
/// `Cargo.toml` names the SDK: a path to `sdk/rust`, or `None` for a comment saying how.
pub fn files(kind: Kind, name: &str, guest_sdk: Option<&Path>) -> Vec<(String, String)> {
    let id = id_from_name(name);
    let entry = match kind {
        Kind::Js => "js",
        Kind::Rust => "wasm",
    };
    let manifest = json!({
        "id": id,
        "name": name.trim(),
        "version": "0.1.0",
        "description": "Writes a short text about a topic with your AI model.",
        "category": "writing",
        "author": {"name": "Your Name"},
        "entry": entry,
        "runtime": default_runtime(),
    });
    let action_schema = json!({
        "write": {
            "type": "object",
            "title": "Write",
            "description": "Write a short text about a topic.",
            "required": ["topic"],
            "properties": {
                "topic": {"type": "string", "title": "Topic", "minLength": 1, "maxLength": 200}
            }
        }
    });
    let ui_schema = json!({
        "write": {"topic": {"ui:placeholder": "e.g. QUIC in one paragraph", "ui:autofocus": true}}
    });
    let permissions = json!({"ai": true});
    let mut out = vec![
        ("manifest.json".to_owned(), pretty(&manifest)),
        ("action-schema.json".to_owned(), pretty(&action_schema)),
        ("ui-schema.json".to_owned(), pretty(&ui_schema)),
        ("permissions.json".to_owned(), pretty(&permissions)),
    ];
    match kind {
        Kind::Js => {
            out.push(("bot-logic.js".into(), JS_BOT_LOGIC.into()));
            out.push(("tools.js".into(), JS_TOOLS.into()));
            out.push(("README.md".into(), readme(name, kind)));
        }
        Kind::Rust => {
            let dep = match guest_sdk {
                Some(path) => format!("aisa-guest = {{ path = {:?} }}", path.display().to_string()),
                None => "# The guest SDK lives in the AI SuperApp repository, folder sdk/rust:\n\
                         # aisa-guest = { git = \"<repository URL>\" }   or\n\
                         # aisa-guest = { path = \"<checkout>/sdk/rust\" }\n\
                         aisa-guest = { path = \"../sdk/rust\" }"
                    .to_owned(),
            };
            out.push((
                "Cargo.toml".into(),
                RUST_CARGO
                    .replace("{crate}", &id)
                    .replace("{guest_dependency}", &dep),
            ));
            out.push(("src/lib.rs".into(), RUST_LIB.into()));
            out.push((
                ".gitignore".into(),
                "/target\n/logic.wasm\n*.aisapp\n".into(),
            ));
            out.push(("README.md".into(), readme(name, kind)));
        }
    }
    out
}

fn readme(name: &str, kind: Kind) -> String {
    let build = match kind {
        Kind::Js => "aisapp validate            # checks manifest, schemas, permissions and the JS",
        Kind::Rust => {
            "aisapp build               # cargo build --release --target wasm32-unknown-unknown → logic.wasm"
        }
    };
    format!(
        "# {name}\n\nA mini-app for AI SuperApp (format: docs/miniapp-format.md).\n\n```sh\n{build}\n\
         aisapp pack -o app.aisapp  # checks and packs the bundle\n\
         aisapp publish app.aisapp --relay https://relay.example.com --email you@example.com\n```\n"
    )
}

const JS_BOT_LOGIC: &str = r#"// One exported (async) function per action of action-schema.json.
// `context`: emit(text), ai.generateText({prompt, system?, max_tokens?}) (an async
// iterator of strings), tools (readFile, writeFile, listDir, fetch, parseCsv, pdfText and
// the exports of tools.js), storage, console, env. See docs/miniapp-format.md.
import { wordCount } from './tools.js';

export async function write(payload, context) {
  const topic = String(payload.topic || '').trim();
  if (!topic) {
    throw new Error('write needs a topic');
  }
  let text = '';
  for await (const chunk of context.ai.generateText({
    system: 'You are a concise, friendly writer.',
    prompt: `Write a short paragraph about ${topic}.`,
    max_tokens: 400,
  })) {
    text += chunk;
    context.emit(chunk);
  }
  context.emit(`\n\n(${wordCount(text)} words)`);
}
"#;

const JS_TOOLS: &str = r#"// Helpers for bot-logic.js; its exports also join context.tools.
export function wordCount(text) {
  return text.split(/\s+/).filter(Boolean).length;
}
"#;

const RUST_CARGO: &str = r#"[package]
name = "{crate}"
version = "0.1.0"
edition = "2024"
publish = false

# Its own workspace, so it builds wherever it is put.
[workspace]

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
{guest_dependency}
serde_json = "1"

[profile.release]
opt-level = "s"
debug = false
strip = true
lto = true
"#;

const RUST_LIB: &str = r##"//! A mini-app in Rust: `aisapp build` compiles it to `logic.wasm` (wasm32-unknown-unknown),
//! which speaks the host ABI `aisapp_v1` through the guest SDK `aisa-guest`.

use aisa_guest::ai;

/// Runs one action. `input` is `{"action": "...", "payload": {...}}`.
pub fn run(input: &str) -> Result<(), String> {
    let input: serde_json::Value =
        serde_json::from_str(input).map_err(|e| format!("bad input: {e}"))?;
    match input["action"].as_str() {
        Some("write") => {
            let topic = input["payload"]["topic"]
                .as_str()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or("write needs a non-empty \"topic\"")?;
            let request = ai::Request {
                system: Some("You are a concise, friendly writer.".into()),
                max_tokens: Some(400),
                ..ai::Request::new(format!("Write a short paragraph about {topic}."))
            };
            for text in ai::generate(&request)? {
                aisa_guest::emit(&text?);
            }
            Ok(())
        }
        other => Err(format!("unknown action {other:?}")),
    }
}

aisa_guest::entry!(run);

#[cfg(test)]
mod tests {
    use aisa_guest::testing;

    #[test]
    fn write_streams_the_models_answer() {
        testing::set_model_reply(&["Hel", "lo"]);
        super::run(r#"{"action":"write","payload":{"topic":"QUIC"}}"#).unwrap();
        assert_eq!(testing::take_output(), ["Hel", "lo"]);
    }
}
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_names() {
        assert_eq!(id_from_name("SEO Writer!"), "seo-writer");
        assert_eq!(id_from_name("  --CSV  summarizer 2 "), "csv-summarizer-2");
        assert!(crate::manifest::is_valid_id(&id_from_name(
            &"ab ".repeat(40)
        )));
        assert_eq!(default_runtime(), ">=0.1.0, <0.2.0");
    }

    #[test]
    fn the_js_template_passes_every_check() {
        let files = files(Kind::Js, "My App", None)
            .into_iter()
            .map(|(n, c)| (n, c.into_bytes()))
            .collect();
        let bundle = crate::Bundle::from_files(files).unwrap();
        let app = crate::check(&bundle).unwrap();
        assert_eq!(app.manifest.id, "my-app");
        assert_eq!(app.actions, ["write"]);
    }
}
