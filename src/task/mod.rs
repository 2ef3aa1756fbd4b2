//! The federated tasks and their metrics: [`keyboard`] (next-word prediction) and
//! [`smart_reply`] (ranking replies to a message). Both score text with the inference runtime
//! (the model with whatever adapter it carries) and sum into [`Scores`].

pub mod keyboard;
pub mod smart_reply;

use fedtune_llm::llama::LlamaError;

/// Sums over scored text; [`Self::add`] merges them. `n_items` are words (keyboard) or
/// messages (smart reply); `top1`/`top3` count the items predicted as the first suggestion or
/// among the first three (next-word accuracy, or recall@1/@3 of the true reply).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Scores {
    /// Summed negative log-likelihood (nats) of the scored tokens.
    pub nll: f64,
    pub n_tokens: usize,
    pub n_items: usize,
    pub top1: usize,
    pub top3: usize,
}

impl Scores {
    pub fn add(&mut self, o: &Scores) {
        self.nll += o.nll;
        self.n_tokens += o.n_tokens;
        self.n_items += o.n_items;
        self.top1 += o.top1;
        self.top3 += o.top3;
    }

    /// Mean loss per token (nats).
    pub fn loss(&self) -> f64 {
        self.nll / self.n_tokens.max(1) as f64
    }

    pub fn perplexity(&self) -> f64 {
        self.loss().exp()
    }

    pub fn top1_accuracy(&self) -> f64 {
        self.top1 as f64 / self.n_items.max(1) as f64
    }

    pub fn top3_accuracy(&self) -> f64 {
        self.top3 as f64 / self.n_items.max(1) as f64
    }
}

/// Why a text could not be scored.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error(transparent)]
    Tokenizer(#[from] fedtune_llm::tokenizer::TokenizerError),
    #[error(transparent)]
    Model(#[from] LlamaError),
    /// A scoring thread could not start or failed.
    #[error("scoring threads: {0}")]
    Pool(String),
    /// The adapter does not fit the model.
    #[error(transparent)]
    Adapter(#[from] fedtune_llm::backprop::TrainError),
}
