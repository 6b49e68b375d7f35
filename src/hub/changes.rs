//! Changes to stored messages (issue 20; docs/protocol.md "Changes to messages"): a session's
//! `edit` and `react` frames, an author's own `delete`, the live `change` frames, and the
//! catch-up a `join` with `changes_since` gets.
//!
//! **Who.** Only a signed-in account edits, deletes as author, or reacts: a guest's name proves
//! nothing (any guest may take a free name), so guests get `unauthorized`. The author is the
//! account stored with the message (`messages.author_id`), so a message a guest posted can be
//! deleted only by a moderator. A muted or banned account changes nothing in the room.
//!
//! **Store first, then everyone.** The store writes the change and its feed row in one
//! transaction (store/changes.rs); then a `MessageChanged` control event reaches every node,
//! this one included, which fans the `change` frame (encoded once by the store's payload) out
//! to its members, puts the message's new `msg` frame in the room's recent frames (edits,
//! deletes), and for a delete also sends issue 19's `deleted`. This node holds
//! `change_order` from the store write to its own delivery, so its changes reach its members in
//! feed order.
//!
//! **Catch-up without gap or duplicate.** A joining member is added (held) before the catch-up
//! reads the feed, exactly as for messages (member.rs): a change committed after the read began
//! is delivered live (held until the replay ends); one committed before is in the read. The
//! highest number the catch-up sent becomes the member's `changes_up_to`, and held or later
//! live `change` frames at or below it are skipped, so a change both read and delivered reaches
//! the client once.

use bytes::Bytes;
use tracing::{debug, warn};

use super::session::Session;
use super::{Hub, Inner, JOIN_BACKLOG};
use crate::broker::{ConnId, Control};
use crate::protocol::changes::ChangeFrame;
use crate::protocol::moderation::DeletedMessage;
use crate::protocol::{ErrorCode, Ref, RoomName, ServerFrame};
use crate::store::StoredMessage;
use crate::store::accounts::AccountId;
use crate::store::changes::{CHANGE_PAGE, Change, ChangeOutcome, Deleter, Reaction};
use crate::store::moderation::{Restriction, now_ms};
use crate::transport::outbox::Outgoing;

impl Session {
    /// Carries out an `edit` or `react` frame (see the module doc for the rules).
    pub(super) async fn change(&mut self, frame: ChangeFrame, reference: Option<Ref>) {
        let room = frame.room().clone();
        let Some(account) = self.changer(&room, reference.clone()).await else {
            return;
        };
        let hub = self.hub.clone();
        let _order = hub.inner.change_order.lock().await;
        let changes = &hub.people().changes;
        let (action, outcome) = match &frame {
            ChangeFrame::Edit { id, text, .. } => (
                "edit",
                changes
                    .edit_message(room.as_str(), *id, account, text, now_ms())
                    .await,
            ),
            ChangeFrame::React { id, emoji, on, .. } => {
                let reaction = Reaction {
                    account,
                    name: &self.name,
                    emoji,
                    on: *on,
                };
                ("react", changes.react(room.as_str(), *id, &reaction).await)
            }
        };
        let id = match frame {
            ChangeFrame::Edit { id, .. } | ChangeFrame::React { id, .. } => id,
        };
        match outcome {
            Ok(outcome) => self.changed(&room, id, action, outcome, reference).await,
            Err(err) => self.store_failed(&room, action, &err, reference),
        }
    }

    /// A `delete` by the message's author: `true` when it was handled here (done, or refused
    /// for a reason other than authorship); `false` when the caller is not the author (a guest,
    /// or another account's message), so the moderator path decides.
    pub(super) async fn delete_own(
        &mut self,
        room: &RoomName,
        id: u64,
        reference: Option<Ref>,
    ) -> bool {
        let Some(account) = self.access.account else {
            return false;
        };
        if !self.access.grant.allows(room) || !self.may_change_silently(room, account).await {
            // The moderator path answers (an operator may act where an author may not).
            return false;
        }
        let hub = self.hub.clone();
        let _order = hub.inner.change_order.lock().await;
        let outcome = hub
            .people()
            .changes
            .delete_message(room.as_str(), id, Deleter::Author(account))
            .await;
        match outcome {
            Ok(ChangeOutcome::NotYours) => false,
            Ok(outcome) => {
                self.changed(room, id, "delete", outcome, reference).await;
                true
            }
            Err(err) => {
                self.store_failed(room, "delete", &err, reference);
                true
            }
        }
    }

    /// Whether `room` has message `id` for a reply to answer; else answers `not_found` (or
    /// `store_unavailable`), so nothing is stored.
    pub(super) async fn reply_target_exists(
        &self,
        room: &RoomName,
        id: u64,
        reference: Option<Ref>,
    ) -> bool {
        match self.hub.message_exists(room, id).await {
            Ok(true) => true,
            Ok(false) => {
                let message = format!("no message {id} in {room} to reply to");
                self.reject_with(ErrorCode::NotFound, &message, reference);
                false
            }
            Err(err) => {
                self.store_failed(room, "reply", &err, reference);
                false
            }
        }
    }

