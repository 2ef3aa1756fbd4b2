//! `Download` and `Upload` served below tonic's codec (see [`fedtune_proto::bulk`]): a
//! download's chunks leave as slices of the global model's bundle, an upload's chunks arrive
//! as slices of the HTTP/2 frames that carried them and are copied once, into the upload's
//! staging buffer. The other calls go through the tonic service. Same messages and statuses
//! either way.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use fedtune_proto::bulk::{self, BulkDecoder, Event, Events, MESSAGE_LIMIT};
use fedtune_proto::v1::{self, federation_server::FederationServer};
use futures::StreamExt;
use http::{Request, Response};
use prost::Message;
use tonic::codegen::{BoxFuture, Service};
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::{Status, body::Body};

use crate::{Coordinator, FederationService, bearer_token};

const DOWNLOAD: &str = "/fedtune.v1.Federation/Download";
const UPLOAD: &str = "/fedtune.v1.Federation/Upload";

/// The `fedtune.v1.Federation` service as served: bulk calls here, the rest through tonic.
#[derive(Clone, Debug)]
pub struct FederationRouter {
    coord: Arc<Coordinator>,
    tonic: FederationServer<FederationService>,
}

impl FederationRouter {
    pub fn new(coord: Arc<Coordinator>) -> Self {
        let tonic = FederationService::new(Arc::clone(&coord)).into_server();
        FederationRouter { coord, tonic }
    }
}

impl NamedService for FederationRouter {
    const NAME: &'static str = "fedtune.v1.Federation";
}

impl Service<Request<Body>> for FederationRouter {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Response<Body>, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let coord = Arc::clone(&self.coord);
        match req.uri().path() {
            DOWNLOAD => Box::pin(async move {
                Ok(download(&coord, req)
                    .await
                    .unwrap_or_else(Status::into_http))
            }),
            UPLOAD => {
                Box::pin(
                    async move { Ok(upload(&coord, req).await.unwrap_or_else(Status::into_http)) },
                )
            }
            _ => self.tonic.call(req),
        }
    }
}

/// Server-streamed chunks of the global model, from the requested offset.
async fn download(coord: &Coordinator, req: Request<Body>) -> Result<Response<Body>, Status> {
    let token = bearer_token(&MetadataMap::from_headers(req.headers().clone()))?;
    let events = Events::request(req.into_body(), BulkDecoder::new(0, MESSAGE_LIMIT));
    let request: v1::DownloadRequest = bulk::read_message(events).await?;
    let chunks = coord.download(&token, &request)?;
    let frames = chunks.into_iter().flat_map(|c| {
        let head = v1::DownloadChunk {
            offset: c.offset,
            data: Bytes::new(),
        }
        .encode_to_vec();
        bulk::bulk_frame(&head, 2, c.data)
    });
    Ok(grpc_response(bulk::response_body(futures::stream::iter(
        frames,
    ))))
}

/// A client-streamed update: each chunk piece goes to the coordinator as it arrives.
async fn upload(coord: &Arc<Coordinator>, req: Request<Body>) -> Result<Response<Body>, Status> {
    let token = bearer_token(&MetadataMap::from_headers(req.headers().clone()))?;
    let messages = Events::request(req.into_body(), BulkDecoder::new(2, MESSAGE_LIMIT))
        .map(|event| event.and_then(upload_message));
    let response = coord.upload(&token, messages).await?;
    let frame = bulk::message_frame(&response);
    Ok(grpc_response(bulk::response_body(futures::stream::once(
        async move { frame },
    ))))
}

/// An upload message from a decoder event: a piece of a chunk is a (smaller) chunk.
fn upload_message(event: Event) -> Result<v1::UploadMessage, Status> {
    match event {
        Event::Bulk { piece, .. } => Ok(v1::UploadMessage {
            kind: Some(v1::upload_message::Kind::Chunk(piece)),
        }),
        Event::Message(m) => v1::UploadMessage::decode(m).map_err(bulk::decode_status),
    }
}

fn grpc_response(body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(bulk::GRPC_CONTENT_TYPE),
    );
    response
}
