//! Idle: N connections joined to rooms and held, no traffic. The server's resident memory
//! before and after, divided by N, is what one idle member costs.
//!
//! The connections are added in stages on one server, so one run gives memory against N.
//! hubbub members join rooms of 100 (`Blocks`); the peers have no rooms, a connection is all
//! they hold.

use anyhow::Result;

use crate::client::Route;
use crate::coordinator::Fleet;
use crate::procfs;
use crate::run::Run;
use crate::servers::{Server, ServerKind};
use crate::spec::RoomLayout;

use super::{Scenario, record};

pub async fn run(run: &mut Run, kind: ServerKind) -> Result<()> {
    let plan = run.plan.clone();
    let mut server = Server::start(kind, &run.paths, plan.server_warmup)?;
    let total = plan.idle_stages.iter().copied().max().unwrap_or(0);
    let layout = RoomLayout::Blocks {
        size: plan.idle_room_size,
    };
    let accounts_made_s =
        super::make_accounts_beforehand(&mut server, kind, run, layout, total).await?;
    let mut fleet = Fleet::new(kind.mode(), Route::Chat, server.addr, layout, total)
        .signed_in(kind.auth_secret());
    let rss0 = procfs::rss_kib(server.pid)?;
    let result = async {
        for &n in &plan.idle_stages {
            let cpu0 = procfs::cpu(server.pid)?;
            let t0 = std::time::Instant::now();
            let c = fleet.grow_to(n, plan.connect_timeout).await?;
            let connect_s = t0.elapsed().as_secs_f64();
            tokio::time::sleep(plan.idle_settle).await;
            let rss = procfs::rss_kib(server.pid)?;
            let open = fleet.open().await?;
            let mut rec = record(kind, Scenario::Idle, n, "");
            rec.m.insert("connected".into(), fleet.connected as f64);
            rec.m.insert("open".into(), open as f64);
            rec.m.insert("failed".into(), c.failed as f64);
            rec.m.insert("connect_s".into(), connect_s);
            rec.m.insert(
                "connect_server_cpu_s".into(),
                cpu0.secs_until(&procfs::cpu(server.pid)?),
            );
            rec.m.insert("rss_before_kib".into(), rss0 as f64);
            if let Some(made) = accounts_made_s {
                rec.m.insert("accounts_made_s".into(), made);
            }
            rec.m.insert("rss_kib".into(), rss as f64);
            rec.m.insert(
                "kib_per_conn".into(),
                rss.saturating_sub(rss0) as f64 / open.max(1) as f64,
            );
            rec.note = c.errors.first().cloned();
            run.push(rec)?;
        }
        anyhow::Ok(())
    }
    .await;
    fleet.stop().await;
    server.stop();
    result
}
