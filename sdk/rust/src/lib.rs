//! Write AI SuperApp mini-apps in Rust.
//!
//! A mini-app is a `cdylib` built for `wasm32-unknown-unknown` that speaks the host ABI
//! `aisapp_v1` (`docs/guest-abi.md`). This crate hides the ABI: write a function from the
//! input JSON to `Result<(), String>` and name it in [`entry!`]:
//!
//! ```
//! fn run(input: &str) -> Result<(), String> {
//!     let input: serde_json::Value = serde_json::from_str(input).map_err(|e| e.to_string())?;
//!     let topic = input["payload"]["topic"].as_str().ok_or("topic missing")?;
//!     for text in aisa_guest::ai::generate(&aisa_guest::ai::Request::new(format!("About {topic}")))? {
//!         aisa_guest::emit(&text?);
//!     }
//!     Ok(())
//! }
//! aisa_guest::entry!(run);
//! ```
//!
//! On other targets (your tests), [`emit`] collects output that [`testing::take_output`]
//! returns, and [`ai::generate`] answers from [`testing::set_model_reply`], so the logic
//! can be tested with `cargo test` without a host.
//!
//! The permissioned host API has safe wrappers: [`fs`] (files in folders the person
//! granted, and the app's own `$APP_DATA`), [`http`] (granted hosts only), [`tools`]
//! (CSV, PDF text), [`storage`] (the app's persistent key-value store) and [`env`]. Each
//! returns `Result<_, HostError>`: a refusal ([`HostError::code`] `permission_denied`) is
//! an error value the app can handle, not a crash. On other targets they run against
//! fakes in [`testing`] (an in-memory file system, canned HTTP responses, an in-memory
//! store, real CSV parsing).
//!
//! | module | its one job |
//! | --- | --- |
//! | `host` | the `aisapp_v1` imports, declared from `aisa_abi`'s one list (wasm32 only) |
//! | `call` | one capability call: request out, answer in, unwrapped |
//! | [`HostError`] | a refused or failed call (codes: `aisa_abi::ErrorCode`) |
//! | [`emit`], [`log`], [`fail`] | output, logging, the failure message |
//! | [`fs`], [`http`], [`tools`], [`storage`], [`env`] | the permissioned host API |
//! | [`ai`] | the model |
//! | [`testing`] | the host-side fakes (not wasm32) |
//! | [`entry!`] | the exports the host calls |

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)] // the ABI boundary
mod host;

mod call;
mod entry;
mod error;
mod output;

use call::{call, string_of, strings_of};
pub use error::{ErrorCode, HostError};
pub use output::{Level, emit, fail, log};

/// Calls one capability import of the host (`fs`, `http`, …): only the imports an app
/// uses end up in its module, so its imports match the permissions it asks for.
macro_rules! host_call {
    ($import:ident, $request:expr $(,)?) => {{
        #[cfg(target_arch = "wasm32")]
        let raw = |ptr: *const u8, len: usize| -> i32 {
            #[allow(unsafe_code)]
            // SAFETY: the pointer and length describe the request, valid for the call.
            unsafe {
                $crate::host::$import(ptr, len)
            }
        };
        #[cfg(not(target_arch = "wasm32"))]
        let raw = ();
        $crate::call(raw, stringify!($import), $request)
    }};
}

pub mod ai;
pub mod env;
pub mod fs;
pub mod http;
pub mod storage;
pub mod tools;

#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

#[cfg(test)]
mod tests;
