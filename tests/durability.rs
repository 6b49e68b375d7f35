//! Crashes and restarts of the real binary: acked messages survive `kill -9` during a burst from
//! several concurrent posters with their ids, ids keep increasing across restarts and are never
//! reused, and SIGTERM during a burst closes every socket with 1001, loses no acked message and
//! exits 0.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Binary, Client, Closed, api_post, free_port, get_json, scratch};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

async fn stored_ids(addr: std::net::SocketAddr, room: &str) -> BTreeMap<u64, String> {
    let mut ids = BTreeMap::new();
    let mut before: Option<u64> = None;
    loop {
        let url = match before {
            Some(b) => format!("http://{addr}/api/rooms/{room}/messages?limit=200&before={b}"),
            None => format!("http://{addr}/api/rooms/{room}/messages?limit=200"),
        };
        let page: Value = get_json(url).await;
        let messages = page["messages"].as_array().unwrap();
        for m in messages {
            ids.insert(
                m["id"].as_u64().unwrap(),
                m["data"].as_str().unwrap().to_owned(),
            );
        }
        if page["has_more"] != true {
            return ids;
        }
        before = messages.first().and_then(|m| m["id"].as_u64());
    }
}

/// What one poster saw of its burst: the acks (id, text) and how the connection ended.
struct BurstOutcome {
    acked: Vec<(u64, String)>,
    close_code: Option<u16>,
}

/// Sends `count` posts to room `r` without waiting, then reads until the connection ends,
/// counting acks in `progress` (shared by every poster) so the test can strike mid-burst.
fn burst(
    mut client: Client,
    tag: &'static str,
    count: usize,
    progress: watch::Sender<usize>,
) -> tokio::task::JoinHandle<BurstOutcome> {
    tokio::spawn(async move {
        for i in 0..count {
            let text = format!("{tag}-{i}");
            let frame = json!({"type": "msg", "room": "r", "data": text, "ref": text});
            // The server may be killed while this poster is still sending (another poster's
            // acks reached the kill's threshold first): the reset ends the sending, and the
            // read below sees the connection end.
            if client
                .ws
                .send(Message::text(frame.to_string()))
                .await
                .is_err()
            {
                break;
            }
        }
        let mut acked = Vec::new();
        let close_code = loop {
            match tokio::time::timeout(common::WAIT, client.ws.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    let frame: Value = serde_json::from_str(text.as_str()).unwrap();
                    if frame["type"] == "ack" {
                        let text = frame["ref"].as_str().unwrap().to_owned();
                        acked.push((frame["id"].as_u64().unwrap(), text));
                        progress.send_modify(|acks| *acks += 1);
                    }
                }
                Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => {}
                // Reset or EOF without a close frame: the process died.
                Ok(None | Some(Err(_))) => break None,
                Err(_) => panic!("poster {tag}: the connection neither ended nor answered"),
            }
        };
        BurstOutcome { acked, close_code }
    })
}

/// Waits until at least `n` acks have arrived across all posters.
async fn wait_for_acks(progress: &watch::Sender<usize>, n: usize) {
    let mut acks = progress.subscribe();
    let reached = tokio::time::timeout(common::WAIT, acks.wait_for(|acks| *acks >= n)).await;
    assert!(
        matches!(reached, Ok(Ok(_))),
        "only {} acks arrived",
        *progress.borrow()
    );
}

/// Checks a restarted server's history against what was acked: every ack names a stored message
/// with its text, no id was acked twice, and nothing is stored twice or that nobody sent.
fn assert_acks_stored(outcomes: &[BurstOutcome], stored: &BTreeMap<u64, String>) -> usize {
    let mut acked_ids = BTreeSet::new();
    for outcome in outcomes {
        for (id, text) in &outcome.acked {
            assert!(acked_ids.insert(*id), "id {id} was acked twice");
            assert_eq!(
                stored.get(id),
                Some(text),
                "acked message {id} survived with its id"
            );
        }
    }
    let texts: BTreeSet<&String> = stored.values().collect();
    assert_eq!(texts.len(), stored.len(), "no message is stored twice");
    assert!(
        stored
            .values()
            .all(|t| t.starts_with('p') && t.contains('-')),
        "only sent messages are stored"
    );
    acked_ids.len()
}

