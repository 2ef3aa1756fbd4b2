//! The in-process transport: the client runtime calls the server's [`Coordinator`] directly,
//! with the same messages and statuses as over gRPC, minus sockets and HTTP/2; models and
//! updates change hands whole (shared memory), as bundles, not as chunked bytes.

use std::future::Future;
use std::sync::Arc;

use fedtune_client::{BoxStream, Transport};
use fedtune_proto::{Bundle, FiniteBundle, v1};
use fedtune_server::Coordinator;
use futures::StreamExt;
use tonic::Status;

/// A client's in-process connection to a coordinator.
#[derive(Clone, Debug)]
pub struct InprocTransport {
    coord: Arc<Coordinator>,
}

impl InprocTransport {
    pub fn new(coord: Arc<Coordinator>) -> Self {
        InprocTransport { coord }
    }
}

impl Transport for InprocTransport {
    async fn join(&self, req: v1::JoinRequest) -> Result<v1::JoinResponse, Status> {
        Ok(self.coord.join(req)?)
    }

    async fn challenge(&self, req: v1::ChallengeRequest) -> Result<v1::ChallengeResponse, Status> {
        Ok(self.coord.challenge(&req))
    }

    async fn check_in(&self, token: &str) -> Result<v1::CheckInResponse, Status> {
        Ok(self.coord.check_in(token, None).await?)
    }

    async fn download(
        &self,
        token: &str,
        req: v1::DownloadRequest,
    ) -> Result<BoxStream<Result<v1::DownloadChunk, Status>>, Status> {
        let chunks = self.coord.download(token, &req)?;
        Ok(futures::stream::iter(chunks.into_iter().map(Ok)).boxed())
    }

    fn upload(
        &self,
        token: &str,
        messages: BoxStream<v1::UploadMessage>,
    ) -> impl Future<Output = Result<v1::UploadResponse, Status>> + Send {
        let coord = Arc::clone(&self.coord);
        let token = token.to_string();
        async move { Ok(coord.upload(&token, messages.map(Ok)).await?) }
    }

    async fn report_metrics(&self, token: &str, req: v1::MetricsReport) -> Result<(), Status> {
        Ok(self.coord.report_metrics(token, &req)?)
    }

    async fn decline(&self, token: &str, req: v1::DeclineRequest) -> Result<(), Status> {
        Ok(self.coord.decline(token, &req)?)
    }

    async fn status(&self) -> Result<v1::StatusResponse, Status> {
        Ok(self.coord.status())
    }

    async fn secagg(
        &self,
        token: &str,
        req: v1::SecAggRequest,
    ) -> Result<v1::SecAggResponse, Status> {
        Ok(self.coord.secagg(token, req, None).await?)
    }

    fn shares_memory(&self) -> bool {
        true
    }

    async fn fetch_shared(&self, token: &str, model_version: u64) -> Result<Bundle, Status> {
        Ok(self.coord.download_shared(token, model_version)?)
    }

    async fn submit_shared(
        &self,
        token: &str,
        header: v1::UploadHeader,
        update: FiniteBundle,
    ) -> Result<v1::UploadResponse, Status> {
        Ok(self.coord.upload_shared(token, &header, &update).await?)
    }
}
