//! What a SecAgg device and server take from others: sealed shares from neighbours (arbitrary
//! bytes, claimed senders), revealed shares of arbitrary points and lengths, and a summed
//! vector to decode. Each is refused or used, never a panic.
#![no_main]

use fedtune_secagg::keys::round_context;
use fedtune_secagg::protocol::{Device, Params, SealedShares, neighbour_graph};
use fedtune_secagg::quantize::Quantizer;
use fedtune_secagg::shamir::{reconstruct, Share};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else { return };
    // Revealed shares: chunks of (x, y...) of the first chunk's length.
    let len = usize::from(head % 40) + 1;
    let shares: Vec<Share> = rest
        .chunks(len + 1)
        .map(|c| Share { x: c[0], y: c[1..].to_vec() })
        .collect();
    let _ = reconstruct(&shares, usize::from(head % 7));

    // Sealed shares into a device of a 4-device round.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let params = Params { threshold: 2, context: round_context(1, 0) };
    let graph = neighbour_graph(4, 3, 1);
    let mut devices: Vec<Device> = (0..4)
        .map(|i| Device::new(i, graph[i as usize].clone(), params.clone(), &mut rng))
        .collect();
    let adverts: Vec<_> = devices.iter().map(Device::advert).collect();
    let _ = devices[0].share(&adverts, &mut rng);
    let inbox = vec![SealedShares { from: u32::from(head % 5), to: 0, bytes: rest.to_vec() }];
    let _ = devices[0].mask(&inbox, &[0; 8]);

    // A sum to decode.
    let words: Vec<u32> = rest
        .chunks_exact(4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
        .collect();
    let (mean, _) = Quantizer { clip: 1.0, bits: 16 }.decode(&words);
    assert_eq!(mean.len(), words.len().saturating_sub(1));
});
