//! One connection's protocol state, independent of its transport: its name, its rooms, and what
//! each client frame does. WebSocket and SSE both drive a `Session`; the transport only decodes
//! frames and writes what lands in the outbox.

use std::collections::HashSet;
use std::sync::Arc;

use rand::RngExt;
use tracing::{debug, warn};

use super::accounts::AccountLink;
use super::room::RecentSnapshot;
use super::{Admission, Hub, JOIN_BACKLOG, JoinRefusal, Outbox, Outgoing, PostError};
use crate::broker::{ConnId, RoomEvent};
use crate::protocol::{
    ClientFrame, ErrorCode, HistoryPage, Joined, MemberList, Ref, Rejection, Request, RoomGrant,
    RoomName, ServerFrame, VERSION, Welcome, WelcomeAccount, people::JoinedRoomState,
};
use crate::store::accounts::AccountId;
use crate::store::{StoreError, StoredMessage};

/// Messages read from the store per replay query when resuming with `since`.
const REPLAY_PAGE: u32 = 500;

/// What one connection may do. The transport builds it from the connection's token before the
/// session starts, so the hub enforces room permissions without knowing about tokens or HTTP.
#[derive(Debug, Clone)]
pub struct Access {
    /// The name was fixed by a token: `nick` to another name is refused.
    pub fixed_name: bool,
    /// The rooms the connection may join, post to, read and signal typing in.
    pub grant: RoomGrant,
    /// The signed-in account (a session cookie, or a token whose `sub` names it); `None` for a
    /// guest. Private rooms, direct messages, read markers and moderation rights hang on it.
    pub account: Option<AccountId>,
    /// What `welcome` says about the account: set for a session-cookie sign-in, `None` for
    /// guests and token holders (whose `welcome` stays as it was before accounts).
    pub welcome_account: Option<WelcomeAccount>,
}

impl Access {
    /// Everything allowed: auth is off.
    pub fn open() -> Self {
        Self {
            fixed_name: false,
            grant: RoomGrant::all(),
            account: None,
            welcome_account: None,
        }
    }

    /// A token holder: the name is the token's, the rooms are the token's.
    pub fn token(grant: RoomGrant) -> Self {
        Self {
            fixed_name: true,
            grant,
            account: None,
            welcome_account: None,
        }
    }
}

/// What every guest has when auth is off: one shared value, so the most common connection
/// allocates nothing for its access.
static OPEN_ACCESS: Access = Access {
    fixed_name: false,
    grant: RoomGrant::all(),
    account: None,
    welcome_account: None,
};

/// A session's [`Access`]: `None` stands for [`OPEN_ACCESS`] (a guest's, with auth off), else
/// the connection's own, boxed. Derefs to `Access`, so the session reads `self.access.grant`.
pub(super) struct SessionAccess(Option<Box<Access>>);

impl SessionAccess {
    fn new(access: Access) -> Self {
        let open = !access.fixed_name
            && access.grant.is_unrestricted()
            && access.account.is_none()
            && access.welcome_account.is_none();
        SessionAccess((!open).then(|| Box::new(access)))
    }
}

impl std::ops::Deref for SessionAccess {
    type Target = Access;

    fn deref(&self) -> &Access {
        self.0.as_deref().unwrap_or(&OPEN_ACCESS)
    }
}

/// A connected client: created by [`Hub::connect`], ended by [`Session::disconnect`].
pub struct Session {
    pub(super) hub: Hub,
    pub(super) id: ConnId,
    pub(super) name: String,
    /// Boxed: every idle connection's task holds its `Session`, and inline `Access` (with the
    /// account of issue 19) pushed that task past its 768-byte cell (transport/ws.rs's guard);
    /// and shared, not boxed, for a guest with open access (see [`SessionAccess`]).
    pub(super) access: SessionAccess,
    pub(super) outbox: Outbox,
    pub(super) rooms: HashSet<RoomName>,
    ever_joined: bool,
    disconnected: bool,
    /// A signed-in session's entry in the hub's account index (accounts.rs): the rooms its
    /// account was removed from reach the session through it. `None` for a guest.
    pub(super) link: Option<Arc<AccountLink>>,
}

