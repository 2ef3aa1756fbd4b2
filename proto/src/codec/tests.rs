//! Tests of the bundle codec.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::{DType, TensorSpec, v1};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

/// Header limit for the hand-built bundles (the large ones are ~1.3 MiB).
const BIG_LIMIT: u64 = 64 << 20;

/// A smooth ramp (compressible) with noise in every fourth element.
fn values(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            if i % 4 == 0 {
                rng.random_range(-1.0..1.0)
            } else {
                (i as f32 * 1e-3).sin()
            }
        })
        .collect()
}

/// f32, f16 and bf16 tensors of odd sizes (so later tensors start unaligned), a scalar and
/// an empty tensor. With `scale` 4096 the payload is ~1.33 MiB.
fn sample_bundle(seed: u64, scale: usize) -> Bundle {
    let mut rng = StdRng::seed_from_u64(seed);
    let tensors = vec![
        Tensor::from_f32_as(
            "layer.0.weight",
            vec![scale, 64],
            &values(&mut rng, scale * 64),
            DType::F32,
        ),
        Tensor::from_f32_as("layer.0.bias", vec![63], &values(&mut rng, 63), DType::F16),
        Tensor::from_f32_as(
            "layer.1.weight",
            vec![scale, 33],
            &values(&mut rng, scale * 33),
            DType::BF16,
        ),
        Tensor::from_f32("scale", vec![], &[0.5]),
        Tensor::from_f32_as(
            "layer.1.lora_a",
            vec![7, scale],
            &values(&mut rng, 7 * scale),
            DType::F16,
        ),
        Tensor::from_f32_as("empty", vec![0, 5], &[], DType::BF16),
    ];
    Bundle::new(tensors.into_iter().map(Result::unwrap).collect()).unwrap()
}

fn raw_bytes(bundle: &Bundle) -> Vec<u8> {
    bundle
        .tensors()
        .iter()
        .flat_map(|t| t.data().iter().copied())
        .collect()
}

/// The header as a receiver gets it: through protobuf and `from_wire`.
fn wire_header(h: &BundleHeader, limit: u64) -> Result<BundleHeader, CodecError> {
    let bytes = h.to_wire().encode_to_vec();
    BundleHeader::from_wire(&v1::BundleInfo::decode(bytes.as_slice()).unwrap(), limit)
}

/// Sends `enc` in chunks of `chunk` bytes through a receiver, trailer included.
fn receive(enc: &EncodedBundle, chunk: usize) -> Result<EncodedBundle, CodecError> {
    let mut rx = BundleReceiver::new(wire_header(&enc.header, BIG_LIMIT)?);
    let (mut next, mut count) = (0u64, 0usize);
    for (offset, c) in enc.chunks(0, chunk) {
        assert_eq!(offset, next);
        assert!(!c.is_empty() && c.len() <= chunk);
        rx.push(&c)?;
        next += c.len() as u64;
        count += 1;
        assert_eq!(rx.received(), next);
    }
    assert_eq!(count, enc.payload.len().div_ceil(chunk));
    rx.finish(Some(enc.header.digest))
}

fn flip_bit(data: &[u8], bit: usize) -> Vec<u8> {
    let mut v = data.to_vec();
    v[bit / 8] ^= 1 << (bit % 8);
    v
}

#[test]
fn round_trip_through_chunks() {
    let bundle = sample_bundle(1, 4096);
    let raw = raw_bytes(&bundle);
    assert!(raw.len() > MAX_CHUNK_BYTES);
    for compression in [Compression::None, Compression::Zstd] {
        let enc = EncodedBundle::encode(&bundle, compression).unwrap();
        assert_eq!(enc.header.manifest, bundle.manifest());
        assert_eq!(enc.header.compression, compression);
        assert_eq!(enc.header.encoded_bytes, enc.payload.len() as u64);
        assert_eq!(enc.header.digest, Digest::of(&enc.payload));
        assert_eq!(enc.header.raw_bytes(), raw.len() as u64);
        match compression {
            Compression::None => assert_eq!(enc.payload[..], raw[..]),
            Compression::Zstd => {
                assert!(
                    enc.payload.len() < raw.len(),
                    "zstd should shrink the ramps"
                );
                assert_eq!(
                    zstd::bulk::decompress(&enc.payload, raw.len()).unwrap(),
                    raw
                );
            }
        }
        for chunk in [1, 7, 4096, MAX_CHUNK_BYTES] {
            let got = receive(&enc, chunk).unwrap();
            assert_eq!(got.header, enc.header);
            assert_eq!(got.payload, enc.payload);
            let decoded = got.decode().unwrap();
            assert_eq!(decoded, bundle, "{compression:?} in chunks of {chunk}");
            assert_eq!(decoded.manifest(), bundle.manifest());
        }
    }
}

