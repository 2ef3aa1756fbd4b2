//! Portable reference dot products between a quantized weight row and a quantized activation
//! row. Integer sums are exact; the float combination follows ggml's order per block.

use half::f16;

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Q4_0 weights (18-byte blocks) · Q8_0 activations (34-byte blocks).
pub fn dot_q4_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (wb, ab) in w.chunks_exact(18).zip(a.chunks_exact(34)) {
        let qs = &wb[2..18];
        let qa = &ab[2..34];
        let mut acc = 0i32;
        for j in 0..16 {
            let lo = i32::from(qs[j] & 0x0f) - 8;
            let hi = i32::from(qs[j] >> 4) - 8;
            acc += lo * i32::from(qa[j] as i8) + hi * i32::from(qa[j + 16] as i8);
        }
        sum += acc as f32 * (f16_at(wb, 0) * f16_at(ab, 0));
    }
    sum
}

/// Q4_1 weights (20-byte blocks) · Q8_1 activations (36-byte blocks).
pub fn dot_q4_1_q8_1(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (wb, ab) in w.chunks_exact(20).zip(a.chunks_exact(36)) {
        let qs = &wb[4..20];
        let qa = &ab[4..36];
        let mut acc = 0i32;
        for j in 0..16 {
            acc += i32::from(qs[j] & 0x0f) * i32::from(qa[j] as i8)
                + i32::from(qs[j] >> 4) * i32::from(qa[j + 16] as i8);
        }
        sum += acc as f32 * (f16_at(wb, 0) * f16_at(ab, 0)) + f16_at(wb, 2) * f16_at(ab, 2);
    }
    sum
}

/// Q5_0 weights (22-byte blocks) · Q8_0 activations.
pub fn dot_q5_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (wb, ab) in w.chunks_exact(22).zip(a.chunks_exact(34)) {
        let qh = u32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]]);
        let qs = &wb[6..22];
        let qa = &ab[2..34];
        let mut acc = 0i32;
        for j in 0..16 {
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            let lo = (u32::from(qs[j] & 0x0f) | h0) as i32 - 16;
            let hi = (u32::from(qs[j] >> 4) | h1) as i32 - 16;
            acc += lo * i32::from(qa[j] as i8) + hi * i32::from(qa[j + 16] as i8);
        }
        sum += acc as f32 * (f16_at(wb, 0) * f16_at(ab, 0));
    }
    sum
}

/// Q5_1 weights (24-byte blocks) · Q8_1 activations.
pub fn dot_q5_1_q8_1(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (wb, ab) in w.chunks_exact(24).zip(a.chunks_exact(36)) {
        let qh = u32::from_le_bytes([wb[4], wb[5], wb[6], wb[7]]);
        let qs = &wb[8..24];
        let qa = &ab[4..36];
        let mut acc = 0i32;
        for j in 0..16 {
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            let lo = (u32::from(qs[j] & 0x0f) | h0) as i32;
            let hi = (u32::from(qs[j] >> 4) | h1) as i32;
            acc += lo * i32::from(qa[j] as i8) + hi * i32::from(qa[j + 16] as i8);
        }
        sum += acc as f32 * (f16_at(wb, 0) * f16_at(ab, 0)) + f16_at(wb, 2) * f16_at(ab, 2);
    }
    sum
}

/// Q8_0 weights · Q8_0 activations.
pub fn dot_q8_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (wb, ab) in w.chunks_exact(34).zip(a.chunks_exact(34)) {
        let acc: i32 = wb[2..34]
            .iter()
            .zip(&ab[2..34])
            .map(|(&x, &y)| i32::from(x as i8) * i32::from(y as i8))
            .sum();
        sum += acc as f32 * (f16_at(wb, 0) * f16_at(ab, 0));
    }
    sum
}

fn f32s(b: &[u8]) -> impl Iterator<Item = f32> + '_ {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// f32 · f32, both as little-endian bytes.
pub fn dot_f32(w: &[u8], x: &[u8]) -> f32 {
    f32s(w).zip(f32s(x)).map(|(a, b)| a * b).sum()
}

/// f16 weights · f32 activations (little-endian bytes).
pub fn dot_f16_f32(w: &[u8], x: &[u8]) -> f32 {
    w.chunks_exact(2)
        .zip(f32s(x))
        .map(|(b, v)| f16::from_le_bytes([b[0], b[1]]).to_f32() * v)
        .sum()
}

/// bf16 weights · f32 activations (little-endian bytes).
pub fn dot_bf16_f32(w: &[u8], x: &[u8]) -> f32 {
    w.chunks_exact(2)
        .zip(f32s(x))
        .map(|(b, v)| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16) * v)
        .sum()
}
