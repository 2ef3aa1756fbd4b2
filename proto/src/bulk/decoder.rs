//! Incremental decoding of gRPC message frames as HTTP/2 delivers them, in pieces of any
//! size. One `bytes` field (the bulk field: a download's data, an upload's chunk) is handed
//! out as slices of the received buffers, never reassembled into a message buffer; every
//! other message (and a bulk field that is not its message's last field) comes out whole,
//! for prost to decode.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::frame::PREFIX_BYTES;

/// What the decoder found next.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A whole encoded message.
    Message(Bytes),
    /// `piece` of a message's bulk field, starting at byte `at` of the field. `head` holds
    /// the message's fields encoded before the bulk field (a valid partial message).
    Bulk {
        head: Bytes,
        at: usize,
        piece: Bytes,
    },
}

/// Every way a frame stream can be malformed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FrameError {
    #[error("compressed gRPC messages are not supported (flag {0})")]
    Compressed(u8),
    #[error("gRPC message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("malformed protobuf message: {0}")]
    Malformed(&'static str),
    #[error("stream ended inside a gRPC message")]
    Truncated,
}

/// Decodes frames pushed in as they arrive; see the module docs.
#[derive(Debug)]
pub struct BulkDecoder {
    bulk_field: u32,
    limit: usize,
    input: Input,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Waiting for a message prefix.
    Prefix,
    /// Inside a message: `remaining` bytes to go, fields so far copied into `head`.
    Fields { remaining: usize, head: BytesMut },
    /// Inside the bulk field, the message's last: `remaining` bytes of it to go.
    Bulk {
        head: Bytes,
        at: usize,
        remaining: usize,
    },
}

impl BulkDecoder {
    /// A decoder whose bulk field is field number `bulk_field` of the top-level message (0:
    /// none), refusing messages larger than `limit` bytes.
    pub fn new(bulk_field: u32, limit: usize) -> Self {
        BulkDecoder {
            bulk_field,
            limit,
            input: Input::default(),
            state: State::Prefix,
        }
    }

    /// Bytes as received (an HTTP/2 DATA frame's payload).
    pub fn push(&mut self, data: Bytes) {
        self.input.push(data);
    }

    /// The next event, or `None` until more bytes are pushed.
    pub fn next_event(&mut self) -> Result<Option<Event>, FrameError> {
        loop {
            match &mut self.state {
                State::Prefix => {
                    if self.input.len < PREFIX_BYTES {
                        return Ok(None);
                    }
                    let p = self.input.take(PREFIX_BYTES);
                    if p[0] != 0 {
                        return Err(FrameError::Compressed(p[0]));
                    }
                    let len = u32::from_be_bytes([p[1], p[2], p[3], p[4]]) as usize;
                    if len > self.limit {
                        return Err(FrameError::TooLarge {
                            len,
                            limit: self.limit,
                        });
                    }
                    self.state = State::Fields {
                        remaining: len,
                        head: BytesMut::new(),
                    };
                }
                State::Fields { remaining, head } => {
                    if *remaining == 0 {
                        let message = std::mem::take(head).freeze();
                        self.state = State::Prefix;
                        return Ok(Some(Event::Message(message)));
                    }
                    let mut peek = [0u8; 20];
                    let want = (*remaining).min(peek.len());
                    let got = self.input.peek(&mut peek[..want]);
                    let Some(extent) =
                        field_extent(&peek[..got], got == want, *remaining, self.bulk_field)?
                    else {
                        return Ok(None);
                    };
                    match extent {
                        Extent::Bulk { key_bytes, len } => {
                            self.input.take(key_bytes);
                            self.state = State::Bulk {
                                head: std::mem::take(head).freeze(),
                                at: 0,
                                remaining: len,
                            };
                        }
                        Extent::Field(len) => {
                            if self.input.len < len {
                                return Ok(None);
                            }
                            head.extend_from_slice(&self.input.take(len));
                            *remaining -= len;
                        }
                    }
                }
                State::Bulk {
                    head,
                    at,
                    remaining,
                } => {
                    if *remaining == 0 {
                        self.state = State::Prefix;
                        continue;
                    }
                    let piece = self.input.take_front(*remaining);
                    if piece.is_empty() {
                        return Ok(None);
                    }
                    let start = *at;
                    *at += piece.len();
                    *remaining -= piece.len();
                    return Ok(Some(Event::Bulk {
                        head: head.clone(),
                        at: start,
                        piece,
                    }));
                }
            }
        }
    }

