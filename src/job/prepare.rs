//! Preparing a run: its base model, task, records and clients, from its config.

use std::path::Path;
use std::sync::Arc;

use fedtune_llm::backprop::Example;
use fedtune_llm::llama::LlamaModel;
use fedtune_llm::lora::{LoraAdapter, LoraConfig};
use fedtune_llm::tokenizer::Tokenizer;

use super::evaluate::TaskIo;
use super::{ClientData, ClientSplit, JobConfig, JobError, Task, build_clients, hold_out};
use crate::base_model::BaseModel;
use crate::text_data::{RecordFields, Records, load_records, parse_records};

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
pub(super) fn record_fields(cfg: &JobConfig) -> RecordFields {
    RecordFields {
        client: cfg.client_field.clone(),
        text: cfg.text_field.clone(),
        reply: (cfg.task == Task::SmartReply).then(|| cfg.reply_field.clone()),
    }
}

/// Checks `cfg` and opens its base model.
pub(super) fn open_base(cfg: &JobConfig) -> Result<(BaseModel, Arc<LlamaModel>), JobError> {
    cfg.validate().map_err(JobError::Config)?;
    let base: BaseModel = cfg.model.parse().unwrap_or(BaseModel::Embedded);
    let model = Arc::new(base.open()?);
    // Refused before any device starts, not by every device at its first round.
    fedtune_llm::backprop::check_trainable(&model.cfg)?;
    Ok((base, model))
}

/// The task's tokenization and scoring for `model`.
pub(super) fn task_io(cfg: &JobConfig, model: &LlamaModel) -> Result<TaskIo, JobError> {
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
    // Before anything is allocated for training: the rank fits the model, the run the machine.
    let template = LoraAdapter::new(lora_config(cfg)?, &model.cfg)?;
    super::memory::check_fits(cfg, &model.cfg)?;
    let io = task_io(cfg, &model)?;
    let data = records(cfg)?;
    let split = ClientSplit {
        partition: cfg.partition,
        min_examples: cfg.min_examples,
        test_fraction: cfg.test_fraction,
        seed: cfg.seed,
        num_clients: cfg.num_clients,
    };
    let all = build_clients(&data.records, &split);
    if cfg.num_clients > all.len() {
        return Err(JobError::Config(format!(
            "num_clients = {}: {} records make at most {} clients of min_examples = {} each",
            cfg.num_clients,
            data.records.len(),
            all.len(),
            cfg.min_examples
        )));
    }
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

/// The global adapter's settings: at the largest rank a tier trains.
pub(super) fn lora_config(cfg: &JobConfig) -> Result<LoraConfig, JobError> {
    lora_config_at(cfg, cfg.global_rank().map_err(JobError::Config)?)
}

/// The adapter settings at `rank`, with the job's scale alpha/rank (so an adapter truncated
/// to a lower rank means what its components meant at the higher one).
pub(super) fn lora_config_at(cfg: &JobConfig, rank: usize) -> Result<LoraConfig, JobError> {
    Ok(LoraConfig {
        rank,
        alpha: match rank == cfg.rank {
            true => cfg.alpha,
            false => cfg.alpha / cfg.rank.max(1) as f32 * rank as f32,
        },
        dropout: 0.0,
        targets: super::config::parse_targets(&cfg.targets).map_err(JobError::Config)?,
        seed: cfg.seed,
    })
}
