//! `--buffer-size` and `--max-staleness` (buffered asynchronous aggregation, FedBuff), shared
//! by `server` and `simulate`.

use std::time::Duration;

use clap::Args;
use fedtune::job::JobConfig;
use fedtune_server::BufferedSettings;

#[derive(Debug, Args)]
pub struct BufferArgs {
    /// Buffered asynchronous aggregation (FedBuff): devices train whenever they check in, on
    /// the newest model, and every N updates (each weighted by 1/√(1+staleness)) make the next
    /// model version; rounds then count versions [default: synchronous rounds].
    #[arg(long, value_name = "N")]
    pub buffer_size: Option<usize>,
    /// Buffered aggregation: refuse updates trained on a model more than S versions old
    /// [default: 10].
    #[arg(long, value_name = "S", requires = "buffer_size")]
    pub max_staleness: Option<u64>,
}

impl BufferArgs {
    /// The flags laid over a job's settings.
    pub fn lay_over(&self, cfg: &mut JobConfig) {
        if let Some(n) = self.buffer_size {
            cfg.buffer_size = n;
        }
        if let Some(s) = self.max_staleness {
            cfg.max_staleness = s;
        }
    }

    /// The flags as a server's settings: `concurrency` devices train at once, each task
    /// lasting at most `task_timeout`.
    pub fn settings(&self, concurrency: usize, task_timeout: Duration) -> Option<BufferedSettings> {
        Some(BufferedSettings {
            buffer_size: self.buffer_size?,
            max_staleness: self.max_staleness.unwrap_or(10),
            concurrency,
            task_timeout,
        })
    }
}
