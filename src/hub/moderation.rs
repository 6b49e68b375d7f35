//! Moderation (issue 19; docs/protocol.md "Moderation", docs/security.md "Moderation"): a
//! session's `delete`, `kick`, `ban`, `unban`, `mute`, `unmute` and `slow` frames, and the checks
//! every join and post goes through.
//!
//! **Rights.** Only a signed-in account moderates (a guest gets `unauthorized`): the room's
//! owners and moderators (its cached policy) and operators (`accounts.admin`, read from the
//! store once per action: actions are rare, and a revoked admin loses the right at once). A
//! room the caller may not see answers `not_found`; rights short of moderator answer
//! `forbidden`. Nobody but an admin acts on an admin, or on an owner or moderator of the same
//! or higher rank; nobody acts on themselves.
//!
//! **Store first, then everyone.** Every action is stored with its audit row in one
//! transaction (store/moderation.rs), then goes out through control events that every node
//! applies, this one included: `RoomChanged` (each node drops and reloads the room's cached
//! policy, which holds its bans, mutes and slow mode), `RemoveFromRoom` (the account's
//! connections get `kicked` and leave the room; their sessions drop it before their next frame),
//! `ToAccount` (`muted`, `unmuted`) and `MessageDeleted` (each node turns the message into its
//! tombstone in the room's recent frames and sends `deleted` to its members).
//!
//! **Checks without store reads.** A join of a banned account and a post of a muted one are
//! refused from the room's cached policy (loaded with the room's first member on the node). Slow
//! mode is counted per account on the broker's shared clock when it has one (Redis: see
//! `broker/slow.rs`), so an account on two nodes still posts once per interval; on one node, for
//! guests (per connection) and while Redis is unreachable, in this node's memory. Owners and
//! moderators are exempt from slow mode.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::info;

use super::policy::RoomPolicy;
use super::session::Session;
use super::{Hub, Inner, JOIN_BACKLOG};
use crate::broker::ConnId;
use crate::protocol::moderation::{
    DeletedMessage, MAX_SLOW_SECS, ModerationFrame, MuteNotice, Removal, SlowMode, UnmuteNotice,
};
use crate::protocol::{ErrorCode, Ref, RoomName, ServerFrame};
use crate::store::StoreError;
use crate::store::accounts::AccountId;
use crate::store::directory::Role;
use crate::store::moderation::{AuditRecord, Restricted, Restriction, RoomModeration, now_ms};
use crate::transport::outbox::Outgoing;

/// What a caller who may not see the room is told (as for a room that does not exist).
const NO_SUCH_ROOM: &str = "no such room";

/// Slow-mode stamps kept before stale ones (older than the longest interval) are swept out.
const SLOW_SWEEP_AT: usize = 4096;

/// Who posts, for slow mode: an account (all its connections share one clock), or
/// a guest by its connection (WebSocket, SSE) or its address (HTTP API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Poster {
    /// A signed-in account.
    Account(AccountId),
    /// A guest's connection on this node.
    Connection(ConnId),
    /// A guest posting through the HTTP API, by client address.
    Address(IpAddr),
}

/// Why the room's moderation refuses a post (nothing is stored).
#[derive(Debug)]
pub enum PostRefusal {
    /// The account is muted in the room until then (ms since the epoch; `None`: until lifted).
    Muted(Option<i64>),
    /// Slow mode: one post per `seconds`; `wait` seconds are left.
    Slow {
        /// The room's interval.
        seconds: u32,
        /// Whole seconds left before the next post is taken.
        wait: u64,
    },
    /// The room's policy could not be read.
    Store(StoreError),
}

impl PostRefusal {
    /// The error code clients get.
    pub fn code(&self) -> ErrorCode {
        match self {
            PostRefusal::Muted(_) => ErrorCode::Muted,
            PostRefusal::Slow { .. } => ErrorCode::SlowMode,
            PostRefusal::Store(_) => ErrorCode::StoreUnavailable,
        }
    }

    /// The sentence clients get.
    pub fn message(&self, room: &RoomName) -> String {
        match self {
            PostRefusal::Muted(Some(until)) => {
                format!("you are muted in {room} until {until} (ms since the epoch)")
            }
            PostRefusal::Muted(None) => format!("you are muted in {room}"),
            PostRefusal::Slow { seconds, wait } => {
                format!("slow mode: one message per {seconds} s in {room}; wait {wait} s")
            }
            PostRefusal::Store(err) => err.client_message().to_owned(),
        }
    }
}

