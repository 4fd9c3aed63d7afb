//! [`HostError`]: a capability call that was refused or failed, as the app sees it.

pub use aisa_abi::ErrorCode;

/// A host call that was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError {
    /// `permission_denied`, `not_found`, `invalid`, `too_large`, `failed` or
    /// `unavailable` (see `docs/guest-abi.md`).
    pub code: String,
    /// For a person.
    pub message: String,
}

impl HostError {
    /// An error with `code` and `message`.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        HostError {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// Whether the app's permissions did not allow the call.
    pub fn is_permission_denied(&self) -> bool {
        self.code == ErrorCode::PermissionDenied.as_str()
    }

    /// The code as the contract's enum; `None` for a code this SDK does not know (a
    /// newer host's).
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::parse(&self.code)
    }

    pub(crate) fn bad_answer(what: &str) -> Self {
        HostError::new(
            ErrorCode::Failed.as_str(),
            format!("unexpected answer from the host: {what}"),
        )
    }
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for HostError {}

impl From<HostError> for String {
    fn from(err: HostError) -> String {
        err.to_string()
    }
}
