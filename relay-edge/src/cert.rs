//! TLS identity: a configured production certificate, or a self-signed development
//! certificate that browsers accept through WebTransport's `serverCertificateHashes`.
//!
//! Browsers only pin certificates that are ECDSA and valid for at most 14 days, so the
//! development certificate is ECDSA P-256, valid from 5 minutes ago for 13 days, kept in
//! the data directory, and replaced when less than 2 days remain.

use std::path::Path;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

use time::OffsetDateTime;

/// How long a development certificate is valid.
pub const DEV_CERT_VALIDITY: Duration = Duration::from_secs(13 * 24 * 3600);
/// A development certificate with less than this left is replaced.
pub const DEV_CERT_RENEW_BEFORE: Duration = Duration::from_secs(2 * 24 * 3600);

/// Why a certificate could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The PEM held no certificate or no key.
    #[error("{0}")]
    Pem(String),
    /// Generating a certificate failed.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A certificate chain and its key.
#[derive(Debug)]
pub struct TlsIdentity {
    /// End-entity certificate first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
    /// When the end-entity certificate expires (Unix seconds), if known.
    pub not_after: Option<i64>,
    /// Whether this is a generated development certificate.
    pub self_signed: bool,
}

impl TlsIdentity {
    /// SHA-256 of the end-entity certificate's DER, for `serverCertificateHashes` and for
    /// desktops that pin the relay.
    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(self.chain[0].as_ref()).into()
    }

    /// Whether a development certificate should be replaced now.
    pub fn needs_renewal(&self, now: OffsetDateTime) -> bool {
        match (self.self_signed, self.not_after) {
            (true, Some(not_after)) => {
                not_after - now.unix_timestamp() < DEV_CERT_RENEW_BEFORE.as_secs() as i64
            }
            _ => false,
        }
    }
}

/// Loads a PEM certificate chain and key.
pub fn load_pem(cert_path: &Path, key_path: &Path) -> Result<TlsIdentity, CertError> {
    use rustls::pki_types::pem::PemObject;
    let chain = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| CertError::Pem(format!("{}: {e}", cert_path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem(format!("{}: {e}", cert_path.display())))?;
    if chain.is_empty() {
        return Err(CertError::Pem(format!(
            "{}: no certificate found",
            cert_path.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| CertError::Pem(format!("{}: {e}", key_path.display())))?;
    Ok(TlsIdentity {
        chain,
        key,
        not_after: None,
        self_signed: false,
    })
}

/// Generates a development certificate for `localhost`, `127.0.0.1`, `::1` and `extra_name`.
pub fn generate_dev(now: OffsetDateTime, extra_name: &str) -> Result<TlsIdentity, CertError> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
    if !names.iter().any(|n| n == extra_name) {
        names.push(extra_name.to_owned());
    }
    let mut params = rcgen::CertificateParams::new(names)?;
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + DEV_CERT_VALIDITY;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "AI SuperApp development relay");
    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.self_signed(&key_pair)?;
    Ok(TlsIdentity {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der())),
        not_after: Some(params.not_after.unix_timestamp()),
        self_signed: true,
    })
}

/// The development certificate kept in `dir`, made anew if missing or near expiry.
pub fn dev_identity(dir: &Path, extra_name: &str) -> Result<TlsIdentity, CertError> {
    let now = OffsetDateTime::now_utc();
    let cert_path = dir.join("dev-cert.der");
    let key_path = dir.join("dev-key.der");
    let meta_path = dir.join("dev-cert.expires");
    if let (Ok(cert), Ok(key), Ok(meta)) = (
        std::fs::read(&cert_path),
        std::fs::read(&key_path),
        std::fs::read_to_string(&meta_path),
    ) && let Ok(not_after) = meta.trim().parse::<i64>()
    {
        let existing = TlsIdentity {
            chain: vec![CertificateDer::from(cert)],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
            not_after: Some(not_after),
            self_signed: true,
        };
        if !existing.needs_renewal(now) {
            return Ok(existing);
        }
    }
    let fresh = generate_dev(now, extra_name)?;
    let write = |path: &Path, bytes: &[u8]| {
        std::fs::write(path, bytes).map_err(|source| CertError::Io {
            path: path.display().to_string(),
            source,
        })
    };
    write(&cert_path, fresh.chain[0].as_ref())?;
    write(&key_path, fresh.key.secret_der())?;
    write(
        &meta_path,
        fresh.not_after.unwrap_or_default().to_string().as_bytes(),
    )?;
    restrict_permissions(&key_path);
    Ok(fresh)
}

