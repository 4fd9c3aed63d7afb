//! What every app may do without a permission: stream output, log, and say why it
//! failed.

/// Log levels for [`log`] (`aisa_abi::LogLevel`).
pub use aisa_abi::LogLevel as Level;

/// Sends a piece of output to the browser now. Waits while the browser is slower.
pub fn emit(text: &str) {
    #[cfg(target_arch = "wasm32")]
    #[allow(unsafe_code)]
    // SAFETY: the pointer and length describe `text`, valid for the call.
    unsafe {
        crate::host::emit(text.as_ptr(), text.len())
    }
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::OUTPUT.with(|o| o.borrow_mut().push(text.to_owned()));
}

/// Writes to the desktop node's log, tagged with the app.
pub fn log(level: Level, text: &str) {
    #[cfg(target_arch = "wasm32")]
    #[allow(unsafe_code)]
    // SAFETY: as in `emit`.
    unsafe {
        crate::host::log(level as i32, text.as_ptr(), text.len())
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
        crate::host::fail(message.as_ptr(), message.len())
    }
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::FAILURE.with(|f| *f.borrow_mut() = Some(message.to_owned()));
}
