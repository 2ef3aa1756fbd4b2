//! Which SIMD paths this CPU can run, detected once at run time.
//!
//! Machines differ (AVX2-only or AVX-512 parts), so one binary carries every path and picks at
//! start-up. `FEDTUNE_KERNELS=scalar` forces the portable reference and `FEDTUNE_KERNELS=avx2`
//! the AVX2 paths on an AVX-512 part (for comparisons and tests).

use std::sync::OnceLock;

/// The instruction-set level the kernels run at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Portable Rust, the reference every SIMD path is tested against.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// AVX2's set plus AVX-512 F/BW/VL and VNNI (`vpdpbusd`): the interleaved-row kernels of
    /// [`super::q4_0x16`] and [`super::avx512`].
    Avx512,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512-vnni",
        }
    }
}

/// The best level this CPU supports.
pub fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512vnni")
            {
                return Level::Avx512;
            }
            return Level::Avx2;
        }
    }
    Level::Scalar
}

/// The level in use: the detected one, lowered by `FEDTUNE_KERNELS=scalar` or `=avx2`.
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = match std::env::var("FEDTUNE_KERNELS").as_deref() {
            Ok("scalar") => Level::Scalar,
            Ok("avx2") => Level::Avx2,
            _ => Level::Avx512,
        };
        detected().min(cap)
    })
}