/// The configured certificate and key files, loaded again when they change.
///
/// [`TlsFiles::reload_if_changed`] compares a SHA-256 of both files' contents with the
/// last one loaded (so a rename over the file, a Kubernetes secret's symlink swap and an
/// in-place write are all seen), and loads them only when it differs and both parse:
/// a half-written pair (a new certificate next to the old key) is refused by rustls and
/// the current certificate stays until the next look.
#[derive(Debug)]
pub struct TlsFiles {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    loaded: std::sync::Mutex<[u8; 32]>,
}

impl TlsFiles {
    /// The files `cert` and `key`, loaded now.
    pub fn load(cert: &Path, key: &Path) -> Result<(Self, TlsIdentity), CertError> {
        let files = TlsFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
            loaded: std::sync::Mutex::new([0; 32]),
        };
        let stamp = files.stamp()?;
        let identity = load_pem(cert, key)?;
        *files.loaded.lock().unwrap_or_else(|e| e.into_inner()) = stamp;
        Ok((files, identity))
    }

    /// The files `cert` and `key`, not loaded yet (they may not exist yet: an ACME
    /// certificate not issued yet); the first [`TlsFiles::reload_if_changed`] that finds
    /// a valid pair loads it.
    pub fn pending(cert: &Path, key: &Path) -> Self {
        TlsFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
            loaded: std::sync::Mutex::new([0; 32]),
        }
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    fn stamp(&self) -> Result<[u8; 32], CertError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| CertError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        let mut hash = Sha256::new();
        hash.update(read(&self.cert)?);
        hash.update([0]);
        hash.update(read(&self.key)?);
        Ok(hash.finalize().into())
    }

    /// The files' new identity if they changed since the last load (or always, with
    /// `force`), checked with `check` (which builds the server configuration from it,
    /// so a pair rustls refuses is not taken). `Ok(None)`: unchanged.
    pub fn reload_if_changed<T>(
        &self,
        force: bool,
        check: impl FnOnce(&TlsIdentity) -> Result<T, String>,
    ) -> Result<Option<(TlsIdentity, T)>, CertError> {
        let stamp = self.stamp()?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if !force && *loaded == stamp {
            return Ok(None);
        }
        let identity = load_pem(&self.cert, &self.key)?;
        let checked = check(&identity).map_err(CertError::Pem)?;
        *loaded = stamp;
        Ok(Some((identity, checked)))
    }
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict_permissions(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_cert_is_short_lived_and_reused_until_near_expiry() {
        let dir = tempfile_dir();
        let first = dev_identity(&dir, "relay.test").unwrap();
        let validity = first.not_after.unwrap() - OffsetDateTime::now_utc().unix_timestamp();
        assert!(
            validity <= 14 * 24 * 3600,
            "browsers refuse more than 14 days"
        );
        assert!(validity > 12 * 24 * 3600);
        let again = dev_identity(&dir, "relay.test").unwrap();
        assert_eq!(first.sha256(), again.sha256(), "still valid: reused");

        // Pretend it expires tomorrow: it must be replaced.
        let soon = OffsetDateTime::now_utc().unix_timestamp() + 24 * 3600;
        std::fs::write(dir.join("dev-cert.expires"), soon.to_string()).unwrap();
        let renewed = dev_identity(&dir, "relay.test").unwrap();
        assert_ne!(first.sha256(), renewed.sha256());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn production_pem_files_load_and_bad_ones_are_explained() {
        let dir = tempfile_dir();
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["relay.example.com".to_owned()])
            .unwrap()
            .self_signed(&key_pair)
            .unwrap();
        std::fs::write(dir.join("relay.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("relay.key"), key_pair.serialize_pem()).unwrap();
        let identity = load_pem(&dir.join("relay.crt"), &dir.join("relay.key")).unwrap();
        assert!(!identity.self_signed);
        assert_eq!(identity.chain[0].as_ref(), cert.der().as_ref());
        assert!(!identity.needs_renewal(OffsetDateTime::now_utc()));

        std::fs::write(dir.join("empty.crt"), "not a certificate").unwrap();
        let err = load_pem(&dir.join("empty.crt"), &dir.join("relay.key")).unwrap_err();
        assert!(err.to_string().contains("no certificate"), "{err}");
        let err = load_pem(&dir.join("relay.crt"), &dir.join("missing.key")).unwrap_err();
        assert!(err.to_string().contains("missing.key"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("relay-cert-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
