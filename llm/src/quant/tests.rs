//! Unit tests: round-trip error bounds, layouts, and the error paths of the dispatchers.
//! Bit-exactness against gguf-py lives in `llm/tests/quant_golden.rs`.

use half::f16;

use super::*;

/// Deterministic test data without an RNG dependency (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        // uniform in [-1, 1)
        ((r >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Roughly weight-like values: a sum of uniforms, with blocks of varying magnitude and an
    /// occasional outlier.
    fn data(&mut self, n: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let scale = [0.02, 1.0, 300.0, 1e-3][(i / 64) % 4];
            let mut v = (self.next_f32() + self.next_f32() + self.next_f32()) * scale;
            if i % 97 == 13 {
                v *= 8.0;
            }
            out.push(v);
        }
        out
    }
}

fn roundtrip(ty: GgmlType, x: &[f32]) -> Vec<f32> {
    let q = quantize(ty, x).unwrap();
    assert_eq!(q.len(), ty.row_bytes(x.len()).unwrap());
    dequantize(ty, &q, x.len()).unwrap()
}

/// Checks `|x − y| ≤ bound(block)` block by block, where `bound` gets the block's values.
fn check_blocks(ty: GgmlType, x: &[f32], y: &[f32], bound: impl Fn(&[f32]) -> f32) {
    let bl = if ty.block_len() == 1 {
        1
    } else {
        ty.block_len()
    };
    for (k, (xb, yb)) in x.chunks(bl).zip(y.chunks(bl)).enumerate() {
        let b = bound(xb);
        for (j, (a, r)) in xb.iter().zip(yb).enumerate() {
            assert!(
                (a - r).abs() <= b,
                "{ty} block {k} value {j}: {a} -> {r}, error > {b}"
            );
        }
    }
}

fn amax(x: &[f32]) -> f32 {
    x.iter().fold(0.0, |m, v| m.max(v.abs()))
}

fn range(x: &[f32]) -> (f32, f32) {
    let min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    (min, max)
}

const F16_EPS: f32 = 1.0 / 1024.0; // relative spacing of f16 (2⁻¹⁰), twice its rounding error

/// Largest error of rounding `v` to f16 (relative for normals, 2⁻²⁵ for subnormals).
fn f16_err(v: f32) -> f32 {
    v.abs() * F16_EPS / 2.0 + 1.0 / (1u32 << 25) as f32
}

fn data_with_edges(n: usize) -> Vec<f32> {
    let mut x = Rng(0x5eed).data(n);
    // an all-zero block and a constant block
    x[0..256].fill(0.0);
    x[256..512].fill(0.75);
    x
}

#[test]
fn roundtrip_error_bounds() {
    let x = data_with_edges(4096);

    let y = roundtrip(GgmlType::F32, &x);
    assert_eq!(x, y);

    check_blocks(GgmlType::F16, &x, &roundtrip(GgmlType::F16, &x), |b| {
        f16_err(amax(b))
    });
    check_blocks(GgmlType::Bf16, &x, &roundtrip(GgmlType::Bf16, &x), |b| {
        amax(b) / 256.0
    });

    // Symmetric 8-bit: half a step, plus the f16 rounding of d times 127.
    for ty in [GgmlType::Q8_0, GgmlType::Q8_1] {
        check_blocks(ty, &x, &roundtrip(ty, &x), |b| {
            let d = amax(b) / 127.0;
            0.5 * d + 127.0 * f16_err(d)
        });
    }
    // Q8_K keeps d in f32.
    check_blocks(GgmlType::Q8K, &x, &roundtrip(GgmlType::Q8K, &x), |b| {
        amax(b) / 127.0 * 0.5001
    });

    // Q4_0 / Q5_0: the extreme value lands exactly, its opposite clips one step short.
    for (ty, levels) in [(GgmlType::Q4_0, 8.0), (GgmlType::Q5_0, 16.0)] {
        check_blocks(ty, &x, &roundtrip(ty, &x), |b| {
            let d = amax(b) / levels;
            d + 2.0 * levels * f16_err(d)
        });
    }
    // Q4_1 / Q5_1: half a step, plus the f16 rounding of d (times the top code) and of min.
    for (ty, top) in [(GgmlType::Q4_1, 15.0), (GgmlType::Q5_1, 31.0)] {
        check_blocks(ty, &x, &roundtrip(ty, &x), |b| {
            let (min, max) = range(b);
            let d = (max - min) / top;
            0.5 * d + top * f16_err(d) + f16_err(min)
        });
    }
    // NF4: half the widest gap between levels (−1 to −0.696…), relative to absmax.
    let gap = nf4::NF4
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(0.0f32, f32::max);
    assert!((gap - 0.3038).abs() < 1e-4);
    check_blocks(GgmlType::Nf4, &x, &roundtrip(GgmlType::Nf4, &x), |b| {
        amax(b) * gap / 2.0 * 1.0001
    });
}

