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
//!     for text in aisapp_guest::ai::generate(&aisapp_guest::ai::Request::new(format!("About {topic}")))? {
//!         aisapp_guest::emit(&text?);
//!     }
//!     Ok(())
//! }
//! aisapp_guest::entry!(run);
//! ```
//!
//! On other targets (your tests), [`emit`] collects output that [`testing::take_output`]
//! returns, and [`ai::generate`] answers from [`testing::set_model_reply`], so the logic
//! can be tested with `cargo test` without a host.

/// Log levels for [`log`].
#[derive(Debug, Clone, Copy)]
pub enum Level {
    /// Detail for debugging.
    Debug = 0,
    /// Normal events.
    Info = 1,
    /// Something odd.
    Warn = 2,
    /// Something failed.
    Error = 3,
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)] // the ABI boundary
mod host {
    #[link(wasm_import_module = "aisapp_v1")]
    unsafe extern "C" {
        pub fn emit(ptr: *const u8, len: usize);
        pub fn ai_generate(ptr: *const u8, len: usize) -> i32;
        pub fn ai_next(handle: i32, buf: *mut u8, cap: usize) -> i32;
        pub fn log(level: i32, ptr: *const u8, len: usize);
        pub fn fail(ptr: *const u8, len: usize);
    }
}

/// Sends a piece of output to the browser now. Waits while the browser is slower.
pub fn emit(text: &str) {
    #[cfg(target_arch = "wasm32")]
    #[allow(unsafe_code)]
    // SAFETY: the pointer and length describe `text`, valid for the call.
    unsafe {
        host::emit(text.as_ptr(), text.len())
    }
    #[cfg(not(target_arch = "wasm32"))]
    testing::OUTPUT.with(|o| o.borrow_mut().push(text.to_owned()));
}

