//! Matrix products `out = x · Wᵀ` for a quantized weight matrix `W` [rows × cols] and f32
//! activations `x` [n × cols], split by weight rows across the threads of the current rayon
//! pool ([`pool::run`]).

use super::q4_0x16::GROUP_ROWS;
use super::{
    ActBlock, Dot4Fn, DotFn, GEMM_Q4_0, GEMM_Q4_1, GEMM_Q5_0, GEMM_Q8_0, Level, QMatrix, TILE_ROWS,
    act_type, cpu, dot_fn, dot4_fn, pool,
};
#[cfg(target_arch = "x86_64")]
use super::{avx2, avx512};
use crate::quant::{self, GgmlType};

/// Activation rows prepared once for every weight row of one format.
#[derive(Debug)]
pub struct Acts {
    ty: GgmlType,
    row_bytes: usize,
    data: Vec<u8>,
    /// The same rows laid out for the AVX2 [`avx2::gemm`] kernels, where they apply.
    simd: Option<SimdActs>,
}

/// Activations for the AVX2 kernels: [`ActBlock`]s and `[d, s, d, s]` scales as f32 (`s` the
/// Q8_1 sum field, else 0), `nb` per row, row after row.
#[derive(Debug)]
struct SimdActs {
    format: u8,
    blocks: Vec<ActBlock>,
    scales: Vec<[f32; 4]>,
    /// `8·Σ a` per block (Q4_0 weights: the offset of the interleaved kernels).
    sums8: Vec<i32>,
}

impl Acts {
    /// Prepares `n` rows of `cols` values of `x` for weights of type `w`.
    pub fn prepare(w: GgmlType, x: &[f32], cols: usize) -> Self {
        let ty = if dot_fn(w, Level::Scalar).is_some() {
            act_type(w)
        } else {
            GgmlType::F32
        };
        let row_bytes = ty.row_bytes(cols).unwrap_or(0);
        let n = x.len() / cols.max(1);
        let mut data = vec![0u8; row_bytes * n];
        if ty == GgmlType::F32 {
            data.copy_from_slice(bytemuck::cast_slice(&x[..n * cols]));
        } else {
            for (d, row) in data.chunks_exact_mut(row_bytes).zip(x.chunks_exact(cols)) {
                quantize_act_row(ty, row, d);
            }
        }
        let simd = gemm_format(w).map(|f| SimdActs::new(f, ty, &data));
        Self {
            ty,
            row_bytes,
            data,
            simd,
        }
    }

    fn row(&self, t: usize) -> &[u8] {
        &self.data[t * self.row_bytes..(t + 1) * self.row_bytes]
    }

    fn n(&self) -> usize {
        self.data.len().checked_div(self.row_bytes).unwrap_or(0)
    }
}

impl SimdActs {
    /// Re-lays Q8_0 / Q8_1 blocks (`data`, of type `ty`) for kernel format `format`.
    fn new(format: u8, ty: GgmlType, data: &[u8]) -> Self {
        let (header, has_sum) = if ty == GgmlType::Q8_1 {
            (4, true)
        } else {
            (2, false)
        };
        let f16_at = |b: &[u8], i: usize| half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
        let mut blocks = Vec::with_capacity(data.len() / (header + 32));
        let mut scales = Vec::with_capacity(blocks.capacity());
        let mut sums8 = Vec::new();
        for b in data.chunks_exact(header + 32) {
            let mut blk = ActBlock {
                qs: [0; 32],
                extra: [0; 32],
            };
            blk.qs.copy_from_slice(&b[header..]);
            if format == GEMM_Q4_0 || format == GEMM_Q5_0 {
                let mut total = 0;
                for (g, e) in blk.qs.chunks_exact(4).zip(blk.extra.chunks_exact_mut(4)) {
                    let sum: i32 = g.iter().map(|&q| i32::from(q as i8)).sum();
                    e.copy_from_slice(&(8 * sum).to_le_bytes());
                    total += 8 * sum;
                }
                sums8.push(total);
            }
            let d = f16_at(b, 0);
            let s = if has_sum { f16_at(b, 2) } else { 0.0 };
            blocks.push(blk);
            scales.push([d, s, d, s]);
        }
        Self {
            format,
            blocks,
            scales,
            sums8,
        }
    }
}

