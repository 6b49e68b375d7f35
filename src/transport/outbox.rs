//! The write side of one connection: its bounded outbound queue, the frames in it, the socket it
//! writes to ([`Wire`]), the bookkeeping of a frame the socket took only part of, and why and
//! with which code the connection closes ([`CloseReason`]). The hub holds an [`Outbox`] per
//! connection and uses only what a broadcaster needs ([`Outbox::push`], which never waits,
//! [`Outbox::send`], which waits for room, [`Outbox::close_as_slow_consumer`],
//! [`Outbox::is_closing`]); the transport's task holds the [`OutboxReceiver`].
//!
//! The broadcaster only ever calls [`Outbox::push`], which never waits. On a connection with a
//! [`Wire`] (a WebSocket) a frame pushed while nothing is queued is written to the socket right
//! there, without waking any task: a delivery costs one non-blocking `write()` (its one dynamic
//! call is [`Wire::write_now`]), like a server written as one event loop. Only what the socket
//! does not take at once is queued, and the transport's task writes the queue when the socket
//! drains, several frames per `writev`. When the queue is full the connection is marked for
//! closing (1013) instead of slowing the room down. Every write, from the broadcaster or from
//! the transport, happens under the queue's lock, so frames never interleave and never overtake
//! each other.
//!
//! The synchronisation is model-checked: `outbox/model.rs` runs the outbox's races (producers
//! against the writer and a socket that takes all, part or none, a `send` waiting for room,
//! close against push and recv, finish against push) under loom; the primitives come from
//! `outbox/sync.rs`, which swaps in loom's for that build. The hold buffer of a replaying member
//! has its own model next to it, in `hub/member/model.rs`.

#[cfg(all(test, feature = "loom-model"))]
mod model;
mod sync;

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;

use sync::{AtomicBool, AtomicWaker, Mutex, MutexGuard, Notify};

/// One encoded frame on its way to a client. The JSON bytes are shared by every recipient.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The encoded frame (UTF-8 JSON), or for a `framed` one the transport's own bytes.
    pub json: Bytes,
    /// The message id for `msg` frames: SSE sends it as the event id, replay de-duplicates by it.
    pub msg_id: Option<u64>,
    /// Bytes the transport framed itself (a WebSocket ping, pong or close), written as they are.
    /// They share the queue with the hub's frames so that they keep their place in the stream.
    pub framed: bool,
    /// The room's change number for `change` frames (issue 20), 0 for every other frame: a
    /// joining member skips the changes its catch-up already sent (hub/member.rs). A `u32` so
    /// the frame stays 56 bytes (it fits beside `framed`); a room's 4,294,967,296th change
    /// and later saturate, which only makes such a member's join window dedupe by that number.
    pub change_seq: u32,
}

impl Outgoing {
    /// A frame that is not a stored message.
    pub fn control(json: Bytes) -> Self {
        Self {
            json,
            msg_id: None,
            framed: false,
            change_seq: 0,
        }
    }

    /// A `change` frame with the room's change number `seq` (issue 20).
    pub fn change(json: Bytes, seq: u64) -> Self {
        Self {
            json,
            msg_id: None,
            framed: false,
            change_seq: u32::try_from(seq).unwrap_or(u32::MAX),
        }
    }

    /// A stored message's frame.
    pub fn message(json: Bytes, msg_id: u64) -> Self {
        Self {
            json,
            msg_id: Some(msg_id),
            framed: false,
            change_seq: 0,
        }
    }

    /// Bytes already framed by the transport.
    pub fn framed(bytes: Bytes) -> Self {
        Self {
            json: bytes,
            msg_id: None,
            framed: true,
            change_seq: 0,
        }
    }
}

/// A socket the outbox may write to directly. The transport implements it (WebSocket framing);
/// the hub only sees "write these frames now, as far as the socket takes them".
pub trait Wire: Send + Sync {
    /// Bytes `frame` takes on the wire, framing included.
    fn wire_len(&self, frame: &Outgoing) -> usize;

