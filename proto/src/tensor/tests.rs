//! Tests of `Tensor` and `Bundle`.

#![allow(clippy::unwrap_used)]

use super::*;

const LEN: usize = 600;
const POSITIONS: [usize; 4] = [0, 255, 256, LEN - 1];

/// Finite data with the awkward cases: zeros of both signs, subnormals, the extremes.
fn finite_f32() -> Vec<f32> {
    let special = [
        0.0,
        -0.0,
        f32::MIN_POSITIVE / 2.0,
        -f32::from_bits(1),
        f32::MAX,
        f32::MIN,
        1.5,
        -3.25,
    ];
    (0..LEN)
        .map(|i| special[i % special.len()] * if i % 3 == 0 { 1.0 } else { -1.0 })
        .collect()
}

fn finite_f16() -> Vec<f16> {
    let special = [
        f16::ZERO,
        f16::NEG_ZERO,
        f16::from_bits(1),
        f16::MIN_POSITIVE_SUBNORMAL,
        f16::MAX,
        f16::MIN,
    ];
    (0..LEN).map(|i| special[i % special.len()]).collect()
}

fn finite_bf16() -> Vec<bf16> {
    let special = [
        bf16::ZERO,
        bf16::NEG_ZERO,
        bf16::from_bits(1),
        bf16::MIN_POSITIVE_SUBNORMAL,
        bf16::MAX,
        bf16::MIN,
    ];
    (0..LEN).map(|i| special[i % special.len()]).collect()
}

fn f32_tensor(v: &[f32]) -> Tensor {
    Tensor::from_f32("t", vec![v.len()], v).unwrap()
}

/// A tensor of exact half-precision bit patterns (NaN payloads included).
fn half_tensor<const N: usize>(dtype: DType, bytes: impl Iterator<Item = [u8; N]>) -> Tensor {
    let raw: Vec<u8> = bytes.flatten().collect();
    let spec = TensorSpec {
        name: "t".into(),
        dtype,
        shape: vec![raw.len() / N],
    };
    Tensor::from_bytes(spec, raw.into()).unwrap()
}

fn f16_tensor(v: &[f16]) -> Tensor {
    half_tensor(DType::F16, v.iter().map(|x| x.to_le_bytes()))
}

fn bf16_tensor(v: &[bf16]) -> Tensor {
    half_tensor(DType::BF16, v.iter().map(|x| x.to_le_bytes()))
}

/// The same f32 values, but starting at an odd address so `to_f32` has to copy.
fn misaligned_f32_tensor(v: &[f32]) -> Tensor {
    let mut raw = vec![0u8];
    raw.extend_from_slice(bytemuck::cast_slice(v));
    let data = Bytes::from(raw).slice(1..);
    assert_ne!(data.as_ptr() as usize % 4, 0);
    let t = Tensor::from_bytes(
        TensorSpec {
            name: "t".into(),
            dtype: DType::F32,
            shape: vec![v.len()],
        },
        data,
    )
    .unwrap();
    assert!(matches!(t.to_f32(), Cow::Owned(_)));
    t
}

#[test]
fn finite_data_has_no_non_finite() {
    let f = finite_f32();
    assert!(f.iter().any(|v| v.is_subnormal()) && f.contains(&f32::MAX));
    assert_eq!(f32_tensor(&f).first_non_finite(), None);
    assert_eq!(misaligned_f32_tensor(&f).first_non_finite(), None);
    assert_eq!(f16_tensor(&finite_f16()).first_non_finite(), None);
    assert_eq!(bf16_tensor(&finite_bf16()).first_non_finite(), None);
    assert_eq!(f32_tensor(&[]).first_non_finite(), None);
    assert_eq!(f16_tensor(&[]).first_non_finite(), None);
}

#[test]
fn non_finite_f32_is_found() {
    let bad = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::from_bits(0xffc0_0001),
        f32::from_bits(0x7f80_0001),
    ];
    for b in bad {
        for pos in POSITIONS {
            let mut v = finite_f32();
            v[pos] = b;
            assert_eq!(f32_tensor(&v).first_non_finite(), Some(pos), "{b} at {pos}");
            assert_eq!(
                misaligned_f32_tensor(&v).first_non_finite(),
                Some(pos),
                "{b} at {pos} (misaligned)"
            );
        }
    }
}

#[test]
fn non_finite_f16_is_found() {
    for b in [
        f16::NAN,
        f16::INFINITY,
        f16::NEG_INFINITY,
        f16::from_bits(0xfe01),
    ] {
        for pos in POSITIONS {
            let mut v = finite_f16();
            v[pos] = b;
            assert_eq!(f16_tensor(&v).first_non_finite(), Some(pos), "{b} at {pos}");
        }
    }
}

#[test]
fn non_finite_bf16_is_found() {
    for b in [
        bf16::NAN,
        bf16::INFINITY,
        bf16::NEG_INFINITY,
        bf16::from_bits(0xff81),
    ] {
        for pos in POSITIONS {
            let mut v = finite_bf16();
            v[pos] = b;
            assert_eq!(
                bf16_tensor(&v).first_non_finite(),
                Some(pos),
                "{b} at {pos}"
            );
        }
    }
}

#[test]
fn first_of_several_non_finite_is_reported() {
    let mut v = finite_f32();
    v[LEN - 1] = f32::NAN;
    v[300] = f32::INFINITY;
    v[257] = f32::NEG_INFINITY;
    assert_eq!(f32_tensor(&v).first_non_finite(), Some(257));
    let mut h = finite_f16();
    h[400] = f16::NAN;
    h[3] = f16::INFINITY;
    assert_eq!(f16_tensor(&h).first_non_finite(), Some(3));
}

