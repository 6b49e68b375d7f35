//! The `hubbub` binary: parse flags, set up logging, run. Everything else is in the library.

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// jemalloc instead of the system allocator: an idle connection is a few small allocations, and
/// glibc's arenas keep far more resident per connection (docs/benchmarks.md, memory).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = hubbub::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("HUBBUB_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: a log file or journal gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    hubbub::cli::run(cli).await?;
    Ok(())
}
