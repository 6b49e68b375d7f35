//! Many rooms: N members spread over M rooms whose sizes follow a Zipf law (a few big rooms,
//! a long tail of small ones), one member in `stride` posting, so big rooms carry most of the
//! traffic as they do in real deployments. hubbub only: the peers have no rooms.

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
    let n = plan.rooms_members;
    let layout = RoomLayout::Zipf {
        rooms: plan.rooms_rooms,
    };
    let mut fleet =
        Fleet::new(kind.mode(), Route::Chat, server.addr, layout, n).signed_in(kind.auth_secret());
    let result = async {
        let c = fleet.grow_to(n, plan.connect_timeout).await?;
        let stride = plan.rooms_stride.max(1);
        let senders = n.div_ceil(stride);
        let phase = FanoutPhase {
            nonce: nonce(),
            senders,
            sender_stride: stride,
            rate: plan.rooms_rate / senders as f64,
            duration_ms: plan.phase_ms,
            drain_ms: plan.drain_ms,
            text_len: plan.text_len,
            room_members: 0,
            until_delivered: plan.drain_until_delivered,
        };
        let (reports, samples) = measured_phase(&mut fleet, &server, phase.clone()).await?;
        let mut rec = record(
            kind,
            Scenario::Rooms,
            n,
            format!("{} rooms, {} msg/s", plan.rooms_rooms, plan.rooms_rate),
        );
        rec.m.insert("rooms".into(), plan.rooms_rooms as f64);
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
