//! The transport-neutral core of the server: sessions, check-ins, downloads, uploads and the
//! round lifecycle. The gRPC service and the simulation's in-process transport both call it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use fedtune_proto::{Bundle, Compression, EncodedBundle, v1};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::buffered::Buffer;
use crate::buffered::journal::Journal;
use crate::identity::DeviceGate;
use crate::registry::Registry;

/// The `client_id` under which the server records its own per-round metrics (`cohort`: the
/// devices selected; `round_seconds`: from opening to commit). No device can have it: client
/// ids are never empty.
pub const SERVER_METRICS: &str = "";
use crate::round::Phase;
use crate::store::{RoundCommit, Store, read_checkpoint};
use crate::strategy::{Strategy, hetlora};
use crate::upload_gate::UploadGate;
use crate::{ServerConfig, ServerError};

/// A committed global model, kept encoded so downloads are zero-copy slices.
#[derive(Debug)]
pub(crate) struct Global {
    pub version: u64,
    pub bundle: Bundle,
    pub encoded: EncodedBundle,
    /// Its LoRA rank, if it is a LoRA adapter ([`hetlora::lora_rank`]).
    pub lora_rank: Option<usize>,
    /// The model truncated to lower LoRA ranks, made when a device of that rank first asks.
    lower: Mutex<BTreeMap<usize, Arc<Global>>>,
}

impl Global {
    pub(crate) fn new(version: u64, bundle: Bundle) -> Result<Self, ServerError> {
        let encoded = EncodedBundle::encode(&bundle, Compression::None)?;
        Ok(Global {
            version,
            lora_rank: hetlora::lora_rank(&bundle),
            bundle,
            encoded,
            lower: Mutex::new(BTreeMap::new()),
        })
    }

    /// The model as a device of LoRA rank `rank` gets it (0: the model's own rank).
    pub(crate) fn at_rank(self: &Arc<Self>, rank: usize) -> Result<Arc<Global>, ServerError> {
        match self.lora_rank {
            Some(r) if rank > 0 && rank < r => {}
            _ => return Ok(Arc::clone(self)),
        }
        let mut lower = lock(&self.lower);
        if let Some(g) = lower.get(&rank) {
            return Ok(Arc::clone(g));
        }
        let g = Arc::new(Global::new(
            self.version,
            hetlora::truncate(&self.bundle, rank)?,
        )?);
        lower.insert(rank, Arc::clone(&g));
        Ok(g)
    }
}

pub(crate) struct State {
    pub phase: Phase,
    pub registry: Registry,
    pub global: Arc<Global>,
    /// Attempts made at the round being trained (a failed attempt re-samples its cohort).
    pub(crate) attempt: u32,
    /// Pace-steering jitter.
    pub(crate) rng: ChaCha8Rng,
}

