//! The simulation engine: N virtual devices running the real client runtime against the real
//! server core, either in-process or over real loopback gRPC.
//!
//! Devices are tokio tasks (cheap while they wait); their CPU work runs on a pool of
//! `threads` slots, and at most `concurrency` devices hold a model in memory at once, so a
//! thousand clients fit in the memory of a few. Every random choice is seeded.

mod attack;
mod faults;
mod inproc;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fedtune_client::{
    Backoff, Client, ClientError, ClientOptions, ClientSummary, GrpcTransport, Trainer, Transport,
};
use fedtune_proto::{Bundle, Compression};
use fedtune_server::{Coordinator, ServerConfig, strategy::Strategy};
use tokio::sync::Semaphore;

pub use attack::{Attack, Poison, byzantine_devices};
pub use faults::{FaultPlan, FaultRates, Faults, FaultyTransport, SeededFaults, Slow};
pub use inproc::InprocTransport;

/// How virtual clients reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportKind {
    /// Direct calls into the server core, no sockets.
    Inproc,
    /// A real tonic server on 127.0.0.1:0 and real gRPC clients (sharing HTTP/2 connections).
    Grpc,
}

/// A simulated federation.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub server: ServerConfig,
    /// Virtual clients (client ids `client-00000`, ...).
    pub clients: usize,
    pub transport: TransportKind,
    /// CPU slots for training.
    pub threads: usize,
    /// Devices holding a model at once (download → train → upload).
    pub concurrency: usize,
    pub faults: FaultRates,
    /// HTTP/2 connections the gRPC clients share (0: two per device that may hold a model at
    /// once). Each virtual device has its own session; like devices behind a proxy, they
    /// multiplex over a few connections.
    pub connections: usize,
    /// Server state directory (SQLite + checkpoints).
    pub state_dir: PathBuf,
    pub compression: Compression,
}

