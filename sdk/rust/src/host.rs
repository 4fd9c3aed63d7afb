//! The `aisapp_v1` imports, declared from the guest contract's one list
//! (`aisa_abi::guest_imports!`), so the SDK imports exactly the names and signatures the
//! node's checker and linker use. Only the functions an app calls end up in its module.

aisa_abi::guest_imports!();
