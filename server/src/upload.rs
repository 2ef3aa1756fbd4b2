//! Receiving one client update: admission, chunked transfer, validation, folding.
//!
//! Nothing touches the aggregate until the whole update has arrived, matched its digest,
//! decoded to the global model's exact manifest and proved finite; a stream that breaks or
//! ends early simply vanishes. Only a bounded number of uploads are staged at once
//! ([`crate::upload_gate`]), so server memory stays O(model) however many clients upload
//! together.

use std::sync::Arc;

use fedtune_proto::{BundleHeader, BundleReceiver, Digest, FiniteBundle, TensorSpec, v1};
use futures::{Stream, StreamExt};
use tracing::debug;

use crate::ServerError;
use crate::coordinator::Coordinator;
use crate::round::Phase;
use crate::store::Contribution;
use crate::strategy::hetlora;
use crate::validate::check_manifest;

/// Marks a client as uploading in its round attempt; unmarks it however the upload ends.
struct Admission<'a> {
    coord: &'a Coordinator,
    client: String,
    round: u64,
    /// The attempt that admitted it: a round that missed its minimum restarts under the same
    /// number, and an upload admitted before that must not count in (or release) the new one.
    attempt: u32,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        let mut st = self
            .coord
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &mut st.phase {
            Phase::Training(r) if r.round == self.round && r.attempt == self.attempt => {
                r.release(&self.client);
            }
            Phase::Buffering(b) => b.release(&self.client),
            _ => {}
        }
    }
}

impl Coordinator {
    /// Receives one update stream: a header, chunks of at most 1 MiB, then the digest.
    pub async fn upload<S>(
        self: &Arc<Self>,
        token: &str,
        mut stream: S,
    ) -> Result<v1::UploadResponse, ServerError>
    where
        S: Stream<Item = Result<v1::UploadMessage, tonic::Status>> + Unpin,
    {
        use v1::upload_message::Kind;
        let client = self.authenticate(token)?;
        let header = match stream.next().await {
            Some(Ok(v1::UploadMessage {
                kind: Some(Kind::Header(h)),
            })) => h,
            Some(Ok(_)) => {
                return Err(ServerError::InvalidRequest(
                    "the first upload message must be the header".into(),
                ));
            }
            Some(Err(status)) => return Err(ServerError::Incomplete(status.message().to_string())),
            None => return Err(ServerError::Incomplete("empty upload stream".into())),
        };
        let info = header.update.as_ref().ok_or_else(|| {
            ServerError::InvalidRequest("upload header lacks the update description".into())
        })?;
        let bundle_header = BundleHeader::from_wire(info, self.config.max_update_bytes)?;
        if header.num_examples == 0 {
            return Err(ServerError::InvalidRequest(
                "num_examples must be at least 1".into(),
            ));
        }
        let admission = self.admit(&client, &header, &bundle_header.manifest)?;
        let _slot = self.uploads.slot().await?;

        let mut rx = BundleReceiver::with_buffer(bundle_header, self.uploads.take_buffer())
            .check_finite_as_received();
        let trailer = loop {
            match stream.next().await {
                Some(Ok(v1::UploadMessage {
                    kind: Some(Kind::Chunk(c)),
                })) => rx.push(&c)?,
                Some(Ok(v1::UploadMessage {
                    kind: Some(Kind::Digest(d)),
                })) => break Digest::try_from(d.as_ref())?,
                Some(Ok(_)) => {
                    return Err(ServerError::InvalidRequest(
                        "unexpected message after the header".into(),
                    ));
                }
                Some(Err(status)) => {
                    return Err(ServerError::Incomplete(status.message().to_string()));
                }
                None => {
                    return Err(ServerError::Incomplete(format!(
                        "{} of {} bytes received",
                        rx.received(),
                        rx.header().encoded_bytes
                    )));
                }
            }
        };
        let (encoded, update) = rx.finish_decoded(Some(trailer))?;
        let accepted = self.accept(admission, &header, &update);
        drop(update);
        self.uploads.give_buffer(encoded.payload);
        accepted
    }

    /// Receives one update handed over whole (the in-process transport): the same admission,
    /// staging slot, validation and folding as [`Coordinator::upload`], without the transfer.
    /// Its manifest is checked here; its values are finite by its type, proved where it was
    /// formed, so they are not scanned twice. `header.update` is not read: the bundle
    /// describes itself.
    pub async fn upload_shared(
        self: &Arc<Self>,
        token: &str,
        header: &v1::UploadHeader,
        update: &FiniteBundle,
    ) -> Result<v1::UploadResponse, ServerError> {
        let update = update.bundle();
        let client = self.authenticate(token)?;
        if update
            .tensors()
            .iter()
            .any(|t| t.dtype() == fedtune_proto::DType::U32)
        {
            return Err(ServerError::InvalidRequest(
                "masked updates travel in the upload stream".into(),
            ));
        }
        if header.num_examples == 0 {
            return Err(ServerError::InvalidRequest(
                "num_examples must be at least 1".into(),
            ));
        }
        let admission = self.admit(&client, header, &update.manifest())?;
        let _slot = self.uploads.slot().await?;
        self.accept(admission, header, update)
    }

