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
//! - `prepare`: the base model, task, records and clients of a run;
//! - `deployment`: the server's setup and each device's trainer (simulated or deployed);
//! - `federation`: the simulated federation;
//! - `measure`: every round's global adapter scored from the server's checkpoints;
//! - `personalize` and `baseline`: local fine-tuning of unseen clients, and the centralised
//!   baseline;
//! - [`run`]: the whole job, in that order;
//! - [`report`] and [`plot`]: the run's files and its summary table; `out_dir`: where they go.

mod baseline;
pub mod clients;
pub mod config;
mod deployment;
pub mod evaluate;
mod federation;
mod measure;
pub mod memory;
mod out_dir;
mod personalize;
pub mod plot;
mod prepare;
pub mod report;
pub mod run;

pub use clients::{ClientData, ClientSplit, Partition, build_clients, hold_out};
pub use config::{JobConfig, Task, Tier};
pub use deployment::{device_from_file, device_trainer, server_setup};
pub use out_dir::default_out_dir;
pub use prepare::{Prepared, prepare};
pub use report::JobReport;

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
    Tokenizer(#[from] fedtune_llm::tokenizer::TokenizerError),
    #[error(transparent)]
    Score(#[from] crate::task::ScoreError),
    #[error("training: {0}")]
    Train(#[from] fedtune_llm::backprop::TrainError),
    #[error("LoRA settings: {0}")]
    LoraSettings(#[from] fedtune_llm::lora::InvalidAdapter),
    #[error("global adapter: {0}")]
    Adapter(#[from] fedtune_client::TrainerError),
    #[error("writing the adapter: {0}")]
    Lora(#[from] fedtune_llm::lora::LoraError),
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

/// A progress bar of `len` steps in `template`'s words.
fn bar(len: u64, template: &str) -> indicatif::ProgressBar {
    indicatif::ProgressBar::new(len).with_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    )
}
