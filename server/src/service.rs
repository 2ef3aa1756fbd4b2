//! The `fedtune.v1.Federation` gRPC service: a thin adapter from tonic to [`Coordinator`].

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use fedtune_proto::v1::{self, federation_server::Federation};
use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming, metadata::MetadataMap};

use crate::Coordinator;

/// The session token from an `authorization: Bearer <token>` metadata entry.
pub fn bearer_token(meta: &MetadataMap) -> Result<String, Status> {
    let value = meta.get("authorization").ok_or_else(|| {
        Status::unauthenticated("missing authorization metadata; call Join first")
    })?;
    let text = value
        .to_str()
        .map_err(|_| Status::unauthenticated("authorization metadata is not ASCII"))?;
    text.strip_prefix("Bearer ")
        .map(str::to_string)
        .ok_or_else(|| Status::unauthenticated("authorization metadata must be `Bearer <token>`"))
}

/// gRPC front of a [`Coordinator`].
#[derive(Debug, Clone)]
pub struct FederationService {
    coord: Arc<Coordinator>,
}

impl FederationService {
    pub fn new(coord: Arc<Coordinator>) -> Self {
        FederationService { coord }
    }

    /// The tonic server wrapper, with message limits sized for 1 MiB chunks.
    pub fn into_server(self) -> v1::federation_server::FederationServer<Self> {
        v1::federation_server::FederationServer::new(self)
            .max_decoding_message_size(fedtune_proto::bulk::MESSAGE_LIMIT)
            .max_encoding_message_size(fedtune_proto::bulk::MESSAGE_LIMIT)
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<v1::DownloadChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Federation for FederationService {
    async fn join(
        &self,
        req: Request<v1::JoinRequest>,
    ) -> Result<Response<v1::JoinResponse>, Status> {
        Ok(Response::new(self.coord.join(req.into_inner())?))
    }

    async fn challenge(
        &self,
        req: Request<v1::ChallengeRequest>,
    ) -> Result<Response<v1::ChallengeResponse>, Status> {
        Ok(Response::new(self.coord.challenge(req.get_ref())))
    }

    async fn check_in(
        &self,
        req: Request<v1::CheckInRequest>,
    ) -> Result<Response<v1::CheckInResponse>, Status> {
        let token = bearer_token(req.metadata())?;
        let connection = req.remote_addr();
        Ok(Response::new(
            self.coord.check_in(&token, connection).await?,
        ))
    }

    type DownloadStream = ChunkStream;

    async fn download(
        &self,
        req: Request<v1::DownloadRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let token = bearer_token(req.metadata())?;
        let chunks = self.coord.download(&token, req.get_ref())?;
        Ok(Response::new(Box::pin(futures::stream::iter(
            chunks.into_iter().map(Ok),
        ))))
    }

    async fn upload(
        &self,
        req: Request<Streaming<v1::UploadMessage>>,
    ) -> Result<Response<v1::UploadResponse>, Status> {
        let token = bearer_token(req.metadata())?;
        Ok(Response::new(
            self.coord.upload(&token, req.into_inner()).await?,
        ))
    }

    async fn sec_agg(
        &self,
        req: Request<v1::SecAggRequest>,
    ) -> Result<Response<v1::SecAggResponse>, Status> {
        let token = bearer_token(req.metadata())?;
        let connection = req.remote_addr();
        Ok(Response::new(
            self.coord
                .secagg(&token, req.into_inner(), connection)
                .await?,
        ))
    }

    async fn report_metrics(
        &self,
        req: Request<v1::MetricsReport>,
    ) -> Result<Response<v1::MetricsAck>, Status> {
        let token = bearer_token(req.metadata())?;
        self.coord.report_metrics(&token, req.get_ref())?;
        Ok(Response::new(v1::MetricsAck {}))
    }

    async fn decline(
        &self,
        req: Request<v1::DeclineRequest>,
    ) -> Result<Response<v1::DeclineAck>, Status> {
        let token = bearer_token(req.metadata())?;
        self.coord.decline(&token, req.get_ref())?;
        Ok(Response::new(v1::DeclineAck {}))
    }

    async fn get_status(
        &self,
        _req: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        Ok(Response::new(self.coord.status()))
    }
}

/// HTTP/2 flow control: one 1 MiB chunk (plus framing) in flight per stream keeps transfers
/// fast while bounding what an upload waiting for a staging slot parks in server memory.
pub const STREAM_WINDOW: u32 = (1 << 20) + (256 << 10);
/// Many devices may share one connection (behind a proxy, or in a simulation): the connection
/// window must hold every parked upload's stream window, or a parked stream could starve the
/// one holding the staging slot. Parked data stays bounded by the server's waiting limit.
pub const CONNECTION_WINDOW: u32 = 32 << 20;

/// Largest HTTP/2 frame a client may send: 1 MiB upload chunks arrive in 4 frames rather than
/// 64 of the default 16 KiB (gRPC overhead benchmark 10% faster). Each connection's read
/// buffer grows to a frame, so 1 MiB frames cost the server more than they save (peak RSS at
/// 1000 clients 66 → 79 MiB, for 6% more).
pub const MAX_FRAME: u32 = 256 << 10;

/// Calls in flight on one connection. Each costs the server ~8 KB while it lasts (tonic's
/// codec buffer, the HTTP/2 stream, the handler): unlimited (tonic's default), 10,000 devices
/// sharing 16 connections put every join and check-in in flight at once and the server's
/// memory grew with the fleet (5,000 devices: 82 MiB). Clients queue calls beyond it.
pub const MAX_STREAMS: u32 = 64;

/// Serves `coord` on an already-bound listener until `shutdown` resolves.
pub async fn serve(
    coord: Arc<Coordinator>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    serve_tls(coord, listener, None, shutdown).await
}

/// [`serve`], over TLS when `tls` is given (every call, the bulk ones included).
pub async fn serve_tls(
    coord: Arc<Coordinator>,
    listener: TcpListener,
    tls: Option<&crate::ServerTls>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, tls = tls.is_some(), "serving fedtune.v1.Federation");
    let idle = coord.config().idle_timeout;
    let incoming = TcpListenerStream::new(listener).map(move |conn| {
        let conn = conn?;
        // Set here: tonic applies its own TCP settings only to listeners it binds itself.
        conn.set_nodelay(true)?;
        Ok::<_, std::io::Error>(crate::idle::IdleTimeout::new(conn, idle))
    });
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls.config())?;
    }
    builder
        // Large HTTP/2 windows: 1 MiB chunks flow without waiting on window updates.
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .max_frame_size(Some(MAX_FRAME))
        .max_concurrent_streams(Some(MAX_STREAMS))
        .add_service(crate::FederationRouter::new(coord))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
