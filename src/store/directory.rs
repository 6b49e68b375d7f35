//! Rooms as a directory (issue 19): a room's kind (public, private, direct), title, topic,
//! members and their roles, and each account's read marker per room with the unread and mention
//! counts derived from it.
//!
//! A public room has no directory record until someone sets something on it (a topic, an owner):
//! rooms made by simply joining them keep working exactly as before, and cost nothing here.
//! Private rooms and direct messages always have one; their names are made by the server in
//! reserved namespaces ([`PRIVATE_PREFIX`], [`DIRECT_PREFIX`]), so nobody can make or guess one
//! by joining it.
//!
//! The record lives in the table `room_settings` (not `rooms`, which since 0001 is the per-room
//! id counter of every room with messages); members in `room_members`, markers in
//! `read_markers` (migrations 0003).

use async_trait::async_trait;

use super::StoreError;
use super::accounts::AccountId;

pub(crate) use crate::protocol::people::{PRIVATE_PREFIX, is_reserved};

/// Who may see and join a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoomKind {
    /// Anyone may join (every room made by a join, as before issue 19).
    Public,
    /// Only its members, added by invitation.
    Private,
    /// A direct conversation between 2 to 8 accounts, fixed at creation.
    Direct,
}

impl RoomKind {
    /// The spelling in the database and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomKind::Public => "public",
            RoomKind::Private => "private",
            RoomKind::Direct => "direct",
        }
    }

    /// The kind a stored spelling names; anything unknown is treated as private, the safe
    /// reading (members only) of a value a newer version may have written.
    pub fn parse(raw: &str) -> RoomKind {
        match raw {
            "public" => RoomKind::Public,
            "direct" => RoomKind::Direct,
            _ => RoomKind::Private,
        }
    }
}

/// A member's role in a room. Ordered by rights: `Member < Moderator < Owner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Reads and posts.
    Member,
    /// Also invites, sets the topic and moderates (issue 19's moderation slice).
    Moderator,
    /// Also changes others' roles; the room's creator.
    Owner,
}

impl Role {
    /// The spelling in the database and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Moderator => "moderator",
            Role::Owner => "owner",
        }
    }

    /// The role a spelling names (`None` for anything else: a client's bad input, or a value a
    /// newer version wrote, which is then read as no role at all).
    pub fn parse(raw: &str) -> Option<Role> {
        match raw {
            "member" => Some(Role::Member),
            "moderator" => Some(Role::Moderator),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }

    /// Whether this role may invite, set the topic and moderate.
    pub fn can_moderate(self) -> bool {
        self >= Role::Moderator
    }
}

/// A room's directory record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSettings {
    /// The room's name.
    pub room: String,
    /// Who may see it.
    pub kind: RoomKind,
    /// What clients show for a private room (its name is server-made and meaningless).
    pub title: Option<String>,
    /// The room's topic, set by its owner or moderators.
    pub topic: Option<String>,
    /// The account that created it (`None` for a public room whose record came from a topic, or
    /// one an operator made).
    pub created_by: Option<AccountId>,
    /// When the record was made, ms since the Unix epoch.
    pub created_ms: i64,
}

/// One member of a room, with the account's current name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomMember {
    /// The account.
    pub account: AccountId,
    /// Its name (accounts.name).
    pub name: String,
    /// Its role here.
    pub role: Role,
}

/// What [`RoomDirectory::create_room`] stores: the record and its first members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRoom {
    /// The record (its `room` is the name; made by the caller, in the reserved namespaces for
    /// private rooms and direct messages).
    pub settings: RoomSettings,
    /// The first members and their roles (the creator as owner; a DM's participants).
    pub members: Vec<(AccountId, Role)>,
}

/// How a [`RoomDirectory::create_room`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The room and its members were stored.
    New,
    /// A record with that name already existed; nothing was changed. For a DM this is the same
    /// conversation (its name is a hash of the participants); for a public room the name is
    /// taken.
    Existed,
}

/// A room in an account's sidebar, with its read state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidebarRoom {
    /// The room's record (a public room the account only has a marker in, with no record,
    /// comes as `kind: Public` with no title or topic).
    pub settings: RoomSettings,
    /// The account's role there (`None`: a public room it is not a listed member of).
    pub role: Option<Role>,
    /// The room's newest message id.
    pub last_id: u64,
    /// The account's read marker there (0: nothing read).
    pub last_read: u64,
}

/// One read marker: an account has read a room up to a message id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadMarker {
    /// Whose marker.
    pub account: AccountId,
    /// Which room (the name).
    pub room: String,
    /// The newest id read.
    pub last_read: u64,
}

