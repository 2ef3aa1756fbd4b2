//! `fedtune aggregate`: one round of any strategy offline, through the server's code, so a
//! Flower user can check a rule against `flwr` and chain rounds from files.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use fedtune::offline::{UpdateForm, aggregate_round};
use fedtune_proto::Bundle;
use fedtune_server::store::{read_checkpoint, write_checkpoint};

#[derive(Debug, clap::Args)]
pub struct AggregateArgs {
    #[command(flatten)]
    strategy: super::strategy_args::StrategyArgs,
    /// The current global model (safetensors).
    #[arg(long, value_name = "FILE")]
    current: PathBuf,
    /// One device's update (safetensors) and its example count (repeat per device).
    #[arg(long = "update", value_name = "FILE:NUM_EXAMPLES", required = true)]
    updates: Vec<String>,
    /// The update files hold differences from the current model, not parameters.
    #[arg(long)]
    deltas: bool,
    /// Strategy state (server-optimiser moments): read if the file exists, rewritten after,
    /// so rounds can be chained.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Where to write the next model (safetensors).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

pub fn run(a: AggregateArgs) -> anyhow::Result<()> {
    let mut strategy = a.strategy.build()?;
    let current = read(&a.current, "current model")?;
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
            Ok((read(&path, "update")?, n))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let form = if a.deltas {
        UpdateForm::Deltas
    } else {
        UpdateForm::Parameters
    };
    let next = aggregate_round(strategy.as_mut(), &current, &updates, form)?;
    let state = strategy.state();
    write_checkpoint(&a.out, &next, None, 0, false)
        .with_context(|| format!("writing {}", a.out.display()))?;
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
