//! Large rooms coalesce presence: above `presence_limit` members, arrivals and departures become
//! one `presence` `{"count": N}` frame per tick, `joined` lists a bounded sample, and `members`
//! returns the whole list on request.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{start_server, start_server_with};
use serde_json::json;

async fn large_room_server() -> common::TestServer {
    start_server_with(|c| {
        c.hub.presence_limit = 2;
        c.hub.presence_tick = Duration::from_millis(50);
        // Count frames go out in slices too.
        c.hub.fan_out_slice = 2;
    })
    .await
}

#[tokio::test]
async fn ordinary_rooms_announce_every_member() {
    let server = start_server().await;
    let mut first = server.client("name=a").await;
    first.join("r").await;
    let mut second = server.client("name=b").await;
    second.join("r").await;
    assert_eq!(
        first.recv_type("presence").await["data"],
        json!({"joined": "b"})
    );
    server.stop().await;
}

#[tokio::test]
async fn joins_beyond_the_presence_limit_are_coalesced_into_a_count() {
    let server = large_room_server().await;
    let mut first = server.client("name=a").await;
    first.join("big").await;
    let mut second = server.client("name=b").await;
    second.join("big").await;
    assert_eq!(
        first.recv_type("presence").await["data"],
        json!({"joined": "b"})
    );
    let mut others = Vec::new();
    for name in ["c", "d", "e"] {
        let mut client = server.client(&format!("name={name}")).await;
        client.join("big").await;
        others.push(client);
    }
    // One count frame per tick, never a per-member frame above the limit.
    loop {
        let presence = first.recv_type("presence").await;
        assert!(presence["data"].get("joined").is_none(), "{presence}");
        if presence["data"]["count"] == 5 {
            break;
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_filling_large_room_is_counted_no_more_often_than_its_budget_allows() {
    let server = start_server_with(|c| {
        c.hub.presence_limit = 2;
        c.hub.presence_tick = Duration::from_millis(50);
        // At 10 count frames per second a room of N members is counted every N / 10 s (0.5 s
        // and more here), where the tick alone would allow one count per 50 ms.
        c.hub.presence_count_budget = 10;
    })
    .await;
    let mut first = server.client("name=a").await;
    first.join("big").await;
    let mut others = Vec::new();
    for name in ["b", "c", "d"] {
        let mut client = server.client(&format!("name={name}")).await;
        client.join("big").await;
        others.push(client);
    }
    while first.recv_type("presence").await["data"]["count"] != 4 {}
    let addr = server.addr;
    let fill = tokio::spawn(async move {
        let mut joined = Vec::new();
        for i in 0..20 {
            let mut client = common::Client::connect(addr, &format!("name=j{i}")).await;
            client.join("big").await;
            joined.push(client);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        joined
    });
    let frames = first.frames_within(Duration::from_secs(2)).await;
    let _joined = fill.await.unwrap();
    let counts: Vec<_> = frames
        .iter()
        .filter(|f| f["type"] == "presence")
        .map(|f| f["data"]["count"].clone())
        .collect();
    assert!(
        counts.len() <= 6,
        "2 s of joins at one count per 0.5 s or more: {counts:?}"
    );
    // The count catches up once it is due.
    while first.recv_type("presence").await["data"]["count"] != 24 {}
    server.stop().await;
}

#[tokio::test]
async fn joins_and_leaves_that_cancel_out_send_no_count() {
    let server = large_room_server().await;
    let mut first = server.client("name=a").await;
    first.join("big").await;
    let mut others = Vec::new();
    for name in ["b", "c"] {
        let mut client = server.client(&format!("name={name}")).await;
        client.join("big").await;
        others.push(client);
    }
    while first.recv_type("presence").await["data"]["count"] != 3 {}
    let mut visitor = server.client("name=v").await;
    let visits = tokio::spawn(async move {
        // Eight visits spread over ten ticks: each leaves the room as it found it.
        for _ in 0..8 {
            visitor.join("big").await;
            visitor.send(json!({"type": "leave", "room": "big"})).await;
            visitor.recv_type("left").await;
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    });
    let frames = first.frames_within(Duration::from_millis(600)).await;
    visits.await.unwrap();
    let counts = frames.iter().filter(|f| f["type"] == "presence").count();
    // Counting every dirty tick would send about eight; a tick that lands inside a visit
    // announces 4 and then 3 again, which is allowed.
    assert!(counts <= 4, "counts for nothing: {frames:?}");
    first
        .assert_no("presence", Duration::from_millis(300))
        .await;
    server.stop().await;
}

#[tokio::test]
async fn a_room_that_shrinks_to_the_limit_and_grows_again_is_counted_again() {
    let server = large_room_server().await;
    let mut first = server.client("name=a").await;
    first.join("big").await;
    let mut second = server.client("name=b").await;
    second.join("big").await;
    let mut third = server.client("name=c").await;
    third.join("big").await;
    while first.recv_type("presence").await["data"]["count"] != 3 {}
    // Back to the limit: the departure is announced by name, so members now hold 2.
    third.send(json!({"type": "leave", "room": "big"})).await;
    third.recv_type("left").await;
    assert_eq!(
        first.recv_type("presence").await["data"],
        json!({"left": "c"})
    );
    // Over it again with the count that was last announced: it must be announced again.
    third.join("big").await;
    assert_eq!(
        first.recv_type("presence").await["data"],
        json!({"count": 3})
    );
    server.stop().await;
}

#[tokio::test]
async fn joined_in_a_large_room_lists_a_bounded_sample_with_the_count() {
    let server = large_room_server().await;
    let mut clients = Vec::new();
    for name in ["a", "b", "c"] {
        let mut client = server.client(&format!("name={name}")).await;
        client.join("big").await;
        clients.push(client);
    }
    let mut late = server.client("name=z").await;
    let joined = late.join("big").await;
    assert_eq!(joined["data"]["count"], 4);
    assert_eq!(joined["data"]["members"].as_array().unwrap().len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn members_request_returns_the_whole_list() {
    let server = large_room_server().await;
    let mut clients = Vec::new();
    for name in ["a", "b", "c", "d"] {
        let mut client = server.client(&format!("name={name}")).await;
        client.join("big").await;
        clients.push(client);
    }
    let asker = &mut clients[0];
    asker.send(json!({"type": "members", "room": "big"})).await;
    let members = asker.recv_type("members").await;
    assert_eq!(
        members,
        json!({"type": "members", "room": "big", "data": {"members": ["a", "b", "c", "d"], "count": 4}})
    );
    asker
        .send(json!({"type": "members", "room": "elsewhere"}))
        .await;
    assert_eq!(asker.recv_type("error").await["data"]["code"], "not_member");
    server.stop().await;
}

/// A room larger than the fan-out slice is served a slice of members at a time; every member
/// still gets every message once and in order, and one who joins in the middle misses nothing.
#[tokio::test]
async fn a_room_served_in_slices_delivers_every_message_once_in_order() {
    let server = start_server_with(|c| {
        c.hub.fan_out_slice = 2;
        c.rate_burst = 100;
    })
    .await;
    let mut members = Vec::new();
    for i in 0..5 {
        let mut member = server.client(&format!("name=m{i}")).await;
        member.join("sliced").await;
        members.push(member);
    }
    let mut poster = server.client("name=poster").await;
    poster.join("sliced").await;
    for i in 1..=20 {
        poster
            .send(json!({"type": "msg", "room": "sliced", "data": format!("{i}"), "ref": i}))
            .await;
    }
    let mut late = server.client("name=late").await;
    late.join("sliced").await;
    members.push(late);
    members.push(poster);
    for member in &mut members {
        let mut ids = Vec::new();
        while ids.last() != Some(&20) {
            ids.push(member.recv_msg().await["id"].as_u64().unwrap());
        }
        assert_eq!(ids, (1..=20).collect::<Vec<u64>>());
        member.assert_no("msg", Duration::from_millis(100)).await;
    }
    server.stop().await;
}
