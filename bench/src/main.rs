//! `hubbub-bench`: the load generator and side-by-side benchmark harness of issue #5.
//!
//! - `suite` runs the kernel-floor measurement and every scenario against hubbub and the peer
//!   servers (Node `ws`, Socket.IO, Go gorilla hub), writing results JSON, Markdown and SVG.
//! - `worker` is the child process the suite spawns to hold up to ~9,000 connections each.
//! - `floor` measures what one small loopback `write()` costs (the kernel floor).
//! - `echo-floor` is the least a WebSocket echo server can be (the echo scenario's reference).
//! - `report` re-renders Markdown and plots from a results file.
//!
//! The `cluster` scenario (`--servers hubbub --scenarios cluster`, not in the default set) runs
//! hubbub in five configurations side by side: one node on SQLite, one on PostgreSQL, and one,
//! two and three nodes on PostgreSQL + Redis, which it starts privately (`services`).
//!
//! Module map, each depending only on those before it: `hist`, `procfs`, `echo_floor`,
//! `plan` (sizes), `client` (one module per wire mode), `spec` (coordinator ↔ worker
//! messages), `worker`, `coordinator`, `servers`, `services`, `floor`, `report`, `run` (a
//! run's state), `scenario` (one module per scenario, `phase` shared), `suite`, and `search`
//! (the search benchmark, `hubbub-bench search`: its own store fill and report).

mod client;
mod coordinator;
mod echo_floor;
mod floor;
mod hist;
mod plan;
mod procfs;
mod report;
mod run;
mod scenario;
mod search;
mod servers;
mod services;
mod spec;
mod suite;
mod token;
mod worker;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use plan::Size;
use scenario::Scenario;
use servers::{ServerKind, ServerPaths};

#[derive(Parser)]
#[command(
    name = "hubbub-bench",
    about = "Benchmark hubbub against peer chat servers, side by side"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the benchmark suite.
    Suite(SuiteArgs),
    /// Internal: a worker process (spec and commands on stdin, events on stdout).
    Worker,
    /// Measure the kernel floor: CPU per small write() to a loopback TCP socket.
    Floor {
        #[arg(long, default_value_t = 2000)]
        sockets: usize,
        /// Writes per socket; default gives ~100,000 writes in all.
        #[arg(long)]
        rounds: Option<usize>,
        /// Writes per socket in the woken-reader floor, whose rounds each pause 20 ms (default:
        /// `--rounds`); the smoke plan keeps it short.
        #[arg(long)]
        woken_rounds: Option<usize>,
        #[arg(long, default_value_t = 150)]
        bytes: usize,
        /// Also measure with the reading ends in a process on these CPUs (`taskset -c` list),
        /// woken by every write.
        #[arg(long)]
        reader_cpus: Option<String>,
        /// Only the woken-reader floor (needs `--reader-cpus`): the writer then holds one end of
        /// each connection, so up to 19,000 sockets fit under the open-file limit.
        #[arg(long)]
        woken_only: bool,
        /// Reader processes for the woken floor (sockets split evenly, one source address each),
        /// as the load generator splits a large room over its worker processes.
        #[arg(long, default_value_t = 1)]
        readers: usize,
        /// The order the woken floor writes its sockets in.
        #[arg(long, value_enum, default_value_t = floor::WriteOrder::Blocks)]
        order: floor::WriteOrder,
    },
    /// Internal: the reading side of the woken-reader floor.
    FloorReader {
        #[arg(long)]
        addr: std::net::SocketAddr,
        #[arg(long)]
        sockets: usize,
        /// Source address to connect from.
        #[arg(long, default_value = "127.0.0.1")]
        source: std::net::IpAddr,
    },
    /// The echo floor: a minimal single-threaded epoll WebSocket echo server (the echo
    /// scenario's reference; not a chat server).
    EchoFloor {
        #[arg(long)]
        addr: std::net::SocketAddr,
    },
    /// Render Markdown and SVG from a results file.
    Report(ReportArgs),
    /// The search benchmark (issue 20): fill a store with generated messages through
    /// `hubbub import`, then time GET /api/search against the real server (search.rs).
    Search(search::SearchArgs),
}

