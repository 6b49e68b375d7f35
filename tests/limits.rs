//! Limits and fairness (issue #4): rate limits, connection caps, rooms per connection and members
//! per room, heartbeat, slowloris and body size. Real loopback sockets; limits set short or small
//! through `Config`; no assertions about speed.
//!
//! Timeouts of tokio's clock (heartbeat, idle, header and close timeouts) are tested on virtual
//! time ([`HeldClock`]): the test waits for the event it expects, then moves time on. The rate
//! limiters run on `std::time::Instant` (governor), so a test that waits for a bucket to refill
//! waits for real. Clients are dropped before the server stops: a client that is never read
//! would hold each stop for the server's close timeout (it waits for a close reply).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{
    Client, Closed, HeldClock, assert_api_error, http, metrics, refusal, start_server_with,
    try_connect,
};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Reads answers (`ack` or `error`) until `count` have arrived; returns (acks, errors).
async fn answers(client: &mut Client, count: usize) -> (Vec<Value>, Vec<Value>) {
    let (mut acks, mut errors) = (Vec::new(), Vec::new());
    while acks.len() + errors.len() < count {
        let frame = client.recv().await;
        match frame["type"].as_str() {
            Some("ack") => acks.push(frame),
            Some("error") => errors.push(frame),
            _ => {}
        }
    }
    (acks, errors)
}

async fn history_len(addr: std::net::SocketAddr, room: &str) -> usize {
    history_len_with(http(), addr, room).await
}

