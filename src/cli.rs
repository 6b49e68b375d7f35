//! Command line: subcommands and flags (each also settable as a `HUBBUB_*` variable), turned into
//! a [`Config`]. Opens no sockets or databases itself.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use tokio::net::TcpListener;
use tracing::info;

use crate::config::HubSettings;
use crate::config::{Config, Database, Durability, MIN_SECRET_BYTES, Secret, parse_trusted_proxy};
use crate::error::{Error, Result};
use crate::store::copy;
use crate::token::{Claims, mint};

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
// Parsed once at start-up; the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the chat server (the default).
    Serve(ServeArgs),
    /// Print an auth token for `--auth-secret` servers: `hubbub token --sub alice --rooms
    /// 'team-*' --ttl 1h`.
    Token(TokenArgs),
    /// Apply the database schema's pending migrations for `--db`, then exit (`serve` does this
    /// at start unless `--no-migrate`).
    Migrate(MigrateArgs),
    /// Write every room's history in `--db` to stdout as JSON Lines, ids unchanged
    /// (docs/deploy.md): `hubbub export --db sqlite://hubbub-data/hubbub.db > history.jsonl`.
    Export(MigrateArgs),
    /// Read a `hubbub export` file from stdin into `--db` (migrated first), ids unchanged;
    /// messages already there identically are skipped, anything else already there refuses.
    Import(MigrateArgs),
    /// Copy every room's history from one database to another, ids unchanged:
    /// `hubbub copy --from sqlite://hubbub-data/hubbub.db --to postgres://USER@HOST:PORT/DB`.
    Copy(CopyArgs),
    /// Accounts, on the database directly (also while servers run): `hubbub user add alice
    /// --admin --password-stdin`, `list`, `disable`, `enable`, `reset-password`.
    User(crate::operator::UserArgs),
    /// Rooms' records, on the database directly: `hubbub room list`, `create --title T
    /// [--private] --owner NAME`, `add-member ROOM NAME [--role R]`, `set-topic ROOM TOPIC`.
    Room(crate::operator::RoomArgs),
    /// The moderation and operator audit log, newest first: `hubbub audit [--room R] [--limit N]`.
    Audit(crate::operator::AuditArgs),
    /// Make an invite code: for sign-up (`--signup invite`) or into a private room (`--room`).
    Invite(crate::operator::InviteArgs),
}

/// Flags of `hubbub copy`.
#[derive(Debug, Clone, Args)]
pub struct CopyArgs {
    /// The database to read: `sqlite://PATH` or a file path (must exist), or
    /// `postgres://USER@HOST:PORT/DB`.
    #[arg(long, value_parser = DatabaseParser)]
    pub from: Database,
    /// The database to write, created or migrated as `serve` would.
    #[arg(long, value_parser = DatabaseParser)]
    pub to: Database,
}

/// Flags of `hubbub migrate`: the same database flags and variables as `serve`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Directory for the embedded SQLite database.
    #[arg(long, env = "HUBBUB_DATA", default_value_os_t = defaults().data_dir)]
    pub data: PathBuf,
    /// Database: `postgres://USER@HOST:PORT/DB`, `sqlite://PATH` or a file path (default:
    /// DATA/hubbub.db).
    #[arg(long, env = "HUBBUB_DB", hide_env_values = true, value_parser = DatabaseParser)]
    pub db: Option<Database>,
}

/// Flags of `hubbub token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The holder's display name (the token's `sub`).
    #[arg(long)]
    pub sub: String,
    /// Rooms the holder may use: names or `*` patterns, comma-separated or repeated (default:
    /// every room).
    #[arg(long, value_delimiter = ',')]
    pub rooms: Vec<String>,
    /// How long the token is valid, e.g. `90s`, `30m`, `1h`, `7d`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// The server's auth secret.
    #[arg(long, env = "HUBBUB_AUTH_SECRET", hide_env_values = true)]
    pub secret: String,
}

