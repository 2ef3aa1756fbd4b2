//! The tensor infos (name, dimensions, type, offset) and where their data lies: inside the
//! file, aligned, and not overlapping one another.

use std::collections::HashMap;

use super::cursor::{Reader, What};
use super::header::Header;
use super::{GgufError, MAX_DIMS, TensorInfo, tensor_n_bytes};
use crate::quant::GgmlType;

/// Smallest tensor info: empty name (8), dimension count (4), type (4), offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 24;

/// Reads the header's count of tensor infos, each checked against the type table and the
/// alignment, and indexes them by name.
pub(super) fn read_tensor_infos(
    r: &mut Reader<'_>,
    header: &Header,
    alignment: u64,
) -> Result<(Vec<TensorInfo>, HashMap<String, usize>), GgufError> {
    let remaining = r.remaining();
    if header
        .tensor_count
        .checked_mul(MIN_TENSOR_INFO_BYTES)
        .is_none_or(|need| need > remaining)
    {
        return Err(GgufError::CountTooLarge {
            what: What::Header("tensor count").to_string(),
            count: header.tensor_count,
            offset: header.tensor_count_offset,
            remaining,
            min_each: MIN_TENSOR_INFO_BYTES,
        });
    }
    // tensor_count is bounded by the input length: this allocation is bounded too.
    let mut tensors = Vec::with_capacity(usize::try_from(header.tensor_count).unwrap_or(0));
    let mut by_name = HashMap::new();
    for i in 0..header.tensor_count {
        let t = read_tensor_info(r, i, alignment)?;
        if by_name.contains_key(&t.name) {
            return Err(GgufError::DuplicateTensor { name: t.name });
        }
        by_name.insert(t.name.clone(), tensors.len());
        tensors.push(t);
    }
    Ok((tensors, by_name))
}

fn read_tensor_info(r: &mut Reader<'_>, i: u64, alignment: u64) -> Result<TensorInfo, GgufError> {
    let name = r.string(What::TensorName(i))?;
    let n_dims = r.u32(What::Tensor(&name, "dimension count"))?;
    if usize::try_from(n_dims).map_or(true, |n| n > MAX_DIMS) {
        return Err(GgufError::TooManyDims {
            tensor: name,
            n_dims,
        });
    }
    let mut dims = Vec::with_capacity(MAX_DIMS);
    for _ in 0..n_dims {
        dims.push(r.u64(What::Tensor(&name, "dims"))?);
    }
    let type_id = r.u32(What::Tensor(&name, "type"))?;
    let offset = r.u64(What::Tensor(&name, "offset"))?;
    let Some(ty) = GgmlType::from_id(type_id) else {
        return Err(GgufError::UnknownTensorType {
            tensor: name,
            type_id,
        });
    };
    let n_bytes = tensor_n_bytes(&name, &dims, ty)?;
    if !offset.is_multiple_of(alignment) {
        return Err(GgufError::MisalignedOffset {
            tensor: name,
            offset,
            alignment,
        });
    }
    Ok(TensorInfo {
        name,
        dims,
        ty,
        offset,
        n_bytes,
    })
}

/// Checks that every tensor's data lies inside the `data_len` bytes of the data section and
/// that no two overlap.
pub(super) fn check_extents(tensors: &[TensorInfo], data_len: u64) -> Result<(), GgufError> {
    let mut extents = Vec::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        let n_bytes = u64::try_from(t.n_bytes).unwrap_or(u64::MAX);
        let end = t.offset.checked_add(n_bytes).filter(|&end| end <= data_len);
        let Some(end) = end else {
            return Err(GgufError::TensorOutOfBounds {
                tensor: t.name.clone(),
                offset: t.offset,
                n_bytes,
                data_len,
            });
        };
        if n_bytes > 0 {
            extents.push((t.offset, end, i));
        }
    }
    extents.sort_unstable();
    for pair in extents.windows(2) {
        if let [(_, end_a, a), (start_b, _, b)] = *pair
            && end_a > start_b
        {
            let name = |i: usize| tensors.get(i).map(|t| t.name.clone()).unwrap_or_default();
            return Err(GgufError::OverlappingTensors {
                first: name(a),
                second: name(b),
            });
        }
    }
    Ok(())
}