impl Session {
    pub(super) fn new(
        hub: Hub,
        id: ConnId,
        name: Option<String>,
        access: Access,
        outbox: Outbox,
    ) -> Session {
        let name = name.unwrap_or_else(guest_name);
        let link = access
            .account
            .map(|account| hub.link_account(account, id, &outbox));
        let session = Session {
            hub,
            id,
            name,
            access: SessionAccess::new(access),
            outbox,
            rooms: HashSet::new(),
            ever_joined: false,
            disconnected: false,
            link,
        };
        session.welcome();
        session.send_sidebar();
        session
    }

    /// A session for one HTTP request that acts as one frame would (the change routes of
    /// issue 20): no `welcome`, no sidebar, no account link (nothing reaches it after the
    /// request), and no rooms; its only frames are the answer to what it handles.
    pub(super) fn for_request(
        hub: Hub,
        id: ConnId,
        name: String,
        access: Access,
        outbox: Outbox,
    ) -> Session {
        Session {
            hub,
            id,
            name,
            access: SessionAccess::new(access),
            outbox,
            rooms: HashSet::new(),
            ever_joined: false,
            disconnected: false,
            link: None,
        }
    }

    /// This connection's id, unique on this node.
    #[cfg(test)]
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Carries out one decoded client frame. Every outcome, answer or error, lands in the outbox.
    pub async fn handle(&mut self, request: Request) {
        self.drop_removed_rooms();
        let reference = request.reference;
        match request.frame {
            ClientFrame::Nick { name } => self.nick(name, reference).await,
            ClientFrame::Join {
                room,
                since,
                changes_since: None,
            } => self.join(room, since, reference).await,
            ClientFrame::Join {
                room,
                since,
                changes_since: Some(changes_since),
            } => {
                // Boxed: a v1 join's future (every connection task's) does not grow.
                Box::pin(self.join_catching_up(room, since, Some(changes_since), reference)).await;
            }
            ClientFrame::Leave { room } => self.leave(room, reference).await,
            ClientFrame::Msg {
                room,
                text,
                reply_to,
                attachment,
            } => self.post(room, text, reply_to, attachment, reference).await,
            ClientFrame::Typing { room } => self.typing(room, reference).await,
            ClientFrame::Members { room } => self.members(room, reference).await,
            ClientFrame::History {
                room,
                before,
                limit,
            } => self.history(room, before, limit, reference).await,
            ClientFrame::People(frame) => {
                // Boxed: the connection task's future stays the size it was shaped to.
                Box::pin(self.people(*frame, reference)).await;
            }
            ClientFrame::Moderation(frame) => {
                // Boxed like `People`: rare frames do not grow every frame's future.
                Box::pin(self.moderate(*frame, reference)).await;
            }
            ClientFrame::Change(frame) => {
                // Boxed like `People`.
                Box::pin(self.change(*frame, reference)).await;
            }
        }
    }

    /// Sends an `error` frame; the connection stays open.
    pub fn reject(&self, rejection: &Rejection) {
        self.push(ServerFrame::error(rejection).encode());
    }

    pub(super) fn reject_with(&self, code: ErrorCode, message: &str, reference: Option<Ref>) {
        self.reject(&Rejection {
            code,
            message: message.to_owned(),
            reference,
        });
    }

    /// Answers a store failure with `store_unavailable` and the error's client text (never the
    /// driver's, which may name files or SQL); the whole error goes to the log with its fields.
    pub(super) fn store_failed(
        &self,
        room: &RoomName,
        action: &'static str,
        err: &StoreError,
        reference: Option<Ref>,
    ) {
        warn!(conn = self.id, %room, action, error = %err, "store read failed; answered store_unavailable");
        self.reject_with(ErrorCode::StoreUnavailable, err.client_message(), reference);
    }

