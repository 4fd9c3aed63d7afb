//! The JavaScript mini-app runtime: QuickJS (through `rquickjs`) compiled to a
//! `wasm32-unknown-unknown` guest that speaks the host ABI `aisapp_v1`
//! (`docs/guest-abi.md`), so a JS mini-app runs in the same wasmtime sandbox, under the
//! same limits, as any other guest.
//!
//! Its input is the usual `{"action", "payload"}` plus `"sources": {"bot-logic.js": …,
//! "tools.js": …?}`. It evaluates `tools.js` and `bot-logic.js` as ES modules (the only
//! import a module may make is `./tools.js`), calls the function `bot-logic.js` exports
//! under the action's name with `(payload, context)`, runs QuickJS's job queue until the
//! returned promise settles (every host call is synchronous from the guest's side, so
//! nothing else can be waited for), emits a returned string, and reports a thrown error
//! or rejected promise through `fail` with its message and stack.
//!
//! `context` (built from native functions in `context.rs`): `emit`, `ai.generateText` (an async iterator over
//! `ai_generate` / `ai_next`), `tools.*` (built-ins over the `fs`, `http`, `tool` and
//! `clipboard` imports, plus the exports of `tools.js`), `storage`, `console`, `env`.
//!
//! What it does not do: give JS a clock, timers, `require`, `process`, `fetch` or any
//! import but `./tools.js`. `Date.now()` is always 0 (the QuickJS clock shim answers from
//! `__rquickjs_host_now_us`, which is not wired to the host). Time and memory limits are
//! the sandbox's: this crate sets none of its own beyond QuickJS's stack limit.
//!
//! Built only for wasm32 (see `Cargo.toml`); on other targets the crate is empty.

#[cfg(target_arch = "wasm32")]
mod context;
#[cfg(target_arch = "wasm32")]
mod guest;
