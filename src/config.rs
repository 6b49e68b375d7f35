//! Every tunable with its default. Built by `cli` from flags and `HUBBUB_*` variables, read by
//! `serve`; no I/O here.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::error::Error;

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

/// Which uploads `POST /api/files` keeps (`--upload-types`, issue 20), by the type read from
/// the file's first bytes (never the client's `Content-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum UploadTypes {
    /// Any file: images are served as images, everything else as a download.
    #[default]
    Any,
    /// PNG, JPEG, GIF and WebP images only; anything else is refused with 415 `bad_type`.
    Images,
}

/// Server configuration. `Default` is what `hubbub serve` with no flags runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Directory for the embedded database.
    pub data_dir: PathBuf,
    /// Database file; `None` means `<data_dir>/hubbub.db`. Unused when [`Config::postgres`] is set.
    pub db_path: Option<PathBuf>,
    /// PostgreSQL database that holds history instead of the SQLite file (`--db postgres://...`),
    /// so several nodes can share one history.
    pub postgres: Option<PostgresUrl>,
    /// Whether `serve` applies pending schema migrations at start. `false` (`--no-migrate`) only
    /// checks that the PostgreSQL schema is current, for operators who run `hubbub migrate` as a
    /// separate deployment step. The embedded SQLite file is always brought up to date when opened.
    pub migrate_at_start: bool,
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
    /// Open connections (/ws, /events, /echo together) the server accepts before refusing
    /// upgrades with 503. `None`: the open-file soft limit minus [`FD_HEADROOM`], read at start.
    pub max_connections: Option<usize>,
    /// Open connections one client IP may hold before its upgrades are refused with 429.
    pub max_connections_per_ip: usize,
    /// Sustained chat posts per second per connection (and API requests per second per client
    /// IP); 0 turns rate limiting off.
    pub rate_limit: u32,
    /// Posts a connection may send at once before the rate applies (token bucket size).
    pub rate_burst: u32,
    /// Rate-limited frames within [`Config::abuse_window`] after which a connection is closed
    /// with 1008. `None`: ten times the rate limit.
    pub abuse_rejections: Option<u32>,
    /// The sliding window over which rate-limited frames are counted.
    pub abuse_window: Duration,
    /// How long a client may take to send a request's headers (slowloris guard); also how long
    /// an idle keep-alive connection is kept.
    pub header_timeout: Duration,
    /// How long a plain HTTP request may take to produce its response headers.
    pub request_timeout: Duration,
    /// Largest HTTP request body, in bytes (over it: 413).
    pub max_body_bytes: usize,
    /// Largest file `POST /api/files` accepts, in bytes (over it: 413, nothing kept; issue 20).
    pub max_upload_bytes: u64,
    /// Where uploaded files are kept; `None` means `<data_dir>/files` (with either database).
    pub files_dir: Option<PathBuf>,
    /// Which uploads are kept (`--upload-types`; issue 20).
    pub upload_types: UploadTypes,
    /// Page origins (`scheme://host[:port]`) allowed to open /ws and /events besides the
    /// server's own; `*` allows any.
    pub allowed_origins: Vec<String>,
    /// HS256 secret that turns token auth on; `None`: auth off.
    pub auth_secret: Option<Secret>,
    /// The Redis server that carries committed messages between nodes (`--broker
    /// redis://HOST:PORT`); `None`: the in-process broker of a single node. Needs a PostgreSQL
    /// `--db` that every node shares. A `Secret`, as the URL may hold a password.
    pub broker: Option<Secret>,
    /// This node's id on the bus (`--node-id`); `None`: a random one each start. A node skips its
    /// own batches coming back on the channel by it, so no two live nodes may share one.
    pub node_id: Option<u64>,
    /// The pub/sub channel the nodes share (`--broker-channel`): two clusters on one Redis use two.
    pub broker_channel: String,
    /// How long a node holds a message that arrived ahead of a gap (another node's earlier id
    /// still on its way) before reading the gap from the store.
    pub gap_wait: Duration,
    /// Reverse proxies and load balancers (`--trusted-proxy`) whose `Forwarded` or
    /// `X-Forwarded-For` header names the client: behind a proxy every connection comes from the
    /// proxy's address, so without this every client would share one per-address limit. Empty:
    /// those headers are ignored and the peer address is the client (no one can spoof it).
    pub trusted_proxies: Vec<IpNet>,
    /// Whether connections and API posts without a credential (guests) are let in (`--guests`).
    /// `None`: yes, unless `auth_secret` is set (token auth keeps refusing anonymous callers);
    /// see [`Config::guests_allowed`].
    pub guests: Option<bool>,
    /// Who may sign up for an account over HTTP (`--signup open|invite|closed`).
    pub signup: crate::accounts::Signup,
    /// Mark session cookies `Secure` even on plain-HTTP requests (`--secure-cookies`): for a TLS
    /// proxy that does not say `X-Forwarded-Proto`/`Forwarded: proto=https`.
    pub secure_cookies: bool,
    /// How often expired sign-in sessions are deleted from the store (`--session-purge-secs`;
    /// also once at start): expired rows already open nothing, this keeps the table small.
    pub session_purge_every: Duration,
    /// How many sign-ins per name and per address, and sign-ups per address, are allowed per
    /// minute (`--sign-in-per-name`, `--sign-in-per-address`, `--sign-ups-per-address`).
    pub login_limits: crate::accounts::LimitSettings,
}

