//! Optimisers (SGD with momentum, AdamW), learning-rate schedules and gradient clipping, with
//! PyTorch's update rules (`torch.optim.SGD`, `torch.optim.AdamW`,
//! `torch.nn.utils.clip_grad_norm_`) and Hugging Face's warm-up schedules.
//!
//! Optimisers see parameters as a list of tensors ([`crate::lora::LoraAdapter::tensors_mut`],
//! [`super::Params::tensors_mut`]) and gradients as the matching list
//! ([`super::Grads::tensors`]); their state follows the list's order.

use super::{Grads, TrainError};

/// An update rule over a fixed list of tensors.
pub trait Optimizer {
    /// Updates `params` with `grads` (same order, same lengths) at learning rate `lr`.
    fn step(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[&[f32]],
        lr: f32,
    ) -> Result<(), TrainError>;
}

/// Checks that `grads` matches `params`, and that `state` (if not empty) too.
fn check(params: &[&mut [f32]], grads: &[&[f32]], state: &[Vec<f32>]) -> Result<(), TrainError> {
    if params.len() != grads.len() {
        return Err(TrainError::Mismatch(format!(
            "{} gradient tensors for {} parameters",
            grads.len(),
            params.len()
        )));
    }
    for (i, (p, g)) in params.iter().zip(grads).enumerate() {
        if p.len() != g.len() {
            return Err(TrainError::Mismatch(format!(
                "tensor {i}: {} gradients for {} values",
                g.len(),
                p.len()
            )));
        }
        if let Some(s) = state.get(i)
            && s.len() != p.len()
        {
            return Err(TrainError::Mismatch(format!(
                "tensor {i}: optimiser state of {} for {} values",
                s.len(),
                p.len()
            )));
        }
    }
    if !state.is_empty() && state.len() != params.len() {
        return Err(TrainError::Mismatch(format!(
            "optimiser state of {} tensors for {}",
            state.len(),
            params.len()
        )));
    }
    Ok(())
}

/// SGD with optional momentum (`torch.optim.SGD`, dampening 0): `g ← ∇ + wd·θ`,
/// `b ← μ·b + g` (`b = g` at the first step), `θ ← θ − lr·(g + μ·b)` with Nesterov, else
/// `θ ← θ − lr·b`.
#[derive(Debug, Clone, Default)]
pub struct Sgd {
    pub momentum: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
    velocity: Vec<Vec<f32>>,
}

impl Sgd {
    pub fn new(momentum: f32, weight_decay: f32, nesterov: bool) -> Self {
        Self {
            momentum,
            weight_decay,
            nesterov,
            velocity: Vec::new(),
        }
    }
}

impl Optimizer for Sgd {
    fn step(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[&[f32]],
        lr: f32,
    ) -> Result<(), TrainError> {
        check(params, grads, &self.velocity)?;
        let first = self.velocity.is_empty();
        if first && self.momentum != 0.0 {
            self.velocity = params.iter().map(|p| vec![0.0; p.len()]).collect();
        }
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            for (j, (p, &g)) in p.iter_mut().zip(g.iter()).enumerate() {
                let mut d = g + self.weight_decay * *p;
                if self.momentum != 0.0 {
                    let b = &mut self.velocity[i][j];
                    *b = if first { d } else { self.momentum * *b + d };
                    d = if self.nesterov {
                        d + self.momentum * *b
                    } else {
                        *b
                    };
                }
                *p -= lr * d;
            }
        }
        Ok(())
    }
}

