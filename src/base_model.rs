//! The base models a command can name with `--model`: the embedded tiny Shakespeare llama
//! (the default), SmolLM2-135M from the model cache (`smollm2`), or any llama GGUF file.

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
    /// A GGUF file.
    File(PathBuf),
}

impl std::str::FromStr for BaseModel {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim() {
            "" | EMBEDDED_NAME => BaseModel::Embedded,
            "smollm2" => BaseModel::SmolLm2,
            p => BaseModel::File(PathBuf::from(p)),
        })
    }
}

impl std::fmt::Display for BaseModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BaseModel::Embedded => f.write_str(EMBEDDED_NAME),
            BaseModel::SmolLm2 => f.write_str("smollm2"),
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
    let cache = std::env::var_os("FEDTUNE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/fedtune")))
        .unwrap_or_else(|| PathBuf::from(".cache/fedtune"));
    cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

impl BaseModel {
    /// The GGUF file behind this model (`None` for the embedded one).
    pub fn path(&self) -> Option<PathBuf> {
        match self {
            BaseModel::Embedded => None,
            BaseModel::SmolLm2 => Some(smollm2_path()),
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
                if *self == BaseModel::SmolLm2 && !p.exists() {
                    return Err(BaseModelError::SmolLm2Missing(p));
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
