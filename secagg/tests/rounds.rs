//! Whole SecAgg+ rounds in memory: with 0%, 10% or 33% of the cohort dropping at any stage
//! (after advertising keys, after sharing, mid-upload, during unmasking) the unmasked sum
//! equals the plain sum of the survivors' encoded updates bit for bit; too few shares abandon
//! the round; what the server sees of one device looks uniform; an honest device refuses to
//! reveal both secrets of one device.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use fedtune_secagg::keys::round_context;
use fedtune_secagg::protocol::{Device, Params, Server, neighbour_graph};
use fedtune_secagg::quantize::Quantizer;
use fedtune_secagg::{SecAggError, protocol::SealedShares};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stage {
    AfterAdvert,
    AfterShare,
    MidUpload,
    DuringUnmask,
}

struct Outcome {
    result: Result<Vec<u32>, SecAggError>,
    want: Vec<u32>,
    survivors: usize,
}

/// One round of `n` devices with `k` neighbours and threshold `t`; `drop` devices leave at
/// `stage`.
fn round(n: usize, k: usize, t: usize, drops: &[(Stage, BTreeSet<u32>)], seed: u64) -> Outcome {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let params = Params {
        threshold: t,
        context: round_context(1, 0),
    };
    let graph = neighbour_graph(n, k, seed);
    let q = Quantizer {
        clip: 1.0,
        bits: 16,
    };
    let len = 257;
    let gone = |stage: Stage, i: u32| drops.iter().any(|(s, d)| *s == stage && d.contains(&i));
    let mut devices: Vec<Device> = (0..n as u32)
        .map(|i| Device::new(i, graph[i as usize].clone(), params.clone(), &mut rng))
        .collect();
    let encoded: Vec<Vec<u32>> = (0..n)
        .map(|i| {
            let v: Vec<f32> = (0..len).map(|_| rng.random_range(-1.5..1.5)).collect();
            q.encode(&v, (i % 3 + 1) as u32, &mut rng)
        })
        .collect();
    let mut server = Server::new(params, graph, len + 1);
    for d in &devices {
        server.advertise(d.advert());
    }
    let mut mail: Vec<SealedShares> = Vec::new();
    let mut alive: Vec<u32> = (0..n as u32)
        .filter(|&i| !gone(Stage::AfterAdvert, i))
        .collect();
    for &i in &alive {
        let adverts = server.adverts_for(i);
        mail.extend(devices[i as usize].share(&adverts, &mut rng).unwrap());
        server.shared(i);
    }
    alive.retain(|&i| !gone(Stage::AfterShare, i));
    let mut uploaded = Vec::new();
    for &i in &alive {
        let inbox: Vec<SealedShares> = mail.iter().filter(|m| m.to == i).cloned().collect();
        let y = devices[i as usize]
            .mask(&inbox, &encoded[i as usize])
            .unwrap();
        if !gone(Stage::MidUpload, i) {
            server.add_masked(i, &y).unwrap();
            uploaded.push(i);
        }
    }
    let (survivors, dropped) = server.unmask_request();
    assert_eq!(survivors, uploaded);
    let mut reveals = Vec::new();
    for &i in survivors.iter().filter(|&&i| !gone(Stage::DuringUnmask, i)) {
        reveals.extend(devices[i as usize].unmask(&survivors, &dropped).unwrap());
    }
    let mut want = vec![0u32; len + 1];
    for &i in &survivors {
        for (w, e) in want.iter_mut().zip(&encoded[i as usize]) {
            *w = w.wrapping_add(*e);
        }
    }
    devices.clear();
    Outcome {
        result: server.finish(&reveals),
        want,
        survivors: survivors.len(),
    }
}

fn some(n: usize, fraction: f64, seed: u64) -> BTreeSet<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xD40);
    let mut ids: Vec<u32> = (0..n as u32).collect();
    rand::seq::SliceRandom::shuffle(&mut ids[..], &mut rng);
    ids.truncate((n as f64 * fraction).round() as usize);
    ids.into_iter().collect()
}

