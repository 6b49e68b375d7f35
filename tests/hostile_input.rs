//! Hostile input, property-tested: the client-frame parser on arbitrary text and on structured but
//! wrong envelopes, and a real server driven over a WebSocket by random sequences of valid and
//! invalid frames, checked against a model of what each frame must answer.
//!
//! These run as ordinary `cargo test` in bounded time: the case counts are fixed in code below
//! (PROPTEST_CASES in the environment overrides them for a longer local run).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Client, assert_api_error, http, start_server, start_server_with};
use hubbub::protocol::{
    ClientFrame, ErrorCode, Limits, MAX_HISTORY_LIMIT, RoomName, display_name, parse_client_frame,
};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{Map, Number, Value, json};

const LIMITS: Limits = Limits {
    max_message_bytes: 64,
};

/// Codes the parser may answer with; the others come from the hub, never from decoding.
const PARSER_CODES: [ErrorCode; 6] = [
    ErrorCode::BadJson,
    ErrorCode::UnknownType,
    ErrorCode::BadRoom,
    ErrorCode::BadName,
    ErrorCode::TooLong,
    ErrorCode::BadEmoji,
];

/// Longest rejection message: the sentence names the problem without echoing the input back, so
/// a client cannot make the server copy its frame into the answer.
const MAX_REJECTION_MESSAGE: usize = 512;

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(n),
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..ProptestConfig::default()
    }
}

/// Any JSON value, nested a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        ".{0,24}".prop_map(Value::String),
        "[A-Za-z0-9_.-]{0,10}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A `{"type", "room", "data", "ref", ...}` object whose fields are right, wrong or missing.
fn envelope() -> impl Strategy<Value = String> {
    let kind = prop_oneof![
        3 => prop::sample::select(vec![
            "nick", "join", "leave", "msg", "typing", "members", "history"
        ])
            .prop_map(|k| json!(k)),
        1 => json_value(),
    ];
    let room = prop_oneof!["[A-Za-z0-9_.-]{1,70}".prop_map(Value::String), json_value(),];
    let number = prop_oneof![
        any::<u64>().prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        json_value(),
    ];
    let data_object = (
        prop::option::of(number.clone()),
        prop::option::of(number.clone()),
        prop::option::of(number),
    )
        .prop_map(|(since, before, limit)| {
            let mut data = Map::new();
            for (key, value) in [("since", since), ("before", before), ("limit", limit)] {
                if let Some(value) = value {
                    data.insert(key.to_owned(), value);
                }
            }
            Value::Object(data)
        });
    let data = prop_oneof![".{0,80}".prop_map(Value::String), data_object, json_value(),];
    let reference = prop_oneof![".{0,140}".prop_map(Value::String), json_value()];
    (
        prop::option::of(kind),
        prop::option::of(room),
        prop::option::of(data),
        prop::option::of(reference),
        prop::collection::btree_map("[a-z]{1,6}", json_value(), 0..3),
    )
        .prop_map(|(kind, room, data, reference, extra)| {
            let mut object: Map<String, Value> = extra.into_iter().collect();
            for (key, value) in [
                ("type", kind),
                ("room", room),
                ("data", data),
                ("ref", reference),
            ] {
                if let Some(value) = value {
                    object.insert(key.to_owned(), value);
                }
            }
            Value::Object(object).to_string()
        })
}

