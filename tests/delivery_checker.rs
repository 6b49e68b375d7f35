//! A randomized delivery checker against the real binary.
//!
//! Many WebSocket clients join and leave rooms, post through `/ws` and the HTTP API, resume with
//! `since`, close abruptly or politely and reconnect, and some read slowly behind a small socket
//! buffer until the server closes them as slow consumers (1013) and they resume. `/events`
//! readers stream rooms and reconnect with `Last-Event-ID`. While that runs, every frame is
//! checked as it arrives:
//!
//! - **no gap, no duplicate, id order**: per connection and room, from a `join` with `since` S
//!   the first `msg` is S + 1 and each next one is the previous + 1 (ids are gapless per room),
//!   until `left` or the connection ends; nothing arrives for a room after its `left`;
//! - **ack after msg**: a poster's `ack` for id N comes after its own `msg` N;
//! - **one text per id**: every receiver sees the same text for the same id, the one acked;
//! - at the end, with posting stopped, every member still in a room reaches the room's last id,
//!   the stored history is 1..=last without a hole, and every acked message is in it with its
//!   text; once every client is gone, the server's open descriptors fall back to where they
//!   started.
//!
//! The checker can fail: with the de-duplication of held frames removed from
//! `Hub::release_held`, every run reported "duplicate or out of order" within seconds.
//!
//! The actions come from a seeded generator: the seed is printed and `HUBBUB_CHECKER_SEED`
//! replays a run's choices (the interleaving with the server is the machine's, so a replay is
//! the same workload, not the same schedule). The normal run takes well under a minute; the soak
//! (`soak_30_minutes`, ignored by default, see docs/reliability.md) runs the same checker for
//! `HUBBUB_SOAK_SECS` with thousands of connections and records the server's RSS and open
//! descriptors over time.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Binary, free_port, get_json, history, http, scratch};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any one expected event may take before the run fails.
const DEADLINE: Duration = Duration::from_secs(20);

/// Filler after each message's unique name, so that deliveries are not all tiny.
const PADDING: usize = 200;

/// The filler of a burst's messages (see `Plan::burst`).
const BURST_PADDING: usize = 4000;

/// The size of one run.
#[derive(Clone, Debug)]
struct Plan {
    seed: u64,
    rooms: usize,
    /// Clients that post, join, leave and reconnect.
    actors: usize,
    /// Actions each actor takes (when `duration` is `None`).
    steps: usize,
    /// Run actions until this much time has passed instead of a fixed count.
    duration: Option<Duration>,
    /// Clients that only read one room (a crowd), reconnecting now and then.
    listeners: usize,
    /// `/events` readers.
    sse_readers: usize,
    /// Steps between one actor's bursts.
    burst_every: usize,
    /// Actors 1, 1 + stride, 1 + 2 × stride, ... post bursts.
    burst_stride: usize,
    /// Messages one burst posts without waiting for acks. In the quick run a burst is 6 MB,
    /// more than the socket buffers of a member that is not reading take (a send buffer may
    /// grow to 4 MiB), so the server's outbox for that member fills and it is closed as a slow
    /// consumer (1013).
    burst: usize,
    /// Pause between an actor's actions (0 for as fast as it goes).
    think: Duration,
    /// The server's `--outbox-frames`: small, so that slow readers are closed with 1013.
    outbox_frames: usize,
}

impl Plan {
    fn quick(seed: u64) -> Plan {
        Plan {
            seed,
            rooms: 3,
            actors: 12,
            steps: 120,
            burst_every: 120,
            burst_stride: 10,
            burst: 1500,
            duration: None,
            listeners: 24,
            sse_readers: 3,
            think: Duration::ZERO,
            outbox_frames: 32,
        }
    }

    fn room(&self, index: usize) -> String {
        format!("r{index}")
    }
}

