//! Benchmarks behind `fedtune bench ...`: they print figures, they assert nothing.

pub mod overhead;
pub mod server_memory;
