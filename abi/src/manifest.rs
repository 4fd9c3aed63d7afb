//! `manifest.json`: who the app is, which version, which runtime it needs.

use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};

/// The categories the marketplace files apps under.
pub const CATEGORIES: &[&str] = &[
    "writing",
    "productivity",
    "data",
    "files",
    "research",
    "education",
    "developer",
    "media",
    "fun",
    "utilities",
    "other",
];

/// The longest app id.
pub const MAX_ID_LEN: usize = crate::id::MAX_ID_LEN;

/// How the app's code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// JavaScript (`bot-logic.js` + optional `tools.js`) on the QuickJS runtime guest.
    Js,
    /// A core wasm module (`logic.wasm`) speaking the `aisapp_v1` host ABI.
    Wasm,
}

impl EntryKind {
    /// `"js"` or `"wasm"`, as written in the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Js => "js",
            EntryKind::Wasm => "wasm",
        }
    }
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The app's author.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Author {
    /// A name for people.
    pub name: String,
    /// A contact address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// A validated `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    /// 1–64 of `[a-z0-9-]`, not starting with `-`.
    pub id: String,
    /// A name for people.
    pub name: String,
    /// The app's version.
    pub version: Version,
    /// One or two sentences for the marketplace.
    pub description: String,
    /// One of [`CATEGORIES`].
    pub category: String,
    /// Who wrote it.
    pub author: Author,
    /// How its code runs.
    pub entry: EntryKind,
    /// The desktop-node versions it runs on.
    pub runtime: VersionReq,
}

/// The manifest as written, before its strings are checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    id: String,
    name: String,
    version: String,
    description: String,
    category: String,
    author: Author,
    entry: EntryKind,
    runtime: String,
}

/// Why a manifest is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON, or a field is missing, unknown or of the wrong type.
    #[error("manifest.json is not valid: {0}")]
    Json(String),
    /// The id breaks the id rules.
    #[error(
        "manifest.json: id {0:?} is not valid (1-64 of a-z, 0-9 and '-', not starting with '-')"
    )]
    Id(String),
    /// The version is not semantic versioning.
    #[error("manifest.json: version {version:?} is not a semantic version like 1.2.0 ({reason})")]
    Version {
        /// What was written.
        version: String,
        /// What the parser said.
        reason: String,
    },
    /// The runtime range does not parse.
    #[error(
        "manifest.json: runtime {range:?} is not a version range like \">=0.1.0, <0.2.0\" ({reason})"
    )]
    Runtime {
        /// What was written.
        range: String,
        /// What the parser said.
        reason: String,
    },
    /// The category is not one of [`CATEGORIES`].
    #[error("manifest.json: category {0:?} is not one of {CATEGORIES:?}")]
    Category(String),
    /// A text field is empty or too long.
    #[error("manifest.json: {field} must have 1 to {max} characters")]
    Text {
        /// The field.
        field: &'static str,
        /// Its longest allowed length.
        max: usize,
    },
    /// The author's email is not an address.
    #[error("manifest.json: author.email {0:?} is not an email address")]
    Email(String),
}

/// Whether `id` is a valid app id ([`crate::id::AppId::parse`] is the one rule).
pub fn is_valid_id(id: &str) -> bool {
    crate::id::is_valid(id)
}

fn text(field: &'static str, value: &str, max: usize) -> Result<(), ManifestError> {
    let n = value.trim().chars().count();
    if n == 0 || value.chars().count() > max {
        return Err(ManifestError::Text { field, max });
    }
    Ok(())
}

impl Manifest {
    /// Parses and validates `manifest.json`.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let raw: RawManifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
        if !is_valid_id(&raw.id) {
            return Err(ManifestError::Id(raw.id));
        }
        let version = Version::parse(&raw.version).map_err(|e| ManifestError::Version {
            version: raw.version.clone(),
            reason: e.to_string(),
        })?;
        let runtime = VersionReq::parse(&raw.runtime).map_err(|e| ManifestError::Runtime {
            range: raw.runtime.clone(),
            reason: e.to_string(),
        })?;
        if !CATEGORIES.contains(&raw.category.as_str()) {
            return Err(ManifestError::Category(raw.category));
        }
        text("name", &raw.name, 64)?;
        text("description", &raw.description, 500)?;
        text("author.name", &raw.author.name, 100)?;
        if let Some(email) = &raw.author.email {
            let ok = email.len() <= 254
                && email
                    .split_once('@')
                    .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.contains('@'));
            if !ok {
                return Err(ManifestError::Email(email.clone()));
            }
        }
        Ok(Manifest {
            id: raw.id,
            name: raw.name,
            version,
            description: raw.description,
            category: raw.category,
            author: raw.author,
            entry: raw.entry,
            runtime,
        })
    }

    /// The manifest as pretty JSON (what `aisapp new` writes).
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Whether a desktop node of this version may run the app.
    pub fn runs_on(&self, node_version: &Version) -> bool {
        self.runtime.matches(node_version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(patch: impl FnOnce(&mut serde_json::Value)) -> Result<Manifest, ManifestError> {
        let mut v = serde_json::json!({
            "id": "seo-writer", "name": "SEO Writer", "version": "1.2.0",
            "description": "Writes.", "category": "writing",
            "author": {"name": "Ann", "email": "ann@example.com"},
            "entry": "js", "runtime": ">=0.1.0, <0.2.0"
        });
        patch(&mut v);
        Manifest::from_json(v.to_string().as_bytes())
    }

    #[test]
    fn a_good_manifest_parses_and_round_trips() {
        let m = manifest(|_| {}).unwrap();
        assert_eq!(m.version, Version::new(1, 2, 0));
        assert!(m.runs_on(&Version::new(0, 1, 5)));
        assert!(!m.runs_on(&Version::new(0, 2, 0)));
        assert_eq!(
            Manifest::from_json(m.to_json_pretty().as_bytes()).unwrap(),
            m
        );
    }

    #[test]
    fn each_bad_field_is_named() {
        type Patch = Box<dyn FnOnce(&mut serde_json::Value)>;
        let cases: Vec<(Patch, &str)> = vec![
            (Box::new(|v| v["id"] = "-x".into()), "id \"-x\""),
            (Box::new(|v| v["id"] = "Upper".into()), "id \"Upper\""),
            (
                Box::new(|v| v["id"] = "a".repeat(65).into()),
                "is not valid",
            ),
            (Box::new(|v| v["version"] = "1.2".into()), "version \"1.2\""),
            (
                Box::new(|v| v["runtime"] = "soon".into()),
                "runtime \"soon\"",
            ),
            (
                Box::new(|v| v["category"] = "games".into()),
                "category \"games\"",
            ),
            (Box::new(|v| v["name"] = " ".into()), "name must have"),
            (
                Box::new(|v| v["author"]["email"] = "x".into()),
                "author.email",
            ),
            (
                Box::new(|v| v["entry"] = "python".into()),
                "unknown variant",
            ),
            (Box::new(|v| v["extra"] = 1.into()), "unknown field `extra`"),
            (Box::new(|v| v["version"] = 1.into()), "invalid type"),
        ];
        for (patch, want) in cases {
            let err = manifest(patch).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
        assert!(is_valid_id("a-1") && is_valid_id("0") && !is_valid_id(""));
    }
}
