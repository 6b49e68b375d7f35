//! Every tunable with its default. Built by `cli` from flags and `HUBBUB_*` variables, read by
//! `serve`; no I/O here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::hub::HubSettings;

/// Server configuration. `Default` is what `hubbub serve` with no flags runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Directory for the embedded database.
    pub data_dir: PathBuf,
    /// Database file; `None` means `<data_dir>/hubbub.db`.
    pub db_path: Option<PathBuf>,
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
