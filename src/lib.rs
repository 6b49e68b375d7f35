//! hubbub: a self-hosted real-time chat server.
//!
//! The crate is laid out one idea per module:
//!
//! - [`protocol`]: the wire types of protocol v1 (docs/protocol.md); a leaf with no I/O.
//! - [`hub`]: rooms, membership, per-room ordering, fan-out into each connection's bounded
//!   outbox (which writes straight to a socket that keeps up), group commit, and the
//!   transport-independent [`hub::Session`].
//! - [`store`]: durable history behind the [`store::Store`] trait (SQLite by default, PostgreSQL
//!   with `--db postgres://...`).
//! - [`broker`]: cross-node delivery behind the [`broker::Broker`] trait (in-process by default).
//! - `transport`: WebSocket (its own RFC 6455 framing, one task per connection), echo, SSE and
//!   the HTTP API; decodes, enforces limits, calls the hub. It owns each connection's write
//!   side (`transport::outbox`: the queue the hub pushes into, which writes broadcasts to the
//!   socket from the fan-out loop, partial writes, close codes).
//! - [`token`]: auth tokens (HS256 JWT): verifying them and minting them for `hubbub token`.
//! - `ready`: whether the node can take new clients (store, broker, draining): `/readyz`.
//! - [`config`], [`cli`], `operator` (the `user`/`room`/`audit`/`invite` commands), `shutdown`,
//!   `metrics`, `error` ([`Error`], [`Result`]), and `web` (the embedded client).
//!
//! [`serve`] assembles them; the binary is a thin shell around [`cli::run`]. Only what the
//! binary, tests/, bench/ and fuzz/ use is public, each item by one path; the rest is
//! `pub(crate)` or private, so it can change without anyone outside noticing.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod accounts;
pub(crate) mod broker;
pub mod cli;
pub mod config;
mod error;
pub(crate) mod files;
pub(crate) mod hub;
pub(crate) mod metrics;
pub(crate) mod operator;
pub mod protocol;
pub(crate) mod ready;
pub(crate) mod shutdown;
pub mod store;
pub mod token;
mod transport;
mod web;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use error::{Error, Result};

use config::Config;

use hub::Hub;
use metrics::Metrics;
use store::{Coalescing, People, PostgresStore, SchemaAtOpen, SqliteStore, Store};
use transport::AppState;

/// Opens the store the config names: PostgreSQL when `config.postgres` is set (migrated, or only
/// checked under `--no-migrate`), otherwise the SQLite file (created and migrated as needed).
async fn open_store(config: &Config) -> Result<(Arc<dyn Store>, People)> {
    if let Some(url) = &config.postgres {
        let schema = if config.migrate_at_start {
            SchemaAtOpen::Migrate
        } else {
            SchemaAtOpen::RequireCurrent
        };
        let store = Arc::new(
            PostgresStore::open(url, config.db_busy_timeout, config.durability, schema).await?,
        );
        return Ok((store.clone(), People::of(store)));
    }
    if config.db_path.is_none() {
        std::fs::create_dir_all(&config.data_dir)?;
    }
    let store = SqliteStore::open(
        &config.database_path(),
        config.db_busy_timeout,
        config.durability,
    )
    .await?;
    let store = Arc::new(store);
    Ok((store.clone(), People::of(store)))
}

/// Refuses `--broker` without a shared database, before anything is opened or created: with
/// SQLite each node would keep a history of its own and the chat would silently split.
fn refuse_split_history(config: &Config) -> Result<()> {
    if config.broker.is_some() && config.postgres.is_none() {
        return Err(Error::Config(
            "--broker needs a database every node shares (--db postgres://USER@HOST:PORT/DB): \
             with SQLite each node would keep its own history and the chat would split"
                .to_owned(),
        ));
    }
    Ok(())
}

/// The broker the config names: Redis with `--broker` (on the shared PostgreSQL database, see
/// [`refuse_split_history`]), else the in-process one.
/// The Redis broker is returned a second time so `serve` can stop its tasks at the end.
async fn open_broker(
    config: &Config,
    store: &Arc<dyn Store>,
) -> Result<(Arc<dyn broker::Broker>, Option<Arc<broker::RedisBroker>>)> {
    let Some(url) = &config.broker else {
        return Ok((broker::local(), None));
    };
    let settings = broker::RedisSettings {
        url: url.expose().to_owned(),
        node_id: config.node_id.unwrap_or_else(rand::random),
        channel: config.broker_channel.clone(),
        gap_wait: config.gap_wait,
        presence: broker::PresenceTiming {
            heartbeat: config.hub.presence_heartbeat,
            expiry: config.hub.presence_expiry,
        },
    };
    let redis = broker::RedisBroker::start(settings, store.clone())
        .await
        .map_err(|err| match err {
            broker::BrokerError::Store(err) => Error::Store(err),
            other => Error::Config(other.to_string()),
        })?;
    Ok((redis.clone(), Some(redis)))
}