#[tokio::test]
async fn acked_messages_survive_kill_9_during_a_concurrent_burst() {
    kill_9_during_a_burst(&[]).await;
}

#[tokio::test]
async fn acked_messages_survive_kill_9_with_process_durability() {
    // Without an fsync per commit an ack must still survive a crash of the process.
    kill_9_during_a_burst(&["--durability", "process"]).await;
}

async fn kill_9_during_a_burst(flags: &[&str]) {
    let (_dir, data) = scratch();
    let port = free_port();
    let server = Binary::start(&data, port, flags).await;
    let progress = watch::Sender::new(0);
    let mut posters = Vec::new();
    for tag in ["p0", "p1", "p2", "p3"] {
        let mut client = server.client("").await;
        client.join("r").await;
        posters.push(burst(client, tag, 500, progress.clone()));
    }
    // Kill the process while the posts are still being committed.
    wait_for_acks(&progress, 200).await;
    server.signal("KILL");
    server.wait().await;
    let mut outcomes = Vec::new();
    for poster in posters {
        outcomes.push(poster.await.unwrap());
    }
    assert!(
        outcomes.iter().all(|o| o.close_code.is_none()),
        "no close frame from a killed process"
    );

    let server = Binary::start(&data, free_port(), flags).await;
    let stored = stored_ids(server.addr, "r").await;
    let acked = assert_acks_stored(&outcomes, &stored);
    eprintln!("{acked} acked of 2000 sent; {} stored", stored.len());
    let newest = stored.keys().last().copied().unwrap_or(0);
    let next = api_post(server.addr, "r", "a", "after restart").await;
    assert_eq!(
        next,
        newest + 1,
        "ids continue after the newest stored one, never reused"
    );
}

#[tokio::test]
async fn ids_strictly_increase_across_a_restart() {
    let (_dir, data) = scratch();
    let port = free_port();
    let server = Binary::start(&data, port, &[]).await;
    assert_eq!(api_post(server.addr, "r", "a", "one").await, 1);
    assert_eq!(api_post(server.addr, "r", "a", "two").await, 2);
    server.signal("TERM");
    assert!(server.wait().await.success());

    let server = Binary::start(&data, free_port(), &[]).await;
    assert_eq!(api_post(server.addr, "r", "a", "three").await, 3);
    let mut client = server.client("").await;
    client
        .send(json!({"type": "join", "room": "r", "data": {"since": 1}}))
        .await;
    client.recv_type("joined").await;
    assert_eq!(client.recv_msg().await["data"], "two");
    assert_eq!(client.recv_msg().await["data"], "three");
}

#[tokio::test]
async fn sigterm_during_a_concurrent_burst_closes_1001_loses_no_ack_and_exits_0() {
    let (_dir, data) = scratch();
    let port = free_port();
    let server = Binary::start(&data, port, &[]).await;
    let mut watcher = server.client("").await;
    watcher.join("r").await;
    let progress = watch::Sender::new(0);
    let mut posters = Vec::new();
    for tag in ["p0", "p1", "p2"] {
        let mut client = server.client("").await;
        client.join("r").await;
        posters.push(burst(client, tag, 300, progress.clone()));
    }
    wait_for_acks(&progress, 50).await;
    server.signal("TERM");

    let mut outcomes = Vec::new();
    for poster in posters {
        outcomes.push(poster.await.unwrap());
    }
    for outcome in &outcomes {
        assert_eq!(
            outcome.close_code,
            Some(1001),
            "every poster is closed with 1001"
        );
    }
    assert_eq!(watcher.closed().await, Closed::Code(1001));
    assert!(server.wait().await.success(), "exit status 0");

    let server = Binary::start(&data, free_port(), &[]).await;
    let stored = stored_ids(server.addr, "r").await;
    let acked = assert_acks_stored(&outcomes, &stored);
    eprintln!("{acked} acked of 900 sent; {} stored", stored.len());
}