#[test]
fn zero_blocks_stay_zero() {
    for ty in GgmlType::ALL.into_iter().filter(|t| t.can_quantize()) {
        let n = ty.block_len().max(64) * 2;
        let y = roundtrip(ty, &vec![0.0; n]);
        assert!(y.iter().all(|v| *v == 0.0), "{ty}: {y:?}");
    }
}

#[test]
fn q8_0_rounds_half_away_from_zero() {
    // amax 127 → d = 1 exactly; x·id is then x itself.
    let mut x = [0.0f32; 32];
    x[0] = 127.0;
    x[1] = 0.5;
    x[2] = -0.5;
    x[3] = 2.5;
    x[4] = -2.5;
    x[5] = 0.49999997;
    let q = quantize(GgmlType::Q8_0, &x).unwrap();
    assert_eq!(f16::from_le_bytes([q[0], q[1]]).to_f32(), 1.0);
    let qs: Vec<i8> = q[2..8].iter().map(|&b| b as i8).collect();
    assert_eq!(qs, [127, 1, -1, 3, -3, 0]);
}

#[test]
fn q8_1_sum_field_matches_its_definition() {
    let x = Rng(7).data(32 * 16);
    let q = quantize(GgmlType::Q8_1, &x).unwrap();
    for (xb, b) in x.chunks_exact(32).zip(q.chunks_exact(36)) {
        let d = amax(xb) / 127.0; // the f32 scale before rounding to f16
        let sum: i32 = b[4..].iter().map(|&v| i32::from(v as i8)).sum();
        let s = f16::from_le_bytes([b[2], b[3]]);
        assert_eq!(
            s,
            f16::from_f32(sum as f32 * d),
            "s = f16(d · Σqs) with the f32 d"
        );
        // and consistent with the stored (rounded) d to f16 precision
        let d16 = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let tol = (sum as f32 * d16).abs() * 2.0 * F16_EPS + 1e-6;
        assert!((s.to_f32() - sum as f32 * d16).abs() <= tol);
        // codes agree with Q8_0's
        let q0 = quantize(GgmlType::Q8_0, xb).unwrap();
        assert_eq!(&q0[..2], &b[..2]);
        assert_eq!(&q0[2..], &b[4..]);
    }
}

#[test]
fn q8_k_bsums_scale_and_rounding() {
    let mut x = Rng(11).data(256 * 3);
    x[256..512].fill(0.0);
    x[512..768].iter_mut().for_each(|v| *v *= 1e-3);
    // ties: max = -127 → iscale = 1, so codes are round_half_even(x)
    x[512] = -127.0;
    x[513] = 0.5;
    x[514] = 1.5;
    x[515] = -2.5;
    x[516] = 127.0; // positive side reaches 127 too
    let q = quantize(GgmlType::Q8K, &x).unwrap();
    for (k, (xb, b)) in x.chunks_exact(256).zip(q.chunks_exact(292)).enumerate() {
        let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let qs: Vec<i8> = b[4..260].iter().map(|&v| v as i8).collect();
        for g in 0..16 {
            let want: i32 = qs[16 * g..16 * g + 16].iter().map(|&v| i32::from(v)).sum();
            let got = i16::from_le_bytes([b[260 + 2 * g], b[261 + 2 * g]]);
            assert_eq!(i32::from(got), want, "block {k} group {g}");
        }
        if k == 1 {
            assert_eq!(d, 0.0);
            assert!(qs.iter().all(|&v| v == 0));
        } else {
            // the largest-magnitude value maps to -127 (iscale = -127 / max)
            let (imax, _) = xb.iter().enumerate().fold((0, 0.0f32), |(i, m), (j, v)| {
                if v.abs() > m { (j, v.abs()) } else { (i, m) }
            });
            assert_eq!(qs[imax], -127, "block {k}");
            assert!(qs.iter().all(|&v| v >= -127));
        }
        if k == 2 {
            assert_eq!(d, 1.0); // iscale = -127 / -127
            assert_eq!(&qs[..5], &[-127, 0, 2, -2, 127]);
        }
    }
}

