//! The `RoomDirectory` contract (issue 19): rooms' records, members and roles, the sidebar, read
//! markers and unread/mention counts, one test body per behaviour, run against SQLite always and
//! PostgreSQL when `HUBBUB_TEST_POSTGRES` (or `HUBBUB_TEST_DB`) names a server (each test in a
//! schema of its own), as tests/store_contract.rs does for history.
//!
//! Accounts are inserted with plain SQL into the `accounts` table the spec fixes (migration
//! 0002), so these tests depend on that table, not on the accounts service.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::contract::Db;

use hubbub::protocol::RoomName;
use hubbub::store::NewMessage;
use hubbub::store::accounts::AccountId;
use hubbub::store::directory::{
    Created, NewRoom, ReadMarker, Role, RoomKind, RoomSettings, UnreadAsk,
};
use hubbub::store::moderation::{AuditRecord, Deletion};

impl Db {
    /// Posts `texts` to `room` as `from`.
    async fn post(&self, room: &str, from: &str, texts: &[&str]) {
        let batch: Vec<NewMessage> = texts
            .iter()
            .map(|text| NewMessage {
                room: RoomName::parse(room).unwrap(),
                from: from.to_owned(),
                text: (*text).to_owned(),
                ts: 1,
                author: None,
                reply_to: None,
                attachment: None,
            })
            .collect();
        self.store.append(&batch).await.unwrap();
    }
}

contract!(
    a_created_room_has_its_record_and_first_members,
    creating_a_room_whose_name_has_a_record_changes_nothing,
    a_room_without_a_record_has_no_settings_and_no_members,
    members_are_listed_owners_first_then_moderators_then_by_name,
    a_non_member_has_no_role,
    adding_a_member_twice_keeps_the_first_role,
    setting_the_role_of_a_non_member_changes_nothing,
    removing_a_member_removes_only_that_member,
    a_topic_on_a_room_without_a_record_makes_it_a_public_record,
    a_topic_of_none_clears_it,
    list_rooms_lists_every_record_by_name,
    the_sidebar_lists_member_rooms_and_public_rooms_with_a_marker,
    sidebars_of_several_accounts_are_each_accounts_own,
    the_sidebar_omits_a_private_room_the_account_left_even_with_a_marker,
    a_read_marker_only_moves_forward,
    a_batch_of_markers_for_several_accounts_and_rooms_is_saved_whole,
    unread_counts_messages_after_the_marker_not_sent_by_the_account,
    unread_and_mentions_leave_out_deleted_messages,
    mentions_count_word_bounded_mentions_in_any_case,
    unread_and_mentions_stop_at_the_cap,
    unread_for_several_asks_at_once_is_each_asks_own_count,
    public_rooms_with_records_leave_out_private_rooms_dms_and_rooms_without_one,
);

fn record(room: &str, kind: RoomKind, by: Option<AccountId>) -> RoomSettings {
    RoomSettings {
        room: room.to_owned(),
        kind,
        title: (kind == RoomKind::Private).then(|| "Design".to_owned()),
        topic: None,
        created_by: by,
        created_ms: 42,
    }
}

async fn create(db: &Db, room: &str, kind: RoomKind, members: &[(AccountId, Role)]) -> Created {
    let by = members.first().map(|(account, _)| *account);
    db.directory
        .create_room(&NewRoom {
            settings: record(room, kind, by),
            members: members.to_vec(),
        })
        .await
        .unwrap()
}

async fn a_created_room_has_its_record_and_first_members(db: Db) {
    let ann = db.account("ann").await;
    let made = create(&db, "p-1", RoomKind::Private, &[(ann, Role::Owner)]).await;
    assert_eq!(made, Created::New);
    let settings = db.directory.settings("p-1").await.unwrap();
    assert_eq!(settings, Some(record("p-1", RoomKind::Private, Some(ann))));
    assert_eq!(
        db.directory.role("p-1", ann).await.unwrap(),
        Some(Role::Owner)
    );
}