/// The defaults of every `serve` flag: [`Config::default`] (and [`HubSettings::default`] within
/// it) is the one place they are written, so `--help`, the flags and a test's `Config` agree.
fn defaults() -> Config {
    Config::default()
}

/// A default duration as the whole milliseconds a `*-ms` flag takes.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Flags of `hubbub serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HUBBUB_ADDR", default_value_t = defaults().addr)]
    pub addr: SocketAddr,
    /// Directory for the embedded SQLite database.
    #[arg(long, env = "HUBBUB_DATA", default_value_os_t = defaults().data_dir)]
    pub data: PathBuf,
    /// Database: `postgres://USER@HOST:PORT/DB` (or `postgresql://`), `sqlite://PATH` or a file
    /// path (default: DATA/hubbub.db).
    #[arg(long, env = "HUBBUB_DB", hide_env_values = true, value_parser = DatabaseParser)]
    pub db: Option<Database>,
    /// Do not apply schema migrations at start, only check the PostgreSQL schema is current
    /// (run `hubbub migrate` as a deployment step instead).
    #[arg(long, env = "HUBBUB_NO_MIGRATE")]
    pub no_migrate: bool,
    /// Milliseconds a commit waits on a database lock held by another process before the posts
    /// in it fail with `store_unavailable`.
    #[arg(long, env = "HUBBUB_DB_BUSY_TIMEOUT_MS", default_value_t = millis(defaults().db_busy_timeout))]
    pub db_busy_timeout_ms: u64,
    /// What an ack survives: `machine` (fsync every commit; survives power loss) or `process`
    /// (survives crashes of hubbub, acks don't wait for the disk).
    #[arg(long, env = "HUBBUB_DURABILITY", value_enum, default_value_t = defaults().durability)]
    pub durability: Durability,
    /// Longest chat message text, in bytes.
    #[arg(long, env = "HUBBUB_MAX_MESSAGE_BYTES", default_value_t = defaults().max_message_bytes)]
    pub max_message_bytes: usize,
    /// Largest WebSocket frame/message on /ws, in bytes (over it: close 1009).
    #[arg(long, env = "HUBBUB_MAX_FRAME_BYTES", default_value_t = defaults().max_frame_bytes)]
    pub max_frame_bytes: usize,
    /// Largest message on /echo, in bytes.
    #[arg(long, env = "HUBBUB_MAX_ECHO_BYTES", default_value_t = defaults().max_echo_bytes)]
    pub max_echo_bytes: usize,
    /// Do not serve the /echo WebSocket.
    #[arg(long, env = "HUBBUB_NO_ECHO")]
    pub no_echo: bool,
    /// Frames a connection may have queued before it is closed as a slow consumer (1013).
    #[arg(long, env = "HUBBUB_OUTBOX_FRAMES", default_value_t = defaults().hub.outbox_frames)]
    pub outbox_frames: usize,
    /// Rooms one connection may be in at once.
    #[arg(long, env = "HUBBUB_MAX_ROOMS_PER_CONNECTION", default_value_t = defaults().hub.max_rooms_per_connection)]
    pub max_rooms_per_connection: usize,
    /// Members one room may hold (default: unlimited).
    #[arg(long, env = "HUBBUB_MAX_ROOM_MEMBERS")]
    pub max_room_members: Option<usize>,
    /// Rooms with more members than this announce a member count per tick instead of every
    /// arrival and departure.
    #[arg(long, env = "HUBBUB_PRESENCE_LIMIT", default_value_t = defaults().hub.presence_limit)]
    pub presence_limit: usize,
    /// Milliseconds between member-count announcements in large rooms.
    #[arg(long, env = "HUBBUB_PRESENCE_TICK_MS", default_value_t = millis(defaults().hub.presence_tick))]
    pub presence_tick_ms: u64,
    /// Count frames per second one large room's announcements may cost: a room of N members gets
    /// its count at most every N / budget seconds (never more often than every tick).
    #[arg(long, env = "HUBBUB_PRESENCE_COUNT_BUDGET", default_value_t = defaults().hub.presence_count_budget)]
    pub presence_count_budget: usize,
    /// Members a large room's message fan-out serves before other work gets a turn.
    #[arg(long, env = "HUBBUB_FAN_OUT_SLICE", default_value_t = defaults().hub.fan_out_slice)]
    pub fan_out_slice: usize,
    /// Seconds between server pings.
    #[arg(long, env = "HUBBUB_PING_INTERVAL", default_value_t = defaults().ping_interval.as_secs())]
    pub ping_interval_secs: u64,
    /// Seconds a silent peer is kept before it is closed (1008).
    #[arg(long, env = "HUBBUB_IDLE_TIMEOUT", default_value_t = defaults().idle_timeout.as_secs())]
    pub idle_timeout_secs: u64,
    /// Seconds shutdown waits for connections to close.
    #[arg(long, env = "HUBBUB_SHUTDOWN_GRACE", default_value_t = defaults().shutdown_grace.as_secs())]
    pub shutdown_grace_secs: u64,
    /// Open connections (/ws, /events, /echo) before upgrades are refused with 503 (default: the
    /// open-file limit minus 64).
    #[arg(long, env = "HUBBUB_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Open connections one client IP may hold before its upgrades are refused with 429.
    #[arg(long, env = "HUBBUB_MAX_CONNECTIONS_PER_IP", default_value_t = defaults().max_connections_per_ip)]
    pub max_connections_per_ip: usize,
    /// Chat posts per second per connection, and API requests per second per IP (0: off).
    #[arg(long, env = "HUBBUB_RATE_LIMIT", default_value_t = defaults().rate_limit)]
    pub rate_limit: u32,
    /// Posts allowed at once before the rate applies (token bucket size).
    #[arg(long, env = "HUBBUB_RATE_BURST", default_value_t = defaults().rate_burst)]
    pub rate_burst: u32,
    /// Rate-limited frames within 10 s that close a connection with 1008 (default: 10x the rate).
    #[arg(long, env = "HUBBUB_ABUSE_REJECTIONS")]
    pub abuse_rejections: Option<u32>,
    /// Seconds a client may take to send request headers (slowloris guard; also the keep-alive
    /// idle limit).
    #[arg(long, env = "HUBBUB_HEADER_TIMEOUT", default_value_t = defaults().header_timeout.as_secs())]
    pub header_timeout_secs: u64,
    /// Seconds an HTTP request may take to produce its response (408 after).
    #[arg(long, env = "HUBBUB_REQUEST_TIMEOUT", default_value_t = defaults().request_timeout.as_secs())]
    pub request_timeout_secs: u64,
    /// Largest HTTP request body, in bytes (413 over it).
    #[arg(long, env = "HUBBUB_MAX_BODY_BYTES", default_value_t = defaults().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Largest file `POST /api/files` accepts, in bytes (413 over it).
    #[arg(long, env = "HUBBUB_MAX_UPLOAD_BYTES", default_value_t = defaults().max_upload_bytes)]
    pub max_upload_bytes: u64,
    /// Directory of uploaded files (content-addressed); default `DATA/files`.
    #[arg(long, env = "HUBBUB_FILES_DIR")]
    pub files_dir: Option<std::path::PathBuf>,
    /// Which uploads are kept, by the type read from the file: `any`, or `images` (PNG, JPEG,
    /// GIF, WebP; anything else is refused with 415 `bad_type`).
    #[arg(long, env = "HUBBUB_UPLOAD_TYPES", value_enum, default_value_t = defaults().upload_types)]
    pub upload_types: crate::config::UploadTypes,
    /// A page origin (`https://chat.example`) allowed to open /ws and /events besides this
    /// server's own; repeatable, or comma-separated in the variable; `*` allows any.
    #[arg(long, env = "HUBBUB_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origin: Vec<String>,
    /// Secret that turns token auth on (HS256); clients then need a token from `hubbub token`.
    #[arg(long, env = "HUBBUB_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<String>,
    /// Redis that carries messages between nodes (`redis://HOST:PORT`): run several nodes on one
    /// PostgreSQL `--db` as one chat. Refused with a SQLite database.
    #[arg(long, env = "HUBBUB_BROKER", hide_env_values = true)]
    pub broker: Option<String>,
    /// This node's id in the cluster; unique per node (default: random at each start).
    #[arg(long, env = "HUBBUB_NODE_ID")]
    pub node_id: Option<u64>,
    /// The Redis pub/sub channel the cluster's nodes share.
    #[arg(long, env = "HUBBUB_BROKER_CHANNEL", default_value_t = defaults().broker_channel)]
    pub broker_channel: String,
    /// Milliseconds a node holds a message that arrived ahead of a gap before reading the gap
    /// from the database.
    #[arg(long, env = "HUBBUB_BROKER_GAP_WAIT_MS", default_value_t = millis(defaults().gap_wait))]
    pub broker_gap_wait_ms: u64,
    /// With --broker: milliseconds between this node's presence heartbeats (it refreshes its
    /// members in Redis and tells the other nodes it is alive).
    #[arg(long, env = "HUBBUB_PRESENCE_HEARTBEAT_MS", default_value_t = millis(defaults().hub.presence_heartbeat))]
    pub presence_heartbeat_ms: u64,
    /// With --broker: milliseconds a node may stay silent before the others drop its members
    /// (a node killed with -9 leaves everyone's view this long after its last heartbeat, plus at
    /// most half a second). At least three heartbeats.
    #[arg(long, env = "HUBBUB_PRESENCE_EXPIRY_MS", default_value_t = millis(defaults().hub.presence_expiry))]
    pub presence_expiry_ms: u64,
    /// A reverse proxy or load balancer (CIDR such as `10.0.0.0/8`, or one address) whose
    /// `Forwarded`/`X-Forwarded-For` names the client for per-address limits and logs; repeatable,
    /// or comma-separated in the variable. Everyone else's such headers are ignored.
    #[arg(
        long,
        env = "HUBBUB_TRUSTED_PROXY",
        value_name = "CIDR",
        value_delimiter = ',',
        value_parser = parse_trusted_proxy
    )]
    pub trusted_proxy: Vec<IpNet>,
    /// Let in callers without an account or token (guests) on /ws, /events and API posts:
    /// `--guests=false` refuses them with 401. Default: on, unless --auth-secret is set.
    #[arg(long, env = "HUBBUB_GUESTS", num_args = 0..=1, default_missing_value = "true")]
    pub guests: Option<bool>,
    /// Who may sign up for an account: `open`, `invite` (with an invite link) or `closed`
    /// (operators add accounts with `hubbub user add`).
    #[arg(long, env = "HUBBUB_SIGNUP", value_enum, default_value_t = defaults().signup)]
    pub signup: crate::accounts::Signup,
    /// Mark session cookies Secure even on plain-HTTP requests (behind a TLS proxy that does not
    /// send X-Forwarded-Proto); requests that arrive over https get Secure cookies anyway.
    #[arg(long, env = "HUBBUB_SECURE_COOKIES")]
    pub secure_cookies: bool,
    /// Seconds between purges of expired sign-in sessions from the database (one also runs at
    /// start). Expired sessions sign nobody in either way; this only keeps the table small.
    #[arg(long, env = "HUBBUB_SESSION_PURGE_SECS", default_value_t = defaults().session_purge_every.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub session_purge_secs: u64,
    /// Sign-in attempts allowed per account name (known or not) per minute: this many at once,
    /// then one every 60/N seconds. Slows password guessing against one account.
    #[arg(long, env = "HUBBUB_SIGN_IN_PER_NAME", default_value_t = defaults().login_limits.per_name_per_minute, value_parser = clap::value_parser!(u32).range(1..))]
    pub sign_in_per_name: u32,
    /// Sign-in attempts allowed per client address per minute (any names), as above. Slows one
    /// address spraying passwords over many accounts.
    #[arg(long, env = "HUBBUB_SIGN_IN_PER_ADDRESS", default_value_t = defaults().login_limits.per_address_per_minute, value_parser = clap::value_parser!(u32).range(1..))]
    pub sign_in_per_address: u32,
    /// Sign-ups allowed per client address per minute, as above. Sign-up says when a name is
    /// taken, so this is what keeps names from being probed quickly.
    #[arg(long, env = "HUBBUB_SIGN_UPS_PER_ADDRESS", default_value_t = defaults().login_limits.signups_per_address_per_minute, value_parser = clap::value_parser!(u32).range(1..))]
    pub sign_ups_per_address: u32,
}

