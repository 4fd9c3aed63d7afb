//! `action-schema.json`: the app's actions, each with the JSON Schema of its payload, in
//! the order the author wrote them. The one reader of the file: the checker, the relay's
//! marketplace (which shows the actions in the author's order) and the desktop node
//! (which validates payloads) all read it with [`ActionSchema::from_json`].

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

/// A parsed `action-schema.json`: `{"<action>": <JSON Schema of its payload>, …}`.
///
/// A key written twice keeps its first place and its last schema (as a JSON object
/// would).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActionSchema {
    actions: Vec<(String, Value)>,
}

/// Why `action-schema.json` cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("action-schema.json is not a JSON object of actions: {0}")]
pub struct ActionSchemaError(String);

impl ActionSchema {
    /// Parses the file's bytes, keeping the author's order of the actions.
    pub fn from_json(bytes: &[u8]) -> Result<ActionSchema, ActionSchemaError> {
        serde_json::from_slice(bytes).map_err(|e| ActionSchemaError(e.to_string()))
    }

    /// From an already parsed value (an object; its key order is whatever the value
    /// kept).
    pub fn from_value(value: &Value) -> Result<ActionSchema, ActionSchemaError> {
        let map = value
            .as_object()
            .ok_or_else(|| ActionSchemaError("not an object".into()))?;
        Ok(ActionSchema {
            actions: map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        })
    }

    /// The actions with their payload schemas, in the author's order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.actions.iter().map(|(a, s)| (a.as_str(), s))
    }

    /// The action names, in the author's order.
    pub fn actions(&self) -> Vec<String> {
        self.actions.iter().map(|(a, _)| a.clone()).collect()
    }

    /// The action names, sorted.
    pub fn sorted_actions(&self) -> Vec<String> {
        let mut actions = self.actions();
        actions.sort();
        actions
    }

    /// The payload schema of `action`.
    pub fn get(&self, action: &str) -> Option<&Value> {
        self.actions
            .iter()
            .find(|(a, _)| a == action)
            .map(|(_, s)| s)
    }

    /// Whether `action` is one of the app's actions.
    pub fn contains(&self, action: &str) -> bool {
        self.get(action).is_some()
    }

    /// How many actions there are.
    pub fn len(&self) -> usize {
        self.actions.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

/// The action names of an `action-schema.json` text in the author's order; empty when
/// it is not a JSON object (what the marketplace shows for a document that is not one).
pub fn action_order(text: &str) -> Vec<String> {
    ActionSchema::from_json(text.as_bytes())
        .map(|s| s.actions())
        .unwrap_or_default()
}

impl<'de> Deserialize<'de> for ActionSchema {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ActionSchema, D::Error> {
        struct InOrder;
        impl<'de> Visitor<'de> for InOrder {
            type Value = ActionSchema;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ActionSchema, A::Error> {
                let mut actions: Vec<(String, Value)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value: Value = map.next_value()?;
                    match actions.iter_mut().find(|(k, _)| *k == key) {
                        Some(slot) => slot.1 = value,
                        None => actions.push((key, value)),
                    }
                }
                Ok(ActionSchema { actions })
            }
        }
        d.deserialize_map(InOrder)
    }
}

impl Serialize for ActionSchema {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.actions.iter().map(|(k, v)| (k, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_order_is_the_authors() {
        assert_eq!(
            action_order(r#"{"write": {"type": "object"}, "outline": {}, "a": []}"#),
            ["write", "outline", "a"]
        );
        assert!(action_order("[1, 2]").is_empty());
        assert!(action_order("not json").is_empty());
    }

    #[test]
    fn schemas_are_found_by_action_and_a_repeated_key_keeps_its_place() {
        let s = ActionSchema::from_json(
            br#"{"write": {"type": "object"}, "echo": {}, "write": {"type": "string"}}"#,
        )
        .unwrap();
        assert_eq!(s.actions(), ["write", "echo"]);
        assert_eq!(s.sorted_actions(), ["echo", "write"]);
        assert_eq!(s.get("write").unwrap()["type"], "string");
        assert!(s.contains("echo") && !s.contains("nope") && s.len() == 2);
        assert!(ActionSchema::from_json(b"[]").is_err());
        assert!(ActionSchema::from_value(&serde_json::json!(1)).is_err());
        let round: ActionSchema =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(round, s);
    }
}