async fn creating_a_room_whose_name_has_a_record_changes_nothing(db: Db) {
    let ann = db.account("ann").await;
    let bob = db.account("bob").await;
    create(&db, "p-1", RoomKind::Private, &[(ann, Role::Owner)]).await;
    let again = create(&db, "p-1", RoomKind::Direct, &[(bob, Role::Owner)]).await;
    assert_eq!(again, Created::Existed);
    let settings = db.directory.settings("p-1").await.unwrap().unwrap();
    assert_eq!(settings.kind, RoomKind::Private);
    assert_eq!(db.directory.role("p-1", bob).await.unwrap(), None);
}

async fn a_room_without_a_record_has_no_settings_and_no_members(db: Db) {
    db.post("lobby", "ann", &["hi"]).await;
    assert_eq!(db.directory.settings("lobby").await.unwrap(), None);
    assert!(db.directory.members("lobby").await.unwrap().is_empty());
}

async fn members_are_listed_owners_first_then_moderators_then_by_name(db: Db) {
    let zed = db.account("zed").await;
    let ann = db.account("ann").await;
    let bob = db.account("bob").await;
    let cat = db.account("cat").await;
    let members = [
        (bob, Role::Member),
        (zed, Role::Owner),
        (cat, Role::Moderator),
        (ann, Role::Member),
    ];
    create(&db, "p-1", RoomKind::Private, &members).await;
    let listed: Vec<(String, Role)> = db
        .directory
        .members("p-1")
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.role))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("zed".to_owned(), Role::Owner),
            ("cat".to_owned(), Role::Moderator),
            ("ann".to_owned(), Role::Member),
            ("bob".to_owned(), Role::Member),
        ]
    );
}

async fn a_non_member_has_no_role(db: Db) {
    let ann = db.account("ann").await;
    let bob = db.account("bob").await;
    create(&db, "p-1", RoomKind::Private, &[(ann, Role::Owner)]).await;
    assert_eq!(db.directory.role("p-1", bob).await.unwrap(), None);
    assert_eq!(db.directory.role("nowhere", ann).await.unwrap(), None);
}

async fn adding_a_member_twice_keeps_the_first_role(db: Db) {
    let ann = db.account("ann").await;
    let bob = db.account("bob").await;
    create(&db, "p-1", RoomKind::Private, &[(ann, Role::Owner)]).await;
    assert!(
        db.directory
            .add_member("p-1", bob, Role::Member)
            .await
            .unwrap()
    );
    assert!(
        !db.directory
            .add_member("p-1", bob, Role::Owner)
            .await
            .unwrap()
    );
    assert_eq!(
        db.directory.role("p-1", bob).await.unwrap(),
        Some(Role::Member)
    );
}

async fn setting_the_role_of_a_non_member_changes_nothing(db: Db) {
    let ann = db.account("ann").await;
    let bob = db.account("bob").await;
    create(&db, "p-1", RoomKind::Private, &[(ann, Role::Owner)]).await;
    assert!(
        !db.directory
            .set_role("p-1", bob, Role::Moderator)
            .await
            .unwrap()
    );
    assert_eq!(db.directory.role("p-1", bob).await.unwrap(), None);
    assert!(
        db.directory
            .set_role("p-1", ann, Role::Moderator)
            .await
            .unwrap()
    );
    assert_eq!(
        db.directory.role("p-1", ann).await.unwrap(),
        Some(Role::Moderator)
    );
}

async fn removing_a_member_removes_only_that_member(db: Db) {
    let ann = db.account("ann").await;
    let bob = db.account("bob").await;
    let members = [(ann, Role::Owner), (bob, Role::Member)];
    create(&db, "p-1", RoomKind::Private, &members).await;
    assert!(db.directory.remove_member("p-1", bob).await.unwrap());
    assert!(!db.directory.remove_member("p-1", bob).await.unwrap());
    assert_eq!(db.directory.role("p-1", bob).await.unwrap(), None);
    assert_eq!(
        db.directory.role("p-1", ann).await.unwrap(),
        Some(Role::Owner)
    );
}