/// When each poster last posted in each slow room on this node: every poster on one node, and
/// guests (and accounts while the shared clock is unreachable) on a cluster.
#[derive(Default)]
pub(super) struct SlowClock {
    last: Mutex<HashMap<(String, Poster), Instant>>,
}

impl SlowClock {
    fn lock(&self) -> MutexGuard<'_, HashMap<(String, Poster), Instant>> {
        // Plain data: a panic elsewhere leaves nothing half-done here.
        self.last
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Stamps a post at `now`, or says how many whole seconds are left to wait.
    fn try_post(
        &self,
        room: &str,
        poster: Poster,
        interval: Duration,
        now: Instant,
    ) -> Result<(), u64> {
        let mut last = self.lock();
        let key = (room.to_owned(), poster);
        if let Some(at) = last.get(&key) {
            let since = now.saturating_duration_since(*at);
            if since < interval {
                return Err(whole_seconds(interval - since));
            }
        }
        if last.len() >= SLOW_SWEEP_AT {
            let longest = Duration::from_secs(u64::from(MAX_SLOW_SECS));
            last.retain(|_, at| now.saturating_duration_since(*at) < longest);
        }
        last.insert(key, now);
        Ok(())
    }
}

/// Seconds left to wait, rounded up ("wait 0 s" would be wrong while any time is left).
fn whole_seconds(left: Duration) -> u64 {
    left.as_secs() + u64::from(left.subsec_nanos() > 0)
}

/// A caller allowed to moderate a room.
struct Actor {
    account: AccountId,
    admin: bool,
    policy: Arc<RoomPolicy>,
}

/// The account a frame names.
struct Target {
    account: AccountId,
    admin: bool,
}

impl Session {
    /// Carries out a moderation frame (see the module doc for the rules).
    pub(super) async fn moderate(&mut self, frame: ModerationFrame, reference: Option<Ref>) {
        // An author deletes their own message without moderator rights (issue 20).
        if let ModerationFrame::Delete { room, id } = &frame
            && self.delete_own(room, *id, reference.clone()).await
        {
            return;
        }
        let Some(actor) = self.moderator(frame.room(), reference.clone()).await else {
            return;
        };
        match frame {
            ModerationFrame::Delete { room, id } => {
                self.delete_message(room, id, reference).await;
            }
            ModerationFrame::Slow { room, seconds } => {
                self.set_slow_mode(room, seconds, reference).await;
            }
            ModerationFrame::Kick { room, name } => {
                if let Some(target) = self.target(&actor, &room, &name, reference.clone()).await {
                    self.kick(room, &name, target, reference).await;
                }
            }
            ModerationFrame::Ban {
                room,
                name,
                seconds,
            } => {
                if let Some(target) = self.target(&actor, &room, &name, reference.clone()).await {
                    let kind = Restriction::Ban;
                    self.restrict(kind, &actor, room, &name, target, seconds, reference)
                        .await;
                }
            }
            ModerationFrame::Mute {
                room,
                name,
                seconds,
            } => {
                if let Some(target) = self.target(&actor, &room, &name, reference.clone()).await {
                    let kind = Restriction::Mute;
                    self.restrict(kind, &actor, room, &name, target, seconds, reference)
                        .await;
                }
            }
            ModerationFrame::Unban { room, name } => {
                if let Some(target) = self.target(&actor, &room, &name, reference.clone()).await {
                    self.lift(Restriction::Ban, room, &name, target, reference)
                        .await;
                }
            }
            ModerationFrame::Unmute { room, name } => {
                if let Some(target) = self.target(&actor, &room, &name, reference.clone()).await {
                    self.lift(Restriction::Mute, room, &name, target, reference)
                        .await;
                }
            }
        }
    }

    /// Whether the session's account may join `room` under `policy`: `false` (and `banned`
    /// answered) for an account banned there.
    pub(super) fn admitted_by_moderation(
        &self,
        room: &RoomName,
        policy: &RoomPolicy,
        reference: Option<Ref>,
    ) -> bool {
        let Some(account) = self.access.account else {
            return true;
        };
        let Some(ban) = policy
            .moderation
            .restricted(Restriction::Ban, account, now_ms())
        else {
            return true;
        };
        let message = match ban.until_ms {
            Some(until) => format!("you are banned from {room} until {until} (ms since the epoch)"),
            None => format!("you are banned from {room}"),
        };
        self.reject_with(ErrorCode::Banned, &message, reference);
        false
    }

