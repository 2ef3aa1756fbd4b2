//! Fault injection for simulated devices: a [`Transport`] that wraps the real one and makes
//! its device misbehave as a [`FaultPlan`] says, round by round. The device runtime knows
//! nothing of it; it sees what a phone sees when it goes offline or loses its connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fedtune_client::runtime::client_rng;
use fedtune_client::{BoxStream, Transport};
use fedtune_proto::{Bundle, FiniteBundle, v1};
use futures::StreamExt;
use rand::Rng;
use tonic::Status;

/// What goes wrong for one client in one round. The default is nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultPlan {
    /// The device goes offline before downloading (it never trains this round).
    pub drop_before_download: bool,
    /// The device goes offline after receiving this many bytes of the model.
    pub drop_during_download: Option<u64>,
    /// The connection breaks once after this many bytes; the device resumes the download.
    pub interrupt_download: Option<u64>,
    /// The device goes offline after sending this many upload chunks.
    pub drop_during_upload: Option<usize>,
    /// The device trains this much slower (a straggler); its upload may arrive late.
    pub delay: Option<Duration>,
}

impl FaultPlan {
    fn hits_bytes_in_transit(&self) -> bool {
        self.drop_during_download.is_some()
            || self.interrupt_download.is_some()
            || self.drop_during_upload.is_some()
    }
}

/// Decides each client's faults per round.
pub trait Faults: Send + Sync + std::fmt::Debug {
    fn plan(&self, client_id: &str, round: u64) -> FaultPlan;
}

/// Probabilities of each misbehaviour per client and round.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultRates {
    pub drop_before_download: f64,
    pub drop_during_download: f64,
    pub drop_during_upload: f64,
    /// Share of clients that are slowed by `straggler_delay` in a round.
    pub straggler: f64,
    pub straggler_delay: Duration,
}

impl FaultRates {
    pub fn is_none(&self) -> bool {
        self.drop_before_download == 0.0
            && self.drop_during_download == 0.0
            && self.drop_during_upload == 0.0
            && self.straggler == 0.0
    }
}

/// Draws each (client, round)'s faults from a seeded generator, so a run replays exactly.
#[derive(Clone, Debug)]
pub struct SeededFaults {
    pub rates: FaultRates,
    pub seed: u64,
}

impl Faults for SeededFaults {
    fn plan(&self, client_id: &str, round: u64) -> FaultPlan {
        let mut rng = client_rng(
            client_id,
            self.seed ^ round.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let r = &self.rates;
        let mut plan = FaultPlan::default();
        let draw: f64 = rng.random();
        if draw < r.drop_before_download {
            plan.drop_before_download = true;
        } else if draw < r.drop_before_download + r.drop_during_download {
            plan.drop_during_download = Some(1);
        } else if draw < r.drop_before_download + r.drop_during_download + r.drop_during_upload {
            plan.drop_during_upload = Some(1);
        }
        if rng.random::<f64>() < r.straggler {
            plan.delay = Some(r.straggler_delay);
        }
        plan
    }
}

/// A device slowed by the same delay every round (`fedtune client --delay`).
#[derive(Debug)]
pub struct Slow(pub Duration);

impl Faults for Slow {
    fn plan(&self, _client: &str, _round: u64) -> FaultPlan {
        FaultPlan {
            delay: Some(self.0),
            ..FaultPlan::default()
        }
    }
}

/// How long an offline device waits before it checks in again.
const OFFLINE_POLL_MS: u64 = 20;

/// What the wrapper knows of its device.
#[derive(Debug)]
struct Device {
    client_id: String,
    faults: Arc<dyn Faults>,
    state: Mutex<DeviceState>,
    /// Dropouts injected, summed over every device that shares the counter.
    dropouts: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
struct DeviceState {
    /// The round of the task the device is working on (from its last check-in).
    round: u64,
    /// Bytes of that task's model.
    model_bytes: u64,
    /// The device went offline for this round: a task of it is not taken up again.
    offline: Option<u64>,
    /// A dropout to report once the device is back online.
    unreported: Option<u64>,
    /// The round whose download was already interrupted once.
    interrupted: Option<u64>,
}

impl Device {
    fn state(&self) -> std::sync::MutexGuard<'_, DeviceState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The round the device is working on and its plan.
    fn plan(&self) -> (u64, FaultPlan) {
        let round = self.state().round;
        (round, self.faults.plan(&self.client_id, round))
    }

