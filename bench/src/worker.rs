//! A worker process: holds up to ~9,000 client connections and runs the phases the coordinator
//! sends it.
//!
//! The worker runs a single-threaded tokio runtime: the whole load generator is pinned to one
//! core anyway, and one thread avoids cross-thread wake-ups on the measuring side. Each
//! connection is one task that reads frames, answers keep-alives, posts on its schedule and
//! records what it sees into the worker's shared [`Stats`]. Phases are broadcast to the tasks
//! through a `watch` channel.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Credential, Incoming, Marker, Mode, Ws};
use crate::hist::{self, Buckets};
use crate::spec::{Command, EchoReport, Event, FanoutPhase, FanoutReport, WorkerSpec, node_of};
use crate::token;

/// How many times one connection is attempted before it counts as failed.
const CONNECT_ATTEMPTS: u32 = 3;

/// What the connections are doing right now.
#[derive(Debug, Clone)]
enum Phase {
    /// Held open, reading (presence, pings) but counting nothing.
    Idle,
    Fanout {
        p: FanoutPhase,
        start: Instant,
    },
    Echo {
        nonce: u64,
        end: Instant,
        text_len: usize,
    },
    /// Close and end.
    Stop,
}

/// What the connections of this worker observed in the current phase.
struct Stats {
    report: FanoutReport,
    latency: Histogram<u64>,
    ack_latency: Histogram<u64>,
    /// Deliveries from another node / the same node, when the members are spread over nodes.
    cross_latency: Histogram<u64>,
    local_latency: Histogram<u64>,
    round_trips: u64,
}

impl Stats {
    fn new() -> Self {
        Stats {
            report: FanoutReport::default(),
            latency: hist::new_histogram(),
            ack_latency: hist::new_histogram(),
            cross_latency: hist::new_histogram(),
            local_latency: hist::new_histogram(),
            round_trips: 0,
        }
    }
}

/// State every connection task shares.
struct Shared {
    spec: WorkerSpec,
    stats: Mutex<Stats>,
    open: AtomicUsize,
    /// Signalled on every counted delivery and ack of a phase that ends when everything has
    /// arrived ([`FanoutPhase::until_delivered`]).
    progress: Notify,
}

impl Shared {
    fn with_stats<R>(&self, f: impl FnOnce(&mut Stats) -> R) -> R {
        // A poisoned lock only means another task panicked mid-update; the counters are still
        // usable for a report.
        let mut g = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }
}

/// Entry point of `hubbub-bench worker`: spec on the first stdin line, commands after it.
pub fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("build runtime")?;
    rt.block_on(run())
}

fn emit(event: &Event) -> Result<()> {
    let line = serde_json::to_string(event).context("encode event")?;
    println!("{line}");
    Ok(())
}

