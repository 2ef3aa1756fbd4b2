//! How client updates become the next global model.
//!
//! The round engine only knows two traits: an [`Aggregator`] that folds validated updates one
//! at a time as they arrive, and a [`Strategy`] that weighs each update and turns the
//! aggregate into the next global model. One file per rule:
//!
//! - the mean and what is done with it: [`FedAvg`] (aggregator [`WeightedSum`], O(model)
//!   memory), and the server optimisers [`FedAvgM`] and the [`FedOpt`] family
//!   ([`fedadagrad()`], [`fedadam()`], [`fedyogi()`]), whose state ([`Strategy::state`]) is
//!   checkpointed with the model;
//! - robust rules that need every update at once, staged on disk ([`staged`]):
//!   [`FedMedian`], [`FedTrimmedAvg`], [`Krum`], [`MultiKrum`], [`Bulyan`];
//! - LoRA-aware merging, also over staged updates: [`FlexLora`] (the mean of the products
//!   B·A, re-factored by truncated SVD);
//! - heterogeneous LoRA ranks across devices ([`hetlora`]): the global adapter truncated to
//!   each device's rank, its update widened back, for any rule.
//!
//! Names and parameters are Flower's (`flwr.server.strategy`), and so are the results;
//! `flexlora` is not in Flower.

mod bulyan;
mod fedadagrad;
mod fedadam;
mod fedavg;
mod fedavgm;
mod fedmedian;
mod fedopt;
mod fedtrimmedavg;
mod fedyogi;
mod flexlora;
pub mod hetlora;
mod krum;
mod lowrank;
mod multikrum;
mod opt_state;
mod params;
pub mod staged;
mod weighted_sum;

pub use bulyan::Bulyan;
pub use fedadagrad::fedadagrad;
pub use fedadam::fedadam;
pub use fedavg::FedAvg;
pub use fedavgm::FedAvgM;
pub use fedmedian::FedMedian;
pub use fedopt::{FedOpt, FedOptParams};
pub use fedtrimmedavg::FedTrimmedAvg;
pub use fedyogi::fedyogi;
pub use flexlora::FlexLora;
pub use hetlora::RankFill;
pub use krum::Krum;
pub use multikrum::MultiKrum;
pub use params::Params;
pub use staged::StagedStrategy;
pub use weighted_sum::WeightedSum;

use std::path::{Path, PathBuf};

use fedtune_proto::{Bundle, CodecError};

