//! The bundle codec: payload layout, optional zstd, chunking and digest.
//!
//! A bundle's payload is its tensors' little-endian bytes in manifest order, optionally
//! compressed as one zstd frame; the XXH3-128 digest covers the payload as transferred. A
//! receiver verifies sizes as bytes arrive and the digest at the end, so a truncated,
//! overlong or corrupted transfer is refused before anything is decoded.

use bytes::{Bytes, BytesMut};

use crate::header::BundleHeader;
use crate::tensor::first_non_finite_bytes;
use crate::{Bundle, CodecError, Compression, Digest, Tensor};

/// The largest chunk either side sends or accepts.
pub const MAX_CHUNK_BYTES: usize = 1 << 20;

/// A bundle ready to send: header plus payload.
#[derive(Clone, Debug)]
pub struct EncodedBundle {
    pub header: BundleHeader,
    pub payload: Bytes,
}

impl EncodedBundle {
    /// Lays out (and optionally compresses) a bundle. A single uncompressed tensor is not copied.
    pub fn encode(bundle: &Bundle, compression: Compression) -> Result<Self, CodecError> {
        let raw = match bundle.tensors() {
            [one] => one.data().clone(),
            many => {
                let mut buf = BytesMut::with_capacity(bundle.byte_len());
                for t in many {
                    buf.extend_from_slice(t.data());
                }
                buf.freeze()
            }
        };
        let payload = match compression {
            Compression::None => raw,
            Compression::Zstd => Bytes::from(
                zstd::bulk::compress(&raw, 3).map_err(|e| CodecError::Zstd(e.to_string()))?,
            ),
        };
        let header = BundleHeader {
            manifest: bundle.manifest(),
            compression,
            encoded_bytes: payload.len() as u64,
            digest: Digest::of(&payload),
        };
        Ok(EncodedBundle { header, payload })
    }

    /// The payload from `offset` on, in slices of at most `max_chunk` bytes (zero-copy).
    pub fn chunks(&self, offset: u64, max_chunk: usize) -> impl Iterator<Item = (u64, Bytes)> + '_ {
        let max_chunk = max_chunk.clamp(1, MAX_CHUNK_BYTES);
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.payload.len());
        (start..self.payload.len())
            .step_by(max_chunk)
            .map(move |at| {
                (
                    at as u64,
                    self.payload
                        .slice(at..(at + max_chunk).min(self.payload.len())),
                )
            })
    }

    /// Decompresses and splits the payload into tensors (zero-copy when uncompressed).
    pub fn decode(&self) -> Result<Bundle, CodecError> {
        let expected = self.header.raw_bytes();
        let raw = match self.header.compression {
            Compression::None => self.payload.clone(),
            Compression::Zstd => {
                let cap = usize::try_from(expected).map_err(|_| CodecError::TooLarge {
                    bytes: expected,
                    limit: usize::MAX as u64,
                })?;
                Bytes::from(
                    zstd::bulk::decompress(&self.payload, cap)
                        .map_err(|e| CodecError::Zstd(e.to_string()))?,
                )
            }
        };
        if raw.len() as u64 != expected {
            return Err(CodecError::PayloadSize {
                expected,
                got: raw.len() as u64,
            });
        }
        let mut at = 0;
        let mut tensors = Vec::with_capacity(self.header.manifest.len());
        for spec in &self.header.manifest {
            let len = spec.byte_len();
            tensors.push(Tensor::from_bytes(spec.clone(), raw.slice(at..at + len))?);
            at += len;
        }
        Bundle::new(tensors)
    }
}

/// Reassembles a bundle from chunks, checking sizes as they come and the digest at the end.
pub struct BundleReceiver {
    header: BundleHeader,
    buf: BytesMut,
    hasher: twox_hash::XxHash3_128,
    /// How far uncompressed data has been checked for NaN/infinity (while still in cache), when
    /// asked for with [`BundleReceiver::check_finite_as_received`].
    scan: Option<FiniteScan>,
}

/// Progress of the as-received finiteness check: the tensor being scanned, where it starts,
/// and the first byte not yet checked.
#[derive(Debug, Default)]
struct FiniteScan {
    tensor: usize,
    start: usize,
    pos: usize,
}

impl std::fmt::Debug for BundleReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleReceiver")
            .field("header", &self.header)
            .field("received", &self.buf.len())
            .finish()
    }
}

impl BundleReceiver {
    /// Starts receiving a bundle described by an already validated header.
    pub fn new(header: BundleHeader) -> Self {
        Self::with_buffer(header, BytesMut::new())
    }