impl ServeArgs {
    /// The config these flags describe, checked by [`Config::validated`] (floors, the auth
    /// secret's length, the presence expiry rule).
    pub(crate) fn to_config(&self) -> Result<Config> {
        let (db_path, postgres) = database_fields(self.db.as_ref());
        Config {
            addr: self.addr,
            data_dir: self.data.clone(),
            db_path,
            postgres,
            migrate_at_start: !self.no_migrate,
            db_busy_timeout: Duration::from_millis(self.db_busy_timeout_ms),
            durability: self.durability,
            max_message_bytes: self.max_message_bytes,
            max_frame_bytes: self.max_frame_bytes,
            echo_enabled: !self.no_echo,
            max_echo_bytes: self.max_echo_bytes,
            ping_interval: Duration::from_secs(self.ping_interval_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            rate_limit: self.rate_limit,
            rate_burst: self.rate_burst,
            abuse_rejections: self.abuse_rejections,
            abuse_window: defaults().abuse_window,
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            max_body_bytes: self.max_body_bytes,
            max_upload_bytes: self.max_upload_bytes,
            files_dir: self.files_dir.clone(),
            upload_types: self.upload_types,
            allowed_origins: self.allowed_origin.clone(),
            auth_secret: self.auth_secret.clone().map(Secret::new),
            broker: self.broker.clone().map(Secret::new),
            node_id: self.node_id,
            broker_channel: self.broker_channel.clone(),
            gap_wait: Duration::from_millis(self.broker_gap_wait_ms),
            trusted_proxies: self.trusted_proxy.clone(),
            guests: self.guests,
            signup: self.signup,
            secure_cookies: self.secure_cookies,
            session_purge_every: Duration::from_secs(self.session_purge_secs),
            login_limits: crate::accounts::LimitSettings {
                per_name_per_minute: self.sign_in_per_name,
                per_address_per_minute: self.sign_in_per_address,
                signups_per_address_per_minute: self.sign_ups_per_address,
            },
            hub: HubSettings {
                outbox_frames: self.outbox_frames,
                max_rooms_per_connection: self.max_rooms_per_connection,
                max_room_members: self.max_room_members,
                presence_limit: self.presence_limit,
                presence_tick: Duration::from_millis(self.presence_tick_ms),
                presence_count_budget: self.presence_count_budget,
                fan_out_slice: self.fan_out_slice,
                presence_heartbeat: Duration::from_millis(self.presence_heartbeat_ms),
                presence_expiry: Duration::from_millis(self.presence_expiry_ms),
                ..HubSettings::default()
            },
        }
        .validated()
    }
}

/// Parses `--db` with [`Database::parse`]. clap's own error for a function parser quotes the
/// value, and a URL may carry a password: this one names only what is wrong.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DatabaseParser;

impl clap::builder::TypedValueParser for DatabaseParser {
    type Value = Database;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> std::result::Result<Database, clap::Error> {
        let invalid = |message: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid --db: {message}\n"),
            )
        };
        let url = value
            .to_str()
            .ok_or_else(|| invalid("not valid UTF-8".to_owned()))?;
        Database::parse(url).map_err(invalid)
    }
}