async fn run() -> Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let first = lines.next_line().await?.context("no spec on stdin")?;
    let spec: WorkerSpec = serde_json::from_str(&first).context("parse worker spec")?;
    let shared = Arc::new(Shared {
        spec: spec.clone(),
        stats: Mutex::new(Stats::new()),
        open: AtomicUsize::new(0),
        progress: Notify::new(),
    });
    let (phase_tx, phase_rx) = watch::channel(Phase::Idle);

    // Connect phase: bounded concurrency, each task reports success or failure once.
    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(spec.concurrency.max(1)));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    for i in 0..spec.count {
        let idx = spec.first + i;
        let shared = shared.clone();
        let limit = limit.clone();
        let done = done_tx.clone();
        let phase_rx = phase_rx.clone();
        tokio::spawn(async move {
            let ws = {
                let Ok(_permit) = limit.acquire().await else {
                    return;
                };
                connect_with_retry(&shared.spec, idx).await
            };
            match ws {
                Ok(ws) => {
                    shared.open.fetch_add(1, Ordering::Relaxed);
                    let _ = done.send(Ok(()));
                    drop(done);
                    let _ = connection(ws, idx, shared.clone(), phase_rx).await;
                    shared.open.fetch_sub(1, Ordering::Relaxed);
                }
                Err(e) => {
                    let _ = done.send(Err(format!("{e:#}")));
                }
            }
        });
    }
    drop(done_tx);
    let deadline = started + Duration::from_millis(spec.connect_timeout_ms);
    let (mut connected, mut failed, mut errors) = (0usize, 0usize, Vec::<String>::new());
    while connected + failed < spec.count {
        match tokio::time::timeout_at(deadline, done_rx.recv()).await {
            Ok(Some(Ok(()))) => connected += 1,
            Ok(Some(Err(e))) => {
                failed += 1;
                if errors.len() < 5 && !errors.contains(&e) {
                    errors.push(e);
                }
            }
            Ok(None) => break,
            Err(_) => {
                errors.push("connect phase timed out".to_string());
                failed = spec.count - connected;
                break;
            }
        }
    }
    emit(&Event::Ready {
        connected,
        failed,
        connect_ms: started.elapsed().as_millis() as u64,
        errors,
    })?;

    let mut nonce_seq = 0u64;
    while let Some(line) = lines.next_line().await? {
        let cmd: Command = serde_json::from_str(&line).context("parse command")?;
        match cmd {
            Command::Fanout(p) => {
                let wait =
                    Duration::from_millis(crate::spec::LEAD_IN_MS + p.duration_ms + p.drain_ms);
                let wanted = p.until_delivered.then(|| Arrivals::expected(&spec, &p));
                shared.with_stats(|s| *s = Stats::new());
                let _ = phase_tx.send(Phase::Fanout {
                    p,
                    start: Instant::now(),
                });
                match wanted {
                    Some(wanted) => {
                        // Everything arrived, or the drain's deadline passed: the report says
                        // which.
                        let _ = tokio::time::timeout(wait, all_arrived(&shared, wanted)).await;
                    }
                    None => tokio::time::sleep(wait).await,
                }
                let _ = phase_tx.send(Phase::Idle);
                let report = shared.with_stats(|s| {
                    let mut r = std::mem::take(&mut s.report);
                    r.latency = Buckets::from_histogram(&s.latency);
                    r.ack_latency = Buckets::from_histogram(&s.ack_latency);
                    r.cross_latency = Buckets::from_histogram(&s.cross_latency);
                    r.local_latency = Buckets::from_histogram(&s.local_latency);
                    r
                });
                emit(&Event::Fanout(report))?;
            }
            Command::Echo {
                duration_ms,
                text_len,
            } => {
                nonce_seq += 1;
                shared.with_stats(|s| *s = Stats::new());
                let end = Instant::now() + Duration::from_millis(duration_ms);
                let _ = phase_tx.send(Phase::Echo {
                    nonce: nonce_seq,
                    end,
                    text_len,
                });
                // Round trips still in flight at the end are not counted; a short grace lets
                // the tasks notice the end.
                tokio::time::sleep_until(end + Duration::from_millis(200)).await;
                let _ = phase_tx.send(Phase::Idle);
                let report = shared.with_stats(|s| EchoReport {
                    round_trips: s.round_trips,
                    latency: Buckets::from_histogram(&s.latency),
                    closed: s.report.closed,
                });
                emit(&Event::Echo(report))?;
            }
            Command::Status => emit(&Event::Status {
                open: shared.open.load(Ordering::Relaxed),
            })?,
            Command::Stop => break,
        }
    }
    let _ = phase_tx.send(Phase::Stop);
    // Give the tasks a moment to send their close frames; the process exit closes the rest.
    let until = Instant::now() + Duration::from_secs(3);
    while shared.open.load(Ordering::Relaxed) > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// What a worker's connections should see in a phase once every post has been delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Arrivals {
    /// Deliveries to this worker's connections: each receives every post to its room.
    deliveries: u64,
    /// Acks of this worker's own posts (hubbub acknowledges each one; the peers none).
    acks: u64,
}

