//! Errors that end a client's run (refusals of single tasks are logged and survived).

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the server at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("gave up after {attempts} attempts at {what}: {last}")]
    RetriesExhausted {
        what: &'static str,
        attempts: u32,
        last: tonic::Status,
    },
    #[error("server refused {what}: {status}")]
    Refused {
        what: &'static str,
        status: tonic::Status,
    },
    #[error(transparent)]
    Train(#[from] crate::TrainerError),
    /// The trainer's update holds NaN or an infinity: nothing is sent.
    #[error("the trainer produced a non-finite update: {0}")]
    NonFiniteUpdate(String),
    /// The device's own machinery failed (a worker pool closed, a training thread panicked).
    #[error("device runtime: {0}")]
    Runtime(String),
    #[error(transparent)]
    Codec(#[from] fedtune_proto::CodecError),
    /// The server asked for local training this device cannot run.
    #[error(transparent)]
    Plan(#[from] fedtune_proto::PlanError),
    #[error("server sent a malformed message: {0}")]
    Protocol(String),
    /// A device key file that cannot be read, parsed or created.
    #[error("device key {}: {why}", path.display())]
    Key {
        path: std::path::PathBuf,
        why: String,
    },
}
