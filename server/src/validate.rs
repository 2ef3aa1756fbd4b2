//! Checks an update's manifest against the global model before any of its data is accepted.

use fedtune_proto::TensorSpec;

use crate::ServerError;

/// The update must carry exactly the global model's tensors, with the same shapes and dtypes,
/// in the same order (the payload layout depends on it).
pub(crate) fn check_manifest(
    global: &[TensorSpec],
    update: &[TensorSpec],
) -> Result<(), ServerError> {
    for (i, g) in global.iter().enumerate() {
        let Some(u) = update.get(i) else {
            return Err(ServerError::InvalidUpdate(format!(
                "tensor `{}` is missing",
                g.name
            )));
        };
        if u.name != g.name {
            let msg = match global.iter().any(|t| t.name == u.name) {
                true => format!(
                    "tensor `{}` is out of order: expected `{}` at position {i}",
                    u.name, g.name
                ),
                false => format!(
                    "unknown tensor `{}` (the global model has no such tensor)",
                    u.name
                ),
            };
            return Err(ServerError::InvalidUpdate(msg));
        }
        if u.shape != g.shape {
            return Err(ServerError::InvalidUpdate(format!(
                "tensor `{}` has shape {:?}, the global model's is {:?}",
                u.name, u.shape, g.shape
            )));
        }
        if u.dtype != g.dtype {
            return Err(ServerError::InvalidUpdate(format!(
                "tensor `{}` has dtype {}, the global model's is {}",
                u.name, u.dtype, g.dtype
            )));
        }
    }
    if let Some(extra) = update.get(global.len()) {
        return Err(ServerError::InvalidUpdate(format!(
            "unknown tensor `{}` (the global model has no such tensor)",
            extra.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedtune_proto::DType;

    fn spec(name: &str, dtype: DType, shape: &[usize]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
        }
    }

    fn check(update: &[TensorSpec], expect: Option<&str>) {
        let global = [spec("w", DType::F32, &[4, 2]), spec("b", DType::F32, &[2])];
        match (check_manifest(&global, update), expect) {
            (Ok(()), None) => {}
            (Err(e), Some(needle)) => assert!(
                e.to_string().contains(needle),
                "{e} should mention {needle}"
            ),
            (got, want) => panic!("got {got:?}, wanted error containing {want:?}"),
        }
    }

    #[test]
    fn manifest_rules() {
        check(
            &[spec("w", DType::F32, &[4, 2]), spec("b", DType::F32, &[2])],
            None,
        );
        check(&[spec("w", DType::F32, &[4, 2])], Some("`b` is missing"));
        check(
            &[spec("w", DType::F32, &[2, 4]), spec("b", DType::F32, &[2])],
            Some("shape [2, 4]"),
        );
        check(
            &[spec("w", DType::F16, &[4, 2]), spec("b", DType::F32, &[2])],
            Some("dtype F16"),
        );
        check(
            &[spec("b", DType::F32, &[2]), spec("w", DType::F32, &[4, 2])],
            Some("out of order"),
        );
        check(
            &[spec("x", DType::F32, &[4, 2]), spec("b", DType::F32, &[2])],
            Some("unknown tensor `x`"),
        );
        let extra = [
            spec("w", DType::F32, &[4, 2]),
            spec("b", DType::F32, &[2]),
            spec("c", DType::F32, &[1]),
        ];
        check(&extra, Some("unknown tensor `c`"));
    }
}