    /// Whether the session may post in `room` now ([`Hub::check_post`]); answers `muted`,
    /// `slow_mode` or `store_unavailable` when not, so nothing is stored.
    pub(super) async fn may_post(&self, room: &RoomName, reference: Option<Ref>) -> bool {
        let poster = match self.access.account {
            Some(account) => Poster::Account(account),
            None => Poster::Connection(self.id),
        };
        match self.hub.check_post(room, self.access.account, poster).await {
            Ok(()) => true,
            Err(PostRefusal::Store(err)) => {
                self.store_failed(room, "post", &err, reference);
                false
            }
            Err(refusal) => {
                let message = refusal.message(room);
                self.reject_with(refusal.code(), &message, reference);
                false
            }
        }
    }

    /// The caller, if it may moderate `room`; else answers why not.
    async fn moderator(&self, room: &RoomName, reference: Option<Ref>) -> Option<Actor> {
        let Some(account) = self.access.account else {
            let message = "sign in to moderate";
            self.reject_with(ErrorCode::Unauthorized, message, reference);
            return None;
        };
        if !self.access.grant.allows(room) {
            let message = format!("your token does not allow room {room}");
            self.reject_with(ErrorCode::Unauthorized, &message, reference);
            return None;
        }
        let policy = match self.hub.policy(room.as_str()).await {
            Ok(policy) => policy,
            Err(err) => {
                self.store_failed(room, "moderate", &err, reference);
                return None;
            }
        };
        let admin = match self.hub.is_admin(account).await {
            Ok(admin) => admin,
            Err(err) => {
                self.store_failed(room, "moderate", &err, reference);
                return None;
            }
        };
        if !admin && !policy.visible_to(Some(account)) {
            self.reject_with(ErrorCode::NotFound, NO_SUCH_ROOM, reference);
            return None;
        }
        if !admin && !policy.can_moderate(Some(account)) {
            let message = format!("only the owners and moderators of {room} moderate it");
            self.reject_with(ErrorCode::Forbidden, &message, reference);
            return None;
        }
        Some(Actor {
            account,
            admin,
            policy,
        })
    }

    /// The account `name`, if the actor may act on it in `room`; else answers why not.
    async fn target(
        &self,
        actor: &Actor,
        room: &RoomName,
        name: &str,
        reference: Option<Ref>,
    ) -> Option<Target> {
        let target = match self.hub.account_for_moderation(name).await {
            Ok(Some(target)) => target,
            Ok(None) => {
                let message = format!("no account named {name}");
                self.reject_with(ErrorCode::NotFound, &message, reference);
                return None;
            }
            Err(err) => {
                self.store_failed(room, "moderate", &err, reference);
                return None;
            }
        };
        if target.account == actor.account {
            let message = "you cannot moderate yourself";
            self.reject_with(ErrorCode::Forbidden, message, reference);
            return None;
        }
        if !actor.admin {
            let ranks = actor.policy.role(Some(actor.account));
            let outranked = target.admin || actor.policy.role(Some(target.account)) >= ranks;
            if outranked {
                let message = format!("{name} has as many rights in {room} as you or more");
                self.reject_with(ErrorCode::Forbidden, &message, reference);
                return None;
            }
        }
        Some(target)
    }

    /// The audit row of an action by this session.
    fn audit(&self, action: &str, room: &RoomName, target: Option<String>) -> AuditRecord {
        AuditRecord {
            actor: self.name.clone(),
            action: action.to_owned(),
            room: Some(room.as_str().to_owned()),
            target,
            detail: None,
        }
    }

    /// A moderator's delete goes through the change feed (hub/changes.rs), so members get
    /// `deleted` and `change`, and resuming clients catch up on it.
    async fn delete_message(&mut self, room: RoomName, id: u64, reference: Option<Ref>) {
        let audit = self.audit("delete", &room, Some(format!("#{id}")));
        info!(conn = self.id, %room, id, by = %self.name, "moderator delete");
        self.delete_as_moderator(&room, id, &audit, reference).await;
    }