/// The AVX2 [`avx2::gemm`] format for weights of type `w`, when the CPU and
/// `FEDTUNE_KERNELS` allow it.
fn gemm_format(w: GgmlType) -> Option<u8> {
    if cpu::level() < Level::Avx2 || cpu::detected() < Level::Avx2 {
        return None;
    }
    match w {
        GgmlType::Q4_0 => Some(GEMM_Q4_0),
        GgmlType::Q4_1 => Some(GEMM_Q4_1),
        GgmlType::Q8_0 => Some(GEMM_Q8_0),
        GgmlType::Q5_0 => Some(GEMM_Q5_0),
        _ => None,
    }
}

/// `out[t][r] = Σ_c x[t][c] · W[r][c]` for `n = x.len() / W.cols` rows of `x`;
/// `out` has `n × W.rows` values.
pub fn matmul(w: &QMatrix, x: &[f32], out: &mut [f32]) {
    let acts = Acts::prepare(w.ty, x, w.cols);
    matmul_into(w, &acts, out);
}

/// [`matmul`] with activations already prepared (several matrices of one format sharing an
/// input, such as q/k/v or gate/up, prepare once).
pub fn matmul_into(w: &QMatrix, acts: &Acts, out: &mut [f32]) {
    matmul_many(&mut [MatJob { w: *w, acts, out }]);
}

/// One product of [`matmul_many`]: `out = acts · wᵀ` (`out` as in [`matmul`]).
pub struct MatJob<'w, 'a> {
    pub w: QMatrix<'w>,
    pub acts: &'a Acts,
    pub out: &'a mut [f32],
}

/// Several independent products in one parallel region (q, k and v; gate and up), split by
/// weight rows: one hand-out of tasks instead of one fork-join per matrix.
pub fn matmul_many(jobs: &mut [MatJob]) {
    let threads = rayon::current_num_threads().max(1);
    let mut tasks = Vec::new();
    let mut plans = Vec::with_capacity(jobs.len());
    for (j, job) in jobs.iter_mut().enumerate() {
        let (w, acts) = (&job.w, job.acts);
        let n = acts.n();
        assert_eq!(job.out.len(), n * w.rows, "matmul output size");
        // About 8 tasks per thread and matrix: enough to balance, few enough to be cheap.
        let kernel = RowKernel::new(w, acts);
        let unit = match kernel {
            RowKernel::Packed => GROUP_ROWS,
            _ => TILE_ROWS,
        };
        let chunk = w
            .rows
            .div_ceil(threads * 8)
            .max(if n == 1 { 16 } else { TILE_ROWS })
            .next_multiple_of(unit);
        tasks.extend(
            (0..w.rows)
                .step_by(chunk)
                .map(|r0| (j, r0, (r0 + chunk).min(w.rows))),
        );
        plans.push((kernel, OutPtr(job.out.as_mut_ptr())));
    }
    let jobs = &*jobs;
    let plans = &plans;
    pool::run(tasks.len(), &|i| {
        let (j, r0, r1) = tasks[i];
        let (job, (kernel, out)) = (&jobs[j], &plans[j]);
        let n = job.acts.n();
        if let RowKernel::Packed = kernel {
            // SAFETY: this task alone writes rows r0..r1 (multiples of 16) of every output row
            // of `job.out`, which is n × rows long and borrowed mutably for the whole call.
            #[allow(unsafe_code)]
            unsafe {
                packed_rows(cpu::level(), &job.w, r0, r1, job.acts, out.0)
            };
            return;
        }
        if n == 1 {
            // SAFETY: tasks cover disjoint row ranges of this job's output, which `job.out`
            // borrows mutably for the whole call (here: the values r0..r1).
            #[allow(unsafe_code)]
            let o = unsafe { std::slice::from_raw_parts_mut(out.0.add(r0), r1 - r0) };
            kernel.rows(&job.w, r0, r1, job.acts, o);
            return;
        }
        let mut by_row = vec![0f32; (r1 - r0) * n];
        kernel.rows(&job.w, r0, r1, job.acts, &mut by_row);
        for (k, vals) in by_row.chunks_exact(n).enumerate() {
            for (t, &v) in vals.iter().enumerate() {
                // SAFETY: as above, element (t, r0 + k) belongs to this task alone, and
                // t·rows + r0 + k < n·rows = `job.out.len()`.
                #[allow(unsafe_code)]
                unsafe {
                    *out.0.add(t * job.w.rows + r0 + k) = v;
                }
            }
        }
    });
}

