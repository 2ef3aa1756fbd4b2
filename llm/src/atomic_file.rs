//! Replacing a file atomically: readers (a model mapped by another process, a device loading
//! its adapter) see the old contents or the new, never a half-written file.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

/// Why [`write`] failed: an I/O step on a file, or the caller's own writing.
#[derive(Debug)]
pub enum AtomicWriteError<E> {
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    Write(E),
}

/// Calls `fill` on a buffered temporary file beside `path` (hidden, named after this
/// process), syncs it and renames it over `path`. The temporary file is removed on failure.
pub fn write<E>(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> Result<(), E>,
) -> Result<(), AtomicWriteError<E>> {
    let io_err = |path: &Path, op: &'static str| {
        let path = path.to_owned();
        move |source| AtomicWriteError::Io { path, op, source }
    };
    let Some(file_name) = path.file_name() else {
        let e = io::Error::new(io::ErrorKind::InvalidInput, "not a file path");
        return Err(io_err(path, "write")(e));
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);

    let result = (|| {
        let file = File::create(&tmp).map_err(io_err(&tmp, "create"))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        fill(&mut out).map_err(AtomicWriteError::Write)?;
        let file = out
            .into_inner()
            .map_err(|e| io_err(&tmp, "write")(e.into_error()))?;
        file.sync_all().map_err(io_err(&tmp, "sync"))?;
        std::fs::rename(&tmp, path).map_err(io_err(path, "rename a temporary file to"))
    })();
    if result.is_err() {
        // Best effort: the temporary file may not exist.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
