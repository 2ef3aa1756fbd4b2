//! Full-parameter training of a small llama from scratch (`fedtune pretrain`): initial
//! weights, and the trained weights written as a GGUF model file with its tokenizer.
//!
//! The training itself is [`super::fit_full`], the same backward pass and optimisers LoRA
//! training uses, with every base weight's gradient.

use super::Params;
use crate::gguf::{GgufWriter, Value};
use crate::llama::random::{RandomShape, SplitMix64};
use crate::llama::{LlamaConfig, LlamaError, Proj};
use crate::quant::{self, GgmlType};
use crate::tokenizer::VocabSpec;

/// Standard deviation of the initial matrices (GPT-2's and Hugging Face llama's 0.02).
const INIT_STD: f32 = 0.02;

/// Initial weights for a model of `shape`: matrices uniform with standard deviation 0.02 (the
/// projections that write into the residual stream, `attn_output` and `ffn_down`, scaled by
/// 1/√(2·layers) as GPT-2 does), norms 1. Seeded.
pub fn init_params(shape: &RandomShape, seed: u64) -> Params {
    let cfg = shape.config();
    let mut rng = SplitMix64::new(seed);
    // Uniform on [-a, a] has standard deviation a/√3.
    let bound = INIT_STD * 3f32.sqrt();
    let residual = bound / (2.0 * cfg.n_layers as f32).sqrt();
    let mut p = Params::zeros(&cfg, shape.tied);
    p.embed = rng.uniform(p.embed.len(), bound);
    for l in &mut p.layers {
        l.attn_norm.fill(1.0);
        l.ffn_norm.fill(1.0);
        for proj in Proj::ALL {
            let m = l.mat_mut(proj);
            let scale = match proj {
                Proj::O | Proj::Down => residual,
                _ => bound,
            };
            *m = rng.uniform(m.len(), scale);
        }
    }
    p.output_norm.fill(1.0);
    if let Some(o) = &mut p.output {
        *o = rng.uniform(o.len(), bound);
    }
    p
}

/// A GGUF model file of `params` (a model of `cfg`) with the vocabulary `vocab`: matrices
/// stored as `ty` (those whose rows are not whole blocks of `ty` stay f32), norms as f32.
pub fn to_gguf(
    cfg: &LlamaConfig,
    params: &Params,
    vocab: &VocabSpec,
    ty: GgmlType,
    name: &str,
) -> Result<GgufWriter, LlamaError> {
    let mut w = GgufWriter::new();
    w.add_kv("general.name", Value::String(name.to_string()));
    if let Some(ft) = crate::llama::file_type(ty) {
        w.add_kv("general.file_type", Value::U32(ft));
    }
    cfg.write_metadata(&mut w);
    vocab.write_metadata(&mut w);
    for (tensor, values) in params.tensors() {
        let rows = matrix_rows(cfg, &tensor);
        let (dims, stored) = match rows {
            Some(rows) => {
                let cols = values.len() / rows;
                let stored = if cols % ty.block_len() == 0 {
                    ty
                } else {
                    GgmlType::F32
                };
                (vec![cols as u64, rows as u64], stored)
            }
            None => (vec![values.len() as u64], GgmlType::F32),
        };
        w.add_tensor(tensor, &dims, stored, quant::quantize(stored, values)?)?;
    }
    Ok(w)
}

/// The number of rows of a matrix tensor of a model of `cfg`; `None` for vectors (norms).
fn matrix_rows(cfg: &LlamaConfig, name: &str) -> Option<usize> {
    if name.ends_with("norm.weight") {
        return None;
    }
    if name == "token_embd.weight" || name == "output.weight" {
        return Some(cfg.n_vocab);
    }
    Proj::ALL
        .into_iter()
        .find(|p| name.ends_with(&format!(".{}.weight", p.gguf_name())))
        .map(|p| cfg.proj_shape(p).0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backprop::{FitConfig, Schedule, evaluate, fit_full};
    use crate::gguf::GgufFile;
    use crate::llama::LlamaModel;

    fn shape() -> RandomShape {
        RandomShape {
            dim: 32,
            heads: 4,
            kv_heads: 2,
            ffn: 64,
            layers: 2,
            vocab: 300,
            tied: true,
            gemma3: None,
        }
    }

    #[test]
    fn pretraining_learns_and_the_written_model_predicts_what_training_saw() {
        let text = "the cat sat on the mat. the dog sat on the log. ".repeat(8);
        let vocab = crate::tokenizer::train_bpe([text.as_str()].iter(), 300).unwrap();
        let tk = crate::tokenizer::Tokenizer::from_spec(&vocab).unwrap();
        let ids = tk.encode(&text, true, false).unwrap();
        let examples = crate::backprop::windows(&[ids], 32);
        let shape = shape();
        let cfg = LlamaConfig {
            context_len: 64,
            ..shape.config()
        };
        let mut params = init_params(&shape, 7);
        let before = evaluate(&params.view(&cfg), None, &examples, 4).unwrap().0;
        let fit_cfg = FitConfig {
            steps: 60,
            batch_size: 4,
            lr: 1e-2,
            schedule: Schedule::Constant,
            ..FitConfig::default()
        };
        fit_full(&cfg, &mut params, &examples, &fit_cfg, |_| {}).unwrap();
        let after = evaluate(&params.view(&cfg), None, &examples, 4).unwrap().0;
        assert!(after < before * 0.5, "loss {before} -> {after}");

        // Written as F32, the file gives the trained model's loss exactly; as Q8_0, nearly.
        let dir = tempfile::tempdir().unwrap();
        for (ty, tol) in [(GgmlType::F32, 1e-5), (GgmlType::Q8_0, 0.05)] {
            let path = dir.path().join(format!("m-{ty}.gguf"));
            to_gguf(&cfg, &params, &vocab, ty, "test")
                .unwrap()
                .write_file(&path)
                .unwrap();
            let model = LlamaModel::open(&path).unwrap();
            assert_eq!(model.cfg.n_vocab, 300);
            let base = crate::backprop::BaseView::of_model(&model);
            let loaded = evaluate(&base, None, &examples, 4).unwrap().0;
            assert!(
                (loaded - after).abs() <= tol * after.max(1.0),
                "{ty}: {loaded} vs {after}"
            );
            let file = GgufFile::open(&path).unwrap();
            let tk2 = crate::tokenizer::Tokenizer::from_gguf(&file).unwrap();
            assert_eq!(
                tk2.encode(&text, true, false).unwrap()[..20],
                examples[0].tokens[..20]
            );
        }
    }

    #[test]
    fn initial_weights_are_seeded_and_scaled() {
        let a = init_params(&shape(), 1);
        assert_eq!(a, init_params(&shape(), 1));
        assert_ne!(a, init_params(&shape(), 2));
        let std = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
        assert!(
            (std(&a.embed) - INIT_STD).abs() < 0.002,
            "{}",
            std(&a.embed)
        );
        assert!(std(a.layers[0].mat(Proj::Down)) < INIT_STD * 0.6);
        assert!(a.layers[1].attn_norm.iter().all(|&v| v == 1.0));
    }
}
