//! The keychain backends: the kernel's keyutils and the desktop's Secret Service, and the
//! probe `auto` uses to choose among them and the file.

use std::sync::Arc;

use keyring_core::Entry;
use keyring_core::api::CredentialStore;

use super::{Backend, SERVICE, SecretError};

/// Gives the calling thread (and the threads and processes it starts later) a session
/// keyring of its own when it has none, and returns whether it joined a new one.
///
/// Without one, the kernel lends the process the user's shared session keyring, on
/// which keyutils refused writes here (`EACCES`). A new anonymous session keyring still
/// reaches the secrets stored earlier: every key is also linked into the user's
/// persistent keyring, which the store links into the session keyring. Credentials
/// are per thread in Linux, so call this at the start of `main`, before any other
/// thread exists (`desktop-node` does); [`SecretStore::open`] calls it too, for the
/// thread it runs on. (The shell equivalent is `keyctl session -`.)
#[cfg(target_os = "linux")]
pub fn ensure_session_keyring() -> std::io::Result<bool> {
    const GET_KEYRING_ID: libc::c_long = 0;
    const JOIN_SESSION_KEYRING: libc::c_long = 1;
    const SESSION: libc::c_long = -3;
    const USER_SESSION: libc::c_long = -5;
    // SAFETY: keyctl(GET_KEYRING_ID) takes integers only and touches no memory of ours.
    #[allow(unsafe_code)]
    let session = unsafe { libc::syscall(libc::SYS_keyctl, GET_KEYRING_ID, SESSION, 0) };
    if session < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    #[allow(unsafe_code)]
    let user_session = unsafe { libc::syscall(libc::SYS_keyctl, GET_KEYRING_ID, USER_SESSION, 0) };
    if session != user_session {
        return Ok(false);
    }
    // SAFETY: a null name asks for a new anonymous session keyring; the kernel reads no
    // memory of ours.
    #[allow(unsafe_code)]
    let joined = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if joined < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(true)
}

/// Not Linux: there is no keyutils and nothing to do.
#[cfg(not(target_os = "linux"))]
pub fn ensure_session_keyring() -> std::io::Result<bool> {
    Ok(false)
}

/// The kernel keychain (after making sure this thread has a session keyring).
pub(super) fn keyutils_store() -> Result<Arc<CredentialStore>, SecretError> {
    ensure_session_keyring().map_err(|e| SecretError::Unavailable {
        backend: "keyutils",
        reason: format!("no session keyring: {e}"),
    })?;
    let store =
        linux_keyutils_keyring_store::Store::new().map_err(|e| SecretError::Unavailable {
            backend: "keyutils",
            reason: e.to_string(),
        })?;
    Ok(store)
}

/// The desktop's Secret Service, when there is a D-Bus session.
pub(super) fn secret_service_store() -> Result<Arc<CredentialStore>, SecretError> {
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none() {
        return Err(SecretError::Unavailable {
            backend: "secret-service",
            reason: "no D-Bus session (DBUS_SESSION_BUS_ADDRESS is not set)".into(),
        });
    }
    let store =
        zbus_secret_service_keyring_store::Store::new().map_err(|e| SecretError::Unavailable {
            backend: "secret-service",
            reason: e.to_string(),
        })?;
    Ok(store)
}

/// Writes, reads back and deletes a probe entry: does this keychain really work here?
pub(super) fn probe(store: &Arc<CredentialStore>, id: &str) -> Result<(), String> {
    let entry =
        Entry::new_in_store(store, SERVICE, &format!("{id}/probe")).map_err(|e| e.to_string())?;
    entry.set_secret(b"probe").map_err(|e| e.to_string())?;
    let back = entry.get_secret().map_err(|e| e.to_string())?;
    let _ = entry.delete_credential();
    if back == b"probe" {
        Ok(())
    } else {
        Err("the probe read back differently".into())
    }
}

/// What `auto` chooses: the first keychain whose probe works, else the file.
pub(super) fn auto_backend(id: &str) -> Result<Backend, SecretError> {
    let mut reasons = Vec::new();
    match keyutils_store()
        .map_err(|e| e.to_string())
        .and_then(|s| probe(&s, id))
    {
        Ok(()) => return Ok(Backend::Keyutils),
        Err(e) => reasons.push(format!("keyutils: {e}")),
    }
    match secret_service_store()
        .map_err(|e| e.to_string())
        .and_then(|s| probe(&s, id))
    {
        Ok(()) => return Ok(Backend::SecretService),
        Err(e) => reasons.push(format!("secret-service: {e}")),
    }
    tracing::info!(reasons = %reasons.join("; "), "no keychain; secrets go to the encrypted file");
    Ok(Backend::File)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::secrets::test_support::*;
    use crate::secrets::{BackendChoice, SecretStore};

    /// The kernel keychain, where this machine lets the process use it (CI runs as root
    /// on Debian, where it does; a container whose seccomp profile forbids `keyctl`
    /// skips with a note).
    #[test]
    fn keyutils_backend_round_trips_when_available() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = match SecretStore::open(dir.path(), BackendChoice::Keyutils, &pass("x")) {
            Ok(store) => store,
            Err(e) => {
                eprintln!("keyutils not usable here, skipped: {e}");
                return;
            }
        };
        if let Err(e) = store.set("provider/openai", b"sk-keyutils-secret-value") {
            eprintln!("keyutils not usable here, skipped: {e}");
            return;
        }
        let again = SecretStore::open(dir.path(), BackendChoice::Auto, &pass("x")).unwrap();
        assert_eq!(again.backend(), Backend::Keyutils);
        assert_eq!(
            &**again.get("provider/openai").unwrap().unwrap(),
            b"sk-keyutils-secret-value"
        );
        let mut files = Vec::new();
        walk(dir.path(), &mut files);
        for file in files {
            assert!(!contains(&file, b"sk-keyutils-secret-value"));
        }
        again.destroy().unwrap();
        let fresh = SecretStore::open(dir.path(), BackendChoice::Keyutils, &pass("x")).unwrap();
        assert!(fresh.names().is_empty());
    }
}
