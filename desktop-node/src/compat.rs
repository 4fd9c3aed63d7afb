//! Which relays this node can use (`docs/compatibility.md`).
//!
//! The relay's WELCOME carries its protocol version; the node works with relays from
//! [`MIN_RELAY_PROTOCOL`] up to any minor of its own major ([`check_relay`]). Outside
//! that range it stops, as for any permanent refusal, with a message that says who has
//! to update. A relay that refuses the node (`unsupported_version`: too old for the
//! relay's `[compat] min_node_version`, or another protocol) already says what to do;
//! [`explain_refusal`] adds the update command when an older relay did not.
//!
//! What is not here: the relay's own checks (`aisa_relay::compat`).

use aisa_tunnel::Version;

/// The oldest relay protocol this node works with.
pub const MIN_RELAY_PROTOCOL: Version = Version { major: 1, minor: 0 };

/// This build's version, as HELLO announces it.
pub const NODE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Accepts a relay that WELCOMEd with protocol `relay`, or says why not and what to do.
pub fn check_relay(relay: Version) -> Result<(), String> {
    let ours = Version::CURRENT;
    let range = format!("{MIN_RELAY_PROTOCOL} to {}.x", ours.major);
    if relay.major > ours.major {
        return Err(format!(
            "the relay speaks protocol {relay}, newer than this desktop-node {NODE_VERSION} \
             (protocol {ours}; it works with relays of protocol {range}): update it with \
             `desktop-node update`, then start it again"
        ));
    }
    if (relay.major, relay.minor) < (MIN_RELAY_PROTOCOL.major, MIN_RELAY_PROTOCOL.minor) {
        return Err(format!(
            "the relay speaks protocol {relay}, older than this desktop-node {NODE_VERSION} \
             works with ({range}): ask the relay's operator to update the relay, or install \
             an older desktop-node release"
        ));
    }
    Ok(())
}

/// The message to show for a relay's permanent refusal `code`: `message` itself, plus the
/// update command for an `unsupported_version` from a relay that did not name a remedy.
pub fn explain_refusal(code: &str, message: &str) -> String {
    if code == "unsupported_version"
        && !message.contains("desktop-node update")
        && !message.contains("operator")
    {
        return format!(
            "{message} (this desktop-node {NODE_VERSION} speaks protocol {}: run \
             `desktop-node update` to get a release that matches the relay; if it is already \
             the newest, the relay is older and its operator must update it)",
            Version::CURRENT
        );
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays_in_the_range_are_used() {
        for minor in [0, 1, 7] {
            assert_eq!(check_relay(Version { major: 1, minor }), Ok(()));
        }
    }

    #[test]
    fn newer_relays_ask_for_an_update_and_older_ones_for_the_operator() {
        let newer = check_relay(Version { major: 2, minor: 0 }).unwrap_err();
        assert!(newer.contains("protocol 2.0, newer"), "{newer}");
        assert!(newer.contains("`desktop-node update`"), "{newer}");
        let older = check_relay(Version { major: 0, minor: 9 }).unwrap_err();
        assert!(older.contains("protocol 0.9, older"), "{older}");
        assert!(older.contains("operator"), "{older}");
        assert!(!older.contains("desktop-node update"), "{older}");
    }

    #[test]
    fn refusals_without_a_remedy_get_one() {
        let old_relay = "unsupported protocol version 2.0; this side speaks 1.x";
        let text = explain_refusal("unsupported_version", old_relay);
        assert!(text.starts_with(old_relay) && text.contains("`desktop-node update`"));
        let new_relay = "desktop-node 0.1.0 is too old for this relay, which accepts 0.2.0 or \
                         newer: update it with `desktop-node update`";
        assert_eq!(explain_refusal("unsupported_version", new_relay), new_relay);
        assert_eq!(explain_refusal("unauthenticated", "x"), "x");
    }
}