impl Arrivals {
    /// Counted from the phase's schedule, assuming every connection is open: a connection that
    /// failed only means the count is never reached and the drain runs to its deadline.
    fn expected(spec: &WorkerSpec, p: &FanoutPhase) -> Arrivals {
        let layout = spec.layout;
        let mut posts_to_room = std::collections::HashMap::<usize, u64>::new();
        for idx in (0..spec.total).filter(|&i| p.is_sender(i)) {
            *posts_to_room
                .entry(layout.room_of(idx, spec.total))
                .or_default() += p.posts_by(idx);
        }
        let own = spec.first..spec.first + spec.count;
        let deliveries = own
            .clone()
            .map(|idx| {
                posts_to_room
                    .get(&layout.room_of(idx, spec.total))
                    .copied()
                    .unwrap_or(0)
            })
            .sum();
        let acks = if spec.mode == Mode::Hubbub {
            own.map(|idx| p.posts_by(idx)).sum()
        } else {
            0
        };
        Arrivals { deliveries, acks }
    }
}

/// Wait until this phase's counters reach `wanted`.
async fn all_arrived(shared: &Shared, wanted: Arrivals) {
    loop {
        let reached = shared
            .with_stats(|s| s.report.received >= wanted.deliveries && s.report.acks >= wanted.acks);
        if reached {
            return;
        }
        // A signal sent before this wait is kept (`notify_one` stores a permit), so none is
        // missed between the check and the wait.
        shared.progress.notified().await;
    }
}

