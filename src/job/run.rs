//! Running the job: data → clients → a simulated federation (the real server core and client
//! runtime) → every round's global adapter measured → personalisation and the centralised
//! baseline → the run's files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fedtune_client::llama::LlamaModel;
use fedtune_client::lora::{LoraAdapter, LoraConfig};
use fedtune_client::tokenizer::Tokenizer;
use fedtune_client::train::{BaseView, Example, FitConfig, OptimizerKind, Schedule, fit};
use fedtune_client::trainer::{LoraTrainer, adapter_bundle, adapter_from_bundle};
use fedtune_client::{LocalUpdate, TaskContext, Trainer};
use fedtune_proto::{Bundle, Compression, v1::TrainingConfig};
use fedtune_server::ServerConfig;
use fedtune_server::strategy::FedAvg;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::evaluate::TaskIo;
use super::report::{CompareScores, JobReport, RoundRecord, ScoreSummary};
use super::{ClientData, ClientSplit, JobConfig, JobError, Task, build_clients, hold_out};
use crate::base_model::BaseModel;
use crate::sim::{self, FaultRates, SimConfig, TransportKind};
use crate::task::Scores;
use crate::text_data::{Record, RecordFields, Records, load_records, parse_records};

/// Everything a run works on, prepared from its config.
pub struct Prepared {
    pub cfg: JobConfig,
    pub base: BaseModel,
    pub model: Arc<LlamaModel>,
    pub io: TaskIo,
    pub template: LoraAdapter,
    /// Clients that train, with their examples.
    pub clients: Vec<ClientData>,
    pub examples: Vec<Vec<Example>>,
    /// Clients that never train.
    pub unseen: Vec<ClientData>,
    /// Records left out of the data (malformed, empty).
    pub skipped: usize,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("base", &self.base)
            .field("clients", &self.clients.len())
            .field("unseen", &self.unseen.len())
            .finish()
    }
}

/// The JSONL fields a run's records come from.
fn record_fields(cfg: &JobConfig) -> RecordFields {
    RecordFields {
        client: cfg.client_field.clone(),
        text: cfg.text_field.clone(),
        reply: (cfg.task == Task::SmartReply).then(|| cfg.reply_field.clone()),
    }
}

/// Checks `cfg` and opens its base model.
fn open_base(cfg: &JobConfig) -> Result<(BaseModel, Arc<LlamaModel>), JobError> {
    cfg.validate().map_err(JobError::Config)?;
    let base: BaseModel = cfg.model.parse().unwrap_or(BaseModel::Embedded);
    let model = Arc::new(base.open()?);
    Ok((base, model))
}

/// The task's tokenization and scoring for `model`.
fn task_io(cfg: &JobConfig, model: &LlamaModel) -> Result<TaskIo, JobError> {
    let tok = Arc::new(Tokenizer::from_gguf(model.file())?);
    Ok(TaskIo::new(
        cfg.task,
        tok,
        cfg.seq,
        cfg.candidates,
        cfg.seed,
    )?)
}

/// The records a run trains and tests on.
fn records(cfg: &JobConfig) -> Result<Records, JobError> {
    let fields = record_fields(cfg);
    if !cfg.data.is_empty() {
        if cfg.task == Task::SmartReply && cfg.reply_field.is_empty() {
            return Err(JobError::Config(
                "smart reply on your own data needs --reply-field".into(),
            ));
        }
        return Ok(load_records(Path::new(&cfg.data), &fields)?);
    }
    let bytes = crate::shakespeare::jsonl()?;
    let mut records = match cfg.task {
        Task::Keyboard => parse_records(&bytes, &fields),
        Task::SmartReply => crate::shakespeare::reply_pairs(&bytes),
    };
    records
        .records
        .retain(|r| !crate::shakespeare::is_pretraining(&r.client));
    Ok(records)
}

