//! Every setting from the environment: `AISA_RELAY_<KEY>` for a top-level key and
//! `AISA_RELAY_<SECTION>_<KEY>` for a key of a `[section]` (upper case, as in
//! `AISA_RELAY_BUNDLES_ALLOW_HTTP=true`), for containers that configure through the
//! environment alone.
//!
//! Nothing here lists the keys: the schema is read from the configuration types'
//! `Deserialize` implementations ([`schema`]), so a key or section added to
//! [`RelayConfig`](super::RelayConfig) is settable from the environment at once. A
//! variable's value is read as the key's type asks: text as it is, numbers and `true` /
//! `false` parsed, lists either as a TOML array (`["a", "b"]`) or comma-separated
//! (`a,b`). Variables override the file; command-line flags override both.

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, Visitor};

/// The prefix of every relay variable.
pub const PREFIX: &str = "AISA_RELAY_";

/// Variables with the prefix that are not settings: the configuration file's path (read
/// by the binary before the file) and the author CLI's relay URL (`aisapp`), which may be
/// set in the same shell.
pub const NOT_SETTINGS: [&str; 2] = ["AISA_RELAY_CONFIG", "AISA_RELAY_URL"];

/// What a key holds, as its type asked the deserializer for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text (strings, paths, socket addresses, enum variants).
    Text,
    /// `true` or `false`.
    Bool,
    /// An integer.
    Integer,
    /// A floating-point number.
    Float,
    /// A list.
    List,
    /// Anything else (read as a TOML value, else as text).
    Other,
}

/// The keys of a configuration type: leaves with their kind, and sections with theirs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Schema {
    /// Key → what it holds.
    pub keys: BTreeMap<&'static str, Node>,
}

/// One key of a [`Schema`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A setting.
    Leaf(Kind),
    /// A `[section]` with its own keys.
    Section(Schema),
}

/// The schema of `T` (a struct deriving `Deserialize`, its sections structs too), read by
/// asking its `Deserialize` implementation for one field at a time.
pub fn schema<T: for<'de> Deserialize<'de>>() -> Schema {
    schema_at::<T>(&mut Vec::new())
}

fn schema_at<T: for<'de> Deserialize<'de>>(path: &mut Vec<&'static str>) -> Schema {
    let Found::Struct(fields) = probe::<T>(path) else {
        return Schema::default();
    };
    let mut keys = BTreeMap::new();
    for &field in fields {
        path.push(field);
        let node = match probe::<T>(path) {
            Found::Struct(_) => Node::Section(schema_at::<T>(path)),
            Found::Leaf(kind) => Node::Leaf(kind),
            Found::Nothing => Node::Leaf(Kind::Other),
        };
        path.pop();
        keys.insert(field, node);
    }
    Schema { keys }
}

/// What the value at a path turned out to be.
#[derive(Debug, Clone, Copy)]
enum Found {
    Nothing,
    Struct(&'static [&'static str]),
    Leaf(Kind),
}

fn probe<T: for<'de> Deserialize<'de>>(path: &[&'static str]) -> Found {
    let found = RefCell::new(Found::Nothing);
    // The probe always ends in an error (it has no values to give): what it recorded
    // on the way is the answer.
    let _ = T::deserialize(Probe {
        path,
        found: &found,
    });
    found.into_inner()
}

/// A deserializer that walks `path` through nested structs, then records what the type
/// at its end asked for, and stops with an error.
struct Probe<'a> {
    path: &'a [&'static str],
    found: &'a RefCell<Found>,
}

#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("schema probe")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<M: std::fmt::Display>(_msg: M) -> Self {
        Stop
    }
}

impl Probe<'_> {
    fn leaf<V>(self, kind: Kind) -> Result<V, Stop> {
        *self.found.borrow_mut() = Found::Leaf(kind);
        Err(Stop)
    }
}