/// The seed from `HUBBUB_CHECKER_SEED`, or one from the clock.
fn seed() -> u64 {
    match std::env::var("HUBBUB_CHECKER_SEED") {
        Ok(text) => text.parse().expect("HUBBUB_CHECKER_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

/// SplitMix64: small, seedable, and the same sequence on every platform.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        let mut rng = Rng(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        rng.next();
        rng
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }
}

/// What the whole run has learnt: acked messages, the text of every id seen, and violations.
struct Ledger {
    seed: u64,
    /// `ref` → text of every post sent (a `ref` is at most 128 characters, a text longer).
    posted: Mutex<HashMap<String, String>>,
    /// (room, id) → text, for every acknowledged post (WebSocket `ack` or API 201).
    acked: Mutex<BTreeMap<(String, u64), String>>,
    /// (room, id) → text, as first received by anyone.
    seen: Mutex<HashMap<(String, u64), String>>,
    violations: Mutex<Vec<String>>,
    delivered: AtomicU64,
    /// Bursts under way; stalling listeners stop reading while it is above zero.
    bursting: AtomicU64,
    burst_ended: Notify,
    /// Close frames with 1013 that clients read. Only a reader that resumes within the server's
    /// close timeout (2 s) gets one; a stalling listener whose burst outlasts that finds its
    /// connection reset instead, and resumes all the same.
    slow_closes: AtomicU64,
    /// Slow-consumer closes as the server counts them (`hubbub_slow_consumer_closes_total`),
    /// read at the end of the run.
    server_slow_closes: AtomicU64,
    /// `store_unavailable` answers (a store read or commit failed or timed out).
    store_refusals: AtomicU64,
    reconnects: AtomicU64,
}

impl Ledger {
    fn new(seed: u64) -> Arc<Ledger> {
        Arc::new(Ledger {
            seed,
            posted: Mutex::default(),
            acked: Mutex::default(),
            seen: Mutex::default(),
            violations: Mutex::default(),
            delivered: AtomicU64::new(0),
            bursting: AtomicU64::new(0),
            burst_ended: Notify::new(),
            slow_closes: AtomicU64::new(0),
            server_slow_closes: AtomicU64::new(0),
            store_refusals: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
        })
    }

    fn violation(&self, what: String) {
        eprintln!("VIOLATION (seed {}): {what}", self.seed);
        self.violations.lock().unwrap().push(what);
    }

    /// Makes up the text of a post under `reference`, and remembers it for the ack.
    fn text_for(&self, reference: &str, padding: usize) -> String {
        let text = format!("{reference} {}", "x".repeat(padding));
        self.posted
            .lock()
            .unwrap()
            .insert(reference.to_owned(), text.clone());
        text
    }

    /// The text posted under `reference`.
    fn posted(&self, reference: &str) -> String {
        self.posted
            .lock()
            .unwrap()
            .get(reference)
            .cloned()
            .unwrap_or_default()
    }

    fn ack(&self, room: &str, id: u64, text: &str) {
        let previous = self
            .acked
            .lock()
            .unwrap()
            .insert((room.to_owned(), id), text.to_owned());
        if let Some(previous) = previous {
            self.violation(format!(
                "{room} id {id} acked twice: {previous:?} and {text:?}"
            ));
        }
        self.agree(room, id, text, "an ack");
    }

    /// Every frame for (room, id) carries the same text.
    fn agree(&self, room: &str, id: u64, text: &str, who: &str) {
        let mut seen = self.seen.lock().unwrap();
        let known = seen
            .entry((room.to_owned(), id))
            .or_insert_with(|| text.to_owned());
        if known != text {
            let known = known.clone();
            drop(seen);
            self.violation(format!(
                "{room} id {id}: {who} has {text:?}, another saw {known:?}"
            ));
        }
    }
}

/// One connection's view of one room.
#[derive(Debug, Default)]
struct RoomView {
    /// In the room: `joined` arrived and `left` did not.
    member: bool,
    /// The id the next `msg` must carry; `None` right after a join without `since`, where the
    /// replay starts wherever the newest 50 start.
    next: Option<u64>,
}

/// What one connection's reader knows, shared with the actor driving it. A fresh one per
/// connection: a reader being aborted may still be finishing a frame of the old connection.
#[derive(Default)]
struct Seen {
    rooms: HashMap<String, RoomView>,
    /// Joins sent and not yet answered: room → `since`.
    joining: HashMap<String, Option<u64>>,
    closed: bool,
}

/// Highest id received per room, over every connection of a client (its `since`).
type Known = Arc<Mutex<HashMap<String, u64>>>;

/// What happened to one client's connections, newest last: a violation report about the client
/// carries it, so a stall names where it stopped (joined and no replay, closed, never answered).
#[derive(Clone, Default)]
struct Trail(Arc<Mutex<std::collections::VecDeque<String>>>);

impl Trail {
    /// Events kept per client: enough for its last few connections.
    const KEPT: usize = 24;

    fn note(&self, event: String) {
        let mut events = self.0.lock().unwrap();
        if events.len() == Self::KEPT {
            events.pop_front();
        }
        events.push_back(format!("{:?} {event}", started().elapsed()));
    }

    fn report(&self) -> String {
        let events = self.0.lock().unwrap();
        events.iter().cloned().collect::<Vec<_>>().join("; ")
    }
}

/// When the run began, for the trail's timestamps.
fn started() -> Instant {
    static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *STARTED.get_or_init(Instant::now)
}

/// Answers the actor waits for; the reader checks `msg` frames itself.
#[derive(Debug)]
enum Answer {
    Joined(String),
    Left(String),
    Ack { reference: String },
    Error { reference: Value, code: String },
    Closed,
}

type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;
type Source = SplitStream<WebSocketStream<MaybeTlsStream<TcpStream>>>;

/// One client over its successive connections.
struct Client {
    name: String,
    addr: SocketAddr,
    /// The loopback address it connects from (spreads clients over per-address caps).
    source: String,
    /// A small receive buffer, so that a pause in reading fills the server's outbox.
    small_buffer: bool,
    ledger: Arc<Ledger>,
    seen: Arc<Mutex<Seen>>,
    known: Known,
    trail: Trail,
    progress: Arc<Notify>,
    /// Set while the reader pretends to be busy.
    paused: Arc<AtomicBool>,
    /// Stops reading while a burst is under way, so the server must close it (1013).
    stalls: bool,
    /// Messages in each of this client's bursts.
    burst_size: usize,
    /// The request whose answer is awaited (for the report when none comes).
    awaiting: String,
    conn: Option<(Sink, tokio::task::JoinHandle<()>)>,
    answers: mpsc::UnboundedReceiver<Answer>,
    answers_tx: mpsc::UnboundedSender<Answer>,
    /// Rooms this client means to be in (rejoined after every reconnect).
    rooms: BTreeSet<String>,
    posts: u64,
}

impl Client {
    fn new(name: String, addr: SocketAddr, source: String, ledger: Arc<Ledger>) -> Client {
        let (answers_tx, answers) = mpsc::unbounded_channel();
        Client {
            name,
            addr,
            source,
            small_buffer: false,
            ledger,
            seen: Arc::default(),
            known: Known::default(),
            trail: Trail::default(),
            progress: Arc::new(Notify::new()),
            paused: Arc::default(),
            stalls: false,
            burst_size: 0,
            awaiting: String::new(),
            conn: None,
            answers,
            answers_tx,
            rooms: BTreeSet::new(),
            posts: 0,
        }
    }

    async fn connect(&mut self) {
        let request = format!("ws://{}/ws?name={}", self.addr, self.name)
            .into_client_request()
            .unwrap();
        let socket = TcpSocket::new_v4().unwrap();
        socket
            .bind(format!("{}:0", self.source).parse().unwrap())
            .unwrap();
        if self.small_buffer {
            socket.set_recv_buffer_size(4096).unwrap();
        }
        let tcp = socket.connect(self.addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        self.trail
            .note(format!("connected from {}", tcp.local_addr().unwrap()));
        let (ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp))
            .await
            .unwrap();
        let (sink, source) = ws.split();
        // A fresh answer channel: answers of a dead connection must not be read as this one's.
        let (answers_tx, answers) = mpsc::unbounded_channel();
        self.answers_tx = answers_tx;
        self.answers = answers;
        self.seen = Arc::default();
        let reader = tokio::spawn(read_frames(
            source,
            ReaderLinks {
                name: self.name.clone(),
                seen: self.seen.clone(),
                known: self.known.clone(),
                trail: self.trail.clone(),
                ledger: self.ledger.clone(),
                answers: self.answers_tx.clone(),
                progress: self.progress.clone(),
                paused: self.paused.clone(),
                stalls: self.stalls,
            },
        ));
        self.conn = Some((sink, reader));
        for room in self.rooms.clone() {
            if !self.join(&room, true).await {
                return;
            }
        }
    }

    /// Drops the connection without a close frame, once its reader has stopped.
    async fn drop_abruptly(&mut self) {
        if let Some((sink, reader)) = self.conn.take() {
            self.trail.note("dropped".into());
            reader.abort();
            let _ = reader.await;
            drop(sink);
        }
    }

    /// Closes the connection with a close frame and waits for the server's answer to it.
    async fn close(&mut self) {
        if let Some((mut sink, mut reader)) = self.conn.take() {
            let _ = sink.send(Message::Close(None)).await;
            // The reader ends when the server answers the close.
            if tokio::time::timeout(DEADLINE, &mut reader).await.is_err() {
                self.ledger
                    .violation(format!("{}: the server never answered a close", self.name));
                reader.abort();
                let _ = reader.await;
            }
        }
    }

    /// Sends a frame; false if the connection is gone.
    async fn send(&mut self, frame: Value) -> bool {
        let Some((sink, _)) = self.conn.as_mut() else {
            return false;
        };
        sink.send(Message::text(frame.to_string())).await.is_ok()
    }

    /// The next answer from the current connection's reader, `None` after [`DEADLINE`].
    async fn answer(&mut self) -> Option<Answer> {
        let answer = tokio::time::timeout(DEADLINE, self.answers.recv()).await;
        answer
            .ok()
            .map(|a| a.expect("the client holds a sender of its own channel"))
    }

    /// Waits for an answer that `accept` takes; a close or a `store_unavailable` ends the wait
    /// with `false`. An answer that never comes is a violation, naming what was awaited; the
    /// client then reconnects.
    async fn await_answer(&mut self, mut accept: impl FnMut(&Answer) -> bool) -> bool {
        loop {
            let Some(answer) = self.answer().await else {
                let (rooms, joining) = {
                    let seen = self.seen.lock().unwrap();
                    let rooms: BTreeMap<_, _> = seen
                        .rooms
                        .iter()
                        .map(|(room, view)| (room.clone(), (view.member, view.next)))
                        .collect();
                    (rooms, seen.joining.clone())
                };
                self.ledger.violation(format!(
                    "{}: no answer within {DEADLINE:?} to {:?} (rooms (member, next id): \
                     {rooms:?}, joining: {joining:?}, posts sent: {}; trail: {})",
                    self.name,
                    self.awaiting,
                    self.posts,
                    self.trail.report()
                ));
                self.drop_abruptly().await;
                return false;
            };
            match answer {
                Answer::Closed => {
                    self.conn = None;
                    return false;
                }
                answer if accept(&answer) => return true,
                // The store failed or timed out under load: a post so refused was not acked
                // (and is not expected in the history), a join so answered is closed with 1013
                // next and resumed with `since` (docs/protocol.md); counted, and the wait ends.
                Answer::Error { code, .. } if code == "store_unavailable" => {
                    self.trail
                        .note(format!("store_unavailable for {}", self.awaiting));
                    self.ledger.store_refusals.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                Answer::Error { reference, code } => {
                    self.ledger.violation(format!(
                        "{}: unexpected error {code} (ref {reference})",
                        self.name
                    ));
                }
                _ => {}
            }
        }
    }

    /// Joins `room`, with `since` when the client has seen it before and `resume` says so.
    async fn join(&mut self, room: &str, resume: bool) -> bool {
        let since = if resume {
            self.known.lock().unwrap().get(room).copied()
        } else {
            None
        };
        self.seen
            .lock()
            .unwrap()
            .joining
            .insert(room.to_owned(), since);
        let frame = match since {
            Some(since) => json!({"type": "join", "room": room, "data": {"since": since}}),
            None => json!({"type": "join", "room": room}),
        };
        self.trail.note(format!("join {room} since {since:?}"));
        self.rooms.insert(room.to_owned());
        if !self.send(frame).await {
            return false;
        }
        self.awaiting = format!("join {room} since {since:?}");
        self.await_answer(|a| matches!(a, Answer::Joined(r) if r == room))
            .await
    }

    async fn leave(&mut self, room: &str) -> bool {
        self.rooms.remove(room);
        if !self.send(json!({"type": "leave", "room": room})).await {
            return false;
        }
        self.awaiting = format!("leave {room}");
        self.await_answer(|a| matches!(a, Answer::Left(r) if r == room))
            .await
    }

    async fn post(&mut self, room: &str) -> bool {
        self.posts += 1;
        let reference = format!("{}#{}", self.name, self.posts);
        let text = self.ledger.text_for(&reference, PADDING);
        let frame = json!({"type": "msg", "room": room, "data": text, "ref": reference});
        if !self.send(frame).await {
            return false;
        }
        self.awaiting = format!("msg {room} ref {reference}");
        self.await_answer(|a| matches!(a, Answer::Ack { reference: r } if *r == reference))
            .await
    }

    /// Posts a burst of large messages without waiting, then waits for all their acks; stalling
    /// listeners stop reading meanwhile.
    async fn burst(&mut self, room: &str) -> bool {
        self.ledger.bursting.fetch_add(1, Ordering::AcqRel);
        let done = self.burst_acked(room).await;
        self.ledger.bursting.fetch_sub(1, Ordering::AcqRel);
        self.ledger.burst_ended.notify_waiters();
        done
    }

    async fn burst_acked(&mut self, room: &str) -> bool {
        let mut pending = BTreeSet::new();
        for _ in 0..self.burst_size {
            self.posts += 1;
            let reference = format!("{}#{}", self.name, self.posts);
            let text = self.ledger.text_for(&reference, BURST_PADDING);
            let frame = json!({"type": "msg", "room": room, "data": text, "ref": reference});
            if !self.send(frame).await {
                return false;
            }
            pending.insert(reference);
        }
        while !pending.is_empty() {
            self.awaiting = format!("burst {room}: {} acks missing", pending.len());
            let mut matched = None;
            let acked = self
                .await_answer(|answer| match answer {
                    Answer::Ack { reference } if pending.contains(reference) => {
                        matched = Some(reference.clone());
                        true
                    }
                    _ => false,
                })
                .await;
            match matched {
                Some(reference) if acked => pending.remove(&reference),
                _ => return false,
            };
        }
        true
    }

    async fn post_api(&mut self, room: &str) {
        self.posts += 1;
        let reference = format!("{}#{}", self.name, self.posts);
        let text = self.ledger.text_for(&reference, PADDING);
        let response = http()
            .post(format!("http://{}/api/rooms/{room}/messages", self.addr))
            .json(&json!({"from": self.name, "data": text}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            201,
            "API post (seed {})",
            self.ledger.seed
        );
        let body: Value = response.json().await.unwrap();
        self.ledger.ack(room, body["id"].as_u64().unwrap(), &text);
    }

    /// Reconnects if the connection is gone, rejoining its rooms with `since`.
    async fn ensure_connected(&mut self) {
        while self.conn.is_none() {
            self.ledger.reconnects.fetch_add(1, Ordering::Relaxed);
            self.connect().await;
        }
    }

    /// Waits until this client has every message up to `last[room]` of each room it is in.
    async fn settle(&mut self, last: &BTreeMap<String, u64>) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            self.ensure_connected().await;
            let progress = self.progress.clone();
            let notified = progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (behind, closed) = {
                let known = self.known.lock().unwrap();
                let behind: Vec<(String, u64, u64)> = self
                    .rooms
                    .iter()
                    .filter_map(|room| {
                        let want = last.get(room).copied().unwrap_or(0);
                        let have = known.get(room).copied().unwrap_or(0);
                        (have < want).then(|| (room.clone(), have, want))
                    })
                    .collect();
                (behind, self.seen.lock().unwrap().closed)
            };
            if behind.is_empty() {
                return;
            }
            if closed {
                // Closed by the server (a slow consumer): resume.
                self.drop_abruptly().await;
                continue;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                self.ledger.violation(format!(
                    "{}: never caught up: (room, have, want) {behind:?}; trail: {}",
                    self.name,
                    self.trail.report()
                ));
                return;
            }
        }
    }
}

/// What a connection's reader task shares with its client.
struct ReaderLinks {
    name: String,
    seen: Arc<Mutex<Seen>>,
    known: Known,
    trail: Trail,
    ledger: Arc<Ledger>,
    answers: mpsc::UnboundedSender<Answer>,
    progress: Arc<Notify>,
    paused: Arc<AtomicBool>,
    stalls: bool,
}

/// Reads one connection's frames, checking every `msg` and passing answers to the actor.
async fn read_frames(mut source: Source, links: ReaderLinks) {
    let ReaderLinks {
        name,
        seen,
        known,
        trail,
        ledger,
        answers,
        progress,
        paused,
        stalls,
    } = links;
    let mut after_join = BTreeSet::new();
    let close_code = loop {
        if paused.swap(false, Ordering::AcqRel) {
            // A consumer busy elsewhere for a while.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        if stalls {
            stall_during_bursts(&ledger).await;
        }
        let message = match source.next().await {
            Some(Ok(message)) => message,
            Some(Err(err)) => {
                trail.note(format!("read failed: {err}"));
                break None;
            }
            None => {
                trail.note("ended".into());
                break None;
            }
        };
        let text = match message {
            Message::Text(text) => text,
            Message::Close(frame) => break frame.map(|f| u16::from(f.code)),
            _ => continue,
        };
        let frame: Value = serde_json::from_str(text.as_str()).unwrap();
        note_first_frames(&frame, &mut after_join, &trail);
        let answer = check_frame(&frame, &name, &seen, &known, &ledger);
        progress.notify_waiters();
        if let Some(answer) = answer {
            let _ = answers.send(answer);
        }
    };
    if let Some(code) = close_code {
        trail.note(format!("closed {code}"));
    }
    if close_code == Some(1013) {
        ledger.slow_closes.fetch_add(1, Ordering::Relaxed);
    }
    seen.lock().unwrap().closed = true;
    progress.notify_waiters();
    let _ = answers.send(Answer::Closed);
}

/// Notes in the trail a `joined` and the first `msg` after it (where the replay starts).
fn note_first_frames(frame: &Value, after_join: &mut BTreeSet<String>, trail: &Trail) {
    let room = frame["room"].as_str().unwrap_or_default();
    match frame["type"].as_str().unwrap_or_default() {
        "joined" => {
            trail.note(format!(
                "joined {room} last_id {}",
                frame["data"]["last_id"]
            ));
            after_join.insert(room.to_owned());
        }
        "msg" if after_join.remove(room) => {
            trail.note(format!("first msg {room}/{}", frame["id"]));
        }
        _ => {}
    }
}

/// Returns once no burst is under way.
async fn stall_during_bursts(ledger: &Ledger) {
    loop {
        let ended = ledger.burst_ended.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        if ledger.bursting.load(Ordering::Acquire) == 0 {
            return;
        }
        ended.await;
    }
}

/// Checks one frame against the connection's view; returns what the actor must hear.
fn check_frame(
    frame: &Value,
    name: &str,
    seen: &Mutex<Seen>,
    known: &Mutex<HashMap<String, u64>>,
    ledger: &Ledger,
) -> Option<Answer> {
    let room = frame["room"].as_str().unwrap_or_default().to_owned();
    let mut seen = seen.lock().unwrap();
    match frame["type"].as_str().unwrap_or_default() {
        "joined" => {
            let member = seen.rooms.get(&room).is_some_and(|view| view.member);
            let Some(since) = seen.joining.remove(&room) else {
                // A member whose presence frames piled up during its replay gets a fresh
                // `joined` instead (protocol.md, "Joining and membership rules"); the
                // message sequence goes on untouched.
                if !member {
                    ledger.violation(format!("{name}: joined {room} without asking"));
                }
                return None;
            };
            let view = seen.rooms.entry(room.clone()).or_default();
            if member {
                ledger.violation(format!("{name}: joined {room} twice"));
            }
            view.member = true;
            view.next = since.map(|since| since + 1);
            Some(Answer::Joined(room))
        }
        "left" => {
            seen.rooms.entry(room.clone()).or_default().member = false;
            Some(Answer::Left(room))
        }
        "msg" => {
            let id = frame["id"].as_u64().unwrap();
            let text = frame["data"].as_str().unwrap_or_default();
            let view = seen.rooms.entry(room.clone()).or_default();
            if !view.member {
                ledger.violation(format!("{name}: msg {room}/{id} while not a member"));
                return None;
            }
            match view.next {
                Some(next) if id > next => {
                    ledger.violation(format!("{name}: gap in {room}: expected {next}, got {id}"))
                }
                Some(next) if id < next => ledger.violation(format!(
                    "{name}: duplicate or out of order in {room}: expected {next}, got {id}"
                )),
                _ => {}
            }
            view.next = Some(id + 1);
            drop(seen);
            let mut known = known.lock().unwrap();
            let highest = known.entry(room.clone()).or_default();
            *highest = (*highest).max(id);
            drop(known);
            ledger.delivered.fetch_add(1, Ordering::Relaxed);
            ledger.agree(&room, id, text, name);
            None
        }
        "ack" => {
            let id = frame["id"].as_u64().unwrap();
            let reference = frame["ref"].as_str().unwrap_or_default().to_owned();
            // This connection's own `msg` for the id came first.
            let received = seen.rooms.get(&room).and_then(|view| view.next);
            if received.is_none_or(|next| next <= id) {
                ledger.violation(format!("{name}: ack for {room}/{id} before its msg"));
            }
            drop(seen);
            ledger.ack(&room, id, &ledger.posted(&reference));
            Some(Answer::Ack { reference })
        }
        "error" => Some(Answer::Error {
            reference: frame["ref"].clone(),
            code: frame["data"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        }),
        _ => None,
    }
}

/// What an actor does next.
#[derive(Clone, Copy, Debug)]
enum Action {
    Post,
    PostApi,
    Join,
    Leave,
    DropAbruptly,
    CloseAndReconnect,
    ReadSlowly,
    Burst,
}

fn pick(rng: &mut Rng) -> Action {
    match rng.below(100) {
        0..45 => Action::Post,
        45..53 => Action::PostApi,
        53..70 => Action::Join,
        70..80 => Action::Leave,
        80..86 => Action::DropAbruptly,
        86..90 => Action::CloseAndReconnect,
        _ => Action::ReadSlowly,
    }
}

/// One actor's random actions; returns the client, still connected, to catch up once everyone
/// has stopped posting.
async fn actor(mut client: Client, mut rng: Rng, plan: Plan, bursts: bool) -> Client {
    client.connect().await;
    let started = Instant::now();
    let mut step = 0;
    while match plan.duration {
        Some(duration) => started.elapsed() < duration,
        None => step < plan.steps,
    } {
        step += 1;
        client.ensure_connected().await;
        let room = plan.room(rng.below(plan.rooms));
        let action = if bursts && step % plan.burst_every == plan.burst_every / 2 {
            Action::Burst
        } else {
            pick(&mut rng)
        };
        match action {
            Action::Post => {
                let joined: Vec<String> = client.rooms.iter().cloned().collect();
                if joined.is_empty() {
                    client.join(&room, true).await;
                } else {
                    let room = joined[rng.below(joined.len())].clone();
                    client.post(&room).await;
                }
            }
            Action::PostApi => client.post_api(&room).await,
            Action::Join if !client.rooms.contains(&room) => {
                let resume = rng.percent(80);
                client.join(&room, resume).await;
            }
            Action::Leave if client.rooms.contains(&room) => {
                client.leave(&room).await;
            }
            Action::DropAbruptly => client.drop_abruptly().await,
            Action::CloseAndReconnect => {
                if client.send(json!({"type": "close-me"})).await {
                    // An unknown type: the answer is an error, and the connection stays open.
                    client.awaiting = "error unknown_type".into();
                    client
                        .await_answer(
                            |a| matches!(a, Answer::Error { code, .. } if code == "unknown_type"),
                        )
                        .await;
                }
                client.close().await;
            }
            Action::ReadSlowly => client.paused.store(true, Ordering::Release),
            Action::Burst => {
                // Into a room this actor is in (joining one first if need be): every room
                // has a stalling listener.
                if client.rooms.is_empty() {
                    client.join(&room, true).await;
                }
                let target = client.rooms.iter().next().cloned();
                if let Some(target) = target
                    && client.conn.is_some()
                {
                    client.burst(&target).await;
                }
            }
            Action::Join | Action::Leave => {}
        }
        if !plan.think.is_zero() {
            tokio::time::sleep(Duration::from_millis(
                rng.below(2 * plan.think.as_millis() as usize + 1) as u64,
            ))
            .await;
        }
    }
    client
}

/// A listener: in one room, reading, reconnecting now and then; catches up at the end.
async fn listener(
    mut client: Client,
    mut rng: Rng,
    room: String,
    plan: Plan,
    stop: Arc<AtomicBool>,
    mut last: watch::Receiver<Option<BTreeMap<String, u64>>>,
) {
    client.rooms.insert(room);
    client.connect().await;
    while !stop.load(Ordering::Acquire) {
        // Reconnects are spread out: a listener mostly just listens.
        let pause = if plan.think.is_zero() {
            Duration::from_millis(200 + rng.below(800) as u64)
        } else {
            plan.think * (2 + rng.below(8) as u32)
        };
        tokio::time::sleep(pause).await;
        // A stalling listener stays on its connection until the server closes it.
        let closed_by_server = client.seen.lock().unwrap().closed;
        if closed_by_server
            || !client.stalls && rng.percent(if plan.duration.is_some() { 5 } else { 20 })
        {
            client.drop_abruptly().await;
        }
        client.ensure_connected().await;
    }
    let last = last
        .wait_for(Option::is_some)
        .await
        .unwrap()
        .clone()
        .unwrap();
    client.settle(&last).await;
    client.drop_abruptly().await;
}

/// An `/events` reader of one room: checks ids, reconnects with `Last-Event-ID`.
async fn sse_reader(
    addr: SocketAddr,
    room: String,
    mut rng: Rng,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    mut last: watch::Receiver<Option<BTreeMap<String, u64>>>,
) {
    let mut known: Option<u64> = None;
    let mut settling: Option<u64> = None;
    loop {
        let mut request = http().get(format!("http://{addr}/events?room={room}"));
        // No timeout on a stream: the deadline below bounds each read instead.
        request = request.timeout(Duration::from_secs(3600));
        if let Some(id) = known {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let mut response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        let mut next = known.map(|id| id + 1);
        let mut buffer = String::new();
        let mut budget = 20 + rng.below(200);
        'stream: loop {
            if settling.is_none() && stop.load(Ordering::Acquire) {
                let last = last
                    .wait_for(Option::is_some)
                    .await
                    .unwrap()
                    .clone()
                    .unwrap();
                settling = Some(last.get(&room).copied().unwrap_or(0));
            }
            if let Some(want) = settling
                && known.unwrap_or(0) >= want
            {
                return;
            }
            // While traffic runs, wake up now and then to look at `stop`; once settling, a
            // stream quiet for the whole deadline is stalled.
            let wait = if settling.is_some() {
                DEADLINE
            } else {
                Duration::from_millis(500)
            };
            let chunk = match tokio::time::timeout(wait, response.chunk()).await {
                Ok(Ok(Some(chunk))) => chunk,
                Ok(_) => break 'stream,
                // Quiet: look at `stop` again.
                Err(_) if settling.is_none() => continue,
                Err(_) => {
                    let want = settling.unwrap_or(0);
                    ledger.violation(format!(
                        "sse {room}: stalled at {known:?}, the room is at {want}"
                    ));
                    return;
                }
            };
            buffer.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                let Some(data) = event.lines().find_map(|l| l.strip_prefix("data:")) else {
                    continue;
                };
                let frame: Value = serde_json::from_str(data.trim_start()).unwrap();
                if frame["type"] != "msg" {
                    continue;
                }
                let id = frame["id"].as_u64().unwrap();
                if let Some(expected) = next
                    && id != expected
                {
                    ledger.violation(format!("sse {room}: expected {expected}, got {id}"));
                }
                next = Some(id + 1);
                known = Some(known.unwrap_or(0).max(id));
                ledger.delivered.fetch_add(1, Ordering::Relaxed);
                ledger.agree(&room, id, frame["data"].as_str().unwrap_or_default(), "sse");
                budget = budget.saturating_sub(1);
            }
            if budget == 0 && settling.is_none() {
                // Reconnect, as a browser whose connection dropped.
                break 'stream;
            }
        }
    }
}

/// The newest id of every room, from `GET /api/rooms`.
async fn last_ids(addr: SocketAddr, plan: &Plan) -> BTreeMap<String, u64> {
    let rooms = get_json(format!("http://{addr}/api/rooms")).await;
    let mut last: BTreeMap<String, u64> = (0..plan.rooms).map(|i| (plan.room(i), 0)).collect();
    for room in rooms.as_array().unwrap() {
        let name = room["room"].as_str().unwrap().to_owned();
        if let Some(slot) = last.get_mut(&name) {
            *slot = room["last_id"].as_u64().unwrap();
        }
    }
    last
}

/// The server's open file descriptors.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The server's open sockets: what a leaked connection would leave behind (the store's
/// descriptors grow with its connection pool, which is not a leak).
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// The server's resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Runs `plan` against a fresh binary and returns the ledger; panics on any violation.
async fn check(plan: Plan, samples: Option<PathBuf>) -> Arc<Ledger> {
    eprintln!(
        "delivery checker: {plan:?} (replay with HUBBUB_CHECKER_SEED={})",
        plan.seed
    );
    let (_dir, data) = scratch();
    let outbox = plan.outbox_frames.to_string();
    let server = Binary::start(
        &data,
        free_port(),
        &[
            "--outbox-frames",
            &outbox,
            "--max-connections-per-ip",
            "4096",
        ],
    )
    .await;
    let pid = server.pid();
    let addr = server.addr;
    let sockets_before = open_sockets(pid);
    let ledger = Ledger::new(plan.seed);
    let (last_tx, last_rx) = watch::channel(None);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = samples.map(|path| tokio::spawn(sample(pid, path, stop.clone())));

    let mut actors = tokio::task::JoinSet::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..plan.actors {
        let source = format!("127.0.0.{}", 2 + i % 200);
        let mut client = Client::new(format!("actor{i}"), addr, source, ledger.clone());
        // A third read behind a small buffer, so that their pauses overflow the outbox.
        client.small_buffer = i % 3 == 0;
        let rng = Rng::new(plan.seed, i as u64);
        // A few actors post bursts: megabytes past the 4 MiB a socket buffer may grow to.
        let bursts = i % plan.burst_stride == 1;
        client.burst_size = plan.burst;
        actors.spawn(actor(client, rng, plan.clone(), bursts));
    }
    for i in 0..plan.listeners {
        let source = format!("127.0.1.{}", 2 + i % 200);
        let mut client = Client::new(format!("listener{i}"), addr, source, ledger.clone());
        // Every eighth listener stops reading during bursts: slow consumers for sure.
        client.stalls = i % 8 == 0;
        client.small_buffer = client.stalls;
        let rng = Rng::new(plan.seed, 10_000 + i as u64);
        let room = plan.room(i % plan.rooms);
        tasks.spawn(listener(
            client,
            rng,
            room,
            plan.clone(),
            stop.clone(),
            last_rx.clone(),
        ));
    }
    for i in 0..plan.sse_readers {
        let rng = Rng::new(plan.seed, 20_000 + i as u64);
        let room = plan.room(i % plan.rooms);
        tasks.spawn(sse_reader(
            addr,
            room,
            rng,
            ledger.clone(),
            stop.clone(),
            last_rx.clone(),
        ));
    }

    // Everyone stops posting; then the rooms' last ids are what every member must reach.
    // An actor that fails fails the run here, at once.
    let mut clients = Vec::new();
    while let Some(result) = actors.join_next().await {
        clients.push(result.unwrap());
    }
    stop.store(true, Ordering::Release);
    let last = last_ids(addr, &plan).await;
    last_tx.send(Some(last.clone())).unwrap();
    for mut client in clients {
        let last = last.clone();
        tasks.spawn(async move {
            client.settle(&last).await;
            client.drop_abruptly().await;
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }

    for (room, last_id) in &last {
        let texts = history(addr, room).await;
        let ids: Vec<u64> = texts.keys().copied().collect();
        let expected: Vec<u64> = (1..=*last_id).collect();
        if ids != expected {
            ledger.violation(format!("{room}: stored ids are not 1..={last_id}"));
        }
        for ((acked_room, id), text) in ledger.acked.lock().unwrap().iter() {
            if acked_room == room && texts.get(id) != Some(text) {
                ledger.violation(format!(
                    "{room}/{id}: acked {text:?}, stored {:?}",
                    texts.get(id)
                ));
            }
        }
    }
    let closes = metric(
        &common::metrics(addr).await,
        "hubbub_slow_consumer_closes_total",
    );
    ledger.server_slow_closes.store(closes, Ordering::Relaxed);
    // Every client is gone: the server closes their sockets and its descriptors fall back.
    wait_for_sockets(pid, sockets_before, &ledger).await;
    if let Some(sampler) = sampler {
        sampler.await.unwrap();
    }

    let violations = ledger.violations.lock().unwrap().clone();
    let acked = ledger.acked.lock().unwrap().len();
    eprintln!(
        "delivery checker: {acked} acked, {} deliveries checked, {} slow-consumer closes ({} \
         read as 1013), {} store_unavailable answers, {} reconnects, {} violations",
        ledger.delivered.load(Ordering::Relaxed),
        ledger.server_slow_closes.load(Ordering::Relaxed),
        ledger.slow_closes.load(Ordering::Relaxed),
        ledger.store_refusals.load(Ordering::Relaxed),
        ledger.reconnects.load(Ordering::Relaxed),
        violations.len(),
    );
    assert!(
        violations.is_empty(),
        "seed {}: {} violations, first: {}",
        plan.seed,
        violations.len(),
        violations[0]
    );
    assert!(acked > 0, "the run posted nothing");
    ledger
}

/// The value of the counter `name` in a /metrics text (0 when it is not there).
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until the server holds no more sockets than before the run.
async fn wait_for_sockets(pid: u32, before: usize, ledger: &Ledger) {
    let deadline = Instant::now() + DEADLINE;
    let mut now = open_sockets(pid);
    while now > before {
        if Instant::now() > deadline {
            ledger.violation(format!(
                "server holds {now} sockets, {before} before the run"
            ));
            return;
        }
        // Polled: /proc has no change notification, and the closes are already under way.
        tokio::time::sleep(Duration::from_millis(50)).await;
        now = open_sockets(pid);
    }
}

/// Records the server's RSS and open descriptors every 10 s until `stop`, as CSV at `path`.
async fn sample(pid: u32, path: PathBuf, stop: Arc<AtomicBool>) {
    let started = Instant::now();
    let mut csv = String::from("seconds,rss_kib,open_fds\n");
    loop {
        let line = format!(
            "{},{},{}\n",
            started.elapsed().as_secs(),
            rss_kib(pid),
            open_fds(pid)
        );
        eprint!("soak sample: {line}");
        csv.push_str(&line);
        std::fs::write(&path, &csv).unwrap();
        if stop.load(Ordering::Acquire) {
            return;
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_clients_see_every_message_once_in_order_and_every_ack_is_stored() {
    let ledger = check(Plan::quick(seed()), None).await;
    // The run exercised what it claims to: resumes after slow-consumer closes and reconnects.
    assert!(ledger.reconnects.load(Ordering::Relaxed) > 0);
    assert!(ledger.server_slow_closes.load(Ordering::Relaxed) > 0);
}

/// The soak: `HUBBUB_SOAK_SECS` (default 1800) of the same checks with thousands of connections.
/// Run with `cargo test --release --test delivery_checker -- --ignored soak --nocapture`;
/// `HUBBUB_SOAK_CSV` names the file for the RSS/descriptor samples (default soak.csv).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "30 minutes; run by hand, see docs/reliability.md"]
async fn soak_30_minutes() {
    let secs = std::env::var("HUBBUB_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1800);
    let csv = std::env::var("HUBBUB_SOAK_CSV").unwrap_or_else(|_| "soak.csv".into());
    let plan = Plan {
        rooms: 20,
        actors: 100,
        duration: Some(Duration::from_secs(secs)),
        listeners: 2000,
        sse_readers: 20,
        think: Duration::from_millis(1000),
        burst_every: 600,
        burst_stride: 100,
        // A room of the soak has a hundred members: 6 MB each would be 600 MB per burst.
        burst: 300,
        outbox_frames: 256,
        ..Plan::quick(seed())
    };
    check(plan, Some(PathBuf::from(csv))).await;
}
