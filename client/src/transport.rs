//! How a client reaches the server: one trait, a gRPC implementation here, an in-process one
//! in the simulation engine. Both speak the same `fedtune.v1` messages and statuses.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use fedtune_proto::bulk::{self, BulkDecoder, Event, Events, MESSAGE_LIMIT};
use fedtune_proto::v1::{self, federation_client::FederationClient};
use fedtune_proto::{Bundle, FiniteBundle};
use futures::{Stream, StreamExt};
use http::HeaderValue;
use prost::Message;
use tonic::codegen::Service;
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
    /// A fresh nonce to sign a join with (device identity).
    fn challenge(
        &self,
        req: v1::ChallengeRequest,
    ) -> impl Future<Output = Result<v1::ChallengeResponse, Status>> + Send;
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
    /// Tells the server this device cannot do its task.
    fn decline(
        &self,
        token: &str,
        req: v1::DeclineRequest,
    ) -> impl Future<Output = Result<(), Status>> + Send;
    fn status(&self) -> impl Future<Output = Result<v1::StatusResponse, Status>> + Send;
    /// One step of secure aggregation.
    fn secagg(
        &self,
        token: &str,
        req: v1::SecAggRequest,
    ) -> impl Future<Output = Result<v1::SecAggResponse, Status>> + Send;

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

/// A gRPC connection to a fedtune server. `Download` and `Upload` are framed here rather than
/// by tonic's codec ([`fedtune_proto::bulk`]): chunks go out as slices of the update and come
/// in as slices of the HTTP/2 frames, copied once, into the model being received.
#[derive(Clone, Debug)]
pub struct GrpcTransport {
    client: FederationClient<Channel>,
    channel: Channel,
}

const DOWNLOAD: &str = "/fedtune.v1.Federation/Download";
const UPLOAD: &str = "/fedtune.v1.Federation/Upload";

impl GrpcTransport {
    /// A lazily connected plaintext channel to `url` (e.g. `http://127.0.0.1:50051`): the
    /// first call connects, and a lost connection is re-established by the next call.
    pub fn connect_lazy(url: &str) -> Result<Self, ClientError> {
        Self::connect_lazy_with(url, None, false)
    }

    /// [`connect_lazy`](Self::connect_lazy) over TLS when `tls` is given (then the URL is
    /// `https://`). A plaintext `http://` URL must name this machine unless
    /// `plaintext_remote` allows otherwise: an update must not cross a network in the clear
    /// by accident.
    pub fn connect_lazy_with(
        url: &str,
        tls: Option<&crate::ClientTls>,
        plaintext_remote: bool,
    ) -> Result<Self, ClientError> {
        let bad = |reason: String| ClientError::Connect {
            url: url.into(),
            reason,
        };
        // Checked at once: a URL tonic cannot connect to would otherwise fail only at the
        // first call, after the retries.
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(e.to_string()))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
            return Err(bad(
                "the server URL is http://HOST:PORT (or https://HOST:PORT)".into(),
            ));
        }
        let host = uri.host().unwrap_or_default();
        match (uri.scheme_str(), tls) {
            (Some("https"), None) => {
                return Err(bad(
                    "an https:// server needs the CA that signed its certificate (--ca)".into(),
                ));
            }
            (Some("http"), Some(_)) => {
                return Err(bad(
                    "TLS settings given for an http:// URL: use https://".into()
                ));
            }
            (Some("http"), None) if !plaintext_remote && !crate::tls::is_loopback_host(host) => {
                return Err(bad(format!(
                    "plaintext to {host}, which is not this machine: use https:// with --ca \
                     (or --insecure)"
                )));
            }
            _ => {}
        }
        let mut endpoint =
            Endpoint::from_shared(url.to_string()).map_err(|e| bad(e.to_string()))?;
        if let Some(tls) = tls {
            endpoint = endpoint
                .tls_config(tls.config())
                .map_err(|e| bad(fedtune_proto::tls::chain(&e)))?;
        }
        let endpoint = endpoint
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
        GrpcTransport {
            client: FederationClient::new(channel.clone())
                .max_decoding_message_size(MESSAGE_LIMIT)
                .max_encoding_message_size(MESSAGE_LIMIT),
            channel,
        }
    }

    /// Starts call `path` with `body`: the response, unless the server answered with an
    /// error status at once (or something other than gRPC did).
    async fn call(
        &self,
        path: &'static str,
        token: &str,
        body: tonic::body::Body,
    ) -> Result<http::Response<tonic::body::Body>, Status> {
        use http::header::{AUTHORIZATION, CONTENT_TYPE, TE};
        let mut request = http::Request::new(body);
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = http::Uri::from_static(path);
        let headers = request.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(bulk::GRPC_CONTENT_TYPE),
        );
        headers.insert(TE, HeaderValue::from_static("trailers"));
        let bearer = HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Status::invalid_argument("token is not ASCII"))?;
        headers.insert(AUTHORIZATION, bearer);
        let mut channel = self.channel.clone();
        futures::future::poll_fn(|cx| channel.poll_ready(cx))
            .await
            .map_err(|e| Status::unknown(format!("Service was not ready: {e}")))?;
        let response = channel
            .call(request)
            .await
            .map_err(|e| Status::from_error(e.into()))?;
        if let Some(status) = Status::from_header_map(response.headers())
            && status.code() != tonic::Code::Ok
        {
            return Err(status);
        }
        if response.status() != http::StatusCode::OK {
            return Err(bulk::http_status(response.status()));
        }
        Ok(response)
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

