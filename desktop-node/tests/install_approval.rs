//! An install approval is bound to what the person was shown: the
//! bundle's SHA-256 and its permission set. A second request for the same id@version
//! never replaces the first, every waiting request is listed, and the installer installs
//! only the approved bytes with exactly the approved permissions.

#![allow(clippy::unwrap_used)] // test helpers: a failure is reported by its panic

use std::collections::BTreeMap;

use aisa_miniapp::{Bundle, SecretKey};
use aisa_node::config::Home;
use aisa_node::installer::Installer;
use aisa_node::installer::approvals::Decision;
use aisa_node::installer::market::PlatformKey;

/// The smallest valid wasm module.
const EMPTY_WASM: &[u8] = b"\0asm\x01\0\0\0";

/// A bundle of `id@version` asking for `permissions`, signed by `key`; `description`
/// makes bundles that are otherwise alike differ.
fn signed_bundle(
    key: &SecretKey,
    id: &str,
    version: &str,
    description: &str,
    permissions: serde_json::Value,
) -> Vec<u8> {
    let json = |v: serde_json::Value| serde_json::to_vec_pretty(&v).unwrap();
    let mut files = BTreeMap::new();
    files.insert(
        "manifest.json".to_owned(),
        json(serde_json::json!({
            "id": id, "name": "Approval Test", "version": version,
            "description": description,
            "category": "writing", "author": {"name": "Test Author"},
            "entry": "wasm", "runtime": ">=0.1.0, <0.2.0"
        })),
    );
    files.insert(
        "action-schema.json".to_owned(),
        json(serde_json::json!({"echo": {"type": "object"}})),
    );
    files.insert("ui-schema.json".to_owned(), json(serde_json::json!({})));
    files.insert("permissions.json".to_owned(), json(permissions));
    files.insert("logic.wasm".to_owned(), EMPTY_WASM.to_vec());
    let mut bundle = Bundle::from_files(files).unwrap();
    aisa_miniapp::sign(&mut bundle, key).unwrap();
    bundle.to_zip_bytes()
}

fn installer(home: &Home, key: &SecretKey) -> Installer {
    let public = key.public_key();
    let trusted = vec![PlatformKey {
        key_id: public.key_id(),
        public_key: public.to_base64(),
    }];
    Installer::new(home, None, trusted, None)
}

#[test]
fn a_second_request_for_the_same_version_does_not_replace_what_was_shown() {
    let tmp = tempfile::tempdir().unwrap();
    let home = Home::new(Some(tmp.path().to_owned()));
    let key = SecretKey::generate().unwrap();
    let installer = installer(&home, &key);

    // The person is shown a request for an app that only uses the model…
    let shown = signed_bundle(
        &key,
        "notes",
        "1.0.0",
        "harmless",
        serde_json::json!({"ai": true}),
    );
    let shown = installer.check(shown, "notes").unwrap();
    let shown_request = installer.request_approval(&shown).unwrap();
    assert_eq!(shown_request.sha256, shown.sha256);

    // …then a second INSTALL_APP arrives for the same id@version: another bundle that
    // asks for the network and the clipboard.
    let other = signed_bundle(
        &key,
        "notes",
        "1.0.0",
        "greedy",
        serde_json::json!({"ai": true, "network": ["evil.example"], "clipboard": true}),
    );
    let other = installer.check(other, "notes").unwrap();
    let other_request = installer.request_approval(&other).unwrap();
    assert_ne!(other_request.sha256, shown_request.sha256);

    // Both wait, each listed with its own hash; neither replaced the other.
    let listed = installer.approvals.list();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.contains(&shown_request) && listed.contains(&other_request));
    // "approve notes" is ambiguous now: the person has to name the one they saw.
    let err = installer
        .approvals
        .find("notes", Some("1.0.0"))
        .unwrap_err()
        .to_string();
    assert!(err.contains(shown_request.short_hash()), "{err}");
    assert!(err.contains(other_request.short_hash()), "{err}");

    // The same bundle requested again while it waits is refused, and changes nothing.
    let err = installer.request_approval(&shown).unwrap_err().to_string();
    assert!(err.contains("already waiting"), "{err}");
    assert_eq!(installer.approvals.list().len(), 2);

    // The person approves what they saw, by its hash.
    let approved = installer
        .approvals
        .select("notes", Some("1.0.0"), Some(shown_request.short_hash()))
        .unwrap();
    assert_eq!(approved, shown_request);
    installer
        .approvals
        .decide(&approved, Decision::Approve)
        .unwrap();
    assert_eq!(
        installer.approvals.decision(&shown_request),
        Some(Decision::Approve)
    );
    assert_eq!(installer.approvals.decision(&other_request), None);

    let installed = installer.install_pending(&approved).unwrap();
    assert_eq!(installed.sha256, shown.sha256);
    let record = installer
        .apps
        .record(
            &aisa_miniapp::AppId::parse("notes").unwrap(),
            &semver::Version::new(1, 0, 0),
        )
        .unwrap()
        .unwrap();
    assert_eq!(record.sha256, shown.sha256);
    assert!(record.approved.ai);
    assert!(record.approved.network.is_empty() && !record.approved.clipboard);
    installer.approvals.remove(&approved);
    // The other request is still there for the person to deny.
    assert_eq!(installer.approvals.list(), vec![other_request]);
}

#[test]
fn only_the_approved_bundle_is_installed_even_when_another_signed_one_takes_its_place() {
    let tmp = tempfile::tempdir().unwrap();
    let home = Home::new(Some(tmp.path().to_owned()));
    let key = SecretKey::generate().unwrap();
    let installer = installer(&home, &key);
    let permissions = serde_json::json!({"ai": true});
    let shown = signed_bundle(&key, "notes", "1.0.0", "shown", permissions.clone());
    let shown = installer.check(shown, "notes").unwrap();
    let request = installer.request_approval(&shown).unwrap();
    installer
        .approvals
        .decide(&request, Decision::Approve)
        .unwrap();

    // A validly signed bundle with the same id, version and permissions (so no
    // signature or permission check notices) takes the cached bundle's place.
    let swapped = signed_bundle(&key, "notes", "1.0.0", "swapped", permissions);
    std::fs::write(&request.bundle_path, &swapped).unwrap();
    let Err(err) = installer.install_pending(&request) else {
        panic!("a bundle that was not approved was installed");
    };
    let err = err.to_string();
    assert!(err.contains("is not the one approved"), "{err}");
    assert!(
        installer
            .apps
            .state(&aisa_miniapp::AppId::parse("notes").unwrap())
            .unwrap()
            .is_none()
    );

    // A bundle asking for fewer permissions than shown is not what was approved either.
    let fewer = signed_bundle(&key, "notes", "1.0.0", "shown", serde_json::json!({}));
    let fewer = installer.check(fewer, "notes").unwrap();
    let mut narrowed = installer.request_approval(&fewer).unwrap();
    narrowed.permissions.clipboard = true;
    let Err(err) = installer.install_pending(&narrowed) else {
        panic!("installed with permissions that were not shown");
    };
    assert!(err.to_string().contains("other permissions"), "{err}");
    assert!(
        installer
            .apps
            .state(&aisa_miniapp::AppId::parse("notes").unwrap())
            .unwrap()
            .is_none()
    );
}
