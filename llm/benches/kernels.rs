//! Kernel benchmarks (divan): `cargo bench -p fedtune-llm --bench kernels`.
//!
//! * `dot::{scalar,avx2}::<LEN>(format)`: one weight row · one prepared activation row (Q8_0,
//!   Q8_1 or f32, as [`kernels::act_type`] picks) at SmolLM2-135M's row lengths, 576 (hidden
//!   size) and 1536 (FFN size). Throughput is reported in values (multiply-adds) and in bytes
//!   read (weight row + activation row).
//! * `matmul_q4_1`: SmolLM2's FFN gate/up shape, a 1536×576 Q4_1 matrix, times 1 token (decode)
//!   and 64 tokens (prefill), activation quantization included, in the global rayon pool and in
//!   a pool of 1 thread; throughput in multiply-adds and in weight bytes.
//! * `matmul_q4_0_1thread::{stored,interleaved}`: the same shape in Q4_0 on one thread, rows
//!   as stored (the AVX2 tiles) and interleaved sixteen at a time (the AVX-512 VNNI kernels;
//!   on CPUs without them the interleaved copy is ignored and both run the same code).
//!
//! * `kquant::{direct,dequantize_row}::<LEN>(format)`: one Q4_K or Q6_K weight row (random
//!   blocks) · one activation row at Gemma 3 270M's row lengths, 1024 (attention output) and
//!   2048 (FFN down): the direct kernel on Q8_K activations, and what matmul did before it,
//!   dequantizing the row to f32 and taking the f32 dot product.
//!
//! Without AVX2+FMA+F16C the `avx2` benches run the scalar kernels ([`kernels::dot_fn`] falls
//! back), which `main` points out.

use divan::counter::{BytesCount, ItemsCount};
use divan::{Bencher, black_box};
use fedtune_llm::kernels::{self, Level, QMatrix, cpu};
use fedtune_llm::quant::{self, GgmlType};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn main() {
    if cpu::detected() < Level::Avx2 {
        eprintln!("note: this CPU has no AVX2+FMA+F16C: the avx2 benches run the scalar kernels");
    }
    divan::main();
}

/// Every format with a direct kernel.
const FORMATS: [GgmlType; 8] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::F16,
    GgmlType::Bf16,
    GgmlType::F32,
];

/// SmolLM2-135M's row lengths: hidden size and FFN size.
const LENS: [usize; 2] = [576, 1536];

/// Weight-like values: uniform in ±1 with a per-row seed.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(-1.0f32..1.0)).collect()
}

fn bench_dot(bencher: Bencher, ty: GgmlType, n: usize, level: Level) {
    let w = quant::quantize(ty, &values(n, 1)).expect("quantizable format");
    let a = quant::quantize(kernels::act_type(ty), &values(n, 2)).expect("activation format");
    let f = kernels::dot_fn(ty, level).expect("a direct kernel");
    bencher
        .counter(ItemsCount::new(n))
        .counter(BytesCount::new(w.len() + a.len()))
        .bench_local(|| f(black_box(&w), black_box(&a)));
}

mod dot {
    use super::*;

    #[divan::bench(consts = LENS, args = FORMATS)]
    fn scalar<const N: usize>(bencher: Bencher, ty: GgmlType) {
        bench_dot(bencher, ty, N, Level::Scalar);
    }

    #[divan::bench(consts = LENS, args = FORMATS)]
    fn avx2<const N: usize>(bencher: Bencher, ty: GgmlType) {
        bench_dot(bencher, ty, N, Level::Avx2);
    }
}

fn bench_matmul(bencher: Bencher, tokens: usize, pool: Option<&rayon::ThreadPool>) {
    bench_matmul_of(bencher, GgmlType::Q4_1, false, tokens, pool);
}

