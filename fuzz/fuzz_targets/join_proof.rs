//! Arbitrary bytes as a `v1::JoinRequest` and as the text of key files: the proof's fields go
//! through `identity::verify_join` (which must refuse, never panic, on any lengths), and the
//! text through the authorized-keys line and device-key parsers, whose output must survive a
//! round trip.
#![no_main]

use fedtune_proto::identity::{parse_key_line, public_key_line, secret_from_text, verify_join};
use fedtune_proto::v1;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = v1::JoinRequest::decode(data) {
        if let Some(p) = req.proof {
            let _ = verify_join(&p.public_key, &p.nonce, &p.signature, &req.client_id);
        }
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    for line in text.lines() {
        if let Ok(Some((key, id))) = parse_key_line(line) {
            let again = parse_key_line(&public_key_line(&key, id.as_deref()));
            assert_eq!(again.ok().flatten(), Some((key, id)));
        }
    }
    let _ = secret_from_text(text);
});