/// `--db` as the two [`Config`] fields: a SQLite path or a PostgreSQL URL (neither: the
/// default SQLite file in the data directory).
fn database_fields(db: Option<&Database>) -> (Option<PathBuf>, Option<crate::config::PostgresUrl>) {
    match db {
        None => (None, None),
        Some(Database::Sqlite(path)) => (Some(path.clone()), None),
        Some(Database::Postgres(url)) => (None, Some(url.clone())),
    }
}

impl MigrateArgs {
    /// The config `hubbub migrate` opens the database with: defaults but for the database.
    pub(crate) fn to_config(&self) -> Config {
        let (db_path, postgres) = database_fields(self.db.as_ref());
        Config {
            data_dir: self.data.clone(),
            db_path,
            postgres,
            ..Config::default()
        }
    }
}

/// The checked config `hubbub ARGS` (the server flags, with no subcommand) runs with: flags,
/// then `HUBBUB_*` variables, then defaults. Tests start an in-process node with it from the
/// same flags a cluster's nodes get on their command lines, so one spelling serves both.
pub fn serve_config<I, T>(args: I) -> Result<Config>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let program = std::iter::once(std::ffi::OsString::from("hubbub"));
    let cli = Cli::try_parse_from(program.chain(args.into_iter().map(Into::into)))
        .map_err(|err| Error::Config(err.to_string()))?;
    cli.serve.to_config()
}

