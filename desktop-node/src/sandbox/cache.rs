//! The compiled-module cache: compiled code kept on disk, keyed by a hash of the module
//! and the engine, each entry sealed with a tag (HMAC-SHA-256 under the node's cache key,
//! or SHA-256 without one) that must verify before the code is loaded. Other artifacts
//! the node derives from code it loads (a JS app's QuickJS bytecode) are kept beside it,
//! sealed the same way ([`Sandbox::cached_artifact`]).

use sha2::{Digest, Sha256};
use wasmtime::Module;

use super::{ActionError, Sandbox};

impl Sandbox {
    /// Compiles `wasm`, or loads the compiled code from the cache directory.
    pub(super) fn compile(&self, wasm: &[u8], sha256: &[u8; 32]) -> Result<Module, ActionError> {
        let compile =
            || Module::new(&self.engine, wasm).map_err(|e| ActionError::Load(format!("{e:#}")));
        let Some(dir) = &self.config.cache_dir else {
            return compile();
        };
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(
            &self.engine.precompile_compatibility_hash(),
            &mut engine_hash,
        );
        let key = format!(
            "{}-{:016x}.cwasm",
            hex::encode(sha256),
            std::hash::Hasher::finish(&engine_hash)
        );
        let path = dir.join(key);
        if let Ok(entry) = std::fs::read(&path) {
            match self.open_cache_entry(&entry) {
                Some(code) => {
                    // SAFETY: `code` is what this node serialized: its tag was checked
                    // against the node's cache key (or at least its content hash) just
                    // above, and wasmtime checks that it was compiled by a compatible
                    // engine.
                    #[allow(unsafe_code)]
                    let cached = unsafe { Module::deserialize(&self.engine, code) };
                    match cached {
                        Ok(module) => return Ok(module),
                        Err(err) => {
                            tracing::warn!(%err, path = %path.display(), "compiled module cache entry unusable; recompiling")
                        }
                    }
                }
                None => {
                    tracing::warn!(path = %path.display(), "compiled module cache entry fails its integrity check; recompiling")
                }
            }
        }
        let module = compile()?;
        let written = std::fs::create_dir_all(dir)
            .and_then(|()| module.serialize().map_err(std::io::Error::other))
            .and_then(|code| {
                let temp = path.with_extension("tmp");
                std::fs::write(&temp, self.seal_cache_entry(code))?;
                std::fs::rename(&temp, &path)
            });
        if let Err(err) = written {
            tracing::warn!(%err, "could not cache the compiled module");
        }
        Ok(module)
    }

    /// An artifact the node makes itself (never one taken from a bundle), kept in the
    /// cache directory as `name` and sealed like compiled code: the stored bytes if the
    /// entry's tag verifies and `accept` takes them, else `make()`'s, which are then
    /// stored. `name` must identify everything the artifact is made from. Without a
    /// cache directory it is always `make()`. The flag says whether it came from the
    /// cache.
    pub(crate) fn cached_artifact<E>(
        &self,
        name: &str,
        accept: impl FnOnce(&[u8]) -> bool,
        make: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<(Vec<u8>, bool), E> {
        let Some(dir) = &self.config.cache_dir else {
            return make().map(|made| (made, false));
        };
        let path = dir.join(name);
        if let Ok(entry) = std::fs::read(&path) {
            match self.open_cache_entry(&entry) {
                Some(bytes) if accept(bytes) => return Ok((bytes.to_vec(), true)),
                Some(_) => {
                    tracing::warn!(path = %path.display(), "cache entry unusable; making it again")
                }
                None => {
                    tracing::warn!(path = %path.display(), "cache entry fails its integrity check; making it again")
                }
            }
        }
        let made = make()?;
        let written = std::fs::create_dir_all(dir).and_then(|()| {
            let temp = path.with_extension("tmp");
            std::fs::write(&temp, self.seal_cache_entry(made.clone()))?;
            std::fs::rename(&temp, &path)
        });
        if let Err(err) = written {
            tracing::warn!(%err, path = %path.display(), "could not cache");
        }
        Ok((made, false))
    }

    /// A cache entry: a 32-byte tag (HMAC-SHA-256 under the cache key, or SHA-256 without
    /// one) followed by the compiled code.
    fn seal_cache_entry(&self, code: Vec<u8>) -> Vec<u8> {
        let mut entry = self.cache_tag(&code).to_vec();
        entry.extend_from_slice(&code);
        entry
    }

    /// The compiled code of a cache entry whose tag verifies.
    pub(super) fn open_cache_entry<'a>(&self, entry: &'a [u8]) -> Option<&'a [u8]> {
        let (tag, code) = entry.split_at_checked(32)?;
        let expected = self.cache_tag(code);
        // Constant-time comparison: the tag is a MAC under a secret key.
        let same = tag
            .iter()
            .zip(expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        same.then_some(code)
    }

    fn cache_tag(&self, code: &[u8]) -> [u8; 32] {
        use hmac::Mac;
        match &self.config.cache_key {
            Some(key) => {
                let mut mac = <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(key)
                    .expect("HMAC takes any key length");
                mac.update(code);
                mac.finalize().into_bytes().into()
            }
            None => Sha256::digest(code).into(),
        }
    }
}