#[test]
fn decoded_values_match() {
    let mut rng = StdRng::seed_from_u64(9);
    let v = values(&mut rng, 1001);
    let bundle = Bundle::new(vec![
        Tensor::from_f32_as("h", vec![1001], &v, DType::F16).unwrap(),
        Tensor::from_f32_as("f", vec![7, 143], &v, DType::F32).unwrap(),
        Tensor::from_f32_as("b", vec![1001, 1], &v, DType::BF16).unwrap(),
    ])
    .unwrap();
    for compression in [Compression::None, Compression::Zstd] {
        let dec = receive(&EncodedBundle::encode(&bundle, compression).unwrap(), 100)
            .unwrap()
            .decode()
            .unwrap();
        let h: Vec<f32> = v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
        let b: Vec<f32> = v
            .iter()
            .map(|&x| half::bf16::from_f32(x).to_f32())
            .collect();
        assert_eq!(&*dec.get("h").unwrap().to_f32(), &h[..]);
        assert_eq!(&*dec.get("f").unwrap().to_f32(), &v[..]);
        assert_eq!(&*dec.get("b").unwrap().to_f32(), &b[..]);
        assert_eq!(dec.get("b").unwrap().shape(), &[1001, 1]);
    }
}

#[test]
fn empty_bundle_round_trips() {
    for compression in [Compression::None, Compression::Zstd] {
        let enc = EncodedBundle::encode(&Bundle::default(), compression).unwrap();
        assert_eq!(enc.header.raw_bytes(), 0);
        let got = receive(&enc, 7).unwrap().decode().unwrap();
        assert!(got.tensors().is_empty(), "{compression:?}");
    }
}

#[test]
fn single_uncompressed_tensor_is_zero_copy() {
    let v: Vec<f32> = (0..10_000).map(|i| i as f32).collect();
    let t = Tensor::from_f32_vec("w", vec![100, 100], v).unwrap();
    let bundle = Bundle::new(vec![t.clone()]).unwrap();
    let enc = EncodedBundle::encode(&bundle, Compression::None).unwrap();
    assert_eq!(enc.payload.as_ptr(), t.data().as_ptr());
    assert_eq!(enc.payload.len(), t.data().len());
    for (offset, c) in enc.chunks(0, 4096) {
        assert_eq!(
            c.as_ptr(),
            enc.payload[offset as usize..].as_ptr(),
            "chunks are slices of the payload"
        );
    }
    let decoded = enc.decode().unwrap();
    assert_eq!(decoded.tensors()[0].data().as_ptr(), t.data().as_ptr());
    assert_eq!(decoded, bundle);

    // several tensors are copied into one payload, and decoding slices that payload
    let multi = sample_bundle(2, 16);
    let enc = EncodedBundle::encode(&multi, Compression::None).unwrap();
    assert_ne!(enc.payload.as_ptr(), multi.tensors()[0].data().as_ptr());
    let dec = enc.decode().unwrap();
    let mut at = 0;
    for t in dec.tensors() {
        if !t.data().is_empty() {
            assert_eq!(
                t.data().as_ptr(),
                enc.payload[at..].as_ptr(),
                "{}",
                t.name()
            );
        }
        at += t.data().len();
    }
    assert_eq!(at, enc.payload.len());
}

#[test]
fn chunks_start_at_offset_and_clamp_their_size() {
    let enc = EncodedBundle::encode(&sample_bundle(3, 8), Compression::None).unwrap();
    let len = enc.payload.len();
    for offset in [
        0,
        1,
        100,
        len as u64 - 1,
        len as u64,
        len as u64 + 1,
        u64::MAX,
    ] {
        let chunks: Vec<(u64, Bytes)> = enc.chunks(offset, 10).collect();
        let start = usize::try_from(offset).unwrap().min(len);
        let joined: Vec<u8> = chunks.iter().flat_map(|(_, c)| c.iter().copied()).collect();
        assert_eq!(joined[..], enc.payload[start..], "offset {offset}");
        if let Some((first, _)) = chunks.first() {
            assert_eq!(*first, offset);
        }
    }
    // 0 means 1
    assert_eq!(enc.chunks(0, 0).count(), len);
    assert!(enc.chunks(0, 0).all(|(_, c)| c.len() == 1));

    // more than 1 MiB means 1 MiB
    let big = Tensor::from_f32_vec("big", vec![(3 << 18) + 5], vec![1.0; (3 << 18) + 5]).unwrap();
    let enc = EncodedBundle::encode(&Bundle::new(vec![big]).unwrap(), Compression::None).unwrap();
    let sizes: Vec<usize> = enc.chunks(0, usize::MAX).map(|(_, c)| c.len()).collect();
    assert_eq!(
        sizes,
        [MAX_CHUNK_BYTES, MAX_CHUNK_BYTES, MAX_CHUNK_BYTES, 20]
    );
}

