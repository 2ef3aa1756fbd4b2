//! gRPC bodies for bulk transfers: built from frames, and read back as decoder events, a
//! single message and the final status.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http_body::{Body as _, Frame};
use tonic::{Code, Status, body::Body};

use super::decoder::{BulkDecoder, Event, FrameError};

/// `content-type` of gRPC requests and responses.
pub const GRPC_CONTENT_TYPE: &str = "application/grpc";

/// A request body: the frames, then the end of the stream.
pub fn request_body<S>(frames: S) -> Body
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    Body::new(http_body_util::StreamBody::new(
        frames.map(|b| Ok::<_, Status>(Frame::data(b))),
    ))
}

/// A response body: the frames, then trailers carrying an OK status.
pub fn response_body<S>(frames: S) -> Body
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    let ok = futures::stream::once(async {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        Ok::<_, Status>(Frame::trailers(trailers))
    });
    Body::new(http_body_util::StreamBody::new(
        frames.map(|b| Ok::<_, Status>(Frame::data(b))).chain(ok),
    ))
}

/// The status a malformed frame stream is answered with (tonic's codes for the same faults).
pub fn frame_status(e: FrameError) -> Status {
    match e {
        FrameError::Compressed(_) => Status::unimplemented(e.to_string()),
        FrameError::TooLarge { .. } => Status::out_of_range(e.to_string()),
        FrameError::Malformed(_) | FrameError::Truncated => Status::internal(e.to_string()),
    }
}

/// Decoder events read from a body. A response body (`trailers` set) must end with a
/// `grpc-status` trailer; an error status there, a broken body or a malformed frame is the
/// stream's last item, as an `Err`.
pub struct Events {
    body: Body,
    decoder: BulkDecoder,
    trailers: bool,
    done: bool,
}

impl Events {
    /// Events of a request body.
    pub fn request(body: Body, decoder: BulkDecoder) -> Self {
        Events {
            body,
            decoder,
            trailers: false,
            done: false,
        }
    }

    /// Events of a response body, which ends with the call's status.
    pub fn response(body: Body, decoder: BulkDecoder) -> Self {
        Events {
            trailers: true,
            ..Events::request(body, decoder)
        }
    }

    /// The end of the body: its status if it is an error.
    fn end(&mut self, trailers: Option<&http::HeaderMap>) -> Option<Status> {
        self.done = true;
        if let Err(e) = self.decoder.finish() {
            return Some(frame_status(e));
        }
        match trailers.map(Status::from_header_map) {
            Some(Some(status)) if status.code() == Code::Ok => None,
            Some(Some(status)) => Some(status),
            _ if self.trailers => Some(Status::internal(
                "protocol error: the response ended without a grpc-status",
            )),
            _ => None,
        }
    }
}

impl Stream for Events {
    type Item = Result<Event, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            match self.decoder.next_event() {
                Ok(Some(event)) => return Poll::Ready(Some(Ok(event))),
                Ok(None) => {}
                Err(e) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(frame_status(e))));
                }
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.decoder.push(data),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            return Poll::Ready(self.end(Some(&trailers)).map(Err));
                        }
                    }
                },
                Some(Err(status)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(status)));
                }
                None => return Poll::Ready(self.end(None).map(Err)),
            }
        }
    }
}

/// The one message of a unary request or response (no bulk field), after the whole body.
pub async fn read_message<M: prost::Message + Default>(mut events: Events) -> Result<M, Status> {
    let mut message = None;
    while let Some(event) = events.next().await {
        match event? {
            Event::Message(m) if message.is_none() => {
                message = Some(M::decode(m).map_err(decode_status)?);
            }
            _ => return Err(Status::internal("expected one message, got more")),
        }
    }
    message.ok_or_else(|| Status::internal("expected one message, got none"))
}

/// The status a message that is not valid protobuf is answered with (tonic's).
pub fn decode_status(e: prost::DecodeError) -> Status {
    Status::internal(format!("failed to decode Protobuf message: {e}"))
}

/// The status of a response that carries none (a proxy's, not a gRPC server's), by the
/// gRPC spec's mapping of HTTP status codes.
pub fn http_status(code: http::StatusCode) -> Status {
    let message = format!("HTTP status {code} instead of a gRPC response");
    match code.as_u16() {
        400 => Status::internal(message),
        401 => Status::unauthenticated(message),
        403 => Status::permission_denied(message),
        404 => Status::unimplemented(message),
        429 | 502..=504 => Status::unavailable(message),
        _ => Status::unknown(message),
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::{bulk_frame, message_frame};
    use super::*;
    use crate::v1;

    fn chunk_frames() -> Vec<Bytes> {
        bulk_frame(&[], 2, Bytes::from_static(b"payload")).to_vec()
    }

    #[tokio::test]
    async fn a_response_ends_with_its_status() {
        let events = Events::response(
            response_body(futures::stream::iter(chunk_frames())),
            BulkDecoder::new(2, 1 << 20),
        );
        let got: Vec<_> = events.collect().await;
        assert_eq!(got.len(), 1);
        assert!(matches!(&got[0], Ok(Event::Bulk { piece, .. }) if piece == "payload"));

        // No trailers: a response cut short by a proxy, an error.
        let events = Events::response(
            request_body(futures::stream::iter(chunk_frames())),
            BulkDecoder::new(2, 1 << 20),
        );
        let got: Vec<_> = events.collect().await;
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].as_ref().unwrap_err().code(), Code::Internal);
    }

    #[tokio::test]
    async fn an_error_status_in_the_trailers_is_returned() {
        let status = Status::failed_precondition("round moved on");
        let mut trailers = http::HeaderMap::new();
        status.add_header(&mut trailers).unwrap();
        let body = Body::new(http_body_util::StreamBody::new(futures::stream::iter([
            Ok::<_, Status>(Frame::data(message_frame(&v1::UploadResponse::default()))),
            Ok(Frame::trailers(trailers)),
        ])));
        let err = read_message::<v1::UploadResponse>(Events::response(
            body,
            BulkDecoder::new(0, 1 << 20),
        ))
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert_eq!(err.message(), "round moved on");
    }

    #[tokio::test]
    async fn unary_messages_are_read_whole() {
        let msg = v1::UploadResponse {
            accepted: true,
            round: 4,
            received: 9,
        };
        let one = |frames: Vec<Bytes>| {
            read_message::<v1::UploadResponse>(Events::response(
                response_body(futures::stream::iter(frames)),
                BulkDecoder::new(0, 1 << 20),
            ))
        };
        let frame = message_frame(&msg);
        assert_eq!(one(vec![frame.clone()]).await.unwrap(), msg);
        assert_eq!(
            one(vec![frame.slice(..3), frame.slice(3..)]).await.unwrap(),
            msg
        );
        assert!(one(vec![]).await.is_err());
        assert!(one(vec![frame.clone(), frame.clone()]).await.is_err());
        assert!(one(vec![frame.slice(..frame.len() - 1)]).await.is_err());
    }
}