    /// Writes `frames`, the first one from byte `skip` of its wire form on, as far as the socket
    /// takes them without waiting; returns the bytes taken (0 when the socket is full). An error
    /// means the connection is broken. Called from the broadcaster, on any thread.
    fn write_now(
        &self,
        frames: &mut dyn Iterator<Item = &Outgoing>,
        skip: usize,
    ) -> io::Result<usize>;

    /// [`Wire::write_now`] for the transport's own task draining a backlog: a socket that is
    /// full must then also arm the task's wake-up for when it drains.
    fn drain(&self, frames: &mut dyn Iterator<Item = &Outgoing>, skip: usize) -> io::Result<usize> {
        self.write_now(frames, skip)
    }
}

/// Why a connection is being closed, and so which close code it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client went away or asked to close.
    Normal,
    /// The server is shutting down.
    Shutdown,
    /// The peer broke RFC 6455 framing (reserved bits or opcodes, a bad control frame, a bad
    /// fragment sequence); Autobahn sections 2 to 5 and 7 expect 1002 for these.
    Protocol,
    /// A binary frame on the chat socket.
    Unsupported,
    /// A text frame that is not UTF-8.
    BadUtf8,
    /// A frame over the frame limit.
    TooBig,
    /// Abuse or a silent peer; the text says which.
    Policy(&'static str),
    /// The outbound queue filled up.
    SlowConsumer,
    /// A join's replay could not be read from the store: the member would otherwise go on
    /// from a gap. Like a slow consumer, the client resumes with `since` once it reconnects.
    HistoryUnavailable,
}

impl CloseReason {
    /// The WebSocket close code (RFC 6455 section 7.4).
    pub fn code(&self) -> u16 {
        match self {
            CloseReason::Normal => 1000,
            CloseReason::Shutdown => 1001,
            CloseReason::Protocol => 1002,
            CloseReason::Unsupported => 1003,
            CloseReason::BadUtf8 => 1007,
            CloseReason::Policy(_) => 1008,
            CloseReason::TooBig => 1009,
            CloseReason::SlowConsumer | CloseReason::HistoryUnavailable => 1013,
        }
    }

    /// The close frame's reason text.
    pub fn text(&self) -> &'static str {
        match self {
            CloseReason::Normal => "bye",
            CloseReason::Shutdown => "server shutting down",
            CloseReason::Protocol => "protocol error",
            CloseReason::Unsupported => "binary frames are not supported",
            CloseReason::BadUtf8 => "text frame is not valid UTF-8",
            CloseReason::Policy(why) => why,
            CloseReason::TooBig => "frame too big",
            CloseReason::SlowConsumer => "slow consumer: resume with since",
            CloseReason::HistoryUnavailable => "history unavailable: resume with since",
        }
    }

    /// Whether queued frames should still be written before closing. A slow consumer's queue is
    /// the problem, so it is dropped; on shutdown pending acks must still go out.
    pub fn flushes_queue(&self) -> bool {
        !matches!(self, CloseReason::SlowConsumer)
    }
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for the writer.
    Queued,
    /// The queue was full: the connection is now closing as a slow consumer.
    Overflowed,
    /// The connection is already closing; the frame was dropped.
    Closed,
}

/// What [`Outbox::offer`] did with the frames.
enum Offered {
    /// Written or queued, all of them.
    All,
    /// The connection is closing; nothing was taken.
    Closed,
    /// The queue has no room for the rest (what the socket took already is gone).
    Full,
}

/// Frames a drained queue keeps room for; beyond this an emptied queue gives its memory back, so
/// a connection that once saw a burst does not hold that burst's buffer while idle.
const RETAINED_CAPACITY: usize = 8;