/// Loads the model and data and builds the clients.
pub fn prepare(cfg: &JobConfig) -> Result<Prepared, JobError> {
    let (base, model) = open_base(cfg)?;
    let io = task_io(cfg, &model)?;
    let data = records(cfg)?;
    let split = ClientSplit {
        partition: cfg.partition,
        min_examples: cfg.min_examples,
        test_fraction: cfg.test_fraction,
        seed: cfg.seed,
    };
    let all = build_clients(&data.records, &split);
    let (train, unseen) = hold_out(all, cfg.unseen_fraction, cfg.seed);
    let mut clients = Vec::with_capacity(train.len());
    let mut examples = Vec::with_capacity(train.len());
    for c in train {
        let ex = io.examples(&c.train)?;
        if !ex.is_empty() {
            clients.push(c);
            examples.push(ex);
        }
    }
    if clients.len() < cfg.clients_per_round {
        return Err(JobError::Config(format!(
            "{} clients have at least {} records, fewer than clients_per_round = {}",
            clients.len(),
            cfg.min_examples,
            cfg.clients_per_round
        )));
    }
    let template = LoraAdapter::new(lora_config(cfg)?, &model.cfg)?;
    Ok(Prepared {
        cfg: cfg.clone(),
        base,
        model,
        io,
        template,
        clients,
        examples,
        unseen,
        skipped: data.skipped,
    })
}

/// A simulated device: counts local training runs for the progress bar, and trains on one
/// thread (the engine runs as many devices at once as there are threads; splitting each
/// device's small products across threads as well only adds synchronisation).
struct Counted {
    inner: LoraTrainer,
    done: Arc<AtomicUsize>,
    bar: ProgressBar,
}

impl Trainer for Counted {
    fn train(
        &mut self,
        global: &Bundle,
        task: &TaskContext,
    ) -> Result<LocalUpdate, fedtune_client::TrainError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .map_err(|e| fedtune_client::TrainError::Other(format!("thread pool: {e}")))?;
        let out = pool.install(|| self.inner.train(global, task));
        let n = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        self.bar
            .set_message(format!("round {} · {n} local runs", task.round));
        out
    }
}

/// The steps multiple of each training client (device tiers assigned by a seeded shuffle).
fn tier_scales(cfg: &JobConfig, n: usize) -> Result<Vec<f64>, JobError> {
    let tiers = cfg.tiers().map_err(JobError::Config)?;
    let total: f64 = tiers.iter().map(|t| t.share).sum();
    let mut scales = Vec::with_capacity(n);
    for t in &tiers {
        let k = ((t.share / total) * n as f64).round() as usize;
        scales.extend(std::iter::repeat_n(t.steps_scale, k));
    }
    let last = tiers.last().map_or(1.0, |t| t.steps_scale);
    scales.resize(n, last);
    scales.shuffle(&mut ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x71E2));
    Ok(scales)
}

/// The trainer of training client `index` (steps multiple `scale`): built the same way by the
/// simulation and by a `fedtune client` process, so both train alike for the same seed.
pub fn device_trainer(
    cfg: &JobConfig,
    model: Arc<LlamaModel>,
    template: &LoraAdapter,
    examples: Vec<Example>,
    index: usize,
    scale: f64,
) -> Result<LoraTrainer, JobError> {
    Ok(LoraTrainer::new(
        model,
        template.clone(),
        examples,
        sim::trainer_seed(cfg.seed, index),
    )?
    .with_steps_scale(scale)
    .with_eval_before(false))
}

