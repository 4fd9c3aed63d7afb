//! Downloads with a size cap and the release's SHA-256 checked on the way.

use std::io::Write;
use std::path::Path;

use aisa_miniapp::release::Release;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::UpdateError;

/// The whole body of `response`, refusing more than `cap` bytes.
pub async fn capped_body(response: reqwest::Response, cap: u64) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        if (body.len() + chunk.len()) as u64 > cap {
            return Err(format!("more than {cap} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Downloads `release` into the new file `dest` (which must not exist), calling
/// `progress(done, total)` as bytes arrive. On any refusal `dest` is removed.
pub async fn download(
    client: &reqwest::Client,
    release: &Release,
    dest: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<(), UpdateError> {
    let result = async {
        let fetch_error = |reason: String| UpdateError::Fetch {
            url: release.url.clone(),
            reason,
        };
        let response = client
            .get(&release.url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| fetch_error(e.to_string()))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dest)
            .map_err(|e| UpdateError::Io(format!("{}: {e}", dest.display())))?;
        let mut hash = Sha256::new();
        let mut done = 0u64;
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| fetch_error(e.to_string()))?;
            done += chunk.len() as u64;
            if done > release.size {
                return Err(UpdateError::Download(format!(
                    "more than the announced {} bytes",
                    release.size
                )));
            }
            hash.update(&chunk);
            file.write_all(&chunk)
                .map_err(|e| UpdateError::Io(format!("{}: {e}", dest.display())))?;
            progress(done, release.size);
        }
        if done < release.size {
            return Err(UpdateError::Download(format!(
                "truncated: {done} of {} bytes",
                release.size
            )));
        }
        let got = hex::encode(hash.finalize());
        if got != release.sha256 {
            return Err(UpdateError::Download(format!(
                "SHA-256 {got}, the manifest says {}",
                release.sha256
            )));
        }
        file.sync_all()
            .map_err(|e| UpdateError::Io(format!("{}: {e}", dest.display())))?;
        make_executable(dest)
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    result
}

#[cfg(unix)]
fn make_executable(path: &Path) -> Result<(), UpdateError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| UpdateError::Io(format!("{}: {e}", path.display())))
}

#[cfg(not(unix))]
fn make_executable(_path: &Path) -> Result<(), UpdateError> {
    Ok(())
}
