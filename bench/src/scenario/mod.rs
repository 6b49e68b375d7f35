//! The scenarios, one module each (the plan that sizes them is [`crate::plan`]).
//!
//! Every scenario starts a fresh server (so memory baselines and history are clean), drives it
//! through a [`Fleet`](crate::coordinator::Fleet), samples the server from /proc, appends
//! [`Record`]s to the results and stops everything it started.

pub mod acks;
pub mod cluster;
pub mod echo;
pub mod fanout;
pub mod idle;
pub mod phase;
pub mod rooms;
pub mod saturation;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::report::Record;
use crate::servers::ServerKind;

/// Which scenarios a run includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    Idle,
    Fanout,
    Saturation,
    Rooms,
    Acks,
    Echo,
    /// hubbub alone in five configurations (SQLite, PostgreSQL, 1–3 nodes on PostgreSQL +
    /// Redis) on a private PostgreSQL and Redis: not in [`Scenario::ALL`], since it needs both.
    Cluster,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::Idle,
        Scenario::Fanout,
        Scenario::Saturation,
        Scenario::Rooms,
        Scenario::Acks,
        Scenario::Echo,
    ];

    /// Whether the scenario means anything for `kind`: rooms and acks exist only in hubbub's
    /// protocol (the peers broadcast everything to everyone and acknowledge nothing), for guests
    /// and signed-in members alike; the cluster scenario runs guests only.
    /// The echo floor is only an echo server.
    pub fn applies_to(self, kind: ServerKind) -> bool {
        match self {
            Scenario::Rooms | Scenario::Acks => {
                matches!(kind, ServerKind::Hubbub | ServerKind::HubbubAccounts)
            }
            Scenario::Cluster => kind == ServerKind::Hubbub,
            Scenario::Echo => true,
            _ => kind != ServerKind::EchoFloor,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Idle => "idle",
            Scenario::Fanout => "fanout",
            Scenario::Saturation => "saturation",
            Scenario::Rooms => "rooms",
            Scenario::Acks => "acks",
            Scenario::Echo => "echo",
            Scenario::Cluster => "cluster",
        }
    }
}

/// A nonce for one phase's messages: unique across runs and phases.
pub fn nonce() -> u64 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (t % 1_000_000) * 1000 + COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 1000
}

/// A record with the common fields filled in.
pub fn record(kind: ServerKind, scenario: Scenario, n: usize, label: impl Into<String>) -> Record {
    Record {
        server: kind.name().to_string(),
        scenario: scenario.name().to_string(),
        n,
        label: label.into(),
        m: BTreeMap::new(),
        note: None,
    }
}

/// For `hubbub-accounts`: signs every member the scenario will connect in once beforehand (so
/// each token's account is made, and joins the rooms it will join), then restarts the server on
/// the same data directory. The scenario then measures what a team's server sees every day,
/// members who already have accounts connecting and joining, with a process whose memory holds
/// nothing of the first pass; account creation on first use is a one-off per member, timed
/// here and recorded apart (`accounts_made_s`). Guests and peers: nothing to do, `None`.
pub async fn make_accounts_beforehand(
    server: &mut crate::servers::Server,
    kind: ServerKind,
    run: &crate::run::Run,
    layout: crate::spec::RoomLayout,
    total: usize,
) -> anyhow::Result<Option<f64>> {
    if kind != ServerKind::HubbubAccounts {
        return Ok(None);
    }
    let began = std::time::Instant::now();
    let mut first = crate::coordinator::Fleet::new(
        kind.mode(),
        crate::client::Route::Chat,
        server.addr,
        layout,
        total,
    )
    .signed_in(kind.auth_secret());
    let connected = first.grow_to(total, run.plan.connect_timeout).await;
    let made_s = began.elapsed().as_secs_f64();
    first.stop().await;
    let connected = connected?;
    if connected.failed > 0 {
        anyhow::bail!(
            "{} of {total} first sign-ins failed: {:?}",
            connected.failed,
            connected.errors.first()
        );
    }
    server.restart(kind, &run.paths, run.plan.server_warmup)?;
    Ok(Some(made_s))
}