impl Config {
    /// Whether guests (callers with no token and no session cookie) are let in: `--guests` when
    /// given, otherwise on unless token auth is on.
    pub fn guests_allowed(&self) -> bool {
        self.guests.unwrap_or(self.auth_secret.is_none())
    }
}

/// Tunables the hub enforces: rooms, membership, queues and presence (the `hub` slice of
/// [`Config`]). Defined here so the hub depends on the config, not the other way round.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// Frames a connection may have queued before it is closed as a slow consumer.
    pub outbox_frames: usize,
    /// Rooms one connection may be in at once.
    pub max_rooms_per_connection: usize,
    /// Members one room may hold on this node (`None`: unlimited).
    pub max_room_members: Option<usize>,
    /// Posts waiting for the committer before posters wait (backpressure).
    pub post_queue: usize,
    /// Most posts stored in one transaction.
    pub max_batch: usize,
    /// Rooms with more members than this stop announcing each arrival and departure; their
    /// members get one `presence` `{"count": N}` frame per tick instead (O(N) per tick instead of
    /// O(N) per join), and `joined` lists only this many names.
    pub presence_limit: usize,
    /// How often large rooms announce their member count.
    pub presence_tick: Duration,
    /// Count frames per second one room's announcements may cost: a room of N members gets its
    /// count at most every N / budget seconds (and never more often than every tick), so a
    /// 19,000-member room with a join or leave every second does not write 19,000 frames every
    /// second for as long as it lives.
    pub presence_count_budget: usize,
    /// Members served per slice of a large room's message fan-out before other tasks get a turn.
    pub fan_out_slice: usize,
    /// With a cluster broker (`--broker`): how often this node refreshes its presence in Redis
    /// and tells the others it is alive. Unused on one node.
    pub presence_heartbeat: Duration,
    /// With a cluster broker: how long a node may stay silent before the others drop its
    /// members (and the TTL of its presence in Redis). A node killed with -9 leaves everyone's
    /// view at most this plus half a second after its last heartbeat; keep it at least three
    /// heartbeats.
    pub presence_expiry: Duration,
    /// Where uploaded files are kept, so the hub can check a post's attachment names a stored
    /// file and read its type and size (issue 20); `serve` sets it to `--files-dir`. `None`
    /// (the default, for hubs built without a server): no file can be attached.
    pub files_dir: Option<PathBuf>,
}

impl Default for HubSettings {
    fn default() -> Self {
        Self {
            outbox_frames: 1024,
            max_rooms_per_connection: 100,
            max_room_members: None,
            post_queue: 4096,
            max_batch: 256,
            presence_limit: 200,
            presence_tick: Duration::from_secs(1),
            presence_count_budget: 5000,
            fan_out_slice: 4096,
            presence_heartbeat: Duration::from_secs(5),
            presence_expiry: Duration::from_secs(15),
            files_dir: None,
        }
    }
}

