//! The device loop: join → check in → download → train → upload, until the federation ends.
//!
//! Transient failures (server restarting, connection lost, busy) are retried with exponential
//! backoff; an expired or unknown session re-joins; downloads resume from the last byte
//! received. A refused update (stale, late, duplicate) is logged and the loop carries on.

mod backoff;
mod dp;
mod secagg;
mod transfer;
mod update;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fedtune_proto::{Bundle, BundleHeader, Compression, FiniteBundle, TrainingPlan, v1};
use rand_chacha::ChaCha8Rng;
use tokio::sync::Semaphore;
use tonic::{Code, Status};
use tracing::{debug, info, warn};

pub use backoff::{Backoff, client_rng};
pub use dp::{DpTask, checked_setup as checked_dp_setup, clip_update, private_words};
pub use secagg::{
    advert_from_wire, checked_setup, inbox_from_wire, reveals_to_wire, shares_to_wire,
};
pub use update::{delta, local_update};

use crate::{ClientError, TaskContext, Trainer, Transport};

/// How a client behaves.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub client_id: String,
    pub capabilities: v1::Capabilities,
    /// Compression of uploaded updates.
    pub compression: Compression,
    /// Upload chunk size (at most 1 MiB).
    pub chunk_bytes: usize,
    pub backoff: Backoff,
    /// Seeds retry jitter.
    pub seed: u64,
    /// Shared pool bounding concurrent training across the process's clients.
    pub cpu: Arc<Semaphore>,
    /// Shared slots bounding how many of the process's clients hold a model at once.
    pub active: Option<Arc<Semaphore>>,
    /// Upper bound on how long to honour a server's "come back later".
    pub max_retry_wait: Duration,
    /// Largest model accepted from the server, in bytes.
    pub max_model_bytes: u64,
    /// This device's Ed25519 key: every join is signed over a fresh server nonce (servers
    /// with an authorized-keys list admit only such joins).
    pub identity: Option<Arc<ed25519_dalek::SigningKey>>,
}

impl ClientOptions {
    pub fn new(client_id: impl Into<String>) -> Self {
        ClientOptions {
            client_id: client_id.into(),
            capabilities: v1::Capabilities {
                memory_mb: 2048,
                compute_tier: 1,
                threads: 1,
                lora_rank: 0,
            },
            compression: Compression::None,
            chunk_bytes: fedtune_proto::MAX_CHUNK_BYTES,
            backoff: Backoff::default(),
            seed: 0,
            cpu: Arc::new(Semaphore::new(1)),
            active: None,
            max_retry_wait: Duration::from_secs(60),
            max_model_bytes: 8 << 30,
            identity: None,
        }
    }
}

/// What a client did over its run.
#[derive(Clone, Debug, Default)]
pub struct ClientSummary {
    pub client_id: String,
    pub rounds_trained: u64,
    pub accepted: u64,
    /// (round, reason) of each update the server refused.
    pub refused: Vec<(u64, String)>,
    pub final_version: u64,
    pub bytes_down: u64,
    pub bytes_up: u64,
}

/// Where an operation stands in its retries: how many so far, and since when it fails.
#[derive(Debug, Default)]
pub(super) struct Retry {
    attempt: u32,
    since: Option<Instant>,
}

/// How a retried call failed for good.
enum Failure {
    /// The server said no: give up this task, keep running.
    Refused(Status),
    /// Too many transient errors.
    Exhausted(u32, Status),
}

/// One device's connection to a federation.
pub struct Client<T: Transport> {
    transport: T,
    opts: ClientOptions,
    token: Option<String>,
    rng: ChaCha8Rng,
    summary: ClientSummary,
}

/// Errors that mean this device cannot do a task (rather than a network or server failure).
fn cannot_do(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Train(_)
            | ClientError::NonFiniteUpdate(_)
            | ClientError::Plan(_)
            | ClientError::Codec(_)
            | ClientError::Runtime(_)
    )
}

fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::Aborted
            | Code::ResourceExhausted
            | Code::DeadlineExceeded
            | Code::DataLoss
    )
}

