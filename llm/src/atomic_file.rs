//! Replacing a file atomically: readers (a model mapped by another process, a device loading
//! its adapter) see the old contents or the new, never a half-written file.
//!
//! Only a regular file (or nothing) is replaced. A symbolic link is written through: the file
//! it points to is replaced and the link stays. A device node, pipe, socket or directory is
//! refused with its path named: renaming over `/dev/null` would destroy it.

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

/// Calls `fill` on a buffered temporary file beside the file `path` names (hidden, named after
/// this process), syncs it and renames it over that file. The temporary file is removed on
/// failure.
pub fn write<E>(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> Result<(), E>,
) -> Result<(), AtomicWriteError<E>> {
    let io_err = |path: &Path, op: &'static str| {
        let path = path.to_owned();
        move |source| AtomicWriteError::Io { path, op, source }
    };
    let path = &replaceable(path).map_err(io_err(path, "write"))?;
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

/// The file to replace for an output named `path`: `path` itself when it is a regular file or
/// does not exist, the file a symbolic link points to; an error for anything else.
fn replaceable(path: &Path) -> io::Result<PathBuf> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(path.to_owned()),
        Err(e) => return Err(e),
    };
    if meta.file_type().is_symlink() {
        let target = std::fs::canonicalize(path).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "it is a symbolic link to nothing; give the file's own path",
            )
        })?;
        return match std::fs::metadata(&target) {
            Ok(m) if m.is_file() => Ok(target),
            Ok(m) => Err(not_regular(&m)),
            Err(e) => Err(e),
        };
    }
    if meta.is_file() {
        Ok(path.to_owned())
    } else {
        Err(not_regular(&meta))
    }
}

fn not_regular(meta: &std::fs::Metadata) -> io::Error {
    let kind = if meta.is_dir() {
        "a directory"
    } else {
        special_kind(meta)
    };
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("it is {kind}, not a regular file; outputs replace only regular files"),
    )
}

#[cfg(unix)]
fn special_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a named pipe"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_meta: &std::fs::Metadata) -> &'static str {
    "a special file"
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Write;

    use super::*;

    fn write_text(path: &Path, text: &str) -> Result<(), String> {
        write(path, |out| out.write_all(text.as_bytes())).map_err(|e| match e {
            AtomicWriteError::Io { path, op, source } => {
                format!("cannot {op} {}: {source}", path.display())
            }
            AtomicWriteError::Write(e) => e.to_string(),
        })
    }

    #[test]
    fn regular_files_are_created_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.bin");
        write_text(&p, "one").unwrap();
        write_text(&p, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }

    /// A link given as the output is written through: its file is replaced, the link stays.
    #[cfg(unix)]
    #[test]
    fn a_symbolic_link_is_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("model.gguf");
        let link = dir.path().join("latest.gguf");
        std::fs::write(&target, "old").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_text(&link, "new").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        let err = write_text(&dangling, "x").unwrap_err();
        assert!(err.contains("symbolic link to nothing"), "{err}");
        assert!(
            std::fs::symlink_metadata(&dangling)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    /// A named pipe (as a device node would be) and a directory are refused and left as they
    /// were, with the path in the message.
    #[cfg(unix)]
    #[test]
    fn special_files_and_directories_are_refused_and_kept() {
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = write_text(&fifo, "x").unwrap_err();
        assert!(err.contains("named pipe") && err.contains("pipe"), "{err}");
        assert!(
            std::fs::symlink_metadata(&fifo)
                .unwrap()
                .file_type()
                .is_fifo()
        );
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let err = write_text(&sub, "x").unwrap_err();
        assert!(err.contains("a directory") && err.contains("sub"), "{err}");
        assert!(sub.is_dir());
    }
}