#[test]
fn bf16_rounding_matches_ggml() {
    let cases: [(u32, u16); 12] = [
        (0x3f80_0000, 0x3f80),
        (0x3f80_8000, 0x3f80), // tie → even
        (0x3f81_8000, 0x3f82), // tie → even (up)
        (0x3f80_8001, 0x3f81),
        (0x7f7f_ffff, 0x7f80), // f32::MAX rounds to +inf
        (0x7f80_0000, 0x7f80),
        (0xff80_0000, 0xff80),
        (0x7fc0_0000, 0x7fc0),
        (0x7f80_0001, 0x7fc0), // signalling NaN → quiet, never inf
        (0xffff_ffff, 0xffff),
        (0x0000_8000, 0x0000), // subnormal tie → even (no flush-to-zero)
        (0x0001_8000, 0x0002),
    ];
    for (bits, want) in cases {
        assert_eq!(
            float::f32_to_bf16(f32::from_bits(bits)),
            want,
            "{bits:#010x}"
        );
    }
    for h in [0u16, 0x8000, 0x3f80, 0x7f80, 0x7fc1, 0x0001] {
        assert_eq!(float::bf16_to_f32(h).to_bits(), u32::from(h) << 16);
    }
}

#[test]
fn nf4_layout_and_roundtrip() {
    // Each level times absmax comes back exactly; value 2j sits in the high nibble.
    let absmax = 2.5f32;
    let mut x = [0.0f32; 64];
    for (i, v) in x.iter_mut().enumerate() {
        *v = nf4::NF4[i % 16] * absmax;
    }
    let q = quantize(GgmlType::Nf4, &x).unwrap();
    assert_eq!(q.len(), 36);
    assert_eq!(q[0], 0x01); // codes 0 (high) and 1 (low)
    assert_eq!(q[7], 0xEF);
    assert_eq!(f32::from_le_bytes([q[32], q[33], q[34], q[35]]), absmax);
    let y = dequantize(GgmlType::Nf4, &q, 64).unwrap();
    assert_eq!(x.to_vec(), y);
    // Quantizing the decoded values again is a fixed point.
    assert_eq!(quantize(GgmlType::Nf4, &y).unwrap(), q);

    // Nearest level, ties to the lower one.
    for k in 0..15 {
        let (lo, hi) = (nf4::NF4[k], nf4::NF4[k + 1]);
        assert_eq!(nf4::nearest_code(lo + (hi - lo) * 0.49), k as u8);
        assert_eq!(nf4::nearest_code(lo + (hi - lo) * 0.51), k as u8 + 1);
        let mid = nf4::MIDPOINTS[k];
        let exact = (f64::from(lo) + f64::from(hi)) / 2.0;
        assert!(lo < mid && mid < hi && (f64::from(mid) - exact).abs() < 1e-7);
        assert_eq!(
            nf4::nearest_code(mid),
            k as u8,
            "tie between {k} and {}",
            k + 1
        );
    }
    assert_eq!(nf4::nearest_code(-1.0), 0);
    assert_eq!(nf4::nearest_code(1.0), 15);
    assert_eq!(nf4::nearest_code(0.0), 7);
}

#[test]
fn q4_k_scale_packing() {
    // scale j / min j for j < 4: low 6 bits of bytes j and j+4;
    // j >= 4: nibbles of byte j+4, topped with the high 2 bits of bytes j-4 and j.
    let mut p = [0u8; 12];
    for j in 0..8u8 {
        let (sc, m) = (j * 7 + 1, 63 - j * 5);
        let j = usize::from(j);
        if j < 4 {
            p[j] |= sc;
            p[j + 4] |= m;
        } else {
            p[j + 4] = (sc & 0x0F) | ((m & 0x0F) << 4);
            p[j - 4] |= (sc >> 4) << 6;
            p[j] |= (m >> 4) << 6;
        }
    }
    for j in 0..8u8 {
        assert_eq!(
            q4_k::scale_min(&p, usize::from(j)),
            (j * 7 + 1, 63 - j * 5),
            "sub-block {j}"
        );
    }
}

#[test]
fn q6_k_single_value_layout() {
    // Value 200 = 128·1 + 32·2 + 8: low nibble is the HIGH nibble of ql[64 + 8],
    // high bits are bits 4..6 of qh[32 + 8], scale index 12.
    let mut b = [0u8; 210];
    b[64 + 8] = 0xA0; // low = 10
    b[128 + 32 + 8] = 0b0011_0000; // high = 3 → q = 10 | 48 = 58 → 26
    b[192 + 12] = (-3i8) as u8;
    b[208..210].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
    let y = dequantize(GgmlType::Q6K, &b, 256).unwrap();
    assert_eq!(y[200], 0.5 * -3.0 * 26.0);
    // every other value of sub-block 12 is code 0 - 32 → 0.5·(-3)·(-32) = 48
    assert_eq!(y[192], 48.0);
    // other sub-blocks have scale 0
    assert_eq!(y[0], 0.0);
}

