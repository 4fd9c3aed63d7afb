//! `aisa_abi`: the guest contract of AI SuperApp mini-apps, in one place.
//!
//! Everything a mini-app and the desktop node agree on is defined here, once, and every
//! party reads it from here: the bundle checker (`aisa-miniapp`), the desktop node's
//! sandbox and host API, the Rust guest SDK (`sdk/rust`), the JavaScript runtime guest
//! (`runtimes/js`) and the relay's marketplace. `docs/guest-abi.md` and
//! `docs/miniapp-format.md` describe the contract for people; this crate is its source.
//!
//! | module | what it fixes |
//! | --- | --- |
//! | [`imports`] | the import module `aisapp_v1`, every import's name and wasm signature (one list that makes both the checker's and linker's table [`IMPORTS`] and the guests' `extern` block, [`guest_imports!`]), the capability→permission map, the exports the host calls |
//! | [`request`] | the action input `{"action", "payload"}`, the `ai_generate` request, `log` levels |
//! | [`answer`] | capability answers `{"ok"}` / `{"error": {"code", "message"}}`, the error codes, the request and answer size caps |
//! | [`manifest`] | the one `Manifest` type (`manifest.json`) and its validation |
//! | [`id`] | the app id rule ([`AppId`]) |
//! | [`permissions`] | `permissions.json` ([`Permissions`]) |
//! | [`action_schema`] | `action-schema.json` read one way, in the author's order ([`ActionSchema`]) |
//! | [`limits`] | the bundle size and count limits |
//!
//! It is small on purpose (serde, serde_json, semver, thiserror): the wasm guests link
//! it. What it does not do: check wasm bytes (`aisa-miniapp`), run guests (the desktop
//! node), or validate JSON Schemas (the checker and the node do, with `jsonschema`).

pub mod action_schema;
pub mod answer;
pub mod id;
pub mod imports;
pub mod limits;
pub mod manifest;
pub mod permissions;
pub mod request;

pub use action_schema::{ActionSchema, ActionSchemaError};
pub use answer::{ErrorCode, HostError};
pub use id::{AppId, AppIdError};
pub use imports::{Capability, IMPORTS, Import, MODULE, Permission, ValType, import};
pub use manifest::{Author, EntryKind, Manifest, ManifestError};
pub use permissions::{FilesystemPermissions, Permissions, PermissionsError};
pub use request::{ActionInput, AiRequest, LogLevel};
