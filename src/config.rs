//! Every tunable with its default. Built by `cli` from flags and `HUBBUB_*` variables, read by
//! `serve`; no I/O here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::hub::HubSettings;

/// What an acknowledged message survives. Both survive `kill -9` and any crash of hubbub itself;
/// they differ on a crash of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Durability {
    /// Every commit is fsynced before its acks go out: an ack survives power loss too.
    #[default]
    Machine,
    /// Commits reach the operating system before acks go out and are fsynced at checkpoints:
    /// acks do not wait for the disk, but the last moments before a power loss can be lost.
    Process,
}

/// Server configuration. `Default` is what `hubbub serve` with no flags runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Directory for the embedded database.
    pub data_dir: PathBuf,
    /// Database file; `None` means `<data_dir>/hubbub.db`.
    pub db_path: Option<PathBuf>,
    /// How long a commit waits on a database lock held elsewhere before its posts fail with
    /// `store_unavailable`.
    pub db_busy_timeout: Duration,
    /// What an ack promises to survive.
    pub durability: Durability,
    /// Longest message text in bytes.
    pub max_message_bytes: usize,
    /// Largest WebSocket frame or message on /ws, in bytes (over it: close 1009).
    pub max_frame_bytes: usize,
    /// Whether /echo is served.
    pub echo_enabled: bool,
    /// Largest message on /echo, in bytes (the Autobahn suite sends up to 16 MiB).
    pub max_echo_bytes: usize,
    /// How often the server pings a WebSocket peer.
    pub ping_interval: Duration,
    /// How long a peer may stay silent (no frame, no pong) before it is closed with 1008.
    pub idle_timeout: Duration,
    /// How long shutdown waits for connections to finish before giving up on them.
    pub shutdown_grace: Duration,
    /// Rooms, membership and queue limits.
    pub hub: HubSettings,
}

impl Config {
    /// The database file this config uses.
    pub fn database_path(&self) -> PathBuf {
        self.db_path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("hubbub.db"))
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 3000)),
            data_dir: PathBuf::from("hubbub-data"),
            db_path: None,
            db_busy_timeout: Duration::from_secs(5),
            durability: Durability::Machine,
            max_message_bytes: 4096,
            max_frame_bytes: 64 * 1024,
            echo_enabled: true,
            max_echo_bytes: 16 * 1024 * 1024,
            ping_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
            hub: HubSettings::default(),
        }
    }
}