impl<T: Transport> Client<T> {
    pub fn new(transport: T, opts: ClientOptions) -> Self {
        let rng = backoff::client_rng(&opts.client_id, opts.seed);
        let summary = ClientSummary {
            client_id: opts.client_id.clone(),
            ..Default::default()
        };
        Client {
            transport,
            opts,
            token: None,
            rng,
            summary,
        }
    }

    /// Runs until the server says the federation is finished.
    pub async fn run<Tr: Trainer>(mut self, trainer: Tr) -> Result<ClientSummary, ClientError> {
        use v1::check_in_response::Outcome;
        if self.opts.capabilities.lora_rank == 0 {
            self.opts.capabilities.lora_rank = trainer.lora_rank();
        }
        let trainer = Arc::new(Mutex::new(trainer));
        loop {
            let resp = match self.check_in().await {
                Ok(r) => r,
                Err(Failure::Refused(status)) => {
                    return Err(ClientError::Refused {
                        what: "check-in",
                        status,
                    });
                }
                Err(Failure::Exhausted(attempts, last)) => {
                    return Err(ClientError::RetriesExhausted {
                        what: "check-in",
                        attempts,
                        last,
                    });
                }
            };
            match resp.outcome {
                Some(Outcome::Finished(f)) => {
                    self.summary.final_version = f.final_model_version;
                    debug!(client = %self.opts.client_id, version = f.final_model_version, "federation finished");
                    return Ok(self.summary);
                }
                Some(Outcome::RetryAfterMs(ms)) => {
                    tokio::time::sleep(Duration::from_millis(ms).min(self.opts.max_retry_wait))
                        .await;
                }
                Some(Outcome::Task(task)) => self.do_task(task, &trainer).await?,
                None => {
                    return Err(ClientError::Protocol(
                        "check-in answer without an outcome".into(),
                    ));
                }
            }
        }
    }

    async fn join(&mut self) -> Result<String, Failure> {
        const SIGNED_JOIN_TRIES: u32 = 3;
        let (mut attempt, mut signed_tries) = (Retry::default(), 0);
        loop {
            let req = match self.join_request().await {
                Ok(req) => req,
                Err(s) if transient(s.code()) => {
                    self.pause(&mut attempt, s).await?;
                    continue;
                }
                Err(s) => return Err(Failure::Refused(s)),
            };
            match self.transport.join(req).await {
                Ok(r) => {
                    self.token = Some(r.session_token.clone());
                    return Ok(r.session_token);
                }
                Err(s) if transient(s.code()) => self.pause(&mut attempt, s).await?,
                // A signed join may lose its nonce to a server restart between the challenge
                // and the join: a few fresh tries before taking the refusal as final.
                Err(s)
                    if s.code() == Code::Unauthenticated
                        && self.opts.identity.is_some()
                        && signed_tries < SIGNED_JOIN_TRIES =>
                {
                    signed_tries += 1;
                    self.pause(&mut attempt, s).await?;
                }
                Err(s) => return Err(Failure::Refused(s)),
            }
        }
    }

    /// A join request, signed over a fresh challenge when this device has a key.
    async fn join_request(&self) -> Result<v1::JoinRequest, Status> {
        let client_id = self.opts.client_id.clone();
        let proof = match &self.opts.identity {
            None => None,
            Some(key) => {
                let challenge = self
                    .transport
                    .challenge(v1::ChallengeRequest {
                        client_id: client_id.clone(),
                    })
                    .await?;
                let nonce: [u8; fedtune_proto::identity::NONCE_BYTES] =
                    challenge.nonce.as_ref().try_into().map_err(|_| {
                        Status::internal("the server's challenge nonce is not 32 bytes")
                    })?;
                Some(v1::DeviceProof {
                    public_key: key.verifying_key().to_bytes().to_vec().into(),
                    nonce: challenge.nonce,
                    signature: fedtune_proto::identity::sign_join(key, &nonce, &client_id)
                        .to_vec()
                        .into(),
                })
            }
        };
        Ok(v1::JoinRequest {
            client_id,
            capabilities: Some(self.opts.capabilities),
            proof,
        })
    }

    async fn token(&mut self) -> Result<String, Failure> {
        match &self.token {
            Some(t) => Ok(t.clone()),
            None => self.join().await,
        }
    }

