//! How a client reaches the server: one trait, a gRPC implementation here, an in-process one
//! in the simulation engine. Both speak the same `fedtune.v1` messages and statuses.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use fedtune_proto::v1::{self, federation_client::FederationClient};
use fedtune_proto::{Bundle, FiniteBundle};
use futures::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::ClientError;

pub type BoxStream<T> = Pin<Box<dyn Stream<Item = T> + Send + 'static>>;

/// The calls of the `Federation` service, authenticated by a session token.
pub trait Transport: Send + Sync + 'static {
    fn join(
        &self,
        req: v1::JoinRequest,
    ) -> impl Future<Output = Result<v1::JoinResponse, Status>> + Send;
    fn check_in(
        &self,
        token: &str,
    ) -> impl Future<Output = Result<v1::CheckInResponse, Status>> + Send;
    fn download(
        &self,
        token: &str,
        req: v1::DownloadRequest,
    ) -> impl Future<Output = Result<BoxStream<Result<v1::DownloadChunk, Status>>, Status>> + Send;
    fn upload(
        &self,
        token: &str,
        messages: BoxStream<v1::UploadMessage>,
    ) -> impl Future<Output = Result<v1::UploadResponse, Status>> + Send;
    fn report_metrics(
        &self,
        token: &str,
        req: v1::MetricsReport,
    ) -> impl Future<Output = Result<(), Status>> + Send;
    fn status(&self) -> impl Future<Output = Result<v1::StatusResponse, Status>> + Send;

    /// Whether client and server share memory (the simulation's in-process transport): the
    /// global model and updates then change hands whole ([`Transport::fetch_shared`],
    /// [`Transport::submit_shared`]), without the encoding, chunks and digests that only guard
    /// bytes in transit. The server still authenticates, admits and validates every update
    /// (its values are proved finite by the update's type).
    fn shares_memory(&self) -> bool {
        false
    }

    /// The global model of `model_version`, handed over whole (when [`Transport::shares_memory`]).
    fn fetch_shared(
        &self,
        _token: &str,
        _model_version: u64,
    ) -> impl Future<Output = Result<Bundle, Status>> + Send {
        async {
            Err(Status::unimplemented(
                "this transport does not share memory",
            ))
        }
    }

    /// An update handed over whole (when [`Transport::shares_memory`]): `header` as in the
    /// upload stream, its `update` description unused.
    fn submit_shared(
        &self,
        _token: &str,
        _header: v1::UploadHeader,
        _update: FiniteBundle,
    ) -> impl Future<Output = Result<v1::UploadResponse, Status>> + Send {
        async {
            Err(Status::unimplemented(
                "this transport does not share memory",
            ))
        }
    }
}

/// A gRPC connection to a fedtune server.
#[derive(Clone, Debug)]
pub struct GrpcTransport {
    client: FederationClient<Channel>,
}

impl GrpcTransport {
    /// A lazily connected channel to `url` (e.g. `http://127.0.0.1:50051`): the first call
    /// connects, and a lost connection is re-established by the next call.
    pub fn connect_lazy(url: &str) -> Result<Self, ClientError> {
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| ClientError::Connect {
                url: url.into(),
                reason: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            // Large HTTP/2 windows: 1 MiB chunks flow without waiting on window updates.
            .initial_stream_window_size(Some(4 << 20))
            .initial_connection_window_size(Some(32 << 20))
            // Let the server send downloads in large frames (a device holds one connection, so
            // the larger read buffer this needs is paid once).
            .max_frame_size(Some((1 << 20) - 1))
            .http2_keep_alive_interval(Duration::from_secs(30));
        Ok(Self::from_channel(endpoint.connect_lazy()))
    }

    pub fn from_channel(channel: Channel) -> Self {
        let limit = fedtune_proto::MAX_CHUNK_BYTES + 64 * 1024;
        GrpcTransport {
            client: FederationClient::new(channel)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        }
    }
}

/// tonic wants a `Sync` request stream; a mutex makes any `Send` stream one.
struct SyncStream(std::sync::Mutex<BoxStream<v1::UploadMessage>>);

impl Stream for SyncStream {
    type Item = v1::UploadMessage;
    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let mut inner = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.as_mut().poll_next(cx)
    }
}

fn authed<T>(token: &str, msg: T) -> Result<Request<T>, Status> {
    let mut req = Request::new(msg);
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| Status::invalid_argument("token is not ASCII"))?;
    req.metadata_mut().insert("authorization", value);
    Ok(req)
}

impl Transport for GrpcTransport {
    async fn join(&self, req: v1::JoinRequest) -> Result<v1::JoinResponse, Status> {
        Ok(self.client.clone().join(req).await?.into_inner())
    }

    async fn check_in(&self, token: &str) -> Result<v1::CheckInResponse, Status> {
        Ok(self
            .client
            .clone()
            .check_in(authed(token, v1::CheckInRequest {})?)
            .await?
            .into_inner())
    }

    async fn download(
        &self,
        token: &str,
        req: v1::DownloadRequest,
    ) -> Result<BoxStream<Result<v1::DownloadChunk, Status>>, Status> {
        let stream = self
            .client
            .clone()
            .download(authed(token, req)?)
            .await?
            .into_inner();
        Ok(stream.boxed())
    }

    fn upload(
        &self,
        token: &str,
        messages: BoxStream<v1::UploadMessage>,
    ) -> impl Future<Output = Result<v1::UploadResponse, Status>> + Send {
        let mut client = self.client.clone();
        let req = authed(token, SyncStream(std::sync::Mutex::new(messages)));
        async move { Ok(client.upload(req?).await?.into_inner()) }
    }

    async fn report_metrics(&self, token: &str, req: v1::MetricsReport) -> Result<(), Status> {
        self.client
            .clone()
            .report_metrics(authed(token, req)?)
            .await?;
        Ok(())
    }

    async fn status(&self) -> Result<v1::StatusResponse, Status> {
        Ok(self
            .client
            .clone()
            .get_status(v1::StatusRequest {})
            .await?
            .into_inner())
    }
}