    /// A moderator's delete (hub/moderation.rs checked the rights), through the change feed.
    pub(super) async fn delete_as_moderator(
        &mut self,
        room: &RoomName,
        id: u64,
        audit: &crate::store::moderation::AuditRecord,
        reference: Option<Ref>,
    ) {
        let hub = self.hub.clone();
        let _order = hub.inner.change_order.lock().await;
        let outcome = hub
            .people()
            .changes
            .delete_message(room.as_str(), id, Deleter::Moderator(audit))
            .await;
        match outcome {
            Ok(outcome) => self.changed(room, id, "delete", outcome, reference).await,
            Err(err) => self.store_failed(room, "delete", &err, reference),
        }
    }

    /// Whether `account` may change its own messages in `room` (it sees the room and is neither
    /// banned nor muted there), without answering: a `delete` that fails this goes on to the
    /// moderator rules, which answer.
    async fn may_change_silently(&self, room: &RoomName, account: AccountId) -> bool {
        let Ok(policy) = self.hub.policy(room.as_str()).await else {
            return false;
        };
        let now = now_ms();
        policy.visible_to(Some(account))
            && policy
                .moderation
                .restricted(Restriction::Ban, account, now)
                .is_none()
            && policy
                .moderation
                .restricted(Restriction::Mute, account, now)
                .is_none()
    }

    /// The caller's account, if it may change messages in `room`; else answers why not.
    async fn changer(&self, room: &RoomName, reference: Option<Ref>) -> Option<AccountId> {
        let Some(account) = self.access.account else {
            let message = "sign in to edit or react: guests cannot change messages";
            self.reject_with(ErrorCode::Unauthorized, message, reference);
            return None;
        };
        if !self.access.grant.allows(room) {
            let message = format!("your token does not allow room {room}");
            self.reject_with(ErrorCode::Unauthorized, &message, reference);
            return None;
        }
        let policy = self
            .visible_policy(room, "change", reference.clone())
            .await?;
        let now = now_ms();
        if let Some(ban) = policy.moderation.restricted(Restriction::Ban, account, now) {
            let message = format!("you are banned from {room}");
            debug!(conn = self.id, %room, until = ?ban.until_ms, "change refused: banned");
            self.reject_with(ErrorCode::Banned, &message, reference);
            return None;
        }
        if let Some(mute) = policy
            .moderation
            .restricted(Restriction::Mute, account, now)
        {
            let message = format!("you are muted in {room}");
            debug!(conn = self.id, %room, until = ?mute.until_ms, "change refused: muted");
            self.reject_with(ErrorCode::Muted, &message, reference);
            return None;
        }
        Some(account)
    }

    /// Answers a change's outcome; a stored change goes to every node first.
    async fn changed(
        &self,
        room: &RoomName,
        id: u64,
        action: &'static str,
        outcome: ChangeOutcome,
        reference: Option<Ref>,
    ) {
        let refusal = match outcome {
            ChangeOutcome::Changed { change, message } => {
                debug!(conn = self.id, %room, id, seq = change.seq, action, "message changed");
                self.hub
                    .publish_change(room, &change, message.as_ref(), action == "delete")
                    .await;
                None
            }
            ChangeOutcome::Unchanged => None,
            ChangeOutcome::Missing => {
                Some((ErrorCode::NotFound, format!("no message {id} in {room}")))
            }
            ChangeOutcome::Gone => Some((
                ErrorCode::NotFound,
                format!("message {id} in {room} was deleted"),
            )),
            ChangeOutcome::NotYours => Some((
                ErrorCode::Forbidden,
                format!("message {id} in {room} is not yours: you may only {action} your own"),
            )),
        };
        match refusal {
            Some((code, message)) => self.reject_with(code, &message, reference),
            None => self.push(
                ServerFrame::Done {
                    reference: reference.as_ref(),
                    room: room.as_str(),
                }
                .encode(),
            ),
        }
    }

