//! Runtime CPU dispatch for the element-wise loops both sides run on whole models (forming,
//! checking and folding updates). The binary is built for baseline x86-64 (SSE2) so it runs
//! on any machine; these loops are compiled a second time with AVX2 enabled and chosen at run
//! time. The arithmetic is the same IEEE operations either way (Rust never fuses a multiply
//! and an add on its own), so results are bit-identical on every CPU.

use std::sync::atomic::{AtomicBool, Ordering};

static AVX2_ALLOWED: AtomicBool = AtomicBool::new(true);

/// Whether [`vectorized`] may use AVX2 (it does by default where the CPU has it); turned off,
/// every loop runs as built. For benchmarks that time both builds side by side.
pub fn allow_avx2(allowed: bool) {
    AVX2_ALLOWED.store(allowed, Ordering::Relaxed);
}

/// Runs `f` compiled with AVX2 when the CPU has it, else as built. Only code inlined into
/// the AVX2 copy gets the wider instructions, so mark the closure `#[inline(always)]` and
/// have it call an `#[inline(always)]` function that takes its slices and scalars as
/// arguments: a loop reading a value that the closure captured by reference reloads it every
/// iteration (the stores might alias it) and does not vectorize.
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && AVX2_ALLOWED.load(Ordering::Relaxed) {
        #[target_feature(enable = "avx2")]
        fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU was just checked to have AVX2.
        #[allow(unsafe_code)]
        return unsafe { with_avx2(f) };
    }
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sum += scale · v`, element-wise, in f64: the shape of the server's fold, written as the
    /// docs above say a loop must be to get AVX2 instructions in the dispatched copy.
    #[inline(always)]
    fn fold(sum: &mut [f64], v: &[f32], scale: f64) {
        for (s, &x) in sum.iter_mut().zip(v) {
            *s += scale * f64::from(x);
        }
    }

    /// The dispatched (AVX2) loop computes exactly what the baseline loop does. Where the CPU
    /// has no AVX2 both would be the same code: the test says so and proves nothing there.
    #[test]
    fn vectorized_loops_match_the_baseline() {
        #[cfg(target_arch = "x86_64")]
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("SKIPPED: no AVX2 on this CPU, the dispatched loop is the baseline one");
            return;
        }
        let v: Vec<f32> = (0..10_007).map(|i| (i as f32 * 0.37).sin() * 1e3).collect();
        let (mut a, mut b) = (vec![0.5; v.len()], vec![0.5; v.len()]);
        allow_avx2(false);
        vectorized(
            #[inline(always)]
            || fold(&mut a, &v, 7.25),
        );
        allow_avx2(true);
        vectorized(
            #[inline(always)]
            || fold(&mut b, &v, 7.25),
        );
        assert!(a.iter().any(|&x| x != 0.5));
        assert_eq!(a, b);
    }
}