    /// [`Session::store_failed`] for a read a join's "no gap" rests on (its newest page, its
    /// replay, its changes catch-up): the member cannot go on from where the read stopped, so
    /// after the error the connection closes with 1013 and the client resumes with `since`.
    pub(super) fn history_failed(
        &self,
        room: &RoomName,
        action: &'static str,
        err: &StoreError,
        reference: Option<Ref>,
    ) {
        self.store_failed(room, action, err, reference);
        self.outbox.close_as_history_unavailable();
    }

    /// Answers a refused post with `store_unavailable`. The committer has logged the failed batch
    /// with its cause, so only the connection's side is logged here, at debug.
    fn post_failed(&self, room: &RoomName, err: &PostError, reference: Option<Ref>) {
        debug!(conn = self.id, %room, error = %err, "post refused; answered store_unavailable");
        self.reject_with(ErrorCode::StoreUnavailable, err.client_message(), reference);
    }

    pub(super) fn push(&self, json: bytes::Bytes) {
        if self.outbox.push(Outgoing::control(json)) == super::Pushed::Overflowed {
            self.hub.inner.metrics.slow_consumers.inc();
        }
    }

    fn welcome(&self) {
        self.push(
            ServerFrame::Welcome {
                data: Welcome {
                    name: &self.name,
                    version: VERSION,
                    account: self.access.welcome_account.as_ref(),
                },
            }
            .encode(),
        );
    }

    async fn nick(&mut self, name: String, reference: Option<Ref>) {
        if name != self.name && self.access.fixed_name {
            let message = "the name is fixed by your token";
            return self.reject_with(ErrorCode::Unauthorized, message, reference);
        }
        if name != self.name && self.access.account.is_none() && !self.name_free(&name).await {
            let message = "that name belongs to an account: sign in, or pick another name";
            return self.reject_with(ErrorCode::NameTaken, message, reference);
        }
        if name != self.name {
            let old = std::mem::replace(&mut self.name, name);
            for room in self.rooms.clone() {
                self.hub.rename_member(&room, self.id, &self.name);
                self.announce(&room, old.clone(), false).await;
                self.announce(&room, self.name.clone(), true).await;
            }
        }
        self.welcome();
    }

    /// Whether a guest may take `name`: not when it (in any case) is an account's (issue 19).
    /// A store failure refuses it too: better a refused rename than a guest passing for someone.
    async fn name_free(&self, name: &str) -> bool {
        let key = crate::accounts::name_key(name);
        match self.hub.people().names.is_free(&key).await {
            Ok(free) => free,
            Err(err) => {
                debug!(conn = self.id, error = %err, "account name check failed; nick refused");
                false
            }
        }
    }

    /// Joins `room`: `joined`, then the replay, then live traffic, with no gap and no duplicate.
    pub async fn join(&mut self, room: RoomName, since: Option<u64>, reference: Option<Ref>) {
        self.join_catching_up(room, since, None, reference).await;
    }

