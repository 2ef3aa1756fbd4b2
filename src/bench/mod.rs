//! Benchmarks behind `fedtune bench ...`: they print figures, they assert nothing.

pub mod infer;
pub mod overhead;
pub mod rss;
pub mod server_memory;
pub mod strategies;
pub mod train;