/// A job's output, written by several tasks at disjoint positions.
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint elements through it while [`matmul_many`] holds the `&mut`.
#[allow(unsafe_code)]
unsafe impl Sync for OutPtr {}
#[allow(unsafe_code)]
unsafe impl Send for OutPtr {}

/// How weight rows meet activation rows.
#[derive(Clone, Copy)]
enum RowKernel {
    /// The AVX2 or AVX-512 kernels on interleaved Q4_0 rows, writing the output in place.
    Packed,
    /// The AVX2 kernels on the quantized bytes and prepared activations.
    Gemm(u8),
    /// A direct kernel on the quantized bytes, one pair at a time, or four activation rows
    /// at a time where there is such a kernel.
    Direct(DotFn, Option<Dot4Fn>),
    /// Dequantize the row into scratch, then an f32 dot product.
    Dequantize(GgmlType, DotFn),
}

impl RowKernel {
    fn new(m: &QMatrix, acts: &Acts) -> Self {
        let (w, level) = (m.ty, cpu::level());
        if m.packed.is_some()
            && level >= Level::Avx2
            && acts.simd.as_ref().is_some_and(|s| s.format == GEMM_Q4_0)
        {
            return Self::Packed;
        }
        let f32_dot = dot_fn(GgmlType::F32, level).expect("f32 kernel");
        if acts.ty != act_type(w) {
            return Self::Dequantize(w, f32_dot);
        }
        if let Some(s) = &acts.simd {
            return Self::Gemm(s.format);
        }
        match dot_fn(w, level) {
            Some(f) => Self::Direct(f, dot4_fn(w, level)),
            None => Self::Dequantize(w, f32_dot),
        }
    }

    /// Fills `out` (`[rows][n]`, row-major) for weight rows `r0..r1` and all activations.
    fn rows(&self, w: &QMatrix, r0: usize, r1: usize, acts: &Acts, out: &mut [f32]) {
        let n = acts.n();
        match *self {
            Self::Packed => unreachable!("interleaved rows are written in place"),
            Self::Gemm(f) => gemm_rows(f, w, r0, r1, acts, out),
            Self::Direct(f, f4) => {
                for (k, vals) in out.chunks_exact_mut(n).enumerate() {
                    let wr = w.row(r0 + k);
                    let mut t = 0;
                    if let Some(f4) = f4 {
                        while t + 4 <= n {
                            let a = std::array::from_fn(|i| acts.row(t + i));
                            vals[t..t + 4].copy_from_slice(&f4(wr, a));
                            t += 4;
                        }
                    }
                    for (t, v) in vals.iter_mut().enumerate().skip(t) {
                        *v = f(wr, acts.row(t));
                    }
                }
            }
            Self::Dequantize(ty, f) => {
                let mut scratch = vec![0f32; w.cols];
                for (k, vals) in out.chunks_exact_mut(n).enumerate() {
                    quant::dequantize_row(ty, w.row(r0 + k), &mut scratch).expect("validated row");
                    for (t, v) in vals.iter_mut().enumerate() {
                        *v = f(bytemuck::cast_slice(&scratch), acts.row(t));
                    }
                }
            }
        }
    }
}

