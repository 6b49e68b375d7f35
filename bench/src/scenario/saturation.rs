//! Saturation: the highest sustained delivery rate a server holds with p99 < 100 ms and no
//! loss. A room of fixed size gets an offered post rate that grows by a factor per step until
//! a step fails (or the step budget runs out).
//!
//! Each step also records the load generator's own CPU use: if it is near 1.0 the generator,
//! not the server, was the limit, and the report says so.

use anyhow::Result;

use crate::client::Route;
use crate::coordinator::Fleet;
use crate::run::Run;
use crate::servers::{Server, ServerKind};
use crate::spec::{FanoutPhase, RoomLayout};

use super::phase::{measured_phase, summarize};
use super::{Scenario, nonce, record};

/// A step passes when its p99 delivery latency is under this.
pub const P99_LIMIT_MS: f64 = 100.0;

pub async fn run(run: &mut Run, kind: ServerKind) -> Result<()> {
    let plan = run.plan.clone();
    let mut server = Server::start(kind, &run.paths, plan.server_warmup)?;
    let n = plan.sat_members;
    let mut fleet = Fleet::new(kind.mode(), Route::Chat, server.addr, RoomLayout::Single, n)
        .signed_in(kind.auth_secret());
    let result = async {
        let c = fleet.grow_to(n, plan.connect_timeout).await?;
        if c.connected == 0 {
            anyhow::bail!("no connection to {}: {:?}", kind.name(), c.errors);
        }
        let senders = plan.sat_senders.min(n);
        let mut rate = plan.sat_start_rate;
        for step in 0..plan.sat_steps {
            let phase = FanoutPhase {
                nonce: nonce(),
                senders,
                sender_stride: 1,
                rate: rate / senders as f64,
                duration_ms: plan.sat_phase_ms,
                drain_ms: plan.drain_ms,
                text_len: plan.text_len,
                room_members: fleet.connected,
                until_delivered: plan.drain_until_delivered,
            };
            let (reports, samples) = measured_phase(&mut fleet, &server, phase.clone()).await?;
            let mut rec = record(
                kind,
                Scenario::Saturation,
                n,
                format!("step {step}: {rate:.0} msg/s"),
            );
            summarize(&mut rec, &reports, &samples, &phase, run.floor_us());
            let ok = rec.m.get("p99_ms").copied().unwrap_or(f64::MAX) < P99_LIMIT_MS
                && rec.m.get("lost").copied().unwrap_or(1.0) == 0.0
                && rec.m.get("closed").copied().unwrap_or(1.0) == 0.0
                && rec.m.get("received").copied().unwrap_or(0.0) > 0.0;
            rec.m.insert("pass".into(), if ok { 1.0 } else { 0.0 });
            run.push(rec)?;
            if !ok {
                break;
            }
            rate *= plan.sat_factor;
        }
        anyhow::Ok(())
    }
    .await;
    fleet.stop().await;
    server.stop();
    result
}