/// A deployed device of the job: training client `index` of `n_clients`, holding only its
/// own records in `data` (one client's JSONL, in the order it wrote them). Its latest
/// `test_fraction` stays out of training, as in the simulation.
pub fn device_from_file(
    cfg: &JobConfig,
    data: &Path,
    index: usize,
    n_clients: usize,
) -> Result<LoraTrainer, JobError> {
    let (_, model) = open_base(cfg)?;
    let io = task_io(cfg, &model)?;
    let records = load_records(data, &record_fields(cfg))?;
    let split = ClientSplit {
        partition: super::Partition::Natural,
        min_examples: 2,
        test_fraction: cfg.test_fraction,
        seed: cfg.seed,
    };
    if records.n_clients() != 1 {
        return Err(JobError::Config(format!(
            "{} holds {} clients' records (by `{}`): a device holds its own only",
            data.display(),
            records.n_clients(),
            cfg.client_field
        )));
    }
    let mut mine = build_clients(&records.records, &split);
    if mine.is_empty() {
        return Err(JobError::Config(format!(
            "{}: a device needs at least 2 records (one to train on, one to test)",
            data.display()
        )));
    }
    let client = mine.remove(0);
    let examples = io.examples(&client.train)?;
    let template = LoraAdapter::new(lora_config(cfg)?, &model.cfg)?;
    let scale = tier_scales(cfg, n_clients.max(index + 1))?[index];
    device_trainer(cfg, model, &template, examples, index, scale)
}

/// The server side of a deployed job: the initial global adapter and the round settings for
/// `n_clients` devices (the simulation's, but durable and lingering for late devices).
pub fn server_setup(cfg: &JobConfig, n_clients: usize) -> Result<(Bundle, ServerConfig), JobError> {
    let (_, model) = open_base(cfg)?;
    let template = LoraAdapter::new(lora_config(cfg)?, &model.cfg)?;
    let server = ServerConfig {
        durable: true,
        linger: Duration::from_secs(3),
        ..server_config(cfg, n_clients)
    };
    Ok((adapter_bundle(&template), server))
}

fn lora_config(cfg: &JobConfig) -> Result<LoraConfig, JobError> {
    Ok(LoraConfig {
        rank: cfg.rank,
        alpha: cfg.alpha,
        dropout: 0.0,
        targets: super::config::parse_targets(&cfg.targets).map_err(JobError::Config)?,
        seed: cfg.seed,
    })
}

fn server_config(cfg: &JobConfig, n_clients: usize) -> ServerConfig {
    let k = cfg.clients_per_round;
    let mut extra = std::collections::HashMap::new();
    if cfg.prox_mu > 0.0 {
        extra.insert("prox_mu".to_string(), cfg.prox_mu.to_string());
    }
    ServerConfig {
        rounds: cfg.rounds,
        clients_per_round: k,
        over_selection: cfg.over_selection,
        min_commit: ((k as f64 * 0.8).ceil() as usize).clamp(1, k),
        min_clients: n_clients,
        round_timeout: Duration::from_secs(
            30 + cfg.straggler_delay_ms / 1000 + 10 * u64::from(cfg.local_steps),
        ),
        long_poll: Duration::from_secs(30),
        seed: cfg.seed,
        training: TrainingConfig {
            local_steps: cfg.local_steps,
            batch_size: cfg.batch_size,
            learning_rate: cfg.lr,
            extra,
        },
        durable: false,
        linger: Duration::ZERO,
        ..ServerConfig::default()
    }
}

/// Runs the federation; its server state (SQLite, every round's checkpoint) goes to `state`.
fn federate(p: &Prepared, state: &Path, threads: usize) -> Result<sim::SimReport, JobError> {
    let cfg = &p.cfg;
    let scales = tier_scales(cfg, p.clients.len())?;
    let sim_cfg = SimConfig {
        server: server_config(cfg, p.clients.len()),
        clients: p.clients.len(),
        transport: if cfg.transport == "grpc" {
            TransportKind::Grpc
        } else {
            TransportKind::Inproc
        },
        threads,
        concurrency: if cfg.concurrency == 0 {
            2 * threads
        } else {
            cfg.concurrency
        },
        faults: FaultRates {
            drop_before_download: cfg.drop_rate / 3.0,
            drop_during_download: cfg.drop_rate / 3.0,
            drop_during_upload: cfg.drop_rate / 3.0,
            straggler: cfg.straggler_rate,
            straggler_delay: Duration::from_millis(cfg.straggler_delay_ms),
        },
        connections: 0,
        state_dir: state.to_path_buf(),
        compression: Compression::None,
    };
    let progress = bar(cfg.rounds, "{bar:30} round {pos}/{len} {msg} [{elapsed}]");
    let done = Arc::new(AtomicUsize::new(0));
    let trainer = |i: usize| {
        let inner = device_trainer(
            cfg,
            Arc::clone(&p.model),
            &p.template,
            p.examples[i].clone(),
            i,
            scales[i],
        )
        .expect("examples were checked in prepare");
        Counted {
            inner,
            done: Arc::clone(&done),
            bar: progress.clone(),
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    let ticker = {
        let progress = progress.clone();
        let state = state.to_path_buf();
        rt.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let n = std::fs::read_dir(state.join("checkpoints")).map_or(0, |d| d.count());
                progress.set_position(n.saturating_sub(1) as u64);
            }
        })
    };
    let report = rt.block_on(sim::run(
        &sim_cfg,
        adapter_bundle(&p.template),
        Box::new(FedAvg),
        trainer,
    ));
    ticker.abort();
    progress.finish_and_clear();
    Ok(report?)
}

