//! Command line: subcommands and flags (each also settable as a `HUBBUB_*` variable), turned into
//! a [`Config`]. Opens no sockets or databases itself.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;
use tracing::info;

use crate::config::{Config, Durability};
use crate::error::{Error, Result};
use crate::hub::HubSettings;

/// hubbub: a self-hosted real-time chat server. With no subcommand it serves.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server flags, when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the chat server (the default).
    Serve(ServeArgs),
}

/// Flags of `hubbub serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HUBBUB_ADDR", default_value = "0.0.0.0:3000")]
    pub addr: SocketAddr,
    /// Directory for the embedded SQLite database.
    #[arg(long, env = "HUBBUB_DATA", default_value = "hubbub-data")]
    pub data: PathBuf,
    /// Database: `sqlite://PATH` or a file path (default: DATA/hubbub.db).
    #[arg(long, env = "HUBBUB_DB")]
    pub db: Option<String>,
    /// Milliseconds a commit waits on a database lock held by another process before the posts
    /// in it fail with `store_unavailable`.
    #[arg(long, env = "HUBBUB_DB_BUSY_TIMEOUT_MS", default_value_t = 5000)]
    pub db_busy_timeout_ms: u64,
    /// What an ack survives: `machine` (fsync every commit; survives power loss) or `process`
    /// (survives crashes of hubbub, acks don't wait for the disk).
    #[arg(long, env = "HUBBUB_DURABILITY", value_enum, default_value_t = Durability::Machine)]
    pub durability: Durability,
    /// Longest chat message text, in bytes.
    #[arg(long, env = "HUBBUB_MAX_MESSAGE_BYTES", default_value_t = 4096)]
    pub max_message_bytes: usize,
    /// Largest WebSocket frame/message on /ws, in bytes (over it: close 1009).
    #[arg(long, env = "HUBBUB_MAX_FRAME_BYTES", default_value_t = 65536)]
    pub max_frame_bytes: usize,
    /// Largest message on /echo, in bytes.
    #[arg(long, env = "HUBBUB_MAX_ECHO_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_echo_bytes: usize,
    /// Do not serve the /echo WebSocket.
    #[arg(long, env = "HUBBUB_NO_ECHO")]
    pub no_echo: bool,
    /// Frames a connection may have queued before it is closed as a slow consumer (1013).
    #[arg(long, env = "HUBBUB_OUTBOX_FRAMES", default_value_t = 1024)]
    pub outbox_frames: usize,
    /// Rooms one connection may be in at once.
    #[arg(long, env = "HUBBUB_MAX_ROOMS_PER_CONNECTION", default_value_t = 100)]
    pub max_rooms_per_connection: usize,
    /// Members one room may hold (default: unlimited).
    #[arg(long, env = "HUBBUB_MAX_ROOM_MEMBERS")]
    pub max_room_members: Option<usize>,
    /// Rooms with more members than this announce a member count per tick instead of every
    /// arrival and departure.
    #[arg(long, env = "HUBBUB_PRESENCE_LIMIT", default_value_t = 200)]
    pub presence_limit: usize,
    /// Milliseconds between member-count announcements in large rooms.
    #[arg(long, env = "HUBBUB_PRESENCE_TICK_MS", default_value_t = 1000)]
    pub presence_tick_ms: u64,
    /// Seconds between server pings.
    #[arg(long, env = "HUBBUB_PING_INTERVAL", default_value_t = 25)]
    pub ping_interval_secs: u64,
    /// Seconds a silent peer is kept before it is closed (1008).
    #[arg(long, env = "HUBBUB_IDLE_TIMEOUT", default_value_t = 60)]
    pub idle_timeout_secs: u64,
    /// Seconds shutdown waits for connections to close.
    #[arg(long, env = "HUBBUB_SHUTDOWN_GRACE", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
}

impl ServeArgs {
    /// The config these flags describe.
    pub fn to_config(&self) -> Result<Config> {
        let db_path = match self.db.as_deref() {
            None => None,
            Some(url) => Some(sqlite_path(url)?),
        };
        Ok(Config {
            addr: self.addr,
            data_dir: self.data.clone(),
            db_path,
            db_busy_timeout: Duration::from_millis(self.db_busy_timeout_ms),
            durability: self.durability,
            max_message_bytes: self.max_message_bytes,
            max_frame_bytes: self.max_frame_bytes,
            echo_enabled: !self.no_echo,
            max_echo_bytes: self.max_echo_bytes,
            ping_interval: Duration::from_secs(self.ping_interval_secs.max(1)),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs.max(1)),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            hub: HubSettings {
                outbox_frames: self.outbox_frames,
                max_rooms_per_connection: self.max_rooms_per_connection,
                max_room_members: self.max_room_members,
                presence_limit: self.presence_limit,
                presence_tick: Duration::from_millis(self.presence_tick_ms.max(10)),
                ..HubSettings::default()
            },
        })
    }
}

/// Accepts `sqlite://PATH`, `sqlite:PATH` or a bare path.
fn sqlite_path(url: &str) -> Result<PathBuf> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        return Ok(PathBuf::from(path));
    }
    if url.contains("://") {
        return Err(Error::Config(format!(
            "unsupported database {url:?}: use sqlite://PATH"
        )));
    }
    Ok(PathBuf::from(url))
}

/// Runs the chosen subcommand.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Serve(args)) => serve(args).await,
        None => serve(cli.serve).await,
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let config = args.to_config()?;
    let listener = TcpListener::bind(config.addr).await?;
    info!(addr = %config.addr, "binding");
    crate::serve(config, listener, crate::shutdown::signal()).await
}