#[test]
fn resumed_receiver_finishes_identically() {
    let bundle = sample_bundle(4, 4096);
    for compression in [Compression::None, Compression::Zstd] {
        let enc = EncodedBundle::encode(&bundle, compression).unwrap();
        let len = enc.payload.len();
        let reference = receive(&enc, 4096).unwrap();
        // prefixes above 1 MiB are fine: the chunk limit is for the wire
        for k in [0, 1, 4095, 4096, len / 2, MAX_CHUNK_BYTES + 1, len - 1, len] {
            let k = k.min(len);
            let header = wire_header(&enc.header, BIG_LIMIT).unwrap();
            let mut rx = BundleReceiver::resume(header, &enc.payload[..k]).unwrap();
            assert_eq!(rx.received(), k as u64);
            assert_eq!(rx.received_bytes(), &enc.payload[..k]);
            for (_, c) in enc.chunks(rx.received(), 1000) {
                rx.push(&c).unwrap();
            }
            let done = rx.finish(Some(enc.header.digest)).unwrap();
            assert_eq!(done.header, reference.header);
            assert_eq!(done.payload, reference.payload);
            assert_eq!(
                done.decode().unwrap(),
                bundle,
                "{compression:?} resumed at {k}"
            );
        }

        // a receiver interrupted midway hands its bytes to a new one
        let mut first = BundleReceiver::new(enc.header.clone());
        for (_, c) in enc.chunks(0, 777).take(5) {
            first.push(&c).unwrap();
        }
        let offset = first.received();
        assert_eq!(offset, 5 * 777);
        let mut second =
            BundleReceiver::resume(enc.header.clone(), first.received_bytes()).unwrap();
        drop(first);
        for (_, c) in enc.chunks(offset, 777) {
            second.push(&c).unwrap();
        }
        assert_eq!(second.finish(None).unwrap().decode().unwrap(), bundle);
    }
}

#[test]
fn resume_refuses_bad_prefixes() {
    let enc = EncodedBundle::encode(&sample_bundle(5, 16), Compression::None).unwrap();
    let len = enc.payload.len() as u64;
    let mut long = enc.payload.to_vec();
    long.push(0);
    assert!(matches!(
        BundleReceiver::resume(enc.header.clone(), &long),
        Err(CodecError::Overrun { expected, got }) if expected == len && got == len + 1
    ));
    let corrupt = flip_bit(&enc.payload[..100], 3);
    let mut rx = BundleReceiver::resume(enc.header.clone(), &corrupt).unwrap();
    for (_, c) in enc.chunks(100, 64) {
        rx.push(&c).unwrap();
    }
    assert!(matches!(
        rx.finish(None),
        Err(CodecError::DigestMismatch { .. })
    ));
}

#[test]
fn chunk_over_1_mib_is_refused() {
    let big = Tensor::from_f32_vec("big", vec![1 << 19], vec![0.25; 1 << 19]).unwrap();
    let bundle = Bundle::new(vec![big]).unwrap();
    let enc = EncodedBundle::encode(&bundle, Compression::None).unwrap();
    let mut rx = BundleReceiver::new(enc.header.clone());
    for n in [MAX_CHUNK_BYTES + 1, 2 * MAX_CHUNK_BYTES] {
        assert!(
            matches!(rx.push(&enc.payload[..n]), Err(CodecError::ChunkTooLarge(got)) if got == n)
        );
        assert_eq!(rx.received(), 0, "a refused chunk is not kept");
    }
    rx.push(&enc.payload[..MAX_CHUNK_BYTES]).unwrap();
    rx.push(&enc.payload[MAX_CHUNK_BYTES..]).unwrap();
    assert_eq!(
        rx.finish(Some(enc.header.digest))
            .unwrap()
            .decode()
            .unwrap(),
        bundle
    );
}