/// Rows `r0..r1` of `w` times every activation row with the AVX2 kernels.
#[allow(unsafe_code)]
fn gemm_rows(f: u8, w: &QMatrix, r0: usize, r1: usize, acts: &Acts, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        let s = acts.simd.as_ref().expect("prepared for the AVX2 kernels");
        let rows = &w.data[r0 * w.row_bytes..r1 * w.row_bytes];
        let (b, sc, n, rb) = (&s.blocks[..], &s.scales[..], acts.n(), w.row_bytes);
        // SAFETY: `SimdActs` exist only when `gemm_format` found AVX2, FMA and F16C.
        unsafe {
            match f {
                GEMM_Q4_0 => avx2::gemm_rows::<GEMM_Q4_0>(rows, rb, b, sc, n, out),
                GEMM_Q4_1 => avx2::gemm_rows::<GEMM_Q4_1>(rows, rb, b, sc, n, out),
                GEMM_Q5_0 => avx2::gemm_rows::<GEMM_Q5_0>(rows, rb, b, sc, n, out),
                _ => avx2::gemm_rows::<GEMM_Q8_0>(rows, rb, b, sc, n, out),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "no AVX2 kernels here: {f} {w:?} {r0} {r1} {acts:?} {}",
        out.len()
    );
}

/// The whole product of an interleaved matrix on one thread with the kernel of `level` (tests
/// compare every level's kernel with the scalar reference on one machine).
#[cfg(test)]
pub(super) fn interleaved_at(level: Level, w: &QMatrix, acts: &Acts, out: &mut [f32]) {
    assert!(level >= Level::Avx2 && cpu::detected() >= level && out.len() == acts.n() * w.rows);
    // SAFETY: `out` is exactly n × rows and borrowed mutably for the call.
    #[allow(unsafe_code)]
    unsafe {
        packed_rows(level, w, 0, w.rows, acts, out.as_mut_ptr())
    }
}

/// Rows `r0..r1` (multiples of 16) of `w`'s interleaved copy times every activation row,
/// straight into the `[n × rows]` output at `out`.
///
/// # Safety
/// `out` is valid for `n × w.rows` floats and nothing else touches the elements of rows
/// `r0..r1` during the call.
#[allow(unsafe_code)]
unsafe fn packed_rows(level: Level, w: &QMatrix, r0: usize, r1: usize, acts: &Acts, out: *mut f32) {
    #[cfg(target_arch = "x86_64")]
    {
        let p = w.packed.expect("interleaved rows");
        let s = acts.simd.as_ref().expect("prepared for the SIMD kernels");
        let rows = super::q4_0x16::ActRows {
            blocks: &s.blocks,
            sums8: &s.sums8,
            scales: &s.scales,
            nb: p.blocks(),
        };
        assert!(r0.is_multiple_of(GROUP_ROWS) && r1.is_multiple_of(GROUP_ROWS) && r1 <= p.rows());
        assert!(s.blocks.len() >= acts.n() * p.blocks() && s.sums8.len() == s.blocks.len());
        let (g0, g1, n) = (r0 / GROUP_ROWS, r1 / GROUP_ROWS, acts.n());
        // SAFETY: `Packed` is chosen only at `Level::Avx2` and above, and each kernel only at
        // its level; the activation arrays hold n rows of `blocks()` items (asserted); the
        // groups are inside the matrix; `out` is the caller's contract.
        unsafe {
            if level >= Level::Avx512 {
                avx512::gemm_q4_0x16(p, g0, g1, rows, n, out, w.rows)
            } else {
                avx2::gemm_q4_0x16(p, g0, g1, rows, n, out, w.rows)
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no interleaved kernels here: {level:?} {w:?} {r0} {r1} {acts:?} {out:?}");
}

/// Quantizes one activation row as ggml's CPU backend does before a matrix product. For Q8_0
/// and Q8_1 that is the x86 AVX2 `quantize_row_q8_0` / `quantize_row_q8_1`, which differ from
/// the reference quantizers ([`quant::quantize_row`], used for weights) in two ways that flip
/// codes: the inverse scale is `127 / amax` (not `1 / (amax / 127)`), and halves round to even.
pub(super) fn quantize_act_row(ty: GgmlType, x: &[f32], out: &mut [u8]) {
    let (header, sum_field) = match ty {
        GgmlType::Q8_0 => (2, false),
        GgmlType::Q8_1 => (4, true),
        _ => return quant::quantize_row(ty, x, out).expect("activation rows are whole blocks"),
    };
    let block_bytes = header + 32;
    for (xb, b) in x.chunks_exact(32).zip(out.chunks_exact_mut(block_bytes)) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in b[header..].iter_mut().zip(xb) {
            // Round half to even (`_mm256_round_ps`): |v·id| ≤ 127, far below 2²², so adding and
            // removing 1.5·2²³ rounds to an integer exactly (and vectorizes, unlike `rintf`).
            let qi = ((v * id + 12_582_912.0) - 12_582_912.0) as i32;
            sum += qi;
            *q = qi as i8 as u8;
        }
        b[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
        if sum_field {
            b[2..4].copy_from_slice(&half::f16::from_f32(d * sum as f32).to_le_bytes());
        }
    }
}