#[test]
fn conversion_rounds_to_the_target_type() {
    let values = [1.0f32, -2.5, 65504.0, 1e-7, 3.3, 1e6];
    let h = Tensor::from_f32_as("h", vec![2, 3], &values, DType::F16).unwrap();
    let b = Tensor::from_f32_as("b", vec![6], &values, DType::BF16).unwrap();
    let f = Tensor::from_f32_as("f", vec![3, 2], &values, DType::F32).unwrap();
    assert_eq!(h.data().len(), 12);
    assert_eq!(b.data().len(), 12);
    assert_eq!(f.data().len(), 24);
    let want_h: Vec<f32> = values.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
    let want_b: Vec<f32> = values.iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
    assert_eq!(&*h.to_f32(), &want_h[..]);
    assert_eq!(&*b.to_f32(), &want_b[..]);
    assert_eq!(&*f.to_f32(), &values[..]);
    // 1e6 does not fit f16: it becomes infinite and is reported
    assert_eq!(h.first_non_finite(), Some(5));
    assert_eq!(b.first_non_finite(), None);
}

#[test]
fn from_f32_vec_is_zero_copy() {
    let v: Vec<f32> = (0..1000).map(|i| i as f32).collect();
    let ptr = v.as_ptr() as *const u8;
    let t = Tensor::from_f32_vec("v", vec![10, 100], v).unwrap();
    assert_eq!(t.data().as_ptr(), ptr);
    assert!(matches!(t.to_f32(), Cow::Borrowed(_)));
    assert_eq!(t.to_f32()[999], 999.0);
}

#[test]
fn size_mismatch_and_empty_name_are_refused() {
    let e = Tensor::from_f32("w", vec![2, 3], &[1.0; 5]).unwrap_err();
    assert!(
        matches!(&e, CodecError::DataSize { name, dtype: DType::F32, shape, expected: 24, got: 20 }
            if name == "w" && shape == &vec![2, 3]),
        "{e:?}"
    );
    let spec = TensorSpec {
        name: "h".into(),
        dtype: DType::F16,
        shape: vec![3],
    };
    assert!(matches!(
        Tensor::from_bytes(spec, Bytes::from_static(&[0; 5])),
        Err(CodecError::DataSize {
            expected: 6,
            got: 5,
            ..
        })
    ));
    assert!(matches!(
        Tensor::from_f32("", vec![1], &[1.0]),
        Err(CodecError::EmptyName)
    ));
}

/// A shape whose byte size overflows is refused (its size saturates, so no buffer fits).
#[test]
fn overflowing_shape_is_refused() {
    let spec = TensorSpec {
        name: "x".into(),
        dtype: DType::F32,
        shape: vec![1 << 62, 4],
    };
    let got = std::panic::catch_unwind(|| Tensor::from_bytes(spec, Bytes::new()));
    assert!(
        matches!(got, Ok(Err(_))),
        "must be an error, not a panic or a tensor"
    );
}

#[test]
fn bundle_refuses_duplicates_and_checks_finiteness() {
    let a = Tensor::from_f32("a", vec![2], &[1.0, 2.0]).unwrap();
    let b = Tensor::from_f32_as("b", vec![3], &[1.0, f32::NAN, 3.0], DType::BF16).unwrap();
    let c = Tensor::from_f32_as("c", vec![1], &[f32::INFINITY], DType::F16).unwrap();
    assert!(
        matches!(Bundle::new(vec![a.clone(), a.clone()]), Err(CodecError::DuplicateName(n)) if n == "a")
    );
    let ok = Bundle::new(vec![a.clone()]).unwrap();
    assert!(ok.check_finite().is_ok());
    let bad = Bundle::new(vec![a, b, c]).unwrap();
    assert_eq!(bad.numel(), 6);
    assert_eq!(bad.byte_len(), 8 + 6 + 2);
    assert_eq!(
        bad.manifest()
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    assert_eq!(bad.get("c").unwrap().dtype(), DType::F16);
    assert!(bad.get("d").is_none());
    assert!(
        matches!(bad.check_finite(), Err(CodecError::NonFinite { name, index: 1 }) if name == "b")
    );
}

/// A mapped tensor holds `f` of every value (whatever the source dtype), is proved finite
/// only when every result is, and a NaN or infinity produced anywhere (first block, a
/// later one, the short last one) is still found where it is.
#[test]
fn map_f32_checks_what_it_writes() {
    let n = 2500;
    let src: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 7.0).collect();
    let t = Tensor::from_f32_as("w", vec![50, 50], &src, DType::BF16).unwrap();
    let mapped = t.map_f32(|x| x * 2.0 + 1.0);
    assert_eq!(mapped.spec().shape, vec![50, 50]);
    assert_eq!(mapped.dtype(), DType::F32);
    let want: Vec<f32> = t.to_f32().iter().map(|x| x * 2.0 + 1.0).collect();
    assert_eq!(mapped.to_f32().as_ref(), want.as_slice());
    assert!(mapped.proved_finite);
    assert_eq!(mapped.first_non_finite(), None);
    let plain = Tensor::from_f32("w", vec![50, 50], &want).unwrap();
    assert!(!plain.proved_finite);
    assert!(
        mapped == plain,
        "how finiteness is known is not part of the value"
    );
    for (at, bad) in [
        (0, f32::NAN),
        (1024, f32::INFINITY),
        (n - 1, f32::NEG_INFINITY),
    ] {
        let m = f32_tensor(&src).map_f32(|x| if x == src[at] { bad } else { x });
        assert!(!m.proved_finite);
        assert_eq!(m.first_non_finite(), Some(at));
    }
}
