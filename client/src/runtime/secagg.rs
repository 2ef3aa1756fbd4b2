//! The device's side of secure aggregation: before training it advertises fresh keys and
//! shares its secrets with its neighbours; after training it uploads its update quantized and
//! masked, then reveals the shares the server's unmask request asks for (never both secrets of
//! one device). The update itself never leaves the device unmasked.
//!
//! A device refused at any step (it came too late, the round was abandoned) is out of this
//! round only: the loop logs it and checks in again.

use fedtune_proto::{Bundle, FiniteBundle, Tensor, v1};
use fedtune_secagg::SecAggError;
use fedtune_secagg::protocol::{Advert, Device, Params, Reveal, SealedShares, Secret};
use fedtune_secagg::quantize::Quantizer;
use rand::SeedableRng;
use rand_chacha::{ChaCha8Rng, ChaCha20Rng};
use tonic::Code;
use tracing::{info, warn};

use super::{Client, Failure, Retry};
use crate::{ClientError, Transport};

/// The name of a masked upload's one tensor (the server expects exactly this).
pub const MASKED: &str = "secagg.masked";

/// A device's protocol state from advertising to unmasking, for one task.
pub(super) struct SecureTask {
    device: Device,
    quantizer: Quantizer,
    max_weight: u32,
    inbox: Vec<SealedShares>,
    rng: ChaCha20Rng,
}

/// The setup's values, checked: a server cannot make the device share with too few, or
/// quantize into a sum that wraps.
pub fn checked_setup(setup: &v1::SecAggSetup) -> Result<(Params, Quantizer), ClientError> {
    let bad = |why: String| ClientError::Protocol(format!("secure aggregation setup: {why}"));
    let t = setup.threshold as usize;
    let k = setup.neighbours.len();
    if t < 2 || t > k || k > 255 || setup.neighbours.contains(&setup.index) {
        return Err(bad(format!("threshold {t} of {k} neighbours")));
    }
    if !(setup.clip.is_finite() && setup.clip > 0.0 && (1..=24).contains(&setup.bits)) {
        return Err(bad(format!("clip {} bits {}", setup.clip, setup.bits)));
    }
    if setup.max_weight == 0 || setup.context.len() > 1024 {
        return Err(bad("max_weight 0 or oversized context".into()));
    }
    let params = Params {
        threshold: t,
        context: setup.context.to_vec(),
    };
    let quantizer = Quantizer {
        clip: setup.clip,
        bits: setup.bits,
    };
    Ok((params, quantizer))
}

/// A neighbour's advertised keys, if both are 32 bytes.
pub fn advert_from_wire(a: &v1::SecAggAdvert) -> Option<Advert> {
    let keys = a.keys.as_ref()?;
    Some(Advert {
        id: a.index,
        c_public: keys.c_public.as_ref().try_into().ok()?,
        s_public: keys.s_public.as_ref().try_into().ok()?,
    })
}

/// Sealed shares as the `Share` step carries them.
pub fn shares_to_wire(sealed: Vec<SealedShares>) -> v1::SecAggShares {
    v1::SecAggShares {
        shares: sealed
            .into_iter()
            .map(|s| v1::SecAggSealed {
                from: s.from,
                to: s.to,
                ciphertext: s.bytes.into(),
            })
            .collect(),
    }
}

/// The shares the server routed to this device.
pub fn inbox_from_wire(inbox: &v1::SecAggShares) -> Vec<SealedShares> {
    inbox
        .shares
        .iter()
        .map(|s| SealedShares {
            from: s.from,
            to: s.to,
            bytes: s.ciphertext.to_vec(),
        })
        .collect()
}

/// Revealed shares as the `Reveal` step carries them.
pub fn reveals_to_wire(reveals: Vec<Reveal>) -> v1::SecAggReveals {
    v1::SecAggReveals {
        reveals: reveals
            .into_iter()
            .map(|r| v1::SecAggReveal {
                about: r.about,
                mask_key: r.secret == Secret::MaskKey,
                x: u32::from(r.share.x),
                y: r.share.y.into(),
            })
            .collect(),
    }
}