impl HubSettings {
    /// These settings with their floors applied (see [`Config::validated`]); refused when the
    /// presence expiry is under three heartbeats: one late beat (a busy Redis, a paused VM)
    /// would otherwise make a live node look dead and its members leave and rejoin on every node.
    fn validated(mut self) -> Result<HubSettings, Error> {
        self.presence_tick = self.presence_tick.max(MIN_PRESENCE_PERIOD);
        self.presence_heartbeat = self.presence_heartbeat.max(MIN_PRESENCE_PERIOD);
        self.presence_count_budget = self.presence_count_budget.max(1);
        self.fan_out_slice = self.fan_out_slice.max(1);
        if self.presence_expiry < self.presence_heartbeat.saturating_mul(3) {
            return Err(Error::Config(format!(
                "--presence-expiry-ms ({}) must be at least three --presence-heartbeat-ms ({})",
                self.presence_expiry.as_millis(),
                self.presence_heartbeat.as_millis()
            )));
        }
        Ok(self)
    }
}

/// Open files kept free for the database, the listener, logs and accept bursts when the
/// connection cap is derived from the open-file limit.
pub(crate) const FD_HEADROOM: usize = 64;

/// A secret string whose `Debug` never shows it, so a logged config does not leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that signs or verifies with it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where history lives, as `--db` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// The embedded SQLite file at this path.
    Sqlite(PathBuf),
    /// A PostgreSQL server.
    Postgres(PostgresUrl),
}

impl Database {
    /// Reads `postgres://...` or `postgresql://...` (PostgreSQL), `sqlite://PATH`, `sqlite:PATH`
    /// or a bare path (SQLite). Any other scheme is refused rather than taken for a file name.
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(PostgresUrl::new(url)));
        }
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if url.contains("://") {
            let scheme = url.split("://").next().unwrap_or_default();
            return Err(format!(
                "unsupported database scheme {scheme:?}: use sqlite://PATH or postgres://USER@HOST:PORT/DB"
            ));
        }
        Ok(Self::Sqlite(PathBuf::from(url)))
    }
}

/// A PostgreSQL connection URL. It may carry a password, so its `Debug` and `Display` show
/// [`PostgresUrl::redacted`]: logs and error messages can name the database without leaking it.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl(String);

