//! Aggregation benchmarks (divan): `cargo bench -p fedtune-server --bench aggregate`.
//!
//! * `fold::{baseline,avx2}`: one update of 1M f32 values folded into FedAvg's f64 weighted
//!   sum on one thread, as built (SSE2) and with the AVX2 copy of the loop that
//!   `fedtune_proto::simd` picks at run time; throughput in values and in bytes moved (the
//!   update read, the sum read and written).
//! * `commit::{baseline,avx2}`: the end of a round for the same model: the sum divided by the
//!   total weight, added to the global model and rounded to f32, checked finite.
//! * `map_f32::{baseline,avx2}`: a device forming a 1M-value update (`x + 0.001`) and proving
//!   it finite as it writes it.
//!
//! Without AVX2 both variants run the baseline loops, which `main` points out.

use divan::counter::{BytesCount, ItemsCount};
use divan::{Bencher, black_box};
use fedtune_proto::{Bundle, Tensor, simd};
use fedtune_server::strategy::{Aggregator, FedAvg, Strategy, WeightedSum};

const N: usize = 1 << 20;

/// The two builds of each loop, timed one after the other in the same run.
const BUILDS: [&str; 2] = ["baseline", "avx2"];

fn main() {
    #[cfg(target_arch = "x86_64")]
    if !std::arch::is_x86_feature_detected!("avx2") {
        eprintln!("note: this CPU has no AVX2: the avx2 benches run the baseline loops");
    }
    divan::main();
}

fn model(offset: f32) -> Bundle {
    let v: Vec<f32> = (0..N).map(|i| (i as f32 * 0.37 + offset).sin()).collect();
    Bundle::new(vec![Tensor::from_f32_vec("w", vec![N], v).expect("shape")]).expect("bundle")
}

#[divan::bench(args = BUILDS, name = "fold")]
fn fold(bencher: Bencher, build: &str) {
    let global = model(0.0);
    let update = model(1.0);
    let mut sum = Box::new(WeightedSum::new(&global));
    simd::allow_avx2(build == "avx2");
    bencher
        .counter(ItemsCount::new(N))
        .counter(BytesCount::new(N * (4 + 8 + 8)))
        .bench_local(|| sum.fold(black_box(&update), 10.0).expect("fold"));
    simd::allow_avx2(true);
}

#[divan::bench(args = BUILDS, name = "commit")]
fn commit(bencher: Bencher, build: &str) {
    let global = model(0.0);
    let update = model(1.0);
    simd::allow_avx2(build == "avx2");
    bencher
        .counter(ItemsCount::new(N))
        .with_inputs(|| {
            let mut sum: Box<dyn Aggregator> = Box::new(WeightedSum::new(&global));
            sum.fold(&update, 10.0).expect("fold");
            sum
        })
        .bench_local_values(|sum| {
            let aggregate = sum.finish().expect("finish");
            FedAvg.apply(&global, aggregate).expect("apply")
        });
    simd::allow_avx2(true);
}

#[divan::bench(args = BUILDS, name = "map_f32")]
fn map_f32(bencher: Bencher, build: &str) {
    let global = model(0.0);
    simd::allow_avx2(build == "avx2");
    bencher
        .counter(ItemsCount::new(N))
        .counter(BytesCount::new(N * (4 + 4)))
        .bench_local(|| global.tensors()[0].map_f32(|x| x + 0.001));
    simd::allow_avx2(true);
}