/// The wake-up of the one task that drains a queue: a flag and that task's waker. It is polled,
/// not awaited, so an idle connection's task stores no future for it (a `Notify` would need a
/// `Notified` future kept alive across the wait).
#[derive(Default)]
struct Signal {
    raised: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    /// Raises the flag and wakes the task; a raise with nobody waiting is kept for the next poll.
    ///
    /// A swap, not a store: when every write of the flag reads the one before it, a poll that
    /// sees any later raise also sees what came before each earlier one. With a plain store, a
    /// poll could see a push's raise that followed a close's and still read `closed` as false
    /// (the C++/Rust memory model allows it; x86's does not), and `recv` slept through the
    /// close: the model test `a_close_racing_push_and_recv_is_seen...` found it.
    fn raise(&self) {
        self.raised.swap(true, Ordering::AcqRel);
        self.waker.wake();
    }

    /// Ready (and lowered) once raised; otherwise the task is woken by the next raise.
    fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.raised.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // Checked again after registering, so a raise in between is not missed.
        if self.raised.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

struct Shared {
    state: Mutex<State>,
    /// Raised when a frame is queued, or the connection starts closing (the transport waits on
    /// it). On a wired outbox only when the queue stops being empty.
    queued: Signal,
    /// Signalled when frames leave the queue (a `send` waiting for room waits on it) and when
    /// the connection starts closing (so does whoever waits for that). One `Notify` for both:
    /// every waiter checks its own condition again, and each costs 32 bytes per connection.
    drained: Notify,
    /// A `send` is waiting for room: the next drain must signal `drained`.
    room_wanted: AtomicBool,
    /// Set once the connection starts closing: an atomic, because every push checks it.
    closed: AtomicBool,
    capacity: usize,
    /// Where frames go at once when nothing is queued (`None`: the transport pulls, as SSE does).
    wire: Option<Arc<dyn Wire>>,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Outgoing>,
    /// Bytes of the first queued frame already written (a socket took part of it).
    head_written: usize,
    reason: Option<CloseReason>,
    /// Frames the queue took (written at once or queued), the transport's own included: the
    /// count a connection's end is logged with. A plain add under the lock every push takes
    /// anyway, not an atomic of its own.
    frames_taken: u32,
    /// The transport's last frame (a close) is queued: nothing may follow it.
    finished: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain data behind the lock: recovering from a poisoned lock is safe.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn close(&self, reason: CloseReason) {
        self.lock().reason.get_or_insert(reason);
        self.closed.store(true, Ordering::Release);
        // Wake the writer and any `send` waiting for room so they see the close.
        self.queued.raise();
        self.drained.notify_waiters();
    }

    /// Why the connection is closing (`Normal` when no reason was recorded), and how many
    /// frames the queue took.
    fn summary(&self) -> (CloseReason, u32) {
        let state = self.lock();
        (
            state.reason.clone().unwrap_or(CloseReason::Normal),
            state.frames_taken,
        )
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Frames left the queue: wakes a `send` waiting for room, if one asked. Asked, because
    /// whoever waits for the close waits on the same `Notify` and need not hear every drain.
    fn frames_left(&self) {
        if self.room_wanted.swap(false, Ordering::SeqCst) {
            self.drained.notify_waiters();
        }
    }

    async fn wait_closed(&self) {
        loop {
            let wakeup = self.drained.notified();
            tokio::pin!(wakeup);
            // Register before checking, so a close in between is not missed.
            wakeup.as_mut().enable();
            if self.is_closed() {
                return;
            }
            wakeup.await;
        }
    }

    /// Writes queued frames to the wire until the queue is empty or the socket is full; returns
    /// whether the queue is empty. Called with the lock held.
    fn write_queued(&self, wire: &dyn Wire, state: &mut State) -> io::Result<bool> {
        let mut popped = false;
        while !state.frames.is_empty() {
            let written = wire.drain(&mut state.frames.iter(), state.head_written)?;
            if written == 0 {
                break;
            }
            let mut done = state.head_written + written;
            while let Some(front) = state.frames.front() {
                let len = wire.wire_len(front);
                if done < len {
                    break;
                }
                done -= len;
                state.frames.pop_front();
                popped = true;
            }
            state.head_written = done;
        }
        if state.frames.is_empty() && state.frames.capacity() > RETAINED_CAPACITY {
            state.frames.shrink_to(RETAINED_CAPACITY);
        }
        if popped {
            self.frames_left();
        }
        Ok(state.frames.is_empty())
    }
}

/// The sending side of a connection's queue, held by the hub for every room the connection is in.
///
/// A `Mutex<VecDeque>` with `Notify`s rather than a tokio mpsc channel: the channel allocates a
/// 32-slot block up front, which is a large share of an idle connection's memory, and the lock is
/// also what serialises direct writes to the socket.
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

/// The transport's side of the queue.
pub struct OutboxReceiver {
    shared: Arc<Shared>,
}

impl Outbox {
    /// A queue holding at most `capacity` frames, drained by the transport ([`OutboxReceiver::recv`]).
    pub fn new(capacity: usize) -> (Outbox, OutboxReceiver) {
        Self::build(capacity, None)
    }