/// Writes to the desktop node's log, tagged with the app.
pub fn log(level: Level, text: &str) {
    #[cfg(target_arch = "wasm32")]
    #[allow(unsafe_code)]
    // SAFETY: as in `emit`.
    unsafe {
        host::log(level as i32, text.as_ptr(), text.len())
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {text}");
}

/// Records why the action failed; [`entry!`] calls it for an `Err`.
pub fn fail(message: &str) {
    #[cfg(target_arch = "wasm32")]
    #[allow(unsafe_code)]
    // SAFETY: as in `emit`.
    unsafe {
        host::fail(message.as_ptr(), message.len())
    }
    #[cfg(not(target_arch = "wasm32"))]
    testing::FAILURE.with(|f| *f.borrow_mut() = Some(message.to_owned()));
}

/// The model, through the node's AI adapter. The app never sees a key.
pub mod ai {
    /// What to ask the model.
    #[derive(Debug, Clone)]
    pub struct Request {
        /// The user prompt.
        pub prompt: String,
        /// An optional system prompt.
        pub system: Option<String>,
        /// An optional cap on output tokens.
        pub max_tokens: Option<u32>,
    }

    impl Request {
        /// A request with just a prompt.
        pub fn new(prompt: impl Into<String>) -> Self {
            Request {
                prompt: prompt.into(),
                system: None,
                max_tokens: None,
            }
        }

        fn to_json(&self) -> String {
            serde_json::json!({
                "prompt": self.prompt,
                "system": self.system,
                "max_tokens": self.max_tokens,
            })
            .to_string()
        }
    }

    /// The model's answer as it streams: each item is the next piece of text.
    pub struct Generation {
        #[cfg(target_arch = "wasm32")]
        handle: i32,
        #[cfg(target_arch = "wasm32")]
        buf: Vec<u8>,
        #[cfg(not(target_arch = "wasm32"))]
        pieces: std::vec::IntoIter<String>,
    }

    /// Starts a generation.
    pub fn generate(request: &Request) -> Result<Generation, String> {
        let json = request.to_json();
        #[cfg(target_arch = "wasm32")]
        {
            #[allow(unsafe_code)]
            // SAFETY: the pointer and length describe `json`, valid for the call.
            let handle = unsafe { super::host::ai_generate(json.as_ptr(), json.len()) };
            if handle < 0 {
                return Err("the model could not be asked".into());
            }
            Ok(Generation {
                handle,
                buf: vec![0; 4096],
            })
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = json;
            let reply = super::testing::MODEL_REPLY.with(|r| r.borrow().clone());
            let pieces = reply.ok_or("no model on this target: call testing::set_model_reply")?;
            Ok(Generation {
                pieces: pieces.into_iter(),
            })
        }
    }

    impl Iterator for Generation {
        type Item = Result<String, String>;

        fn next(&mut self) -> Option<Self::Item> {
            #[cfg(target_arch = "wasm32")]
            {
                #[allow(unsafe_code)]
                // SAFETY: `buf` is writable for `buf.len()` bytes during the call.
                let n = unsafe {
                    super::host::ai_next(self.handle, self.buf.as_mut_ptr(), self.buf.len())
                };
                match n {
                    0 => None,
                    n if n < 0 => Some(Err("the model stream failed".into())),
                    n => Some(
                        std::str::from_utf8(&self.buf[..n as usize])
                            .map(str::to_owned)
                            .map_err(|_| "the model sent invalid UTF-8".to_owned()),
                    ),
                }
            }
            #[cfg(not(target_arch = "wasm32"))]
            self.pieces.next().map(Ok)
        }
    }
}

/// Testing helpers for running a mini-app's logic on the host (not wasm).
#[cfg(not(target_arch = "wasm32"))]
pub mod testing {
    use std::cell::RefCell;

    thread_local! {
        pub(crate) static OUTPUT: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
        pub(crate) static FAILURE: RefCell<Option<String>> = const { RefCell::new(None) };
        pub(crate) static MODEL_REPLY: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
    }

    /// The pieces emitted so far on this thread, emptying the buffer.
    pub fn take_output() -> Vec<String> {
        OUTPUT.with(|o| std::mem::take(&mut *o.borrow_mut()))
    }

    /// The last message passed to `fail` on this thread.
    pub fn take_failure() -> Option<String> {
        FAILURE.with(|f| f.borrow_mut().take())
    }

    /// What `ai::generate` streams on this thread.
    pub fn set_model_reply(pieces: &[&str]) {
        MODEL_REPLY
            .with(|r| *r.borrow_mut() = Some(pieces.iter().map(|p| p.to_string()).collect()));
    }
}

/// Exports the ABI entry points (`aisapp_alloc`, `aisapp_run`) for a function
/// `fn(&str) -> Result<(), String>` that receives the input JSON. An `Err` is reported
/// to the browser as the action's failure.
#[macro_export]
macro_rules! entry {
    ($run:path) => {
        /// Gives the host `len` bytes for the input; `aisapp_run` takes them back.
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn aisapp_alloc(len: usize) -> *mut u8 {
            let mut buf = ::std::vec::Vec::<u8>::with_capacity(len);
            let ptr = buf.as_mut_ptr();
            ::std::mem::forget(buf);
            ptr
        }

        /// Runs the action whose input JSON the host wrote at `ptr`.
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn aisapp_run(ptr: *mut u8, len: usize) -> i32 {
            // SAFETY: the host wrote `len` bytes into the buffer `aisapp_alloc(len)` gave.
            let input = unsafe { ::std::vec::Vec::from_raw_parts(ptr, len, len) };
            let result = match ::std::string::String::from_utf8(input) {
                Ok(input) => $run(&input),
                Err(_) => Err("the input is not UTF-8".to_owned()),
            };
            match result {
                Ok(()) => 0,
                Err(message) => {
                    $crate::fail(&message);
                    1
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_side_helpers_collect_output_and_fake_the_model() {
        testing::set_model_reply(&["a", "b"]);
        let pieces: Result<Vec<String>, String> =
            ai::generate(&ai::Request::new("x")).unwrap().collect();
        for p in pieces.unwrap() {
            emit(&p);
        }
        assert_eq!(testing::take_output(), ["a", "b"]);
        fail("nope");
        assert_eq!(testing::take_failure().as_deref(), Some("nope"));
    }
}
