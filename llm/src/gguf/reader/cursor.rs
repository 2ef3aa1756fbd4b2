//! A bounds-checked position in the input, and what it was reading when a read failed.

use std::fmt;

use super::GgufError;

/// What the parser was reading, for error messages (formatted only when there is an error).
#[derive(Clone, Copy)]
pub(super) enum What<'a> {
    Header(&'static str),
    Key(u64),
    ValueType(&'a str),
    Value(&'a str),
    ArrayType(&'a str),
    Array(&'a str),
    TensorName(u64),
    Tensor(&'a str, &'static str),
}

impl fmt::Display for What<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Header(field) => write!(f, "the {field} in the header"),
            Self::Key(i) => write!(f, "the key of metadata entry {i}"),
            Self::ValueType(key) => write!(f, "the value type of metadata `{key}`"),
            Self::Value(key) => write!(f, "the value of metadata `{key}`"),
            Self::ArrayType(key) => write!(f, "the element type of metadata array `{key}`"),
            Self::Array(key) => write!(f, "the length of metadata array `{key}`"),
            Self::TensorName(i) => write!(f, "the name of tensor {i}"),
            Self::Tensor(name, field) => write!(f, "the {field} of tensor `{name}`"),
        }
    }
}

/// A position in the input; every read is bounds-checked.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// The whole input.
    pub(super) fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub(super) fn offset(&self) -> u64 {
        u64::try_from(self.pos).unwrap_or(u64::MAX)
    }

    pub(super) fn len(&self) -> u64 {
        u64::try_from(self.bytes.len()).unwrap_or(u64::MAX)
    }

    pub(super) fn remaining(&self) -> u64 {
        self.len().saturating_sub(self.offset())
    }

    pub(super) fn take(&mut self, n: u64, what: What<'_>) -> Result<&'a [u8], GgufError> {
        let slice = usize::try_from(n)
            .ok()
            .and_then(|n| Some(self.pos..self.pos.checked_add(n)?))
            .and_then(|range| Some((range.end, self.bytes.get(range)?)));
        match slice {
            Some((end, s)) => {
                self.pos = end;
                Ok(s)
            }
            None => Err(GgufError::Truncated {
                offset: self.offset(),
                what: what.to_string(),
                needed: n,
                available: self.remaining(),
            }),
        }
    }

    pub(super) fn array<const N: usize>(&mut self, what: What<'_>) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut out = [0; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    pub(super) fn u8(&mut self, what: What<'_>) -> Result<u8, GgufError> {
        Ok(u8::from_le_bytes(self.array(what)?))
    }

    pub(super) fn u32(&mut self, what: What<'_>) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(super) fn u64(&mut self, what: What<'_>) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A u64 count of items of at least `min_each` bytes, refused if the rest of the input
    /// could not hold that many (so callers may allocate `count` items).
    pub(super) fn count(&mut self, what: What<'_>, min_each: u64) -> Result<u64, GgufError> {
        let offset = self.offset();
        let count = self.u64(what)?;
        let remaining = self.remaining();
        if count
            .checked_mul(min_each)
            .is_none_or(|need| need > remaining)
        {
            return Err(GgufError::CountTooLarge {
                what: what.to_string(),
                count,
                offset,
                remaining,
                min_each,
            });
        }
        Ok(count)
    }

    /// A u64 length and that many bytes of UTF-8.
    pub(super) fn string(&mut self, what: What<'_>) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let offset = self.offset();
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::InvalidUtf8 {
                what: what.to_string(),
                offset,
            }),
        }
    }
}
