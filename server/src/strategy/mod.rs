//! How client updates become the next global model.
//!
//! The round engine only knows two traits: an [`Aggregator`] that folds validated updates one at
//! a time as they arrive (so FedAvg-style rules use O(model) memory whatever the cohort size),
//! and a [`Strategy`] that weighs each update and turns the aggregate into the next global
//! model. The one rule today is [`FedAvg`] (with [`WeightedSum`] as its aggregator). The traits
//! leave room for more: a strategy with state across rounds (a server optimiser) persists it
//! through [`Strategy::state`], and a rule that needs more than a running sum can bring its own
//! aggregator.

mod fedavg;
mod weighted_sum;

pub use fedavg::FedAvg;
pub use weighted_sum::WeightedSum;

use fedtune_proto::{Bundle, CodecError};

#[derive(Debug, thiserror::Error)]
pub enum StrategyError {
    #[error("no updates to aggregate")]
    Empty,
    #[error("update does not match the aggregator: {0}")]
    Mismatch(String),
    #[error("aggregate is not finite in tensor `{0}`")]
    NonFinite(String),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// The aggregated update of one round: per tensor, in manifest order.
#[derive(Debug)]
pub struct Aggregate {
    /// Weighted mean of the updates (deltas), one f64 vector per tensor.
    pub mean: Vec<Vec<f64>>,
    /// Sum of the weights folded in.
    pub total_weight: f64,
    /// Updates folded in.
    pub count: usize,
}

/// Folds updates one at a time.
pub trait Aggregator: Send {
    /// Adds one validated update (a delta shaped like the global model) with its weight.
    fn fold(&mut self, update: &Bundle, weight: f64) -> Result<(), StrategyError>;
    /// Updates folded so far.
    fn count(&self) -> usize;
    /// Whether to fold on every core (see `ServerConfig::parallel_fold`); a hint that
    /// aggregators without a parallel fold ignore. Never changes the result.
    fn set_parallel(&mut self, _parallel: bool) {}
    /// The round's aggregate.
    fn finish(self: Box<Self>) -> Result<Aggregate, StrategyError>;
}

/// An aggregation rule.
pub trait Strategy: Send {
    fn name(&self) -> &'static str;
    /// Whether the rule must see each update on its own (robust rules): such a strategy
    /// cannot run with secure aggregation, which shows the server only the sum.
    fn needs_individual_updates(&self) -> bool {
        false
    }
    /// An update's weight in the aggregate (FedAvg: its example count).
    fn weight(&self, num_examples: u64) -> f64 {
        num_examples as f64
    }
    /// A fresh aggregator for a round on `global`.
    fn aggregator(&self, global: &Bundle) -> Box<dyn Aggregator> {
        Box::new(WeightedSum::new(global))
    }
    /// The next global model from the current one and the round's aggregate.
    fn apply(&mut self, global: &Bundle, aggregate: Aggregate) -> Result<Bundle, StrategyError>;
    /// State to checkpoint with the model (optimiser moments); `None` for stateless rules.
    fn state(&self) -> Option<Bundle> {
        None
    }
    /// Restores what [`Strategy::state`] saved.
    fn restore(&mut self, _state: Bundle) -> Result<(), StrategyError> {
        Ok(())
    }
}

/// The strategy named on the command line.
pub fn by_name(name: &str) -> Option<Box<dyn Strategy>> {
    match name {
        "fedavg" => Some(Box::new(FedAvg)),
        _ => None,
    }
}
