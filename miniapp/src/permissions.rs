//! `permissions.json` (`aisa_abi::permissions`, re-exported): the rule lives in the guest contract crate `aisa-abi`.

pub use aisa_abi::permissions::*;