    async fn kick(&self, room: RoomName, name: &str, target: Target, reference: Option<Ref>) {
        let audit = self.audit("kick", &room, Some(name.to_owned()));
        if let Err(err) = self.hub.people().moderation.record_audit(&audit).await {
            return self.store_failed(&room, "kick", &err, reference);
        }
        info!(conn = self.id, %room, target = name, by = %self.name, "kicked");
        let frame = self.removal(&room, "kicked");
        self.hub
            .remove_from_room(&room, target.account, frame)
            .await;
        self.moderation_done(&room, reference);
    }

    #[allow(clippy::too_many_arguments)]
    async fn restrict(
        &self,
        kind: Restriction,
        actor: &Actor,
        room: RoomName,
        name: &str,
        target: Target,
        seconds: Option<u64>,
        reference: Option<Ref>,
    ) {
        let now = now_ms();
        let until_ms = seconds.map(|s| now.saturating_add(i64::try_from(s * 1000).unwrap_or(0)));
        let restricted = Restricted {
            account: target.account,
            until_ms,
            by: Some(actor.account),
            created_ms: now,
        };
        let action = match kind {
            Restriction::Ban => "ban",
            Restriction::Mute => "mute",
        };
        let mut audit = self.audit(action, &room, Some(name.to_owned()));
        audit.detail = Some(seconds.map_or("until lifted".to_owned(), |s| format!("{s} s")));
        let moderation = &self.hub.people().moderation;
        if let Err(err) = moderation
            .restrict(kind, room.as_str(), &restricted, &audit)
            .await
        {
            return self.store_failed(&room, action, &err, reference);
        }
        info!(conn = self.id, %room, target = name, by = %self.name, action, ?seconds, "restricted");
        // Every node reloads the room's policy (this one at once) before anything else is
        // sent, so a rejoin or a post after the notice is already refused.
        self.hub.room_changed(&room).await;
        match kind {
            Restriction::Ban => {
                let frame = self.removal(&room, "banned");
                self.hub
                    .remove_from_room(&room, target.account, frame)
                    .await;
            }
            Restriction::Mute => {
                let frame = ServerFrame::Muted {
                    data: MuteNotice {
                        room: room.as_str(),
                        until: until_ms,
                    },
                }
                .encode();
                self.hub.to_account(target.account, frame, None).await;
            }
        }
        self.moderation_done(&room, reference);
    }

    async fn lift(
        &self,
        kind: Restriction,
        room: RoomName,
        name: &str,
        target: Target,
        reference: Option<Ref>,
    ) {
        let (action, state) = match kind {
            Restriction::Ban => ("unban", "banned"),
            Restriction::Mute => ("unmute", "muted"),
        };
        let audit = self.audit(action, &room, Some(name.to_owned()));
        let moderation = &self.hub.people().moderation;
        match moderation
            .lift(kind, room.as_str(), target.account, &audit)
            .await
        {
            Ok(true) => {
                info!(conn = self.id, %room, target = name, by = %self.name, action, "lifted");
                self.hub.room_changed(&room).await;
                if kind == Restriction::Mute {
                    let frame = ServerFrame::Unmuted {
                        data: UnmuteNotice {
                            room: room.as_str(),
                        },
                    }
                    .encode();
                    self.hub.to_account(target.account, frame, None).await;
                }
                self.moderation_done(&room, reference);
            }
            Ok(false) => {
                let message = format!("{name} is not {state} in {room}");
                self.reject_with(ErrorCode::NotFound, &message, reference);
            }
            Err(err) => self.store_failed(&room, action, &err, reference),
        }
    }

    async fn set_slow_mode(&self, room: RoomName, seconds: u32, reference: Option<Ref>) {
        let mut audit = self.audit("slow", &room, None);
        audit.detail = Some(format!("{seconds} s"));
        let moderation = &self.hub.people().moderation;
        if let Err(err) = moderation
            .set_slow_mode(room.as_str(), seconds, &audit)
            .await
        {
            return self.store_failed(&room, "slow", &err, reference);
        }
        info!(conn = self.id, %room, seconds, by = %self.name, "slow mode set");
        // Every node reloads the policy and tells its members the new interval
        // (`Inner::moderation_reloaded`).
        self.hub.room_changed(&room).await;
        self.moderation_done(&room, reference);
    }