#[test]
fn wrong_lengths_are_errors() {
    let x = vec![0.5f32; 64];
    let mut buf = vec![0u8; 1000];
    let mut out = vec![0f32; 1000];

    // values not a whole number of blocks
    assert_eq!(
        quantize(GgmlType::Q4_0, &x[..33]),
        Err(QuantError::PartialBlock {
            ty: GgmlType::Q4_0,
            values: 33,
            block_len: 32
        })
    );
    assert!(matches!(
        dequantize(GgmlType::Q4K, &buf[..144], 255),
        Err(QuantError::PartialBlock { .. })
    ));
    // bytes not a whole number of blocks
    assert_eq!(
        dequantize_row(GgmlType::Q8_0, &buf[..35], &mut out[..32]),
        Err(QuantError::PartialBlockBytes {
            ty: GgmlType::Q8_0,
            bytes: 35,
            block_bytes: 34
        })
    );
    // whole blocks on both sides, different counts
    assert_eq!(
        quantize_row(GgmlType::Q8_0, &x, &mut buf[..34]),
        Err(QuantError::LengthMismatch {
            ty: GgmlType::Q8_0,
            values: 64,
            expected_bytes: 68,
            bytes: 34
        })
    );
    assert!(matches!(
        dequantize_row(GgmlType::Nf4, &buf[..72], &mut out[..64]),
        Err(QuantError::LengthMismatch { .. })
    ));
    // formats without a quantizer
    for ty in [
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ] {
        assert_eq!(
            quantize(ty, &vec![0.0; 256]),
            Err(QuantError::CannotQuantize { ty })
        );
        assert!(quantize_row(ty, &[0.0; 256], &mut buf[..ty.block_bytes()]).is_err());
    }
    // absurd sizes do not overflow or allocate
    assert!(matches!(
        dequantize(GgmlType::Q8K, &[], usize::MAX / 256 * 256),
        Err(QuantError::TooLarge { .. })
    ));
    // empty rows are fine
    assert_eq!(quantize(GgmlType::Q4_0, &[]), Ok(vec![]));
    assert_eq!(dequantize(GgmlType::Q6K, &[], 0), Ok(vec![]));

    // every format, odd sizes both ways: never a panic
    for ty in GgmlType::ALL {
        for n in [1usize, 7, 31, 33, 65, 255, 257] {
            for bytes in [1usize, 3, 17, 35, 143, 291, 293] {
                let _ = dequantize_row(ty, &buf[..bytes], &mut out[..n]);
                let _ = quantize_row(ty, &out[..n], &mut buf[..bytes]);
                let _ = dequantize(ty, &buf[..bytes], n);
            }
        }
    }

    // messages name the format and the sizes
    let msg = QuantError::LengthMismatch {
        ty: GgmlType::Q4_1,
        values: 64,
        expected_bytes: 40,
        bytes: 20,
    }
    .to_string();
    assert!(
        msg.contains("q4_1") && msg.contains("64") && msg.contains("40") && msg.contains("20"),
        "{msg}"
    );
}

#[test]
fn block_constants_agree_with_the_type_table() {
    let table: [(GgmlType, usize, usize); 13] = [
        (GgmlType::Q4_0, q4_0::BLOCK_LEN, q4_0::BLOCK_BYTES),
        (GgmlType::Q4_1, q4_1::BLOCK_LEN, q4_1::BLOCK_BYTES),
        (GgmlType::Q5_0, q5_0::BLOCK_LEN, q5_0::BLOCK_BYTES),
        (GgmlType::Q5_1, q5_1::BLOCK_LEN, q5_1::BLOCK_BYTES),
        (GgmlType::Q8_0, q8_0::BLOCK_LEN, q8_0::BLOCK_BYTES),
        (GgmlType::Q8_1, q8_1::BLOCK_LEN, q8_1::BLOCK_BYTES),
        (GgmlType::Q2K, q2_k::BLOCK_LEN, q2_k::BLOCK_BYTES),
        (GgmlType::Q3K, q3_k::BLOCK_LEN, q3_k::BLOCK_BYTES),
        (GgmlType::Q4K, q4_k::BLOCK_LEN, q4_k::BLOCK_BYTES),
        (GgmlType::Q5K, q5_k::BLOCK_LEN, q5_k::BLOCK_BYTES),
        (GgmlType::Q6K, q6_k::BLOCK_LEN, q6_k::BLOCK_BYTES),
        (GgmlType::Q8K, q8_k::BLOCK_LEN, q8_k::BLOCK_BYTES),
        (GgmlType::Nf4, nf4::BLOCK_LEN, nf4::BLOCK_BYTES),
    ];
    for (ty, len, bytes) in table {
        assert_eq!((ty.block_len(), ty.block_bytes()), (len, bytes), "{ty}");
    }
    for ty in GgmlType::ALL {
        assert_eq!(GgmlType::from_name(ty.name()), Some(ty));
        if let Some(id) = ty.id() {
            assert_eq!(GgmlType::from_id(id), Some(ty));
        }
    }
}