/// [`history_len`] through `client` (e.g. one bound to another address, whose API bucket is full).
async fn history_len_with(
    client: reqwest::Client,
    addr: std::net::SocketAddr,
    room: &str,
) -> usize {
    let page: Value = client
        .get(format!("http://{addr}/api/rooms/{room}/messages?limit=200"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["messages"].as_array().unwrap().len()
}

#[tokio::test]
async fn posting_over_the_rate_limit_is_rate_limited_and_not_stored() {
    let server = start_server_with(|c| {
        c.rate_limit = 1;
        c.rate_burst = 3;
        c.abuse_rejections = Some(1000);
    })
    .await;
    let mut client = server.client("").await;
    client.join("r").await;
    for i in 0..8 {
        client
            .send(json!({"type": "msg", "room": "r", "data": format!("m{i}"), "ref": i}))
            .await;
    }
    let (acks, errors) = answers(&mut client, 8).await;
    assert!(acks.len() >= 3, "the burst passes: {acks:?}");
    assert!(!errors.is_empty(), "posts past the burst are refused");
    for error in &errors {
        assert_eq!(error["data"]["code"], "rate_limited", "{error}");
        assert!(
            error["ref"].is_u64(),
            "the refused frame's ref is echoed: {error}"
        );
    }
    assert_eq!(
        history_len(server.addr, "r").await,
        acks.len(),
        "only acked posts are stored"
    );
    // The connection stays open and usable once the bucket refills: one token a second, on
    // governor's clock (`std::time::Instant`), which virtual time does not move; so this waits
    // for real, for time to pass, not for an event.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(client.post("r", "later").await["type"], "ack");
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn typing_over_the_rate_limit_is_dropped_without_an_error() {
    let server = start_server_with(|c| {
        c.rate_limit = 1;
        c.rate_burst = 2;
        c.abuse_rejections = Some(1000);
    })
    .await;
    let mut observer = server.client("name=observer").await;
    observer.join("r").await;
    let mut typist = server.client("name=typist").await;
    typist.join("r").await;
    for _ in 0..10 {
        typist.send(json!({"type": "typing", "room": "r"})).await;
    }
    // A post afterwards marks the end of the typing frames for both sides.
    typist
        .send(json!({"type": "msg", "room": "r", "data": "done"}))
        .await;
    let mut typing_seen = 0;
    loop {
        let frame = observer.recv().await;
        match frame["type"].as_str() {
            Some("typing") => typing_seen += 1,
            Some("msg") => break,
            _ => {}
        }
    }
    assert!(
        (1..=3).contains(&typing_seen),
        "the burst passes, the rest is dropped: saw {typing_seen}"
    );
    // The typist's frames are answered in order, so an error for a typing frame would come
    // before the post's ack: none may.
    loop {
        let frame = typist.recv().await;
        assert_ne!(
            frame["type"], "error",
            "typing over the limit is not answered: {frame}"
        );
        if frame["type"] == "ack" {
            break;
        }
    }
    drop((observer, typist));
    server.stop().await;
}

#[tokio::test]
async fn sustained_flooding_closes_1008() {
    let server = start_server_with(|c| {
        c.rate_limit = 1;
        c.rate_burst = 1;
        c.abuse_rejections = Some(5);
    })
    .await;
    let mut flooder = server.client("").await;
    flooder.join("r").await;
    for i in 0..20 {
        let frame = json!({"type": "msg", "room": "r", "data": "spam", "ref": i});
        if flooder
            .ws
            .send(tokio_tungstenite::tungstenite::Message::text(
                frame.to_string(),
            ))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(flooder.closed().await, Closed::Code(1008));
    let text = metrics(server.addr).await;
    assert!(text.contains("hubbub_flood_closes_total 1"), "{text}");
    assert!(!text.contains("hubbub_rate_limited_total 0"), "{text}");
    drop(flooder);
    server.stop().await;
}

use futures_util::SinkExt;

#[tokio::test]
async fn flooding_one_connection_does_not_limit_other_members() {
    let server = start_server_with(|c| {
        c.rate_limit = 10;
        c.rate_burst = 20;
        c.abuse_rejections = Some(100_000);
    })
    .await;
    let mut observer = server.client("name=observer").await;
    observer.join("r").await;
    let mut flooder = server.client("name=flooder").await;
    flooder.join("r").await;
    let mut poster = server.client("name=poster").await;
    poster.join("r").await;
    // The flooder sends far over its rate while the poster posts within its own.
    let flood = tokio::spawn(async move {
        for i in 0..500 {
            flooder
                .send(json!({"type": "msg", "room": "r", "data": "flood", "ref": i}))
                .await;
        }
        flooder
    });
    for i in 0..15 {
        let ack = poster.post("r", &format!("p{i}")).await;
        assert_eq!(ack["type"], "ack", "the poster is never rate limited");
    }
    let flooder = flood.await.unwrap();
    let mut seen = 0;
    while seen < 15 {
        let msg = observer.recv_msg().await;
        if msg["from"] == "poster" {
            assert_eq!(msg["data"], format!("p{seen}"));
            seen += 1;
        }
    }
    drop((observer, flooder, poster));
    server.stop().await;
}

#[tokio::test]
async fn api_requests_over_the_rate_limit_are_429_and_not_stored() {
    let server = start_server_with(|c| {
        c.rate_limit = 1;
        c.rate_burst = 2;
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let response = http()
            .post(server.url("/api/rooms/r/messages"))
            .json(&json!({"from": "bot", "data": format!("m{i}")}))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "rate_limited");
        }
    }
    assert_eq!(&statuses[..2], &[201, 201], "{statuses:?}");
    assert!(statuses[2..].contains(&429), "{statuses:?}");
    let stored = statuses.iter().filter(|s| **s == 201).count();
    // The history is read from another address: 127.0.0.1's bucket is empty (a read is charged
    // like a post), 127.0.0.2's is full.
    let other = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .timeout(common::WAIT)
        .build()
        .unwrap();
    assert_eq!(history_len_with(other, server.addr, "r").await, stored);
    server.stop().await;
}

#[tokio::test]
async fn upgrade_over_the_per_ip_cap_is_429() {
    let server = start_server_with(|c| c.max_connections_per_ip = 2).await;
    let first = try_connect(server.addr, "/ws", &[], Some("127.0.0.2"))
        .await
        .unwrap();
    let second = try_connect(server.addr, "/ws", &[], Some("127.0.0.2"))
        .await
        .unwrap();
    let third = try_connect(server.addr, "/ws", &[], Some("127.0.0.2")).await;
    let (status, code) = refusal(third);
    assert_eq!(status, 429);
    assert_eq!(code, "too_many_connections");
    // Another address is not affected.
    let mut other = try_connect(server.addr, "/ws", &[], Some("127.0.0.3"))
        .await
        .unwrap();
    assert_eq!(other.recv().await["type"], "welcome");
    // Closing a connection gives its place back.
    drop(first);
    let mut admitted = false;
    for _ in 0..100 {
        if let Ok(mut client) = try_connect(server.addr, "/ws", &[], Some("127.0.0.2")).await {
            assert_eq!(client.recv().await["type"], "welcome");
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted, "a closed connection frees its place");
    let text = metrics(server.addr).await;
    assert!(
        text.contains(r#"hubbub_connections_refused_total{transport="ws"}"#),
        "{text}"
    );
    drop((second, other));
    server.stop().await;
}

#[tokio::test]
async fn upgrade_over_the_global_cap_is_503_on_every_socket_route() {
    let server = start_server_with(|c| c.max_connections = Some(2)).await;
    let a = try_connect(server.addr, "/ws", &[], Some("127.0.0.2"))
        .await
        .unwrap();
    let b = try_connect(server.addr, "/echo", &[], Some("127.0.0.3"))
        .await
        .unwrap();
    let (status, code) = refusal(try_connect(server.addr, "/ws", &[], Some("127.0.0.4")).await);
    assert_eq!((status, code.as_str()), (503, "server_full"));
    let (status, _) = refusal(try_connect(server.addr, "/echo", &[], Some("127.0.0.4")).await);
    assert_eq!(status, 503);
    let events = http()
        .get(server.url("/events?room=r"))
        .send()
        .await
        .unwrap();
    assert_api_error(events, 503, "server_full").await;
    // Plain HTTP is not a held connection and keeps working.
    let health = http().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    drop((a, b));
    server.stop().await;
}

#[tokio::test]
async fn joining_more_rooms_than_allowed_is_too_many_rooms() {
    let server = start_server_with(|c| c.hub.max_rooms_per_connection = 2).await;
    let mut client = server.client("").await;
    client.join("a").await;
    client.join("b").await;
    client
        .send(json!({"type": "join", "room": "c", "ref": "third"}))
        .await;
    client.expect_error("too_many_rooms", json!("third")).await;
    client.send(json!({"type": "leave", "room": "a"})).await;
    client.recv_type("left").await;
    client.join("c").await;
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn joining_a_full_room_is_room_full() {
    let server = start_server_with(|c| c.hub.max_room_members = Some(1)).await;
    let mut first = server.client("name=first").await;
    first.join("r").await;
    let mut second = server.client("name=second").await;
    second
        .send(json!({"type": "join", "room": "r", "ref": 7}))
        .await;
    second.expect_error("room_full", json!(7)).await;
    // Other rooms are unaffected, and the place frees up when the member leaves.
    second.join("other").await;
    first.send(json!({"type": "leave", "room": "r"})).await;
    first.recv_type("left").await;
    second.join("r").await;
    drop((first, second));
    server.stop().await;
}

/// What a client read in the background saw: a text frame, or a ping (which it answers).
enum Seen {
    Frame(Value),
    Ping,
}

/// Reads `client` in a task, so that it answers pings (tungstenite replies while it is polled),
/// and passes on what it reads. Aborting the task drops the client.
fn keep_reading(
    mut client: Client,
) -> (mpsc::UnboundedReceiver<Seen>, tokio::task::JoinHandle<()>) {
    let (seen, receiver) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Some(Ok(message)) = client.ws.next().await {
            let item = match message {
                Message::Text(text) => Seen::Frame(serde_json::from_str(text.as_str()).unwrap()),
                Message::Ping(_) => Seen::Ping,
                _ => continue,
            };
            if seen.send(item).is_err() {
                return;
            }
        }
    });
    (receiver, task)
}

/// Waits for the next ping a background reader sees, returning the frames that came before it.
async fn frames_until_ping(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let item = tokio::time::timeout(common::WAIT, seen.recv())
            .await
            .expect("a ping arrives in time")
            .expect("the connection is open");
        match item {
            Seen::Ping => return frames,
            Seen::Frame(frame) => frames.push(frame),
        }
    }
}

#[tokio::test]
async fn silent_peer_is_closed_and_presence_left() {
    let clock = HeldClock::hold();
    let ping = Duration::from_millis(100);
    let idle = Duration::from_millis(800);
    let server = start_server_with(|c| {
        c.ping_interval = ping;
        c.idle_timeout = idle;
    })
    .await;
    let mut observer = server.client("name=observer").await;
    observer.join("r").await;
    // The silent peer joins through the query and then never polls its socket: it answers no
    // ping and sends nothing, like a peer whose network vanished.
    let mut silent = Client::connect_raw(server.addr, "/ws", "name=silent&room=r").await;
    // Its arrival says its connection runs, timers set: from here time may move.
    loop {
        let frame = observer.recv_type("presence").await;
        if frame["data"]["joined"] == "silent" {
            break;
        }
    }
    let (mut seen, reader) = keep_reading(observer);
    // One ping interval at a time. Each step pings both peers; the observer answers (its pong
    // keeps it alive), the silent peer does not, and a step past the idle timeout closes it
    // (up to one interval late, never early).
    let start = tokio::time::Instant::now();
    let mut left = false;
    while !left && start.elapsed() <= idle + 2 * ping {
        clock.advance_past(ping).await;
        left = frames_until_ping(&mut seen)
            .await
            .iter()
            .any(|frame| frame["type"] == "presence" && frame["data"]["left"] == "silent");
    }
    assert!(left, "the silent peer's presence is removed");
    let waited = start.elapsed();
    assert!(waited >= idle, "not before the idle timeout: {waited:?}");
    // Reading now, it finds the pings it never answered and then the 1008 close frame, unless
    // its late pong hit the already closed socket and the reset discarded the frame.
    let closed = silent.closed().await;
    assert!(
        matches!(closed, Closed::Code(1008) | Closed::WithoutCloseFrame),
        "{closed:?}"
    );
    // Nothing piles up: soon only the observer's connection is counted. The server gives the
    // silent peer its close timeout to answer the close frame first (it never does: its reply
    // is queued until it reads again), so time moves on an interval at a time until then.
    let one = r#"hubbub_connections{transport="ws"} 1"#;
    let mut text = metrics(server.addr).await;
    let closed_at = tokio::time::Instant::now();
    while !text.contains(one) && closed_at.elapsed() < common::WAIT {
        clock.advance_past(ping).await;
        frames_until_ping(&mut seen).await;
        text = metrics(server.addr).await;
    }
    assert!(text.contains(one), "{text}");
    reader.abort();
    drop(silent);
    server.stop().await;
}

#[tokio::test]
async fn slowloris_connection_is_dropped() {
    let clock = HeldClock::hold();
    let header_timeout = Duration::from_millis(500);
    let server = start_server_with(|c| c.header_timeout = header_timeout).await;
    // Half a request line, then silence.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /healthz HT").await.unwrap();
    // A connection that sends nothing at all.
    let mut mute = TcpStream::connect(server.addr).await.unwrap();
    // Meanwhile normal clients are served. This request's connection is accepted after the two
    // others, and its task runs after theirs, which start their header timers when they first
    // run: once it is answered, the header timeout may pass.
    let health = http().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    clock.advance_past(header_timeout).await;
    for stream in [&mut slow, &mut mute] {
        let mut buffer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buffer))
            .await
            .expect("the server drops the connection within the header timeout");
        // Closed (EOF or reset), possibly after a short error response; never a 200.
        let text = String::from_utf8_lossy(&buffer);
        assert!(read.is_err() || !text.contains("200 OK"), "{text}");
    }
    let health = http().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn oversized_api_body_is_413() {
    let server = start_server_with(|c| c.max_body_bytes = 1024).await;
    let big = "x".repeat(2048);
    let response = http()
        .post(server.url("/api/rooms/r/messages"))
        .json(&json!({"from": "bot", "data": big}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let small = http()
        .post(server.url("/api/rooms/r/messages"))
        .json(&json!({"from": "bot", "data": "fits"}))
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 201);
    assert_eq!(history_len(server.addr, "r").await, 1);
    server.stop().await;
}

#[tokio::test]
async fn plain_http_connections_over_the_per_ip_cap_are_closed_with_503() {
    // Plain HTTP connections get the per-address cap plus 32 (HTTP_HEADROOM).
    let server = start_server_with(|c| c.max_connections_per_ip = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 + 32 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        held.push(socket.connect(server.addr).await.unwrap());
    }
    // The next idle connection from the same address is answered 503 and closed at once.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut fourth = socket.connect(server.addr).await.unwrap();
    let mut buffer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), fourth.read_to_end(&mut buffer))
        .await
        .expect("closed at once")
        .unwrap();
    assert!(String::from_utf8_lossy(&buffer).starts_with("HTTP/1.1 503"));
    let text = metrics(server.addr).await;
    assert!(
        text.contains(r#"hubbub_connections_refused_total{transport="http"} 1"#),
        "{text}"
    );
    // Other addresses are served.
    let health = http().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    drop(held);
    server.stop().await;
}

#[tokio::test]
async fn reconnecting_client_can_rejoin_all_its_rooms_at_once() {
    // Defaults: 10/s with a burst of 20 for posts; joins may burst to 100 rooms + 10.
    let server = start_server_with(|c| {
        c.rate_limit = 10;
        c.rate_burst = 20;
    })
    .await;
    let mut client = server.client("").await;
    for i in 0..60 {
        client
            .send(json!({"type": "join", "room": format!("room-{i}"), "data": {"since": 0}}))
            .await;
    }
    let mut joined = 0;
    while joined < 60 {
        let frame = client.recv().await;
        assert_ne!(frame["type"], "error", "{frame}");
        if frame["type"] == "joined" {
            joined += 1;
        }
    }
    drop(client);
    server.stop().await;
}
