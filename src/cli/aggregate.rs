//! `fedtune aggregate`: one round of any strategy offline, through the server's code, so a
//! Flower user can check a rule against `flwr`, chain rounds from files, or merge LoRA
//! adapters trained on different sites (PEFT directories or GGUF LoRA files).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use fedtune::base_model::BaseModel;
use fedtune::offline::{UpdateForm, aggregate_round};
use fedtune_client::trainer::{adapter_bundle, adapter_from_bundle};
use fedtune_llm::lora::{self, LoraAdapter};
use fedtune_proto::Bundle;
use fedtune_server::store::{read_checkpoint, write_checkpoint};

#[derive(Debug, clap::Args)]
pub struct AggregateArgs {
    #[command(flatten)]
    strategy: super::strategy_args::StrategyArgs,
    /// The current global model: a safetensors file of named tensors, or a LoRA adapter (a
    /// PEFT directory or a GGUF LoRA file; then every update is an adapter too).
    #[arg(long, value_name = "FILE")]
    current: PathBuf,
    /// One device's update and its example count (repeat per device).
    #[arg(long = "update", value_name = "FILE:NUM_EXAMPLES", required = true)]
    updates: Vec<String>,
    /// The update files hold differences from the current model, not parameters.
    #[arg(long)]
    deltas: bool,
    /// Strategy state (server-optimiser moments): read if the file exists, rewritten after,
    /// so rounds can be chained.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Where to write the next model: safetensors, or for adapters a PEFT directory (or a
    /// GGUF LoRA file when it ends in .gguf).
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
    /// With adapters: their base model (`embedded`, `smollm2`, `gemma3` or a GGUF file) [default: the
    /// one recorded in the current adapter].
    #[arg(short = 'm', long)]
    model: Option<BaseModel>,
}

/// Adapters are read into named tensors (`X.lora_a`, `X.lora_b`) and written back.
struct AdapterIo {
    base: BaseModel,
    cfg: fedtune_llm::llama::LlamaConfig,
    like: LoraAdapter,
}

pub fn run(a: AggregateArgs) -> anyhow::Result<()> {
    let mut strategy = a.strategy.build()?;
    let io = adapter_io(&a)?;
    let current = match &io {
        Some(io) => adapter_bundle(&io.like),
        None => read(&a.current, "current model")?,
    };
    if let Some(path) = a.state.as_deref().filter(|p| p.exists()) {
        strategy
            .restore(read(path, "strategy state")?)
            .with_context(|| format!("restoring the strategy state from {}", path.display()))?;
    }
    let updates = a
        .updates
        .iter()
        .map(|u| {
            let (path, n) = split_update(u)?;
            let bundle = match &io {
                Some(io) => {
                    let adapter = lora::load(&path, &io.cfg)
                        .with_context(|| format!("reading the adapter {}", path.display()))?;
                    adapter_bundle(&adapter)
                }
                None => read(&path, "update")?,
            };
            Ok((bundle, n))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let form = if a.deltas {
        UpdateForm::Deltas
    } else {
        UpdateForm::Parameters
    };
    let next = aggregate_round(strategy.as_mut(), &current, &updates, form)?;
    let state = strategy.state();
    match &io {
        Some(io) => {
            let merged = adapter_from_bundle(&next, &io.like)?;
            let gguf = a.out.extension().is_some_and(|e| e == "gguf");
            super::lora_args::save_adapter_as(&merged, &io.cfg, &a.out, &io.base, gguf)?;
        }
        None => {
            write_checkpoint(&a.out, &next, None, 0, false)
                .with_context(|| format!("writing {}", a.out.display()))?;
        }
    }
    if let (Some(path), Some(state)) = (&a.state, &state) {
        write_checkpoint(path, state, None, 0, false)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!(
        "{}: {} updates aggregated; wrote {}{}",
        strategy.describe(),
        updates.len(),
        a.out.display(),
        match (&a.state, &state) {
            (Some(p), Some(_)) => format!(" and the state to {}", p.display()),
            _ => String::new(),
        }
    );
    Ok(())
}

/// For adapters (the current model a directory or a .gguf file): the base model and the
/// current adapter; `None` for safetensors of named tensors.
fn adapter_io(a: &AggregateArgs) -> anyhow::Result<Option<AdapterIo>> {
    let is_adapter = |p: &Path| p.is_dir() || p.extension().is_some_and(|e| e == "gguf");
    if !is_adapter(&a.current) {
        return Ok(None);
    }
    let base = super::export::base_model(a.model.as_ref(), &a.current)?;
    let model = base.open()?;
    let like = lora::load(&a.current, &model.cfg)
        .with_context(|| format!("reading the adapter {}", a.current.display()))?;
    Ok(Some(AdapterIo {
        base,
        cfg: model.cfg.clone(),
        like,
    }))
}

/// `FILE:NUM_EXAMPLES`, split at the last colon (so paths may hold colons).
fn split_update(arg: &str) -> anyhow::Result<(PathBuf, u64)> {
    let Some((path, n)) = arg.rsplit_once(':') else {
        bail!("--update `{arg}`: expected FILE:NUM_EXAMPLES");
    };
    let n: u64 = n
        .parse()
        .with_context(|| format!("--update `{arg}`: `{n}` is not an example count"))?;
    Ok((PathBuf::from(path), n))
}

fn read(path: &Path, what: &str) -> anyhow::Result<Bundle> {
    Ok(read_checkpoint(path, None)
        .with_context(|| format!("reading the {what} {}", path.display()))?
        .0)
}