    fn admit(
        &self,
        client: &str,
        h: &v1::UploadHeader,
        manifest: &[TensorSpec],
    ) -> Result<Admission<'_>, ServerError> {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let global = st.global.at_rank(st.registry.lora_rank(client))?;
        let global_manifest = &global.encoded.header.manifest;
        let attempt = match &mut st.phase {
            Phase::Training(r) => {
                match &r.secagg {
                    Some(sa) => {
                        check_manifest(&sa.manifest(), manifest)?;
                        sa.admit_upload(client)?;
                    }
                    None => check_manifest(global_manifest, manifest)?,
                }
                r.admit(client, &h.task_id, h.round, h.model_version)?;
                r.attempt
            }
            Phase::Buffering(b) => {
                check_manifest(global_manifest, manifest)?;
                let max_staleness = self.config.buffered.as_ref().map_or(0, |s| s.max_staleness);
                b.admit(client, &h.task_id, h.model_version, max_staleness)?;
                0
            }
            Phase::Aggregating { round } if *round == h.round => {
                return Err(ServerError::Late { round: h.round });
            }
            Phase::Finished => {
                return Err(ServerError::Stale("the federation has finished".into()));
            }
            _ => return Err(ServerError::Stale(format!("round {} is not open", h.round))),
        };
        Ok(Admission {
            coord: self,
            client: client.to_string(),
            round: h.round,
            attempt,
        })
    }

    fn accept(
        self: &Arc<Self>,
        admission: Admission<'_>,
        h: &v1::UploadHeader,
        update: &fedtune_proto::Bundle,
    ) -> Result<v1::UploadResponse, ServerError> {
        let weight = self.strategy_weight(h.num_examples);
        let fill = crate::coordinator::lock(&self.strategy).rank_fill();
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if matches!(st.phase, Phase::Buffering(_)) {
            return self.accept_buffered(&mut st, &admission.client, h, update, weight, fill);
        }
        // A device of a lower LoRA rank: its update widened to the global adapter's.
        let masked = matches!(&st.phase, Phase::Training(r) if r.secagg.is_some());
        let update = if masked {
            std::borrow::Cow::Borrowed(update)
        } else {
            hetlora::at_global_shapes(update, &st.global.bundle, fill)?
        };
        let Phase::Training(r) = &mut st.phase else {
            return Err(ServerError::Late { round: h.round });
        };
        if r.round != h.round {
            return Err(ServerError::Late { round: h.round });
        }
        if r.attempt != admission.attempt {
            return Err(ServerError::Stale(format!(
                "round {} was restarted (attempt {} is open) while this update of attempt {} \
                 was arriving; check in for a new task",
                h.round, r.attempt, admission.attempt
            )));
        }
        let mut weight = weight;
        match (&mut r.secagg, &mut r.dp) {
            (Some(sa), _) => {
                let words = update.tensors()[0].to_u32().unwrap_or_default();
                sa.add_masked(&admission.client, &words)?;
                // The weight the device encoded (its example count, capped for the sum; 1
                // under differential privacy).
                weight = match r.dp {
                    Some(_) => 1.0,
                    None => weight.min(f64::from(sa.sizing().max_weight)),
                };
            }
            (None, Some(dp)) => {
                // Every update counts once, clipped (again: an honest device already did).
                let (clipped, c) = crate::dp::clip_update(&update, dp.clip)?;
                r.aggregator.fold(&clipped, 1.0)?;
                dp.within += f64::from(u8::from(h.within_clip && c.norm <= dp.clip * (1.0 + 1e-5)));
                weight = 1.0;
            }
            (None, None) => r.aggregator.fold(&update, weight)?,
        }
        r.contributions.push(Contribution {
            client_id: admission.client.clone(),
            task_id: h.task_id.clone(),
            num_examples: h.num_examples,
            weight,
        });
        let received = r.contributions.len() as u64;
        debug!(client = %admission.client, round = h.round, received, "update accepted");
        if r.secagg.as_ref().is_some_and(|sa| sa.stage_complete()) {
            self.close_secagg_stage(&mut st);
        } else {
            self.maybe_commit(&mut st);
        }
        drop(st);
        drop(admission);
        Ok(v1::UploadResponse {
            accepted: true,
            round: h.round,
            received,
        })
    }
}
