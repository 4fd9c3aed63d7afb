//! `.aisapp` bundles (miniapp/src/bundle.rs, check.rs): a zip from the marketplace or a
//! browser. Reading must not panic; a bundle that reads has only safe entry names,
//! writes back to a zip that reads as the same bundle, and survives every static check
//! (which may refuse it, but not panic).

#![no_main]

use aisa_miniapp::bundle::check_entry_name;
use aisa_miniapp::{Bundle, Limits, check};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Small limits too, so the fuzzer reaches every "too large" branch cheaply.
    let small = Limits {
        max_entries: 4,
        max_file_size: 512,
        max_total_size: 1024,
        max_zip_size: 2048,
    };
    let _ = Bundle::from_zip_bytes_with_limits(data, &small);
    let Ok(bundle) = Bundle::from_zip_bytes(data) else {
        return;
    };
    for name in bundle.files().keys() {
        assert!(
            check_entry_name(name).is_ok(),
            "an unsafe name was read: {name:?}"
        );
    }
    let again = Bundle::from_zip_bytes(&bundle.to_zip_bytes()).expect("a written bundle reads");
    assert_eq!(again, bundle);
    let _ = bundle.manifest();
    let _ = bundle.permissions();
    let _ = check(&bundle);
});