    /// [`Session::join`], and with `changes_since` the room's changes after it, between the
    /// replay and live traffic (hub/changes.rs), also with no gap and no duplicate.
    pub async fn join_catching_up(
        &mut self,
        room: RoomName,
        since: Option<u64>,
        changes_since: Option<u64>,
        reference: Option<Ref>,
    ) {
        if !self.access.grant.allows(&room) {
            return self.unauthorized(&room, reference);
        }
        let Some(policy) = self.visible_policy(&room, "join", reference.clone()).await else {
            return;
        };
        if !self.admitted_by_moderation(&room, &policy, reference.clone()) {
            return;
        }
        if self.rooms.contains(&room) {
            let (members, count) = self.hub.member_sample(&room);
            match self.hub.store().last_id(&room).await {
                Ok(last_id) => {
                    let state = self.joined_state(&room, &policy, last_id).await;
                    self.send_joined(&room, &members, count, last_id, state.as_ref());
                }
                Err(err) => self.store_failed(&room, "rejoin", &err, reference),
            }
            return;
        }
        if self.rooms.len() >= self.hub.settings().max_rooms_per_connection {
            let limit = self.hub.settings().max_rooms_per_connection;
            let message = format!("a connection may be in at most {limit} rooms");
            return self.reject_with(ErrorCode::TooManyRooms, &message, reference);
        }
        let admitted = match self
            .hub
            .add_member(&room, self.id, &self.name, &self.outbox)
        {
            Ok(admitted) => admitted,
            Err(JoinRefusal::RoomFull) => {
                return self.reject_with(ErrorCode::RoomFull, "the room is full", reference);
            }
        };
        let Admission {
            names,
            count,
            recent,
        } = admitted;
        self.rooms.insert(room.clone());
        self.ever_joined = true;
        // Read after the member was added: anything committed later is held for it, anything
        // earlier is in the store (or in the recent frames taken with the member's admission),
        // so the replay below cannot miss a message. The store may answer with a query shared
        // with other joins, but only with one that started after this read was asked for
        // (store/coalesce.rs): one started before the member was added could predate a message
        // delivered to the room just before the member was in it.
        let recent = match recent {
            Some(recent) => recent,
            None => match self.read_recent(&room).await {
                Ok(recent) => recent,
                // Without the room's newest id, `joined` and the replay would start from 0.
                Err(err) => return self.history_failed(&room, "join", &err, reference),
            },
        };
        let last_id = recent.last_id;
        let state = self.joined_state(&room, &policy, last_id).await;
        self.send_joined(&room, &names, count, last_id, state.as_ref());
        self.announce(&room, self.name.clone(), true).await;
        // A `since` beyond the room's newest id (a client that remembers a server whose data was
        // wiped) would otherwise hide every new message up to it.
        let since = since.map(|since| since.min(last_id));
        // The highest id this member now surely has: what the replay sent, or what it said it
        // had. A message the replay read from the store may still be on its way to the hub; at
        // or below this id it is not queued again.
        let has_up_to = match recent.after(since) {
            Some(frames) => self.send_frames(frames, since.unwrap_or(0)).await,
            None => self.replay(&room, since, reference.clone()).await,
        };
        if let Some(after) = changes_since {
            Box::pin(self.catch_up_changes(&room, after, reference)).await;
        }
        self.hub.release_held(&room, self.id, has_up_to);
    }

    /// Reads the room's newest messages for a join that memory could not serve, and gives them
    /// to the room so that later joins are served from memory.
    ///
    /// One query answers both what `joined` needs (the newest id) and, for a `since` among the
    /// newest [`JOIN_BACKLOG`] messages, the whole replay; and it is the same query for every
    /// joiner of the room whatever its `since`, so a reconnect storm's joiners share it (the
    /// store coalesces identical concurrent reads, store/coalesce.rs) until the first of them
    /// has seeded the room. Valid for this member because the read starts after the member was
    /// added (the coalescing never hands out a query that started earlier): whatever was
    /// committed before it is in the page or older, whatever is delivered after it is held.
    /// The page's newest id is the room's last id at the read, as `last_id` would be: ids are
    /// committed in order per room.
    async fn read_recent(&self, room: &RoomName) -> Result<RecentSnapshot, StoreError> {
        let page = self
            .hub
            .store()
            .before(room, None, JOIN_BACKLOG as u32)
            .await?;
        let frames = encode(&page.messages, self.hub.marks_guests());
        self.hub.seed_recent(room, &page, &frames);
        Ok(RecentSnapshot {
            last_id: frames.last().and_then(|frame| frame.msg_id).unwrap_or(0),
            whole_history: !page.has_more,
            frames,
        })
    }

    fn send_joined(
        &self,
        room: &RoomName,
        members: &[String],
        count: usize,
        last_id: u64,
        account: Option<&JoinedRoomState>,
    ) {
        self.push(
            ServerFrame::Joined {
                room: room.as_str(),
                data: Joined {
                    members,
                    count,
                    last_id,
                    account,
                },
            }
            .encode(),
        );
    }