    /// The `kicked` frame the removed account's connections get.
    fn removal(&self, room: &RoomName, reason: &str) -> Bytes {
        ServerFrame::Kicked {
            data: Removal {
                room: room.as_str(),
                reason,
                by: &self.name,
            },
        }
        .encode()
    }

    /// The answer to a moderation frame that went through: `ack` with the room and no id.
    fn moderation_done(&self, room: &RoomName, reference: Option<Ref>) {
        self.push(
            ServerFrame::Done {
                reference: reference.as_ref(),
                room: room.as_str(),
            }
            .encode(),
        );
    }
}

impl Hub {
    /// Whether `room`'s moderation takes a post from `account` (`None`: a guest) now: not
    /// muted, and not sooner than slow mode allows (owners and moderators are exempt). Reads
    /// the cached policy; the store only when the room changed since and nobody here has read
    /// it again. A post it allows is stamped for slow mode.
    pub async fn check_post(
        &self,
        room: &RoomName,
        account: Option<AccountId>,
        poster: Poster,
    ) -> Result<(), PostRefusal> {
        let cached = self.cached_policy(room.as_str());
        let uncached;
        let (moderation, exempt) = match &cached {
            Some(policy) => (&policy.moderation, policy.can_moderate(account)),
            None => {
                // Boxed: a post's future stays small for the common case, a cached policy.
                uncached = Box::pin(self.moderation_uncached(room, account))
                    .await
                    .map_err(PostRefusal::Store)?;
                (&uncached.0, uncached.1)
            }
        };
        if let Some(account) = account
            && let Some(mute) = moderation.restricted(Restriction::Mute, account, now_ms())
        {
            return Err(PostRefusal::Muted(mute.until_ms));
        }
        let seconds = moderation.slow_seconds;
        if seconds == 0 || exempt {
            return Ok(());
        }
        let interval = Duration::from_secs(u64::from(seconds));
        // An account's posts are counted on the cluster's shared clock when there is one (it
        // may be connected to several nodes); a guest's connection or address is one node's.
        let shared = match poster {
            Poster::Account(account) => {
                let key = format!("{room}:{}", account.0);
                self.inner.broker.claim_slow_slot(&key, interval).await
            }
            Poster::Connection(_) | Poster::Address(_) => None,
        };
        match shared {
            Some(claimed) => claimed.map_err(|left| PostRefusal::Slow {
                seconds,
                wait: whole_seconds(left),
            }),
            None => self
                .inner
                .slow_clock
                .try_post(room.as_str(), poster, interval, Instant::now())
                .map_err(|wait| PostRefusal::Slow { seconds, wait }),
        }
    }

    /// The room's moderation state and whether `account` is exempt from slow mode, for a room
    /// whose policy is not cached here: a room with members here loads (and caches) its policy;
    /// a room without (an API post) is read without caching, so posts to any number of rooms do
    /// not grow the cache.
    async fn moderation_uncached(
        &self,
        room: &RoomName,
        account: Option<AccountId>,
    ) -> Result<(RoomModeration, bool), StoreError> {
        if self.lock_rooms().local.contains_key(room.as_str()) {
            let policy = self.policy(room.as_str()).await?;
            return Ok((policy.moderation.clone(), policy.can_moderate(account)));
        }
        let people = self.people();
        let moderation = people
            .moderation
            .room_moderation(room.as_str(), now_ms())
            .await?;
        let exempt = match account {
            Some(account) if moderation.slow_seconds > 0 => people
                .directory
                .role(room.as_str(), account)
                .await?
                .is_some_and(Role::can_moderate),
            _ => false,
        };
        Ok((moderation, exempt))
    }

    /// Whether the account is an operator (`accounts.admin`): moderator rights in every room.
    async fn is_admin(&self, account: AccountId) -> Result<bool, StoreError> {
        let found = self.people().accounts.account_by_id(account).await?;
        Ok(found.is_some_and(|found| found.admin))
    }

    /// The account a moderation frame names, with whether it is an operator.
    async fn account_for_moderation(&self, name: &str) -> Result<Option<Target>, StoreError> {
        let key = crate::accounts::name_key(name);
        let found = self.people().accounts.account_by_key(&key).await?;
        Ok(found.map(|found| Target {
            account: found.id,
            admin: found.admin,
        }))
    }
}

