//! Differential privacy's costs (divan): `cargo bench -p fedtune-privacy --bench noise`.
//!
//! * `gaussian_1m`: the server's central noise on a 1M-value sum (ChaCha20, standard normal).
//! * `discrete_gaussian_1m`: a device's share of distributed noise on 1M quantized values
//!   (σ = 1000 levels), next to `gaussian_1m` so the two read as a ratio in one run.
//! * `clip_1m`: the L2 clip of a 1M-value update (norm, then scale).
//! * `epsilon_after_1000_rounds`: what the server computes after every round (all 156 orders).
#![allow(clippy::unwrap_used)]

use divan::counter::ItemsCount;
use divan::{Bencher, black_box};
use fedtune_privacy::clip::clip_in_place;
use fedtune_privacy::discrete_gaussian;
use fedtune_privacy::gaussian::NoiseSource;
use fedtune_privacy::{RdpAccountant, Sampling};

const N: usize = 1 << 20;

fn main() {
    divan::main();
}

#[divan::bench]
fn gaussian_1m(bencher: Bencher) {
    let mut noise = NoiseSource::seeded(1);
    let mut v = vec![0.0f64; N];
    bencher
        .counter(ItemsCount::new(N))
        .bench_local(|| noise.add_gaussian(black_box(&mut v), 1.0));
}

#[divan::bench]
fn discrete_gaussian_1m(bencher: Bencher) {
    let mut noise = NoiseSource::seeded(2);
    let mut v = vec![0u32; N];
    bencher.counter(ItemsCount::new(N)).bench_local(|| {
        for w in v.iter_mut() {
            *w = w.wrapping_add(discrete_gaussian::sample(1000.0, noise.rng()) as i32 as u32);
        }
        black_box(&v);
    });
}

#[divan::bench]
fn clip_1m(bencher: Bencher) {
    let v: Vec<f32> = (0..N).map(|i| (i as f32).sin()).collect();
    bencher.counter(ItemsCount::new(N)).bench_local(|| {
        let mut u = v.clone();
        black_box(clip_in_place(&mut u, 1.0))
    });
}

#[divan::bench]
fn epsilon_after_1000_rounds(bencher: Bencher) {
    bencher.bench_local(|| {
        let mut a = RdpAccountant::default();
        a.compose(Sampling::Fixed, black_box(0.01), 1.0, 1000)
            .unwrap();
        a.epsilon(1e-6).unwrap()
    });
}
