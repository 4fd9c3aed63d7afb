//! The JSON files of a bundle and the ids that come from the wire
//! (miniapp/src/manifest.rs, permissions.rs, id.rs): `manifest.json`, `permissions.json`
//! and app ids. Parsing must not panic; what parses must be valid by the same rule
//! everywhere and survive a write and re-read unchanged.

#![no_main]

use aisa_miniapp::manifest::is_valid_id;
use aisa_miniapp::{AppId, Manifest, Permissions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = Manifest::from_json(data) {
        assert!(is_valid_id(&manifest.id));
        assert!(AppId::parse(&manifest.id).is_ok());
        let again = Manifest::from_json(manifest.to_json_pretty().as_bytes())
            .expect("a written manifest parses");
        assert_eq!(again, manifest);
    }
    if let Ok(permissions) = Permissions::from_json(data) {
        assert!(permissions.validate().is_ok());
        let written = serde_json::to_vec(&permissions).expect("serializable");
        assert_eq!(
            Permissions::from_json(&written).expect("written permissions parse"),
            permissions
        );
        let _ = permissions.describe();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let id = AppId::parse(text);
        assert_eq!(
            id.is_ok(),
            is_valid_id(text),
            "two id rules disagree on {text:?}"
        );
        if let Ok(id) = id {
            assert_eq!(id.as_str(), text);
            assert!(!text.contains(['/', '\\', '.', '\0']));
            assert_eq!(AppId::parse(&id.to_string()).ok(), Some(id));
        }
    }
});