    /// A queue in front of `wire`: frames go to the socket at once while nothing is queued, and
    /// the transport calls [`OutboxReceiver::flush`] when the socket can take the rest.
    pub(in crate::transport) fn wired(
        capacity: usize,
        wire: Arc<dyn Wire>,
    ) -> (Outbox, OutboxReceiver) {
        Self::build(capacity, Some(wire))
    }

    fn build(capacity: usize, wire: Option<Arc<dyn Wire>>) -> (Outbox, OutboxReceiver) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            queued: Signal::default(),
            drained: Notify::new(),
            room_wanted: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            capacity: capacity.max(1),
            wire,
        });
        (
            Outbox {
                shared: shared.clone(),
            },
            OutboxReceiver { shared },
        )
    }

    /// Queues (or writes) a frame without ever waiting; a full queue closes the connection as a
    /// slow consumer.
    pub fn push(&self, frame: Outgoing) -> Pushed {
        self.push_all(std::slice::from_ref(&frame))
    }

    /// [`Outbox::push`] for several frames in order, e.g. one commit's messages to a room: with
    /// a wire they leave in one `writev` when nothing is queued, which is how a busy room's
    /// deliveries get cheaper than one `write()` each.
    pub fn push_all(&self, frames: &[Outgoing]) -> Pushed {
        match self.offer(frames) {
            Offered::All => Pushed::Queued,
            Offered::Closed => Pushed::Closed,
            Offered::Full => {
                self.close(CloseReason::SlowConsumer);
                Pushed::Overflowed
            }
        }
    }

    /// Writes or queues `frames` if the connection is open and the queue has room for them.
    fn offer(&self, frames: &[Outgoing]) -> Offered {
        if frames.is_empty() {
            return Offered::All;
        }
        if self.shared.is_closed() {
            return Offered::Closed;
        }
        let mut state = self.shared.lock();
        if state.finished {
            return Offered::Closed;
        }
        let was_empty = state.frames.is_empty();
        let mut rest = frames;
        if was_empty && let Some(wire) = &self.shared.wire {
            let Ok(mut written) = wire.write_now(&mut rest.iter(), 0) else {
                // The peer is gone; the transport's read side sees it too.
                drop(state);
                self.shared.close(CloseReason::Normal);
                return Offered::Closed;
            };
            while let Some((first, tail)) = rest.split_first() {
                let len = wire.wire_len(first);
                if written < len {
                    break;
                }
                written -= len;
                rest = tail;
            }
            if let Some((first, tail)) = rest.split_first() {
                // Part of it is on the wire already, so it must be finished whatever the limit.
                state.head_written = written;
                state.frames.push_back(first.clone());
                rest = tail;
            }
        }
        if state.frames.len() + rest.len() > self.shared.capacity {
            return Offered::Full;
        }
        state.frames.extend(rest.iter().cloned());
        state.frames_taken = state
            .frames_taken
            .saturating_add(u32::try_from(frames.len()).unwrap_or(u32::MAX));
        let queued_now = !state.frames.is_empty();
        drop(state);
        // A wired outbox's transport only needs to hear that a backlog began.
        if queued_now && (was_empty || self.shared.wire.is_none()) {
            self.shared.queued.raise();
        }
        Offered::All
    }

    /// Queues a frame, waiting for room: only for a connection's own bulk answers (replay,
    /// history), where waiting slows nobody but that connection.
    pub async fn send(&self, frame: Outgoing) -> bool {
        self.offer_waiting(std::slice::from_ref(&frame)).await
    }

    /// [`Outbox::send`] for several frames in order (a page of replay): they leave in as few
    /// writes as the socket allows instead of one write each. Returns `false` if the connection
    /// closed before all were taken.
    pub async fn send_all(&self, frames: &[Outgoing]) -> bool {
        // At most a queue's worth at a time, so that a chunk always fits once the queue drains.
        for chunk in frames.chunks(self.shared.capacity) {
            if !self.offer_waiting(chunk).await {
                return false;
            }
        }
        true
    }

    /// Offers `frames` until the queue takes them all (`true`) or the connection closes.
    async fn offer_waiting(&self, frames: &[Outgoing]) -> bool {
        loop {
            let drained = self.shared.drained.notified();
            tokio::pin!(drained);
            // Register, then ask for the wake-up, then try: a drain after any of these steps
            // wakes us, and one before the try left the room the try finds.
            drained.as_mut().enable();
            self.shared.room_wanted.store(true, Ordering::SeqCst);
            match self.offer(frames) {
                Offered::All => return true,
                Offered::Closed => return false,
                // Only a non-empty queue refuses, and then nothing of the frames was taken.
                // `close` wakes this too.
                Offered::Full => drained.await,
            }
        }
    }

    /// Starts closing the connection; the first reason given wins. The transport's: the hub
    /// closes a connection only as a slow consumer ([`Outbox::close_as_slow_consumer`]).
    pub(in crate::transport) fn close(&self, reason: CloseReason) {
        self.shared.close(reason);
    }

    /// Starts closing the connection because its reader falls behind (1013: resume with
    /// `since`), unless it already closes for another reason. What the hub calls when a member's
    /// hold buffer overflows; a full queue closes this way by itself.
    pub fn close_as_slow_consumer(&self) {
        self.close(CloseReason::SlowConsumer);
    }

    /// Starts closing the connection because a join's replay could not be read (1013 after the
    /// `store_unavailable` error already queued), unless it already closes for another reason.
    pub fn close_as_history_unavailable(&self) {
        self.close(CloseReason::HistoryUnavailable);
    }

    /// Starts closing the connection with 1008 (policy) and `why` as the close text, unless it
    /// already closes for another reason: what the hub calls when the connection's account is
    /// disabled or signed out everywhere (issue 19).
    pub fn close_for_policy(&self, why: &'static str) {
        self.close(CloseReason::Policy(why));
    }

    /// Whether the connection is closing.
    pub fn is_closing(&self) -> bool {
        self.shared.is_closed()
    }

    /// Why the connection is closing and how many frames it took, for the line logged when it
    /// ends (see [`OutboxReceiver::summary`]).
    pub(in crate::transport) fn summary(&self) -> (CloseReason, u32) {
        self.shared.summary()
    }

    /// Resolves once the connection starts closing, for whichever task must stop then.
    pub(in crate::transport) async fn closing(&self) {
        self.shared.wait_closed().await;
    }
}

