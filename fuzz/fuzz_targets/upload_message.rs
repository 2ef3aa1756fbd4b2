//! Arbitrary bytes as a `v1::UploadMessage`, the message a client streams to the server.
//! A header's `update` goes through `BundleHeader::from_wire`; a digest through `Digest::try_from`.
#![no_main]

use fedtune_proto::v1::upload_message::Kind;
use fedtune_proto::{v1, BundleHeader, BundleReceiver, Digest};
use libfuzzer_sys::fuzz_target;
use prost::Message;

const LIMIT: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = v1::UploadMessage::decode(data) else { return };
    match msg.kind {
        Some(Kind::Header(h)) => {
            let Some(info) = h.update else { return };
            let Ok(header) = BundleHeader::from_wire(&info, LIMIT) else { return };
            assert!(header.encoded_bytes <= LIMIT && header.raw_bytes() <= LIMIT);
            assert_eq!(
                BundleHeader::from_wire(&header.to_wire(), LIMIT).expect("a valid header survives to_wire"),
                header
            );
            let rx = BundleReceiver::new(header);
            let _ = rx.finish(None);
        }
        Some(Kind::Digest(d)) => match Digest::try_from(d.as_ref()) {
            Ok(digest) => {
                assert_eq!(d.len(), 16);
                assert_eq!(Digest::from_hex(&digest.to_hex()), Some(digest));
            }
            Err(_) => assert_ne!(d.len(), 16),
        },
        Some(Kind::Chunk(_)) | None => {}
    }
});
