//! The `hubbub` binary: parse flags, set up logging, run. Everything else is in the library.

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// jemalloc instead of the system allocator: an idle connection is a few small allocations, and
/// glibc's arenas keep far more resident per connection (docs/benchmarks.md, memory).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let cli = hubbub::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("HUBBUB_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let workers = cli.worker_threads();
    tracing::info!(workers, "runtime");
    runtime(workers)?.block_on(hubbub::cli::run(cli))?;
    Ok(())
}

/// One worker thread means a single-threaded runtime: a server pinned to one core then pays
/// nothing for a scheduler built to share work between threads.
fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
}