impl OutboxReceiver {
    /// Waits for the next frame. Returns `None` once the connection is closing: what is still
    /// queued is then the caller's to flush (or drop) with [`OutboxReceiver::try_recv`].
    pub async fn recv(&self) -> Option<Outgoing> {
        loop {
            if self.shared.is_closed() {
                return None;
            }
            if let Some(frame) = self.try_recv() {
                return Some(frame);
            }
            // A raise with nobody waiting is kept, so a push (or close) between the checks above
            // and this wait still wakes us.
            self.work().await;
        }
    }

    /// Takes a frame if one is queued: the writer drains what is queued after each wake-up.
    pub fn try_recv(&self) -> Option<Outgoing> {
        let frame = {
            let mut state = self.shared.lock();
            let frame = state.frames.pop_front();
            if state.frames.is_empty() && state.frames.capacity() > RETAINED_CAPACITY {
                state.frames.shrink_to(RETAINED_CAPACITY);
            }
            frame
        };
        if frame.is_some() {
            self.shared.frames_left();
        }
        frame
    }

    /// Resolves when frames were queued (on a wired outbox: when a backlog began) or the
    /// connection starts closing; spuriously at times, so check the queue (or
    /// [`OutboxReceiver::flush`]'s answer) after it.
    pub async fn work(&self) {
        std::future::poll_fn(|cx| self.poll_work(cx)).await;
    }