/// The database as logs may show it: the SQLite path, or the PostgreSQL URL without password.
fn database_name(config: &Config) -> String {
    match &config.postgres {
        Some(url) => url.redacted(),
        None => format!("sqlite://{}", config.database_path().display()),
    }
}

/// Brings the configured database's schema up to date and returns a line saying so: what
/// `hubbub migrate` does. PostgreSQL is migrated under sqlx's advisory lock, so running this
/// while nodes start is safe; the SQLite file is created if missing.
pub async fn migrate(config: &Config) -> Result<String> {
    let database = database_name(config);
    if let Some(url) = &config.postgres {
        let version = PostgresStore::migrate(url).await?;
        return Ok(format!("{database}: schema up to date (version {version})"));
    }
    let store = open_store(config).await?;
    drop(store);
    Ok(format!("{database}: schema up to date"))
}

/// Runs a server on `listener` until `shutdown` resolves, then shuts down gracefully: stop
/// accepting, close every socket with 1001 after flushing pending acks, commit what was queued,
/// return. Tests bind port 0 and pass their own shutdown future. The config is checked with
/// [`Config::validated`] first, as the command line's is.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let config = config.validated()?;
    refuse_split_history(&config)?;
    let metrics = Metrics::new();
    // Identical concurrent reads (a reconnect storm's joins, gap fills) share one query.
    let (store, people) = open_store(&config).await?;
    let store: Arc<dyn Store> = Arc::new(Coalescing::new(store, &metrics));
    let (broker, redis) = open_broker(&config, &store).await?;
    let database = database_name(&config);
    let sockets = TaskTracker::new();
    let background = TaskTracker::new();
    let stop_sockets = CancellationToken::new();
    let stop_committer = CancellationToken::new();
    let readiness = ready::Readiness::new(store.clone(), broker.clone(), stop_sockets.clone());
    let hub_settings = crate::config::HubSettings {
        files_dir: Some(config.files_path()),
        ..config.hub.clone()
    };
    let hub = Hub::new(
        store,
        people,
        broker,
        hub_settings,
        metrics.clone(),
        &background,
        stop_committer.clone(),
    );
    let grace = config.shutdown_grace;
    let session_purge_every = config.session_purge_every;
    let max_connections = config
        .max_connections
        .unwrap_or_else(transport::connections_from_fd_limit);
    let http = transport::HttpSettings {
        header: config.header_timeout,
        dead_peer: config.idle_timeout,
        grace,
        max_connections,
        max_connections_per_ip: config.max_connections_per_ip,
        refused: metrics
            .connections_refused
            .get_or_create(&metrics::TransportLabel { transport: "http" })
            .clone(),
        trusted: transport::TrustedProxies::new(&config.trusted_proxies),
    };
    info!(
        max_connections,
        per_ip = config.max_connections_per_ip,
        rate_limit = config.rate_limit,
        auth = config.auth_secret.is_some(),
        trusted_proxies = config.trusted_proxies.len(),
        "limits"
    );
    let state = Arc::new(AppState::new(
        hub,
        Arc::new(config),
        metrics,
        stop_sockets.clone(),
        sockets.clone(),
        max_connections,
        readiness,
    ));
    background.spawn(
        state
            .accounts
            .clone()
            .purge_sessions_until(session_purge_every, stop_committer.clone()),
    );
    let app = transport::router(state);
    info!(addr = %listener.local_addr()?, %database, "hubbub listening");

    let stop = stop_sockets.clone();
    transport::serve_http(listener, app, http, async move {
        shutdown.await;
        info!("shutting down");
        stop.cancel();
    })
    .await?;

    // Upgraded sockets outlive axum's graceful shutdown; they are in the tracker.
    stop_sockets.cancel();
    sockets.close();
    if tokio::time::timeout(grace, sockets.wait()).await.is_err() {
        warn!(
            open = sockets.len(),
            "connections still open after the grace period"
        );
    }
    stop_committer.cancel();
    background.close();
    background.wait().await;
    if let Some(redis) = redis {
        redis.shutdown().await;
    }
    info!("stopped");
    Ok(())
}