#[derive(clap::Args)]
struct SuiteArgs {
    /// smoke (the test suite's end-to-end check), quick (≤ 2,000 connections) or full (up to
    /// 19,000).
    #[arg(long, value_enum, default_value = "quick")]
    size: Size,
    /// Servers to run (default: all four).
    #[arg(long, value_enum, value_delimiter = ',')]
    servers: Vec<ServerKind>,
    /// Scenarios to run (default: all but `cluster`, which needs PostgreSQL and Redis).
    #[arg(long, value_enum, value_delimiter = ',')]
    scenarios: Vec<Scenario>,
    #[arg(long, default_value = "target/release/hubbub")]
    hubbub_bin: PathBuf,
    #[arg(long, default_value = "bench/peers")]
    peers_dir: PathBuf,
    #[arg(long, default_value = "target/peers/go-gorilla")]
    go_bin: PathBuf,
    /// Core the servers are pinned to; `none` to not pin.
    #[arg(long, default_value = "0")]
    pin: String,
    /// Niceness for the servers and the floor measurement (e.g. -10; needs root).
    #[arg(long, allow_hyphen_values = true)]
    nice: Option<i32>,
    /// An extra flag for `hubbub serve`, repeatable (e.g. `--hubbub-arg=--durability
    /// --hubbub-arg=process`).
    #[arg(long = "hubbub-arg", allow_hyphen_values = true)]
    hubbub_args: Vec<String>,
    /// The project's scripts directory (`pg.sh` and `redis.sh` start the cluster scenario's
    /// private PostgreSQL and Redis).
    #[arg(long, default_value = "scripts")]
    scripts_dir: PathBuf,
    /// Results file.
    #[arg(long, default_value = "docs/bench/results.json")]
    out: PathBuf,
    /// Directory for server logs.
    #[arg(long, default_value = "target/bench-logs")]
    log_dir: PathBuf,
    /// Also render the report into this Markdown file and the plots beside the results file.
    #[arg(long)]
    md: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ReportArgs {
    #[arg(long, default_value = "docs/bench/results.json")]
    results: PathBuf,
    #[arg(long, default_value = "docs/benchmarks.md")]
    md: PathBuf,
    /// Where the SVGs go; the Markdown links them relative to the Markdown file.
    #[arg(long, default_value = "docs/bench")]
    svg_dir: PathBuf,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Worker => worker::main(),
        Cmd::FloorReader {
            addr,
            sockets,
            source,
        } => floor::reader_main(addr, sockets, source),
        Cmd::Floor {
            sockets,
            rounds,
            woken_rounds,
            bytes,
            reader_cpus,
            woken_only,
            readers,
            order,
        } => {
            let rounds = rounds.unwrap_or((100_000 / sockets.max(1)).max(10));
            let woken_rounds = woken_rounds.unwrap_or(rounds);
            if woken_only {
                let cpus = reader_cpus.context("--woken-only needs --reader-cpus")?;
                let w = floor::measure_woken(sockets, woken_rounds, bytes, &cpus, readers, order)?;
                println!("{}", serde_json::to_string(&w)?);
                return Ok(());
            }
            let mut r = floor::measure(sockets, rounds, bytes)?;
            if let Some(cpus) = reader_cpus {
                r.woken = Some(floor::measure_woken(
                    sockets,
                    woken_rounds,
                    bytes,
                    &cpus,
                    readers,
                    order,
                )?);
            }
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Cmd::EchoFloor { addr } => echo_floor::serve(addr),
        Cmd::Report(a) => render(&a.results, &a.md, &a.svg_dir),
        Cmd::Search(a) => {
            let command_line = std::env::var("HUBBUB_BENCH_COMMAND")
                .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(search::run(a, command_line))
        }
        Cmd::Suite(a) => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .init();
            let servers = if a.servers.is_empty() {
                ServerKind::ALL.to_vec()
            } else {
                a.servers.clone()
            };
            let scenarios = if a.scenarios.is_empty() {
                Scenario::ALL.to_vec()
            } else {
                a.scenarios.clone()
            };
            let pin_core = match a.pin.as_str() {
                "none" => None,
                c => Some(c.parse().context("--pin takes a core number or none")?),
            };
            let paths = ServerPaths {
                hubbub_bin: a.hubbub_bin.clone(),
                peers_dir: a.peers_dir.clone(),
                go_bin: a.go_bin.clone(),
                pin_core,
                log_dir: a.log_dir.clone(),
                nice: a.nice,
                hubbub_args: a.hubbub_args.clone(),
                scripts_dir: a.scripts_dir.clone(),
            };
            let command_line = std::env::var("HUBBUB_BENCH_COMMAND")
                .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let results = rt.block_on(suite::run(
                paths,
                a.size,
                &servers,
                &scenarios,
                a.out.clone(),
                command_line,
            ))?;
            if let Some(md) = &a.md {
                let svg_dir = a
                    .out
                    .parent()
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("."));
                render(&a.out, md, &svg_dir)?;
            }
            if !results.failures.is_empty() {
                eprintln!("[bench] {} part(s) failed:", results.failures.len());
                for f in &results.failures {
                    eprintln!("  - {f}");
                }
            }
            Ok(())
        }
    }
}

/// Render the Markdown section and the plots from a results file.
fn render(
    results: &std::path::Path,
    md: &std::path::Path,
    svg_dir: &std::path::Path,
) -> Result<()> {
    let text =
        std::fs::read_to_string(results).with_context(|| format!("read {}", results.display()))?;
    let res: report::Results = serde_json::from_str(&text).context("parse results")?;
    report::write_svgs(&res, svg_dir)?;
    let rel = relative(md, svg_dir);
    report::render_into(md, &res, &rel)
}

/// `svg_dir` as a link relative to the Markdown file's directory (both under the repo).
fn relative(md: &std::path::Path, svg_dir: &std::path::Path) -> String {
    let base = md.parent().unwrap_or_else(|| std::path::Path::new(""));
    match svg_dir.strip_prefix(base) {
        Ok(p) if p.as_os_str().is_empty() => ".".to_string(),
        Ok(p) => p.display().to_string(),
        Err(_) => svg_dir.display().to_string(),
    }
}
