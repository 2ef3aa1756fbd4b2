//! `fedtune bench ...`.

use anyhow::Context;
use clap::{Args, Subcommand};
use fedtune::bench::{infer, overhead, rss, server_memory};
use fedtune_llm::llama::random::RandomShape;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Framework overhead on a fixed workload comparable with Flower's simulation. The last
    /// line is `fedtune_s=<wall seconds> final_mean=<mean of the final model>`.
    Overhead(OverheadArgs),
    /// Peak RSS of a real `fedtune server` process for several client counts.
    ServerMemory(MemoryArgs),
    /// Inference speed (prompt processing and generation), as llama-bench measures it. The
    /// last line is `pp_tok_s=<prompt tokens/s> tg_tok_s=<generated tokens/s>`.
    Infer(InferArgs),
    /// LoRA training speed and memory. The last line is
    /// `train_tok_s=<trained tokens/s> peak_rss_mb=<peak resident MiB>`.
    Train(TrainArgs),
    /// One round of each aggregation rule on K LoRA updates (SmolLM2's q,k,v,o at rank 8 by
    /// default), side by side: a line per rule,
    /// `strategy=<name> k=<K> values=<per update> seconds=<median> vs_fedavg=<ratio>`.
    Strategies(StrategiesArgs),
    /// Write a random llama model (any shape and format) for benchmarks and tests.
    RandomModel(RandomModelArgs),
    /// Write a random LoRA adapter for a model (B non-zero, so it changes the logits), as a
    /// PEFT directory or, for an `--out` ending in .gguf, a GGUF LoRA file.
    RandomAdapter(RandomAdapterArgs),
}

#[derive(Debug, Args)]
pub struct StrategiesArgs {
    /// Updates per round.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// LoRA rank of the adapter.
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// Rounds timed per rule (the median is reported); rules alternate within each.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Rules to time, comma-separated [default: every rule].
    #[arg(long, value_delimiter = ',')]
    rules: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RandomAdapterArgs {
    /// The base model (`embedded`, `smollm2`, `gemma3` or a GGUF file).
    #[arg(short = 'm', long)]
    model: fedtune::base_model::BaseModel,
    #[command(flatten)]
    lora: super::lora_args::LoraArgs,
    /// B is uniform in ±b_scale (A in ±1/√in).
    #[arg(long, default_value_t = 0.05)]
    b_scale: f32,
    #[arg(long)]
    out: std::path::PathBuf,
}

#[derive(Debug, Args)]
pub struct InferArgs {
    #[command(flatten)]
    model: super::infer::ModelArgs,
    /// Prompt tokens processed in one batch.
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Tokens generated one at a time after the prompt.
    #[arg(long, default_value_t = 64)]
    gen_tokens: usize,
    /// Repetitions (the median is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// How the KV cache stores keys and values (f16: llama.cpp's default).
    #[arg(long, value_enum, default_value = "f16")]
    cache_type: super::infer::CacheType,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    model: super::infer::ModelArgs,
    #[command(flatten)]
    lora: super::lora_args::LoraArgs,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 64)]
    seq: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Timed optimiser steps (after one warm-up step).
    #[arg(long, default_value_t = 5)]
    steps: u64,
    /// Micro-batches per step: activations are kept for batch / grad_accum sequences at a
    /// time (the memory of a device), gradients summed over the whole batch.
    #[arg(long, default_value_t = 2)]
    grad_accum: usize,
    /// Recompute activations in the backward pass (least memory, slower).
    #[arg(long)]
    checkpoint: bool,
}

#[derive(Debug, Args)]
pub struct RandomModelArgs {
    /// Shape: `smollm2` (135M: 30 layers, dim 576, 9/3 heads, FFN 1536, vocab 49152) or
    /// `DIM,HEADS,KV_HEADS,FFN,LAYERS,VOCAB`.
    #[arg(long, default_value = "smollm2")]
    shape: String,
    /// Format of the weight matrices.
    #[arg(long = "type", default_value = "q4_0")]
    ty: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long)]
    out: std::path::PathBuf,
}

#[derive(Debug, Args)]
pub struct OverheadArgs {
    #[arg(long, default_value_t = 100)]
    clients: usize,
    #[arg(long, default_value_t = 3)]
    rounds: u64,
    /// Float32 values in the model.
    #[arg(long, default_value_t = 1_000_000)]
    params: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    engine: super::EngineArgs,
    #[command(flatten)]
    secagg: super::secagg_args::SecAggArgs,
    #[command(flatten)]
    dp: super::dp_args::DpArgs,
}

