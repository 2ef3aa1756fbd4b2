//! fedtune's device runtime.
//!
//! A device joins a federation, checks in, downloads the global model (resumably), trains it
//! on data that never leaves the device through a [`Trainer`], and uploads only the update
//! (local − global) in digest-checked chunks. [`Transport`] hides whether the server is across
//! gRPC ([`GrpcTransport`]) or in the same process (the simulation's transport).

mod error;
pub mod identity;
pub mod runtime;
pub mod tls;
pub mod trainer;
mod transport;

pub use error::ClientError;
pub use runtime::{Backoff, Client, ClientOptions, ClientSummary};
pub use tls::ClientTls;
pub use trainer::{
    LinRegData, LinRegTrainer, LocalUpdate, LoraTrainer, TaskContext, Trainer, TrainerError,
};
pub use transport::{BoxStream, GrpcTransport, Transport};