#[test]
fn overrun_is_refused() {
    let enc = EncodedBundle::encode(&sample_bundle(6, 16), Compression::Zstd).unwrap();
    let len = enc.payload.len() as u64;
    let mut rx = BundleReceiver::new(enc.header.clone());
    rx.push(&enc.payload).unwrap();
    assert!(
        matches!(rx.push(&[0]), Err(CodecError::Overrun { expected, got }) if expected == len && got == len + 1)
    );
    assert_eq!(rx.received(), len, "the refused chunk is not kept");
    rx.push(&[]).unwrap();
    assert!(rx.finish(None).is_ok());

    // one chunk that crosses the end
    let mut rx = BundleReceiver::new(enc.header.clone());
    rx.push(&enc.payload[..10]).unwrap();
    let mut tail = enc.payload[10..].to_vec();
    tail.extend_from_slice(&[1, 2, 3]);
    assert!(
        matches!(rx.push(&tail), Err(CodecError::Overrun { expected, got }) if expected == len && got == len + 3)
    );
    assert_eq!(rx.received(), 10);

    // an empty bundle takes no byte at all
    let empty = EncodedBundle::encode(&Bundle::default(), Compression::None).unwrap();
    let mut rx = BundleReceiver::new(empty.header.clone());
    assert!(matches!(
        rx.push(&[0]),
        Err(CodecError::Overrun {
            expected: 0,
            got: 1
        })
    ));
}

#[test]
fn truncated_transfer_is_refused() {
    let enc = EncodedBundle::encode(&sample_bundle(7, 16), Compression::None).unwrap();
    let len = enc.payload.len();
    for k in [0, 1, len / 2, len - 1] {
        let mut rx = BundleReceiver::new(enc.header.clone());
        rx.push(&enc.payload[..k]).unwrap();
        match rx.finish(Some(enc.header.digest)) {
            Err(CodecError::Truncated { expected, got }) => {
                assert_eq!(expected, len as u64);
                assert_eq!(got, k as u64);
            }
            other => panic!("finish after {k} of {len} bytes: {other:?}"),
        }
    }
}

#[test]
fn flipped_bit_is_refused() {
    for compression in [Compression::None, Compression::Zstd] {
        let enc = EncodedBundle::encode(&sample_bundle(8, 16), compression).unwrap();
        let bits = enc.payload.len() * 8;
        for bit in [0, 7, bits / 2, bits - 1] {
            let data = flip_bit(&enc.payload, bit);
            let mut rx = BundleReceiver::new(enc.header.clone());
            for c in data.chunks(100) {
                rx.push(c).unwrap();
            }
            match rx.finish(None) {
                Err(CodecError::DigestMismatch { expected, actual }) => {
                    assert_eq!(expected, enc.header.digest.to_hex());
                    assert_eq!(actual, Digest::of(&data).to_hex());
                }
                other => panic!("{compression:?}, bit {bit} flipped: {other:?}"),
            }
        }
    }
}

#[test]
fn wrong_trailer_is_refused() {
    let enc = EncodedBundle::encode(&sample_bundle(9, 16), Compression::None).unwrap();
    let rx = || {
        let mut rx = BundleReceiver::new(enc.header.clone());
        rx.push(&enc.payload).unwrap();
        rx
    };
    let mut wrong = enc.header.digest;
    wrong.0[15] ^= 0x80;
    match rx().finish(Some(wrong)) {
        Err(CodecError::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, wrong.to_hex());
            assert_eq!(actual, enc.header.digest.to_hex());
        }
        other => panic!("{other:?}"),
    }
    assert!(rx().finish(Some(enc.header.digest)).is_ok());
    assert!(rx().finish(None).is_ok());
    // a trailer of the wrong length never becomes a Digest
    for len in [0, 15, 17, 32] {
        let bytes = vec![0xab; len];
        assert!(
            matches!(Digest::try_from(bytes.as_slice()), Err(CodecError::DigestLength(l)) if l == len)
        );
    }
}

fn f32_spec(name: &str, n: usize) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        dtype: DType::F32,
        shape: vec![n],
    }
}

/// A zstd bundle whose header a receiver would accept and whose digest is right.
fn zstd_bundle(manifest: Vec<TensorSpec>, payload: Vec<u8>) -> EncodedBundle {
    let header = BundleHeader {
        manifest,
        compression: Compression::Zstd,
        encoded_bytes: payload.len() as u64,
        digest: Digest::of(&payload),
    };
    let mut rx = BundleReceiver::new(wire_header(&header, BIG_LIMIT).unwrap());
    for c in payload.chunks(MAX_CHUNK_BYTES) {
        rx.push(c).unwrap();
    }
    rx.finish(None).unwrap()
}

