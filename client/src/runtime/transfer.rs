//! Moving bundles: resumable download of the global model, chunked upload of the update.

use fedtune_proto::{Bundle, BundleHeader, BundleReceiver, EncodedBundle, FiniteBundle, v1};
use futures::StreamExt;
use tracing::debug;

use super::dp::UpdateMeta;
use super::{Client, Failure, Retry};
use crate::{ClientError, Transport};

impl<T: Transport> Client<T> {
    /// Downloads the task's model, resuming after a broken stream from the last byte
    /// received. `None` when the model is no longer served (the round moved on).
    pub(super) async fn download(
        &mut self,
        task: &v1::Task,
        header: BundleHeader,
    ) -> Result<Option<Bundle>, ClientError> {
        let total = header.encoded_bytes;
        let mut rx = BundleReceiver::new(header.clone());
        let mut attempt = Retry::default();
        loop {
            let token = match self.token().await {
                Ok(t) => t,
                Err(f) => return self.give_up_download(task.round, f),
            };
            let req = v1::DownloadRequest {
                model_version: task.model_version,
                offset: rx.received(),
            };
            let mut failure = None;
            match self.transport.download(&token, req).await {
                Err(s) => failure = Some(s),
                Ok(mut stream) => {
                    while let Some(item) = stream.next().await {
                        let chunk = match item {
                            Ok(c) => c,
                            Err(s) => {
                                failure = Some(s);
                                break;
                            }
                        };
                        if chunk.offset != rx.received() {
                            return Err(ClientError::Protocol(format!(
                                "chunk at offset {} while {} bytes are received",
                                chunk.offset,
                                rx.received()
                            )));
                        }
                        rx.push(&chunk.data)?;
                        self.summary.bytes_down += chunk.data.len() as u64;
                    }
                }
            }
            if failure.is_none() && rx.received() == total {
                match rx.finish(None) {
                    Ok(encoded) => return Ok(Some(encoded.decode()?)),
                    Err(e) => {
                        // Corrupted in transit: start over.
                        failure = Some(tonic::Status::data_loss(e.to_string()));
                        rx = BundleReceiver::new(header.clone());
                    }
                }
            }
            let status = failure
                .unwrap_or_else(|| tonic::Status::unavailable("download stream ended early"));
            debug!(client = %self.opts.client_id, offset = rx.received(), status = %status.message(), "download interrupted; resuming");
            if let Err(f) = self.recover(&mut attempt, status).await {
                return self.give_up_download(task.round, f);
            }
        }
    }

    fn give_up_download(&mut self, round: u64, f: Failure) -> Result<Option<Bundle>, ClientError> {
        match f {
            // The round moved on (new model version): nothing to do for this task.
            Failure::Refused(s) if s.code() == tonic::Code::FailedPrecondition => Ok(None),
            Failure::Refused(status) => Err(ClientError::Refused {
                what: "download",
                status,
            }),
            Failure::Exhausted(attempts, last) => {
                debug!(round, attempts, "download abandoned");
                Err(ClientError::RetriesExhausted {
                    what: "download",
                    attempts,
                    last,
                })
            }
        }
    }

    /// Uploads an update, retrying transient failures from the start (a broken upload is
    /// never counted by the server, so a retry cannot double count).
    pub(super) async fn upload(
        &mut self,
        task: &v1::Task,
        update: Bundle,
        meta: UpdateMeta,
    ) -> Result<(), ClientError> {
        let encoded = EncodedBundle::encode(&update, self.opts.compression)?;
        let header = v1::UploadHeader {
            task_id: task.task_id.clone(),
            round: task.round,
            model_version: task.model_version,
            num_examples: meta.num_examples,
            update: Some(encoded.header.to_wire()),
            within_clip: meta.within_clip,
        };
        let mut attempt = Retry::default();
        loop {
            let token = self.upload_token().await?;
            let messages = self.upload_messages(&header, &encoded);
            let result = self.transport.upload(&token, messages).await;
            let bytes = encoded.payload.len() as u64;
            if let Some(done) = self
                .settle_upload(task.round, &mut attempt, result, bytes)
                .await
            {
                return done;
            }
        }
    }