async fn connect_with_retry(spec: &WorkerSpec, idx: usize) -> Result<Ws> {
    let room = spec.layout.room_name(spec.layout.room_of(idx, spec.total));
    let name = format!("b{idx}");
    let credential = match &spec.auth_secret {
        Some(secret) => Credential::Token(token::mint(secret, &name)?),
        None => Credential::Guest(name),
    };
    let mut last = None;
    for attempt in 0..CONNECT_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        match client::connect(
            spec.mode,
            spec.route,
            spec.source_ip,
            spec.server_of(idx),
            &room,
            &credential,
        )
        .await
        {
            Ok(ws) => return Ok(ws),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no connect attempt made")))
}

/// The posting schedule of one connection in a fan-out phase.
struct Schedule {
    next: Instant,
    end: Instant,
    interval: Duration,
    seq: u64,
}

impl Schedule {
    fn for_phase(p: &FanoutPhase, start: Instant, idx: usize) -> Option<Schedule> {
        if !p.is_sender(idx) || p.rate <= 0.0 {
            return None;
        }
        let interval = p.interval();
        let start = start + Duration::from_millis(crate::spec::LEAD_IN_MS);
        Some(Schedule {
            next: start + p.first_post(idx),
            end: start + Duration::from_millis(p.duration_ms),
            interval,
            seq: 0,
        })
    }
}

/// One connection's task: read, answer, post, record, until the phase says stop or the server
/// closes.
async fn connection(
    mut ws: Ws,
    idx: usize,
    shared: Arc<Shared>,
    mut phase_rx: watch::Receiver<Phase>,
) -> Result<()> {
    let spec = &shared.spec;
    let room = spec.layout.room_name(spec.layout.room_of(idx, spec.total));
    let layout_room_size =
        spec.layout
            .room_size(spec.layout.room_of(idx, spec.total), spec.total) as u64;
    let mut phase = phase_rx.borrow_and_update().clone();
    let mut schedule: Option<Schedule> = None;
    let mut pending_acks: VecDeque<(u64, u64)> = VecDeque::new();
    let mut echo_in_flight = false;
    let mut echo_seq = 0u64;
    loop {
        // Echo: keep exactly one round trip in flight until the end.
        if let Phase::Echo {
            nonce,
            end,
            text_len,
        } = phase
            && !echo_in_flight
            && Instant::now() < end
        {
            echo_seq += 1;
            let m = Marker {
                nonce,
                sender: idx as u64,
                seq: echo_seq,
                sent_us: client::now_us(),
            };
            ws.send(Message::text(spec.mode.encode_echo(&m.text(text_len))))
                .await?;
            echo_in_flight = true;
        }
        let next_send = schedule.as_ref().map(|s| s.next);
        tokio::select! {
            // Phase changes first: a delivery must never be judged against a stale phase.
            biased;
            changed = phase_rx.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                phase = phase_rx.borrow_and_update().clone();
                echo_in_flight = false;
                pending_acks.clear();
                schedule = match &phase {
                    Phase::Fanout { p, start } => Schedule::for_phase(p, *start, idx),
                    Phase::Stop => {
                        let _ = ws.close(None).await;
                        return Ok(());
                    }
                    _ => None,
                };
            }
            _ = tokio::time::sleep_until(next_send.unwrap_or_else(Instant::now)), if next_send.is_some() => {
                let (Phase::Fanout { p, .. }, Some(s)) = (&phase, schedule.as_mut()) else { continue };
                let room_size = if p.room_members > 0 { p.room_members as u64 } else { layout_room_size };
                s.seq += 1;
                let sent_us = client::now_us();
                let m = Marker { nonce: p.nonce, sender: idx as u64, seq: s.seq, sent_us };
                let frame = spec.mode.encode_post(&room, &m.text(p.text_len), s.seq);
                ws.send(Message::text(frame)).await?;
                pending_acks.push_back((s.seq, sent_us));
                s.next += s.interval;
                if s.next >= s.end {
                    schedule = None;
                }
                shared.with_stats(|st| {
                    st.report.sent += 1;
                    st.report.expected += room_size;
                });
            }
            frame = ws.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(c))) => {
                        note_closed(&shared, &phase, format!("server closed: {c:?}"));
                        bail!("server closed the connection");
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        note_closed(&shared, &phase, format!("read error: {e}"));
                        return Err(e.into());
                    }
                    None => {
                        note_closed(&shared, &phase, "connection ended".to_string());
                        bail!("connection ended");
                    }
                };
                match spec.mode.classify(text.as_str()) {
                    Incoming::Delivery(_) => {
                        let now = client::now_us();
                        for m in Marker::all(text.as_str()) {
                            match &phase {
                                Phase::Fanout { p, .. } if m.nonce == p.nonce => {
                                    let us = now.saturating_sub(m.sent_us);
                                    let crossed = crosses_nodes(spec, m.sender, idx);
                                    shared.with_stats(|st| {
                                        st.report.received += 1;
                                        hist::record(&mut st.latency, us);
                                        match crossed {
                                            Some(true) => hist::record(&mut st.cross_latency, us),
                                            Some(false) => hist::record(&mut st.local_latency, us),
                                            None => {}
                                        }
                                    });
                                    if p.until_delivered {
                                        shared.progress.notify_one();
                                    }
                                }
                                Phase::Echo { nonce, .. } if m.nonce == *nonce && m.seq == echo_seq => {
                                    shared.with_stats(|st| {
                                        st.round_trips += 1;
                                        hist::record(&mut st.latency, now.saturating_sub(m.sent_us));
                                    });
                                    echo_in_flight = false;
                                }
                                _ => {}
                            }
                        }
                    }
                    Incoming::Ack(r) => {
                        while let Some(&(seq, sent_us)) = pending_acks.front() {
                            if seq > r {
                                break;
                            }
                            pending_acks.pop_front();
                            if seq == r {
                                let lat = client::now_us().saturating_sub(sent_us);
                                shared.with_stats(|st| {
                                    st.report.acks += 1;
                                    hist::record(&mut st.ack_latency, lat);
                                });
                                if let Phase::Fanout { p, .. } = &phase && p.until_delivered {
                                    shared.progress.notify_one();
                                }
                            }
                        }
                    }
                    Incoming::Error(e) => {
                        let e = e.to_string();
                        shared.with_stats(|st| {
                            st.report.error_frames += 1;
                            if st.report.first_error.is_none() {
                                st.report.first_error = Some(e);
                            }
                        });
                    }
                    Incoming::Reply(r) => ws.send(Message::text(r)).await?,
                    Incoming::Other => {}
                }
            }
        }
    }
}