/// Runs the chosen subcommand.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Serve(args)) => serve(args).await,
        Some(Command::Token(args)) => {
            println!("{}", token(&args)?);
            Ok(())
        }
        Some(Command::Migrate(args)) => {
            println!("{}", crate::migrate(&args.to_config()).await?);
            Ok(())
        }
        Some(Command::Export(args)) => {
            let db = copy::database_or_default(args.db.as_ref(), &args.data);
            // Exported before logging: a disabled log level skips the macro's arguments.
            let exported = copy::export_to_stdout(&db).await?;
            info!("{exported}");
            Ok(())
        }
        Some(Command::Import(args)) => {
            let db = copy::database_or_default(args.db.as_ref(), &args.data);
            println!("{}", copy::import_from_stdin(&db).await?);
            Ok(())
        }
        Some(Command::Copy(args)) => {
            println!("{}", copy::copy_between(&args.from, &args.to).await?);
            Ok(())
        }
        Some(Command::User(args)) => print(crate::operator::user(args).await?),
        Some(Command::Room(args)) => print(crate::operator::room(args).await?),
        Some(Command::Audit(args)) => print(crate::operator::audit(args).await?),
        Some(Command::Invite(args)) => print(crate::operator::invite(args).await?),
        None => serve(cli.serve).await,
    }
}

