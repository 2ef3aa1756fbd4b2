//! Built-in initial models and the trainers that go with them, named on the command line.

use std::path::PathBuf;

use fedtune_client::trainer::linreg_model;
use fedtune_client::{LocalUpdate, TaskContext, Trainer, TrainerError};
use fedtune_proto::{Bundle, Tensor};

/// An initial global model named on the command line.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelSpec {
    /// `linreg:DIM`: the linear-regression learner's zero model.
    LinReg(usize),
    /// `sin:P`: one tensor `x` of P values x_i = sin(i) (the overhead benchmark's model).
    Sin(usize),
    /// A safetensors file.
    File(PathBuf),
}

impl std::str::FromStr for ModelSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let count = |v: &str| {
            v.parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or(format!("`{v}` is not a positive count"))
        };
        match s.split_once(':') {
            Some(("linreg", d)) => Ok(ModelSpec::LinReg(count(d)?)),
            Some(("sin", p)) => Ok(ModelSpec::Sin(count(p)?)),
            _ if s.ends_with(".safetensors") => Ok(ModelSpec::File(PathBuf::from(s))),
            _ => Err(format!(
                "unknown model `{s}`: use linreg:DIM, sin:PARAMS or a .safetensors file"
            )),
        }
    }
}

impl ModelSpec {
    pub fn build(&self) -> anyhow::Result<Bundle> {
        Ok(match self {
            ModelSpec::LinReg(d) => linreg_model(*d),
            ModelSpec::Sin(p) => sin_model(*p),
            ModelSpec::File(path) => fedtune_server::store::read_checkpoint(path, None)?.0,
        })
    }
}

/// One tensor `x` of `params` f32 values x_i = sin(i), computed in f64: bytes that don't compress.
pub fn sin_model(params: usize) -> Bundle {
    let values: Vec<f32> = (0..params).map(|i| (i as f64).sin() as f32).collect();
    Bundle::new(vec![
        Tensor::from_f32_vec("x", vec![params], values).expect("shape matches"),
    ])
    .expect("one tensor")
}

/// The overhead benchmark's "training": return the global model plus a constant.
#[derive(Clone, Debug)]
pub struct ShiftTrainer {
    pub shift: f32,
    pub examples: u64,
}

impl ShiftTrainer {
    /// Every tensor of `global` mapped value by value (proved finite as it is written).
    fn map(&self, global: &Bundle, f: impl Fn(f32) -> f32) -> Result<LocalUpdate, TrainerError> {
        let tensors = global.tensors().iter().map(|t| t.map_f32(&f)).collect();
        let model = Bundle::new(tensors).map_err(|e| TrainerError::Model(e.to_string()))?;
        Ok(LocalUpdate {
            model,
            num_examples: self.examples,
            metrics: Vec::new(),
        })
    }
}

impl Trainer for ShiftTrainer {
    fn train(&mut self, global: &Bundle, _task: &TaskContext) -> Result<LocalUpdate, TrainerError> {
        let s = self.shift;
        self.map(global, move |x| x + s)
    }

    /// `(x + shift) − x` per value: the very delta the runtime would form, in one pass.
    fn train_delta(
        &mut self,
        global: &Bundle,
        _task: &TaskContext,
    ) -> Option<Result<LocalUpdate, TrainerError>> {
        let s = self.shift;
        Some(self.map(global, move |x| (x + s) - x))
    }
}

/// Mean of all values of a bundle, accumulated in f64.
pub fn mean(bundle: &Bundle) -> f64 {
    let (sum, n) = bundle.tensors().iter().fold((0.0f64, 0usize), |(s, n), t| {
        (
            s + t.to_f32().iter().map(|&v| f64::from(v)).sum::<f64>(),
            n + t.numel(),
        )
    });
    sum / n.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_model_specs() {
        assert_eq!("linreg:8".parse::<ModelSpec>(), Ok(ModelSpec::LinReg(8)));
        assert_eq!("sin:100".parse::<ModelSpec>(), Ok(ModelSpec::Sin(100)));
        assert!("sin:0".parse::<ModelSpec>().is_err());
        assert!("foo".parse::<ModelSpec>().is_err());
        let m = sin_model(3);
        assert_eq!(
            m.tensors()[0].to_f32().as_ref(),
            &[0.0, 1f64.sin() as f32, 2f64.sin() as f32]
        );
    }
}