    /// At the end of the stream: an error unless it ended between messages.
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.state {
            State::Prefix if self.input.len == 0 => Ok(()),
            _ => Err(FrameError::Truncated),
        }
    }
}

/// The next field of a message.
enum Extent {
    /// An ordinary field of `len` bytes (key included).
    Field(usize),
    /// The bulk field, ending the message: its key and length take `key_bytes`, its data `len`.
    Bulk { key_bytes: usize, len: usize },
}

/// Where the field at the start of `b` ends. `b` holds up to 20 bytes of the message
/// (enough for a key and a length); `complete` says no more can come (the message ends).
/// `None`: more bytes needed.
fn field_extent(
    b: &[u8],
    complete: bool,
    remaining: usize,
    bulk_field: u32,
) -> Result<Option<Extent>, FrameError> {
    let need_more = |what| {
        if complete {
            Err(FrameError::Malformed(what))
        } else {
            Ok(None)
        }
    };
    let Some((key, k)) = varint(b)? else {
        return need_more("truncated field key");
    };
    let field = key >> 3;
    if field == 0 || field > u64::from(u32::MAX >> 3) {
        return Err(FrameError::Malformed("invalid field number"));
    }
    let len = match key & 7 {
        0 => match varint(&b[k..])? {
            Some((_, n)) => k + n,
            None => return need_more("truncated varint"),
        },
        1 => k + 8,
        5 => k + 4,
        2 => {
            let Some((data, n)) = varint(&b[k..])? else {
                return need_more("truncated length");
            };
            let data =
                usize::try_from(data).map_err(|_| FrameError::Malformed("length overflows"))?;
            let total = (k + n)
                .checked_add(data)
                .ok_or(FrameError::Malformed("length overflows"))?;
            if field == u64::from(bulk_field) && data > 0 && total == remaining {
                return Ok(Some(Extent::Bulk {
                    key_bytes: k + n,
                    len: data,
                }));
            }
            total
        }
        _ => return Err(FrameError::Malformed("unsupported wire type")),
    };
    if len > remaining {
        return Err(FrameError::Malformed("field runs past the message's end"));
    }
    Ok(Some(Extent::Field(len)))
}

