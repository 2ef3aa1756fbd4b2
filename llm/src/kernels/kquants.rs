//! Dot products of K-quant weight rows (Q4_K, Q6_K) with Q8_K activation rows, straight from
//! the blocks, in the arithmetic of ggml's AVX2 `ggml_vec_dot_q4_K_q8_K` and
//! `ggml_vec_dot_q6_K_q8_K`: exact integer sums kept in eight 32-bit lanes (lane `u` holds the
//! products of bytes `4u..4u+4` of every 32-byte group), one FMA per block and lane into eight
//! f32 accumulators, then ggml's horizontal sum. This is the scalar reference; the AVX2
//! kernels (`super::avx2`) compute the same lanes with `maddubs`/`madd` and give the same
//! bits.

use half::f16;

use crate::llama::ggml_math::hsum8;
use crate::quant::{q4_k, q6_k, q8_k};

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// A Q8_K block's scale, codes and sums of 16.
fn q8k(a: &[u8]) -> (f32, &[u8], [i32; 16]) {
    let d = f32::from_le_bytes([a[0], a[1], a[2], a[3]]);
    let mut bsums = [0i32; 16];
    for (g, s) in bsums.iter_mut().enumerate() {
        *s = i32::from(i16::from_le_bytes([a[260 + 2 * g], a[261 + 2 * g]]));
    }
    (d, &a[4..260], bsums)
}

/// `lanes[u] += scale · Σ codes[b]·acts[b]` over bytes `4u..4u+4` of a group of 32 (the
/// `maddubs` + `madd` pair of ggml's kernels).
#[inline(always)]
fn madd_group(lanes: &mut [i32; 8], codes: &[u8; 32], acts: &[u8], scales: [i32; 2]) {
    for (u, lane) in lanes.iter_mut().enumerate() {
        let mut s = 0i32;
        for b in 4 * u..4 * u + 4 {
            s += i32::from(codes[b]) * i32::from(acts[b] as i8);
        }
        *lane += scales[u / 4] * s;
    }
}

/// Q4_K weights (144-byte blocks) · Q8_K activations (292-byte blocks).
#[inline(always)]
pub fn dot_q4_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    let mut acc_m = [0f32; 4];
    for (wb, ab) in w
        .chunks_exact(q4_k::BLOCK_BYTES)
        .zip(a.chunks_exact(q8_k::BLOCK_BYTES))
    {
        let (ad, qa, bsums) = q8k(ab);
        let d = ad * f16_at(wb, 0);
        let dmin = -ad * f16_at(wb, 2);
        let mut packed = [0u8; 12];
        packed.copy_from_slice(&wb[4..16]);
        let sm: [(i32, i32); 8] = std::array::from_fn(|j| {
            let (s, m) = q4_k::scale_min(&packed, j);
            (i32::from(s), i32::from(m))
        });
        // The mins: sub-block j (32 values) has the sums of its two groups of 16.
        for (k, m) in acc_m.iter_mut().enumerate() {
            let prod = (2 * k..2 * k + 2)
                .map(|j| sm[j].1 * (bsums[2 * j] + bsums[2 * j + 1]))
                .sum::<i32>();
            *m = dmin.mul_add(prod as f32, *m);
        }
        let mut lanes = [0i32; 8];
        for c in 0..4 {
            let bytes = &wb[16 + 32 * c..16 + 32 * (c + 1)];
            let lo: [u8; 32] = std::array::from_fn(|b| bytes[b] & 0x0F);
            let hi: [u8; 32] = std::array::from_fn(|b| bytes[b] >> 4);
            let (s_lo, s_hi) = (sm[2 * c].0, sm[2 * c + 1].0);
            madd_group(&mut lanes, &lo, &qa[64 * c..64 * c + 32], [s_lo; 2]);
            madd_group(&mut lanes, &hi, &qa[64 * c + 32..64 * c + 64], [s_hi; 2]);
        }
        for (x, &l) in acc.iter_mut().zip(&lanes) {
            *x = d.mul_add(l as f32, *x);
        }
    }
    hsum8(&acc) + ((acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]))
}

/// Q6_K weights (210-byte blocks) · Q8_K activations (292-byte blocks). The codes are summed
/// unsigned (0..63) and the offset of 32 is taken off once per block through the sums of 16.
#[inline(always)]
pub fn dot_q6_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    for (wb, ab) in w
        .chunks_exact(q6_k::BLOCK_BYTES)
        .zip(a.chunks_exact(q8_k::BLOCK_BYTES))
    {
        let (ad, qa, bsums) = q8k(ab);
        let d = ad * f16_at(wb, 208);
        let sc: [i32; 16] = std::array::from_fn(|i| i32::from(wb[192 + i] as i8));
        let mut lanes = [0i32; 8];
        for h in 0..2 {
            let ql1 = &wb[64 * h..64 * h + 32];
            let ql2 = &wb[64 * h + 32..64 * h + 64];
            let qh = &wb[128 + 32 * h..128 + 32 * h + 32];
            let groups: [[u8; 32]; 4] = [
                std::array::from_fn(|b| (ql1[b] & 15) | ((qh[b] & 3) << 4)),
                std::array::from_fn(|b| (ql2[b] & 15) | ((qh[b] & 12) << 2)),
                std::array::from_fn(|b| (ql1[b] >> 4) | (qh[b] & 48)),
                std::array::from_fn(|b| (ql2[b] >> 4) | ((qh[b] & 192) >> 2)),
            ];
            for (t, codes) in groups.iter().enumerate() {
                let is = 4 * h + t;
                let acts = &qa[128 * h + 32 * t..128 * h + 32 * t + 32];
                madd_group(&mut lanes, codes, acts, [sc[2 * is], sc[2 * is + 1]]);
            }
        }
        for (k, lane) in lanes.iter_mut().enumerate() {
            *lane -= 32 * (bsums[2 * k] * sc[2 * k] + bsums[2 * k + 1] * sc[2 * k + 1]);
        }
        for (x, &l) in acc.iter_mut().zip(&lanes) {
            *x = d.mul_add(l as f32, *x);
        }
    }
    hsum8(&acc)
}