    /// Sleeps before the next retry, or gives up once the operation has failed for longer than
    /// the policy's `give_up_after`. Waits of a second or more (the server is away, not busy)
    /// are logged at info level.
    async fn pause(&mut self, retry: &mut Retry, last: Status) -> Result<(), Failure> {
        let since = *retry.since.get_or_insert_with(Instant::now);
        if self
            .opts
            .backoff
            .give_up_after
            .is_some_and(|limit| since.elapsed() >= limit)
        {
            return Err(Failure::Exhausted(retry.attempt + 1, last));
        }
        let wait = self.opts.backoff.delay(retry.attempt, &mut self.rng);
        if wait >= Duration::from_secs(1) {
            info!(client = %self.opts.client_id, attempt = retry.attempt, ?wait, failing_for = ?since.elapsed(), status = %last.message(), "server unavailable; retrying");
        } else {
            debug!(client = %self.opts.client_id, attempt = retry.attempt, ?wait, status = %last.message(), "retrying");
        }
        retry.attempt += 1;
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// Handles an error from an authenticated call: re-join, back off, or give up.
    async fn recover(&mut self, attempt: &mut Retry, status: Status) -> Result<(), Failure> {
        match status.code() {
            Code::Unauthenticated => {
                self.token = None;
                self.pause(attempt, status).await
            }
            c if transient(c) => self.pause(attempt, status).await,
            _ => Err(Failure::Refused(status)),
        }
    }

    async fn check_in(&mut self) -> Result<v1::CheckInResponse, Failure> {
        let mut attempt = Retry::default();
        loop {
            let token = self.token().await?;
            match self.transport.check_in(&token).await {
                Ok(r) => return Ok(r),
                Err(s) => self.recover(&mut attempt, s).await?,
            }
        }
    }

    /// Does one task; a task this device cannot do is declined, so the server stops waiting
    /// for it, before the error ends the run.
    async fn do_task(
        &mut self,
        task: v1::Task,
        trainer: &Arc<Mutex<impl Trainer>>,
    ) -> Result<(), ClientError> {
        let result = self.work(&task, trainer).await;
        if let Err(e) = &result
            && cannot_do(e)
        {
            self.decline(&task, e).await;
        }
        result
    }

    /// Does one task; in a secure round, keys and shares go first and the reveals after the
    /// model is let go.
    async fn work(
        &mut self,
        task: &v1::Task,
        trainer: &Arc<Mutex<impl Trainer>>,
    ) -> Result<(), ClientError> {
        let Some(setup) = &task.secagg else {
            return self.train_and_send(task, trainer, None).await;
        };
        let Some(mut secure) = self.secagg_prepare(task, setup).await? else {
            return Ok(());
        };
        let accepted = self.summary.accepted;
        self.train_and_send(task, trainer, Some(&mut secure))
            .await?;
        if self.summary.accepted > accepted {
            self.secagg_unmask(task, secure).await?;
        }
        Ok(())
    }

    async fn train_and_send(
        &mut self,
        task: &v1::Task,
        trainer: &Arc<Mutex<impl Trainer>>,
        secure: Option<&mut secagg::SecureTask>,
    ) -> Result<(), ClientError> {
        let round = task.round;
        let _active = match &self.opts.active {
            Some(slots) => Some(
                slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| ClientError::Runtime("the client pool closed".into()))?,
            ),
            None => None,
        };
        let info = task
            .model
            .as_ref()
            .ok_or_else(|| ClientError::Protocol("task without a model description".into()))?;
        let header = BundleHeader::from_wire(info, self.opts.max_model_bytes)?;
        // The plan is checked before anything is downloaded.
        let plan = TrainingPlan::from_wire(&task.config.clone().unwrap_or_default())?;
        let dp = task.dp.as_ref().map(dp::checked_setup).transpose()?;
        let (down0, up0) = (self.summary.bytes_down, self.summary.bytes_up);
        // Whole bundles where the transport shares memory with the server.
        let shared = self.transport.shares_memory();
        let fetched = if shared {
            self.fetch_shared(task, &header).await?
        } else {
            self.download(task, header).await?
        };
        let Some(global) = fetched else {
            return Ok(());
        };
        let ctx = TaskContext {
            round,
            model_version: task.model_version,
            plan,
        };
        let (update, delta) = self.train(trainer, &global, ctx).await?;
        self.summary.rounds_trained += 1;
        // Under differential privacy the update is clipped, and its example count and
        // training metrics stay on the device.
        let (delta, meta, mut metrics) = match dp {
            Some(d) => {
                let (delta, within_clip) = dp::clip_update(delta, d.clip)?;
                let meta = dp::UpdateMeta {
                    num_examples: 1,
                    within_clip,
                };
                (delta, meta, Vec::new())
            }
            None => {
                let meta = dp::UpdateMeta {
                    num_examples: update.num_examples,
                    within_clip: false,
                };
                (delta, meta, update.metrics)
            }
        };
        if let Some(secure) = secure {
            let private = dp.as_ref().map(|d| (d, meta.within_clip));
            let masked = self.secagg_mask(secure, &delta, meta.num_examples, private)?;
            drop(delta);
            self.upload(task, masked, meta).await?;
        } else if shared {
            self.submit_shared(task, delta, meta).await?;
        } else {
            self.upload(task, delta.into_bundle(), meta).await?;
        }
        metrics.push((
            "bytes_down".into(),
            (self.summary.bytes_down - down0) as f64,
        ));
        metrics.push(("bytes_up".into(), (self.summary.bytes_up - up0) as f64));
        self.report(round, metrics).await;
        Ok(())
    }

