//! App ids: the one check every id passes before it names a folder.
//!
//! An app id arrives from many places: the wire (EXECUTE_ACTION, INSTALL_APP,
//! UNINSTALL_APP), a bundle's manifest, the marketplace, the command line. Each of them
//! turns the text into an [`AppId`] with [`AppId::parse`] at the edge; code that builds a
//! path takes an `&AppId`, never a `&str`, so a path can only be made from an id that
//! passed. A valid id is 1 to [`MAX_ID_LEN`] bytes of `[a-z0-9-]` that does not start with
//! `-`: it can never be absolute, contain a separator, `.` or `..`, a NUL byte, or differ
//! between file systems that fold case.
//!
//! What it does not do: say whether the app exists (the caller looks it up).

use std::fmt;

/// The longest app id, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// A validated app id. See the module documentation for the rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppId(String);

/// Why a text is not an app id. The messages quote at most the first 64 characters of
/// the text, escaped, so an id of a megabyte or with control characters stays readable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppIdError {
    /// Nothing was given.
    #[error("the app id is empty")]
    Empty,
    /// Longer than [`MAX_ID_LEN`].
    #[error("the app id is {len} bytes long; the limit is {MAX_ID_LEN}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A byte outside `[a-z0-9-]`, or a leading `-`.
    #[error("app id {shown}: {reason}; use 1 to {MAX_ID_LEN} lowercase letters, digits and dashes")]
    Invalid {
        /// The id, escaped and cut to 64 characters.
        shown: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl AppId {
    /// Checks `text` against the id rule.
    pub fn parse(text: &str) -> Result<AppId, AppIdError> {
        if text.is_empty() {
            return Err(AppIdError::Empty);
        }
        if text.len() > MAX_ID_LEN {
            return Err(AppIdError::TooLong { len: text.len() });
        }
        let invalid = |reason: String| AppIdError::Invalid {
            shown: shown(text),
            reason,
        };
        if text.starts_with('-') {
            return Err(invalid("it starts with a dash".into()));
        }
        if let Some(c) = text
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            let what = match c {
                '\0' => "a NUL byte".to_owned(),
                '/' | '\\' => format!("a path separator {c:?}"),
                '.' => "a dot".to_owned(),
                c if c.is_ascii_uppercase() => format!("an uppercase letter {c:?}"),
                c => format!("the character {:?}", c),
            };
            return Err(invalid(format!("it contains {what}")));
        }
        Ok(AppId(text.to_owned()))
    }

    /// The id as text (safe as one path component).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `text` is a valid app id.
pub fn is_valid(text: &str) -> bool {
    AppId::parse(text).is_ok()
}

fn shown(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(64)
        .collect::<String>()
        .escape_debug()
        .collect();
    out = format!("\"{out}\"");
    if text.chars().count() > 64 {
        out.push('…');
    }
    out
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for AppId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for AppId {
    type Err = AppIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AppId::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_ids_pass() {
        for id in ["a", "hello-ai", "x9", &"a".repeat(MAX_ID_LEN)] {
            assert_eq!(AppId::parse(id).unwrap().as_str(), id);
        }
    }

    #[test]
    fn ids_that_could_name_another_folder_are_refused() {
        for id in [
            "..", ".", "../x", "/etc", "/", "a/b", "a\\b", "C:", "-rf", "a\0b", "Hello", "é", " a",
            "a.b",
        ] {
            let err = AppId::parse(id).unwrap_err();
            assert!(matches!(err, AppIdError::Invalid { .. }), "{id:?}: {err:?}");
        }
        assert_eq!(AppId::parse(""), Err(AppIdError::Empty));
        assert_eq!(
            AppId::parse(&"a".repeat(65)),
            Err(AppIdError::TooLong { len: 65 })
        );
    }

    #[test]
    fn messages_name_the_problem_and_stay_short() {
        let nul = AppId::parse("ab\0cd").unwrap_err().to_string();
        assert!(nul.contains("NUL byte") && nul.contains("\\0"), "{nul}");
        let sep = AppId::parse("../../home").unwrap_err().to_string();
        assert!(sep.contains("a dot"), "{sep}");
        let long = AppId::parse(&"x".repeat(100_000)).unwrap_err().to_string();
        assert!(long.len() < 120, "{long}");
        let bad_long = AppId::parse(&format!("{}/", "x".repeat(60)))
            .unwrap_err()
            .to_string();
        assert!(bad_long.contains("path separator"), "{bad_long}");
    }
}
