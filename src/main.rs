//! The `fedtune` command-line program.

mod cli;

/// Large update buffers come and go every round; mimalloc reuses them where glibc would
/// unmap and fault in fresh pages each time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
