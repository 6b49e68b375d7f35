//! Acks under load: a room where S senders post a total of R posts per second, each post
//! carrying a `ref`; the sender times the `ack` that hubbub sends once the post is durably
//! stored. hubbub only: the peers acknowledge nothing.

use anyhow::Result;

use crate::client::Route;
use crate::coordinator::Fleet;
use crate::run::Run;
use crate::servers::{Server, ServerKind};
use crate::spec::{FanoutPhase, RoomLayout};

use super::phase::{measured_phase, summarize};
use super::{Scenario, nonce, record};

pub async fn run(run: &mut Run, kind: ServerKind) -> Result<()> {
    let plan = run.plan.clone();
    let mut server = Server::start(kind, &run.paths, plan.server_warmup)?;
    let n = plan.acks_members;
    let mut fleet = Fleet::new(kind.mode(), Route::Chat, server.addr, RoomLayout::Single, n)
        .signed_in(kind.auth_secret());
    let result = async {
        let c = fleet.grow_to(n, plan.connect_timeout).await?;
        let senders = plan.acks_senders.min(n);
        let phase = FanoutPhase {
            nonce: nonce(),
            senders,
            sender_stride: 1,
            rate: plan.acks_rate / senders as f64,
            duration_ms: plan.phase_ms,
            drain_ms: plan.drain_ms,
            text_len: plan.text_len,
            room_members: fleet.connected,
            until_delivered: plan.drain_until_delivered,
        };
        let (reports, samples) = measured_phase(&mut fleet, &server, phase.clone()).await?;
        let mut rec = record(
            kind,
            Scenario::Acks,
            n,
            format!("{} posts/s", plan.acks_rate),
        );
        rec.m.insert("failed".into(), c.failed as f64);
        summarize(&mut rec, &reports, &samples, &phase, run.floor_us());
        run.push(rec)?;
        anyhow::Ok(())
    }
    .await;
    fleet.stop().await;
    server.stop();
    result
}