    /// Sends stored messages after `since` (or the newest few); returns the highest id sent.
    async fn replay(&self, room: &RoomName, since: Option<u64>, reference: Option<Ref>) -> u64 {
        let store = self.hub.store();
        let Some(since) = since else {
            let backlog = JOIN_BACKLOG as u32;
            return match store.before(room, None, backlog).await {
                Ok(page) => {
                    let frames = encode(&page.messages, self.hub.marks_guests());
                    let up_to = self.send_frames(&frames, 0).await;
                    self.hub.seed_recent(room, &page, &frames);
                    up_to
                }
                Err(err) => {
                    self.history_failed(room, "replay", &err, reference);
                    0
                }
            };
        };
        let mut up_to = since;
        loop {
            match store.after(room, up_to, REPLAY_PAGE).await {
                Ok(page) => {
                    up_to = self.send_messages(&page, up_to).await;
                    if page.len() < REPLAY_PAGE as usize || self.outbox.is_closing() {
                        return up_to;
                    }
                }
                Err(err) => {
                    self.history_failed(room, "replay", &err, reference);
                    return up_to;
                }
            }
        }
    }

    /// Sends a page of stored messages as one batch; returns the highest id sent (`up_to` if the
    /// connection closed first).
    async fn send_messages(&self, messages: &[StoredMessage], up_to: u64) -> u64 {
        self.send_frames(&encode(messages, self.hub.marks_guests()), up_to)
            .await
    }

    /// Sends encoded messages as one batch; returns the highest id sent (`up_to` if there were
    /// none or the connection closed first).
    async fn send_frames(&self, frames: &[Outgoing], up_to: u64) -> u64 {
        match frames.last().and_then(|last| last.msg_id) {
            Some(last) if self.outbox.send_all(frames).await => last,
            _ => up_to,
        }
    }

    async fn leave(&mut self, room: RoomName, reference: Option<Ref>) {
        if !self.rooms.remove(&room) {
            return self.not_member(&room, reference);
        }
        self.hub.remove_member(&room, self.id);
        self.announce(&room, self.name.clone(), false).await;
        self.push(
            ServerFrame::Left {
                room: room.as_str(),
            }
            .encode(),
        );
    }

    async fn post(
        &mut self,
        room: Option<RoomName>,
        text: String,
        reply_to: Option<std::num::NonZeroU64>,
        attachment: Option<Box<crate::protocol::AttachmentRef>>,
        reference: Option<Ref>,
    ) {
        let room = room.unwrap_or_else(RoomName::lobby);
        if !self.access.grant.allows(&room) {
            return self.unauthorized(&room, reference);
        }
        if !self.rooms.contains(&room) {
            if room == RoomName::lobby() && !self.ever_joined {
                // The tutorial's bare {"type":"msg","data":"hi"} lands in the lobby.
                self.join(room.clone(), None, None).await;
            }
            if !self.rooms.contains(&room) {
                return self.not_member(&room, reference);
            }
        }
        let reply_to = reply_to.map(std::num::NonZeroU64::get);
        if let Some(id) = reply_to
            && !Box::pin(self.reply_target_exists(&room, id, reference.clone())).await
        {
            return;
        }
        let attachment = match attachment {
            None => None,
            Some(wanted) => {
                match Box::pin(self.attachment_or_reject(*wanted, reference.clone())).await {
                    Some(attachment) => Some(attachment),
                    None => return,
                }
            }
        };
        if !self.may_post(&room, reference.clone()).await {
            return;
        }
        let (name, account) = (self.name.clone(), self.access.account);
        match self
            .hub
            .post_reply(room.clone(), name, text, account, reply_to, attachment)
            .await
        {
            Ok(stored) => self.push(
                ServerFrame::Ack {
                    reference: reference.as_ref(),
                    room: room.as_str(),
                    id: stored.id,
                }
                .encode(),
            ),
            Err(err) => self.post_failed(&room, &err, reference),
        }
    }

    async fn typing(&mut self, room: RoomName, reference: Option<Ref>) {
        if !self.access.grant.allows(&room) {
            return self.unauthorized(&room, reference);
        }
        if !self.rooms.contains(&room) {
            return self.not_member(&room, reference);
        }
        let event = RoomEvent::Typing {
            origin: self.id,
            name: self.name.clone(),
        };
        self.hub.publish(&room, event).await;
    }

