//! The main job deployed: a `fedtune server` process and one `fedtune client` process per
//! device on loopback, each device holding only its own role's lines, end with the global
//! adapter the simulation of the same config and seed ends with, bit for bit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fedtune::job::{self, JobConfig};

const BIN: &str = env!("CARGO_BIN_EXE_fedtune");

/// Four of Hamlet's roles, all their lines, in play order.
fn write_roles(path: &Path) {
    let text = String::from_utf8(fedtune::shakespeare::jsonl().unwrap()).unwrap();
    let roles = [
        "\"HORATIO\"",
        "\"MARCELLUS\"",
        "\"BERNARDO\"",
        "\"OPHELIA\"",
    ];
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"play\": \"hamlet\"") && roles.iter().any(|r| l.contains(r)))
        .collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

fn wait(child: &mut Child, deadline: Instant, what: &str) {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{what} exited with {status}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Long because it is one scenario end to end: a simulation, then a server process and four
/// device processes on the same job file, then the two adapters compared byte for byte.
#[test]
fn server_and_client_processes_end_with_the_simulations_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("roles.jsonl");
    write_roles(&data);
    let cfg = JobConfig {
        data: data.to_string_lossy().into_owned(),
        client_field: "speaker".into(),
        min_examples: 8,
        unseen_fraction: 0.0,
        rounds: 2,
        clients_per_round: 3,
        local_steps: 3,
        batch_size: 2,
        eval_clients: 1,
        personalize_steps: 0,
        centralized: false,
        threads: 1,
        tiers: "0.5:1,1:1".into(),
        seed: 11,
        ..JobConfig::default()
    };

    // The simulation.
    let prepared = job::prepare(&cfg).unwrap();
    let n = prepared.clients.len();
    assert_eq!(n, 4, "every role has enough lines");
    let sim_dir = dir.path().join("sim");
    job::run::run(&prepared, &sim_dir).unwrap();

    // The deployment: the same config as a file, each device with its own role's lines.
    let job_file = dir.path().join("job.toml");
    std::fs::write(&job_file, cfg.to_toml()).unwrap();
    let state = dir.path().join("server-state");
    let mut server = Command::new(BIN)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--log",
            "warn",
            "--linger",
            "5s",
        ])
        .arg("--job")
        .arg(&job_file)
        .args(["--min-clients", &n.to_string()])
        .arg("--state")
        .arg(&state)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(server.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .trim()
        .strip_prefix("listening on ")
        .expect(&first)
        .to_string();
    let mut devices: Vec<Child> = prepared
        .clients
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let own = dir.path().join(format!("device-{i}.jsonl"));
            let lines: Vec<String> = c
                .train
                .iter()
                .chain(&c.test)
                .map(|r| serde_json::json!({"speaker": r.client, "text": r.text}).to_string())
                .collect();
            std::fs::write(&own, lines.join("\n")).unwrap();
            Command::new(BIN)
                .args([
                    "client",
                    "--server",
                    &format!("http://{addr}"),
                    "--log",
                    "warn",
                ])
                .arg("--job")
                .arg(&job_file)
                .arg("--data")
                .arg(&own)
                .args(["--index", &i.to_string(), "--clients", &n.to_string()])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(240);
    for (i, d) in devices.iter_mut().enumerate() {
        wait(d, deadline, &format!("device {i}"));
    }
    wait(&mut server, deadline, "server");

    let checkpoint = |state: &Path| {
        fedtune_server::store::read_checkpoint(
            &state.join("checkpoints").join("round-000002.safetensors"),
            None,
        )
        .unwrap()
        .0
    };
    let simulated = checkpoint(&sim_dir.join("state"));
    let deployed = checkpoint(&state);
    let initial = fedtune_client::trainer::adapter_bundle(&prepared.template);
    assert_ne!(simulated, initial, "the adapter trained");
    assert_eq!(
        deployed, simulated,
        "deployment and simulation must agree bit for bit"
    );

    // A device whose file holds several clients' records is refused, naming the field.
    let out = Command::new(BIN)
        .args(["client", "--server", "http://127.0.0.1:9", "--log", "warn"])
        .arg("--job")
        .arg(&job_file)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("4 clients' records (by `speaker`)"), "{err}");
}
