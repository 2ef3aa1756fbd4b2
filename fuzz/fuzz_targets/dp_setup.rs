//! What a device takes from the server in a private round: a task's `DpSetup`, arbitrary. It is
//! refused or used, never a panic: the device's update is clipped within the norm asked for,
//! and its quantized words get their noise and within word, the weight still last.
#![no_main]

use fedtune_client::runtime::{checked_dp_setup, clip_update, private_words};
use fedtune_proto::{Bundle, Tensor, v1};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use rand::SeedableRng;

fuzz_target!(|data: &[u8]| {
    let Ok(setup) = v1::DpSetup::decode(data) else { return };
    let Ok(d) = checked_dp_setup(&setup) else { return };
    let update = Bundle::new(vec![Tensor::from_f32("w", vec![3], &[3.0, -4.0, 0.5]).unwrap()])
        .unwrap()
        .into_finite()
        .unwrap();
    let (clipped, within) = clip_update(update, d.clip).unwrap();
    let norm: f64 = clipped.bundle().tensors()[0]
        .to_f32()
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt();
    assert!(norm <= d.clip * (1.0 + 1e-6) || within, "{norm} > {}", d.clip);
    let mut words = vec![7u32, 8, 9, 1];
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    private_words(&mut words, &d, within, &mut rng);
    assert_eq!(words.len(), 4 + usize::from(d.report_within));
    assert_eq!(words.last(), Some(&1));
});
