//! The keychain backends, each behind the `cfg` of its OS: the Secret Service (Linux
//! desktops), the Windows Credential Manager, the macOS login keychain, and the Linux
//! kernel's keyutils (read only, to move older versions' secrets out of it); and the
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

/// The keychain that holds entries of `backend` on this OS, or why there is none.
pub(super) fn keychain_store(backend: Backend) -> Result<Arc<CredentialStore>, SecretError> {
    match backend {
        Backend::Keyutils => keyutils_store(),
        Backend::SecretService => secret_service_store(),
        Backend::WindowsCredentialManager => windows_store(),
        Backend::MacosKeychain => macos_store(),
        Backend::File => Err(SecretError::Unavailable {
            backend: "file",
            reason: "the file backend is no keychain".into(),
        }),
    }
}

/// An entry of this node in `store` (`<id>/<name>` under [`SERVICE`]). On Windows it
/// is a generic credential with local-machine persistence: it survives reboots and
/// does not roam with a domain profile (a device's token belongs to this device).
pub(super) fn keychain_entry(
    store: &Arc<CredentialStore>,
    backend: Backend,
    user: &str,
) -> Result<Entry, keyring_core::Error> {
    if backend == Backend::WindowsCredentialManager {
        let modifiers = std::collections::HashMap::from([("persistence", "Local")]);
        Entry::new_in_store_with_modifiers(store, SERVICE, user, &modifiers)
    } else {
        Entry::new_in_store(store, SERVICE, user)
    }
}

fn elsewhere(backend: &'static str, os: &str) -> SecretError {
    SecretError::Unavailable {
        backend,
        reason: format!("it exists only on {os}"),
    }
}

/// The kernel keychain (after making sure this thread has a session keyring). Only
/// read, to move what older versions kept there into a durable store: the kernel
/// forgets its keys at a reboot.
#[cfg(target_os = "linux")]
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

/// Not Linux: no kernel keychain.
#[cfg(not(target_os = "linux"))]
pub(super) fn keyutils_store() -> Result<Arc<CredentialStore>, SecretError> {
    Err(elsewhere("keyutils", "Linux"))
}

/// The desktop's Secret Service, when there is a D-Bus session.
#[cfg(target_os = "linux")]
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

/// Not Linux: the Secret Service is a Linux desktop's.
#[cfg(not(target_os = "linux"))]
pub(super) fn secret_service_store() -> Result<Arc<CredentialStore>, SecretError> {
    Err(elsewhere("secret-service", "Linux desktops"))
}

/// The Windows Credential Manager (generic credentials of this user).
#[cfg(windows)]
fn windows_store() -> Result<Arc<CredentialStore>, SecretError> {
    let store =
        windows_native_keyring_store::Store::new().map_err(|e| SecretError::Unavailable {
            backend: "windows-credential-manager",
            reason: e.to_string(),
        })?;
    Ok(store)
}

/// Not Windows.
#[cfg(not(windows))]
fn windows_store() -> Result<Arc<CredentialStore>, SecretError> {
    Err(elsewhere("windows-credential-manager", "Windows"))
}

/// The user's login keychain on macOS.
#[cfg(target_os = "macos")]
fn macos_store() -> Result<Arc<CredentialStore>, SecretError> {
    let store = apple_native_keyring_store::keychain::Store::new().map_err(|e| {
        SecretError::Unavailable {
            backend: "macos-keychain",
            reason: e.to_string(),
        }
    })?;
    Ok(store)
}

/// Not macOS.
#[cfg(not(target_os = "macos"))]
fn macos_store() -> Result<Arc<CredentialStore>, SecretError> {
    Err(elsewhere("macos-keychain", "macOS"))
}

/// The durable keychains of this OS, in the order `auto` tries them. The kernel's
/// keyutils is never one: it forgets its keys at a reboot.
pub(super) fn durable_keychains() -> &'static [Backend] {
    if cfg!(windows) {
        &[Backend::WindowsCredentialManager]
    } else if cfg!(target_os = "macos") {
        &[Backend::MacosKeychain]
    } else if cfg!(target_os = "linux") {
        &[Backend::SecretService]
    } else {
        &[]
    }
}

