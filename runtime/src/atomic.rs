//! Atomic file writes: the data goes to a temporary file in the target's directory (tempfile's
//! `NamedTempFile`, removed if anything fails), is flushed and fsynced, then renamed over the
//! target with `persist`, and the directory is fsynced on Unix so the rename survives a power
//! loss. Readers see either the old file or the complete new one, never a torn write; a write
//! that fails (a full disk) leaves the old file as it was.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::{Result, RuntimeError};

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Writes `path` atomically with a callback that fills the temporary file (wrap it in a
/// `BufWriter` for many small writes). If the callback fails, the temporary file is removed and
/// the target is left untouched.
pub fn write_atomic_with<F>(path: impl AsRef<Path>, write: F) -> Result<()>
where
    F: FnOnce(&mut File) -> std::io::Result<()>,
{
    let path = path.as_ref();
    let name = path.file_name().ok_or_else(|| {
        RuntimeError::format(
            path,
            "cannot write: the path has no file name (it ends in `..` or `/`)",
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // `.name.XXXXXX.tmp` next to the target: the rename stays within one file system.
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // tempfile creates private (0600) files; the written file gets the usual mode, 0666
    // less the umask, as `File::create` would give it.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder
        .tempfile_in(dir)
        .map_err(|e| RuntimeError::io(path, e))?;
    let file = tmp.as_file_mut();
    write(file)
        .and_then(|()| file.flush())
        .and_then(|()| file.sync_all())
        .map_err(|e| RuntimeError::io(path, e))?;
    tmp.persist(path)
        .map_err(|e| RuntimeError::io(path, e.error))?;
    sync_dir(dir);
    Ok(())
}

/// Makes the rename durable. Best effort: some file systems refuse to fsync a directory.
#[cfg(unix)]
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) {}
