//! One capability call: the request out, the answer back through `result`, unwrapped
//! into `Ok(value)` or a [`HostError`]. On other targets the fakes of
//! [`crate::testing`] answer.

use crate::HostError;

/// Makes one host call and unwraps its `{"ok"}` / `{"error"}` answer.
#[cfg(target_arch = "wasm32")]
pub(crate) fn call(
    raw: impl FnOnce(*const u8, usize) -> i32,
    _import: &'static str,
    request: serde_json::Value,
) -> Result<serde_json::Value, HostError> {
    let request = request.to_string();
    let n = raw(request.as_ptr(), request.len());
    let mut buf = vec![0u8; n.max(0) as usize];
    #[allow(unsafe_code)]
    // SAFETY: `result` writes at most `buf.len()` bytes into `buf`.
    let copied = unsafe { crate::host::result(buf.as_mut_ptr(), buf.len()) };
    if copied < 0 {
        return Err(HostError::bad_answer("no answer"));
    }
    buf.truncate(copied as usize);
    let answer = serde_json::from_slice(&buf).map_err(|_| HostError::bad_answer("not JSON"))?;
    unwrap_answer(answer)
}

/// On the host: answered by the fakes in [`testing`].
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn call(
    _raw: (),
    import: &'static str,
    request: serde_json::Value,
) -> Result<serde_json::Value, HostError> {
    unwrap_answer(crate::testing::answer(import, &request))
}

/// The `ok` value of an answer, or its error ([`aisa_abi::answer::decode`]).
fn unwrap_answer(answer: serde_json::Value) -> Result<serde_json::Value, HostError> {
    aisa_abi::answer::decode(answer).map_err(|(code, message)| HostError::new(&code, message))
}

pub(crate) fn string_of(value: serde_json::Value) -> Result<String, HostError> {
    match value {
        serde_json::Value::String(s) => Ok(s),
        _ => Err(HostError::bad_answer("expected a string")),
    }
}

pub(crate) fn strings_of(value: &serde_json::Value) -> Result<Vec<String>, HostError> {
    value
        .as_array()
        .ok_or_else(|| HostError::bad_answer("expected a list"))?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| HostError::bad_answer("expected strings"))
        })
        .collect()
}
