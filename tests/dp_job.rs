//! A differentially private run of the main job, end to end through its files: every round
//! records ε and the clip norm, devices' training metrics stay on the devices, the summary
//! reports the final (ε, δ), and `dp_max_epsilon` stops the run cleanly at its budget.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use fedtune::job::{self, JobConfig};

#[test]
fn a_private_run_reports_epsilon_every_round_and_stops_at_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = JobConfig {
        rounds: 6,
        clients_per_round: 4,
        local_steps: 2,
        batch_size: 4,
        eval_clients: 4,
        eval_every: 6,
        personalize_steps: 0,
        centralized: false,
        threads: 2,
        dp_noise_multiplier: 3.0,
        dp_clip: 0.05,
        dp_adaptive_clip: true,
        dp_clip_count_stddev: 2.0,
        // Charged with z' = ((3⁻² + 4⁻²)^(−½))/2 = 1.2 at q = 4/378, δ = 378^(−1.1):
        // `fedtune privacy epsilon --sampling fixed` gives ε = 0.2653 after 3 rounds and
        // 0.2703 after 4.
        dp_max_epsilon: 0.268,
        ..JobConfig::default()
    };
    let out = dir.path().join("run");
    let report = job::run::run(&job::prepare(&cfg).unwrap(), &out).unwrap();
    let privacy = report
        .privacy
        .clone()
        .expect("a private run reports its privacy");
    let rounds: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let committed = rounds.len() as u64 - 1;
    assert_eq!(committed, 3, "the budget allows 3 of the 6 rounds");
    assert_eq!(privacy.rounds, committed);
    assert!(
        privacy.epsilon > 0.0 && privacy.epsilon <= 0.268,
        "{privacy:?}"
    );
    assert!(
        (privacy.delta - 1.0 / 378f64.powf(1.1)).abs() < 1e-12,
        "{privacy:?}"
    );
    assert!(privacy.seeded_noise);
    let mut last = 0.0;
    for r in &rounds[1..] {
        let eps = r["dp_epsilon"].as_f64().unwrap();
        assert!(eps > last, "ε must grow round by round: {rounds:?}");
        last = eps;
        assert!(r["dp_clip"].as_f64().unwrap() > 0.0);
        // Devices keep their training metrics under differential privacy.
        assert!(r["train_loss"].is_null(), "{r}");
    }
    assert_eq!(last, privacy.epsilon);
    // The final round is measured, whichever it was.
    assert!(
        rounds.last().unwrap()["seen"]["perplexity"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        summary["privacy"]["epsilon"].as_f64().unwrap(),
        privacy.epsilon
    );
    assert!(job::report::table(&report).contains("differential privacy: (ε = "));
}