/// Whether a post by connection `sender` reached member `receiver` from another node: `None`
/// when the members are not spread over several nodes.
fn crosses_nodes(spec: &WorkerSpec, sender: u64, receiver: usize) -> Option<bool> {
    let nodes = spec.nodes.len();
    let from = node_of(usize::try_from(sender).ok()?, nodes)?;
    Some(Some(from) != node_of(receiver, nodes))
}

fn note_closed(shared: &Shared, phase: &Phase, why: String) {
    if matches!(phase, Phase::Stop) {
        return;
    }
    shared.with_stats(|st| {
        st.report.closed += 1;
        if st.report.first_error.is_none() {
            st.report.first_error = Some(why);
        }
    });
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::client::Route;
    use crate::spec::RoomLayout;

    fn phase(senders: usize, stride: usize, rate: f64, duration_ms: u64) -> FanoutPhase {
        FanoutPhase {
            nonce: 1,
            senders,
            sender_stride: stride,
            rate,
            duration_ms,
            drain_ms: 1_000,
            text_len: 120,
            room_members: 0,
            until_delivered: true,
        }
    }

    fn spec(layout: RoomLayout, first: usize, count: usize, total: usize) -> WorkerSpec {
        WorkerSpec {
            mode: Mode::Hubbub,
            route: Route::Chat,
            server: ([127, 0, 0, 1], 1).into(),
            nodes: Vec::new(),
            source_ip: Ipv4Addr::new(127, 0, 0, 2),
            first,
            count,
            total,
            layout,
            concurrency: 1,
            connect_timeout_ms: 1_000,
            auth_secret: None,
        }
    }

    /// Posts the connection task makes by following `Schedule` exactly as it does.
    fn walk_schedule(p: &FanoutPhase, idx: usize) -> u64 {
        let Some(mut s) = Schedule::for_phase(p, Instant::now(), idx) else {
            return 0;
        };
        let mut posts = 0;
        loop {
            posts += 1;
            s.next += s.interval;
            if s.next >= s.end {
                return posts;
            }
        }
    }

    #[test]
    fn posts_by_counts_what_the_schedule_posts() {
        for p in [
            phase(2, 1, 5.0, 500),
            phase(2, 1, 10.0, 500),
            phase(6, 5, 10.0 / 6.0, 500),
            phase(10, 1, 2.0, 10_000),
            phase(3, 1, 3.0, 1_000),
        ] {
            for idx in 0..40 {
                assert_eq!(
                    p.posts_by(idx),
                    walk_schedule(&p, idx),
                    "{p:?} sender {idx}"
                );
            }
        }
    }

    #[test]
    fn expected_arrivals_over_all_workers_match_the_senders_expected_deliveries() {
        let total = 30;
        let layout = RoomLayout::Zipf { rooms: 3 };
        let p = phase(6, 5, 10.0 / 6.0, 500);
        // What the senders report as `expected`: each post times the size of its room.
        let by_senders: u64 = (0..total)
            .map(|i| p.posts_by(i) * layout.room_size(layout.room_of(i, total), total) as u64)
            .sum();
        let workers = [spec(layout, 0, 12, total), spec(layout, 12, 18, total)];
        let arrivals: Vec<Arrivals> = workers.iter().map(|w| Arrivals::expected(w, &p)).collect();
        assert!(by_senders > 0);
        assert_eq!(
            arrivals.iter().map(|a| a.deliveries).sum::<u64>(),
            by_senders
        );
        let posts: u64 = (0..total).map(|i| p.posts_by(i)).sum();
        assert_eq!(arrivals.iter().map(|a| a.acks).sum::<u64>(), posts);
    }
}
