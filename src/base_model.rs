//! The base models a command can name with `--model`: the embedded tiny Shakespeare llama
//! (the default), SmolLM2-135M (`smollm2`) or Gemma 3 270M (`gemma3`) from the model cache,
//! or any llama or Gemma 3 GGUF file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fedtune_llm::gguf::GgufFile;
use fedtune_llm::llama::{LlamaError, LlamaModel};

/// The embedded base model: a llama of 5.8M parameters with a 4096-token BPE vocabulary,
/// trained by `fedtune pretrain` on the plays of [`crate::shakespeare::PRETRAIN_PLAYS`]
/// (no simulated client's text), stored Q8_0. `assets/README.md` has the command.
const EMBEDDED_GGUF: &[u8] = include_bytes!("../assets/tiny-shakespeare.gguf");

/// The name [`BaseModel::Embedded`] is recorded under (in adapters and run configs).
pub const EMBEDDED_NAME: &str = "embedded";

/// A base model named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseModel {
    /// `embedded` (or nothing): the tiny Shakespeare model compiled into the binary.
    Embedded,
    /// `smollm2`: SmolLM2-135M-Instruct Q4_1, fetched by `scripts/fetch-model.sh`.
    SmolLm2,
    /// `gemma3`: Gemma 3 270M Q4_K_M, fetched by `scripts/fetch-model.sh gemma3`.
    Gemma3,
    /// A GGUF file.
    File(PathBuf),
}

impl std::str::FromStr for BaseModel {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim() {
            "" | EMBEDDED_NAME => BaseModel::Embedded,
            "smollm2" => BaseModel::SmolLm2,
            "gemma3" => BaseModel::Gemma3,
            p => BaseModel::File(PathBuf::from(p)),
        })
    }
}

impl std::fmt::Display for BaseModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BaseModel::Embedded => f.write_str(EMBEDDED_NAME),
            BaseModel::SmolLm2 => f.write_str("smollm2"),
            BaseModel::Gemma3 => f.write_str("gemma3"),
            BaseModel::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Why a base model could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BaseModelError {
    #[error(
        "SmolLM2 is not in the model cache ({}): run scripts/fetch-model.sh first",
        .0.display()
    )]
    SmolLm2Missing(PathBuf),
    #[error(
        "Gemma 3 is not in the model cache ({}): run scripts/fetch-model.sh gemma3 first",
        .0.display()
    )]
    Gemma3Missing(PathBuf),
    #[error("{}", load_message(name, source))]
    Load { name: String, source: LlamaError },
}

/// `loading NAME: CAUSE`, or the cause alone when it names the model file already.
fn load_message(name: &str, source: &LlamaError) -> String {
    let cause = source.to_string();
    if cause.contains(name) {
        cause
    } else {
        format!("loading {name}: {cause}")
    }
}

/// Where `scripts/fetch-model.sh` puts SmolLM2 (`$FEDTUNE_CACHE`, else `~/.cache/fedtune`).
pub fn smollm2_path() -> PathBuf {
    model_cache().join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Where `scripts/fetch-model.sh gemma3` puts Gemma 3 270M.
pub fn gemma3_path() -> PathBuf {
    model_cache().join("gemma-3-270m-q4_k_m.gguf")
}

fn model_cache() -> PathBuf {
    std::env::var_os("FEDTUNE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/fedtune")))
        .unwrap_or_else(|| PathBuf::from(".cache/fedtune"))
        .join("models")
}

impl BaseModel {
    /// The GGUF file behind this model (`None` for the embedded one).
    pub fn path(&self) -> Option<PathBuf> {
        match self {
            BaseModel::Embedded => None,
            BaseModel::SmolLm2 => Some(smollm2_path()),
            BaseModel::Gemma3 => Some(gemma3_path()),
            BaseModel::File(p) => Some(p.clone()),
        }
    }

    /// The model file, mapped (or, for the embedded model, read from the binary).
    pub fn open_file(&self) -> Result<Arc<GgufFile>, BaseModelError> {
        let load = |source: LlamaError| BaseModelError::Load {
            name: self.to_string(),
            source,
        };
        match self.path() {
            None => GgufFile::from_bytes(EMBEDDED_GGUF.to_vec())
                .map(Arc::new)
                .map_err(|e| load(e.into())),
            Some(p) => {
                match self {
                    BaseModel::SmolLm2 if !p.exists() => {
                        return Err(BaseModelError::SmolLm2Missing(p));
                    }
                    BaseModel::Gemma3 if !p.exists() => {
                        return Err(BaseModelError::Gemma3Missing(p));
                    }
                    _ => {}
                }
                GgufFile::open(&p).map(Arc::new).map_err(|e| load(e.into()))
            }
        }
    }

    pub fn open(&self) -> Result<LlamaModel, BaseModelError> {
        let file = self.open_file()?;
        LlamaModel::from_file(file).map_err(|source| BaseModelError::Load {
            name: self.to_string(),
            source,
        })
    }
}
