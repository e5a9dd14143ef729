//! The on-disk cache of compiled plugins, so a restart with unchanged plugins compiles nothing.
//!
//! An entry is keyed by the SHA-256 of the component's bytes and the engine's compatibility
//! hash (wasmtime version, target and every setting that changes code), so a stale or foreign
//! entry is never loaded. Entries are native code: the cache directory is created private to
//! the user, and files are written whole (temp file + rename) so a crash leaves no half entry.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled components are kept; `None` compiles every time.
#[derive(Clone)]
pub(crate) struct CompileCache {
    dir: Option<PathBuf>,
    engine_key: String,
    /// Components compiled so far (cache hits not counted), shared by every clone.
    compiled: Arc<AtomicU64>,
}

/// How a component was obtained, for logs and start-up figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from the cache: nothing was compiled.
    Hit,
    /// Compiled now (and stored, if the cache is on).
    Compiled,
}

impl CompileCache {
    pub(crate) fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        // DefaultHasher is only stable within one build of the host, which is all that matters:
        // a new build may miss the cache once, never load a mismatch (wasmtime checks again).
        let mut h = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        CompileCache { dir, engine_key: format!("{:016x}", h.finish()), compiled: Arc::default() }
    }

    /// Components compiled so far.
    pub(crate) fn compiled(&self) -> u64 {
        self.compiled.load(Ordering::Relaxed)
    }

    /// Compiles `bytes` without keeping the result (and counts it): [`CompileCache::load`]
    /// keeps it, and components made at load that are this process's own do not.
    pub(crate) fn compile(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
        self.compiled.fetch_add(1, Ordering::Relaxed);
        Component::from_binary(engine, bytes)
    }

    /// The SHA-256 of `bytes`, hex-encoded: the component's identity in logs and the admin API.
    pub(crate) fn content_hash(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    /// The compiled component for `bytes`, from the cache when possible.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
        hash: &str,
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let Some(dir) = &self.dir else {
            return Ok((self.compile(engine, bytes)?, CacheOutcome::Compiled));
        };
        let path = dir.join(format!("{hash}-{}.cwasm", self.engine_key));
        if path.exists() {
            match deserialize(engine, &path) {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "discarding unusable cache entry")
                }
            }
        }
        let component = self.compile(engine, bytes)?;
        if let Err(error) = store(dir, &path, &component) {
            tracing::warn!(dir = %dir.display(), %error, "cannot write the compiled-plugin cache");
        }
        Ok((component, CacheOutcome::Compiled))
    }
}

#[expect(unsafe_code, reason = "loading native code that only this host wrote into a private directory")]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: the file was produced by `Component::serialize` of an engine with the same
    // compatibility hash (it is in the file name, and wasmtime checks its own header too), in
    // a directory created with mode 0700, and is only ever replaced by an atomic rename.
    unsafe { Component::deserialize_file(engine, path) }
}

fn store(dir: &Path, path: &Path, component: &Component) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let bytes = component.serialize().map_err(|e| std::io::Error::other(e.to_string()))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The default cache directory: `$XDG_CACHE_HOME/wasmgate`, else `$HOME/.cache/wasmgate`.
pub fn default_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache"))
        })
        .map(|d| d.join("wasmgate"))
}
