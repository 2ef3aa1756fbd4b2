//! The library API for a custom simulation: configure the main job in code, reshape the
//! clients it prepared, run it, and read the report.
//!
//! ```sh
//! cargo run --release --example simulation
//! ```
//! Here: the 30 largest roles only, FedProx, two device tiers, a short run.

use fedtune::job::{self, JobConfig, Partition, Task};

fn main() -> anyhow::Result<()> {
    let cfg = JobConfig {
        task: Task::Keyboard,
        partition: Partition::Natural,
        rounds: 5,
        clients_per_round: 6,
        local_steps: 4,
        prox_mu: 0.01,
        tiers: "0.5:0.5,1:0.5".into(),
        eval_clients: 8,
        personalize_steps: 3,
        seed: 42,
        ..JobConfig::default()
    };
    // `prepare` loads the base model and data and builds the clients; anything in it can be
    // changed before the run (here: keep the 30 clients with the most training examples).
    let mut p = job::prepare(&cfg)?;
    let mut order: Vec<usize> = (0..p.clients.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(p.examples[i].len()));
    order.truncate(30);
    order.sort_unstable();
    p.clients = order.iter().map(|&i| p.clients[i].clone()).collect();
    p.examples = order.iter().map(|&i| p.examples[i].clone()).collect();

    let out = std::env::temp_dir().join(format!("fedtune-example-{}", std::process::id()));
    let report = job::run::run(&p, &out)?;
    print!("{}", job::report::table(&report));
    for r in &report.rounds {
        if let Some(s) = &r.seen {
            println!(
                "round {:>2}: perplexity {:.2}, top-3 {:.4}",
                r.round, s.perplexity, s.top3
            );
        }
    }
    println!("files in {}", out.display());
    Ok(())
}
