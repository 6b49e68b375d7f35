//! Model test of the join invariant (the module comment of `hub/member.rs`): loom runs a join
//! racing a commit under every interleaving of their threads (up to [`SMALL`] forced switches,
//! or `LOOM_MAX_PREEMPTIONS` if lower) and fails on a deadlock or a broken assertion.
//!
//! Run it with `cargo test --features loom-model --lib hub::member::model` (`scripts/test.sh`
//! does, with the outbox's own models in `transport/outbox/model.rs`).
//!
//! What is modelled with the real code: the outbox (with loom's primitives, see
//! `transport/outbox/sync.rs`), `Room::fan_out`, `Member::joining`, `Member::take` and
//! `Member::release`. What is a mirror: the store (a vector under a lock) and the rooms lock
//! (one room under a loom mutex).

use std::sync::Arc;

use bytes::Bytes;
use loom::future::block_on;
use loom::thread;

use super::Member;
use crate::hub::room::Room;
use crate::transport::outbox::{Outbox, Outgoing};

/// Forced thread switches per execution: 3 explores the scenario in about a second.
const SMALL: usize = 3;

/// Runs `scenario` under every interleaving loom explores with at most `preemptions` forced
/// thread switches, or `LOOM_MAX_PREEMPTIONS` if that is lower.
fn model(preemptions: usize, scenario: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    let cap = builder.preemption_bound.unwrap_or(usize::MAX);
    builder.preemption_bound = Some(preemptions.min(cap));
    builder.check(scenario);
}

/// A stored message's two-byte frame.
fn message(s: &'static str, id: u64) -> Outgoing {
    Outgoing::message(Bytes::from_static(s.as_bytes()), id)
}

/// `Hub::release_held` for one member, as it does it under the rooms lock (without the resync
/// `joined`, which carries no message id).
fn release_held(room: &loom::sync::Mutex<Room>, id: u64, has_up_to: u64) {
    let mut room = room.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(member) = room.member_mut(id) {
        member.release(has_up_to, None);
    }
}

/// Message 1 is stored before a member joins; message 2 is committed and fanned out (the real
/// `Room::fan_out`) while the member joins: added with a hold buffer, replayed from the store
/// with `send_all`, then released. The member's transport reads with `recv`.
///
/// The member gets messages 1 and 2 once each, in id order, whether message 2 reached it
/// through the replay, the hold buffer or the live fan-out (before or after the release).
/// Fails (each mutation made by hand, run, reverted) when the release does not skip held
/// messages the replay sent, when `Member::take` ignores `has_up_to`, and when the fan-out
/// pushes to a member that is still replaying instead of holding: each time loom reports the
/// assertion with message 2 read twice (`left: ([Some(1), Some(2)], Some(2))`).
#[test]
fn messages_committed_during_a_join_reach_the_member_once_in_id_order() {
    const MEMBER: u64 = 7;
    model(SMALL, || {
        let store = Arc::new(loom::sync::Mutex::new(vec![message("m1", 1)]));
        let room = Arc::new(loom::sync::Mutex::new(Room::default()));
        let (outbox, receiver) = Outbox::new(4);
        let committer = thread::spawn({
            let (store, room) = (store.clone(), room.clone());
            move || {
                let frame = message("m2", 2);
                store
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(frame.clone());
                let mut room = room.lock().unwrap_or_else(|p| p.into_inner());
                room.fan_out(std::slice::from_ref(&frame), None, 4);
            }
        });
        let joiner = thread::spawn({
            let (store, room) = (store.clone(), room.clone());
            move || {
                room.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(MEMBER, Member::joining("joiner", outbox.clone()));
                let replay = store.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let has_up_to = replay.last().and_then(|frame| frame.msg_id).unwrap_or(0);
                assert!(block_on(outbox.send_all(&replay)));
                release_held(&room, MEMBER, has_up_to);
            }
        });
        let ids = block_on(async {
            let mut ids = Vec::new();
            while ids.len() < 2 {
                ids.push(receiver.recv().await.and_then(|frame| frame.msg_id));
            }
            ids
        });
        assert!(committer.join().is_ok());
        assert!(joiner.join().is_ok());
        let extra = receiver.try_recv().and_then(|frame| frame.msg_id);
        assert_eq!((ids, extra), (vec![Some(1), Some(2)], None));
    });
}