/// Prints an operator command's answer.
fn print(answer: String) -> Result<()> {
    println!("{answer}");
    Ok(())
}

/// The token `hubbub token` prints.
pub(crate) fn token(args: &TokenArgs) -> Result<String> {
    if args.secret.len() < MIN_SECRET_BYTES {
        return Err(Error::Config(format!(
            "the secret must be at least {MIN_SECRET_BYTES} bytes"
        )));
    }
    let rooms = (!args.rooms.is_empty()).then(|| args.rooms.clone());
    let claims = Claims::new(&args.sub, rooms, args.ttl);
    mint(&Secret::new(args.secret.clone()), &claims).map_err(|e| Error::Config(e.to_string()))
}

async fn serve(args: ServeArgs) -> Result<()> {
    let config = args.to_config()?;
    // Every connection is a file descriptor: lift the soft limit to the hard limit, so the
    // derived connection cap is as high as the system allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => info!(open_files = limit, "open-file limit"),
        Err(err) => tracing::warn!(cause = %err, "could not raise the open-file limit"),
    }
    let listener = TcpListener::bind(config.addr).await?;
    info!(addr = %config.addr, "binding");
    crate::serve(config, listener, crate::shutdown::signal()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_with_no_flags_runs_the_default_config() {
        let cli = Cli::try_parse_from(["hubbub"]).expect("no flags parse");
        let config = cli.serve.to_config().expect("the defaults are valid");
        assert_eq!(format!("{config:?}"), format!("{:?}", Config::default()));
    }
}
