//! The main job: federated LoRA personalisation. Many simulated devices fine-tune a LoRA
//! adapter of a frozen quantized base model on text that never leaves them (keyboard
//! next-word prediction or smart reply); the server merges their updates; the job measures
//! the global adapter round by round on the devices' own test text and on devices that never
//! trained, the gain of a few local personalisation steps, and a centralised baseline trained
//! on the pooled data with the same token budget.
//!
//! - [`config`]: every setting of a run (TOML);
//! - [`clients`]: records into client datasets (partitions, minimum size, local test split,
//!   unseen clients);
//! - [`evaluate`]: training examples and scores of a task;
//! - [`run`]: the federation, measurements, personalisation and baseline;
//! - [`report`] and [`plot`]: the run's files and its summary table.

pub mod clients;
pub mod config;
pub mod evaluate;
pub mod plot;
pub mod report;
pub mod run;

pub use clients::{ClientData, ClientSplit, Partition, build_clients, hold_out};
pub use config::{JobConfig, Task, Tier};
pub use report::JobReport;
pub use run::{Prepared, default_out_dir, prepare};

/// Why a run could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("config: {0}")]
    Config(String),
    #[error(transparent)]
    Data(#[from] crate::text_data::DataError),
    #[error(transparent)]
    Model(#[from] crate::base_model::BaseModelError),
    #[error(transparent)]
    Tokenizer(#[from] fedtune_client::tokenizer::TokenizerError),
    #[error(transparent)]
    Score(#[from] crate::task::ScoreError),
    #[error("training: {0}")]
    Train(#[from] fedtune_client::train::TrainError),
    #[error("global adapter: {0}")]
    Adapter(#[from] fedtune_client::TrainError),
    #[error("writing the adapter: {0}")]
    Lora(#[from] fedtune_client::lora::LoraError),
    #[error(transparent)]
    Sim(#[from] crate::sim::SimError),
    #[error("server state: {0}")]
    Store(#[from] fedtune_server::store::StoreError),
    #[error("plot: {0}")]
    Plot(String),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