impl<T: Transport> Client<T> {
    /// Advertises keys and shares secrets; `None` when the device is out of the round.
    pub(super) async fn secagg_prepare(
        &mut self,
        task: &v1::Task,
        setup: &v1::SecAggSetup,
    ) -> Result<Option<SecureTask>, ClientError> {
        use v1::sec_agg_request::Step;
        use v1::sec_agg_response::Outcome;
        let (params, quantizer) = checked_setup(setup)?;
        let context = params.context.clone();
        let mut rng = ChaCha20Rng::from_rng(&mut rand::rng());
        let device = Device::new(setup.index, setup.neighbours.clone(), params, &mut rng);
        let mine = device.advert();
        let (identity_key, signature) = match &self.opts.identity {
            Some(key) => (
                key.verifying_key().to_bytes().to_vec().into(),
                fedtune_proto::identity::sign_secagg_keys(
                    key,
                    &context,
                    mine.id,
                    &mine.c_public,
                    &mine.s_public,
                )
                .to_vec()
                .into(),
            ),
            None => Default::default(),
        };
        let keys = v1::SecAggKeys {
            c_public: mine.c_public.to_vec().into(),
            s_public: mine.s_public.to_vec().into(),
            identity_key,
            signature,
        };
        let Some(Outcome::Adverts(adverts)) = self.secagg_step(task, Step::Advertise(keys)).await?
        else {
            return Ok(None);
        };
        let mut task_state = SecureTask {
            device,
            quantizer,
            max_weight: setup.max_weight,
            inbox: Vec::new(),
            rng,
        };
        let mut neighbours = Vec::with_capacity(adverts.adverts.len());
        for a in &adverts.adverts {
            if let Some(keys) = &a.keys
                && !keys.signature.is_empty()
                && let Err(e) = fedtune_proto::identity::verify_secagg_keys(
                    &keys.identity_key,
                    &keys.signature,
                    &context,
                    a.index,
                    &keys.c_public,
                    &keys.s_public,
                )
            {
                warn!(client = %self.opts.client_id, neighbour = a.index, error = %e, "a neighbour's keys are not signed by it: leaving the round");
                return Ok(None);
            }
            neighbours.push(advert_from_wire(a).ok_or_else(|| {
                ClientError::Protocol("a neighbour's keys are not 32 bytes each".into())
            })?);
        }
        let sealed = match task_state.device.share(&neighbours, &mut task_state.rng) {
            Ok(s) => s,
            Err(e) => return self.out_of_round(task, &e),
        };
        let shares = shares_to_wire(sealed);
        let Some(Outcome::Inbox(inbox)) = self.secagg_step(task, Step::Share(shares)).await? else {
            return Ok(None);
        };
        task_state.inbox = inbox_from_wire(&inbox);
        Ok(Some(task_state))
    }

    /// The update, quantized with its weight (capped so the cohort's sum cannot wrap) and
    /// masked: the bundle to upload.
    pub(super) fn secagg_mask(
        &self,
        secure: &mut SecureTask,
        update: &FiniteBundle,
        num_examples: u64,
        dp: Option<(&super::dp::DpTask, bool)>,
    ) -> Result<Bundle, ClientError> {
        let bundle = update.bundle();
        let mut values = Vec::with_capacity(bundle.numel());
        for t in bundle.tensors() {
            values.extend_from_slice(&t.to_f32());
        }
        let weight = num_examples.min(u64::from(secure.max_weight)).max(1) as u32;
        // Stochastic rounding draws one word per value: a fast seeded stream will do.
        let mut rounding = ChaCha8Rng::from_rng(&mut secure.rng);
        let mut encoded = secure.quantizer.encode(&values, weight, &mut rounding);
        drop(values);
        if let Some((d, within)) = dp {
            // Noise from the task's OS-seeded ChaCha20, never the fast rounding stream.
            super::dp::private_words(&mut encoded, d, within, &mut secure.rng);
        }
        let masked = secure
            .device
            .mask(&secure.inbox, &encoded)
            .map_err(|e| ClientError::Protocol(format!("secure aggregation: {e}")))?;
        let len = masked.len();
        Ok(Bundle::new(vec![Tensor::from_u32_vec(
            MASKED,
            vec![len],
            masked,
        )?])?)
    }