/// Messages after a marker that one shared read takes for counting (see
/// [`RoomDirectory::unread_many`]): as many as the mention scan of one ask reads, so a shared
/// read never reads more rows than a single ask may.
pub(crate) fn group_scan_rows(cap: u32) -> u32 {
    u32::try_from(i64::from(cap).saturating_mul(MENTION_SCAN_FACTOR)).unwrap_or(u32::MAX)
}

/// A room's messages after a read marker, as one shared read takes them for counting (see
/// [`RoomDirectory::messages_after_marker`]): how many each sender sent, and the texts that
/// may mention someone. Aggregated in the query, so the read returns a row per sender rather
/// than a row per message (each row is a hand-off from the store's worker to the caller).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AfterMarker {
    /// Messages per sender.
    pub senders: Vec<(String, u32)>,
    /// Each message containing `@`: its sender and text.
    pub candidates: Vec<(String, String)>,
}

impl AfterMarker {
    /// Takes one row of the read: a text (a candidate, `n` 0) or a sender's count.
    pub(crate) fn add_row(&mut self, sender: String, n: i64, text: Option<String>) {
        match text {
            Some(text) => self.candidates.push((sender, text)),
            None => self
                .senders
                .push((sender, u32::try_from(n.max(0)).unwrap_or(u32::MAX))),
        }
    }

    /// The messages read, all senders together.
    pub fn total(&self) -> u64 {
        self.senders.iter().map(|(_, n)| u64::from(*n)).sum()
    }

    /// `name`'s counts: the same as the per-ask query's, which counts messages not sent by
    /// `name` up to `cap` and looks for mentions among their texts.
    fn counted_for(&self, name: &str, cap: u32) -> Unread {
        let own: u64 = self
            .senders
            .iter()
            .filter(|(sender, _)| sender == name)
            .map(|(_, n)| u64::from(*n))
            .sum();
        let unread = i64::try_from(self.total() - own).unwrap_or(i64::MAX);
        let texts = self
            .candidates
            .iter()
            .filter(|(sender, _)| sender != name)
            .map(|(_, text)| text.as_str());
        counted(unread, texts, name, cap)
    }
}

/// What [`RoomDirectory::unread`] counts: a room's messages after an account's marker.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnreadAsk {
    /// The room.
    pub room: String,
    /// The account's name (its own messages are not unread, `@name` is a mention).
    pub name: String,
    /// The account's read marker there.
    pub last_read: u64,
}

/// Unread and mention counts of one room for one account, each at most the cap asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unread {
    /// Messages after the marker not sent by the account.
    pub unread: u32,
    /// Those of them that mention the account (`@name`, case-insensitive, word-bounded).
    pub mentions: u32,
}

/// Whether `text` mentions `name`: `@name` with any letter case, not inside a longer word (the
/// `@` not preceded by a word character, the name not followed by one). Word characters are
/// letters, digits, `_`, `-` and `.` (a name like `bob.smith` or `ann-marie` is one word).
pub fn mentions(text: &str, name: &str) -> bool {
    mentions_lowercased(&text.to_lowercase(), &mention_needle(name))
}

/// What [`mentions_lowercased`] looks for: `@name` lowercased, empty for an empty name.
pub(crate) fn mention_needle(name: &str) -> String {
    match name.is_empty() {
        true => String::new(),
        false => format!("@{}", name.to_lowercase()),
    }
}

/// [`mentions`] for a text already lowercased and a [`mention_needle`]: for a caller that
/// checks many texts for one name, or one text for many names.
pub(crate) fn mentions_lowercased(text: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    let is_word = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.');
    let mut start = 0;
    while let Some(found) = text[start..].find(needle) {
        let at = start + found;
        let end = at + needle.len();
        let before_ok = text[..at].chars().next_back().is_none_or(|c| !is_word(c));
        // A trailing `.` ends a sentence ("thanks @bob.") rather than continuing the name.
        let rest = &text[end..];
        let mut after = rest.chars();
        let after_ok = match after.next() {
            None => true,
            Some('.') => after.next().is_none_or(|c| !is_word(c)),
            Some(c) => !is_word(c),
        };
        if before_ok && after_ok {
            return true;
        }
        start = at + '@'.len_utf8();
    }
    false
}

/// How many candidate messages (unread, containing `@`) per counted mention a count reads at
/// most: the SQL finds messages with an `@`, Rust decides which mention the account.
pub(crate) const MENTION_SCAN_FACTOR: i64 = 4;

/// Milliseconds since the Unix epoch, for the records' `*_ms` columns.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Owners first, then moderators, then members; by name within each.
pub(crate) fn sort_members(members: &mut [RoomMember]) {
    members.sort_by(|a, b| b.role.cmp(&a.role).then_with(|| a.name.cmp(&b.name)));
}