    /// Tells the server this device cannot do `task` (best effort: if the server does not
    /// hear it, the device misses the deadline and is benched all the same).
    async fn decline(&mut self, task: &v1::Task, why: &ClientError) {
        let req = v1::DeclineRequest {
            task_id: task.task_id.clone(),
            round: task.round,
            reason: why.to_string().chars().take(200).collect(),
        };
        if let Some(token) = self.token.clone()
            && let Err(s) = self.transport.decline(&token, req).await
        {
            debug!(status = %s, "decline not delivered (the deadline will tell)");
        }
    }

    /// Sends a round's metrics, retried through server restarts as every call is (the server
    /// keys them by round, client and name, so a repeat replaces); a report the server refuses
    /// is logged and dropped.
    async fn report(&mut self, round: u64, metrics: Vec<(String, f64)>) {
        let report = v1::MetricsReport {
            round,
            metrics: metrics
                .into_iter()
                .map(|(name, value)| v1::Metric { name, value })
                .collect(),
        };
        let mut attempt = Retry::default();
        loop {
            let Ok(token) = self.token().await else {
                return;
            };
            match self.transport.report_metrics(&token, report.clone()).await {
                Ok(()) => return,
                Err(s) => {
                    if let Err(Failure::Refused(s) | Failure::Exhausted(_, s)) =
                        self.recover(&mut attempt, s).await
                    {
                        debug!(status = %s, "metrics report dropped");
                        return;
                    }
                }
            }
        }
    }

    /// Trains on the CPU pool; returns the local update and the delta to send.
    async fn train(
        &mut self,
        trainer: &Arc<Mutex<impl Trainer>>,
        global: &Bundle,
        ctx: TaskContext,
    ) -> Result<(crate::LocalUpdate, FiniteBundle), ClientError> {
        let _permit = self
            .opts
            .cpu
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ClientError::Runtime("the CPU pool closed".into()))?;
        let trainer = Arc::clone(trainer);
        let global = global.clone();
        // The update (local − global, checked finite) is formed on the training thread too.
        let job = tokio::task::spawn_blocking(move || {
            let mut t = trainer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            local_update(&mut *t, &global, &ctx)
        });
        job.await
            .map_err(|e| ClientError::Runtime(format!("the training thread failed: {e}")))?
    }

    fn refused(&mut self, round: u64, status: &Status) {
        if status.code() == Code::FailedPrecondition {
            // Late or stale: the round moved on without this update (expected with over-selection).
            info!(client = %self.opts.client_id, round, reason = %status.message(), "update not needed");
        } else {
            warn!(client = %self.opts.client_id, round, code = ?status.code(), reason = %status.message(), "update refused");
        }
        self.summary
            .refused
            .push((round, status.message().to_string()));
    }
}