/// The parser's contract for one input: an answer, never a panic, and a sound one.
fn check_parse(text: &str) -> Result<(), TestCaseError> {
    match parse_client_frame(text, LIMITS) {
        Ok(request) => match request.frame {
            ClientFrame::Nick { name } => {
                prop_assert_eq!(display_name(&name), Ok(name.clone()));
            }
            ClientFrame::Join { room, .. }
            | ClientFrame::Leave { room }
            | ClientFrame::Typing { room }
            | ClientFrame::Members { room } => {
                prop_assert!(RoomName::parse(room.as_str()).is_ok());
            }
            ClientFrame::Msg { room, text, .. } => {
                prop_assert!(room.is_none_or(|r| RoomName::parse(r.as_str()).is_ok()));
                prop_assert!(!text.is_empty() && text.len() <= LIMITS.max_message_bytes);
            }
            ClientFrame::History { room, limit, .. } => {
                prop_assert!(RoomName::parse(room.as_str()).is_ok());
                prop_assert!((1..=MAX_HISTORY_LIMIT).contains(&limit));
            }
            // Conversation frames (issue 19): their fields are checked in protocol/people.rs.
            ClientFrame::People(_) => {}
            // Moderation frames (issue 19): the rest of their fields in protocol/moderation.rs.
            ClientFrame::Moderation(frame) => {
                prop_assert!(RoomName::parse(frame.room().as_str()).is_ok());
            }
            // Change frames (issue 20): the rest of their fields in protocol/changes.rs.
            ClientFrame::Change(frame) => {
                prop_assert!(RoomName::parse(frame.room().as_str()).is_ok());
            }
        },
        Err(rejection) => {
            prop_assert!(
                PARSER_CODES.contains(&rejection.code),
                "unexpected code {:?}",
                rejection.code
            );
            prop_assert!(!rejection.message.is_empty());
            prop_assert!(
                rejection.message.len() <= MAX_REJECTION_MESSAGE,
                "a {}-byte rejection message for a {}-byte frame",
                rejection.message.len(),
                text.len()
            );
            if let Some(reference) = &rejection.reference {
                match serde_json::to_value(reference).unwrap() {
                    Value::String(s) => prop_assert!(s.chars().count() <= 128),
                    Value::Number(_) => {}
                    other => prop_assert!(false, "ref echoed as {other}"),
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(4096))]

    #[test]
    fn parser_answers_arbitrary_text_without_panicking(text in any::<String>()) {
        check_parse(&text)?;
    }

    #[test]
    fn parser_answers_json_looking_text_without_panicking(
        text in r#"[\[\]{}":,0-9a-z\\ .-]{0,64}"#
    ) {
        check_parse(&text)?;
    }

    #[test]
    fn parser_answers_wrong_envelopes_with_a_frame_or_a_known_code(text in envelope()) {
        check_parse(&text)?;
    }
}

#[test]
fn deeply_nested_json_is_rejected_as_bad_json() {
    for text in [
        "[".repeat(100_000),
        r#"{"a":"#.repeat(100_000),
        format!(r#"{{"type":"msg","data":{}"#, "[".repeat(100_000)),
    ] {
        let rejection = parse_client_frame(&text, LIMITS).unwrap_err();
        assert_eq!(rejection.code, ErrorCode::BadJson);
    }
}

#[test]
fn long_wrong_input_is_not_echoed_into_the_rejection() {
    for text in [
        format!("\"{}\"", "x".repeat(60_000)),
        format!(r#"{{"type":"{}"}}"#, "y".repeat(60_000)),
        format!(r#"{{"type":"join","room":"{}"}}"#, "z".repeat(60_000)),
        format!(r#"{{"type":"nick","data":"{}"}}"#, "n".repeat(60_000)),
        format!(r#"{{"type":"msg","data":"{}"}}"#, "m".repeat(60_000)),
    ] {
        let rejection = parse_client_frame(&text, LIMITS).unwrap_err();
        assert!(
            rejection.message.len() <= MAX_REJECTION_MESSAGE,
            "{:?}: {}-byte message",
            rejection.code,
            rejection.message.len()
        );
    }
}

#[tokio::test]
async fn api_rejections_do_not_echo_a_long_body_back() {
    let server = start_server().await;
    // 60,000 bytes: under the API's 64 KiB body limit, so the JSON decoder does see them.
    for body in [
        format!("\"{}\"", "x".repeat(60_000)),
        format!(r#"{{"from":"a","data":{{"{}":1}}}}"#, "k".repeat(60_000)),
    ] {
        let response = http()
            .post(server.url("/api/rooms/r/messages"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let body = assert_api_error(response, 400, "bad_json").await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.len() <= MAX_REJECTION_MESSAGE,
            "{} bytes",
            message.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The server, driven by random frame sequences.

/// Rooms the sequences use: two plain ones, the lobby, and two that break the room rule.
const ROOMS: [&str; 5] = ["a", "b", "lobby", "no spaces", ""];

#[derive(Debug, Clone)]
enum Op {
    Nick(String),
    Join(usize, Option<u64>),
    Leave(usize),
    /// Room (`None`: no room field, so the lobby) and text length (0 and over 64 are refused).
    Msg(Option<usize>, usize),
    Typing(usize),
    Members(usize),
    History(usize, Option<u64>, Option<u64>),
    Garbage(String),
    Envelope(String),
}

fn op() -> impl Strategy<Value = Op> {
    let room = 0..ROOMS.len();
    prop_oneof![
        1 => prop_oneof!["[a-z]{1,12}", ".{0,40}"].prop_map(Op::Nick),
        3 => (room.clone(), prop::option::of(0u64..12)).prop_map(|(r, s)| Op::Join(r, s)),
        2 => room.clone().prop_map(Op::Leave),
        5 => (prop::option::of(room.clone()), 0usize..80).prop_map(|(r, n)| Op::Msg(r, n)),
        1 => room.clone().prop_map(Op::Typing),
        1 => room.clone().prop_map(Op::Members),
        2 => (room, prop::option::of(0u64..12), prop::option::of(prop_oneof![0u64..8, any::<u64>()]))
            .prop_map(|(r, b, l)| Op::History(r, b, l)),
        1 => any::<String>().prop_map(Op::Garbage),
        2 => envelope().prop_map(Op::Envelope),
    ]
}

/// One frame as the test compares it: the fields that say what it answers.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Welcome(String),
    Joined(String, u64),
    Left(String),
    Msg(String, u64),
    Ack(String, u64, Value),
    History(String, usize, bool),
    Members(String, u64),
    Error(String, Value),
    Other(Value),
}

fn seen(frame: &Value) -> Seen {
    let room = || frame["room"].as_str().unwrap_or_default().to_owned();
    match frame["type"].as_str() {
        Some("welcome") => Seen::Welcome(frame["data"]["name"].as_str().unwrap().to_owned()),
        Some("joined") => Seen::Joined(room(), frame["data"]["last_id"].as_u64().unwrap()),
        Some("left") => Seen::Left(room()),
        Some("msg") => Seen::Msg(room(), frame["id"].as_u64().unwrap()),
        Some("ack") => Seen::Ack(room(), frame["id"].as_u64().unwrap(), frame["ref"].clone()),
        Some("history") => Seen::History(
            room(),
            frame["data"]["messages"].as_array().unwrap().len(),
            frame["data"]["has_more"].as_bool().unwrap(),
        ),
        Some("members") => Seen::Members(room(), frame["data"]["count"].as_u64().unwrap()),
        Some("error") => Seen::Error(
            frame["data"]["code"].as_str().unwrap().to_owned(),
            frame["ref"].clone(),
        ),
        _ => Seen::Other(frame.clone()),
    }
}

/// What the connection should look like from the server's side.
#[derive(Default)]
struct Model {
    name: String,
    rooms: BTreeSet<String>,
    ever_joined: bool,
    /// Message ids per room, in order.
    ids: BTreeMap<String, Vec<u64>>,
}

impl Model {
    fn last_id(&self, room: &str) -> u64 {
        self.ids
            .get(room)
            .and_then(|ids| ids.last().copied())
            .unwrap_or(0)
    }

    fn join(&mut self, room: &str, since: Option<u64>, expect: &mut Vec<Seen>) {
        expect.push(Seen::Joined(room.to_owned(), self.last_id(room)));
        if !self.rooms.insert(room.to_owned()) {
            return;
        }
        self.ever_joined = true;
        let ids = self.ids.get(room).cloned().unwrap_or_default();
        let replay: Vec<u64> = match since {
            None => ids.iter().rev().take(50).rev().copied().collect(),
            Some(since) => ids.into_iter().filter(|id| *id > since).collect(),
        };
        expect.extend(replay.into_iter().map(|id| Seen::Msg(room.to_owned(), id)));
    }

    /// The frames `frame` must produce, given the parser's verdict on it.
    fn answer(&mut self, frame: &str) -> Vec<Seen> {
        let limits = Limits {
            max_message_bytes: LIMITS.max_message_bytes,
        };
        let request = match parse_client_frame(frame, limits) {
            Ok(request) => request,
            Err(rejection) => {
                let reference = serde_json::to_value(&rejection.reference).unwrap();
                return vec![Seen::Error(rejection.code.as_str().to_owned(), reference)];
            }
        };
        let reference = serde_json::to_value(&request.reference).unwrap();
        let not_member = || vec![Seen::Error("not_member".to_owned(), reference.clone())];
        let mut expect = Vec::new();
        match request.frame {
            ClientFrame::Nick { name } => {
                self.name = name;
                expect.push(Seen::Welcome(self.name.clone()));
            }
            ClientFrame::Join { room, since, .. } => self.join(room.as_str(), since, &mut expect),
            ClientFrame::Leave { room } => {
                if !self.rooms.remove(room.as_str()) {
                    return not_member();
                }
                expect.push(Seen::Left(room.as_str().to_owned()));
            }
            ClientFrame::Msg { room, .. } => {
                let room = room.map_or("lobby".to_owned(), |r| r.as_str().to_owned());
                if !self.rooms.contains(&room) && room == "lobby" && !self.ever_joined {
                    self.join(&room, None, &mut expect);
                }
                if !self.rooms.contains(&room) {
                    expect.extend(not_member());
                    return expect;
                }
                let id = self.last_id(&room) + 1;
                self.ids.entry(room.clone()).or_default().push(id);
                expect.push(Seen::Msg(room.clone(), id));
                expect.push(Seen::Ack(room, id, reference.clone()));
            }
            ClientFrame::Typing { room } => {
                if !self.rooms.contains(room.as_str()) {
                    return not_member();
                }
            }
            ClientFrame::Members { room } => {
                if !self.rooms.contains(room.as_str()) {
                    return not_member();
                }
                // This connection is the only one on its server.
                expect.push(Seen::Members(room.as_str().to_owned(), 1));
            }
            ClientFrame::History {
                room,
                before,
                limit,
            } => {
                let older: Vec<u64> = self
                    .ids
                    .get(room.as_str())
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|id| before.is_none_or(|b| *id < b))
                    .collect();
                let count = older.len().min(limit as usize);
                expect.push(Seen::History(
                    room.as_str().to_owned(),
                    count,
                    older.len() > count,
                ));
            }
            // A guest's conversation frame (issue 19) is refused; the model's ops send none.
            ClientFrame::People(_) => {
                return vec![Seen::Error("unauthorized".to_owned(), reference)];
            }
            // So is a guest's moderation frame, and its change frame (issue 20).
            ClientFrame::Moderation(_) | ClientFrame::Change(_) => {
                return vec![Seen::Error("unauthorized".to_owned(), reference)];
            }
        }
        expect
    }
}

fn frame_text(op: &Op, reference: &str) -> String {
    let room = |i: usize| ROOMS[i];
    match op {
        Op::Nick(name) => json!({"type": "nick", "data": name, "ref": reference}),
        Op::Join(r, since) => {
            json!({"type": "join", "room": room(*r), "data": {"since": since}, "ref": reference})
        }
        Op::Leave(r) => json!({"type": "leave", "room": room(*r), "ref": reference}),
        Op::Msg(r, len) => {
            let text = "m".repeat(*len);
            match r {
                Some(r) => json!({"type": "msg", "room": room(*r), "data": text, "ref": reference}),
                None => json!({"type": "msg", "data": text, "ref": reference}),
            }
        }
        Op::Typing(r) => json!({"type": "typing", "room": room(*r), "ref": reference}),
        Op::Members(r) => json!({"type": "members", "room": room(*r), "ref": reference}),
        Op::History(r, before, limit) => json!({
            "type": "history", "room": room(*r),
            "data": {"before": before, "limit": limit}, "ref": reference
        }),
        Op::Garbage(text) | Op::Envelope(text) => return text.clone(),
    }
    .to_string()
}

/// Reads every frame up to the answer to the probe with ref `probe`, which the server sends only
/// after it has finished with the frame before it.
async fn answers_until_probe(client: &mut Client, probe: &str) -> Vec<Seen> {
    client.send(json!({"type": "probe", "ref": probe})).await;
    let mut frames = Vec::new();
    loop {
        let frame = seen(&client.recv().await);
        if frame == Seen::Error("unknown_type".to_owned(), json!(probe)) {
            return frames;
        }
        frames.push(frame);
    }
}

async fn drive(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let server = start_server_with(|config| {
        config.max_message_bytes = LIMITS.max_message_bytes;
    })
    .await;
    let mut client = server.client("name=fuzzer").await;
    let mut model = Model {
        name: "fuzzer".to_owned(),
        ..Model::default()
    };
    for (n, op) in ops.iter().enumerate() {
        let reference = format!("f{n}");
        let text = frame_text(op, &reference);
        let expected = model.answer(&text);
        client.send_text(&text).await;
        let actual = answers_until_probe(&mut client, &format!("probe-{n}")).await;
        prop_assert_eq!(actual, expected, "frame {} was {}", n, text);
    }
    let health = http().get(server.url("/healthz")).send().await.unwrap();
    prop_assert_eq!(health.status(), 200);
    drop(client);
    server.stop().await;
    Ok(())
}

proptest! {
    #![proptest_config(cases(48))]

    #[test]
    fn random_frame_sequences_get_their_defined_answers_and_leave_the_server_serving(
        ops in prop::collection::vec(op(), 1..48)
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(drive(ops))?;
    }
}

// ---------------------------------------------------------------------------------------------
// Bounded allocation, shown on a live server.

#[tokio::test]
async fn deeply_nested_frame_gets_bad_json_and_the_connection_stays_usable() {
    let server = start_server().await;
    let mut client = server.client("").await;
    // 60,000 brackets: just under the 64 KiB frame limit, far over serde_json's depth limit.
    client.send_text(&"[".repeat(60_000)).await;
    let error = client.recv_type("error").await;
    assert_eq!(error["data"]["code"], "bad_json");
    client.join("r").await;
    assert_eq!(client.post("r", "still usable").await["id"], 1);
}

#[tokio::test]
async fn history_pages_are_clamped_and_replay_is_complete_in_order() {
    let server = start_server().await;
    let mut poster = server.client("").await;
    poster.join("r").await;
    const POSTS: u64 = 260;
    for i in 0..POSTS {
        poster
            .send(json!({"type": "msg", "room": "r", "data": format!("m{i}"), "ref": i}))
            .await;
    }
    let mut acks = 0;
    while acks < POSTS {
        if poster.recv().await["type"] == "ack" {
            acks += 1;
        }
    }

    // However large the request, one page is at most MAX_HISTORY_LIMIT messages.
    poster
        .send(json!({"type": "history", "room": "r", "data": {"limit": u64::MAX}}))
        .await;
    let page = poster.recv_type("history").await;
    assert_eq!(
        page["data"]["messages"].as_array().unwrap().len(),
        MAX_HISTORY_LIMIT as usize
    );
    assert_eq!(page["data"]["has_more"], true);
    let api: Value = http()
        .get(server.url("/api/rooms/r/messages?limit=1000000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        api["messages"].as_array().unwrap().len(),
        MAX_HISTORY_LIMIT as usize
    );

    // Resuming from 0 replays everything, in id order, through bounded store pages.
    let mut resumer = server.client("").await;
    resumer
        .send(json!({"type": "join", "room": "r", "data": {"since": 0}}))
        .await;
    resumer.recv_type("joined").await;
    for id in 1..=POSTS {
        assert_eq!(resumer.recv_msg().await["id"], id);
    }
}