    /// [`OutboxReceiver::work`] for a task that polls its sources itself, so that it keeps no
    /// future per source while it waits.
    pub fn poll_work(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.shared.queued.poll(cx)
    }

    /// Writes the backlog of a wired outbox as far as the socket takes it now; returns whether
    /// the queue is empty. An error means the connection is broken.
    pub fn flush(&self) -> io::Result<bool> {
        let Some(wire) = &self.shared.wire else {
            return Ok(true);
        };
        let mut state = self.shared.lock();
        self.shared.write_queued(wire.as_ref(), &mut state)
    }

    /// Closes the outbox (for `reason`, unless it already was) and queues the transport's last
    /// frame (a close) after what is queued or, without `flush`, right after the part of a frame
    /// the socket already took; nothing is queued or written after it. The caller then flushes
    /// until the queue is empty.
    pub fn finish(&self, last: Outgoing, reason: CloseReason, flush: bool) {
        self.shared.close(reason);
        let mut state = self.shared.lock();
        if !flush {
            let keep = usize::from(state.head_written > 0);
            state.frames.truncate(keep);
        }
        state.frames.push_back(last);
        state.frames_taken = state.frames_taken.saturating_add(1);
        state.finished = true;
    }

    /// Whether the connection is closing.
    pub fn is_closing(&self) -> bool {
        self.shared.is_closed()
    }

    /// Why the connection is closing (`Normal` when no reason was recorded), and how many frames
    /// the queue took (written at once or queued, the transport's pings, pongs and close frame
    /// included): what a connection's end is logged with.
    pub fn summary(&self) -> (CloseReason, u32) {
        self.shared.summary()
    }

    /// Why the connection is closing (`Normal` when no reason was recorded).
    pub fn reason(&self) -> CloseReason {
        self.shared
            .lock()
            .reason
            .clone()
            .unwrap_or(CloseReason::Normal)
    }
}