#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// Client counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    clients: Vec<usize>,
    #[arg(long, default_value_t = 1_000_000)]
    params: usize,
    #[arg(long, default_value_t = 2)]
    rounds: u64,
    /// Clients holding a model at once in this (client) process.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// HTTP/2 connections the clients share (0: 2 × concurrency; use N = clients for one
    /// connection per client).
    #[arg(long, default_value_t = 0)]
    connections: usize,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Infer(a) => infer_cmd(a),
        BenchCommand::RandomModel(a) => random_model_cmd(a),
        BenchCommand::Train(a) => train_cmd(a),
        BenchCommand::RandomAdapter(a) => random_adapter_cmd(a),
        BenchCommand::Overhead(a) => overhead_cmd(a),
        BenchCommand::ServerMemory(a) => server_memory_cmd(a),
        BenchCommand::Strategies(a) => strategies_cmd(a),
    }
}

/// `fedtune bench strategies`.
fn strategies_cmd(a: StrategiesArgs) -> anyhow::Result<()> {
    use fedtune::bench::strategies::{AdapterShape, RULES, round_seconds};
    anyhow::ensure!(
        a.k > 0 && a.rank > 0 && a.reps > 0,
        "--k, --rank and --reps must be positive"
    );
    let rules: Vec<_> = RULES
        .iter()
        .filter(|(name, _)| a.rules.is_empty() || a.rules.iter().any(|r| r == name))
        .collect();
    anyhow::ensure!(
        !rules.is_empty(),
        "no known rule in --rules (known: {:?})",
        RULES.map(|r| r.0)
    );
    let shape = AdapterShape {
        rank: a.rank,
        ..AdapterShape::SMOLLM2
    };
    let global = shape.bundle(0);
    let updates: Vec<_> = (1..=a.k as u64).map(|i| shape.bundle(i)).collect();
    let staging = tempfile::tempdir()?;
    println!(
        "adapter: SmolLM2 q,k,v,o rank {} ({} values), k={}, threads=1",
        a.rank,
        global.numel(),
        a.k
    );
    let mut times = vec![Vec::new(); rules.len()];
    for _ in 0..a.reps {
        for (t, (name, params)) in times.iter_mut().zip(&rules) {
            t.push(round_seconds(
                name,
                params,
                &global,
                &updates,
                staging.path(),
            )?);
        }
    }
    let medians: Vec<f64> = times.into_iter().map(infer::median).collect();
    let fedavg = rules
        .iter()
        .zip(&medians)
        .find(|((name, _), _)| *name == "fedavg")
        .map(|(_, &s)| s);
    for ((name, _), s) in rules.iter().zip(&medians) {
        let ratio = fedavg.map_or(String::from("-"), |f| format!("{:.1}", s / f));
        println!(
            "strategy={name} k={} values={} seconds={s:.4} vs_fedavg={ratio}",
            a.k,
            global.numel()
        );
    }
    Ok(())
}

/// `fedtune bench infer`.
fn infer_cmd(a: InferArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.prompt_tokens > 0 && a.gen_tokens > 0 && a.reps > 0,
        "token counts and --reps must be positive"
    );
    let model = a.model.load_for_inference()?;
    let threads = a.model.threads();
    let kernels = fedtune_llm::kernels::cpu::level().name();
    let kv: fedtune_llm::llama::KvType = a.cache_type.into();
    println!(
        "model={} params_bytes={} threads={threads} kernels={kernels} kv_cache={} prompt_tokens={} gen_tokens={}",
        a.model.model,
        model.file().file_size(),
        kv.name(),
        a.prompt_tokens,
        a.gen_tokens
    );
    let runs = a
        .model
        .run(|| infer::run(&model, kv, a.prompt_tokens, a.gen_tokens, a.reps, 42))??;
    for (i, r) in runs.iter().enumerate() {
        println!(
            "rep={i} pp_tok_s={:.2} tg_tok_s={:.2}",
            r.pp_tok_s, r.tg_tok_s
        );
    }
    if let Some(peak) = rss::peak_rss_mib(None) {
        println!(
            "peak_rss_mib={peak:.1} file_mib={:.1}",
            model.file().file_size() as f64 / (1 << 20) as f64
        );
    }
    let pp = infer::median(runs.iter().map(|r| r.pp_tok_s).collect());
    let tg = infer::median(runs.iter().map(|r| r.tg_tok_s).collect());
    println!("pp_tok_s={pp:.2} tg_tok_s={tg:.2}");
    Ok(())
}

