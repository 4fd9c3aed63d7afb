//! Environment variables that were renamed: the new name wins, the old one still works
//! and says once, on stderr, which name replaces it.

use std::ffi::OsString;

/// The node's home folder: `--home`, else `AISA_NODE_HOME` (both read by clap).
pub const HOME_VAR: &str = "AISA_NODE_HOME";
/// The name `AISA_NODE_HOME` had before (still read, with a warning).
pub const OLD_HOME_VAR: &str = "DESKTOP_NODE_HOME";

/// The value of the variable `new`, else of `old` with a one-line deprecation warning
/// on stderr naming `new`.
pub fn renamed_var(new: &str, old: &str) -> Option<OsString> {
    let (value, warning) = pick(new, std::env::var_os(new), old, std::env::var_os(old));
    if let Some(warning) = warning {
        eprintln!("{warning}");
    }
    value
}

/// The choice [`renamed_var`] makes, without the environment: the value to use and the
/// warning to print, if any. An empty value counts as unset.
fn pick(
    new: &str,
    new_value: Option<OsString>,
    old: &str,
    old_value: Option<OsString>,
) -> (Option<OsString>, Option<String>) {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty());
    match (set(new_value), set(old_value)) {
        (Some(value), _) => (Some(value), None),
        (None, Some(value)) => (
            Some(value),
            Some(format!("warning: {old} is deprecated; set {new} instead")),
        ),
        (None, None) => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_name_still_works_and_warns_naming_the_new_one() {
        let (value, warning) = pick(
            HOME_VAR,
            None,
            OLD_HOME_VAR,
            Some(OsString::from("/srv/node")),
        );
        assert_eq!(value, Some(OsString::from("/srv/node")));
        let warning = warning.expect("a deprecation warning");
        assert!(warning.contains("DESKTOP_NODE_HOME"), "{warning}");
        assert!(warning.contains("AISA_NODE_HOME"), "{warning}");
        assert_eq!(warning.lines().count(), 1);
    }

    #[test]
    fn the_new_name_wins_silently() {
        let (value, warning) = pick(
            HOME_VAR,
            Some(OsString::from("/new")),
            OLD_HOME_VAR,
            Some(OsString::from("/old")),
        );
        assert_eq!(value, Some(OsString::from("/new")));
        assert_eq!(warning, None);
        assert_eq!(pick(HOME_VAR, None, OLD_HOME_VAR, None), (None, None));
        assert_eq!(
            pick(HOME_VAR, None, OLD_HOME_VAR, Some(OsString::new())),
            (None, None)
        );
    }
}
