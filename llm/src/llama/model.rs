//! A loaded llama model: the memory-mapped file, its config and located weights.

use std::path::Path;
use std::sync::Arc;

use super::{KvCache, KvType, LlamaConfig, LlamaError, Proj, ProjectionAdapter, Weights};
use crate::gguf::GgufFile;

/// Cloning is cheap: the file is shared, only norms and tensor locations are copied (for
/// running the same base with different adapters).
#[derive(Debug, Clone)]
pub struct LlamaModel {
    file: Arc<GgufFile>,
    pub cfg: LlamaConfig,
    pub weights: Weights,
    /// An adapter (LoRA) applied next to the base projections (inference only).
    adapter: Option<Arc<dyn ProjectionAdapter>>,
}

impl LlamaModel {
    /// Maps and checks a GGUF file: architecture, hyper-parameters, every tensor's shape.
    pub fn open(path: &Path) -> Result<Self, LlamaError> {
        Self::from_file(Arc::new(GgufFile::open(path)?))
    }

    pub fn from_file(file: Arc<GgufFile>) -> Result<Self, LlamaError> {
        let embed = file
            .tensor("token_embd.weight")
            .ok_or_else(|| LlamaError::MissingTensor("token_embd.weight".into()))?;
        let n_vocab = match embed.dims.as_slice() {
            [_, v] => *v as usize,
            _ => {
                return Err(LlamaError::TensorShape {
                    name: "token_embd.weight".into(),
                    expected: vec![0, 0],
                    found: embed.dims.clone(),
                });
            }
        };
        let cfg = LlamaConfig::from_metadata(file.metadata(), n_vocab)?;
        let weights = Weights::load(&file, &cfg)?;
        Ok(Self {
            file,
            cfg,
            weights,
            adapter: None,
        })
    }

    /// Lays the matrices out for this CPU's fastest kernels where that takes a copy (Q4_0 on
    /// AVX-512 VNNI parts: [`crate::kernels::q4_0x16`]), for inference: the file's pages of
    /// those matrices are released, so memory stays about the file's size. Results are the
    /// scalar reference's, bit for bit. Returns the bytes interleaved (0: nothing to do).
    pub fn interleave_for_cpu(&mut self) -> usize {
        self.weights.interleave(&self.file)
    }

    pub fn file(&self) -> &Arc<GgufFile> {
        &self.file
    }

    /// An empty f32 cache for one sequence; `window` keeps only the last W positions.
    pub fn new_cache(&self, window: Option<usize>) -> KvCache {
        self.new_cache_of(window, KvType::F32)
    }

    /// [`LlamaModel::new_cache`] storing keys and values as `ty`.
    pub fn new_cache_of(&self, window: Option<usize>, ty: KvType) -> KvCache {
        KvCache::new(
            self.cfg.n_layers,
            self.cfg.n_kv_heads,
            self.cfg.head_dim,
            self.cfg.context_len,
            window,
            ty,
        )
    }

    /// Applies `adapter` in every later forward pass (`None` removes it), after checking that
    /// it fits this model's shapes.
    pub fn set_adapter<A: ProjectionAdapter + 'static>(
        &mut self,
        adapter: Option<Arc<A>>,
    ) -> Result<(), LlamaError> {
        if let Some(a) = &adapter {
            a.check_fits(&self.cfg).map_err(LlamaError::Adapter)?;
        }
        self.adapter = adapter.map(|a| a as Arc<dyn ProjectionAdapter>);
        Ok(())
    }

    /// `y += Δ(x)` of the adapter, if any, on projection `p` of block `l`.
    pub(super) fn add_adapter(&self, l: usize, p: Proj, x: &[f32], y: &mut [f32]) {
        if let Some(a) = &self.adapter {
            a.add_delta(l, p, x, y);
        }
    }
}