#[test]
fn the_unmasked_sum_is_the_plain_sum_whatever_drops_where() {
    let stages = [
        Stage::AfterAdvert,
        Stage::AfterShare,
        Stage::MidUpload,
        Stage::DuringUnmask,
    ];
    // A complete graph of 12 (t = 6) and a sparse one of 40 (12 neighbours, t = 5).
    for (n, k, t) in [(12, 11, 6), (40, 12, 5)] {
        for stage in stages {
            for fraction in [0.0, 0.1, 0.33] {
                if n == 40 && fraction > 0.1 {
                    continue; // 33% of a sparse graph can leave a neighbourhood below t
                }
                let seed = (n * 100 + (fraction * 100.0) as usize) as u64;
                let o = round(n, k, t, &[(stage, some(n, fraction, seed))], seed);
                let sum = o
                    .result
                    .unwrap_or_else(|e| panic!("{n} {stage:?} {fraction}: {e}"));
                assert_eq!(sum, o.want, "{n} devices, {fraction} dropping {stage:?}");
                assert!(o.survivors > 0);
            }
        }
    }
    // 10% at every stage at once.
    let drops: Vec<(Stage, BTreeSet<u32>)> = stages
        .iter()
        .enumerate()
        .map(|(s, &stage)| (stage, some(40, 0.1, 7 + s as u64)))
        .collect();
    let o = round(40, 12, 5, &drops, 99);
    assert_eq!(o.result.unwrap(), o.want);
}

#[test]
fn too_few_shares_abandon_the_round() {
    // Half of 12 drop during unmasking, t = 7: not enough shares for the survivors' seeds.
    let o = round(12, 11, 7, &[(Stage::DuringUnmask, some(12, 0.5, 3))], 3);
    assert!(
        matches!(o.result, Err(SecAggError::TooFewShares { t: 7, .. })),
        "{:?}",
        o.result.map(|_| ())
    );
}

/// `n` devices, every one a neighbour of every other (t = 2), past the sharing step: the
/// devices and the sealed shares they sent.
fn shared_round(n: u32, seed: u64) -> (Vec<Device>, Vec<SealedShares>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let params = Params {
        threshold: 2,
        context: round_context(seed, 0),
    };
    let graph = neighbour_graph(n as usize, n as usize - 1, seed);
    let mut devices: Vec<Device> = (0..n)
        .map(|i| Device::new(i, graph[i as usize].clone(), params.clone(), &mut rng))
        .collect();
    let adverts: Vec<_> = devices.iter().map(Device::advert).collect();
    let mut mail = Vec::new();
    for d in &mut devices {
        mail.extend(d.share(&adverts, &mut rng).unwrap());
    }
    (devices, mail)
}

/// The server sees each device's update only masked: a device's masked all-zero update is
/// indistinguishable from uniform words (chi-squared over each byte lane).
#[test]
fn a_masked_update_looks_uniform() {
    let (mut devices, mail) = shared_round(3, 11);
    let zeros = vec![0u32; 65_536];
    let y = devices[0].mask(&mail, &zeros).unwrap();
    for lane in 0..4 {
        let mut counts = [0u32; 256];
        for w in &y {
            counts[((w >> (8 * lane)) & 0xFF) as usize] += 1;
        }
        let chi2: f64 = counts
            .iter()
            .map(|&c| (f64::from(c) - 256.0).powi(2) / 256.0)
            .sum();
        assert!(chi2 < 330.0, "byte lane {lane}: chi² {chi2}");
    }
}

#[test]
fn an_honest_device_never_reveals_both_secrets_of_one_device() {
    let (mut devices, mail) = shared_round(4, 12);
    devices[0].mask(&mail, &[0; 4]).unwrap();
    assert_eq!(
        devices[0].unmask(&[1, 2, 3], &[3]).unwrap_err(),
        SecAggError::BothSecrets(3)
    );
    assert!(
        devices[0].unmask(&[1, 2], &[0]).is_err(),
        "alive, named dropped"
    );
    let ok = devices[0].unmask(&[0, 1, 2], &[3]).unwrap();
    assert_eq!(ok.len(), 3);
}

#[test]
fn neighbour_graphs_are_regular_and_symmetric() {
    for (n, k) in [(10, 4), (40, 12), (7, 6), (5, 10)] {
        let g = neighbour_graph(n, k, 5);
        let want = k.min(n - 1);
        for (i, ns) in g.iter().enumerate() {
            assert_eq!(ns.len(), want, "{n} {k}: device {i}");
            assert!(!ns.contains(&(i as u32)));
            for &j in ns {
                assert!(g[j as usize].contains(&(i as u32)), "{i}-{j} one way only");
            }
        }
    }
}