    /// The device goes offline for `round`; the status its pending call ends with.
    fn go_offline(&self, round: u64, when: &str) -> Status {
        tracing::debug!(client = %self.client_id, round, when, "fault injection: device dropped out");
        let mut st = self.state();
        if st.offline != Some(round) {
            st.offline = Some(round);
            st.unreported = Some(round);
            self.dropouts.fetch_add(1, Ordering::Relaxed);
        }
        Status::failed_precondition(format!(
            "fault injection: the device went offline {when} in round {round}"
        ))
    }

    /// Whether the download of `round` is to break now (once per round).
    fn interrupt(&self, round: u64) -> bool {
        let mut st = self.state();
        let first = st.interrupted != Some(round);
        st.interrupted = Some(round);
        first
    }
}

/// The device's transport with faults injected: going offline before or during a download
/// or mid-upload (the device then sits the round out and reports `dropped_out` once back, as
/// phones send analytics later; an update cut off mid-upload is refused as stale when the
/// device is back), a broken download connection (the device resumes it), or a slow device
/// (its upload waits). A transfer a fault hits goes through the streamed calls, not the
/// in-process handover, so the server sees what it would see from a real device.
#[derive(Debug)]
pub struct FaultyTransport<T> {
    inner: T,
    device: Arc<Device>,
}

impl<T: Transport> FaultyTransport<T> {
    pub fn new(
        inner: T,
        client_id: impl Into<String>,
        faults: Arc<dyn Faults>,
        dropouts: Arc<AtomicU64>,
    ) -> Self {
        FaultyTransport {
            inner,
            device: Arc::new(Device {
                client_id: client_id.into(),
                faults,
                state: Mutex::default(),
                dropouts,
            }),
        }
    }

    /// Back online: reports the last dropout (best effort, as the runtime's own reports).
    async fn report_dropout(&self, token: &str) {
        let Some(round) = self.device.state().unreported.take() else {
            return;
        };
        let report = v1::MetricsReport {
            round,
            metrics: vec![v1::Metric {
                name: "dropped_out".into(),
                value: 1.0,
            }],
        };
        let _ = self.inner.report_metrics(token, report).await;
    }

    /// A task the device takes up: the round it works on from now, unless it is offline for
    /// that round (then it checks in again a little later).
    fn take_up(&self, task: &v1::Task) -> Option<v1::CheckInResponse> {
        let offline = {
            let mut st = self.device.state();
            st.round = task.round;
            st.model_bytes = task.model.as_ref().map_or(0, |m| m.encoded_bytes);
            st.offline == Some(task.round)
        };
        if !offline {
            if !self.device.plan().1.drop_before_download {
                return None;
            }
            self.device.go_offline(task.round, "before download");
        }
        Some(v1::CheckInResponse {
            outcome: Some(v1::check_in_response::Outcome::RetryAfterMs(
                OFFLINE_POLL_MS,
            )),
        })
    }
}

/// Wraps a download stream: the device drops out, or the connection breaks once, after the
/// plan's number of bytes.
fn faulty_download(
    device: Arc<Device>,
    (round, plan): (u64, FaultPlan),
    offset: u64,
    stream: BoxStream<Result<v1::DownloadChunk, Status>>,
) -> BoxStream<Result<v1::DownloadChunk, Status>> {
    enum Next {
        Pass,
        Fail(Status),
        Stop,
    }
    let total = device.state().model_bytes;
    futures::stream::unfold(
        (stream, offset, Next::Pass),
        move |(mut stream, mut got, next)| {
            let device = Arc::clone(&device);
            let plan = plan.clone();
            async move {
                match next {
                    Next::Stop => None,
                    Next::Fail(status) => Some((Err(status), (stream, got, Next::Stop))),
                    Next::Pass => {
                        let item = stream.next().await?;
                        let mut next = Next::Pass;
                        if let Ok(chunk) = &item {
                            got += chunk.data.len() as u64;
                            if plan.drop_during_download.is_some_and(|n| got >= n) {
                                next = Next::Fail(device.go_offline(round, "during download"));
                            } else if plan.interrupt_download.is_some_and(|n| got >= n)
                                && got < total
                                && device.interrupt(round)
                            {
                                next = Next::Fail(Status::unavailable(
                                    "fault injection: connection lost",
                                ));
                            }
                        }
                        Some((item, (stream, got, next)))
                    }
                }
            }
        },
    )
    .boxed()
}

/// The first `k` chunks of an upload after its header, then a stream that never ends; the
/// receiver fires when the stall is reached.
fn stalled_upload(
    messages: BoxStream<v1::UploadMessage>,
    k: usize,
) -> (
    BoxStream<v1::UploadMessage>,
    tokio::sync::oneshot::Receiver<()>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let stall = futures::stream::once(async move {
        let _ = tx.send(());
        futures::future::pending::<v1::UploadMessage>().await
    });
    (messages.take(k + 1).chain(stall).boxed(), rx)
}

impl<T: Transport> Transport for FaultyTransport<T> {
    async fn join(&self, req: v1::JoinRequest) -> Result<v1::JoinResponse, Status> {
        self.inner.join(req).await
    }