    /// After the masked upload: waits for the unmask request and reveals what it asks.
    pub(super) async fn secagg_unmask(
        &mut self,
        task: &v1::Task,
        secure: SecureTask,
    ) -> Result<(), ClientError> {
        use v1::sec_agg_request::Step;
        use v1::sec_agg_response::Outcome;
        let Some(Outcome::Unmask(request)) = self
            .secagg_step(task, Step::Unmask(v1::SecAggPoll {}))
            .await?
        else {
            return Ok(());
        };
        let reveals = match secure.device.unmask(&request.survivors, &request.dropped) {
            Ok(r) => r,
            // An honest device never reveals both secrets of one device.
            Err(e) => return self.out_of_round(task, &e).map(|_| ()),
        };
        self.secagg_step(task, Step::Reveal(reveals_to_wire(reveals)))
            .await?;
        Ok(())
    }

    fn out_of_round(
        &self,
        task: &v1::Task,
        e: &SecAggError,
    ) -> Result<Option<SecureTask>, ClientError> {
        warn!(client = %self.opts.client_id, round = task.round, error = %e, "secure aggregation: leaving the round");
        Ok(None)
    }

    /// Sends one step until it is answered; `None` when the server says this device is out of
    /// the round (its refusals end the task, not the run).
    async fn secagg_step(
        &mut self,
        task: &v1::Task,
        step: v1::sec_agg_request::Step,
    ) -> Result<Option<v1::sec_agg_response::Outcome>, ClientError> {
        use v1::sec_agg_response::Outcome;
        let req = v1::SecAggRequest {
            task_id: task.task_id.clone(),
            round: task.round,
            step: Some(step),
        };
        let mut attempt = Retry::default();
        loop {
            let result = match self.token().await {
                Ok(token) => self.transport.secagg(&token, req.clone()).await,
                Err(f) => return self.secagg_failure(task, f),
            };
            match result {
                Ok(v1::SecAggResponse {
                    outcome: Some(Outcome::RetryAfterMs(ms)),
                }) => {
                    let wait = std::time::Duration::from_millis(ms).min(self.opts.max_retry_wait);
                    tokio::time::sleep(wait).await;
                }
                Ok(v1::SecAggResponse {
                    outcome: Some(outcome),
                }) => return Ok(Some(outcome)),
                Ok(_) => {
                    return Err(ClientError::Protocol(
                        "secure aggregation answer without an outcome".into(),
                    ));
                }
                Err(s) => {
                    if let Err(f) = self.recover(&mut attempt, s).await {
                        return self.secagg_failure(task, f);
                    }
                }
            }
        }
    }

    fn secagg_failure<O>(&mut self, task: &v1::Task, f: Failure) -> Result<Option<O>, ClientError> {
        match f {
            Failure::Refused(s) => {
                if s.code() == Code::FailedPrecondition {
                    info!(client = %self.opts.client_id, round = task.round, reason = %s.message(), "out of the secure round");
                } else {
                    warn!(client = %self.opts.client_id, round = task.round, code = ?s.code(), reason = %s.message(), "secure aggregation step refused");
                }
                self.summary
                    .refused
                    .push((task.round, s.message().to_string()));
                Ok(None)
            }
            Failure::Exhausted(attempts, last) => Err(ClientError::RetriesExhausted {
                what: "secure aggregation",
                attempts,
                last,
            }),
        }
    }
}