fn bench_matmul_of(
    bencher: Bencher,
    ty: GgmlType,
    interleaved: bool,
    tokens: usize,
    pool: Option<&rayon::ThreadPool>,
) {
    let (rows, cols) = (1536, 576);
    let w = quant::quantize(ty, &values(rows * cols, 3)).expect("the format quantizes");
    let m = QMatrix::new(ty, rows, cols, &w).expect("whole blocks");
    let packed = kernels::Q4_0x16::pack(&m).filter(|_| interleaved);
    let m = match &packed {
        Some(p) => m.with_packed(p).expect("same shape"),
        None => m,
    };
    let x = values(tokens * cols, 4);
    let mut out = vec![0.0f32; tokens * rows];
    let bencher = bencher
        .counter(ItemsCount::new(rows * cols * tokens))
        .counter(BytesCount::new(w.len()));
    match pool {
        Some(p) => {
            bencher.bench_local(|| p.install(|| kernels::matmul(&m, black_box(&x), &mut out)))
        }
        None => bencher.bench_local(|| kernels::matmul(&m, black_box(&x), &mut out)),
    }
}

/// 1536×576 Q4_1 · `tokens` rows of activations, in the global rayon pool (all cores).
#[divan::bench(args = [1, 64])]
fn matmul_q4_1(bencher: Bencher, tokens: usize) {
    bench_matmul(bencher, tokens, None);
}

/// The same on one thread.
#[divan::bench(args = [1, 64])]
fn matmul_q4_1_1thread(bencher: Bencher, tokens: usize) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a 1-thread pool");
    bench_matmul(bencher, tokens, Some(&pool));
}

/// 1536×576 Q4_0 · `tokens` rows of activations on one thread, in both layouts.
mod matmul_q4_0_1thread {
    use super::*;

    fn run(bencher: Bencher, tokens: usize, interleaved: bool) {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("a 1-thread pool");
        bench_matmul_of(bencher, GgmlType::Q4_0, interleaved, tokens, Some(&pool));
    }

    #[divan::bench(args = [1, 64])]
    fn stored(bencher: Bencher, tokens: usize) {
        run(bencher, tokens, false);
    }

    #[divan::bench(args = [1, 64])]
    fn interleaved(bencher: Bencher, tokens: usize) {
        run(bencher, tokens, true);
    }
}

/// K-quant formats with a direct kernel, and Gemma 3 270M's row lengths that use them.
const KQUANTS: [GgmlType; 2] = [GgmlType::Q4K, GgmlType::Q6K];
const KQUANT_LENS: [usize; 2] = [1024, 2048];

/// Random blocks of `ty` with small finite f16 scales (K-quants cannot be quantized here).
fn kquant_row(ty: GgmlType, n: usize) -> Vec<u8> {
    let mut r = ChaCha8Rng::seed_from_u64(3);
    let bb = ty.block_bytes();
    let mut w = vec![0u8; n / ty.block_len() * bb];
    r.fill(&mut w[..]);
    let scale = half::f16::from_f32(0.01).to_le_bytes();
    let fields: &[usize] = if ty == GgmlType::Q4K { &[0, 2] } else { &[208] };
    for b in w.chunks_exact_mut(bb) {
        for &off in fields {
            b[off..off + 2].copy_from_slice(&scale);
        }
    }
    w
}

mod kquant {
    use super::*;

    #[divan::bench(consts = KQUANT_LENS, args = KQUANTS)]
    fn direct<const N: usize>(bencher: Bencher, ty: GgmlType) {
        let w = kquant_row(ty, N);
        let a = quant::quantize(GgmlType::Q8K, &values(N, 2)).expect("Q8_K");
        let f = kernels::dot_fn(ty, cpu::level()).expect("a direct kernel");
        bencher
            .counter(ItemsCount::new(N))
            .bench_local(|| f(black_box(&w), black_box(&a)));
    }

    #[divan::bench(consts = KQUANT_LENS, args = KQUANTS)]
    fn dequantize_row<const N: usize>(bencher: Bencher, ty: GgmlType) {
        let w = kquant_row(ty, N);
        let x = values(N, 2);
        let mut row = vec![0f32; N];
        bencher.counter(ItemsCount::new(N)).bench_local(|| {
            quant::dequantize_row(ty, black_box(&w), &mut row).expect("whole blocks");
            kernels::dot_f32(&row, black_box(&x))
        });
    }
}