macro_rules! leaf {
    ($($method:ident => $kind:expr),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Stop> {
            self.leaf($kind)
        })*
    };
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = Stop;

    leaf! {
        deserialize_any => Kind::Other,
        deserialize_bool => Kind::Bool,
        deserialize_i8 => Kind::Integer,
        deserialize_i16 => Kind::Integer,
        deserialize_i32 => Kind::Integer,
        deserialize_i64 => Kind::Integer,
        deserialize_i128 => Kind::Integer,
        deserialize_u8 => Kind::Integer,
        deserialize_u16 => Kind::Integer,
        deserialize_u32 => Kind::Integer,
        deserialize_u64 => Kind::Integer,
        deserialize_u128 => Kind::Integer,
        deserialize_f32 => Kind::Float,
        deserialize_f64 => Kind::Float,
        deserialize_char => Kind::Text,
        deserialize_str => Kind::Text,
        deserialize_string => Kind::Text,
        deserialize_bytes => Kind::Other,
        deserialize_byte_buf => Kind::Other,
        deserialize_unit => Kind::Other,
        deserialize_seq => Kind::List,
        deserialize_map => Kind::Other,
        deserialize_identifier => Kind::Text,
        deserialize_ignored_any => Kind::Other,
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        self.leaf(Kind::Other)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        self.leaf(Kind::List)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        self.leaf(Kind::List)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        self.leaf(Kind::Text)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        match self.path.split_first() {
            None => {
                *self.found.borrow_mut() = Found::Struct(fields);
                Err(Stop)
            }
            Some((first, rest)) if fields.contains(first) => visitor.visit_map(OneField {
                key: Some(first),
                value: Probe {
                    path: rest,
                    found: self.found,
                },
            }),
            Some(_) => Err(Stop),
        }
    }
}

/// A map of one key whose value is the probe for the rest of the path.
struct OneField<'a> {
    key: Option<&'static str>,
    value: Probe<'a>,
}

impl<'de, 'a> MapAccess<'de> for OneField<'a> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        match self.key.take() {
            Some(key) => seed
                .deserialize(de::value::BorrowedStrDeserializer::<Stop>::new(key))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
        seed.deserialize(Probe {
            path: self.value.path,
            found: self.value.found,
        })
    }
}

/// Why the environment could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// A value does not parse as its key's type.
    #[error("{var}: {message}")]
    Value {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
}

/// What [`apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The variables used, with the key each set (`bundles.allow_http`).
    pub used: Vec<(String, String)>,
    /// Variables with the prefix that name no setting (a typo, or another program's).
    pub unknown: Vec<String>,
}

/// Sets, in `table` (the configuration file's contents), every key that a variable of
/// `vars` names, per `schema`. Variables without the prefix are ignored; ones with the
/// prefix that name no key are reported in [`Applied::unknown`].
pub fn apply(
    schema: &Schema,
    table: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Applied, EnvError> {
    let mut applied = Applied::default();
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(name, _)| name.starts_with(PREFIX) && !NOT_SETTINGS.contains(&name.as_str()))
        .collect();
    vars.sort();
    for (var, raw) in vars {
        let name = var[PREFIX.len()..].to_ascii_lowercase();
        let Some((path, kind)) = resolve(schema, &name) else {
            applied.unknown.push(var);
            continue;
        };
        let value = parse(kind, &raw).map_err(|message| EnvError::Value {
            var: var.clone(),
            message,
        })?;
        let mut at = &mut *table;
        for section in &path[..path.len() - 1] {
            let entry = at
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                return Err(EnvError::Value {
                    var,
                    message: format!("the file sets `{section}` to a value, not a section"),
                });
            }
            at = entry.as_table_mut().expect("checked to be a table");
        }
        at.insert(path[path.len() - 1].to_string(), value);
        applied.used.push((var, path.join(".")));
    }
    Ok(applied)
}

/// The key a lower-case variable name (without the prefix) names: a top-level key, or a
/// section's name, `_`, and a key of that section (recursively).
pub fn resolve(schema: &Schema, name: &str) -> Option<(Vec<&'static str>, Kind)> {
    for (&key, node) in &schema.keys {
        match node {
            Node::Leaf(kind) if name == key => return Some((vec![key], *kind)),
            Node::Section(inner) => {
                if let Some(rest) = name
                    .strip_prefix(key)
                    .and_then(|rest| rest.strip_prefix('_'))
                    && let Some((mut path, kind)) = resolve(inner, rest)
                {
                    path.insert(0, key);
                    return Some((path, kind));
                }
            }
            Node::Leaf(_) => {}
        }
    }
    None
}

/// Pairs of keys that one variable name could mean (a top-level `a_b` and a section `a`
/// with a key `b`): the configuration must have none, or a variable would be ambiguous.
pub fn ambiguities(schema: &Schema) -> Vec<(String, String)> {
    fn names(schema: &Schema, prefix: &str, out: &mut Vec<String>) {
        for (key, node) in &schema.keys {
            let name = format!("{prefix}{key}");
            match node {
                Node::Leaf(_) => out.push(name),
                Node::Section(inner) => names(inner, &format!("{name}_"), out),
            }
        }
    }
    fn paths(schema: &Schema, prefix: &str, out: &mut Vec<String>) {
        for (key, node) in &schema.keys {
            let name = format!("{prefix}{key}");
            match node {
                Node::Leaf(_) => out.push(name),
                Node::Section(inner) => paths(inner, &format!("{name}."), out),
            }
        }
    }
    let mut flat = Vec::new();
    names(schema, "", &mut flat);
    let mut dotted = Vec::new();
    paths(schema, "", &mut dotted);
    let mut clashes = Vec::new();
    for i in 0..flat.len() {
        for j in i + 1..flat.len() {
            if flat[i] == flat[j] {
                clashes.push((dotted[i].clone(), dotted[j].clone()));
            }
        }
    }
    clashes
}