/// The records a scoring pass uses: up to `eval_clients` clients' test splits (spread evenly
/// over the list, so the set is fixed for a given data and seed).
fn eval_set(clients: &[ClientData], max: usize) -> (Vec<usize>, Vec<Record>) {
    let n = clients.len();
    let k = if max == 0 { n } else { max.min(n) };
    let picked: Vec<usize> = (0..k).map(|i| i * n / k.max(1)).collect();
    let records = picked
        .iter()
        .flat_map(|&i| clients[i].test.iter().cloned())
        .collect();
    (picked, records)
}

fn fit_config(cfg: &JobConfig, steps: u64, seed: u64) -> FitConfig {
    FitConfig {
        steps,
        batch_size: cfg.batch_size as usize,
        grad_accum: 1,
        lr: cfg.lr,
        schedule: Schedule::Constant,
        optimizer: OptimizerKind::AdamW { weight_decay: 0.0 },
        max_grad_norm: Some(1.0),
        prox_mu: 0.0,
        checkpoint: false,
        seed,
    }
}

/// A progress bar of `len` steps in `template`'s words.
fn bar(len: u64, template: &str) -> ProgressBar {
    ProgressBar::new(len).with_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    )
}

/// What the measurements score: the records of the chosen training and unseen clients.
struct EvalSets {
    seen_idx: Vec<usize>,
    seen: Vec<Record>,
    unseen_idx: Vec<usize>,
    unseen: Vec<Record>,
}

/// Scores `adapter` on `records` on `pool` (`None` when there is nothing to score).
fn score(
    p: &Prepared,
    pool: &rayon::ThreadPool,
    adapter: Option<&LoraAdapter>,
    records: &[Record],
) -> Result<Option<Scores>, JobError> {
    if records.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        pool.install(|| p.io.score(&p.model, adapter, records))?,
    ))
}