/// The counts from the store's unread count and the candidate texts (unread, containing `@`).
pub(crate) fn counted<'a>(
    unread: i64,
    candidates: impl Iterator<Item = &'a str>,
    name: &str,
    cap: u32,
) -> Unread {
    let mentioned = candidates.filter(|text| mentions(text, name)).count();
    Unread {
        unread: u32::try_from(unread.max(0)).unwrap_or(u32::MAX).min(cap),
        mentions: u32::try_from(mentioned).unwrap_or(u32::MAX).min(cap),
    }
}

/// Rooms' settings, members, roles and read markers, as SQLite and PostgreSQL keep them.
/// Methods are ordered create, read, update, delete; the read-marker methods last.
#[async_trait]
pub trait RoomDirectory: Send + Sync + 'static {
    /// Stores a room's record and its first members in one transaction, unless a record with
    /// that name exists ([`Created::Existed`], nothing changed).
    async fn create_room(&self, room: &NewRoom) -> Result<Created, StoreError>;

    /// Every room outside the reserved namespaces (`p-`, `dm-`) with anything recorded about
    /// it: a record, a listed member, a ban, a mute or slow mode. A public room not in this
    /// list has the default policy, so each node keeps the list in memory (hub/policy.rs) and
    /// the first join of such a room reads nothing from the store.
    async fn public_rooms_with_records(&self) -> Result<Vec<String>, StoreError>;

    /// The room's record, `None` for a room without one (a public room nobody set anything on,
    /// or a name that does not exist).
    async fn settings(&self, room: &str) -> Result<Option<RoomSettings>, StoreError>;

    /// The room's members with their names and roles, owners first, then by name.
    async fn members(&self, room: &str) -> Result<Vec<RoomMember>, StoreError>;

    /// The account's role in the room, `None` when it is not a member. What moderation checks.
    async fn role(&self, room: &str, account: AccountId) -> Result<Option<Role>, StoreError>;

    /// Every room with a record, by name (`hubbub room list`).
    async fn list_rooms(&self) -> Result<Vec<RoomSettings>, StoreError>;

    /// The sidebars of `accounts` in one query, as (account, room) pairs by account, then by
    /// room name: how the sidebars of a batch of connecting accounts are read (store/batch.rs).
    /// An account's sidebar is every room it is a member of, plus the public rooms it has a read
    /// marker in, each with its role, newest id and the account's marker.
    async fn sidebars(
        &self,
        accounts: &[AccountId],
    ) -> Result<Vec<(AccountId, SidebarRoom)>, StoreError>;

    /// One account's sidebar (see [`RoomDirectory::sidebars`]), by room name.
    async fn sidebar(&self, account: AccountId) -> Result<Vec<SidebarRoom>, StoreError> {
        let rooms = self.sidebars(&[account]).await?;
        Ok(rooms.into_iter().map(|(_, room)| room).collect())
    }

    /// Sets (or with `None` clears) the room's topic. A room without a record gets a public one
    /// (`created_by` = `by`), so a topic can be set on any public room.
    async fn set_topic(
        &self,
        room: &str,
        topic: Option<&str>,
        by: Option<AccountId>,
    ) -> Result<(), StoreError>;

    /// Adds the account to the room with `role`; `false` (and nothing changed, its role
    /// included) when it is a member already. A room without a record gets a public one.
    async fn add_member(
        &self,
        room: &str,
        account: AccountId,
        role: Role,
    ) -> Result<bool, StoreError>;

    /// Changes a member's role; `false` when the account is not a member.
    async fn set_role(
        &self,
        room: &str,
        account: AccountId,
        role: Role,
    ) -> Result<bool, StoreError>;

    /// Removes the account from the room's members; `false` when it was not one.
    async fn remove_member(&self, room: &str, account: AccountId) -> Result<bool, StoreError>;

    /// Stores read markers in one transaction. A marker only moves forward: one below what is
    /// stored leaves the stored one.
    async fn save_read_markers(&self, markers: &[ReadMarker]) -> Result<(), StoreError>;

    /// The account's read marker in the room (0 when it has none).
    async fn read_marker(&self, account: AccountId, room: &str) -> Result<u64, StoreError>;

    /// [`RoomDirectory::unread`] for several (room, name, marker) at once, each ask by its own
    /// bounded subqueries in one statement, in the order asked.
    async fn unread_each(&self, asks: &[UnreadAsk], cap: u32) -> Result<Vec<Unread>, StoreError>;

    /// The room's oldest `limit` messages after `last_read` that a moderator did not delete,
    /// counted per sender, with the texts among them that contain `@` (possible mentions).
    /// One read that counts unread messages for every name asking at that marker.
    async fn messages_after_marker(
        &self,
        room: &str,
        last_read: u64,
        limit: u32,
    ) -> Result<AfterMarker, StoreError>;

    /// [`RoomDirectory::unread`] for several (room, name, marker) at once, in the order asked:
    /// how the joins of a batch of signed-in connections count (store/batch.rs). Asks at the
    /// same (room, marker) share one read of the messages after it, counted per name here
    /// (members filling a room from the same marker read its rows once, not once each); a
    /// lone ask, or a marker with more messages after it than [`GROUP_SCAN_ROWS`] allows, is
    /// counted by its own bounded query. Exact either way.
    async fn unread_many(&self, asks: &[UnreadAsk], cap: u32) -> Result<Vec<Unread>, StoreError> {
        let limit = group_scan_rows(cap);
        let mut groups: std::collections::BTreeMap<(&str, u64), Vec<usize>> = Default::default();
        for (index, ask) in asks.iter().enumerate() {
            groups
                .entry((ask.room.as_str(), ask.last_read))
                .or_default()
                .push(index);
        }
        let mut counts = vec![Unread::default(); asks.len()];
        let mut each = Vec::new();
        for ((room, last_read), indexes) in groups {
            if indexes.len() > 1 {
                let after = self
                    .messages_after_marker(room, last_read, limit.saturating_add(1))
                    .await?;
                if after.total() <= u64::from(limit) {
                    for index in indexes {
                        counts[index] = after.counted_for(&asks[index].name, cap);
                    }
                    continue;
                }
            }
            each.extend(indexes);
        }
        if !each.is_empty() {
            let asked: Vec<UnreadAsk> = each.iter().map(|&index| asks[index].clone()).collect();
            for (index, count) in each.into_iter().zip(self.unread_each(&asked, cap).await?) {
                counts[index] = count;
            }
        }
        Ok(counts)
    }

    /// The room's messages after `last_read` not sent by `name` (the account's name: a guest
    /// can never hold it) and not deleted by a moderator, and those of them that mention `name`,
    /// each counted up to `cap`.
    async fn unread(
        &self,
        room: &str,
        name: &str,
        last_read: u64,
        cap: u32,
    ) -> Result<Unread, StoreError> {
        let ask = UnreadAsk {
            room: room.to_owned(),
            name: name.to_owned(),
            last_read,
        };
        let counts = self.unread_many(std::slice::from_ref(&ask), cap).await?;
        Ok(counts.into_iter().next().unwrap_or_default())
    }

    /// Records a change made beside the servers (the operator CLI): running nodes read it
    /// with [`RoomDirectory::directory_changes_since`] and reload the room's policy. `account`
    /// is the member whose membership changed, if any. Also deletes records older than a day.
    async fn note_directory_change(
        &self,
        room: &str,
        account: Option<AccountId>,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// The changes recorded after `after` (an id from an earlier change; 0 before any), oldest
    /// first, at most `limit`.
    async fn directory_changes_since(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<DirectoryChange>, StoreError>;

    /// The newest change's id (0 when none is recorded): where a starting node begins reading.
    async fn last_directory_change(&self) -> Result<i64, StoreError>;
}

/// A change recorded by [`RoomDirectory::note_directory_change`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryChange {
    /// Increasing: the readers' cursor.
    pub id: i64,
    /// The room that changed.
    pub room: String,
    /// The member whose membership changed (`None`: a topic, a new room).
    pub account: Option<AccountId>,
}

