//! `aisa_miniapp`: the `.aisapp` mini-app package format of AI SuperApp.
//!
//! A bundle is a zip of a few flat files (`manifest.json`, `action-schema.json`,
//! `ui-schema.json`, `permissions.json`, the code, `signature.sig`); the format is
//! specified in `docs/miniapp-format.md`. This crate is what every party that touches a
//! bundle calls:
//!
//! * authors, through the `aisapp` binary (templates, checks, packing, signing);
//! * the relay's developer portal: [`Bundle::from_zip_bytes`] (limits enforced while
//!   reading), [`check::check`] (static checks), [`signature::sign`];
//! * the desktop node's installer: [`checksum::sha256_hex`], [`signature::verify`]
//!   against its [`signature::TrustedKeys`], [`upgrade::check_upgrade`], then
//!   [`extract::extract`] into a fresh folder.
//!
//! ```text
//! zip bytes ──Bundle::from_zip_bytes──▶ Bundle ──check──▶ CheckedApp
//!                                         │ ──sign(SecretKey)──▶ Bundle + signature.sig
//!                                         │ ──verify(TrustedKeys)──▶ VerifiedBundle ──extract──▶ folder
//! ```
//!
//! What it does not do: run code (the desktop node's sandbox does), download bundles, or
//! decide which keys to trust (the caller passes them).
//!
//! Modules: [`bundle`] (the zip, read with the format's limits, and written),
//! [`check`](mod@check) (the static checks before signing or installing), [`schemas`]
//! (the JSON Schemas of the bundle's JSON files), [`wasm`] (`logic.wasm` against the
//! guest contract), [`js`] (the scan of `bot-logic.js` and `tools.js` for forbidden
//! APIs), [`signature`] (Ed25519 keys, signing, verification), [`checksum`] (SHA-256 of
//! the zip), [`extract`] (a verified bundle into a fresh folder), [`upgrade`] (what an
//! installer checks before a new version), [`template`] (`aisapp new`), [`release`]
//! (signed release manifests of the desktop node itself, for its updates); [`id`],
//! [`manifest`] and [`permissions`] re-export the guest contract's types from `aisa-abi`.

#![forbid(unsafe_code)]

pub mod bundle;
pub mod check;
pub mod checksum;
pub mod extract;
pub mod id;
pub mod js;
pub mod manifest;
pub mod permissions;
pub mod release;
pub mod schemas;
pub mod signature;
pub mod template;
pub mod upgrade;
pub mod wasm;

pub use bundle::{Bundle, BundleError, Limits};
pub use check::{CheckError, CheckedApp, Problem, check};
pub use id::{AppId, AppIdError};
pub use manifest::{Author, EntryKind, Manifest, ManifestError};
pub use permissions::{FilesystemPermissions, Permissions};
pub use signature::{PublicKey, SecretKey, TrustedKeys, VerifiedBundle, VerifyError, sign, verify};
