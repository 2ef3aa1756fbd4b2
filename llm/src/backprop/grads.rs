//! Gradient sets: one per LoRA tensor and, in the full-parameter mode, one per base weight.

use super::{Params, TrainError};
use crate::lora::{LoraAdapter, LoraModule};

/// The gradients of one pass: `lora` mirrors the adapter's modules (A and B), `base` the
/// base weights when they were asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Grads {
    pub lora: Vec<LoraModule>,
    pub base: Option<Params>,
}

impl Grads {
    /// Zero gradients for `lora` (if any) and `base` (already zeroed, if any).
    pub fn zeros(lora: Option<&LoraAdapter>, base: Option<Params>) -> Self {
        Self {
            lora: lora.map(|l| l.zeros_like().modules).unwrap_or_default(),
            base,
        }
    }

    /// Every gradient tensor with its name: LoRA A and B per module, then the base weights in
    /// [`Params::tensors`] order. Matches [`LoraAdapter::tensors`] (then [`Params::tensors`]).
    pub fn tensors(&self) -> Vec<(String, &[f32])> {
        let mut out: Vec<(String, &[f32])> = self
            .lora
            .iter()
            .flat_map(|m| {
                [
                    (format!("{}.lora_a", m.name()), &m.a[..]),
                    (format!("{}.lora_b", m.name()), &m.b[..]),
                ]
            })
            .collect();
        if let Some(b) = &self.base {
            out.extend(b.tensors());
        }
        out
    }

    /// [`Self::tensors`]' values (what [`super::Optimizer::step`] takes).
    pub fn values(&self) -> Vec<&[f32]> {
        self.tensors().into_iter().map(|(_, t)| t).collect()
    }

    /// [`Self::tensors`]' values, mutable.
    pub fn tensors_mut(&mut self) -> Vec<&mut [f32]> {
        let mut out: Vec<&mut [f32]> = self
            .lora
            .iter_mut()
            .flat_map(|m| [&mut m.a[..], &mut m.b[..]])
            .collect();
        if let Some(b) = &mut self.base {
            out.extend(b.tensors_mut());
        }
        out
    }

    /// `self += other` (gradient accumulation over micro-batches).
    pub fn add(&mut self, other: &Grads) -> Result<(), TrainError> {
        let theirs = other.tensors();
        let names: Vec<String> = self.tensors().into_iter().map(|(n, _)| n).collect();
        if names.len() != theirs.len() {
            return Err(TrainError::Mismatch(format!(
                "{} tensors against {}",
                names.len(),
                theirs.len()
            )));
        }
        for ((name, (other_name, b)), a) in names.iter().zip(&theirs).zip(self.tensors_mut()) {
            if name != other_name || a.len() != b.len() {
                return Err(TrainError::Mismatch(format!(
                    "{name} ({} values) against {other_name} ({} values)",
                    a.len(),
                    b.len()
                )));
            }
            for (a, &b) in a.iter_mut().zip(b.iter()) {
                *a += b;
            }
        }
        Ok(())
    }

    /// Multiplies every gradient by `f`.
    pub fn scale(&mut self, f: f32) {
        for t in self.tensors_mut() {
            t.iter_mut().for_each(|v| *v *= f);
        }
    }

    /// The global L2 norm over every tensor (summed in f64).
    pub fn norm(&self) -> f64 {
        self.tensors()
            .iter()
            .flat_map(|(_, t)| t.iter())
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt()
    }

    /// The name of the first tensor holding a NaN or infinity.
    pub fn first_non_finite(&self) -> Option<String> {
        self.tensors()
            .into_iter()
            .find(|(_, t)| t.iter().any(|v| !v.is_finite()))
            .map(|(n, _)| n)
    }
}