/// The federation server's core. Cheap to share: wrap in an `Arc`.
pub struct Coordinator {
    pub(crate) config: ServerConfig,
    pub(crate) state: Mutex<State>,
    pub(crate) store: Arc<Mutex<Store>>,
    pub(crate) strategy: Arc<Mutex<Box<dyn Strategy>>>,
    /// Woken on every phase change, so held check-ins answer at once.
    pub(crate) changed: Notify,
    /// Uploads being received at once, and their buffers.
    pub(crate) uploads: UploadGate,
    /// Random per process: tasks issued before a restart are recognisably stale.
    pub(crate) boot_id: u32,
    /// Check-ins being held right now.
    pub(crate) held: Mutex<crate::check_in::HeldCalls>,
    /// Enrolled devices, when the server admits only those.
    gate: Option<DeviceGate>,
    /// Where a buffered server journals its buffer ([`crate::buffered::journal`]).
    pub(crate) buffer_dir: std::path::PathBuf,
    /// The privacy spent across rounds, when rounds are differentially private (locked after
    /// `state` where both are).
    pub(crate) dp: Option<Mutex<crate::dp::DpState>>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Coordinator {
    /// Opens the state in `dir` and resumes from its last committed round, or starts from
    /// `initial` when the state is new. Must run inside a tokio runtime.
    pub fn open(
        config: ServerConfig,
        dir: &Path,
        initial: Bundle,
        mut strategy: Box<dyn Strategy>,
    ) -> Result<Arc<Self>, ServerError> {
        config.validate()?;
        if config.secagg.is_some() && strategy.needs_individual_updates() {
            return Err(ServerError::Config {
                setting: "secagg",
                why: format!(
                    "strategy `{}` needs each update on its own, and secure aggregation shows \
                     the server only their sum: choose one or the other",
                    strategy.name()
                ),
            });
        }
        if config.dp.is_some() && strategy.needs_individual_updates() {
            return Err(ServerError::Config {
                setting: "dp",
                why: format!(
                    "strategy `{}` combines individual updates, and the privacy accounting \
                     here is for the clipped mean (DP-FedAvg): use fedavg or a server \
                     optimiser with differential privacy",
                    strategy.name()
                ),
            });
        }
        let gate = config
            .authorized_keys
            .as_deref()
            .map(DeviceGate::open)
            .transpose()?;
        let mut store = Store::open(dir, config.durable)?;
        store.keep_checkpoints(config.keep_checkpoints);
        store.pin_setting("seed", &config.seed.to_string())?;
        store.pin_setting("strategy", &strategy.describe())?;
        let staging = dir.join("staging");
        if strategy.needs_individual_updates() {
            std::fs::create_dir_all(&staging).map_err(|e| ServerError::Config {
                setting: "state",
                why: format!("cannot create {}: {e}", staging.display()),
            })?;
        }
        strategy.stage_in(&staging);
        for (setting, value) in config.pinned() {
            store.pin_setting(setting, &value)?;
        }
        // The model the federation started from (a restart given another `--model` or job).
        let initial_digest = EncodedBundle::encode(&initial, Compression::None)?
            .header
            .digest;
        store.pin_setting("initial_model", &initial_digest.to_hex())?;
        let global = match store.last_committed()? {
            Some(last) => {
                let (bundle, state) = read_checkpoint(&last.checkpoint, Some(last.digest))?;
                if let Some(state) = state {
                    strategy.restore(state)?;
                }
                info!(
                    round = last.round,
                    version = last.model_version,
                    "resuming from committed checkpoint"
                );
                Global::new(last.model_version, bundle)?
            }
            None => {
                initial.check_finite()?;
                if let Some(t) = initial
                    .tensors()
                    .iter()
                    .find(|t| t.dtype() == fedtune_proto::DType::U32)
                {
                    return Err(ServerError::InvalidRequest(format!(
                        "the initial model's tensor `{}` is U32: a model's tensors are \
                         floating-point",
                        t.name()
                    )));
                }
                let commit = RoundCommit {
                    round: 0,
                    attempt: 0,
                    model: &initial,
                    strategy_state: None,
                    contributions: &[],
                    total_weight: 0.0,
                };
                store.commit_round(&commit)?;
                info!(
                    params = initial.numel(),
                    "new federation: initial model stored as version 0"
                );
                Global::new(0, initial)?
            }
        };
        let registry = Registry::with_clients(store.clients()?, config.max_devices);
        // A secure attempt opened before a restart is never opened again: its devices may
        // have sent masked updates under keys that must not be used twice.
        let attempt = match store.meta(crate::secagg::OPEN_ATTEMPT)? {
            Some(open) => match open.split_once(':') {
                Some((r, a)) if r.parse() == Ok(global.version + 1) => {
                    a.parse::<u32>().map_or(0, |a| a + 1)
                }
                _ => 0,
            },
            None => 0,
        };
        let dp = config
            .dp
            .clone()
            .map(|s| crate::dp::DpState::load(s, &store).map(Mutex::new))
            .transpose()?;
        let global = Arc::new(global);
        let buffer_dir = dir.join("buffer");
        let phase = match &config.buffered {
            Some(_) if global.version < config.rounds => {
                let (journal, entries) = Journal::open(
                    &buffer_dir,
                    global.version + 1,
                    global.version,
                    &global.bundle.manifest(),
                    config.durable,
                )?;
                if !entries.is_empty() {
                    info!(
                        version = global.version + 1,
                        updates = entries.len(),
                        "buffer read back from its journal"
                    );
                }
                let aggregator = strategy.aggregator(&global.bundle);
                Phase::Buffering(Box::new(Buffer::new(
                    Arc::clone(&global),
                    aggregator,
                    journal,
                    entries,
                )?))
            }
            _ => Phase::Waiting,
        };
        let state = State {
            phase,
            registry,
            global,
            attempt,
            rng: ChaCha8Rng::seed_from_u64(config.seed ^ 0x5EED),
        };
        let coord = Arc::new(Coordinator {
            uploads: UploadGate::new(config.max_concurrent_uploads),
            buffer_dir,
            config,
            state: Mutex::new(state),
            store: Arc::new(Mutex::new(store)),
            strategy: Arc::new(Mutex::new(strategy)),
            changed: Notify::new(),
            boot_id: rand::rng().random(),
            held: Mutex::default(),
            gate,
            dp,
        });
        coord.advance(&mut lock(&coord.state));
        Ok(coord)
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Opens a session for a device (revoking any it held). A new device counts, and is
    /// stored, from its first check-in.
    pub fn join(self: &Arc<Self>, req: v1::JoinRequest) -> Result<v1::JoinResponse, ServerError> {
        let id = req.client_id.trim();
        if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
            return Err(ServerError::InvalidRequest(
                "client_id must be 1-128 printable characters".into(),
            ));
        }
        if let Some(gate) = &self.gate {
            gate.admit(id, req.proof.as_ref())?;
        }
        let caps = req.capabilities.unwrap_or_default();
        let rank = caps.lora_rank as usize;
        let caps_json = format!(
            "{{\"memory_mb\":{},\"compute_tier\":{},\"threads\":{},\"lora_rank\":{}}}",
            caps.memory_mb, caps.compute_tier, caps.threads, caps.lora_rank
        );
        let mut st = lock(&self.state);
        self.check_lora_rank(&st.global, rank)?;
        let token = st.registry.join(id, caps_json, self.config.token_ttl)?;
        st.registry.set_lora_rank(id, rank);
        drop(st);
        Ok(v1::JoinResponse {
            session_token: token,
            expires_in_ms: self.config.token_ttl.as_millis() as u64,
        })
    }

    /// A device may train a lower LoRA rank than the global adapter's, not a higher one, and
    /// not under secure aggregation (which sums equal-shaped updates).
    fn check_lora_rank(&self, global: &Global, rank: usize) -> Result<(), ServerError> {
        let global_rank = global.lora_rank.unwrap_or(0);
        if rank == 0 || rank == global_rank {
            return Ok(());
        }
        let why = match global.lora_rank {
            None => "the global model has no LoRA factors (`*.lora_a`, `*.lora_b`)".to_string(),
            Some(r) if rank > r => format!("the global adapter's rank is {r}"),
            Some(r) if self.config.secagg.is_some() => format!(
                "secure aggregation sums equal-shaped updates: every device trains the global \
                 adapter's rank {r}"
            ),
            Some(_) => return Ok(()),
        };
        Err(ServerError::InvalidRequest(format!(
            "this device trains LoRA rank {rank}, but {why}"
        )))
    }

    /// A fresh nonce for a signed join (any server answers; one with authorized keys
    /// requires it).
    pub fn challenge(&self, req: &v1::ChallengeRequest) -> v1::ChallengeResponse {
        match &self.gate {
            Some(gate) => gate.challenge(req.client_id.trim()),
            None => DeviceGate::unchecked_challenge(),
        }
    }

    /// Reads the authorized-keys file again (SIGHUP); without one, nothing to do.
    pub fn reload_authorized_keys(&self) {
        if let Some(gate) = &self.gate {
            gate.reload();
        }
    }

    /// A device cannot do its task: it leaves the open round's cohort and is benched until it
    /// checks in anew. A cohort left too small to commit starts a new attempt at once.
    pub fn decline(
        self: &Arc<Self>,
        token: &str,
        req: &v1::DeclineRequest,
    ) -> Result<(), ServerError> {
        let client = self.authenticate(token)?;
        let reason: String = req
            .reason
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        let mut st = lock(&self.state);
        st.registry.bench(&client);
        warn!(
            client,
            round = req.round,
            reason,
            "device declined its task"
        );
        if let Phase::Buffering(b) = &mut st.phase {
            if b.decline(&client, &req.task_id) {
                self.changed.notify_waiters();
            }
            return Ok(());
        }
        let Phase::Training(r) = &mut st.phase else {
            return Ok(());
        };
        if r.round != req.round || !r.decline(&client, &req.task_id) {
            return Ok(());
        }
        if r.cohort.len() < self.config.min_commit {
            warn!(
                round = r.round,
                attempt = r.attempt,
                cohort = r.cohort.len(),
                min = self.config.min_commit,
                "cohort too small to commit after a decline: new attempt"
            );
            self.new_attempt(&mut st);
        } else {
            self.maybe_commit(&mut st);
        }
        Ok(())
    }

    /// The client behind a session token.
    pub fn authenticate(&self, token: &str) -> Result<String, ServerError> {
        lock(&self.state)
            .registry
            .authenticate(token, self.config.token_ttl)
    }

    /// Model `version` as the device holding `token` gets it (at its LoRA rank): the global
    /// model, or under buffered aggregation a recent version a task still trains on. `None`
    /// when that version is no longer served.
    fn served_to(&self, token: &str, version: u64) -> Result<Arc<Global>, ServerError> {
        let client = self.authenticate(token)?;
        let st = lock(&self.state);
        let global = match &st.phase {
            Phase::Buffering(b) => b.version(version).unwrap_or(&st.global),
            _ => &st.global,
        };
        global.at_rank(st.registry.lora_rank(&client))
    }

    /// Chunks of the global model from `offset`, if `model_version` is still the one served.
    pub fn download(
        &self,
        token: &str,
        req: &v1::DownloadRequest,
    ) -> Result<Vec<v1::DownloadChunk>, ServerError> {
        let global = self.served_to(token, req.model_version)?;
        if req.model_version != global.version {
            return Err(ServerError::VersionGone {
                requested: req.model_version,
                current: global.version,
            });
        }
        if req.offset > global.encoded.header.encoded_bytes {
            return Err(ServerError::InvalidRequest(format!(
                "offset {} is past the end of the {}-byte bundle",
                req.offset, global.encoded.header.encoded_bytes
            )));
        }
        Ok(global
            .encoded
            .chunks(req.offset, self.config.chunk_bytes)
            .map(|(offset, data)| v1::DownloadChunk { offset, data })
            .collect())
    }

    /// The global model itself, if `model_version` is still the one served: the in-process
    /// counterpart of [`Coordinator::download`] (a shared, reference-counted bundle).
    pub fn download_shared(&self, token: &str, model_version: u64) -> Result<Bundle, ServerError> {
        let global = self.served_to(token, model_version)?;
        if model_version != global.version {
            return Err(ServerError::VersionGone {
                requested: model_version,
                current: global.version,
            });
        }
        Ok(global.bundle.clone())
    }

    /// Stores client-reported metrics for a round.
    pub fn report_metrics(&self, token: &str, req: &v1::MetricsReport) -> Result<(), ServerError> {
        let client = self.authenticate(token)?;
        let metrics: Vec<(String, f64)> = req
            .metrics
            .iter()
            .map(|m| (m.name.clone(), m.value))
            .collect();
        if let Some(bad) = metrics
            .iter()
            .find(|(n, v)| n.is_empty() || n.len() > 64 || !v.is_finite())
        {
            return Err(ServerError::InvalidRequest(format!(
                "metric `{}` = {} is not a valid metric",
                bad.0, bad.1
            )));
        }
        lock(&self.store).insert_metrics(req.round, &client, &metrics)?;
        Ok(())
    }

    pub fn status(&self) -> v1::StatusResponse {
        let st = lock(&self.state);
        let (round, phase, selected, received) = match &st.phase {
            Phase::Waiting => (st.global.version + 1, v1::Phase::Waiting, 0, 0),
            Phase::Training(r) => (
                r.round,
                v1::Phase::Training,
                r.cohort.len(),
                r.contributions.len(),
            ),
            Phase::Aggregating { round } => (*round, v1::Phase::Aggregating, 0, 0),
            Phase::Buffering(b) => (
                b.round,
                v1::Phase::Training,
                b.outstanding(),
                b.contributions.len(),
            ),
            Phase::Finished => (st.global.version, v1::Phase::Finished, 0, 0),
        };
        v1::StatusResponse {
            round,
            phase: phase as i32,
            model_version: st.global.version,
            selected: selected as u64,
            received: received as u64,
            registered_clients: st.registry.len() as u64,
            committed_rounds: st.global.version,
            dp: self.dp.as_ref().map(|d| lock(d).status()),
        }
    }

    /// The current global model and its version.
    pub fn global(&self) -> (u64, Bundle) {
        let st = lock(&self.state);
        (st.global.version, st.global.bundle.clone())
    }

    /// Runs `f` on the store (for reports and tests), buffered registrations and metrics
    /// written first.
    pub fn with_store<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        let mut store = lock(&self.store);
        if let Err(e) = store.flush() {
            warn!(error = %e, "buffered registrations and metrics could not be written");
        }
        f(&store)
    }

    /// Resolves once every configured round is committed.
    pub async fn finished(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if matches!(lock(&self.state).phase, Phase::Finished) {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn strategy_weight(&self, num_examples: u64) -> f64 {
        lock(&self.strategy).weight(num_examples)
    }

    /// Raw download payload (tests).
    pub fn encoded_global(&self) -> (fedtune_proto::BundleHeader, Bytes) {
        let st = lock(&self.state);
        (
            st.global.encoded.header.clone(),
            st.global.encoded.payload.clone(),
        )
    }
}