#[test]
fn zstd_payload_of_wrong_size_is_refused() {
    let raw: Vec<u8> = (0..404u32).map(|i| (i % 7) as u8).collect();
    let manifest = vec![f32_spec("w", 100)];
    // the frame records its size, or (streaming) does not
    type Compress = fn(&[u8]) -> Vec<u8>;
    let compressors: [Compress; 2] = [
        |d| zstd::bulk::compress(d, 3).unwrap(),
        |d| zstd::stream::encode_all(d, 3).unwrap(),
    ];
    for compress in compressors {
        let ok = zstd_bundle(manifest.clone(), compress(&raw[..400]));
        assert_eq!(ok.decode().unwrap().tensors()[0].data()[..], raw[..400]);

        let short = zstd_bundle(manifest.clone(), compress(&raw[..396]));
        assert!(matches!(
            short.decode(),
            Err(CodecError::PayloadSize {
                expected: 400,
                got: 396
            })
        ));

        let empty = zstd_bundle(manifest.clone(), compress(&[]));
        assert!(matches!(
            empty.decode(),
            Err(CodecError::PayloadSize {
                expected: 400,
                got: 0
            })
        ));

        let long = zstd_bundle(manifest.clone(), compress(&raw[..404]));
        assert!(
            matches!(long.decode(), Err(CodecError::Zstd(_))),
            "{:?}",
            long.decode()
        );
    }
    let nothing = zstd_bundle(manifest, vec![]);
    assert!(nothing.decode().is_err());
}

#[test]
fn garbage_zstd_payload_is_refused() {
    let mut rng = StdRng::seed_from_u64(0x2575);
    let manifest = vec![f32_spec("w", 100), f32_spec("v", 3)];
    for _ in 0..300 {
        let mut garbage = vec![0u8; rng.random_range(0..2000)];
        rng.fill_bytes(&mut garbage);
        let enc = zstd_bundle(manifest.clone(), garbage);
        assert!(enc.decode().is_err());
    }
    // a real frame, cut short
    let frame = zstd::bulk::compress(&[3u8; 412], 3).unwrap();
    for cut in 1..frame.len() {
        let enc = zstd_bundle(manifest.clone(), frame[..cut].to_vec());
        assert!(enc.decode().is_err(), "frame cut to {cut} bytes");
    }
    assert!(
        zstd_bundle(manifest.clone(), frame.clone())
            .decode()
            .is_ok()
    );
    // a real frame with random corruption (and a matching digest): any outcome but a panic
    let mut raw = vec![0u8; 412];
    rng.fill_bytes(&mut raw[..200]);
    let frame = zstd::bulk::compress(&raw, 3).unwrap();
    for _ in 0..300 {
        let mut f = frame.clone();
        let i = rng.random_range(0..f.len());
        f[i] ^= 1 << rng.random_range(0..8);
        if let Ok(b) = zstd_bundle(manifest.clone(), f).decode() {
            assert_eq!(b.byte_len(), 412);
        }
    }
}

#[test]
fn zstd_bomb_is_refused() {
    let zeros = vec![0u8; 64 << 20];
    let with_size = zstd::bulk::compress(&zeros, 3).unwrap();
    let without_size = zstd::stream::encode_all(&zeros[..], 3).unwrap();
    assert_eq!(
        zstd::zstd_safe::get_frame_content_size(&with_size).ok(),
        Some(Some(64 << 20))
    );
    assert_eq!(
        zstd::zstd_safe::get_frame_content_size(&without_size).ok(),
        Some(None)
    );
    for bomb in [with_size, without_size] {
        assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
        for manifest in [vec![f32_spec("w", 4)], vec![f32_spec("w", 1 << 18)]] {
            let enc = zstd_bundle(manifest, bomb.clone());
            assert!(matches!(enc.decode(), Err(CodecError::Zstd(_))));
        }
    }
}

// ---- randomized robustness: wire headers and chunk streams must never panic ----

const FUZZ_LIMIT: u64 = 1 << 20;

#[derive(Debug, Default)]
struct Stats {
    header_refused: usize,
    push_refused: usize,
    finish_refused: usize,
    decode_refused: usize,
    decoded: usize,
    non_finite: usize,
}

fn random_dim(rng: &mut StdRng) -> u64 {
    match rng.random_range(0..12) {
        0 => 0,
        1 => 1,
        2..=6 => rng.random_range(1..64),
        7 => rng.random_range(1..5000),
        8 => u64::MAX,
        9 => 1 << rng.random_range(0..64),
        10 => u64::from(u32::MAX) + 1,
        _ => rng.random(),
    }
}

fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    rng.fill_bytes(&mut v);
    v
}

