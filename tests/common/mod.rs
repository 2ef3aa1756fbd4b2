//! Helpers shared by the integration tests: a real tonic server on 127.0.0.1:0, and a raw
//! protocol client for crafting (bad) requests by hand.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fedtune_proto::v1::{self, federation_client::FederationClient};
use fedtune_proto::{Bundle, Compression, EncodedBundle};
use fedtune_server::strategy::{FedAvg, Strategy};
use fedtune_server::{Coordinator, ServerConfig};
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Asserts that an upload was refused with `code` and a message mentioning `needle`.
pub fn refused(result: Result<v1::UploadResponse, Status>, code: tonic::Code, needle: &str) {
    let status = result.expect_err("the upload should be refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(needle),
        "`{}` should mention `{needle}`",
        status.message()
    );
}

/// A running server: its URL, core, and a handle that stops it when dropped.
pub struct TestServer {
    pub url: String,
    pub coord: Arc<Coordinator>,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Starts a gRPC server for `initial` on a free loopback port.
pub async fn start(config: ServerConfig, initial: Bundle) -> TestServer {
    start_in(config, initial, tempfile::tempdir().unwrap()).await
}

/// [`start`] with its state in `dir`.
pub async fn start_in(config: ServerConfig, initial: Bundle, dir: tempfile::TempDir) -> TestServer {
    serve_in(config, initial, dir, Box::new(FedAvg)).await
}

/// [`start`] with another strategy than FedAvg.
pub async fn start_with(
    config: ServerConfig,
    initial: Bundle,
    strategy: Box<dyn Strategy>,
) -> TestServer {
    serve_in(config, initial, tempfile::tempdir().unwrap(), strategy).await
}

async fn serve_in(
    config: ServerConfig,
    initial: Bundle,
    dir: tempfile::TempDir,
    strategy: Box<dyn Strategy>,
) -> TestServer {
    let coord = Coordinator::open(config, dir.path(), initial, strategy).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let c = coord.clone();
    tokio::spawn(async move {
        fedtune_server::serve(c, listener, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    TestServer {
        url,
        coord,
        dir,
        stop: Some(stop),
    }
}

/// Settings for small, quick test federations.
pub fn quick_config(rounds: u64, k: usize, min_clients: usize) -> ServerConfig {
    ServerConfig {
        rounds,
        clients_per_round: k,
        over_selection: 1.0,
        min_commit: k,
        min_clients,
        round_timeout: Duration::from_secs(60),
        long_poll: Duration::from_millis(200),
        retry_after: Duration::from_millis(50),
        durable: false,
        linger: Duration::ZERO,
        ..ServerConfig::default()
    }
}

/// A hand-driven protocol client.
pub struct RawClient {
    pub rpc: FederationClient<Channel>,
    pub token: String,
    /// A task offered at the check-in that made the device count.
    pub offered: Option<v1::Task>,
}

impl RawClient {
    pub async fn join(url: &str, id: &str) -> Self {
        Self::join_with(url, id, None).await.unwrap()
    }

    /// Joins with `capabilities`: the server's refusal, if it refuses.
    pub async fn join_with(
        url: &str,
        id: &str,
        capabilities: Option<v1::Capabilities>,
    ) -> Result<Self, Status> {
        let channel = Channel::from_shared(url.to_string())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let limit = 2 << 20;
        let mut rpc = FederationClient::new(channel)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);
        let token = rpc
            .join(v1::JoinRequest {
                client_id: id.into(),
                capabilities,
                proof: None,
            })
            .await?
            .into_inner()
            .session_token;
        let mut client = RawClient {
            rpc,
            token,
            offered: None,
        };
        // A device counts from its first check-in, as a real one would make at once.
        client.offered = client.check_in().await;
        Ok(client)
    }

    /// The global model as this device downloads it for `task`.
    pub async fn download(&mut self, task: &v1::Task) -> Bundle {
        let header =
            fedtune_proto::BundleHeader::from_wire(task.model.as_ref().unwrap(), u64::MAX).unwrap();
        let req = self.authed(v1::DownloadRequest {
            model_version: task.model_version,
            offset: 0,
        });
        let mut stream = self.rpc.download(req).await.unwrap().into_inner();
        let mut payload = Vec::new();
        while let Some(chunk) = stream.message().await.unwrap() {
            payload.extend_from_slice(&chunk.data);
        }
        EncodedBundle {
            header,
            payload: payload.into(),
        }
        .decode()
        .unwrap()
    }

    /// One check-in, as the server answers it.
    pub async fn try_check_in(&mut self) -> Result<v1::CheckInResponse, Status> {
        let req = self.authed(v1::CheckInRequest {});
        self.rpc.check_in(req).await.map(|r| r.into_inner())
    }

    async fn check_in(&mut self) -> Option<v1::Task> {
        let resp = self.try_check_in().await.unwrap();
        match resp.outcome {
            Some(v1::check_in_response::Outcome::Task(t)) => Some(t),
            Some(v1::check_in_response::Outcome::RetryAfterMs(_)) => None,
            other => panic!("expected a task, got {other:?}"),
        }
    }

    pub fn authed<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().unwrap(),
        );
        r
    }

    /// Checks in until a task comes.
    pub async fn task(&mut self) -> v1::Task {
        if let Some(t) = self.offered.take() {
            return t;
        }
        for _ in 0..100 {
            if let Some(t) = self.check_in().await {
                return t;
            }
        }
        panic!("no task offered");
    }

    /// Sends a hand-made upload stream.
    pub async fn send(
        &mut self,
        messages: Vec<v1::UploadMessage>,
    ) -> Result<v1::UploadResponse, Status> {
        let req = self.authed(futures::stream::iter(messages));
        self.rpc.upload(req).await.map(|r| r.into_inner())
    }
}

/// The messages of a well-formed upload of `update` for `task`.
pub fn upload_messages(
    task: &v1::Task,
    update: &Bundle,
    num_examples: u64,
) -> Vec<v1::UploadMessage> {
    let enc = EncodedBundle::encode(update, Compression::None).unwrap();
    upload_of(task, &enc, num_examples)
}

pub fn upload_of(
    task: &v1::Task,
    enc: &EncodedBundle,
    num_examples: u64,
) -> Vec<v1::UploadMessage> {
    upload_in_chunks(task, enc, num_examples, fedtune_proto::MAX_CHUNK_BYTES)
}

/// [`upload_of`] in chunks of `chunk` bytes.
pub fn upload_in_chunks(
    task: &v1::Task,
    enc: &EncodedBundle,
    num_examples: u64,
    chunk: usize,
) -> Vec<v1::UploadMessage> {
    use v1::upload_message::Kind;
    let msg = |k| v1::UploadMessage { kind: Some(k) };
    let mut out = vec![msg(Kind::Header(v1::UploadHeader {
        task_id: task.task_id.clone(),
        round: task.round,
        model_version: task.model_version,
        num_examples,
        update: Some(enc.header.to_wire()),
        within_clip: false,
    }))];
    out.extend(enc.chunks(0, chunk).map(|(_, d)| msg(Kind::Chunk(d))));
    out.push(msg(Kind::Digest(Bytes::copy_from_slice(
        &enc.header.digest.0,
    ))));
    out
}
pub mod llama;

/// The mean of metric `name` over each round's reports, rounds 1..=`rounds`.
pub fn round_curve(coordinator: &Coordinator, name: &str, rounds: u64) -> Vec<f64> {
    (1..=rounds)
        .map(|r| {
            coordinator
                .with_store(|s| s.mean_metric(r, name))
                .unwrap()
                .unwrap()
        })
        .collect()
}

/// The `http://ADDR` a `fedtune server` child prints as `listening on ADDR`.
/// A TCP port on 127.0.0.1 that was free a moment ago (for a server process to bind).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn listening_url(stdout: std::process::ChildStdout) -> String {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(stdout).lines();
    let line = lines.next().expect("server exited").expect("server stdout");
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line `{line}`"));
    // The rest of the server's output goes nowhere rather than blocking it.
    std::thread::spawn(move || lines.for_each(drop));
    format!("http://{addr}")
}

/// `fedtune server` for a federation of 2 linreg:4 devices over 2 rounds on a free loopback
/// port, state in `state`, stdout piped for [`listening_url`]: add flags, then spawn.
pub fn two_device_server(state: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fedtune"));
    cmd.args(["server", "--listen", "127.0.0.1:0", "--model", "linreg:4"])
        .args(["--rounds", "2", "--clients-per-round", "2"])
        .args(["--over-selection", "1", "--min-clients", "2"])
        .args(["--linger", "2s", "--log", "warn"])
        .arg("--state")
        .arg(state)
        .stdout(std::process::Stdio::piped());
    cmd
}

/// `fedtune client` number `index` of [`two_device_server`]'s federation at `url`, stdout
/// discarded: add flags, then spawn.
pub fn two_device_client(url: &str, index: usize) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fedtune"));
    cmd.args(["client", "--server", url, "--dim", "4", "--log", "warn"])
        .args(["--index", &index.to_string()])
        .stdout(std::process::Stdio::null());
    cmd
}
