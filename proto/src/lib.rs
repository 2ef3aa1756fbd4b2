//! fedtune's wire protocol and the arithmetic both sides of it must agree on.
//!
//! * [`v1`]: the generated gRPC/protobuf types of package `fedtune.v1`. Only this crate
//!   knows protobuf; other crates convert at the boundary through the `TryFrom` impls here.
//! * [`Tensor`], [`Bundle`]: named tensors (f32, f16, bf16) as the federation moves them.
//! * [`EncodedBundle`], [`BundleReceiver`]: the bundle codec (payload layout, optional zstd,
//!   chunking, XXH3-128 digest), so a model of any size travels in chunks of at most 1 MiB.
//! * [`TrainingPlan`]: the local training a round asks for, converted once from the wire.
//! * [`bulk`]: those chunks framed and deframed for gRPC without copying them.
//! * [`simd`]: whole-model loops compiled for AVX2 too, chosen at run time.

pub mod bulk;
mod codec;
mod dtype;
mod error;
mod finite;
mod header;
pub mod identity;
mod plan;
pub mod simd;
mod tensor;
pub mod tls;

/// Generated protobuf and gRPC code for package `fedtune.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod v1 {
    tonic::include_proto!("fedtune.v1");
}

pub use codec::{BundleReceiver, EncodedBundle, MAX_CHUNK_BYTES};
pub use dtype::DType;
pub use error::CodecError;
pub use finite::FiniteBundle;
pub use header::{BundleHeader, Compression, Digest, TensorSpec};
pub use plan::{LocalOptimizer, PlanError, TrainingPlan};
pub use tensor::{Bundle, Tensor};

// Tensors are handled as little-endian bytes without conversion.
#[cfg(target_endian = "big")]
compile_error!("fedtune supports little-endian targets only");