/// A manifest from the wire that may be absurd in every way, with a payload that is random
/// bytes or a zstd frame, and a digest that usually matches it.
fn random_wire(rng: &mut StdRng) -> (v1::BundleInfo, Vec<u8>, Option<Bundle>) {
    let n = rng.random_range(0..6);
    let manifest: Vec<v1::TensorSpec> = (0..n)
        .map(|i| v1::TensorSpec {
            name: match rng.random_range(0..10) {
                0 => String::new(),
                1 => "t0".into(),
                2 => "ß\u{0}".into(),
                _ => format!("t{i}"),
            },
            dtype: match rng.random_range(0..10) {
                0 => 0,
                1 => 4,
                2 => rng.random(),
                _ => rng.random_range(1..=3),
            },
            shape: (0..rng.random_range(0..5))
                .map(|_| random_dim(rng))
                .collect(),
        })
        .collect();
    let raw = manifest
        .iter()
        .map(|s| {
            let size = if s.dtype == 1 { 4 } else { 2 };
            s.shape
                .iter()
                .fold(1u64, |a, &d| a.wrapping_mul(d))
                .wrapping_mul(size)
        })
        .fold(0u64, u64::wrapping_add);
    let compression = match rng.random_range(0..8) {
        0 => 2,
        1 => rng.random(),
        2..=4 => 0,
        _ => 1,
    };
    let small_raw = usize::try_from(raw).ok().filter(|&r| r <= 1 << 16);
    let payload = match (rng.random_range(0..4), small_raw) {
        // a zstd frame of about the right size
        (0 | 1, Some(r)) => {
            let len = match rng.random_range(0..6) {
                0 => r.saturating_sub(1),
                1 => r + 1,
                2 => r * 2 + 100,
                _ => r,
            };
            let content = if rng.random_bool(0.5) {
                vec![0; len]
            } else {
                random_bytes(rng, len)
            };
            zstd::bulk::compress(&content, 1).unwrap()
        }
        (2, Some(r)) => random_bytes(rng, r),
        _ => {
            let len = rng.random_range(0..4096);
            random_bytes(rng, len)
        }
    };
    let encoded_bytes = match rng.random_range(0..12) {
        0 => raw,
        1 => FUZZ_LIMIT,
        2 => FUZZ_LIMIT + 1,
        3 => rng.random(),
        4 => (payload.len() as u64).saturating_sub(1),
        5 => payload.len() as u64 + 1,
        _ => payload.len() as u64,
    };
    let digest = match rng.random_range(0..10) {
        0 => random_bytes(rng, 16),
        1 => {
            let len = [0, 15, 17, 32][rng.random_range(0..4)];
            random_bytes(rng, len)
        }
        _ => Digest::of(&payload).0.to_vec(),
    };
    let info = v1::BundleInfo {
        manifest,
        compression,
        encoded_bytes,
        digest: digest.into(),
    };
    (info, payload, None)
}

/// A real bundle (at most ~840 KiB raw), sometimes with NaN/Inf from random bits.
fn random_bundle(rng: &mut StdRng) -> Bundle {
    let n = rng.random_range(0..4);
    let tensors = (0..n)
        .map(|i| {
            let dtype = [DType::F32, DType::F16, DType::BF16][rng.random_range(0..3)];
            let big = rng.random_bool(0.1);
            let shape: Vec<usize> = match rng.random_range(0..4) {
                0 => vec![],
                1 => vec![rng.random_range(0..if big { 70_000 } else { 300 })],
                2 => (0..2)
                    .map(|_| rng.random_range(0..if big { 256 } else { 20 }))
                    .collect(),
                _ => (0..3)
                    .map(|_| rng.random_range(0..if big { 40 } else { 8 }))
                    .collect(),
            };
            let spec = TensorSpec {
                name: format!("t{i}"),
                dtype,
                shape,
            };
            let data = if rng.random_bool(0.3) {
                random_bytes(rng, spec.byte_len())
            } else {
                let v: Vec<f32> = (0..spec.numel())
                    .map(|_| rng.random_range(-1e3..1e3))
                    .collect();
                Tensor::from_f32_as("x", spec.shape.clone(), &v, dtype)
                    .unwrap()
                    .data()
                    .to_vec()
            };
            Tensor::from_bytes(spec, data.into()).unwrap()
        })
        .collect();
    Bundle::new(tensors).unwrap()
}

