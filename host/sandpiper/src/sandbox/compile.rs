//! Compiling guest components, with compiled code cached on disk so a restart
//! skips Cranelift (about a second per guest on a small board's worth of CPU).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;

use anyhow::Result;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Compiles `wasm`, or loads its compiled form from `cache_dir`.
///
/// The cache key covers the component's bytes and the engine's compatibility
/// hash (wasmtime version, target, settings), so a stale entry is never loaded.
/// The cache lives in the user's own store: loading native code from it is
/// trusted exactly as much as the binary itself.
pub(crate) fn component(
    engine: &Engine,
    wasm: &[u8],
    cache_dir: Option<&Path>,
) -> Result<Component> {
    let Some(dir) = cache_dir else {
        return Ok(Component::new(engine, wasm)?);
    };
    let mut engine_hash = DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    let mut key = Sha256::new();
    key.update(wasm);
    key.update(engine_hash.finish().to_le_bytes());
    let path = dir.join(format!("{:x}.cwasm", key.finalize()));

    if path.exists() {
        // SAFETY: the file was written by `precompile_component` of an engine
        // with the same compatibility hash (it is part of the name).
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => return Ok(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring bad compiled guest")
            }
        }
    }
    let compiled = engine.precompile_component(wasm)?;
    if let Err(e) = write_atomically(dir, &path, &compiled) {
        tracing::warn!(path = %path.display(), error = %e, "cannot cache compiled guest");
    }
    // SAFETY: produced just above by this engine.
    Ok(unsafe { Component::deserialize(engine, &compiled)? })
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
