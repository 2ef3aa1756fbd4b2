//! [`GgufFile`]: the validating parser run over a read-only memory map (or a buffer).

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::{GgufError, GgufLayout, Metadata, TensorInfo, parse};

/// The bytes a [`GgufFile`] reads: a read-only map of the file, or a buffer.
enum Backing {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Mapped(m) => m,
            Self::Owned(v) => v,
        }
    }
}

/// A validated GGUF file. Tensor data is borrowed straight from the memory map: weights are
/// never copied, and their pages are shared with the page cache and other processes.
pub struct GgufFile {
    backing: Backing,
    layout: GgufLayout,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("mapped", &matches!(self.backing, Backing::Mapped(_)))
            .field("version", &self.layout.version)
            .field("file_size", &self.layout.file_size)
            .field("metadata_entries", &self.layout.metadata.len())
            .field("tensors", &self.layout.tensors.len())
            .finish()
    }
}

/// Maps `file` read-only.
#[allow(unsafe_code)]
fn map_read_only(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: the map is read-only and lives in `GgufFile` no longer than the `Mmap` does, so
    // every slice handed out borrows memory that stays mapped. The remaining hazard is outside
    // this process: if the file is truncated or rewritten while mapped, reads see the change or
    // fault (SIGBUS). Like llama.cpp, we assume model files are not modified while in use;
    // doing so is undefined behaviour and callers must not do it (write a new file and rename
    // it over the old one instead, as `GgufWriter::write_file` does).
    unsafe { Mmap::map(file) }
}

impl GgufFile {
    /// Maps and validates the file at `path`. Errors name the path.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let io = |op: &'static str| {
            move |source| GgufError::Io {
                path: path.to_owned(),
                op,
                source,
            }
        };
        let file = File::open(path).map_err(io("open"))?;
        let meta = file.metadata().map_err(io("stat"))?;
        if !meta.is_file() {
            let what = if meta.is_dir() {
                "it is a directory, not a GGUF file"
            } else {
                "it is not a regular file"
            };
            return Err(io("read")(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                what,
            )));
        }
        let len = meta.len();
        // An empty file cannot be mapped on every platform; it is not a GGUF file either way.
        let backing = if len == 0 {
            Backing::Owned(Vec::new())
        } else {
            Backing::Mapped(map_read_only(&file).map_err(io("map"))?)
        };
        let layout = parse(backing.bytes()).map_err(|e| GgufError::InFile {
            path: PathBuf::from(path),
            source: Box::new(e),
        })?;
        Ok(Self { backing, layout })
    }

    /// Validates a GGUF file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GgufError> {
        let layout = parse(&bytes)?;
        Ok(Self {
            backing: Backing::Owned(bytes),
            layout,
        })
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.layout.version
    }

    /// The alignment of tensor data, in bytes.
    pub fn alignment(&self) -> u64 {
        self.layout.alignment
    }

    /// The metadata, in file order.
    pub fn metadata(&self) -> &Metadata {
        &self.layout.metadata
    }

    /// The tensors, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.layout.tensors
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.layout.tensor(name)
    }

    /// The data of `t`, one of this file's tensors (validated when the file was opened).
    ///
    /// A `TensorInfo` that does not belong to this file and does not fit in it gives an empty
    /// slice rather than a panic.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        self.layout
            .data_range(t)
            .and_then(|range| self.backing.bytes().get(range))
            .unwrap_or(&[])
    }

    /// Tells the kernel this process no longer needs `t`'s pages (a model that keeps its own
    /// interleaved copy of a matrix): they leave the resident set, and a later read of the
    /// tensor pages them back in from the file, unchanged. Nothing for a file held in memory.
    pub fn release_pages(&self, t: &TensorInfo) {
        let (Backing::Mapped(map), Some(range)) = (&self.backing, self.layout.data_range(t)) else {
            return;
        };
        const PAGE: usize = 4096;
        let start = range.start.next_multiple_of(PAGE);
        let end = range.end / PAGE * PAGE;
        if end > start {
            // SAFETY: a private read-only file mapping: MADV_DONTNEED drops pages this process
            // only reads, and the next access maps the file's (unchanged) contents again, so
            // no slice borrowed from the map sees different bytes. Whole pages inside the
            // tensor only; a failure just leaves the pages resident.
            #[allow(unsafe_code)]
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
        }
    }

    /// The data of the tensor called `name`.
    pub fn tensor_bytes(&self, name: &str) -> Option<&[u8]> {
        self.tensor(name).map(|t| self.tensor_data(t))
    }

    /// The size of the file in bytes.
    pub fn file_size(&self) -> u64 {
        self.layout.file_size
    }

    /// Where the data section starts, from the start of the file.
    pub fn data_offset(&self) -> u64 {
        self.layout.data_offset
    }

    /// Everything parsed from the file but its bytes.
    pub fn layout(&self) -> &GgufLayout {
        &self.layout
    }

    /// The whole file.
    pub fn as_bytes(&self) -> &[u8] {
        self.backing.bytes()
    }
}
