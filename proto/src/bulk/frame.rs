//! Encoding gRPC message frames: a 5-byte prefix (compressed flag, big-endian length) and
//! the protobuf message. A bulk frame carries its large `bytes` field as a separate buffer,
//! so a model slice goes to the socket without being copied into an encode buffer.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{encode_varint, encoded_len_varint};

/// Bytes before every gRPC message: compressed flag (0) and the message length.
pub const PREFIX_BYTES: usize = 5;

/// The frame of `msg`: prefix and encoded message in one buffer (for small messages).
pub fn message_frame(msg: &impl Message) -> Bytes {
    let len = msg.encoded_len();
    let mut buf = BytesMut::with_capacity(PREFIX_BYTES + len);
    put_prefix(&mut buf, len);
    msg.encode_raw(&mut buf);
    buf.freeze()
}

/// The frame of a message whose encoded fields are `head` followed by field `field` of wire
/// type "length-delimited" holding `data` (its last field): `[prefix, head, key, length]`
/// and `data` itself, untouched. Decodes like the message prost would encode.
pub fn bulk_frame(head: &[u8], field: u32, data: Bytes) -> [Bytes; 2] {
    let key = u64::from(field) << 3 | 2;
    let field_len = encoded_len_varint(key) + encoded_len_varint(data.len() as u64) + data.len();
    let mut buf = BytesMut::with_capacity(PREFIX_BYTES + head.len() + 20);
    put_prefix(&mut buf, head.len() + field_len);
    buf.extend_from_slice(head);
    encode_varint(key, &mut buf);
    encode_varint(data.len() as u64, &mut buf);
    [buf.freeze(), data]
}

fn put_prefix(buf: &mut BytesMut, len: usize) {
    buf.put_u8(0);
    // Messages are bounded far below 4 GiB by the callers (chunks of at most 1 MiB).
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1;

    fn joined(parts: &[Bytes]) -> Vec<u8> {
        parts.iter().flat_map(|b| b.iter().copied()).collect()
    }

    #[test]
    fn bulk_frames_decode_as_the_messages_prost_encodes() {
        let data = Bytes::from((0..=255u8).cycle().take(70_000).collect::<Vec<_>>());
        for offset in [0u64, 1, 300, u64::MAX] {
            let msg = v1::DownloadChunk {
                offset,
                data: data.clone(),
            };
            let head = v1::DownloadChunk {
                offset,
                data: Bytes::new(),
            }
            .encode_to_vec();
            let frame = joined(&bulk_frame(&head, 2, data.clone()));
            assert_eq!(frame, joined(&[message_frame(&msg)]));
            assert_eq!(frame[0], 0);
            let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
            assert_eq!(len, frame.len() - PREFIX_BYTES);
            assert_eq!(
                v1::DownloadChunk::decode(&frame[PREFIX_BYTES..]).unwrap(),
                msg
            );
        }
        let chunk = v1::UploadMessage {
            kind: Some(v1::upload_message::Kind::Chunk(data.clone())),
        };
        assert_eq!(
            joined(&bulk_frame(&[], 2, data)),
            joined(&[message_frame(&chunk)])
        );
    }
}