impl PostgresUrl {
    /// Wraps a `postgres://` or `postgresql://` URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL itself, for the one place that connects with it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`: the one in `user:password@` and a
    /// `password=` query parameter.
    pub(crate) fn redacted(&self) -> String {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("", self.0.as_str()));
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _password)) => format!("{user}:***@{host}"),
                None => authority.to_owned(),
            },
            None => authority.to_owned(),
        };
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let query: Vec<String> = query
                    .split('&')
                    .map(|pair| match pair.split_once('=') {
                        Some(("password", _)) => "password=***".to_owned(),
                        _ => pair.to_owned(),
                    })
                    .collect();
                format!("{path}?{}", query.join("&"))
            }
            None => tail.to_owned(),
        };
        format!("{scheme}://{authority}{tail}")
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({})", self.redacted())
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Reads one `--trusted-proxy` value: a network in CIDR notation (`10.0.0.0/8`,
/// `fd00::/8`) or a single address (`192.0.2.10`, taken as its /32 or /128). Host bits after the
/// prefix are dropped (`10.1.2.3/8` is `10.0.0.0/8`). Refused with a message naming the value,
/// so a typo stops the server at start instead of silently trusting no one, or the wrong ones.
pub(crate) fn parse_trusted_proxy(value: &str) -> Result<IpNet, String> {
    let value = value.trim();
    if let Ok(net) = value.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    if let Ok(addr) = value.parse::<std::net::IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    Err(format!(
        "{value:?} is not a network in CIDR notation (such as 10.0.0.0/8 or fd00::/8) or an IP \
         address"
    ))
}

/// Shortest accepted auth secret: HS256 with a short secret can be brute-forced offline from one
/// token.
pub(crate) const MIN_SECRET_BYTES: usize = 16;

/// Shortest presence tick and heartbeat: a zero period would spin the ticker.
const MIN_PRESENCE_PERIOD: Duration = Duration::from_millis(10);

/// What a zero timeout or ping interval becomes: a zero one would close every connection at once
/// or ping in a loop.
const MIN_TIMEOUT: Duration = Duration::from_secs(1);

impl Config {
    /// The config `serve` runs with: empty secrets and broker URLs read as unset, periods and
    /// counts that must not be zero raised to their floor, and refused (with a message naming
    /// the flag) when the auth secret is too short or the presence expiry is under three
    /// heartbeats. `serve` calls it, so a `Config` built in a test is checked exactly like one
    /// from the command line.
    pub(crate) fn validated(mut self) -> Result<Config, Error> {
        if self
            .auth_secret
            .as_ref()
            .is_some_and(|s| s.expose().is_empty())
        {
            self.auth_secret = None;
        }
        if self
            .auth_secret
            .as_ref()
            .is_some_and(|s| s.expose().len() < MIN_SECRET_BYTES)
        {
            return Err(Error::Config(format!(
                "--auth-secret must be at least {MIN_SECRET_BYTES} bytes"
            )));
        }
        if self
            .broker
            .as_ref()
            .is_some_and(|url| url.expose().is_empty())
        {
            self.broker = None;
        }
        for period in [
            &mut self.ping_interval,
            &mut self.idle_timeout,
            &mut self.header_timeout,
            &mut self.request_timeout,
        ] {
            if period.is_zero() {
                *period = MIN_TIMEOUT;
            }
        }
        self.hub = self.hub.validated()?;
        Ok(self)
    }

    /// Rejections within the abuse window that close a connection.
    pub(crate) fn abuse_threshold(&self) -> u32 {
        self.abuse_rejections
            .unwrap_or_else(|| self.rate_limit.saturating_mul(10))
            .max(1)
    }

    /// The database file this config uses.
    pub fn database_path(&self) -> PathBuf {
        self.db_path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("hubbub.db"))
    }

    /// The directory uploaded files are kept in: `--files-dir`, else `files` in the data
    /// directory (also with PostgreSQL, whose nodes then each need it on shared storage).
    pub fn files_path(&self) -> PathBuf {
        self.files_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("files"))
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 3000)),
            data_dir: PathBuf::from("hubbub-data"),
            db_path: None,
            postgres: None,
            migrate_at_start: true,
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
            max_connections: None,
            max_connections_per_ip: 256,
            rate_limit: 10,
            rate_burst: 20,
            abuse_rejections: None,
            abuse_window: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_body_bytes: 64 * 1024,
            max_upload_bytes: 10 * 1024 * 1024,
            files_dir: None,
            upload_types: UploadTypes::Any,
            allowed_origins: Vec::new(),
            auth_secret: None,
            broker: None,
            node_id: None,
            broker_channel: "hubbub:messages".to_owned(),
            gap_wait: Duration::from_millis(200),
            trusted_proxies: Vec::new(),
            guests: None,
            signup: crate::accounts::Signup::Open,
            secure_cookies: false,
            session_purge_every: Duration::from_secs(3600),
            login_limits: crate::accounts::LimitSettings::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_built_in_code_is_refused_for_a_short_auth_secret() {
        let config = Config {
            auth_secret: Some(Secret::new("short")),
            ..Config::default()
        };
        let err = config.validated().unwrap_err().to_string();
        assert!(
            err.contains("--auth-secret must be at least 16 bytes"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_auth_secret_or_broker_means_unset() {
        let config = Config {
            auth_secret: Some(Secret::new("")),
            broker: Some(Secret::new("")),
            ..Config::default()
        }
        .validated()
        .unwrap();
        assert!(config.auth_secret.is_none() && config.broker.is_none());
    }

    #[test]
    fn a_presence_expiry_under_three_heartbeats_is_refused() {
        let mut config = Config::default();
        config.hub.presence_heartbeat = Duration::from_secs(5);
        config.hub.presence_expiry = Duration::from_secs(10);
        let err = config.validated().unwrap_err().to_string();
        assert!(
            err.contains(
                "--presence-expiry-ms (10000) must be at least three --presence-heartbeat-ms (5000)"
            ),
            "{err}"
        );
    }

    #[test]
    fn zero_periods_and_counts_are_raised_to_their_floors() {
        let mut config = Config {
            ping_interval: Duration::ZERO,
            idle_timeout: Duration::ZERO,
            header_timeout: Duration::ZERO,
            request_timeout: Duration::ZERO,
            ..Config::default()
        };
        config.hub.presence_tick = Duration::ZERO;
        config.hub.fan_out_slice = 0;
        config.hub.presence_count_budget = 0;
        let config = config.validated().unwrap();
        assert_eq!(config.ping_interval, Duration::from_secs(1));
        assert_eq!(config.idle_timeout, Duration::from_secs(1));
        assert_eq!(config.header_timeout, Duration::from_secs(1));
        assert_eq!(config.request_timeout, Duration::from_secs(1));
        assert_eq!(config.hub.presence_tick, Duration::from_millis(10));
        assert_eq!(
            (config.hub.fan_out_slice, config.hub.presence_count_budget),
            (1, 1)
        );
    }

    #[test]
    fn the_default_config_is_valid_unchanged() {
        let config = Config::default().validated().unwrap();
        assert_eq!(format!("{config:?}"), format!("{:?}", Config::default()));
    }

    #[test]
    fn debug_output_redacts_the_auth_secret() {
        let config = Config {
            auth_secret: Some(Secret::new("hunter2")),
            ..Config::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn debug_output_redacts_a_postgres_password() {
        let config = Config {
            postgres: Some(PostgresUrl::new(
                "postgres://hub:hunter2@db.example:5432/chat",
            )),
            ..Config::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("postgres://hub:***@db.example:5432/chat"),
            "{shown}"
        );
    }

    #[test]
    fn a_redacted_url_keeps_everything_but_the_password() {
        let redacted = |url: &str| PostgresUrl::new(url).redacted();
        assert_eq!(
            redacted("postgresql://hub:p%40ss:w@db:5432/chat?sslmode=require"),
            "postgresql://hub:***@db:5432/chat?sslmode=require"
        );
        assert_eq!(
            redacted("postgres://db/chat?user=hub&password=hunter2&sslmode=disable"),
            "postgres://db/chat?user=hub&password=***&sslmode=disable"
        );
        assert_eq!(
            redacted("postgres://hub@127.0.0.1:5433/chat"),
            "postgres://hub@127.0.0.1:5433/chat"
        );
    }

    #[test]
    fn trusted_proxies_are_networks_or_single_addresses() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        assert_eq!(parse_trusted_proxy("10.0.0.0/8"), Ok(net("10.0.0.0/8")));
        assert_eq!(parse_trusted_proxy(" 10.1.2.3/8 "), Ok(net("10.0.0.0/8")));
        assert_eq!(parse_trusted_proxy("192.0.2.10"), Ok(net("192.0.2.10/32")));
        assert_eq!(parse_trusted_proxy("fd00::/8"), Ok(net("fd00::/8")));
        assert_eq!(parse_trusted_proxy("::1"), Ok(net("::1/128")));
        for bad in ["10.0.0.0/33", "10.0.0/8", "proxy.example", "", "10.0.0.0/"] {
            let err = parse_trusted_proxy(bad).unwrap_err();
            assert!(err.contains("CIDR"), "{bad}: {err}");
        }
    }

    #[test]
    fn db_urls_select_sqlite_or_postgres() {
        assert_eq!(
            Database::parse("sqlite:///var/lib/hubbub.db"),
            Ok(Database::Sqlite(PathBuf::from("/var/lib/hubbub.db")))
        );
        assert_eq!(
            Database::parse("chat.db"),
            Ok(Database::Sqlite(PathBuf::from("chat.db")))
        );
        for url in ["postgres://hub@db/chat", "postgresql://hub@db/chat"] {
            assert_eq!(
                Database::parse(url),
                Ok(Database::Postgres(PostgresUrl::new(url)))
            );
        }
        assert!(Database::parse("mysql://db/chat").is_err());
    }
}
