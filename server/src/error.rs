//! Every way the server refuses a request, and the gRPC status each maps to.

use fedtune_proto::CodecError;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("unauthenticated: {0}")]
    Unauthenticated(&'static str),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("unknown task `{0}`")]
    UnknownTask(String),
    #[error("stale upload: {0}")]
    Stale(String),
    #[error("late upload: round {round} is no longer accepting updates")]
    Late { round: u64 },
    #[error("duplicate upload: client `{client}` already contributed to round {round}")]
    Duplicate { client: String, round: u64 },
    #[error("an upload for task `{0}` is already in progress")]
    UploadInProgress(String),
    #[error("update refused: {0}")]
    InvalidUpdate(String),
    #[error("update refused: {0}")]
    Corrupt(CodecError),
    #[error("upload stream ended before the digest ({0})")]
    Incomplete(String),
    #[error("model version {requested} is not served; current version is {current}")]
    VersionGone { requested: u64, current: u64 },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Strategy(#[from] crate::strategy::StrategyError),
    #[error("secure aggregation abandoned: {0}")]
    SecAggAbandoned(String),
    #[error("server is shutting down")]
    ShuttingDown,
    #[error("too many uploads in progress; retry after a backoff")]
    Busy,
    #[error("the server's registry is full ({0} devices); retry later")]
    RegistryFull(usize),
    #[error("internal error: {0}")]
    Internal(String),
    /// A setting the server cannot run with, named.
    #[error("server setting {setting}: {why}")]
    Config { setting: &'static str, why: String },
}

impl From<CodecError> for ServerError {
    fn from(e: CodecError) -> Self {
        match e {
            CodecError::DigestMismatch { .. }
            | CodecError::Truncated { .. }
            | CodecError::Overrun { .. } => ServerError::Corrupt(e),
            other => ServerError::InvalidUpdate(other.to_string()),
        }
    }
}

impl From<ServerError> for tonic::Status {
    fn from(e: ServerError) -> Self {
        use tonic::Code;
        let code = match &e {
            ServerError::Unauthenticated(_) => Code::Unauthenticated,
            ServerError::InvalidRequest(_) | ServerError::InvalidUpdate(_) => Code::InvalidArgument,
            ServerError::UnknownTask(_) | ServerError::Stale(_) | ServerError::Late { .. } => {
                Code::FailedPrecondition
            }
            ServerError::VersionGone { .. } => Code::FailedPrecondition,
            ServerError::Duplicate { .. } => Code::AlreadyExists,
            ServerError::UploadInProgress(_) => Code::Aborted,
            ServerError::Corrupt(_) => Code::DataLoss,
            ServerError::Incomplete(_) => Code::Cancelled,
            ServerError::Store(_) | ServerError::Strategy(_) => Code::Internal,
            ServerError::SecAggAbandoned(_) => Code::FailedPrecondition,
            ServerError::ShuttingDown => Code::Unavailable,
            ServerError::Busy | ServerError::RegistryFull(_) => Code::ResourceExhausted,
            ServerError::Internal(_) | ServerError::Config { .. } => Code::Internal,
        };
        tonic::Status::new(code, e.to_string())
    }
}
