//! fedtune: federated fine-tuning. This crate holds the simulation engine (virtual clients
//! running the real client runtime against the real server, in-process or over loopback gRPC),
//! the built-in workloads, the benchmarks, and the `fedtune` command-line program.

pub mod base_model;
pub mod bench;
pub mod certs;
pub mod job;
pub mod models;
pub mod npy;
pub mod offline;
pub mod resources;
pub mod shakespeare;
pub mod sim;
pub mod task;
pub mod text_data;

pub use resources::max_threads;