async fn a_topic_on_a_room_without_a_record_makes_it_a_public_record(db: Db) {
    let ann = db.account("ann").await;
    db.directory
        .set_topic("lobby", Some("welcome"), Some(ann))
        .await
        .unwrap();
    let settings = db.directory.settings("lobby").await.unwrap().unwrap();
    assert_eq!(settings.kind, RoomKind::Public);
    assert_eq!(settings.topic.as_deref(), Some("welcome"));
    assert_eq!(settings.created_by, Some(ann));
}

async fn a_topic_of_none_clears_it(db: Db) {
    db.directory
        .set_topic("lobby", Some("welcome"), None)
        .await
        .unwrap();
    db.directory.set_topic("lobby", None, None).await.unwrap();
    let settings = db.directory.settings("lobby").await.unwrap().unwrap();
    assert_eq!(settings.topic, None);
}

async fn list_rooms_lists_every_record_by_name(db: Db) {
    let ann = db.account("ann").await;
    create(&db, "p-b", RoomKind::Private, &[(ann, Role::Owner)]).await;
    create(&db, "dm-a", RoomKind::Direct, &[(ann, Role::Member)]).await;
    db.directory
        .set_topic("lobby", Some("t"), None)
        .await
        .unwrap();
    let names: Vec<String> = db
        .directory
        .list_rooms()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.room)
        .collect();
    assert_eq!(names, vec!["dm-a", "lobby", "p-b"]);
}

