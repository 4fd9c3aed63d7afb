//! Which desktop nodes this relay accepts (`docs/compatibility.md`).
//!
//! Two checks at HELLO, both answered with ERROR `unsupported_version` (permanent: the
//! node stops) and a message that says what to do:
//!
//! - the **protocol**: tunnel refuses a HELLO of another major version before this
//!   module sees it; [`protocol_refusal`] words that refusal for people (a node older
//!   than the relay is told to run `desktop-node update`; one newer than the relay is
//!   told that the relay must be updated);
//! - the **node's version**: [`CompatConfig::min_node_version`] (`[compat]` in the relay's
//!   configuration, [`DEFAULT_MIN_NODE_VERSION`] when unset) refuses nodes older than the
//!   operator allows ([`check_node_version`]).
//!
//! What is not here: the node's own check of the relay (its protocol range, in
//! `aisa_node::compat`), and the version negotiation itself (`aisa_tunnel::Version`).

use serde::Deserialize;

/// The oldest desktop node this relay build accepts when `[compat] min_node_version` is
/// not set: the first release, since every node released so far speaks protocol 1.
pub const DEFAULT_MIN_NODE_VERSION: &str = "0.1.0";

/// The oldest protocol version this relay accepts from desktops: 1.0 (tunnel refuses any
/// other major; every 1.x minor is served at the lower of the two minors).
pub const MIN_NODE_PROTOCOL: aisa_tunnel::Version = aisa_tunnel::Version { major: 1, minor: 0 };

/// `[compat]`: which desktop nodes this relay accepts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompatConfig {
    /// The oldest desktop-node version accepted (semantic versioning, e.g. `"0.3.0"`);
    /// older nodes are refused at HELLO with `unsupported_version` and told to run
    /// `desktop-node update`. Raise it when a node version must no longer connect (a
    /// security fix, a removed feature). Default: [`DEFAULT_MIN_NODE_VERSION`].
    pub min_node_version: Option<String>,
}

/// [`DEFAULT_MIN_NODE_VERSION`] as a version.
pub fn default_minimum() -> semver::Version {
    semver::Version::new(0, 1, 0)
}

/// A `min_node_version` that is not a semantic version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[compat] min_node_version {0:?} is not a version like \"0.3.0\"")]
pub struct BadMinimum(pub String);

impl CompatConfig {
    /// The minimum in force: the configured one, else [`DEFAULT_MIN_NODE_VERSION`].
    pub fn minimum(&self) -> Result<semver::Version, BadMinimum> {
        let text = self
            .min_node_version
            .as_deref()
            .unwrap_or(DEFAULT_MIN_NODE_VERSION);
        semver::Version::parse(text.trim()).map_err(|_| BadMinimum(text.to_owned()))
    }
}

/// The version in a HELLO's `node_version`: its first word as a semantic version
/// (`"0.2.1"`, `"0.2.1 (linux)"`). `None` when it is none (a tool or a development build
/// naming itself): such nodes are not compared, since they claim no release.
pub fn node_semver(node_version: &str) -> Option<semver::Version> {
    let word = node_version.split_whitespace().next()?;
    semver::Version::parse(word.strip_prefix('v').unwrap_or(word)).ok()
}

/// Refuses a node older than `minimum`, with the message the node shows its person.
pub fn check_node_version(node_version: &str, minimum: &semver::Version) -> Result<(), String> {
    let Some(version) = node_semver(node_version) else {
        return Ok(());
    };
    // Pre-releases of the minimum count as older than it (semver order), as they should.
    if &version >= minimum {
        return Ok(());
    }
    Err(format!(
        "desktop-node {version} is too old for this relay, which accepts {minimum} or newer: \
         update it with `desktop-node update` (or install the latest release), then start it again"
    ))
}

/// The words for a HELLO of another protocol major (`peer`): who has to update.
pub fn protocol_refusal(peer: aisa_tunnel::Version) -> String {
    let ours = aisa_tunnel::Version::CURRENT;
    if peer.major < MIN_NODE_PROTOCOL.major {
        format!(
            "desktop-node speaks protocol {peer}, older than this relay accepts \
             ({MIN_NODE_PROTOCOL} to {ours}): update it with `desktop-node update`"
        )
    } else {
        format!(
            "desktop-node speaks protocol {peer}, newer than this relay ({MIN_NODE_PROTOCOL} \
             to {ours}): the relay's operator must update the relay, or use a desktop-node \
             release for protocol {}",
            ours.major
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn min(text: &str) -> semver::Version {
        semver::Version::parse(text).unwrap()
    }

    #[test]
    fn older_nodes_are_refused_with_the_update_command() {
        let err = check_node_version("0.1.0", &min("0.2.0")).unwrap_err();
        assert!(err.contains("desktop-node 0.1.0 is too old"), "{err}");
        assert!(err.contains("0.2.0 or newer"), "{err}");
        assert!(err.contains("`desktop-node update`"), "{err}");
        // A pre-release of the minimum is older than it.
        assert!(check_node_version("0.2.0-rc.1", &min("0.2.0")).is_err());
        assert!(check_node_version("0.1.9 (linux)", &min("0.2.0")).is_err());
    }

    #[test]
    fn the_minimum_and_newer_pass_and_unversioned_names_are_not_compared() {
        for ok in ["0.2.0", "0.2.1", "1.0.0", "v0.3.0", "0.2.0 (windows)"] {
            assert_eq!(check_node_version(ok, &min("0.2.0")), Ok(()), "{ok}");
        }
        for name in ["bench", "stall", "dev build"] {
            assert_eq!(check_node_version(name, &min("9.0.0")), Ok(()), "{name}");
        }
    }

    #[test]
    fn the_default_minimum_accepts_every_release_so_far() {
        let cfg = CompatConfig::default();
        assert_eq!(cfg.minimum().unwrap(), min(DEFAULT_MIN_NODE_VERSION));
        assert_eq!(default_minimum(), min(DEFAULT_MIN_NODE_VERSION));
        assert_eq!(
            check_node_version(env!("CARGO_PKG_VERSION"), &cfg.minimum().unwrap()),
            Ok(())
        );
        let bad = CompatConfig {
            min_node_version: Some("soon".into()),
        };
        assert_eq!(bad.minimum(), Err(BadMinimum("soon".into())));
    }

    #[test]
    fn protocol_refusals_say_who_updates() {
        let old = protocol_refusal(aisa_tunnel::Version { major: 0, minor: 9 });
        assert!(old.contains("older than this relay") && old.contains("desktop-node update"));
        let new = protocol_refusal(aisa_tunnel::Version { major: 2, minor: 0 });
        assert!(new.contains("newer than this relay") && new.contains("operator"));
        assert!(!new.contains("desktop-node update"), "{new}");
    }
}
