//! [`entry!`](crate::entry): the exports the host calls (`aisapp_alloc`, `aisapp_run`).

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
        // The host is the only caller, with the buffer `aisapp_alloc` returned.
        #[allow(clippy::not_unsafe_ptr_arg_deref)]
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
