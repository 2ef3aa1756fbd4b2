//! Input layout: byte 0 = N, byte 1 = chunk size - 1, then N bytes of a protobuf
//! `v1::BundleInfo`, then the payload. Runs what the server does with an upload:
//! `BundleHeader::from_wire` -> `BundleReceiver` push/finish -> decode -> check_finite.
//! Errors are fine; a panic (or a broken invariant) is a finding.
#![no_main]

use fedtune_proto::{v1, Bundle, BundleHeader, BundleReceiver, Compression, Digest, EncodedBundle};
use libfuzzer_sys::fuzz_target;
use prost::Message;

const LIMIT: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let [n, chunk, rest @ ..] = data else { return };
    let (info_bytes, payload) = rest.split_at(usize::from(*n).min(rest.len()));
    let chunk = usize::from(*chunk) + 1;
    let Ok(info) = v1::BundleInfo::decode(info_bytes) else { return };
    let Ok(mut header) = BundleHeader::from_wire(&info, LIMIT) else { return };
    assert_eq!(
        BundleHeader::from_wire(&header.to_wire(), LIMIT).expect("a valid header survives to_wire"),
        header
    );
    // With the digest the input carries (almost always wrong: exercises the refusals)...
    run(header.clone(), payload, chunk);
    // ...and with the right one, so that decoding is reached.
    header.digest = Digest::of(payload);
    run(header, payload, chunk);
});

fn run(header: BundleHeader, payload: &[u8], chunk: usize) {
    let mut rx = BundleReceiver::new(header.clone());
    for c in payload.chunks(chunk) {
        if rx.push(c).is_err() {
            return;
        }
    }
    let Ok(encoded) = rx.finish(Some(header.digest)) else { return };
    assert_eq!(&encoded.payload[..], payload);
    let Ok(bundle) = encoded.decode() else {
        assert_eq!(header.compression, Compression::Zstd, "an uncompressed payload of the right size decodes");
        return;
    };
    assert_eq!(bundle.manifest(), header.manifest);
    assert_eq!(bundle.byte_len() as u64, header.raw_bytes());
    let _ = bundle.check_finite();
    // Encoding what was decoded gives it back.
    for compression in [Compression::None, Compression::Zstd] {
        let again = EncodedBundle::encode(&bundle, compression).expect("a decoded bundle encodes");
        if header.compression == Compression::None && compression == Compression::None {
            assert_eq!(&again.payload[..], payload);
        }
        let back: Bundle = again.decode().expect("a fresh encoding decodes");
        assert_eq!(back, bundle);
    }
}
