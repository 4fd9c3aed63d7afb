//! App ids (`aisa_abi::id`, re-exported): the rule lives in the guest contract crate `aisa-abi`.

pub use aisa_abi::id::*;