/// `fedtune bench random-model`.
fn random_model_cmd(a: RandomModelArgs) -> anyhow::Result<()> {
    let shape = parse_shape(&a.shape)?;
    let ty = fedtune_llm::quant::GgmlType::from_name(&a.ty)
        .with_context(|| format!("unknown type {}", a.ty))?;
    let (writer, _) = fedtune_llm::llama::random::random_model(&shape, ty, a.seed, 0)?;
    writer.write_file(&a.out)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

/// `fedtune bench train`.
fn train_cmd(a: TrainArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.seq >= 2 && a.batch > 0 && a.steps > 0,
        "--seq must be at least 2, --batch and --steps positive"
    );
    let model = a.model.load()?;
    let threads = a.model.threads();
    println!(
        "model={} threads={threads} seq={} batch={} grad_accum={} steps={} rank={} targets={} checkpoint={}",
        a.model.model,
        a.seq,
        a.batch,
        a.grad_accum,
        a.steps,
        a.lora.rank,
        a.lora.targets,
        a.checkpoint
    );
    let lora = a.lora.config()?;
    let r = a.model.run(|| {
        let shape = fedtune::bench::train::Shape {
            seq: a.seq,
            batch: a.batch,
            grad_accum: a.grad_accum,
            steps: a.steps,
            checkpoint: a.checkpoint,
        };
        fedtune::bench::train::run(&model, lora, &shape)
    })??;
    let peak = rss::peak_rss_mib(None).unwrap_or(f64::NAN);
    println!("mean_loss={:.4}", r.mean_loss);
    println!("train_tok_s={:.2} peak_rss_mb={peak:.1}", r.tok_s);
    Ok(())
}

/// `fedtune bench random-adapter`.
fn random_adapter_cmd(a: RandomAdapterArgs) -> anyhow::Result<()> {
    let model = a.model.open()?;
    let adapter = fedtune_llm::lora::LoraAdapter::random(a.lora.config()?, &model.cfg, a.b_scale)?;
    super::lora_args::save_adapter(&adapter, &model.cfg, &a.out, &a.model)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

/// `fedtune bench overhead`.
fn overhead_cmd(a: OverheadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.clients > 0 && a.rounds > 0 && a.params > 0,
        "--clients, --rounds and --params must be positive"
    );
    let threads = a.engine.threads();
    let o = overhead::Overhead {
        clients: a.clients,
        rounds: a.rounds,
        params: a.params,
        transport: a.engine.transport,
        seed: a.seed,
        threads,
        concurrency: a.engine.concurrency(),
        connections: a.engine.connections,
        secagg: a.secagg.settings(),
        dp: a.dp.apply(None),
    };
    println!(
        "workload: clients={} rounds={} params={} transport={:?} threads={threads} secagg={} dp={}",
        o.clients,
        o.rounds,
        o.params,
        o.transport,
        o.secagg.is_some(),
        match &o.dp {
            Some(d) if d.distributed => "distributed",
            Some(_) => "central",
            None => "off",
        }
    );
    let expected =
        fedtune::models::mean(&fedtune::models::sin_model(o.params)) + 0.001 * o.rounds as f64;
    println!("expected_mean={expected}");
    let r = super::runtime(threads)?.block_on(overhead::run(&o))?;
    println!("fedtune_s={:.6} final_mean={}", r.seconds, r.final_mean);
    Ok(())
}

/// `fedtune bench server-memory`.
fn server_memory_cmd(a: MemoryArgs) -> anyhow::Result<()> {
    let rt = super::runtime(super::default_threads())?;
    let model_mib = a.params as f64 * 4.0 / (1024.0 * 1024.0);
    for &n in &a.clients {
        let peak = rt.block_on(server_memory::measure(
            n,
            a.params,
            a.rounds,
            a.concurrency,
            a.connections,
        ))?;
        println!(
            "clients={n} params={} server_peak_rss_mib={peak:.1} bound_mib={:.1}",
            a.params,
            3.0 * model_mib + 64.0
        );
    }
    Ok(())
}

fn parse_shape(s: &str) -> anyhow::Result<RandomShape> {
    if s == "smollm2" {
        return Ok(RandomShape::smollm2_135m());
    }
    let v: Vec<usize> = s
        .split(',')
        .map(|x| x.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!("shape `{s}`: expected smollm2 or DIM,HEADS,KV_HEADS,FFN,LAYERS,VOCAB")
        })?;
    let [dim, heads, kv_heads, ffn, layers, vocab] = v[..] else {
        anyhow::bail!("shape `{s}`: expected six numbers DIM,HEADS,KV_HEADS,FFN,LAYERS,VOCAB");
    };
    anyhow::ensure!(
        heads > 0 && kv_heads > 0 && heads % kv_heads == 0 && dim % heads == 0 && vocab > 258,
        "shape `{s}`: heads must divide dim, kv heads must divide heads, vocab must exceed 258"
    );
    Ok(RandomShape {
        dim,
        heads,
        kv_heads,
        ffn,
        layers,
        vocab,
        tied: true,
        gemma3: None,
    })
}