/// How long a recorded directory change is kept: far longer than any node takes to read it.
pub const DIRECTORY_CHANGE_KEPT_MS: i64 = 24 * 3600 * 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mention_matches_any_case_at_a_word_boundary() {
        assert!(mentions("hi @Bob", "bob"));
        assert!(mentions("@bob: look", "Bob"));
        assert!(mentions("(@bob)", "bob"));
        assert!(mentions("thanks @bob.", "bob"));
    }

    #[test]
    fn a_mention_inside_a_longer_word_or_name_does_not_match() {
        assert!(!mentions("hi @bobby", "bob"));
        assert!(!mentions("mail bob@bob", "bob"));
        assert!(!mentions("hi @bob.smith", "bob"));
        assert!(!mentions("hi bob", "bob"));
        assert!(mentions("hi @bob.smith", "bob.smith"));
    }

    #[test]
    fn a_later_occurrence_matches_when_an_earlier_one_does_not() {
        assert!(mentions("@bobby and @bob", "bob"));
    }

    #[test]
    fn roles_are_ordered_by_rights() {
        assert!(Role::Owner.can_moderate());
        assert!(Role::Moderator.can_moderate());
        assert!(!Role::Member.can_moderate());
        assert_eq!(Role::parse("owner"), Some(Role::Owner));
        assert_eq!(Role::parse("admin"), None);
    }

    #[test]
    fn reserved_names_are_private_and_direct_ones() {
        assert!(is_reserved("p-0123456789abcdef"));
        assert!(is_reserved("dm-0123456789abcdef"));
        assert!(!is_reserved("lobby"));
        assert!(!is_reserved("pub"));
    }
}