    async fn challenge(&self, req: v1::ChallengeRequest) -> Result<v1::ChallengeResponse, Status> {
        self.inner.challenge(req).await
    }

    async fn check_in(&self, token: &str) -> Result<v1::CheckInResponse, Status> {
        self.report_dropout(token).await;
        let resp = self.inner.check_in(token).await?;
        if let Some(v1::check_in_response::Outcome::Task(task)) = &resp.outcome
            && let Some(offline) = self.take_up(task)
        {
            return Ok(offline);
        }
        Ok(resp)
    }

    async fn download(
        &self,
        token: &str,
        req: v1::DownloadRequest,
    ) -> Result<BoxStream<Result<v1::DownloadChunk, Status>>, Status> {
        let offset = req.offset;
        let stream = self.inner.download(token, req).await?;
        Ok(faulty_download(
            Arc::clone(&self.device),
            self.device.plan(),
            offset,
            stream,
        ))
    }

    async fn upload(
        &self,
        token: &str,
        messages: BoxStream<v1::UploadMessage>,
    ) -> Result<v1::UploadResponse, Status> {
        let (round, plan) = self.device.plan();
        if let Some(delay) = plan.delay {
            tokio::time::sleep(delay).await;
        }
        let Some(k) = plan.drop_during_upload else {
            return self.inner.upload(token, messages).await;
        };
        let (messages, stalled) = stalled_upload(messages, k);
        tokio::select! {
            r = self.inner.upload(token, messages) => r,
            // Abandon the call mid-stream, as a device losing its connection would.
            _ = stalled => Err(self.device.go_offline(round, "during upload")),
        }
    }

    async fn report_metrics(&self, token: &str, req: v1::MetricsReport) -> Result<(), Status> {
        // A round the device dropped out of reports only that (see `report_dropout`).
        if self.device.state().offline == Some(req.round) {
            return Ok(());
        }
        self.inner.report_metrics(token, req).await
    }

    async fn decline(&self, token: &str, req: v1::DeclineRequest) -> Result<(), Status> {
        self.inner.decline(token, req).await
    }

    async fn status(&self) -> Result<v1::StatusResponse, Status> {
        self.inner.status().await
    }

    /// A device that dropped out of a round takes no further part in its protocol.
    async fn secagg(
        &self,
        token: &str,
        req: v1::SecAggRequest,
    ) -> Result<v1::SecAggResponse, Status> {
        if self.device.state().offline == Some(req.round) {
            return Err(Status::failed_precondition(
                "fault injection: the device is offline for this round",
            ));
        }
        self.inner.secagg(token, req).await
    }

    /// A task whose faults hit bytes in transit goes through the streamed calls.
    fn shares_memory(&self) -> bool {
        self.inner.shares_memory() && !self.device.plan().1.hits_bytes_in_transit()
    }

    async fn fetch_shared(&self, token: &str, model_version: u64) -> Result<Bundle, Status> {
        self.inner.fetch_shared(token, model_version).await
    }

    async fn submit_shared(
        &self,
        token: &str,
        header: v1::UploadHeader,
        update: FiniteBundle,
    ) -> Result<v1::UploadResponse, Status> {
        if let Some(delay) = self.device.plan().1.delay {
            tokio::time::sleep(delay).await;
        }
        self.inner.submit_shared(token, header, update).await
    }
}