    /// Fetches the task's model whole from a transport that shares memory with the server.
    /// `None` when the model is no longer served (the round moved on).
    pub(super) async fn fetch_shared(
        &mut self,
        task: &v1::Task,
        header: &BundleHeader,
    ) -> Result<Option<Bundle>, ClientError> {
        let mut attempt = Retry::default();
        loop {
            let result = match self.token().await {
                Ok(token) => {
                    self.transport
                        .fetch_shared(&token, task.model_version)
                        .await
                }
                Err(f) => return self.give_up_download(task.round, f),
            };
            match result {
                Ok(bundle) => {
                    self.summary.bytes_down += header.encoded_bytes;
                    return Ok(Some(bundle));
                }
                Err(status) => {
                    if let Err(f) = self.recover(&mut attempt, status).await {
                        return self.give_up_download(task.round, f);
                    }
                }
            }
        }
    }

    /// Hands an update whole to a transport that shares memory with the server, retrying
    /// transient failures as [`Client::upload`] does.
    pub(super) async fn submit_shared(
        &mut self,
        task: &v1::Task,
        update: FiniteBundle,
        meta: UpdateMeta,
    ) -> Result<(), ClientError> {
        let header = v1::UploadHeader {
            task_id: task.task_id.clone(),
            round: task.round,
            model_version: task.model_version,
            num_examples: meta.num_examples,
            update: None,
            within_clip: meta.within_clip,
        };
        let bytes = update.bundle().byte_len() as u64;
        let mut attempt = Retry::default();
        loop {
            let token = self.upload_token().await?;
            let result = self
                .transport
                .submit_shared(&token, header.clone(), update.clone())
                .await;
            if let Some(done) = self
                .settle_upload(task.round, &mut attempt, result, bytes)
                .await
            {
                return done;
            }
        }
    }

    /// A session token for an upload, or why there is none.
    async fn upload_token(&mut self) -> Result<String, ClientError> {
        self.token().await.map_err(|f| match f {
            Failure::Refused(status) => ClientError::Refused {
                what: "upload",
                status,
            },
            Failure::Exhausted(attempts, last) => ClientError::RetriesExhausted {
                what: "upload",
                attempts,
                last,
            },
        })
    }

    /// What an upload attempt's answer means: `Some` when the upload is over (accepted,
    /// refused for good, or out of retries), `None` to try again.
    async fn settle_upload(
        &mut self,
        round: u64,
        attempt: &mut Retry,
        result: Result<v1::UploadResponse, tonic::Status>,
        bytes: u64,
    ) -> Option<Result<(), ClientError>> {
        match result {
            Ok(resp) => {
                self.summary.accepted += 1;
                self.summary.bytes_up += bytes;
                debug!(client = %self.opts.client_id, round = resp.round, received = resp.received, "update accepted");
                Some(Ok(()))
            }
            Err(s) => match self.recover(attempt, s).await {
                Ok(()) => None,
                Err(Failure::Refused(status)) => {
                    self.refused(round, &status);
                    Some(Ok(()))
                }
                Err(Failure::Exhausted(attempts, last)) => {
                    Some(Err(ClientError::RetriesExhausted {
                        what: "upload",
                        attempts,
                        last,
                    }))
                }
            },
        }
    }

    /// The upload stream: header, chunks, digest.
    fn upload_messages(
        &self,
        header: &v1::UploadHeader,
        encoded: &EncodedBundle,
    ) -> crate::BoxStream<v1::UploadMessage> {
        use v1::upload_message::Kind;
        let msg = |kind| v1::UploadMessage { kind: Some(kind) };
        let chunks: Vec<_> = encoded
            .chunks(0, self.opts.chunk_bytes)
            .map(|(_, data)| msg(Kind::Chunk(data)))
            .collect();
        let first = std::iter::once(msg(Kind::Header(header.clone())));
        let digest = msg(Kind::Digest(bytes::Bytes::copy_from_slice(
            &encoded.header.digest.0,
        )));
        let all: Vec<_> = first.chain(chunks).chain(std::iter::once(digest)).collect();
        futures::stream::iter(all).boxed()
    }
}
