//! The metadata section: typed key/value pairs, arrays nested at most
//! [`MAX_ARRAY_DEPTH`] deep, and the alignment they set.

use super::cursor::{Reader, What};
use super::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GgufError, MAX_ARRAY_DEPTH, Metadata, Value};

/// Smallest metadata entry: empty key (8), value type (4), one-byte value (1).
pub(super) const MIN_KV_BYTES: u64 = 13;

/// Reads `kv_count` entries.
pub(super) fn read_metadata(r: &mut Reader<'_>, kv_count: u64) -> Result<Metadata, GgufError> {
    let mut metadata = Metadata::new();
    for i in 0..kv_count {
        let key = r.string(What::Key(i))?;
        let ty_offset = r.offset();
        let ty = r.u32(What::ValueType(&key))?;
        if min_value_bytes(ty).is_none() {
            return Err(GgufError::UnknownValueType {
                key,
                type_id: ty,
                offset: ty_offset,
            });
        }
        let value = read_value(r, &key, ty, 0)?;
        metadata.insert(key, value)?;
    }
    Ok(metadata)
}

/// The data alignment `metadata` sets (a power of two), or the default.
pub(super) fn alignment_of(metadata: &Metadata) -> Result<u64, GgufError> {
    match metadata.get(ALIGNMENT_KEY) {
        None => Ok(DEFAULT_ALIGNMENT),
        Some(&Value::U32(a)) if a.is_power_of_two() => Ok(u64::from(a)),
        Some(v) => Err(GgufError::BadAlignment {
            found: format!("{} {v}", v.type_name()),
        }),
    }
}

/// The smallest encoding of a value of type `ty`, or `None` if GGUF has no such type.
fn min_value_bytes(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8, // a string is at least its u64 length
        9 => 12,          // element type (4) + count (8)
        _ => return None,
    })
}

/// Reads one value of type `ty` (already known to be valid) belonging to `key`.
fn read_value(r: &mut Reader<'_>, key: &str, ty: u32, depth: usize) -> Result<Value, GgufError> {
    let what = What::Value(key);
    Ok(match ty {
        0 => Value::U8(r.u8(what)?),
        1 => Value::I8(i8::from_le_bytes(r.array(what)?)),
        2 => Value::U16(u16::from_le_bytes(r.array(what)?)),
        3 => Value::I16(i16::from_le_bytes(r.array(what)?)),
        4 => Value::U32(r.u32(what)?),
        5 => Value::I32(i32::from_le_bytes(r.array(what)?)),
        6 => Value::F32(f32::from_le_bytes(r.array(what)?)),
        7 => {
            let offset = r.offset();
            match r.u8(what)? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                byte => {
                    return Err(GgufError::InvalidBool {
                        key: key.to_owned(),
                        byte,
                        offset,
                    });
                }
            }
        }
        8 => Value::String(r.string(what)?),
        10 => Value::U64(r.u64(what)?),
        11 => Value::I64(i64::from_le_bytes(r.array(what)?)),
        12 => Value::F64(f64::from_le_bytes(r.array(what)?)),
        9 => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(GgufError::NestingTooDeep {
                    key: key.to_owned(),
                    max: MAX_ARRAY_DEPTH,
                });
            }
            let ty_offset = r.offset();
            let elem_ty = r.u32(What::ArrayType(key))?;
            let Some(min) = min_value_bytes(elem_ty) else {
                return Err(GgufError::UnknownValueType {
                    key: key.to_owned(),
                    type_id: elem_ty,
                    offset: ty_offset,
                });
            };
            let n = r.count(What::Array(key), min)?;
            let mut elements = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
            for _ in 0..n {
                elements.push(read_value(r, key, elem_ty, depth + 1)?);
            }
            Value::Array(elements)
        }
        _ => {
            return Err(GgufError::UnknownValueType {
                key: key.to_owned(),
                type_id: ty,
                offset: r.offset(),
            });
        }
    })
}