/// What a simulation produced.
#[derive(Debug)]
pub struct SimReport {
    pub model: Bundle,
    pub version: u64,
    pub wall: Duration,
    pub clients: Vec<ClientSummary>,
    /// Times a device dropped out (injected faults).
    pub dropouts: u64,
    pub coordinator: Arc<Coordinator>,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Server(#[from] fedtune_server::ServerError),
    #[error("client {client}")]
    Client {
        client: String,
        source: fedtune_client::ClientError,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Join(#[from] tokio::task::JoinError),
}

/// Injected faults: the plans, and the count of dropouts every device adds to.
struct Injected {
    faults: Arc<dyn Faults>,
    dropouts: Arc<AtomicU64>,
}

type DeviceTask = tokio::task::JoinHandle<Result<ClientSummary, ClientError>>;

/// One device's loop on its own task, its transport wrapped to inject faults if there are any.
fn spawn<T: Transport, Tr: Trainer>(
    transport: T,
    opts: ClientOptions,
    trainer: Tr,
    injected: Option<&Injected>,
) -> DeviceTask {
    match injected {
        None => {
            let client = Client::new(transport, opts);
            tokio::spawn(async move { client.run(trainer).await })
        }
        Some(f) => {
            let faulty = FaultyTransport::new(
                transport,
                opts.client_id.clone(),
                Arc::clone(&f.faults),
                Arc::clone(&f.dropouts),
            );
            let client = Client::new(faulty, opts);
            tokio::spawn(async move { client.run(trainer).await })
        }
    }
}

/// A real gRPC server for `coord` on 127.0.0.1:0: its URL, and how to stop it.
async fn start_grpc(
    coord: &Arc<Coordinator>,
) -> Result<
    (
        String,
        (
            tokio::sync::oneshot::Sender<()>,
            tokio::task::JoinHandle<()>,
        ),
    ),
    SimError,
> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let c = Arc::clone(coord);
    let task = tokio::spawn(async move {
        let _ = fedtune_server::serve(c, listener, async {
            let _ = stopped.await;
        })
        .await;
    });
    Ok((url, (stop, task)))
}

/// The id of virtual client `i`.
pub fn client_id(i: usize) -> String {
    format!("client-{i:05}")
}

/// Runs a federation to its last round; `trainer(i)` gives client `i` its trainer (and data).
pub async fn run<Tr, F>(
    cfg: &SimConfig,
    initial: Bundle,
    strategy: Box<dyn Strategy>,
    trainer: F,
) -> Result<SimReport, SimError>
where
    Tr: Trainer,
    F: Fn(usize) -> Tr,
{
    let start = Instant::now();
    let config = ServerConfig {
        // In process, folding is the server's main work; over gRPC its cores serve sockets.
        parallel_fold: cfg.transport == TransportKind::Inproc,
        ..cfg.server.clone()
    };
    let coord = Coordinator::open(config, &cfg.state_dir, initial, strategy)?;
    let cpu = Arc::new(Semaphore::new(cfg.threads.max(1)));
    let mut server = None;
    let url = match cfg.transport {
        TransportKind::Inproc => None,
        TransportKind::Grpc => {
            let (url, handle) = start_grpc(&coord).await?;
            server = Some(handle);
            Some(url)
        }
    };
    let injected = (!cfg.faults.is_none()).then(|| Injected {
        faults: Arc::new(SeededFaults {
            rates: cfg.faults.clone(),
            seed: cfg.server.seed,
        }),
        dropouts: Arc::new(AtomicU64::new(0)),
    });
    let active = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let channels = match &url {
        Some(url) => connection_pool(url, cfg.clients, cfg.connections, cfg.concurrency).map_err(
            |source| SimError::Client {
                client: "pool".into(),
                source,
            },
        )?,
        None => Vec::new(),
    };
    let mut tasks = Vec::with_capacity(cfg.clients);
    for i in 0..cfg.clients {
        let mut opts = device_options(i, cfg.server.seed, &cpu, &active);
        opts.compression = cfg.compression;
        let trainer = trainer(i);
        let id = opts.client_id.clone();
        let task = match &url {
            None => spawn(
                InprocTransport::new(Arc::clone(&coord)),
                opts,
                trainer,
                injected.as_ref(),
            ),
            Some(_) => spawn(
                channels[i % channels.len()].clone(),
                opts,
                trainer,
                injected.as_ref(),
            ),
        };
        tasks.push((id, task));
    }
    let mut clients = Vec::with_capacity(tasks.len());
    for (id, task) in tasks {
        clients.push(
            task.await?
                .map_err(|source| SimError::Client { client: id, source })?,
        );
    }
    coord.finished().await;
    let (version, model) = coord.global();
    let wall = start.elapsed();
    if let Some((stop, task)) = server {
        let _ = stop.send(());
        let _ = task.await;
    }
    Ok(SimReport {
        model,
        version,
        wall,
        clients,
        dropouts: injected.map_or(0, |f| f.dropouts.load(Ordering::Relaxed)),
        coordinator: coord,
    })
}

/// Options of virtual device `i`: shared CPU and model slots, and retries tuned for one machine
/// (short backoff, short waits) rather than for phones on cellular links.
pub fn device_options(
    i: usize,
    seed: u64,
    cpu: &Arc<Semaphore>,
    active: &Arc<Semaphore>,
) -> ClientOptions {
    let mut opts = ClientOptions::new(client_id(i));
    opts.seed = seed;
    opts.cpu = Arc::clone(cpu);
    opts.active = Some(Arc::clone(active));
    opts.max_retry_wait = Duration::from_millis(500);
    opts.backoff = Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(500),
        // The server is in the same process: a minute of failures is a bug, not an outage.
        give_up_after: Some(Duration::from_secs(60)),
        ..Backoff::default()
    };
    opts
}

/// Lazily connected gRPC transports for `clients` devices: `connections` of them, or, when 0
/// is given, two per device that may hold a model at once (`concurrency`): those are the
/// devices transferring at any moment, and each HTTP/2 connection is driven by one task, so
/// transfers sharing a connection share a core (paired runs, 100 devices, 4 at once, 1M-value
/// model: 8 connections 3% faster than 2; one per device another 5%, at ~30 KB of server
/// memory each). Devices take connections in turn (device i uses connection i mod n).
pub fn connection_pool(
    url: &str,
    clients: usize,
    connections: usize,
    concurrency: usize,
) -> Result<Vec<GrpcTransport>, fedtune_client::ClientError> {
    let n = match connections {
        0 => 2 * concurrency.max(1),
        n => n,
    }
    .min(clients);
    (0..n.max(1))
        .map(|_| GrpcTransport::connect_lazy(url))
        .collect()
}

/// The seed of virtual client `i`'s local training (its minibatch order).
pub fn trainer_seed(seed: u64, i: usize) -> u64 {
    seed ^ (i as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9)
}