    /// Like [`BundleReceiver::new`], receiving into a recycled buffer (cleared first).
    pub fn with_buffer(header: BundleHeader, mut buf: BytesMut) -> Self {
        buf.clear();
        buf.reserve(usize::try_from(header.encoded_bytes).unwrap_or(0));
        BundleReceiver {
            header,
            buf,
            hasher: Digest::hasher(),
            scan: None,
        }
    }

    /// Resumes a transfer from bytes already received and verified to be a prefix.
    pub fn resume(header: BundleHeader, prefix: &[u8]) -> Result<Self, CodecError> {
        let mut r = Self::new(header);
        r.append(prefix)?;
        Ok(r)
    }

    pub fn header(&self) -> &BundleHeader {
        &self.header
    }

    /// Bytes received so far: the offset to resume from.
    pub fn received(&self) -> u64 {
        self.buf.len() as u64
    }

    /// The bytes received so far.
    pub fn received_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Appends one chunk; refuses chunks over 1 MiB or beyond the announced size.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), CodecError> {
        if chunk.len() > MAX_CHUNK_BYTES {
            return Err(CodecError::ChunkTooLarge(chunk.len()));
        }
        self.append(chunk)
    }

    fn append(&mut self, chunk: &[u8]) -> Result<(), CodecError> {
        let got = self.buf.len() as u64 + chunk.len() as u64;
        if got > self.header.encoded_bytes {
            return Err(CodecError::Overrun {
                expected: self.header.encoded_bytes,
                got,
            });
        }
        self.hasher.write(chunk);
        self.buf.extend_from_slice(chunk);
        if self.scan.is_some() {
            self.scan_finite()?;
        }
        Ok(())
    }

    /// Checks uncompressed data for NaN/infinity chunk by chunk as it arrives, while each chunk
    /// is still in cache, so [`BundleReceiver::finish_decoded`] need not read it all again.
    pub fn check_finite_as_received(mut self) -> Self {
        if self.header.compression == Compression::None && self.buf.is_empty() {
            self.scan = Some(FiniteScan::default());
        }
        self
    }

    /// Checks the newly received whole elements of uncompressed data for NaN/infinity.
    fn scan_finite(&mut self) -> Result<(), CodecError> {
        let Some(scan) = &mut self.scan else {
            return Ok(());
        };
        while let Some(spec) = self.header.manifest.get(scan.tensor) {
            let end = scan.start + spec.byte_len();
            let size = spec.dtype.size();
            let whole = (end.min(self.buf.len()) - scan.pos) / size * size;
            if let Some(i) =
                first_non_finite_bytes(&self.buf[scan.pos..scan.pos + whole], spec.dtype)
            {
                let index = (scan.pos - scan.start) / size + i;
                return Err(CodecError::NonFinite {
                    name: spec.name.clone(),
                    index,
                });
            }
            scan.pos += whole;
            if scan.pos < end {
                break;
            }
            scan.tensor += 1;
            scan.start = end;
        }
        Ok(())
    }

    /// Ends the transfer and decodes it into tensors whose every value is finite (checked as
    /// the data arrived when uncompressed, after decompression otherwise).
    pub fn finish_decoded(
        self,
        trailer: Option<Digest>,
    ) -> Result<(EncodedBundle, Bundle), CodecError> {
        let scanned = self.scan.is_some();
        let encoded = self.finish(trailer)?;
        let bundle = encoded.decode()?;
        if !scanned {
            bundle.check_finite()?;
        }
        Ok((encoded, bundle))
    }

    /// Ends the transfer: checks completeness and that the data hashes to the header's digest
    /// (and to `trailer`, the digest sent after the data, when there is one).
    pub fn finish(self, trailer: Option<Digest>) -> Result<EncodedBundle, CodecError> {
        let got = self.buf.len() as u64;
        if got < self.header.encoded_bytes {
            return Err(CodecError::Truncated {
                expected: self.header.encoded_bytes,
                got,
            });
        }
        let actual = Digest::finish(&self.hasher);
        for expected in std::iter::once(self.header.digest).chain(trailer) {
            if expected != actual {
                return Err(CodecError::DigestMismatch {
                    expected: expected.to_hex(),
                    actual: actual.to_hex(),
                });
            }
        }
        Ok(EncodedBundle {
            header: self.header,
            payload: self.buf.freeze(),
        })
    }
}

#[cfg(test)]
mod tests;
