//! A mass reconnect: the node 5,000 clients were on dies, and they all resume with `since` on
//! the node that takes over, at once. Every client must get exactly the messages after its
//! `since`, in order, also those posted while the storm is going on; and the store must see a
//! handful of reads per room, not one or two per client (store/coalesce.rs, hub/session.rs).
//!
//! The real binary, real sockets: clients come from 127.0.0.2 ... 127.0.0.26 (200 each, under
//! the default 256 per address). The test process holds 5,000 sockets and the server 5,000
//! more, each under the 20,000 open files of this machine. On PostgreSQL when HUBBUB_TEST_DB is
//! set, as every test (tests/common/pg.rs).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{Binary, Client, api_post_with, free_port, metrics, scratch, try_connect};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Clients resuming at once.
const CLIENTS: usize = 5000;
/// Rooms they are spread over (1,000 members each).
const ROOMS: usize = 5;
/// Loopback source addresses the clients are spread over, from 127.0.0.2.
const SOURCES: usize = 25;
/// Messages each room had before its node died.
const HISTORY: u64 = 60;
/// The most messages a client missed before the node died: clients' `since` values are spread
/// over the room's last `MISSED` ids (they lost their connection at slightly different times).
const MISSED: u64 = 30;
/// Messages posted to each room while the clients resume.
const LIVE: u64 = 5;
/// WebSocket handshakes in flight at once while the clients connect.
const CONNECTING: usize = 200;
/// How long the storm may take, connecting aside: on this 2-core machine, shared with other
/// builds, it takes 5 to 20 s (the debug build of the server, and 5,000 clients in this process).
const STORM: Duration = Duration::from_secs(90);

/// Store reads one room's resume may cost. The room has no members on the new node, so the
/// first joiner reads the room's newest page (one query, which also gives `joined` its
/// `last_id`) and gives it to the room; every later joiner replays from memory, because every
/// `since` is among the newest 50 messages (`MISSED` + `LIVE` < 50). The joiners admitted
/// before that page has reached memory read too, but they all ask the same query whatever
/// their `since`, so they share one: the query running when they arrive is never shared (it
/// may predate them: store/coalesce.rs), the next one is shared by all of them. The reader that
/// completes a query puts its page into memory in the same poll, so a third query needs a
/// joiner admitted in the moment between the second query's start (on the other core) and
/// that; a fourth would need that moment twice. So at most 3, and one of slack for a loaded
/// machine. Measured on this machine: 8 to 11 reads for the 5 rooms. With the memory path but
/// no coalescing: 58; with coalescing but without the memory path (one `last_id` and one
/// `after` per client, `after` keyed by each `since`): about 600; with neither: 10,000.
const READS_PER_ROOM: u64 = 4;

fn room_name(room: usize) -> String {
    format!("storm-{room}")
}

/// A client's room and `since`: rooms in turn, `since` spread over the last `MISSED` ids.
fn resume_point(client: usize) -> (usize, u64) {
    let room = client % ROOMS;
    let missed = (client / ROOMS) as u64 % (MISSED + 1);
    (room, HISTORY - missed)
}