/// AdamW (Loshchilov & Hutter 2019, `torch.optim.AdamW`): `θ ← θ·(1 − lr·wd)`,
/// `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `θ ← θ − lr·(m/(1−β₁ᵗ)) / (√(v/(1−β₂ᵗ)) + ε)`.
#[derive(Debug, Clone)]
pub struct AdamW {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    t: u64,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl Default for AdamW {
    /// PyTorch's defaults: β = (0.9, 0.999), ε = 1e-8, weight decay 0.01.
    fn default() -> Self {
        Self::new(0.9, 0.999, 1e-8, 0.01)
    }
}

impl AdamW {
    pub fn new(beta1: f32, beta2: f32, eps: f32, weight_decay: f32) -> Self {
        Self {
            beta1,
            beta2,
            eps,
            weight_decay,
            t: 0,
            m: Vec::new(),
            v: Vec::new(),
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.t
    }
}

impl Optimizer for AdamW {
    fn step(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[&[f32]],
        lr: f32,
    ) -> Result<(), TrainError> {
        check(params, grads, &self.m)?;
        if self.m.is_empty() {
            self.m = params.iter().map(|p| vec![0.0; p.len()]).collect();
            self.v = self.m.clone();
        }
        self.t += 1;
        let t = i32::try_from(self.t).unwrap_or(i32::MAX);
        let bc1 = 1.0 - f64::from(self.beta1).powi(t);
        let bc2 = 1.0 - f64::from(self.beta2).powi(t);
        let step = (f64::from(lr) / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let (b1, b2) = (self.beta1, self.beta2);
        for ((p, g), (m, v)) in params
            .iter_mut()
            .zip(grads)
            .zip(self.m.iter_mut().zip(self.v.iter_mut()))
        {
            for (((p, &g), m), v) in p
                .iter_mut()
                .zip(g.iter())
                .zip(m.iter_mut())
                .zip(v.iter_mut())
            {
                *p *= 1.0 - lr * self.weight_decay;
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *p -= step * *m / (v.sqrt() / bc2_sqrt + self.eps);
            }
        }
        Ok(())
    }
}

/// A learning-rate schedule: the multiplier of the base rate at each step (0-based).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    Constant,
    /// Linear warm-up from 0 over `warmup` steps, then constant.
    ConstantWithWarmup {
        warmup: u64,
    },
    /// Linear warm-up, then linear decay to 0 at `total` (`get_linear_schedule_with_warmup`).
    Linear {
        warmup: u64,
        total: u64,
    },
    /// Linear warm-up, then a half cosine from 1 down to `min_ratio` at `total`
    /// (`get_cosine_schedule_with_warmup` when `min_ratio` is 0).
    Cosine {
        warmup: u64,
        total: u64,
        min_ratio: f32,
    },
}

impl Schedule {
    /// The multiplier at `step`.
    pub fn factor(&self, step: u64) -> f32 {
        let warm = |w: u64| (step < w).then(|| step as f32 / w as f32);
        match *self {
            Schedule::Constant => 1.0,
            Schedule::ConstantWithWarmup { warmup } => warm(warmup).unwrap_or(1.0),
            Schedule::Linear { warmup, total } => warm(warmup).unwrap_or_else(|| {
                (total.saturating_sub(step) as f32 / total.saturating_sub(warmup).max(1) as f32)
                    .max(0.0)
            }),
            Schedule::Cosine {
                warmup,
                total,
                min_ratio,
            } => warm(warmup).unwrap_or_else(|| {
                let progress =
                    ((step - warmup) as f64 / total.saturating_sub(warmup).max(1) as f64).min(1.0);
                let c = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                (f64::from(min_ratio) + (1.0 - f64::from(min_ratio)) * c) as f32
            }),
        }
    }