async fn the_sidebar_lists_member_rooms_and_public_rooms_with_a_marker(db: Db) {
    let ann = db.account("ann").await;
    let bob = db.account("bob").await;
    create(&db, "p-1", RoomKind::Private, &[(ann, Role::Owner)]).await;
    create(&db, "p-2", RoomKind::Private, &[(bob, Role::Owner)]).await;
    db.post("lobby", "bob", &["a", "b", "c"]).await;
    db.post("p-1", "ann", &["x"]).await;
    db.post("quiet", "bob", &["z"]).await;
    let marker = ReadMarker {
        account: ann,
        room: "lobby".to_owned(),
        last_read: 2,
    };
    db.directory.save_read_markers(&[marker]).await.unwrap();
    let sidebar = db.directory.sidebar(ann).await.unwrap();
    let rows: Vec<(&str, RoomKind, Option<Role>, u64, u64)> = sidebar
        .iter()
        .map(|r| {
            (
                r.settings.room.as_str(),
                r.settings.kind,
                r.role,
                r.last_id,
                r.last_read,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("lobby", RoomKind::Public, None, 3, 2),
            ("p-1", RoomKind::Private, Some(Role::Owner), 1, 0),
        ]
    );
}

async fn sidebars_of_several_accounts_are_each_accounts_own(db: Db) {
    let ann = db.account("ann").await;
    let bob = db.account("bob").await;
    let cy = db.account("cy").await;
    create(
        &db,
        "p-1",
        RoomKind::Private,
        &[(ann, Role::Owner), (bob, Role::Member)],
    )
    .await;
    create(&db, "p-2", RoomKind::Private, &[(bob, Role::Owner)]).await;
    db.post("lobby", "cy", &["a", "b"]).await;
    let markers = [(ann, 1), (cy, 2)].map(|(account, last_read)| ReadMarker {
        account,
        room: "lobby".to_owned(),
        last_read,
    });
    db.directory.save_read_markers(&markers).await.unwrap();
    let sidebars = db.directory.sidebars(&[cy, bob, ann]).await.unwrap();
    let rows: Vec<(AccountId, &str, Option<Role>, u64)> = sidebars
        .iter()
        .map(|(account, r)| (*account, r.settings.room.as_str(), r.role, r.last_read))
        .collect();
    let mut expected = vec![
        (ann, "lobby", None, 1),
        (ann, "p-1", Some(Role::Owner), 0),
        (bob, "p-1", Some(Role::Member), 0),
        (bob, "p-2", Some(Role::Owner), 0),
        (cy, "lobby", None, 2),
    ];
    expected.sort_by_key(|row| (row.0, row.1));
    assert_eq!(rows, expected, "by account, then by room");
    // Each account's share is what its own sidebar reads.
    for account in [ann, bob, cy] {
        let own: Vec<_> = sidebars
            .iter()
            .filter(|(of, _)| *of == account)
            .map(|(_, room)| room.clone())
            .collect();
        assert_eq!(own, db.directory.sidebar(account).await.unwrap());
    }
}

async fn the_sidebar_omits_a_private_room_the_account_left_even_with_a_marker(db: Db) {
    let ann = db.account("ann").await;
    let bob = db.account("bob").await;
    let members = [(ann, Role::Owner), (bob, Role::Member)];
    create(&db, "p-1", RoomKind::Private, &members).await;
    let marker = ReadMarker {
        account: bob,
        room: "p-1".to_owned(),
        last_read: 1,
    };
    db.directory.save_read_markers(&[marker]).await.unwrap();
    db.directory.remove_member("p-1", bob).await.unwrap();
    assert!(db.directory.sidebar(bob).await.unwrap().is_empty());
}

async fn a_read_marker_only_moves_forward(db: Db) {
    let ann = db.account("ann").await;
    let at = |last_read| ReadMarker {
        account: ann,
        room: "lobby".to_owned(),
        last_read,
    };
    assert_eq!(db.directory.read_marker(ann, "lobby").await.unwrap(), 0);
    db.directory.save_read_markers(&[at(5)]).await.unwrap();
    db.directory.save_read_markers(&[at(3)]).await.unwrap();
    assert_eq!(db.directory.read_marker(ann, "lobby").await.unwrap(), 5);
    db.directory.save_read_markers(&[at(9)]).await.unwrap();
    assert_eq!(db.directory.read_marker(ann, "lobby").await.unwrap(), 9);
}

async fn a_batch_of_markers_for_several_accounts_and_rooms_is_saved_whole(db: Db) {
    let ann = db.account("ann").await;
    let bob = db.account("bob").await;
    let marker = |account, room: &str, last_read| ReadMarker {
        account,
        room: room.to_owned(),
        last_read,
    };
    let batch = [
        marker(ann, "a", 1),
        marker(ann, "b", 2),
        marker(bob, "a", 3),
        marker(ann, "a", 4),
    ];
    db.directory.save_read_markers(&batch).await.unwrap();
    assert_eq!(db.directory.read_marker(ann, "a").await.unwrap(), 4);
    assert_eq!(db.directory.read_marker(ann, "b").await.unwrap(), 2);
    assert_eq!(db.directory.read_marker(bob, "a").await.unwrap(), 3);
}

async fn unread_counts_messages_after_the_marker_not_sent_by_the_account(db: Db) {
    db.post("lobby", "bob", &["1", "2", "3"]).await;
    db.post("lobby", "ann", &["4"]).await;
    db.post("lobby", "bob", &["5"]).await;
    let counts = db.directory.unread("lobby", "ann", 1, 999).await.unwrap();
    assert_eq!(counts.unread, 3, "2, 3 and 5");
    assert_eq!(counts.mentions, 0);
}

async fn unread_and_mentions_leave_out_deleted_messages(db: Db) {
    db.post("lobby", "bob", &["1", "@ann 2", "3", "@ann 4"])
        .await;
    let audit = AuditRecord {
        actor: "mod".to_owned(),
        action: "delete".to_owned(),
        room: Some("lobby".to_owned()),
        target: None,
        detail: None,
    };
    for id in [2, 3] {
        let deletion = db.moderation.delete_message("lobby", id, &audit).await;
        assert!(matches!(deletion.unwrap(), Deletion::Deleted(_)));
    }
    let counts = db.directory.unread("lobby", "ann", 0, 999).await.unwrap();
    assert_eq!(counts.unread, 2, "1 and 4");
    assert_eq!(counts.mentions, 1, "4");
    // Two names at one marker: the shared read leaves them out too.
    let asks = ["ann", "cy"].map(|name| UnreadAsk {
        room: "lobby".to_owned(),
        name: name.to_owned(),
        last_read: 0,
    });
    let counts = db.directory.unread_many(&asks, 999).await.unwrap();
    let pairs: Vec<(u32, u32)> = counts.iter().map(|c| (c.unread, c.mentions)).collect();
    assert_eq!(pairs, [(2, 1), (2, 0)]);
}

async fn mentions_count_word_bounded_mentions_in_any_case(db: Db) {
    let texts = [
        "hi @Ann",
        "@ann: look",
        "@annie here",
        "mail ann@ann.example",
        "ann without an at",
    ];
    db.post("lobby", "bob", &texts).await;
    db.post("lobby", "ann", &["@ann talking to myself"]).await;
    let counts = db.directory.unread("lobby", "ann", 0, 999).await.unwrap();
    assert_eq!(counts.unread, 5);
    assert_eq!(counts.mentions, 2);
}

async fn unread_and_mentions_stop_at_the_cap(db: Db) {
    let texts = ["@ann 1", "@ann 2", "@ann 3", "@ann 4", "@ann 5"];
    db.post("lobby", "bob", &texts).await;
    let counts = db.directory.unread("lobby", "ann", 0, 3).await.unwrap();
    assert_eq!(counts.unread, 3);
    assert_eq!(counts.mentions, 3);
}

async fn unread_for_several_asks_at_once_is_each_asks_own_count(db: Db) {
    db.post("lobby", "bob", &["1", "@ann 2", "3", "@cy 4"])
        .await;
    db.post("lobby", "ann", &["5"]).await;
    db.post("other", "ann", &["@bob 1", "2"]).await;
    let ask = |room: &str, name: &str, last_read| UnreadAsk {
        room: room.to_owned(),
        name: name.to_owned(),
        last_read,
    };
    let asks = [
        ask("lobby", "ann", 0),
        ask("lobby", "cy", 2),
        ask("other", "bob", 0),
        ask("lobby", "ann", 0),
        ask("empty", "ann", 0),
    ];
    let counts = db.directory.unread_many(&asks, 999).await.unwrap();
    let pairs: Vec<(u32, u32)> = counts.iter().map(|c| (c.unread, c.mentions)).collect();
    assert_eq!(
        pairs,
        [(4, 1), (3, 1), (2, 1), (4, 1), (0, 0)],
        "in the order asked"
    );
    for (ask, count) in asks.iter().zip(&counts) {
        let alone = db
            .directory
            .unread(&ask.room, &ask.name, ask.last_read, 999)
            .await;
        assert_eq!(alone.unwrap(), *count, "{ask:?}");
    }
    let capped = db.directory.unread_many(&asks[..1], 2).await.unwrap();
    assert_eq!((capped[0].unread, capped[0].mentions), (2, 1));
    assert!(db.directory.unread_many(&[], 999).await.unwrap().is_empty());

    // Several names at one marker share one read of the rows after it; with a cap that small
    // the rows after the marker are more than one read takes, and each is counted alone.
    let same_marker = [ask("lobby", "ann", 0), ask("lobby", "bob", 0)];
    for cap in [999, 1] {
        let counts = db.directory.unread_many(&same_marker, cap).await.unwrap();
        for (ask, count) in same_marker.iter().zip(&counts) {
            let alone = db.directory.unread(&ask.room, &ask.name, 0, cap).await;
            assert_eq!(alone.unwrap(), *count, "{ask:?}, cap {cap}");
        }
    }
    let counts = db.directory.unread_many(&same_marker, 999).await.unwrap();
    let pairs: Vec<(u32, u32)> = counts.iter().map(|c| (c.unread, c.mentions)).collect();
    assert_eq!(pairs, [(4, 1), (1, 0)], "each name's own messages left out");
}

async fn public_rooms_with_records_leave_out_private_rooms_dms_and_rooms_without_one(db: Db) {
    let ann = db.account("ann").await;
    create(&db, "ruled", RoomKind::Public, &[(ann, Role::Owner)]).await;
    create(&db, "p-1", RoomKind::Private, &[(ann, Role::Owner)]).await;
    create(&db, "dm-1", RoomKind::Direct, &[(ann, Role::Member)]).await;
    db.directory
        .set_topic("lobby", Some("welcome"), Some(ann))
        .await
        .unwrap();
    db.post("quiet", "ann", &["no record, only history"]).await;
    let mut rooms = db.directory.public_rooms_with_records().await.unwrap();
    rooms.sort();
    assert_eq!(rooms, ["lobby", "ruled"]);
}
