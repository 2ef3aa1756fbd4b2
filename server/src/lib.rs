//! fedtune's aggregation server.
//!
//! The server only merges named tensors: it knows nothing of model architectures. A round is
//! an explicit state machine ([`round`]); updates are validated against the global model and
//! folded into a streaming weighted sum ([`strategy`]), so memory is O(model); every committed
//! round lands atomically in SQLite with a safetensors checkpoint ([`store`]).
//!
//! Rounds can also be asynchronous: buffered aggregation ([`buffered`], FedBuff).
//!
//! [`Coordinator`] is the transport-neutral core; [`FederationRouter`] exposes it over gRPC
//! ([`FederationService`] through tonic, the bulk calls below tonic's codec), and the
//! simulation engine calls it directly for its in-process transport.

pub mod buffered;
mod bulk;
mod check_in;
mod config;
mod coordinator;
pub mod dp;
mod error;
mod identity;
mod idle;
mod lifecycle;
mod registry;
pub mod round;
pub mod secagg;
mod service;
pub mod store;
pub mod strategy;
mod tls;
mod upload;
mod upload_gate;
mod validate;

pub use buffered::BufferedSettings;
pub use bulk::FederationRouter;
pub use config::ServerConfig;
pub use coordinator::{Coordinator, SERVER_METRICS};
pub use dp::DpSettings;
pub use error::ServerError;
pub use fedtune_privacy::adaptive_clip::AdaptiveClip;
pub use secagg::settings::SecAggSettings;
pub use service::{FederationService, MAX_STREAMS, bearer_token, serve, serve_tls};
pub use store::Store;
pub use tls::ServerTls;