/// The environment variable that sets a dotted key (`bundles.allow_http` →
/// `AISA_RELAY_BUNDLES_ALLOW_HTTP`).
pub fn var_name(key: &str) -> String {
    format!("{PREFIX}{}", key.replace('.', "_").to_ascii_uppercase())
}

fn parse(kind: Kind, raw: &str) -> Result<toml::Value, String> {
    let raw_trimmed = raw.trim();
    match kind {
        Kind::Text => Ok(toml::Value::String(raw.to_owned())),
        Kind::Bool => match raw_trimmed.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("{raw:?} is not true or false")),
        },
        Kind::Integer => raw_trimmed
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("{raw:?} is not an integer")),
        Kind::Float => raw_trimmed
            .parse::<f64>()
            .map(toml::Value::Float)
            .map_err(|_| format!("{raw:?} is not a number")),
        Kind::List if raw_trimmed.starts_with('[') => toml_value(raw_trimmed)
            .filter(toml::Value::is_array)
            .ok_or_else(|| format!("{raw:?} is not a TOML array")),
        Kind::List => Ok(toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| toml::Value::String(item.to_owned()))
                .collect(),
        )),
        Kind::Other => {
            Ok(toml_value(raw_trimmed).unwrap_or_else(|| toml::Value::String(raw.to_owned())))
        }
    }
}