#[derive(Debug, thiserror::Error)]
pub enum StrategyError {
    #[error("no updates to aggregate")]
    Empty,
    #[error("update does not match the aggregator: {0}")]
    Mismatch(String),
    #[error("aggregate is not finite in tensor `{0}`")]
    NonFinite(String),
    #[error("unknown strategy `{0}` (known: {known})", known = NAMES.join(", "))]
    Unknown(String),
    #[error("strategy setting `{key}`: {why}")]
    Param { key: String, why: String },
    #[error("`{strategy}` needs at least {needed} updates in a round, got {got}")]
    TooFew {
        strategy: &'static str,
        needed: usize,
        got: usize,
    },
    #[error("staging updates in {dir}: {source}")]
    Staging {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// The round's aggregated update, per tensor in manifest order.
#[derive(Debug)]
pub struct Aggregate {
    /// The aggregated update (a delta): the weighted mean for FedAvg-style rules, the robust
    /// rule's result otherwise; one f64 vector per tensor.
    pub mean: Vec<Vec<f64>>,
    /// Sum of the weights folded in.
    pub total_weight: f64,
    /// Updates folded in.
    pub count: usize,
}

impl Aggregate {
    /// The aggregate less `values` (per tensor, same shapes): the update that takes
    /// `values` to this aggregate. An aggregate of devices' full parameters (updates of a
    /// zero model) becomes one of deltas from `values` (what `fedtune aggregate` does).
    pub fn minus(mut self, values: &Bundle) -> Result<Self, StrategyError> {
        if values.tensors().len() != self.mean.len() {
            return Err(StrategyError::Mismatch("tensor count differs".into()));
        }
        for (m, t) in self.mean.iter_mut().zip(values.tensors()) {
            let v = t.to_f32();
            if v.len() != m.len() {
                return Err(StrategyError::Mismatch(format!(
                    "tensor `{}` has {} values, the aggregate {}",
                    t.name(),
                    v.len(),
                    m.len()
                )));
            }
            m.iter_mut()
                .zip(v.iter())
                .for_each(|(m, &v)| *m -= f64::from(v));
        }
        Ok(self)
    }
}

/// Refuses an update whose manifest is not the global model's, or a weight that is not
/// positive: what every aggregator checks before folding.
fn check_update(
    specs: &[fedtune_proto::TensorSpec],
    update: &Bundle,
    weight: f64,
) -> Result<(), StrategyError> {
    if update.manifest() != specs {
        return Err(StrategyError::Mismatch(
            "manifest differs from the global model".into(),
        ));
    }
    if !(weight.is_finite() && weight > 0.0) {
        return Err(StrategyError::Mismatch(format!(
            "weight {weight} must be positive"
        )));
    }
    Ok(())
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
    /// The name with every setting in effect (`fedadam eta=0.1 ...`): what a federation's
    /// state is pinned to, so a restart cannot silently change the rule.
    fn describe(&self) -> String {
        self.name().to_string()
    }
    /// Whether the rule must see each update on its own (robust rules): such a strategy
    /// cannot run with secure aggregation, which shows the server only the sum.
    fn needs_individual_updates(&self) -> bool {
        false
    }
    /// Where to stage updates on disk, for rules that do ([`staged`]).
    fn stage_in(&mut self, _dir: &Path) {}
    /// How an update of a device that trains a lower LoRA rank is widened to the global
    /// adapter's before it is aggregated ([`hetlora`]).
    fn rank_fill(&self) -> RankFill {
        RankFill::KeepGlobal
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
    /// Back to the state before any round (what `state() == None` means).
    fn reset(&mut self) {}
}

/// Every strategy name [`build`] knows.
pub const NAMES: [&str; 11] = [
    "fedavg",
    "fedavgm",
    "fedadagrad",
    "fedadam",
    "fedyogi",
    "fedmedian",
    "fedtrimmedavg",
    "krum",
    "multikrum",
    "bulyan",
    "flexlora",
];

/// The strategy `name` with `params` (Flower's parameter names; unknown ones are refused).
pub fn build(name: &str, params: &Params) -> Result<Box<dyn Strategy>, StrategyError> {
    let no_params = |s: Box<dyn Strategy>| {
        params.reader().finish(name)?;
        Ok(s)
    };
    match name {
        "fedavg" => no_params(Box::new(FedAvg)),
        "fedavgm" => Ok(Box::new(FedAvgM::from_params(params)?)),
        "fedadagrad" => Ok(Box::new(fedadagrad(params)?)),
        "fedadam" => Ok(Box::new(fedadam(params)?)),
        "fedyogi" => Ok(Box::new(fedyogi(params)?)),
        "fedmedian" => no_params(Box::new(StagedStrategy::new(FedMedian))),
        "fedtrimmedavg" => Ok(Box::new(StagedStrategy::new(FedTrimmedAvg::from_params(
            params,
        )?))),
        "krum" => Ok(Box::new(StagedStrategy::new(Krum::from_params(params)?))),
        "multikrum" => Ok(Box::new(StagedStrategy::new(MultiKrum::from_params(
            params,
        )?))),
        "bulyan" => Ok(Box::new(StagedStrategy::new(Bulyan::from_params(params)?))),
        "flexlora" => no_params(Box::new(StagedStrategy::new(FlexLora))),
        other => Err(StrategyError::Unknown(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_builds_and_describes_itself() {
        for name in NAMES {
            let s = build(name, &Params::default())
                .or_else(|_| build(name, &Params::parse(&["num_clients_to_keep=2"]).unwrap()))
                .unwrap();
            assert_eq!(s.name(), name);
            assert!(s.describe().starts_with(name));
        }
        let err = build("fedprox", &Params::default())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("fedadam"), "{err}");
        assert!(build("fedavg", &Params::parse(&["eta=1"]).unwrap()).is_err());
        let s = build("fedadam", &Params::parse(&["eta=0.5"]).unwrap()).unwrap();
        assert_eq!(
            s.describe(),
            "fedadam eta=0.5 eta_l=0.1 beta_1=0.9 beta_2=0.99 tau=0.000000001"
        );
    }
}
