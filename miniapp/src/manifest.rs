//! `manifest.json` (`aisa_abi::manifest`, re-exported): the rule lives in the guest contract crate `aisa-abi`.

pub use aisa_abi::manifest::*;