    async fn history(
        &self,
        room: RoomName,
        before: Option<u64>,
        limit: u32,
        reference: Option<Ref>,
    ) {
        if !self.access.grant.allows(&room) {
            return self.unauthorized(&room, reference);
        }
        if self
            .visible_policy(&room, "history", reference.clone())
            .await
            .is_none()
        {
            return;
        }
        // The change cursor first: see `Hub::change_cursor`.
        let changes = match self.hub.change_cursor(&room).await {
            Ok(changes) => changes,
            Err(err) => return self.store_failed(&room, "history", &err, reference),
        };
        let page = match self.hub.history(&room, before, limit).await {
            Ok(page) => page,
            Err(err) => return self.store_failed(&room, "history", &err, reference),
        };
        match self.hub.page_state(&room, &page.messages).await {
            Ok(state) => {
                let json = ServerFrame::History {
                    room: room.as_str(),
                    data: HistoryPage {
                        messages: self.hub.views(&page.messages),
                        has_more: page.has_more,
                        state,
                        changes: Some(changes),
                    },
                }
                .encode();
                self.outbox.send(Outgoing::control(json)).await;
            }
            Err(err) => self.store_failed(&room, "history", &err, reference),
        }
    }

    fn unauthorized(&self, room: &RoomName, reference: Option<Ref>) {
        let message = format!("your token does not allow room {room}");
        self.reject_with(ErrorCode::Unauthorized, &message, reference);
    }

    async fn members(&self, room: RoomName, reference: Option<Ref>) {
        if !self.rooms.contains(&room) {
            return self.not_member(&room, reference);
        }
        let (members, count) = self.hub.all_member_names(&room);
        let json = ServerFrame::Members {
            room: room.as_str(),
            data: MemberList {
                members: &members,
                count,
            },
        }
        .encode();
        self.outbox.send(Outgoing::control(json)).await;
    }

    fn not_member(&self, room: &RoomName, reference: Option<Ref>) {
        let message = format!("not a member of {room}: join it first");
        self.reject_with(ErrorCode::NotMember, &message, reference);
    }

    async fn announce(&self, room: &RoomName, name: String, joined: bool) {
        let event = RoomEvent::Presence {
            origin: self.id,
            name,
            joined,
        };
        self.hub.publish(room, event).await;
    }

    /// Forgets the rooms the account was removed from (kicked, banned) since the last frame: the
    /// hub already took the member out of them (accounts.rs).
    fn drop_removed_rooms(&mut self) {
        if let Some(link) = &self.link {
            for room in link.take_removed() {
                self.rooms.remove(&room);
            }
        }
    }

    /// Leaves every room, telling the other members. The one cleanup path of every transport.
    pub async fn disconnect(mut self) {
        self.disconnected = true;
        self.drop_removed_rooms();
        if let Some(account) = self.access.account {
            self.hub.unlink_account(account, self.id);
        }
        for room in std::mem::take(&mut self.rooms) {
            self.hub.remove_member(&room, self.id);
            self.announce(&room, self.name.clone(), false).await;
        }
    }
}

impl Drop for Session {
    /// Safety net for a connection task that ended without `disconnect` (a panic): never leave a
    /// dead member in a room.
    fn drop(&mut self) {
        if !self.disconnected {
            if let Some(account) = self.access.account {
                self.hub.unlink_account(account, self.id);
            }
            for room in &self.rooms {
                self.hub.remove_member(room, self.id);
            }
        }
    }
}

/// Stored messages as the `msg` frames members get.
fn encode(messages: &[StoredMessage], mark_guests: bool) -> Vec<Outgoing> {
    messages
        .iter()
        .map(|m| Outgoing::message(ServerFrame::Msg(m.view_marking(mark_guests)).encode(), m.id))
        .collect()
}