impl Inner {
    /// What every node does with a `MessageDeleted` control event: the room's recent frames get
    /// the tombstone in place (so a later join's replay from memory shows it deleted, also when
    /// its store read predates the delete), and the room's members get `deleted`.
    pub(super) fn apply_deletion(&self, room: &RoomName, id: u64, tombstone: &Bytes) {
        let deleted = ServerFrame::Deleted {
            data: DeletedMessage {
                room: room.as_str(),
                id,
            },
        }
        .encode();
        let frame = Outgoing::control(deleted);
        let result = {
            let mut rooms = self.lock_rooms();
            let Some(entry) = rooms.local.get_mut(room.as_str()) else {
                return;
            };
            let tombstone = Outgoing::message(tombstone.clone(), id);
            entry.recent.tombstone(tombstone, JOIN_BACKLOG);
            entry.unread.delete(id);
            entry.fan_out(
                std::slice::from_ref(&frame),
                None,
                self.settings.outbox_frames,
            )
        };
        self.count(result);
    }

    /// A room's policy was read again after a change: its members here hear of a new slow-mode
    /// interval (`slow`). Called from `policy_changed` (policy.rs) on every node.
    pub(super) fn moderation_reloaded(&self, room: &str, old: &RoomPolicy, new: &RoomPolicy) {
        let seconds = new.moderation.slow_seconds;
        if seconds == old.moderation.slow_seconds {
            return;
        }
        let json = ServerFrame::Slow {
            data: SlowMode { room, seconds },
        }
        .encode();
        let frame = Outgoing::control(json);
        let result = match self.lock_rooms().local.get_mut(room) {
            Some(entry) => entry.fan_out(
                std::slice::from_ref(&frame),
                None,
                self.settings.outbox_frames,
            ),
            None => return,
        };
        self.count(result);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::config::{Durability, HubSettings};
    use crate::hub::Access;
    use crate::metrics::Metrics;
    use crate::protocol::{ClientFrame, Request};
    use crate::store::accounts::NewAccount;
    use crate::store::directory::{NewRoom, Role, RoomKind, RoomSettings};
    use crate::store::{People, SqliteStore, Store};
    use crate::transport::outbox::{Outbox, OutboxReceiver};

    const ROOM: &str = "lobby";

    /// A hub whose history and people share one SQLite file, as `serve` opens them.
    async fn hub() -> (Hub, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite = Arc::new(
            SqliteStore::open(
                &dir.path().join("hub.db"),
                Duration::from_secs(5),
                Durability::Process,
            )
            .await
            .expect("store"),
        );
        let store: Arc<dyn Store> = sqlite.clone();
        let hub = Hub::new(
            store,
            People::of(sqlite),
            crate::broker::local(),
            HubSettings::default(),
            Metrics::new(),
            &TaskTracker::new(),
            CancellationToken::new(),
        );
        (hub, dir)
    }

    async fn account(hub: &Hub, name: &str) -> AccountId {
        let new = NewAccount {
            name: name.to_owned(),
            name_key: name.to_lowercase(),
            password_hash: None,
            admin: false,
            created_ms: 0,
        };
        let made = hub.people().accounts.create_account(&new).await;
        made.expect("store").expect("a new name").id
    }

    /// `owner` owns the public room [`ROOM`].
    async fn owned_by(hub: &Hub, owner: AccountId) {
        let room = NewRoom {
            settings: RoomSettings {
                room: ROOM.to_owned(),
                kind: RoomKind::Public,
                title: None,
                topic: None,
                created_by: Some(owner),
                created_ms: 0,
            },
            members: vec![(owner, Role::Owner)],
        };
        hub.people()
            .directory
            .create_room(&room)
            .await
            .expect("room");
        // As every change made through the hub does (the node's list of rooms with records).
        hub.room_changed(&RoomName::lobby()).await;
    }

    /// A session of `account` in [`ROOM`], with what it was sent so far drained.
    async fn member(hub: &Hub, name: &str, account: AccountId) -> (Session, OutboxReceiver) {
        let access = Access {
            account: Some(account),
            ..Access::open()
        };
        let (outbox, frames) = Outbox::new(256);
        let mut session = hub.connect_with(Some(name.to_owned()), access, outbox);
        session
            .handle(request(json(&format!(
                r#"{{"type":"join","room":"{ROOM}"}}"#
            ))))
            .await;
        drain(&frames);
        (session, frames)
    }

    fn json(text: &str) -> ClientFrame {
        let limits = crate::protocol::Limits {
            max_message_bytes: 4096,
        };
        crate::protocol::parse_client_frame(text, limits)
            .expect("valid frame")
            .frame
    }

    fn request(frame: ClientFrame) -> Request {
        Request {
            frame,
            reference: None,
        }
    }

    fn drain(frames: &OutboxReceiver) -> Vec<serde_json::Value> {
        std::iter::from_fn(|| frames.try_recv())
            .map(|frame| serde_json::from_slice(&frame.json).expect("json"))
            .collect()
    }

    fn of_type<'a>(frames: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
        frames.iter().filter(|f| f["type"] == kind).collect()
    }

