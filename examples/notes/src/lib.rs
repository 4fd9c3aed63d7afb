//! `notes`: an example mini-app that uses the permissioned host API from Rust, through the
//! guest SDK (`aisa-guest`). It needs no AI.
//!
//! Actions:
//! * `add` `{"text": "…"}`: keeps a note in the app's storage (it survives across
//!   actions) and rewrites `$APP_DATA/notes.md`;
//! * `list` `{}`: streams the notes back;
//! * `export` `{"path": "…"}`: writes the notes as Markdown to a file, e.g.
//!   `$DOCUMENTS/notes.md` (needs a write grant there);
//! * `import` `{"path": "…"}`: reads a CSV file (header row, the `note` column or the first
//!   one) and adds each row as a note (needs a read grant);
//! * `about` `{}`: says which version runs on which system.
//!
//! A refused file access is reported to the person with the host's message.

use aisa_guest::{HostError, emit, env, fs, storage, tools};
use serde_json::Value;

/// The storage key of the notes (a JSON array of strings).
const KEY: &str = "notes";

fn notes() -> Result<Vec<String>, HostError> {
    Ok(storage::get(KEY)?
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect())
}

fn save(notes: &[String]) -> Result<(), HostError> {
    storage::set(KEY, &Value::from(notes.to_vec()))?;
    fs::write("$APP_DATA/notes.md", &markdown(notes))
}

/// The notes as a Markdown list.
pub fn markdown(notes: &[String]) -> String {
    notes.iter().map(|n| format!("- {n}\n")).collect()
}

fn text_arg<'a>(payload: &'a Value, name: &str) -> Result<&'a str, String> {
    payload[name]
        .as_str()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("\"{name}\" is missing"))
}

/// Runs an action: the mini-app's entry point.
pub fn run(input: &str) -> Result<(), String> {
    let input: Value = serde_json::from_str(input).map_err(|e| format!("bad input: {e}"))?;
    let payload = &input["payload"];
    match input["action"].as_str().unwrap_or_default() {
        "add" => {
            let mut all = notes()?;
            all.push(text_arg(payload, "text")?.to_owned());
            save(&all)?;
            emit(&format!("saved note {}", all.len()));
        }
        "list" => {
            for (i, note) in notes()?.iter().enumerate() {
                emit(&format!("{}. {note}\n", i + 1));
            }
        }
        "export" => {
            let path = text_arg(payload, "path")?;
            let all = notes()?;
            fs::write(path, &markdown(&all)).map_err(|e| format!("cannot write {path}: {e}"))?;
            emit(&format!("exported {} notes to {path}", all.len()));
        }
        "import" => {
            let path = text_arg(payload, "path")?;
            let text = fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
            let csv = tools::parse_csv(&text)?;
            let column = csv.headers.iter().position(|h| h == "note").unwrap_or(0);
            let mut all = notes()?;
            let before = all.len();
            all.extend(
                csv.rows
                    .iter()
                    .filter_map(|row| row.get(column))
                    .filter(|n| !n.trim().is_empty())
                    .cloned(),
            );
            save(&all)?;
            emit(&format!("imported {} notes", all.len() - before));
        }
        "about" => {
            let env = env::get()?;
            emit(&format!(
                "{} {} on desktop-node {} ({}/{})",
                env.app_id, env.app_version, env.node_version, env.os, env.arch
            ));
        }
        other => return Err(format!("unknown action {other:?}")),
    }
    Ok(())
}

aisa_guest::entry!(run);

#[cfg(test)]
mod tests {
    use super::*;
    use aisa_guest::testing;

    #[test]
    fn notes_survive_and_export_and_import_use_files() {
        testing::reset();
        run(r#"{"action":"add","payload":{"text":"buy milk"}}"#).unwrap();
        run(r#"{"action":"add","payload":{"text":"call Bo"}}"#).unwrap();
        assert_eq!(testing::take_output(), ["saved note 1", "saved note 2"]);
        assert_eq!(
            testing::file("$APP_DATA/notes.md").as_deref(),
            Some("- buy milk\n- call Bo\n")
        );
        testing::set_file("$DOCUMENTS/in.csv", "when,note\nmon,\"water, plants\"\n");
        run(r#"{"action":"import","payload":{"path":"$DOCUMENTS/in.csv"}}"#).unwrap();
        run(r#"{"action":"list","payload":{}}"#).unwrap();
        assert_eq!(
            testing::take_output(),
            [
                "imported 1 notes",
                "1. buy milk\n",
                "2. call Bo\n",
                "3. water, plants\n"
            ]
        );
        testing::set_error(
            "fs.write",
            HostError::new("permission_denied", "writing /etc/x is not granted"),
        );
        let err = run(r#"{"action":"export","payload":{"path":"/etc/x"}}"#).unwrap_err();
        assert!(err.contains("not granted"), "{err}");
    }
}
