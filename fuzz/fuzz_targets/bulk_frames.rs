//! Arbitrary bytes as a gRPC frame stream for `fedtune_proto::bulk::BulkDecoder`, the
//! decoder both sides run on every download and upload body. Input layout: byte 0 = bulk
//! field number (0-3), byte 1 = piece size - 1, then the stream, pushed in pieces of that
//! size. The same stream pushed whole must give the same content; errors are fine, a panic
//! (or content that depends on how the stream was cut) is a finding.
#![no_main]

use bytes::Bytes;
use fedtune_proto::bulk::{BulkDecoder, Event};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let [field, piece, wire @ ..] = data else { return };
    let field = u32::from(*field % 4);
    let piece = usize::from(*piece) + 1;
    let cut = decode(field, wire.chunks(piece));
    let whole = decode(field, std::iter::once(wire));
    match (cut, whole) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "content depends on the cuts"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("cut {a:?} vs whole {b:?}"),
    }
});

/// Messages, and bulk fields reassembled with their heads, in order.
fn decode<'a>(
    field: u32,
    pieces: impl Iterator<Item = &'a [u8]>,
) -> Result<Vec<(Bytes, Vec<u8>)>, String> {
    let mut d = BulkDecoder::new(field, LIMIT);
    let mut out: Vec<(Bytes, Vec<u8>)> = Vec::new();
    for p in pieces {
        d.push(Bytes::copy_from_slice(p));
        while let Some(event) = d.next_event().map_err(|e| e.to_string())? {
            match event {
                Event::Message(m) => out.push((m, Vec::new())),
                Event::Bulk { head, at, piece } => {
                    assert!(!piece.is_empty());
                    if at == 0 {
                        out.push((head, Vec::new()));
                    }
                    let last = out.last_mut().expect("pushed above");
                    assert_eq!(last.1.len(), at, "pieces in order");
                    last.1.extend_from_slice(&piece);
                }
            }
        }
    }
    d.finish().map_err(|e| e.to_string())?;
    Ok(out)
}