    async fn send(session: &mut Session, text: &str) {
        session.handle(request(json(text))).await;
    }

    #[tokio::test]
    async fn a_delete_replaces_the_message_in_the_rooms_recent_frames() {
        let (hub, _dir) = hub().await;
        let ann = account(&hub, "ann").await;
        owned_by(&hub, ann).await;
        let (mut owner, owner_frames) = member(&hub, "ann", ann).await;
        send(
            &mut owner,
            r#"{"type":"msg","room":"lobby","data":"secret"}"#,
        )
        .await;
        send(
            &mut owner,
            r#"{"type":"delete","data":{"room":"lobby","id":1}}"#,
        )
        .await;
        let answers = drain(&owner_frames);
        assert_eq!(of_type(&answers, "deleted")[0]["data"]["id"], 1);
        // A later join replays from memory: the tombstone, not the text.
        let bob = account(&hub, "bob").await;
        let access = Access {
            account: Some(bob),
            ..Access::open()
        };
        let (outbox, frames) = Outbox::new(256);
        let mut joiner = hub.connect_with(Some("bob".into()), access, outbox);
        send(&mut joiner, r#"{"type":"join","room":"lobby"}"#).await;
        let replay = drain(&frames);
        let msgs = of_type(&replay, "msg");
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0]["deleted"], true);
        assert_eq!(msgs[0]["data"], "");
    }

    #[tokio::test]
    async fn a_joins_unread_counts_from_memory_are_the_stores() {
        let (hub, _dir) = hub().await;
        let (ann, bob) = (account(&hub, "ann").await, account(&hub, "bob").await);
        owned_by(&hub, ann).await;
        // ann's join seeds the room's ledger (an empty history, so all of it).
        let (mut owner, owner_frames) = member(&hub, "ann", ann).await;
        let (mut poster, _) = member(&hub, "bob", bob).await;
        for text in [
            "hi",
            "hey @ann",
            "mail x@ann",
            "gone @ann",
            "edit me",
            "thanks @ANN.",
        ] {
            let frame = serde_json::json!({"type": "msg", "room": ROOM, "data": text});
            send(&mut poster, &frame.to_string()).await;
        }
        send(
            &mut owner,
            r#"{"type":"msg","room":"lobby","data":"mine @ann"}"#,
        )
        .await;
        send(
            &mut poster,
            r#"{"type":"delete","data":{"room":"lobby","id":4}}"#,
        )
        .await;
        let edit = r#"{"type":"edit","data":{"room":"lobby","id":5,"text":"now @ann"}}"#;
        send(&mut poster, edit).await;
        assert_eq!(of_type(&drain(&owner_frames), "deleted").len(), 1);
        let directory = &hub.people().directory;
        for marker in 0..7 {
            for cap in [1, 2, crate::hub::conversations::UNREAD_CAP] {
                let from_memory = hub.unread_in_memory(ROOM, marker, 7, "ann");
                let stored = directory.unread(ROOM, "ann", marker, cap).await;
                let from_memory = from_memory.map(|counts| crate::store::directory::Unread {
                    unread: counts.unread.min(cap),
                    mentions: counts.mentions.min(cap),
                });
                assert_eq!(
                    from_memory,
                    Some(stored.expect("store")),
                    "marker {marker}, cap {cap}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_ban_removes_the_account_and_refuses_its_join() {
        let (hub, _dir) = hub().await;
        let (ann, bob) = (account(&hub, "ann").await, account(&hub, "bob").await);
        owned_by(&hub, ann).await;
        let (mut owner, _) = member(&hub, "ann", ann).await;
        let (mut banned, banned_frames) = member(&hub, "bob", bob).await;
        send(
            &mut owner,
            r#"{"type":"ban","data":{"room":"lobby","name":"bob"}}"#,
        )
        .await;
        let told = drain(&banned_frames);
        assert_eq!(of_type(&told, "kicked")[0]["data"]["reason"], "banned");
        send(&mut banned, r#"{"type":"msg","room":"lobby","data":"hi"}"#).await;
        send(&mut banned, r#"{"type":"join","room":"lobby"}"#).await;
        let codes: Vec<_> = of_type(&drain(&banned_frames), "error")
            .iter()
            .map(|e| e["data"]["code"].clone())
            .collect();
        assert_eq!(codes, ["not_member", "banned"]);
    }

    #[tokio::test]
    async fn a_muted_accounts_post_is_refused_and_not_stored() {
        let (hub, _dir) = hub().await;
        let (ann, bob) = (account(&hub, "ann").await, account(&hub, "bob").await);
        owned_by(&hub, ann).await;
        let (mut owner, _) = member(&hub, "ann", ann).await;
        let (mut muted, muted_frames) = member(&hub, "bob", bob).await;
        send(
            &mut owner,
            r#"{"type":"mute","data":{"room":"lobby","name":"bob"}}"#,
        )
        .await;
        send(&mut muted, r#"{"type":"msg","room":"lobby","data":"hi"}"#).await;
        let frames = drain(&muted_frames);
        assert_eq!(of_type(&frames, "muted").len(), 1);
        assert_eq!(of_type(&frames, "error")[0]["data"]["code"], "muted");
        let lobby = RoomName::lobby();
        assert_eq!(hub.store().last_id(&lobby).await.expect("last id"), 0);
    }

    #[tokio::test]
    async fn slow_mode_refuses_a_members_second_post_but_not_the_owners() {
        let (hub, _dir) = hub().await;
        let (ann, bob) = (account(&hub, "ann").await, account(&hub, "bob").await);
        owned_by(&hub, ann).await;
        let (mut owner, owner_frames) = member(&hub, "ann", ann).await;
        let (mut poster, poster_frames) = member(&hub, "bob", bob).await;
        send(
            &mut owner,
            r#"{"type":"slow","data":{"room":"lobby","seconds":60}}"#,
        )
        .await;
        for _ in 0..2 {
            send(&mut poster, r#"{"type":"msg","room":"lobby","data":"hi"}"#).await;
            send(&mut owner, r#"{"type":"msg","room":"lobby","data":"hi"}"#).await;
        }
        let frames = drain(&poster_frames);
        assert_eq!(of_type(&frames, "slow")[0]["data"]["seconds"], 60);
        assert_eq!(of_type(&frames, "error")[0]["data"]["code"], "slow_mode");
        assert!(of_type(&drain(&owner_frames), "error").is_empty());
        let lobby = RoomName::lobby();
        assert_eq!(hub.store().last_id(&lobby).await.expect("last id"), 3);
    }

    #[test]
    fn a_second_post_within_the_interval_waits_the_rest_rounded_up() {
        let clock = SlowClock::default();
        let start = Instant::now();
        let ann = Poster::Account(AccountId(1));
        let interval = Duration::from_secs(10);
        assert_eq!(clock.try_post(ROOM, ann, interval, start), Ok(()));
        let later = start + Duration::from_millis(2_500);
        assert_eq!(clock.try_post(ROOM, ann, interval, later), Err(8));
        let after = start + interval;
        assert_eq!(clock.try_post(ROOM, ann, interval, after), Ok(()));
    }

    #[test]
    fn slow_mode_counts_each_poster_and_room_apart() {
        let clock = SlowClock::default();
        let now = Instant::now();
        let interval = Duration::from_secs(10);
        let ann = Poster::Account(AccountId(1));
        assert_eq!(clock.try_post(ROOM, ann, interval, now), Ok(()));
        assert_eq!(clock.try_post("other", ann, interval, now), Ok(()));
        let guest = Poster::Connection(7);
        assert_eq!(clock.try_post(ROOM, guest, interval, now), Ok(()));
        assert_eq!(
            clock.try_post(ROOM, Poster::Connection(8), interval, now),
            Ok(())
        );
        assert_eq!(clock.try_post(ROOM, guest, interval, now), Err(10));
    }
}
