//! What the inference commands share: loading a model and its tokenizer, the CPU pool.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use fedtune::base_model::BaseModel;
use fedtune_llm::llama::LlamaModel;
use fedtune_llm::lora;
use fedtune_llm::tokenizer::Tokenizer;

/// How the KV cache stores keys and values (`--cache-type`), as llama.cpp's `-ctk`/`-ctv`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CacheType {
    /// Half precision: llama.cpp's default; half the memory and the bytes read per token.
    F16,
    /// Single precision: the arithmetic of llama.cpp's f32 cache, bit for bit.
    F32,
}

impl From<CacheType> for fedtune_llm::llama::KvType {
    fn from(c: CacheType) -> Self {
        match c {
            CacheType::F16 => Self::F16,
            CacheType::F32 => Self::F32,
        }
    }
}

/// `--model` and `--threads`, as llama.cpp spells them.
#[derive(Debug, clap::Args, Clone)]
pub struct ModelArgs {
    /// Base model: `embedded` (the tiny Shakespeare llama in the binary), `smollm2` or
    /// `gemma3` (fetched by scripts/fetch-model.sh [gemma3]), or a llama or Gemma 3 GGUF file.
    #[arg(short = 'm', long, default_value = "embedded")]
    pub model: BaseModel,
    /// CPU threads [default: all cores].
    #[arg(short = 't', long, value_parser = super::parse_threads)]
    pub threads: Option<usize>,
    /// LoRA adapter to apply: a PEFT directory or a GGUF LoRA file.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
}

impl ModelArgs {
    /// The model, with `--adapter` applied when given.
    pub fn load(&self) -> anyhow::Result<LlamaModel> {
        let mut model = self.model.open()?;
        if let Some(path) = &self.adapter {
            let adapter = lora::load(path, &model.cfg)
                .with_context(|| format!("loading the adapter {}", path.display()))?;
            model.set_adapter(Some(Arc::new(adapter)))?;
        }
        Ok(model)
    }

    /// [`ModelArgs::load`] for inference only: matrices are also laid out for this CPU's
    /// fastest kernels ([`LlamaModel::interleave_for_cpu`]; same results, about the same
    /// memory).
    pub fn load_for_inference(&self) -> anyhow::Result<LlamaModel> {
        let mut model = self.load()?;
        model.interleave_for_cpu();
        Ok(model)
    }

    /// [`ModelArgs::load_for_inference`] and the model's tokenizer.
    pub fn load_with_tokenizer(&self) -> anyhow::Result<(LlamaModel, Tokenizer)> {
        let model = self.load_for_inference()?;
        let tok = self.tokenizer(&model)?;
        Ok((model, tok))
    }

    /// The tokenizer in `model`'s file.
    pub fn tokenizer(&self, model: &LlamaModel) -> anyhow::Result<Tokenizer> {
        Tokenizer::from_gguf(model.file())
            .with_context(|| format!("reading the tokenizer of {}", self.model))
    }

    /// Runs `f` on a rayon pool of `--threads` threads (the kernels split work across it).
    /// `--threads`, or all cores.
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(super::default_threads).max(1)
    }

    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        let threads = self.threads();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        Ok(pool.install(f))
    }
}

/// Parses `1,2,3` (spaces allowed); an empty id (`1,,2`) is refused, not skipped.
pub fn parse_tokens(s: &str) -> anyhow::Result<Vec<u32>> {
    s.split(',')
        .map(str::trim)
        .enumerate()
        .map(|(i, t)| {
            anyhow::ensure!(!t.is_empty(), "--tokens {s:?}: id {} is empty", i + 1);
            t.parse::<u32>()
                .with_context(|| format!("--tokens: `{t}` is not a token id"))
        })
        .collect()
}

/// Writes the longest valid UTF-8 prefix of `pending` and keeps the rest (a character split
/// across tokens is printed once complete).
pub fn flush_utf8(pending: &mut Vec<u8>, out: &mut impl std::io::Write) -> std::io::Result<()> {
    let valid = match std::str::from_utf8(pending) {
        Ok(s) => s.len(),
        Err(e) if e.error_len().is_some() => pending.len(), // invalid, not incomplete: emit
        Err(e) => e.valid_up_to(),
    };
    out.write_all(&pending[..valid])?;
    out.flush()?;
    pending.drain(..valid);
    Ok(())
}