/// A real encoding, intact (returned with its bundle) or mutated in one of several ways.
fn random_real(rng: &mut StdRng) -> (v1::BundleInfo, Vec<u8>, Option<Bundle>) {
    let bundle = random_bundle(rng);
    let compression = if rng.random_bool(0.5) {
        Compression::None
    } else {
        Compression::Zstd
    };
    let enc = EncodedBundle::encode(&bundle, compression).unwrap();
    let mut info = enc.header.to_wire();
    let mut payload = enc.payload.to_vec();
    let fix_digest = |info: &mut v1::BundleInfo, p: &[u8]| {
        info.encoded_bytes = p.len() as u64;
        info.digest = Digest::of(p).0.to_vec().into();
    };
    match rng.random_range(0..10) {
        0..=2 => return (info, payload, Some(bundle)),
        // a flipped bit, with or without a digest that matches it
        3 | 4 if !payload.is_empty() => {
            let bit = rng.random_range(0..payload.len() * 8);
            payload = flip_bit(&payload, bit);
            if rng.random_bool(0.5) {
                fix_digest(&mut info, &payload);
            }
        }
        // cut or extended
        5 => {
            let len = rng.random_range(0..=payload.len() + 16);
            payload.resize(len, 0xa5);
            fix_digest(&mut info, &payload);
        }
        // manifest edits
        6 if !info.manifest.is_empty() => {
            let i = rng.random_range(0..info.manifest.len());
            match rng.random_range(0..5) {
                0 => info.manifest[i].dtype = rng.random_range(0..5),
                1 => info.manifest[i].shape.push(random_dim(rng)),
                2 => {
                    info.manifest.remove(i);
                }
                3 => info.manifest.reverse(),
                _ => {
                    let s = info.manifest[i].clone();
                    info.manifest.push(v1::TensorSpec {
                        name: format!("{}'", s.name),
                        ..s
                    });
                }
            }
        }
        // garbage, with a digest that matches it
        7 => {
            let len = rng.random_range(0..2048);
            payload = random_bytes(rng, len);
            fix_digest(&mut info, &payload);
        }
        // the other compression
        8 => info.compression = 1 - info.compression,
        // a corrupted protobuf encoding of the header
        _ => {
            let mut wire = info.encode_to_vec();
            for _ in 0..rng.random_range(1..4) {
                if wire.is_empty() {
                    break;
                }
                let at = rng.random_range(0..wire.len());
                match rng.random_range(0..3) {
                    0 => wire[at] = rng.random(),
                    1 => wire.truncate(at),
                    _ => wire.insert(at, rng.random()),
                }
            }
            match v1::BundleInfo::decode(wire.as_slice()) {
                Ok(i) => info = i,
                Err(_) => info.digest = bytes::Bytes::new(),
            }
        }
    }
    (info, payload, None)
}

/// One randomized case through every stage of the decoder (header, chunks, finish, decode),
/// kept in one function so each stage sees exactly the bytes the previous one accepted.
fn run_case(seed: u64, stats: &mut Stats) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (info, payload, intact) = if rng.random_bool(0.4) {
        random_wire(&mut rng)
    } else {
        random_real(&mut rng)
    };
    let header = match BundleHeader::from_wire(&info, FUZZ_LIMIT) {
        Ok(h) => h,
        Err(e) => {
            assert!(intact.is_none(), "intact header refused: {e}");
            stats.header_refused += 1;
            return;
        }
    };
    assert!(header.encoded_bytes <= FUZZ_LIMIT && header.raw_bytes() <= FUZZ_LIMIT);
    assert_eq!(
        BundleHeader::from_wire(&header.to_wire(), FUZZ_LIMIT).unwrap(),
        header
    );

    let max_chunk = [1, 7, 16, 4096, 65536, MAX_CHUNK_BYTES][rng.random_range(0..6)];
    let stop = if rng.random_bool(0.1) {
        rng.random_range(0..=payload.len())
    } else {
        payload.len()
    };
    let mut resume_at = rng.random_bool(0.2).then(|| rng.random_range(0..=stop));
    let mut rx = BundleReceiver::new(header.clone());
    if rng.random_bool(0.02) {
        assert!(matches!(
            rx.push(&vec![0; MAX_CHUNK_BYTES + 1]),
            Err(CodecError::ChunkTooLarge(_))
        ));
    }
    let mut sent: Vec<u8> = Vec::new();
    let mut at = 0;
    while at < stop {
        let n = rng.random_range(1..=max_chunk).min(stop - at);
        let chunk = &payload[at..at + n];
        at += n;
        match rx.push(chunk) {
            Ok(()) => sent.extend_from_slice(chunk),
            Err(CodecError::Overrun { expected, got }) => {
                assert_eq!(expected, header.encoded_bytes);
                assert_eq!(got, (sent.len() + n) as u64);
                assert!(got > expected);
                stats.push_refused += 1;
            }
            Err(e) => panic!("push: unexpected {e}"),
        }
        assert_eq!(rx.received(), sent.len() as u64);
        if resume_at.is_some_and(|r| r <= at) {
            resume_at = None;
            rx = BundleReceiver::resume(header.clone(), &sent).unwrap();
        }
    }
    let trailer = match rng.random_range(0..5) {
        0 => None,
        1 => Some(Digest(rng.random())),
        _ => Some(Digest::of(&sent)),
    };
    let complete = sent.len() as u64 == header.encoded_bytes;
    let digest_ok =
        Digest::of(&sent) == header.digest && trailer.is_none_or(|t| t == Digest::of(&sent));
    let encoded = match rx.finish(trailer) {
        Ok(e) => {
            assert!(complete && digest_ok);
            e
        }
        Err(CodecError::Truncated { expected, got }) => {
            assert!(!complete && expected == header.encoded_bytes && got == sent.len() as u64);
            stats.finish_refused += 1;
            return;
        }
        Err(CodecError::DigestMismatch { .. }) => {
            assert!(complete && !digest_ok);
            stats.finish_refused += 1;
            return;
        }
        Err(e) => panic!("finish: unexpected {e}"),
    };
    assert_eq!(encoded.payload[..], sent[..]);
    assert_eq!(encoded.header, header);
    match encoded.decode() {
        Ok(bundle) => {
            assert_eq!(bundle.manifest(), header.manifest);
            assert_eq!(bundle.byte_len() as u64, header.raw_bytes());
            if let Some(original) = &intact {
                assert_eq!(&bundle, original);
            }
            if let Err(e) = bundle.check_finite() {
                assert!(matches!(e, CodecError::NonFinite { .. }));
                stats.non_finite += 1;
            }
            stats.decoded += 1;
        }
        Err(e) => {
            assert!(intact.is_none(), "intact bundle not decoded: {e}");
            assert_eq!(
                header.compression,
                Compression::Zstd,
                "uncompressed payloads of the right size decode"
            );
            assert!(
                matches!(e, CodecError::Zstd(_) | CodecError::PayloadSize { .. }),
                "{e}"
            );
            stats.decode_refused += 1;
        }
    }
}