/// A download chunk from a decoder event: a piece of a chunk is a (smaller) chunk.
fn download_chunk(event: Event) -> Result<v1::DownloadChunk, Status> {
    match event {
        Event::Message(m) => v1::DownloadChunk::decode(m).map_err(bulk::decode_status),
        Event::Bulk { head, at, piece } => {
            let head = v1::DownloadChunk::decode(head).map_err(bulk::decode_status)?;
            let offset = head
                .offset
                .checked_add(at as u64)
                .ok_or_else(|| Status::internal("chunk offset overflows"))?;
            Ok(v1::DownloadChunk {
                offset,
                data: piece,
            })
        }
    }
}

/// The frames of an upload message: a chunk's bytes as they are, not copied.
fn upload_frames(message: v1::UploadMessage) -> Vec<Bytes> {
    match message.kind {
        Some(v1::upload_message::Kind::Chunk(data)) if !data.is_empty() => {
            bulk::bulk_frame(&[], 2, data).to_vec()
        }
        _ => vec![bulk::message_frame(&message)],
    }
}

impl Transport for GrpcTransport {
    async fn join(&self, req: v1::JoinRequest) -> Result<v1::JoinResponse, Status> {
        Ok(self.client.clone().join(req).await?.into_inner())
    }

    async fn challenge(&self, req: v1::ChallengeRequest) -> Result<v1::ChallengeResponse, Status> {
        Ok(self.client.clone().challenge(req).await?.into_inner())
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
        let frame = bulk::message_frame(&req);
        let body = bulk::request_body(futures::stream::once(async move { frame }));
        let response = self.call(DOWNLOAD, token, body).await?;
        let events = Events::response(response.into_body(), BulkDecoder::new(2, MESSAGE_LIMIT));
        Ok(events.map(|event| event.and_then(download_chunk)).boxed())
    }

    fn upload(
        &self,
        token: &str,
        messages: BoxStream<v1::UploadMessage>,
    ) -> impl Future<Output = Result<v1::UploadResponse, Status>> + Send {
        let this = self.clone();
        let token = token.to_string();
        let frames = messages.flat_map(|m| futures::stream::iter(upload_frames(m)));
        async move {
            let response = this
                .call(UPLOAD, &token, bulk::request_body(frames))
                .await?;
            let events = Events::response(response.into_body(), BulkDecoder::new(0, MESSAGE_LIMIT));
            bulk::read_message(events).await
        }
    }
    async fn report_metrics(&self, token: &str, req: v1::MetricsReport) -> Result<(), Status> {
        self.client
            .clone()
            .report_metrics(authed(token, req)?)
            .await?;
        Ok(())
    }

    async fn decline(&self, token: &str, req: v1::DeclineRequest) -> Result<(), Status> {
        self.client.clone().decline(authed(token, req)?).await?;
        Ok(())
    }

    async fn secagg(
        &self,
        token: &str,
        req: v1::SecAggRequest,
    ) -> Result<v1::SecAggResponse, Status> {
        Ok(self
            .client
            .clone()
            .sec_agg(authed(token, req)?)
            .await?
            .into_inner())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A URL without a scheme (or with another) is refused at once, naming the URL, instead of
    /// failing at the first call after every retry.
    #[test]
    fn server_urls_are_checked_at_once() {
        for url in [
            "127.0.0.1:50299",
            "ftp://127.0.0.1:1",
            "http://",
            "not a url",
        ] {
            match GrpcTransport::connect_lazy(url) {
                Err(ClientError::Connect { url: named, .. }) => assert_eq!(named, url),
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    /// Plaintext to this machine is accepted; to another only when allowed; https needs TLS
    /// settings (its success is tests/tls.rs's, with real certificates).
    #[tokio::test]
    async fn plaintext_urls_are_accepted_where_allowed() {
        for url in [
            "http://127.0.0.1:50051",
            "http://localhost:1",
            "http://[::1]:2",
        ] {
            assert!(GrpcTransport::connect_lazy(url).is_ok(), "{url}");
        }
        let remote = "http://fedtune.example:443";
        assert!(GrpcTransport::connect_lazy(remote).is_err());
        assert!(GrpcTransport::connect_lazy_with(remote, None, true).is_ok());
        assert!(GrpcTransport::connect_lazy("https://fedtune.example:443").is_err());
    }
}