/// Every round's record: its global adapter (from the server's checkpoint) scored, and what the
/// server and devices recorded of it. Returns the records and the final adapter.
fn measure_rounds(
    p: &Prepared,
    pool: &rayon::ThreadPool,
    report: &sim::SimReport,
    state: &Path,
    sets: &EvalSets,
) -> Result<(Vec<RoundRecord>, LoraAdapter), JobError> {
    let cfg = &p.cfg;
    let progress = bar(
        cfg.rounds + 1,
        "{bar:30} measuring round {pos}/{len} [{elapsed}<{eta}]",
    );
    let mut rounds = Vec::new();
    let mut adapter = p.template.clone();
    for r in 0..=cfg.rounds {
        let path = state
            .join("checkpoints")
            .join(fedtune_server::store::checkpoint_file(r));
        let (bundle, _) = fedtune_server::store::read_checkpoint(&path, None)?;
        adapter = adapter_from_bundle(&bundle, &p.template)?;
        let last = r == cfg.rounds;
        let seen = if r % cfg.eval_every == 0 || last {
            score(p, pool, Some(&adapter), &sets.seen)?
        } else {
            None
        };
        // Unseen clients are measured before and after the federation (each pass costs as
        // much as a round of training).
        let unseen = if r == 0 || last {
            score(p, pool, Some(&adapter), &sets.unseen)?
        } else {
            None
        };
        let record = report
            .coordinator
            .with_store(|s| -> Result<RoundRecord, JobError> {
                let sum = |name: &str| s.metric_total(r, name).map(|(_, v)| v);
                let (n_loss, loss_sum) = s.metric_total(r, "train_loss")?;
                Ok(RoundRecord {
                    round: r,
                    train_loss: (n_loss > 0).then(|| loss_sum / n_loss as f64),
                    seen: seen.map(ScoreSummary::from),
                    unseen: unseen.map(ScoreSummary::from),
                    participants: s.contributors(r)?.len(),
                    cohort: sum("cohort")? as usize,
                    dropouts: sum("dropped_out")? as usize,
                    bytes_up: sum("bytes_up")? as u64,
                    bytes_down: sum("bytes_down")? as u64,
                    train_tokens: sum("train_tokens")? as u64,
                    seconds: sum("round_seconds")?,
                })
            })?;
        rounds.push(record);
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok((rounds, adapter))
}

/// Personalisation: each measured unseen client fine-tunes `global` on its own training split
/// for a few steps, then is scored on its test split.
fn personalize(
    p: &Prepared,
    pool: &rayon::ThreadPool,
    global: &LoraAdapter,
    clients: &[usize],
) -> Result<Option<Scores>, JobError> {
    let cfg = &p.cfg;
    if cfg.personalize_steps == 0 || clients.is_empty() {
        return Ok(None);
    }
    let mut total = Scores::default();
    for &i in clients {
        let c = &p.unseen[i];
        let examples = p.io.examples(&c.train)?;
        let mut a = global.clone();
        if !examples.is_empty() {
            let f = FitConfig {
                lr: cfg.personalize_lr,
                ..fit_config(cfg, cfg.personalize_steps, cfg.seed ^ i as u64)
            };
            pool.install(|| fit(&BaseView::of_model(&p.model), &mut a, &examples, &f, |_| {}))?;
        }
        total.add(&pool.install(|| p.io.score(&p.model, Some(&a), &c.test))?);
    }
    Ok(Some(total))
}

/// The centralised baseline: the same adapter trained on the pooled training examples with
/// the federation's token budget, as minibatch training with a round's worth of sequences per
/// step (clients per round × local batch) and a cosine schedule. Returns it and its steps.
fn centralized_baseline(
    p: &Prepared,
    pool: &rayon::ThreadPool,
    budget_tokens: f64,
) -> Result<(LoraAdapter, u64), JobError> {
    let cfg = &p.cfg;
    let pooled: Vec<Example> = p.examples.iter().flatten().cloned().collect();
    let mean_len =
        pooled.iter().map(|e| e.tokens.len()).sum::<usize>() as f64 / pooled.len().max(1) as f64;
    let batch = cfg.batch_size as usize * cfg.clients_per_round;
    let steps = ((budget_tokens / (mean_len * batch as f64)).round() as u64).max(1);
    let mut a = p.template.clone();
    let f = FitConfig {
        batch_size: batch,
        grad_accum: cfg.clients_per_round,
        schedule: Schedule::Cosine {
            warmup: steps / 10,
            total: steps,
            min_ratio: 0.0,
        },
        ..fit_config(cfg, steps, cfg.seed)
    };
    let progress = bar(
        steps,
        "{bar:30} centralised baseline step {pos}/{len} [{elapsed}<{eta}]",
    );
    pool.install(|| {
        fit(&BaseView::of_model(&p.model), &mut a, &pooled, &f, |r| {
            progress.set_position(r.step + 1)
        })
    })?;
    progress.finish_and_clear();
    Ok((a, steps))
}

/// Runs the whole job and writes its files under `out`.
pub fn run(p: &Prepared, out: &Path) -> Result<JobReport, JobError> {
    let cfg = &p.cfg;
    let threads = if cfg.threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        cfg.threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| JobError::Config(format!("thread pool: {e}")))?;
    let started = Instant::now();
    let state = out.join("state");
    if state.exists() {
        return Err(JobError::Config(format!(
            "{} already holds a run: choose another --out",
            out.display()
        )));
    }
    std::fs::create_dir_all(&state)?;
    super::report::write_config(out, cfg)?;
    eprintln!(
        "{} training clients ({} unseen), {} records skipped; base {}; adapter of {} parameters",
        p.clients.len(),
        p.unseen.len(),
        p.skipped,
        p.base,
        p.template.n_params()
    );
    let report = federate(p, &state, threads)?;
    let fed_secs = started.elapsed().as_secs_f64();

    let (seen_idx, seen) = eval_set(&p.clients, cfg.eval_clients);
    let (unseen_idx, unseen) = eval_set(&p.unseen, cfg.eval_clients);
    let sets = EvalSets {
        seen_idx,
        seen,
        unseen_idx,
        unseen,
    };
    let (rounds, final_adapter) = measure_rounds(p, &pool, &report, &state, &sets)?;
    let budget_tokens: u64 = rounds.iter().map(|r| r.train_tokens).sum();
    let personalized = personalize(p, &pool, &final_adapter, &sets.unseen_idx)?;
    let centralized = if cfg.centralized {
        Some(centralized_baseline(p, &pool, budget_tokens as f64)?)
    } else {
        None
    };
    let (central_seen, central_unseen) = match &centralized {
        Some((a, _)) => (
            score(p, &pool, Some(a), &sets.seen)?,
            score(p, &pool, Some(a), &sets.unseen)?,
        ),
        None => (None, None),
    };

    // Round 0's adapter has B = 0: its scores are the base model's, bit for bit.
    let (first, last) = (rounds.first().cloned(), rounds.last().cloned());
    let job = JobReport {
        task: cfg.task,
        base: p.base.to_string(),
        clients: p.clients.len(),
        unseen_clients: p.unseen.len(),
        measured_clients: sets.seen_idx.len(),
        measured_unseen_clients: sets.unseen_idx.len(),
        skipped_records: p.skipped,
        adapter_params: p.template.n_params(),
        rounds,
        seen: CompareScores {
            base: first.as_ref().and_then(|f| f.seen.clone()),
            federated: last.as_ref().and_then(|l| l.seen.clone()),
            centralized: central_seen.map(ScoreSummary::from),
            personalized: None,
        },
        unseen: CompareScores {
            base: first.as_ref().and_then(|f| f.unseen.clone()),
            federated: last.as_ref().and_then(|l| l.unseen.clone()),
            centralized: central_unseen.map(ScoreSummary::from),
            personalized: personalized.map(ScoreSummary::from),
        },
        budget_tokens,
        centralized_steps: centralized.as_ref().map(|(_, s)| *s),
        federation_seconds: fed_secs,
        total_seconds: started.elapsed().as_secs_f64(),
        bytes_up: report.clients.iter().map(|c| c.bytes_up).sum(),
        bytes_down: report.clients.iter().map(|c| c.bytes_down).sum(),
    };
    super::report::write_outputs(out, p, &job, &final_adapter)?;
    Ok(job)
}

/// `runs/<UTC timestamp>`: the default output directory of a run.
pub fn default_out_dir() -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    PathBuf::from(format!(
        "runs/{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    ))
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_422), (2025, 11, 30));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn tiers_cover_every_client_in_their_shares() {
        let cfg = JobConfig {
            tiers: "0.5:1,2:3".into(),
            ..JobConfig::default()
        };
        let s = tier_scales(&cfg, 8).unwrap();
        assert_eq!(s.iter().filter(|&&x| x == 0.5).count(), 2);
        assert_eq!(s.iter().filter(|&&x| x == 2.0).count(), 6);
        assert_eq!(s, tier_scales(&cfg, 8).unwrap());
    }
}