/// A protobuf varint at the start of `b` and its length; `None` if `b` ends inside it.
fn varint(b: &[u8]) -> Result<Option<(u64, usize)>, FrameError> {
    let mut value = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if i == 9 && byte > 1 {
                return Err(FrameError::Malformed("varint overflows 64 bits"));
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if b.len() >= 10 {
        return Err(FrameError::Malformed("varint longer than 10 bytes"));
    }
    Ok(None)
}

/// Received buffers not yet consumed.
#[derive(Debug, Default)]
struct Input {
    bufs: VecDeque<Bytes>,
    len: usize,
}

impl Input {
    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.len += b.len();
            self.bufs.push_back(b);
        }
    }

    /// Copies the first bytes into `dst` without consuming them; returns how many.
    fn peek(&self, dst: &mut [u8]) -> usize {
        let mut n = 0;
        for b in &self.bufs {
            let k = (dst.len() - n).min(b.len());
            dst[n..n + k].copy_from_slice(&b[..k]);
            n += k;
            if n == dst.len() {
                break;
            }
        }
        n
    }

    /// The next `n` bytes (at most `len`): a slice when they lie in one buffer, else a copy.
    fn take(&mut self, n: usize) -> Bytes {
        let n = n.min(self.len);
        if self.bufs.front().is_some_and(|f| f.len() >= n) {
            return self.take_front(n);
        }
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            let piece = self.take_front(n - out.len());
            out.extend_from_slice(&piece);
        }
        out.freeze()
    }

    /// Up to `n` bytes from the first buffer only: always a slice, never a copy.
    fn take_front(&mut self, n: usize) -> Bytes {
        let Some(front) = self.bufs.front_mut() else {
            return Bytes::new();
        };
        let out = if n >= front.len() {
            let out = std::mem::take(front);
            self.bufs.pop_front();
            out
        } else {
            front.split_to(n)
        };
        self.len -= out.len();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::{bulk_frame, message_frame};
    use super::*;
    use crate::v1;
    use prost::Message;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    const LIMIT: usize = (1 << 20) + (64 << 10);

    /// Feeds `wire` in pieces cut at `cuts`, collecting events until the end.
    fn decode(wire: &[u8], cuts: &[usize], bulk: u32) -> Result<Vec<Event>, FrameError> {
        let mut d = BulkDecoder::new(bulk, LIMIT);
        let mut events = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&wire.len())) {
            d.push(Bytes::copy_from_slice(&wire[start..end]));
            start = end;
            while let Some(e) = d.next_event()? {
                events.push(e);
            }
        }
        d.finish()?;
        Ok(events)
    }

    fn random_cuts(rng: &mut StdRng, len: usize) -> Vec<usize> {
        let mut cuts: Vec<usize> = (0..rng.random_range(0..8))
            .map(|_| rng.random_range(0..=len))
            .collect();
        cuts.sort_unstable();
        cuts
    }

    /// Rebuilds download chunks from events: what the client transport does.
    fn try_chunks(events: &[Event]) -> Result<Vec<v1::DownloadChunk>, prost::DecodeError> {
        events
            .iter()
            .map(|e| match e {
                Event::Message(m) => v1::DownloadChunk::decode(m.clone()),
                Event::Bulk { head, at, piece } => {
                    let h = v1::DownloadChunk::decode(head.clone())?;
                    Ok(v1::DownloadChunk {
                        offset: h.offset + *at as u64,
                        data: piece.clone(),
                    })
                }
            })
            .collect()
    }

    fn chunks(events: &[Event]) -> Vec<v1::DownloadChunk> {
        try_chunks(events).unwrap()
    }

    #[test]
    fn bulk_data_arrives_whole_and_in_order_however_it_is_cut() {
        let mut rng = StdRng::seed_from_u64(7);
        let data: Vec<u8> = (0..300_000).map(|_| rng.random()).collect();
        let mut wire = Vec::new();
        for (i, piece) in data.chunks(100_000).enumerate() {
            let head = v1::DownloadChunk {
                offset: i as u64 * 100_000,
                data: Bytes::new(),
            }
            .encode_to_vec();
            for b in bulk_frame(&head, 2, Bytes::copy_from_slice(piece)) {
                wire.extend_from_slice(&b);
            }
        }
        for _ in 0..200 {
            let cuts = random_cuts(&mut rng, wire.len());
            let got = chunks(&decode(&wire, &cuts, 2).unwrap());
            let mut rebuilt = Vec::new();
            for c in got {
                assert_eq!(c.offset as usize, rebuilt.len(), "pieces in order");
                rebuilt.extend_from_slice(&c.data);
            }
            assert_eq!(rebuilt, data);
        }
    }

    #[test]
    fn bulk_pieces_are_slices_of_the_received_buffers() {
        let data = Bytes::from(vec![9u8; 4096]);
        let [head, body] = bulk_frame(&[], 2, data);
        let mut d = BulkDecoder::new(2, LIMIT);
        d.push(head);
        d.push(body.clone());
        let Some(Event::Bulk { piece, at: 0, .. }) = d.next_event().unwrap() else {
            panic!("expected the bulk field");
        };
        assert_eq!(piece.as_ptr(), body.as_ptr(), "no copy");
        assert_eq!(piece.len(), body.len());
        assert_eq!(d.next_event().unwrap(), None);
        d.finish().unwrap();
    }

    #[test]
    fn other_messages_come_out_whole() {
        use v1::upload_message::Kind;
        let header = v1::UploadMessage {
            kind: Some(Kind::Header(v1::UploadHeader {
                task_id: "t-1".into(),
                round: 3,
                model_version: 2,
                num_examples: 10,
                update: None,
                within_clip: true,
            })),
        };
        let digest = v1::UploadMessage {
            kind: Some(Kind::Digest(Bytes::from_static(&[7; 16]))),
        };
        let empty_chunk = v1::UploadMessage {
            kind: Some(Kind::Chunk(Bytes::new())),
        };
        let mut wire = Vec::new();
        for m in [&header, &digest, &empty_chunk] {
            wire.extend_from_slice(&message_frame(m));
        }
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..100 {
            let cuts = random_cuts(&mut rng, wire.len());
            let got: Vec<_> = decode(&wire, &cuts, 2)
                .unwrap()
                .into_iter()
                .map(|e| match e {
                    Event::Message(m) => v1::UploadMessage::decode(m).unwrap(),
                    Event::Bulk { .. } => panic!("no bulk data here"),
                })
                .collect();
            assert_eq!(got, [header.clone(), digest.clone(), empty_chunk.clone()]);
        }
    }

    #[test]
    fn a_bulk_field_followed_by_other_fields_is_decoded_whole() {
        // data (field 2) before offset (field 1): legal protobuf, not what prost writes.
        let mut msg = Vec::new();
        prost::encoding::bytes::encode(2, &Bytes::from_static(b"abc"), &mut msg);
        prost::encoding::uint64::encode(1, &42, &mut msg);
        let mut wire = vec![0];
        wire.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        wire.extend_from_slice(&msg);
        let got = chunks(&decode(&wire, &[3, 8], 2).unwrap());
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].offset, got[0].data.as_ref()), (42, &b"abc"[..]));
    }

    #[test]
    fn bad_frames_are_refused() {
        let frame = |flag: u8, body: &[u8]| {
            let mut w = vec![flag];
            w.extend_from_slice(&(body.len() as u32).to_be_bytes());
            w.extend_from_slice(body);
            w
        };
        assert_eq!(
            decode(&frame(1, b"\x08\x01"), &[], 2),
            Err(FrameError::Compressed(1))
        );
        let mut huge = vec![0];
        huge.extend_from_slice(&(LIMIT as u32 + 1).to_be_bytes());
        assert!(matches!(
            decode(&huge, &[], 2),
            Err(FrameError::TooLarge { .. })
        ));
        // Ends inside the prefix, inside a message, inside the bulk field.
        let [h, d] = bulk_frame(&[], 2, Bytes::from_static(b"hello"));
        let whole: Vec<u8> = [h, d].concat();
        for cut in [3, 5, 7, whole.len() - 1] {
            assert_eq!(
                decode(&whole[..cut], &[], 2),
                Err(FrameError::Truncated),
                "cut at {cut}"
            );
        }
        for (body, why) in [
            (&b"\x00"[..], "invalid field number"),
            (b"\x0b\x00", "unsupported wire type"),
            (b"\x12\x05ab", "field runs past the message's end"),
            (b"\x08", "truncated varint"),
            (
                b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f",
                "varint overflows 64 bits",
            ),
            (
                b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
                "varint longer than 10 bytes",
            ),
            (
                b"\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
                "length overflows",
            ),
        ] {
            assert_eq!(
                decode(&frame(0, body), &[], 2),
                Err(FrameError::Malformed(why)),
                "{body:?}"
            );
        }
    }

    #[test]
    fn fuzzed_frames_never_panic_and_agree_with_prost() {
        let mut rng = StdRng::seed_from_u64(11);
        for _ in 0..3000 {
            let len = rng.random_range(0..64);
            let mut body: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if rng.random_bool(0.5) && !body.is_empty() {
                body[0] = [0x08, 0x12, 0x1a, 0x0a][rng.random_range(0..4)];
            }
            let mut wire = vec![0];
            wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
            wire.extend_from_slice(&body);
            let cuts = random_cuts(&mut rng, wire.len());
            let events = decode(&wire, &cuts, 2);
            assert!(matches!(events, Ok(_) | Err(FrameError::Malformed(_))));
            // A message both decode has the same content (we refuse groups, prost skips them).
            if let (Ok(theirs), Ok(events)) = (v1::DownloadChunk::decode(&body[..]), events) {
                let ours = chunks(&events);
                let data: Vec<u8> = ours.iter().flat_map(|c| c.data.to_vec()).collect();
                assert_eq!(data, theirs.data.to_vec());
                assert_eq!(ours[0].offset, theirs.offset);
            }
        }
    }
}
