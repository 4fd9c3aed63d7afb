//! The static check of a bundle's `logic.wasm` (miniapp/src/wasm.rs) on arbitrary bytes.
//! It must not panic; a module is invalid or valid whatever the permissions; granting
//! every permission only removes "not permitted" problems, each about an import the
//! module really has.

#![no_main]

use std::sync::OnceLock;

use aisa_miniapp::Permissions;
use aisa_miniapp::wasm::{WasmProblem, check, host_imports};
use libfuzzer_sys::fuzz_target;

fn everything() -> &'static Permissions {
    static ALL: OnceLock<Permissions> = OnceLock::new();
    ALL.get_or_init(|| {
        Permissions::from_json(
            br#"{"ai": true, "clipboard": true, "network": ["api.example.com"],
                 "filesystem": {"read": ["$DOCUMENTS"], "write": ["$APP_DATA"]}}"#,
        )
        .expect("valid permissions")
    })
}

fuzz_target!(|data: &[u8]| {
    let none = check(data, &Permissions::default());
    let all = check(data, everything());
    let invalid =
        |p: &[WasmProblem]| matches!(p, [WasmProblem::Invalid(_)] | [WasmProblem::Component]);
    assert_eq!(invalid(&none), invalid(&all));
    if invalid(&all) {
        return;
    }
    for problem in &all {
        assert!(
            none.contains(problem),
            "granting permissions added {problem:?}"
        );
        assert!(!matches!(problem, WasmProblem::NotPermitted { .. }));
    }
    let imports = host_imports(data);
    for problem in none.iter().filter(|p| !all.contains(p)) {
        match problem {
            WasmProblem::NotPermitted { import, .. } => {
                assert!(imports.contains(import), "{import} is not imported");
            }
            other => panic!("depends on permissions: {other:?}"),
        }
    }
});
