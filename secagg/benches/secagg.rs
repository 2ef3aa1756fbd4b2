//! SecAgg+ costs (divan): `cargo bench -p fedtune-secagg --bench secagg`.
//!
//! * `mask_expand`: one 1M-word mask (ChaCha20) added to a vector: what a device pays per
//!   neighbour, and the server per survivor and per dropped device's neighbour.
//! * `encode`: quantizing a 1M-value update into Z_2^32 with stochastic rounding.
//! * `device_round`: one device's whole round among 12 neighbours for a 1M-value update
//!   (share, mask) next to `plain_fold`, what the server does with one plain update (an f64
//!   weighted sum), so the two read as a ratio in one run.

use divan::counter::ItemsCount;
use divan::{Bencher, black_box};
use fedtune_secagg::keys::round_context;
use fedtune_secagg::prg::apply_mask;
use fedtune_secagg::protocol::{Device, Params, neighbour_graph};
use fedtune_secagg::quantize::Quantizer;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const N: usize = 1 << 20;

fn main() {
    divan::main();
}

#[divan::bench]
fn mask_expand(bencher: Bencher) {
    let mut v = vec![0u32; N];
    bencher
        .counter(ItemsCount::new(N))
        .bench_local(|| apply_mask(black_box(&mut v), &[7; 32], true));
}

#[divan::bench]
fn encode(bencher: Bencher) {
    let values: Vec<f32> = (0..N).map(|i| (i as f32 * 0.37).sin() * 0.01).collect();
    let q = Quantizer {
        clip: 0.05,
        bits: 16,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    bencher
        .counter(ItemsCount::new(N))
        .bench_local(|| q.encode(black_box(&values), 3, &mut rng));
}

#[divan::bench]
fn device_round(bencher: Bencher) {
    let n = 13;
    let graph = neighbour_graph(n, 12, 1);
    let params = Params {
        threshold: 7,
        context: round_context(1, 0),
    };
    let encoded = vec![1u32; N + 1];
    bencher.counter(ItemsCount::new(N)).bench_local(|| {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut devices: Vec<Device> = (0..n as u32)
            .map(|i| Device::new(i, graph[i as usize].clone(), params.clone(), &mut rng))
            .collect();
        let adverts: Vec<_> = devices.iter().map(Device::advert).collect();
        let mut mail = Vec::new();
        for d in &mut devices {
            mail.extend(d.share(&adverts, &mut rng).expect("share"));
        }
        black_box(devices[0].mask(&mail, &encoded).expect("mask"))
    });
}

#[divan::bench]
fn plain_fold(bencher: Bencher) {
    let update: Vec<f32> = (0..N).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut sum = vec![0f64; N];
    bencher.counter(ItemsCount::new(N)).bench_local(|| {
        for (s, &u) in sum.iter_mut().zip(black_box(&update)) {
            *s += 3.0 * f64::from(u);
        }
    });
}