#[test]
fn random_wire_input_never_panics() {
    let mut stats = Stats::default();
    for case in 0..2000u64 {
        let seed = 0x5eed_0000 + case;
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(seed, &mut stats)));
        assert!(
            outcome.is_ok(),
            "case {case} failed: rerun with run_case({seed:#x}, ..)"
        );
    }
    eprintln!("{stats:?}");
    // every stage must have been reached often, or the test proves little
    for (stage, n) in [
        ("header refused", stats.header_refused),
        ("push refused", stats.push_refused),
        ("finish refused", stats.finish_refused),
        ("decode refused", stats.decode_refused),
        ("decoded", stats.decoded),
        ("non-finite", stats.non_finite),
    ] {
        assert!(n >= 20, "{stage}: only {n} cases ({stats:?})");
    }
}

mod finite_scan_tests {
    use super::*;
    use crate::DType;

    fn bundle_with_nan_at(index: usize) -> Bundle {
        let mut w = vec![0.5f32; 300_000];
        w[index] = f32::NAN;
        Bundle::new(vec![
            Tensor::from_f32_as("h", vec![3], &[1.0, 2.0, 3.0], DType::F16).unwrap(),
            Tensor::from_f32("w", vec![w.len()], &w).unwrap(),
        ])
        .unwrap()
    }

    #[test]
    fn nan_is_caught_in_the_chunk_that_carries_it() {
        // Element 290_000 of `w` sits in the second 1 MiB chunk (f16 tensor first: odd offset).
        let enc = EncodedBundle::encode(&bundle_with_nan_at(290_000), Compression::None).unwrap();
        let mut rx = BundleReceiver::new(enc.header.clone()).check_finite_as_received();
        let mut chunks = enc.chunks(0, MAX_CHUNK_BYTES);
        let (_, first) = chunks.next().unwrap();
        rx.push(&first).unwrap();
        let (_, second) = chunks.next().unwrap();
        match rx.push(&second) {
            Err(CodecError::NonFinite { name, index }) => {
                assert_eq!((name.as_str(), index), ("w", 290_000))
            }
            other => panic!("expected NonFinite, got {other:?}"),
        }
    }

    #[test]
    fn finish_decoded_checks_compressed_and_unscanned_payloads_too() {
        for compression in [Compression::None, Compression::Zstd] {
            let enc = EncodedBundle::encode(&bundle_with_nan_at(7), compression).unwrap();
            let mut rx = BundleReceiver::new(enc.header.clone());
            for (_, c) in enc.chunks(0, MAX_CHUNK_BYTES) {
                rx.push(&c).unwrap();
            }
            let err = rx.finish_decoded(None).unwrap_err();
            assert!(
                matches!(err, CodecError::NonFinite { ref name, index: 7 } if name == "w"),
                "{err}"
            );
        }
        let clean = Bundle::new(vec![Tensor::from_f32("w", vec![4], &[1.0; 4]).unwrap()]).unwrap();
        let enc = EncodedBundle::encode(&clean, Compression::None).unwrap();
        let mut rx = BundleReceiver::new(enc.header.clone()).check_finite_as_received();
        rx.push(&enc.payload).unwrap();
        assert_eq!(rx.finish_decoded(None).unwrap().1, clean);
    }
}