    /// Sends a joining member the room's changes after `after`, in feed order, and records the
    /// highest it sent so held and later live copies are skipped (module doc). Called between
    /// the replay and the release of the member's held frames.
    pub(super) async fn catch_up_changes(
        &self,
        room: &RoomName,
        after: u64,
        reference: Option<Ref>,
    ) {
        let changes = &self.hub.people().changes;
        let mut up_to = after;
        loop {
            let page = match changes
                .changes_after(room.as_str(), up_to, CHANGE_PAGE)
                .await
            {
                Ok(page) => page,
                Err(err) => return self.history_failed(room, "changes", &err, reference),
            };
            if page.is_empty() && up_to == after && after > 0 {
                // A cursor beyond the room's feed (a client that remembers a server whose data
                // was wiped) would otherwise hide every change up to it.
                match changes.last_change(room.as_str()).await {
                    Ok(last) => up_to = up_to.min(last),
                    Err(err) => return self.history_failed(room, "changes", &err, reference),
                }
            }
            let frames: Vec<Outgoing> = page.iter().map(change_frame).collect();
            if !frames.is_empty() && !self.outbox.send_all(&frames).await {
                return;
            }
            up_to = page.last().map_or(up_to, |change| change.seq);
            if page.len() < CHANGE_PAGE as usize {
                break;
            }
        }
        self.hub.caught_up_changes(room, self.id, up_to);
    }
}

/// A feed row as the frame members get.
fn change_frame(change: &Change) -> Outgoing {
    Outgoing::change(change.frame(), change.seq)
}

impl Hub {
    /// Change `change` of `room` is stored: every node delivers it (module doc). `message` is
    /// the message's new state when its text changed.
    async fn publish_change(
        &self,
        room: &RoomName,
        change: &Change,
        message: Option<&StoredMessage>,
        deleted: bool,
    ) {
        let message = message.map_or_else(Bytes::new, |message| {
            ServerFrame::Msg(message.view_marking(self.marks_guests())).encode()
        });
        let control = Control::MessageChanged {
            room: room.clone(),
            seq: change.seq,
            id: change.message_id,
            change: change.frame(),
            message,
            deleted,
        };
        if let Err(err) = self.inner.broker.publish_control(control).await {
            warn!(%room, seq = change.seq, cause = %err, "change not published to other nodes");
        }
    }

    /// Whether `room` holds message `id` (what a reply may answer): one indexed store read,
    /// only for replies. Ids are per room, so a message of another room is not found.
    pub async fn message_exists(
        &self,
        room: &RoomName,
        id: u64,
    ) -> Result<bool, crate::store::StoreError> {
        self.people()
            .changes
            .message_exists(room.as_str(), id)
            .await
    }

    /// Records the highest change a joining member's catch-up sent (member.rs).
    fn caught_up_changes(&self, room: &RoomName, id: ConnId, up_to: u64) {
        let mut rooms = self.lock_rooms();
        if let Some(member) = rooms
            .local
            .get_mut(room.as_str())
            .and_then(|entry| entry.member_mut(id))
        {
            member.changes_up_to = u32::try_from(up_to).unwrap_or(u32::MAX);
        }
    }

    /// The room's newest change number: read *before* a history page, it is a
    /// `changes_since` cursor that misses nothing the page does not show (a change committed
    /// after this read is numbered above it; one before it is in the page's state).
    pub async fn change_cursor(&self, room: &RoomName) -> Result<u64, crate::store::StoreError> {
        self.people().changes.last_change(room.as_str()).await
    }

    /// The page's edit times and reactions (history's `state`).
    pub async fn page_state(
        &self,
        room: &RoomName,
        page: &[StoredMessage],
    ) -> Result<Vec<crate::protocol::changes::MessageState>, crate::store::StoreError> {
        let (Some(first), Some(newest)) = (page.first(), page.last()) else {
            return Ok(Vec::new());
        };
        self.people()
            .changes
            .message_states(room.as_str(), first.id, newest.id)
            .await
    }
}

impl Inner {
    /// What every node does with a `MessageChanged` control event (module doc).
    pub(super) fn apply_change(
        &self,
        room: &RoomName,
        (seq, id): (u64, u64),
        change: &Bytes,
        message: &Bytes,
        deleted: bool,
    ) {
        let change = Outgoing::change(change.clone(), seq);
        let deleted = deleted.then(|| {
            let json = ServerFrame::Deleted {
                data: DeletedMessage {
                    room: room.as_str(),
                    id,
                },
            }
            .encode();
            Outgoing::control(json)
        });
        let limit = self.settings.outbox_frames;
        let result = {
            let mut rooms = self.lock_rooms();
            let Some(entry) = rooms.local.get_mut(room.as_str()) else {
                return;
            };
            if !message.is_empty() {
                // The message's current frame replaces the old one in the recent frames, and in
                // what a later seed brings (the tombstone mechanism of issue 19).
                let current = Outgoing::message(message.clone(), id);
                entry.recent.tombstone(current, JOIN_BACKLOG);
                entry.unread.changed_to(id, message);
            }
            if deleted.is_some() {
                entry.unread.delete(id);
            }
            let mut result = entry.fan_out(std::slice::from_ref(&change), None, limit);
            if let Some(deleted) = &deleted {
                let more = entry.fan_out(std::slice::from_ref(deleted), None, limit);
                result.delivered += more.delivered;
                result.overflowed += more.overflowed;
            }
            result
        };
        self.count(result);
    }
}