/// Writes, reads back and deletes a probe entry: does this keychain really work here?
pub(super) fn probe(
    store: &Arc<CredentialStore>,
    backend: Backend,
    id: &str,
) -> Result<(), String> {
    let entry =
        keychain_entry(store, backend, &format!("{id}/probe")).map_err(|e| e.to_string())?;
    entry.set_secret(b"probe").map_err(|e| e.to_string())?;
    let back = entry.get_secret().map_err(|e| e.to_string())?;
    let _ = entry.delete_credential();
    if back == b"probe" {
        Ok(())
    } else {
        Err("the probe read back differently".into())
    }
}

/// What `auto` chooses: the first durable keychain of this OS whose probe works, else
/// the encrypted file. Never keyutils.
pub(super) fn auto_backend(id: &str) -> Result<Backend, SecretError> {
    let mut reasons = Vec::new();
    for &backend in durable_keychains() {
        match keychain_store(backend)
            .map_err(|e| e.to_string())
            .and_then(|s| probe(&s, backend, id))
        {
            Ok(()) => return Ok(backend),
            Err(e) => reasons.push(format!("{}: {e}", backend.name())),
        }
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

    /// `auto` with this OS's keychain: a round trip through the real store, nothing of
    /// the secret in the home folder, then everything deleted.
    fn round_trip_through_the_os_keychain(expected: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let secret = format!("sk-os-keychain-{}-{}", expected.name(), random_suffix());
        let mut store =
            SecretStore::open(dir.path(), BackendChoice::Auto, &pass("unused")).unwrap();
        assert_eq!(store.backend(), expected, "auto picks the OS keychain");
        store.set("provider/openai", secret.as_bytes()).unwrap();
        drop(store);
        let again = SecretStore::open(dir.path(), BackendChoice::Auto, &pass("unused")).unwrap();
        assert_eq!(again.backend(), expected);
        assert_eq!(
            &**again.get("provider/openai").unwrap().unwrap(),
            secret.as_bytes()
        );
        let mut files = Vec::new();
        walk(dir.path(), &mut files);
        for file in files {
            assert!(!contains(&file, secret.as_bytes()));
        }
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("secrets.json")).unwrap())
                .unwrap();
        let user = format!("{}/provider/openai", index["id"].as_str().unwrap());
        again.destroy().unwrap();
        let fresh = SecretStore::open(dir.path(), BackendChoice::Auto, &pass("unused")).unwrap();
        assert!(fresh.names().is_empty());
        // The entry itself is gone from the keychain, not only from the index.
        let store = keychain_store(expected).unwrap();
        let entry = keychain_entry(&store, expected, &user).unwrap();
        assert!(matches!(
            entry.get_secret(),
            Err(keyring_core::Error::NoEntry)
        ));
        fresh.destroy().unwrap();
    }

    fn random_suffix() -> String {
        crate::secrets::store::random_hex(4)
    }

    /// The Secret Service, against a real one: `scripts/secret-service-test.sh` starts
    /// gnome-keyring-daemon on a private D-Bus session and sets
    /// `AISA_TEST_SECRET_SERVICE=1`; without that variable the test says it was skipped.
    #[cfg(target_os = "linux")]
    #[test]
    fn secret_service_is_what_auto_picks_on_a_linux_desktop() {
        if std::env::var_os("AISA_TEST_SECRET_SERVICE").is_none() {
            eprintln!(
                "no Secret Service asked for (scripts/secret-service-test.sh runs this), skipped"
            );
            return;
        }
        round_trip_through_the_os_keychain(Backend::SecretService);
    }

    /// The Credential Manager on Windows (under Wine in `scripts/wine-test.sh`).
    #[cfg(windows)]
    #[test]
    fn the_credential_manager_is_what_auto_picks_on_windows() {
        round_trip_through_the_os_keychain(Backend::WindowsCredentialManager);
    }

    /// `auto` never offers the kernel keychain, on any OS.
    #[test]
    fn auto_never_tries_the_kernel_keychain() {
        assert!(durable_keychains().iter().all(|b| b.durable()));
        assert_eq!(
            durable_keychains().len(),
            usize::from(cfg!(any(windows, target_os = "macos", target_os = "linux")))
        );
    }
}