/// The `hubbub_store_reads_total` series of `kind` in a /metrics text.
fn store_reads(metrics: &str, kind: &str) -> u64 {
    let series = format!("hubbub_store_reads_total{{kind=\"{kind}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |value| value.trim().parse().unwrap())
}

/// Posts `count` messages to every room (rooms in parallel, each in order) and returns each
/// room's messages by id.
async fn post_to_rooms(addr: SocketAddr, count: u64, label: &str) -> Vec<BTreeMap<u64, String>> {
    let posters = (0..ROOMS).map(|room| {
        let label = label.to_owned();
        tokio::spawn(async move {
            let mut posted = BTreeMap::new();
            for n in 0..count {
                let text = format!("{label} {n} in {}", room_name(room));
                let id = post(addr, &room_name(room), &text).await;
                posted.insert(id, text);
            }
            posted
        })
    });
    let mut rooms = Vec::new();
    for poster in posters {
        rooms.push(poster.await.unwrap());
    }
    rooms
}

/// Posts `text` through the HTTP API and returns its id. Not `common::api_post`, whose client
/// gives up after 10 s: a post in the middle of the storm waits its turn on a loaded machine.
async fn post(addr: SocketAddr, room: &str, text: &str) -> u64 {
    let client = reqwest::Client::builder().timeout(STORM).build().unwrap();
    api_post_with(&client, addr, room, "poster", text).await
}

/// Opens `CLIENTS` WebSockets to `addr` from the spread source addresses, each past its
/// `welcome`, without joining anything.
async fn connect_clients(addr: SocketAddr) -> Vec<Client> {
    let deadline = Instant::now() + STORM;
    futures_util::stream::iter(0..CLIENTS)
        .map(|i| async move {
            let source = format!("127.0.0.{}", 2 + i % SOURCES);
            let mut client = try_connect(addr, "/ws", &[], Some(&source)).await.unwrap();
            let welcome = next_text(&mut client, deadline).await;
            assert!(welcome.starts_with(r#"{"type":"welcome""#), "{welcome}");
            client
        })
        .buffered(CONNECTING)
        .collect()
        .await
}

/// What one client saw of its resume.
#[derive(Debug)]
struct Resumed {
    /// `joined`'s `last_id`.
    last_id: u64,
    /// Every `msg` up to the one awaited: id and text.
    messages: Vec<(u64, String)>,
}

/// Joins with `since` and reads until message `until` or the deadline.
async fn resume(
    client: &mut Client,
    room: &str,
    since: u64,
    until: u64,
    deadline: Instant,
) -> Resumed {
    client
        .send(json!({"type": "join", "room": room, "data": {"since": since}}))
        .await;
    // Nothing of the room comes before `joined`: live frames are held until the replay is out.
    let joined: Value = serde_json::from_str(&next_text(client, deadline).await).unwrap();
    assert_eq!(joined["type"], "joined", "{joined}");
    let last_id = joined["data"]["last_id"].as_u64().unwrap();
    let mut messages = Vec::new();
    loop {
        let msg = next_msg(client, deadline).await;
        let id = msg["id"].as_u64().unwrap();
        messages.push((id, msg["data"].as_str().unwrap().to_owned()));
        if id >= until {
            return Resumed { last_id, messages };
        }
    }
}

/// The next text frame (pings are answered by the client library and skipped).
async fn next_text(client: &mut Client, deadline: Instant) -> String {
    loop {
        let message = tokio::time::timeout_at(deadline, client.ws.next())
            .await
            .expect("the storm is over before the deadline")
            .expect("the connection is open")
            .expect("the frame is valid");
        if let Message::Text(text) = message {
            return text.as_str().to_owned();
        }
    }
}

/// The next `msg` frame. Presence frames (a thousand members' worth) are skipped unparsed:
/// 5,000 clients in one test process would otherwise spend most of the run decoding them. An
/// `error` frame fails the test.
async fn next_msg(client: &mut Client, deadline: Instant) -> Value {
    loop {
        let text = next_text(client, deadline).await;
        if text.starts_with(r#"{"type":"msg""#) {
            return serde_json::from_str(&text).unwrap();
        }
        assert!(!text.starts_with(r#"{"type":"error""#), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_clients_resuming_at_once_get_exactly_what_they_missed_from_a_few_reads() {
    // Both sides of 5,000 sockets stay under the limit; raise the soft limit to the hard one
    // in case this shell lowered it.
    let (_soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard).unwrap();
    assert!(hard >= (CLIENTS as u64) + 1000, "open-file limit {hard}");

    // The node the clients were on: it has the rooms' history, then dies.
    let (_dir, data) = scratch();
    let old_node = Binary::start(&data, free_port(), &[]).await;
    let mut history = post_to_rooms(old_node.addr, HISTORY, "before").await;
    old_node.signal("KILL");
    assert!(!old_node.wait().await.success());

    // The node that takes over the same database; every client reconnects to it.
    let node = Binary::start(&data, free_port(), &[]).await;
    let mut clients = connect_clients(node.addr).await;
    let reads_before = metrics(node.addr).await;

    // All resume at once, while messages keep being posted.
    let until = HISTORY + LIVE;
    let deadline = Instant::now() + STORM;
    let resumes: Vec<_> = clients
        .drain(..)
        .enumerate()
        .map(|(i, mut client)| {
            let (room, since) = resume_point(i);
            tokio::spawn(async move {
                let resumed = resume(&mut client, &room_name(room), since, until, deadline).await;
                (client, resumed)
            })
        })
        .collect();
    let live = post_to_rooms(node.addr, LIVE, "live").await;
    for (room, posted) in live.into_iter().enumerate() {
        history[room].extend(posted);
    }
    for (i, resumed) in resumes.into_iter().enumerate() {
        let (client, resumed) = resumed.await.unwrap();
        let (room, since) = resume_point(i);
        let context = format!("client {i} in {} since {since}", room_name(room));
        // The room's newest id when the client joined: at least what it had before the storm.
        assert!(
            (HISTORY..=until).contains(&resumed.last_id),
            "{context}: {resumed:?}"
        );
        let expected: Vec<(u64, String)> = history[room]
            .range(since + 1..=until)
            .map(|(id, text)| (*id, text.clone()))
            .collect();
        assert_eq!(resumed.messages, expected, "{context}");
        clients.push(client);
    }
    let reads_after = metrics(node.addr).await;

    // Nothing else is on its way: the next message each client gets is the next one posted.
    let markers = Arc::new(post_to_rooms(node.addr, 1, "after").await);
    let checks = clients.into_iter().enumerate().map(|(i, mut client)| {
        let markers = markers.clone();
        tokio::spawn(async move {
            let (room, _) = resume_point(i);
            let msg = next_msg(&mut client, deadline).await;
            let (id, text) = markers[room].first_key_value().unwrap();
            assert_eq!(msg["id"].as_u64().unwrap(), *id, "client {i}: {msg}");
            assert_eq!(msg["data"], text.as_str());
        })
    });
    for check in checks.collect::<Vec<_>>() {
        check.await.unwrap();
    }

    let reads = |kind| store_reads(&reads_after, kind) - store_reads(&reads_before, kind);
    let (newest_pages, last_ids, afters) = (reads("before"), reads("last_id"), reads("after"));
    eprintln!(
        "store reads for {CLIENTS} resumes in {ROOMS} rooms: before={newest_pages} \
         last_id={last_ids} after={afters}"
    );
    assert_eq!(last_ids, 0, "joined's last_id comes with the newest page");
    assert_eq!(
        afters, 0,
        "every since is among the newest messages held in memory"
    );
    assert!(
        newest_pages <= READS_PER_ROOM * ROOMS as u64,
        "{newest_pages} reads of the newest page for {ROOMS} rooms"
    );
}
