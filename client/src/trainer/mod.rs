//! Local training behind one trait, so the runtime does not care what model it trains.

mod linreg;
mod lora;

pub use linreg::{LinRegData, LinRegTrainer, linreg_model};
pub use lora::{LoraTrainer, adapter_bundle, adapter_from_bundle, b_bundle};

use fedtune_llm::backprop::TrainError;
use fedtune_proto::{Bundle, TrainingPlan};

/// Why a [`Trainer`] produced no update this round.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainerError {
    /// The global model (or the trainer's own result) is not what this trainer trains.
    #[error("the model does not fit this trainer: {0}")]
    Model(String),
    /// Nothing on this device to learn from.
    #[error("no local training data: {0}")]
    NoData(&'static str),
    /// The engine stopped: a divergence, a bad batch (see [`TrainError`]).
    #[error(transparent)]
    Train(#[from] TrainError),
}

/// What the server asked for in this round.
#[derive(Clone, Debug)]
pub struct TaskContext {
    pub round: u64,
    pub model_version: u64,
    /// The local training the server asked for, checked when the task arrived.
    pub plan: TrainingPlan,
}

/// The result of local training: the new local model, how many examples it saw (the weight
/// FedAvg gives it), and metrics to report.
#[derive(Clone, Debug)]
pub struct LocalUpdate {
    pub model: Bundle,
    pub num_examples: u64,
    pub metrics: Vec<(String, f64)>,
}

/// Trains a model on data that stays on the device. Runs on a CPU thread, never on the async
/// runtime; must be deterministic given the global model and the task, so a federation is
/// reproducible from its seed.
pub trait Trainer: Send + 'static {
    fn train(&mut self, global: &Bundle, task: &TaskContext) -> Result<LocalUpdate, TrainerError>;

    /// The LoRA rank this trainer trains, sent when the device joins (heterogeneous ranks:
    /// the server then sends it the global adapter at this rank). 0: not a LoRA trainer, or
    /// whatever rank the global adapter has.
    fn lora_rank(&self) -> u32 {
        0
    }

    /// [`Trainer::train`] returning the update itself (local − global, shaped like `global`)
    /// in [`LocalUpdate::model`], for trainers that form it directly: the runtime then skips
    /// a pass over the model. `None` (the default): the runtime subtracts.
    fn train_delta(
        &mut self,
        _global: &Bundle,
        _task: &TaskContext,
    ) -> Option<Result<LocalUpdate, TrainerError>> {
        None
    }
}