fn toml_value(text: &str) -> Option<toml::Value> {
    let mut table: toml::Table = toml::from_str(&format!("v = {text}")).ok()?;
    table.remove("v")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BundleStoreKind, RelayConfig};

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_schema_is_read_from_the_types() {
        let schema = schema::<RelayConfig>();
        assert_eq!(
            schema.keys.get("heartbeat_secs"),
            Some(&Node::Leaf(Kind::Integer))
        );
        assert_eq!(
            schema.keys.get("allow_signup"),
            Some(&Node::Leaf(Kind::Bool))
        );
        assert_eq!(
            schema.keys.get("quic_listen"),
            Some(&Node::Leaf(Kind::Text))
        );
        assert_eq!(schema.keys.get("tls_cert"), Some(&Node::Leaf(Kind::Text)));
        assert_eq!(
            schema.keys.get("trusted_proxies"),
            Some(&Node::Leaf(Kind::List))
        );
        let Some(Node::Section(bundles)) = schema.keys.get("bundles") else {
            panic!("[bundles] is a section: {schema:?}");
        };
        assert_eq!(bundles.keys.get("store"), Some(&Node::Leaf(Kind::Text)));
        assert_eq!(
            bundles.keys.get("allow_http"),
            Some(&Node::Leaf(Kind::Bool))
        );
        assert!(matches!(schema.keys.get("signing"), Some(Node::Section(_))));
        assert!(matches!(
            schema.keys.get("database"),
            Some(Node::Section(_))
        ));
        assert!(matches!(schema.keys.get("log"), Some(Node::Section(_))));
    }

    #[test]
    fn every_setting_has_exactly_one_variable() {
        let schema = schema::<RelayConfig>();
        assert_eq!(
            ambiguities(&schema),
            Vec::<(String, String)>::new(),
            "two keys share one AISA_RELAY_* name"
        );
        // Every key, in every section, resolves back to itself from its variable name.
        fn each(schema: &Schema, prefix: &str, out: &mut Vec<String>) {
            for (key, node) in &schema.keys {
                match node {
                    Node::Leaf(_) => out.push(format!("{prefix}{key}")),
                    Node::Section(inner) => each(inner, &format!("{prefix}{key}."), out),
                }
            }
        }
        let mut keys = Vec::new();
        each(&schema, "", &mut keys);
        assert!(keys.len() > 30, "{keys:?}");
        for key in keys {
            let var = var_name(&key);
            let name = var[PREFIX.len()..].to_ascii_lowercase();
            let (path, _) = resolve(&schema, &name).unwrap_or_else(|| panic!("{var}"));
            assert_eq!(path.join("."), key, "{var}");
        }
    }

    #[test]
    fn variables_override_the_file_for_every_section() {
        let schema = schema::<RelayConfig>();
        let mut table: toml::Table =
            toml::from_str("heartbeat_secs = 5\n[bundles]\nbucket = \"from-file\"\n").unwrap();
        let applied = apply(
            &schema,
            &mut table,
            vars(&[
                ("AISA_RELAY_HEARTBEAT_SECS", "7"),
                ("AISA_RELAY_ALLOW_SIGNUP", "false"),
                ("AISA_RELAY_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.1"),
                ("AISA_RELAY_BUNDLES_STORE", "s3"),
                ("AISA_RELAY_BUNDLES_BUCKET", "apps"),
                ("AISA_RELAY_BUNDLES_ALLOW_HTTP", "true"),
                (
                    "AISA_RELAY_SIGNING_TRUSTED_PUBLIC_KEYS",
                    "[\"AAAA\", \"BBBB\"]",
                ),
                ("AISA_RELAY_NODE_NAME", "12345"),
                ("AISA_RELAY_PUBLIC_QUIC_ADDR", "relay.example.net:443"),
                ("AISA_RELAY_DATABASE_MAX_CONNECTIONS", "40"),
                ("AISA_RELAY_LOG_FORMAT", "json"),
                ("AISA_RELAY_CONFIG", "/etc/relay.toml"),
                ("AISA_RELAY_URL", "https://relay.example.net"),
                ("AISA_RELAY_BUNDLE_STORE", "s3"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(applied.unknown, vec!["AISA_RELAY_BUNDLE_STORE".to_owned()]);
        assert!(
            applied.used.contains(&(
                "AISA_RELAY_BUNDLES_ALLOW_HTTP".into(),
                "bundles.allow_http".into()
            )),
            "{applied:?}"
        );
        let cfg: RelayConfig = toml::Value::Table(table).try_into().unwrap();
        assert_eq!(cfg.heartbeat_secs, 7);
        assert!(!cfg.allow_signup);
        assert_eq!(cfg.trusted_proxies, ["10.0.0.0/8", "192.168.1.1"]);
        assert_eq!(cfg.bundles.store, BundleStoreKind::S3);
        assert_eq!(cfg.bundles.bucket.as_deref(), Some("apps"));
        assert!(cfg.bundles.allow_http);
        assert_eq!(cfg.signing.trusted_public_keys, ["AAAA", "BBBB"]);
        assert_eq!(
            cfg.node_name, "12345",
            "text stays text, even when it looks like a number"
        );
        assert_eq!(
            cfg.public_quic_addr.as_deref(),
            Some("relay.example.net:443")
        );
        assert_eq!(cfg.database.max_connections, 40);
        assert_eq!(cfg.log.format, crate::config::LogFormat::Json);
    }

    #[test]
    fn the_deploy_files_name_only_real_settings() {
        let schema = schema::<RelayConfig>();
        let files = [
            (
                "docker-compose.yml",
                include_str!("../../../deploy/compose/docker-compose.yml"),
            ),
            (
                "kubernetes/relay.yaml",
                include_str!("../../../deploy/kubernetes/relay.yaml"),
            ),
            (
                "relay-edge.service",
                include_str!("../../../deploy/relay-edge.service"),
            ),
            (
                "Dockerfile",
                include_str!("../../../deploy/container/Dockerfile"),
            ),
            (
                "deploy/README.md",
                include_str!("../../../deploy/README.md"),
            ),
        ];
        let mut checked = 0;
        for (file, text) in files {
            for (at, _) in text.match_indices(PREFIX) {
                let name: String = text[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if NOT_SETTINGS.contains(&name.as_str())
                    || name.ends_with('_')
                    || name == "AISA_RELAY_SECTION"
                {
                    continue;
                }
                let key = name[PREFIX.len()..].to_ascii_lowercase();
                assert!(
                    resolve(&schema, &key).is_some(),
                    "{file} names {name}, which is no setting"
                );
                checked += 1;
            }
        }
        assert!(checked > 30, "{checked}");
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let schema = schema::<RelayConfig>();
        let mut table = toml::Table::new();
        let err = apply(
            &schema,
            &mut table,
            vars(&[("AISA_RELAY_HEARTBEAT_SECS", "soon")]),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("AISA_RELAY_HEARTBEAT_SECS"),
            "{err}"
        );
        let err = apply(
            &schema,
            &mut table,
            vars(&[("AISA_RELAY_BUNDLES_ALLOW_HTTP", "maybe")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("true or false"), "{err}");
    }
}