/// A name for a connection that gave none.
fn guest_name() -> String {
    format!("guest-{:04}", rand::rng().random_range(0..10_000))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::config::Durability;
    use crate::hub::HubSettings;
    use crate::metrics::Metrics;
    use crate::store::{Coalescing, NewMessage, Page, People, RoomSummary, SqliteStore, Store};
    use crate::transport::outbox::OutboxReceiver;

    /// A fresh SQLite file in `dir`.
    async fn sqlite_in(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(
            &dir.path().join("hub.db"),
            Duration::from_secs(5),
            Durability::Process,
        )
        .await
        .expect("store")
    }

    /// A hub on `store`, its people side in `dir`.
    async fn hub_on(store: Arc<dyn Store>, dir: &tempfile::TempDir, metrics: &Metrics) -> Hub {
        Hub::new(
            store,
            People::sqlite_in(dir.path()).await,
            crate::broker::local(),
            HubSettings::default(),
            metrics.clone(),
            &TaskTracker::new(),
            CancellationToken::new(),
        )
    }

    /// A hub on a fresh SQLite file behind the coalescing store, as `serve` builds it.
    async fn hub() -> (Hub, Metrics, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Metrics::new();
        let store = Coalescing::new(Arc::new(sqlite_in(&dir).await), &metrics);
        let hub = hub_on(Arc::new(store), &dir, &metrics).await;
        (hub, metrics, dir)
    }

    /// The `joined` frame's `last_id` and the ids of the `msg` frames queued so far.
    fn joined_and_ids(receiver: &OutboxReceiver) -> (Option<u64>, Vec<u64>) {
        let frames: Vec<Outgoing> = std::iter::from_fn(|| receiver.try_recv()).collect();
        let last_id = frames.iter().find_map(|frame| {
            let value: serde_json::Value = serde_json::from_slice(&frame.json).ok()?;
            (value["type"] == "joined").then(|| value["data"]["last_id"].as_u64())?
        });
        (last_id, frames.iter().filter_map(|f| f.msg_id).collect())
    }

    #[tokio::test]
    async fn resumes_into_a_room_without_members_read_only_its_newest_page_once() {
        let (hub, metrics, _dir) = hub().await;
        let room = RoomName::lobby();
        for n in 0..10 {
            let text = format!("m{n}");
            hub.post(room.clone(), "a".into(), text)
                .await
                .expect("post");
        }
        let mut received = Vec::new();
        let mut sessions = Vec::new();
        for since in [3, 7, 10] {
            let (outbox, frames) = Outbox::new(64);
            let mut session = hub.connect(None, outbox);
            session.join(room.clone(), Some(since), None).await;
            received.push(joined_and_ids(&frames));
            sessions.push(session);
        }
        assert_eq!(received[0], (Some(10), (4..=10).collect()));
        assert_eq!(received[1], (Some(10), vec![8, 9, 10]));
        assert_eq!(received[2], (Some(10), vec![]));
        assert_eq!(metrics.store_reads("before").get(), 1, "the first join's");
        assert_eq!(metrics.store_reads("last_id").get(), 0);
        assert_eq!(metrics.store_reads("after").get(), 0);
    }

    /// A store whose reads named in `fails` fail with a driver error naming a path; everything
    /// else is SQLite's.
    struct FailingReads {
        sqlite: SqliteStore,
        fails: &'static [&'static str],
    }

    const DRIVER_TEXT: &str = "driver detail about /srv/secret/hub.db";

    impl FailingReads {
        fn check(&self, read: &str) -> Result<(), StoreError> {
            match self.fails.contains(&read) {
                true => Err(StoreError::Database(sqlx::Error::Protocol(
                    DRIVER_TEXT.to_owned(),
                ))),
                false => Ok(()),
            }
        }
    }

    #[async_trait::async_trait]
    impl Store for FailingReads {
        async fn append(&self, batch: &[NewMessage]) -> Result<Vec<StoredMessage>, StoreError> {
            self.sqlite.append(batch).await
        }
        async fn after(
            &self,
            room: &RoomName,
            since: u64,
            limit: u32,
        ) -> Result<Vec<StoredMessage>, StoreError> {
            self.check("after")?;
            self.sqlite.after(room, since, limit).await
        }
        async fn before(
            &self,
            room: &RoomName,
            before: Option<u64>,
            limit: u32,
        ) -> Result<Page, StoreError> {
            self.check("before")?;
            self.sqlite.before(room, before, limit).await
        }
        async fn last_id(&self, room: &RoomName) -> Result<u64, StoreError> {
            self.check("last_id")?;
            self.sqlite.last_id(room).await
        }
        async fn rooms(&self) -> Result<Vec<RoomSummary>, StoreError> {
            self.sqlite.rooms().await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            self.sqlite.ping().await
        }
    }

    /// A hub whose store fails the reads in `fails`, with `messages` posted to the lobby.
    async fn failing_hub(
        fails: &'static [&'static str],
        messages: usize,
    ) -> (Hub, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite = sqlite_in(&dir).await;
        let batch: Vec<NewMessage> = (0..messages)
            .map(|n| NewMessage {
                room: RoomName::lobby(),
                from: "a".into(),
                text: format!("m{n}"),
                ts: 1,
                author: None,
                reply_to: None,
                attachment: None,
            })
            .collect();
        if !batch.is_empty() {
            sqlite.append(&batch).await.expect("history");
        }
        let store = Arc::new(FailingReads { sqlite, fails });
        let hub = hub_on(store, &dir, &Metrics::new()).await;
        (hub, dir)
    }

    /// What a connection to a hub failing `fails` (with `messages` in the lobby) is sent when it
    /// joins the lobby with `since` 3, as JSON, and its queue (to see whether it closes).
    async fn join_since_3(
        fails: &'static [&'static str],
        messages: usize,
    ) -> (Vec<serde_json::Value>, OutboxReceiver) {
        let (hub, _dir) = failing_hub(fails, messages).await;
        let (outbox, frames) = Outbox::new(1024);
        let mut session = hub.connect(None, outbox);
        session.join(RoomName::lobby(), Some(3), None).await;
        let answers = std::iter::from_fn(|| frames.try_recv())
            .map(|frame| serde_json::from_slice(&frame.json).expect("json"))
            .collect();
        session.disconnect().await;
        (answers, frames)
    }

    #[tokio::test]
    async fn a_join_whose_replay_read_fails_answers_store_unavailable_and_closes_for_a_resume() {
        // The newest page reads (joined is sent), the replay of what is older does not.
        let (answers, frames) = join_since_3(&["after"], 2 * crate::hub::JOIN_BACKLOG).await;
        let kinds: Vec<&str> = answers.iter().filter_map(|a| a["type"].as_str()).collect();
        assert_eq!(
            kinds,
            ["welcome", "joined", "error"],
            "no message after a gap"
        );
        assert_eq!(answers[2]["data"]["code"], "store_unavailable");
        assert!(frames.is_closing(), "the member does not go on from a gap");
        assert_eq!(frames.reason().code(), 1013);
    }

    #[tokio::test]
    async fn a_join_whose_newest_page_read_fails_answers_store_unavailable_and_closes() {
        let (answers, frames) = join_since_3(&["before"], 5).await;
        let kinds: Vec<&str> = answers.iter().filter_map(|a| a["type"].as_str()).collect();
        assert_eq!(
            kinds,
            ["welcome", "error"],
            "no joined with last_id 0, no replay from 0"
        );
        assert!(frames.is_closing());
        assert_eq!(frames.reason().code(), 1013);
    }

    #[tokio::test]
    async fn a_rejoin_whose_store_read_fails_answers_store_unavailable_without_driver_text() {
        let (hub, _dir) = failing_hub(&["last_id"], 0).await;
        let (outbox, frames) = Outbox::new(64);
        let mut session = hub.connect(None, outbox);
        session.join(RoomName::lobby(), None, None).await;
        while frames.try_recv().is_some() {}

        session.join(RoomName::lobby(), None, None).await;
        let answers: Vec<serde_json::Value> = std::iter::from_fn(|| frames.try_recv())
            .map(|frame| serde_json::from_slice(&frame.json).expect("json"))
            .collect();
        assert_eq!(answers.len(), 1, "{answers:?}");
        assert_eq!(answers[0]["type"], "error", "not a joined with last_id 0");
        assert_eq!(answers[0]["data"]["code"], "store_unavailable");
        assert_eq!(
            answers[0]["data"]["message"],
            crate::store::STORE_UNAVAILABLE
        );
        session.disconnect().await;
    }
}
