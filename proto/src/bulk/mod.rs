//! Bulk transfers on the gRPC wire without copies: `Download` and `Upload` move a model in
//! chunks of up to 1 MiB, and tonic's codec would copy every chunk into an encode buffer on
//! the way out and reassemble it into a message buffer on the way in. Here a chunk's bytes
//! go out as a slice of the bundle ([`bulk_frame`]) and come in as slices of the HTTP/2
//! frames that carried them ([`BulkDecoder`]). Same messages, same frames on the wire: any
//! gRPC peer interoperates.

mod body;
mod decoder;
mod frame;

pub use body::{
    Events, GRPC_CONTENT_TYPE, decode_status, frame_status, http_status, read_message,
    request_body, response_body,
};
pub use decoder::{BulkDecoder, Event, FrameError};
pub use frame::{PREFIX_BYTES, bulk_frame, message_frame};

/// Largest gRPC message either side accepts or sends: a 1 MiB chunk and room for its
/// framing and the other fields of its message.
pub const MESSAGE_LIMIT: usize = crate::MAX_CHUNK_BYTES + 64 * 1024;