    /// `base_lr` times [`Self::factor`].
    pub fn lr(&self, base_lr: f32, step: u64) -> f32 {
        base_lr * self.factor(step)
    }
}

/// Scales `grads` so that their global L2 norm is at most `max_norm`
/// (`clip_grad_norm_`: by `max_norm / (norm + 1e-6)` when that is below 1). Returns the norm
/// before clipping.
pub fn clip_grad_norm(grads: &mut Grads, max_norm: f64) -> f64 {
    let norm = grads.norm();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        grads.scale(coef as f32);
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(opt: &mut dyn Optimizer, p: &mut [f32], g: &[f32], lr: f32) {
        opt.step(&mut [p], &[g], lr).unwrap();
    }

    #[test]
    fn sgd_follows_pytorch() {
        let mut p = vec![1.0f32, -2.0];
        run(&mut Sgd::default(), &mut p, &[0.5, 1.0], 0.1);
        assert_eq!(p, vec![0.95, -2.1]);

        // Momentum 0.9, weight decay 0.1: by hand, two steps of the PyTorch rule.
        let mut opt = Sgd::new(0.9, 0.1, false);
        let mut p = vec![1.0f32];
        run(&mut opt, &mut p, &[0.5], 0.1); // d = 0.6, b = 0.6, p = 0.94
        assert!((p[0] - 0.94).abs() < 1e-6);
        run(&mut opt, &mut p, &[0.5], 0.1); // d = 0.594, b = 0.54 + 0.594 = 1.134, p = 0.8266
        assert!((p[0] - 0.8266).abs() < 1e-6, "{}", p[0]);

        let mut opt = Sgd::new(0.9, 0.0, true);
        let mut p = vec![0.0f32];
        run(&mut opt, &mut p, &[1.0], 1.0); // b = 1, d = 1 + 0.9
        assert!((p[0] + 1.9).abs() < 1e-6);
    }

    #[test]
    fn adamw_follows_pytorch() {
        // The first step moves every parameter by lr (sign of the gradient) after decay.
        let mut opt = AdamW::new(0.9, 0.999, 1e-8, 0.1);
        let mut p = vec![1.0f32, 1.0];
        run(&mut opt, &mut p, &[0.3, -2.0], 0.01);
        assert!((p[0] - (1.0 * (1.0 - 0.001) - 0.01)).abs() < 1e-6);
        assert!((p[1] - (1.0 * (1.0 - 0.001) + 0.01)).abs() < 1e-6);
        // Second step with gradient 0.1 on the first: m = 0.9·0.03 + 0.01 = 0.037,
        // v = 0.999·0.00009 + 0.001·0.01 = 0.00009991; m̂ = 0.037/0.19, v̂ = v/0.001999.
        let before = p[0];
        run(&mut opt, &mut p, &[0.1, 0.0], 0.01);
        let (mh, vh) = (0.037f64 / 0.19, 0.000_099_91f64 / 0.001_999);
        let want = f64::from(before) * (1.0 - 0.001) - 0.01 * mh / (vh.sqrt() + 1e-8);
        assert!((f64::from(p[0]) - want).abs() < 1e-6, "{} vs {want}", p[0]);
        assert_eq!(opt.steps(), 2);
        // Mismatched tensors are refused.
        assert!(
            opt.step(&mut [&mut [0.0f32; 3][..]], &[&[0.0; 3]], 0.1)
                .is_err()
        );
    }

    #[test]
    fn adamw_minimises_a_quadratic() {
        let target = [3.0f32, -1.0, 0.5];
        let mut p = vec![0.0f32; 3];
        let mut opt = AdamW::new(0.9, 0.999, 1e-8, 0.0);
        for _ in 0..2000 {
            let g: Vec<f32> = p.iter().zip(&target).map(|(a, b)| 2.0 * (a - b)).collect();
            run(&mut opt, &mut p, &g, 0.01);
        }
        for (a, b) in p.iter().zip(&target) {
            assert!((a - b).abs() < 1e-2, "{a} vs {b}");
        }
    }

    #[test]
    fn schedules_warm_up_and_decay() {
        let lin = Schedule::Linear {
            warmup: 10,
            total: 110,
        };
        assert_eq!(lin.factor(0), 0.0);
        assert_eq!(lin.factor(5), 0.5);
        assert_eq!(lin.factor(10), 1.0);
        assert_eq!(lin.factor(60), 0.5);
        assert_eq!(lin.factor(110), 0.0);
        assert_eq!(lin.factor(500), 0.0);
        let cos = Schedule::Cosine {
            warmup: 0,
            total: 100,
            min_ratio: 0.1,
        };
        assert_eq!(cos.factor(0), 1.0);
        assert!((cos.factor(50) - 0.55).abs() < 1e-6);
        assert!((cos.factor(100) - 0.1).abs() < 1e-6);
        assert!((cos.factor(1000) - 0.1).abs() < 1e-6);
        assert_eq!(Schedule::ConstantWithWarmup { warmup: 4 }.lr(2.0, 1), 0.5);
        assert_eq!(Schedule::Constant.lr(2.0, 99), 2.0);
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let mut g = Grads {
            lora: Vec::new(),
            base: None,
        };
        assert_eq!(clip_grad_norm(&mut g, 1.0), 0.0);
        let cfg = crate::llama::testutil::tiny_cfg();
        let lora = crate::lora::LoraAdapter::new(
            crate::lora::LoraConfig::new(1, &[crate::llama::Proj::Q]),
            &cfg,
        )
        .unwrap();
        let mut g = Grads::zeros(Some(&lora), None);
        g.lora[0].a[0] = 3.0;
        g.lora[1].b[0] = 4.0;
        assert!((clip_grad_norm(&mut g, 1.0) - 5.0).abs() < 1e-9);
        assert!((g.norm() - 1.0).abs() < 1e-5);
        assert!((g.lora[0].a[0] - 0.6).abs() < 1e-5);
        // Below the bound nothing changes.
        let before = g.clone();
        clip_grad_norm(&mut g, 2.0);
        assert_eq!(g, before);
    }
}