impl Drop for OutboxReceiver {
    /// A dropped receiver means the client is gone (e.g. an SSE stream the browser closed): tell
    /// the session so it leaves its rooms.
    fn drop(&mut self) {
        self.shared.close(CloseReason::Normal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle connection's outbox is one allocation: the `Arc`'s two counts and [`Shared`].
    /// It was shaped to 192 bytes (224 before one `Notify` went; docs/benchmarks.md, "Memory per
    /// idle connection"), and every connection pays for each byte more. With the loom build's
    /// primitives the size is loom's, so only the normal build checks it.
    #[cfg(not(feature = "loom-model"))]
    #[test]
    fn an_outbox_takes_at_most_192_bytes() {
        let size = 2 * std::mem::size_of::<usize>() + std::mem::size_of::<Shared>();
        assert!(
            size <= 192,
            "an outbox takes {size} bytes, over the 192 it was shaped to (docs/benchmarks.md, \
             \"Memory per idle connection\"): every connection pays for it; change this number \
             knowingly"
        );
    }

    fn frame() -> Outgoing {
        Outgoing::control(Bytes::from_static(b"{}"))
    }

    #[test]
    fn full_queue_closes_as_slow_consumer_without_waiting() {
        let (outbox, receiver) = Outbox::new(2);
        assert_eq!(outbox.push(frame()), Pushed::Queued);
        assert_eq!(outbox.push(frame()), Pushed::Queued);
        assert_eq!(outbox.push(frame()), Pushed::Overflowed);
        assert_eq!(outbox.push(frame()), Pushed::Closed);
        assert_eq!(receiver.reason(), CloseReason::SlowConsumer);
        assert_eq!(receiver.reason().code(), 1013);
    }

    #[test]
    fn first_close_reason_wins() {
        let (outbox, receiver) = Outbox::new(2);
        outbox.close(CloseReason::Shutdown);
        outbox.close(CloseReason::TooBig);
        assert_eq!(receiver.reason(), CloseReason::Shutdown);
    }

    /// A socket that takes `budget` bytes and records them, with no framing of its own.
    #[derive(Default)]
    struct FakeWire {
        budget: Mutex<usize>,
        taken: Mutex<Vec<u8>>,
        writes: Mutex<usize>,
    }

    impl FakeWire {
        fn with_budget(budget: usize) -> Arc<FakeWire> {
            Arc::new(FakeWire {
                budget: Mutex::new(budget),
                ..FakeWire::default()
            })
        }

        fn refill(&self, budget: usize) {
            *self.budget.lock().unwrap_or_else(|p| p.into_inner()) = budget;
        }

        fn taken(&self) -> String {
            String::from_utf8_lossy(&self.taken.lock().unwrap_or_else(|p| p.into_inner()))
                .into_owned()
        }

        fn writes(&self) -> usize {
            *self.writes.lock().unwrap_or_else(|p| p.into_inner())
        }
    }

    impl Wire for FakeWire {
        fn wire_len(&self, frame: &Outgoing) -> usize {
            frame.json.len()
        }

        fn write_now(
            &self,
            frames: &mut dyn Iterator<Item = &Outgoing>,
            skip: usize,
        ) -> io::Result<usize> {
            let mut offered: Vec<u8> = frames.flat_map(|f| f.json.iter().copied()).collect();
            offered.drain(..skip);
            let mut budget = self.budget.lock().unwrap_or_else(|p| p.into_inner());
            let n = offered.len().min(*budget);
            *budget -= n;
            self.taken
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(&offered[..n]);
            *self.writes.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            Ok(n)
        }
    }

    fn text(s: &'static str) -> Outgoing {
        Outgoing::control(Bytes::from_static(s.as_bytes()))
    }

    #[test]
    fn wired_push_writes_at_once_and_queues_nothing() {
        let wire = FakeWire::with_budget(100);
        let (outbox, receiver) = Outbox::wired(4, wire.clone());
        assert_eq!(outbox.push(text("one")), Pushed::Queued);
        assert_eq!(wire.taken(), "one");
        assert!(receiver.try_recv().is_none());
    }

    #[test]
    fn a_batch_leaves_in_one_write() {
        let wire = FakeWire::with_budget(100);
        let (outbox, _receiver) = Outbox::wired(4, wire.clone());
        let batch = [text("a"), text("b"), text("c")];
        assert_eq!(outbox.push_all(&batch), Pushed::Queued);
        assert_eq!((wire.taken().as_str(), wire.writes()), ("abc", 1));
    }

    #[test]
    fn what_the_socket_refuses_is_queued_in_order_and_flushed_later() {
        let wire = FakeWire::with_budget(2);
        let (outbox, receiver) = Outbox::wired(8, wire.clone());
        outbox.push(text("hello"));
        // Queued behind the partly written frame, never written ahead of it.
        outbox.push(text("world"));
        assert_eq!(wire.taken(), "he");
        assert_eq!(receiver.flush().ok(), Some(false));
        wire.refill(100);
        assert_eq!(receiver.flush().ok(), Some(true));
        assert_eq!(wire.taken(), "helloworld");
    }

    #[test]
    fn a_full_backlog_closes_as_slow_consumer() {
        let wire = FakeWire::with_budget(0);
        let (outbox, receiver) = Outbox::wired(2, wire);
        assert_eq!(outbox.push(text("a")), Pushed::Queued);
        assert_eq!(outbox.push(text("b")), Pushed::Queued);
        assert_eq!(outbox.push(text("c")), Pushed::Overflowed);
        assert_eq!(receiver.reason(), CloseReason::SlowConsumer);
    }

    #[test]
    fn finish_without_flush_keeps_only_the_partly_written_frame() {
        let wire = FakeWire::with_budget(1);
        let (outbox, receiver) = Outbox::wired(8, wire.clone());
        outbox.push(text("ab"));
        outbox.push(text("cd"));
        receiver.finish(text("X"), CloseReason::SlowConsumer, false);
        assert_eq!(outbox.push(text("late")), Pushed::Closed);
        wire.refill(100);
        assert_eq!(receiver.flush().ok(), Some(true));
        assert_eq!(wire.taken(), "abX");
    }

    #[test]
    fn the_summary_counts_frames_written_queued_and_the_close_frame() {
        let wire = FakeWire::with_budget(2);
        let (outbox, receiver) = Outbox::wired(8, wire);
        outbox.push(text("ab"));
        outbox.push_all(&[text("cd"), text("ef")]);
        receiver.finish(text("X"), CloseReason::TooBig, true);
        assert_eq!(outbox.summary(), (CloseReason::TooBig, 4));
    }

    #[test]
    fn dropping_the_receiver_marks_the_outbox_closing() {
        let (outbox, receiver) = Outbox::new(2);
        drop(receiver);
        assert!(outbox.is_closing());
    }

    /// A task sending one frame into a queue that is full: it waits for room.
    fn spawn_send(outbox: &Outbox) -> tokio::task::JoinHandle<bool> {
        let outbox = outbox.clone();
        tokio::spawn(async move { outbox.send(frame()).await })
    }

    /// `task`'s result, or a failure naming `what` if a lost wake-up leaves it waiting.
    async fn woken<T>(task: tokio::task::JoinHandle<T>, what: &str) -> T {
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .unwrap_or_else(|_| panic!("{what}: still waiting after 5 s"))
            .unwrap()
    }

    #[tokio::test]
    async fn send_waits_for_room_and_wakes_when_the_writer_drains() {
        let (outbox, receiver) = Outbox::new(1);
        assert_eq!(outbox.push(frame()), Pushed::Queued);
        let waiting = spawn_send(&outbox);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "a full queue makes send wait");
        assert!(receiver.try_recv().is_some());
        assert!(woken(waiting, "the drain wakes the waiting send").await);
        assert!(receiver.try_recv().is_some());
    }

    #[tokio::test]
    async fn closing_wakes_a_waiting_send_and_whoever_waits_for_the_close() {
        let (outbox, receiver) = Outbox::new(1);
        assert_eq!(outbox.push(frame()), Pushed::Queued);
        let send = spawn_send(&outbox);
        let closing = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.closing().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        // A drain wakes the send, and the close waiter stays asleep.
        assert!(receiver.try_recv().is_some());
        assert!(woken(send, "the drain wakes the waiting send").await);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!closing.is_finished(), "a drain is not a close");
        outbox.close(CloseReason::Shutdown);
        woken(closing, "the close wakes its waiter").await;
    }

    #[tokio::test]
    async fn the_work_signal_raised_before_the_wait_is_kept() {
        let (outbox, receiver) = Outbox::new(2);
        assert_eq!(outbox.push(frame()), Pushed::Queued);
        // Nobody was waiting when the frame was queued; the wait still returns at once.
        tokio::time::timeout(std::time::Duration::from_secs(5), receiver.work())
            .await
            .expect("the raise was kept");
    }
}
