//! Model tests of the outbox: loom runs each scenario under every interleaving of its threads
//! (up to a bound of forced switches per test, [`SMALL`] or [`WIRED`], which
//! `LOOM_MAX_PREEMPTIONS` can lower) and fails on a deadlock, which is
//! how a lost wake-up shows (a frame queued and the writer never woken, a `send` waiting for
//! room never woken, a close nobody sees), or on a broken assertion: a frame lost, delivered
//! twice, out of order, torn, or after the close frame.
//!
//! Run them with
//! `cargo test --features loom-model --lib transport::outbox::model`
//! (`scripts/test.sh` does). With that feature only these tests can run: the outbox's primitives
//! are loom's (see `sync.rs`), which panic outside a model.
//!
//! What is modelled with the real code: `Outbox::offer`/`push_all`/`send_all`/`close`,
//! `Signal`, `OutboxReceiver::recv`/`try_recv`/`poll_work`/`flush`/`finish` and the
//! slow-consumer close. A room's hold buffer (the real `Room::fan_out`, `Member::take` and
//! `Member::release`) has its model in `hub/member/model.rs`.
//! What is a mirror, kept short and next to what it mirrors: the socket task's outbox duties
//! ([`socket_task`], after `Socket::next`, `Socket::drive` and `Socket::send_close`), and the socket
//! ([`ModelSocket`]: a send buffer of a few bytes, a peer reading it, tokio's write readiness
//! cleared by a `try_io` that finds it full and set again when the peer reads). Not modelled:
//! tokio's `Notify` and futures' `AtomicWaker` themselves (their contracts are, in `sync.rs`),
//! the kernel's and epoll's real behaviour, timers, and the rooms lock beyond one room.

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use loom::future::block_on;
use loom::thread;

use super::{CloseReason, Outbox, OutboxReceiver, Outgoing, Pushed, Wire};

/// Forced thread switches per execution for the scenarios without a socket: 3 explores them
/// in about a second.
const SMALL: usize = 3;
/// The same for the scenarios with a socket task and a peer (four threads, each taking many
/// steps): 2 already takes more than five minutes each, 1 about ten seconds. Every mutation
/// noted on those tests is found with 1.
const WIRED: usize = 1;

/// Runs `scenario` under every interleaving loom explores with at most `preemptions` forced
/// thread switches, or `LOOM_MAX_PREEMPTIONS` if that is lower.
fn model(preemptions: usize, scenario: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    let cap = builder.preemption_bound.unwrap_or(usize::MAX);
    builder.preemption_bound = Some(preemptions.min(cap));
    builder.check(scenario);
}

/// A two-byte frame (its bytes are its wire form: the model socket adds no framing).
fn text(s: &'static str) -> Outgoing {
    Outgoing::control(Bytes::from_static(s.as_bytes()))
}

/// A stored message's two-byte frame.
fn message(s: &'static str, id: u64) -> Outgoing {
    Outgoing::message(Bytes::from_static(s.as_bytes()), id)
}

/// The close frame: one byte, so a torn frame cannot pass for it.
const CLOSE: &[u8] = b"#";

fn close_frame() -> Outgoing {
    Outgoing::framed(Bytes::from_static(CLOSE))
}

/// A socket with a send buffer of `capacity` bytes that a peer reads, so a write takes all,
/// part or none of what it is offered depending on how far the peer has read. One loom mutex
/// guards it all (the wakers too), so the socket adds few steps of its own to the model.
struct ModelSocket {
    state: loom::sync::Mutex<SocketState>,
}

struct SocketState {
    /// Written and not yet read by the peer.
    buffer: Vec<u8>,
    capacity: usize,
    /// tokio's write readiness as the socket task sees it: cleared when its `try_io` finds the
    /// socket full, set again when the peer makes room. The broadcaster's `write_now` goes
    /// past it, as `WsWire::write_now` does.
    ready: bool,
    /// The peer, waiting for bytes.
    reader: Option<Waker>,
    /// The socket task, waiting for room (tokio's `poll_write_ready`).
    writer: Option<Waker>,
}

impl ModelSocket {
    fn new(capacity: usize) -> Arc<ModelSocket> {
        Arc::new(ModelSocket {
            state: loom::sync::Mutex::new(SocketState {
                buffer: Vec::new(),
                capacity,
                ready: true,
                reader: None,
                writer: None,
            }),
        })
    }

    fn lock(&self) -> loom::sync::MutexGuard<'_, SocketState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One `send()`: as much of the frames (from byte `skip`) as the buffer has room for.
    /// `through_tokio` is `try_io`: nothing is tried while tokio thinks the socket is full,
    /// and a full socket clears the readiness.
    fn send(
        &self,
        frames: &mut dyn Iterator<Item = &Outgoing>,
        skip: usize,
        through_tokio: bool,
    ) -> usize {
        let offered: Vec<u8> = frames
            .flat_map(|frame| frame.json.iter().copied())
            .skip(skip)
            .collect();
        let mut state = self.lock();
        if through_tokio && !state.ready {
            return 0;
        }
        let taken = offered.len().min(state.capacity - state.buffer.len());
        if taken == 0 {
            if through_tokio {
                state.ready = false;
            }
            return 0;
        }
        state.buffer.extend_from_slice(&offered[..taken]);
        let reader = state.reader.take();
        drop(state);
        if let Some(reader) = reader {
            reader.wake();
        }
        taken
    }

    /// tokio's `poll_write_ready`: ready until a `try_io` found the socket full.
    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.lock();
        if state.ready {
            return Poll::Ready(());
        }
        state.writer = Some(cx.waker().clone());
        Poll::Pending
    }

    /// The peer reads all that is buffered; the room it makes is a write-readiness event.
    fn poll_read(&self, cx: &mut Context<'_>, read: &mut Vec<u8>) -> Poll<()> {
        let mut state = self.lock();
        if state.buffer.is_empty() {
            state.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        read.append(&mut state.buffer);
        state.ready = true;
        let writer = state.writer.take();
        drop(state);
        if let Some(writer) = writer {
            writer.wake();
        }
        Poll::Ready(())
    }

    /// The peer reads until what it read satisfies `done`.
    fn read_until(&self, read: &mut Vec<u8>, done: impl Fn(&[u8]) -> bool) {
        while !done(read) {
            block_on(poll_fn(|cx| self.poll_read(cx, read)));
        }
    }

    /// What is still buffered once every writer stopped.
    fn leftover(&self) -> Vec<u8> {
        std::mem::take(&mut self.lock().buffer)
    }
}

impl Wire for ModelSocket {
    fn wire_len(&self, frame: &Outgoing) -> usize {
        frame.json.len()
    }

    fn write_now(
        &self,
        frames: &mut dyn Iterator<Item = &Outgoing>,
        skip: usize,
    ) -> io::Result<usize> {
        Ok(self.send(frames, skip, false))
    }

    fn drain(&self, frames: &mut dyn Iterator<Item = &Outgoing>, skip: usize) -> io::Result<usize> {
        Ok(self.send(frames, skip, true))
    }
}

/// The socket task's outbox duties, as `Socket::next`/`Socket::drive` (wake on the outbox's
/// signal, or on write readiness while there is a backlog; flush; end when the outbox closes)
/// and then `Socket::send_close` (finish with the close frame, flush until the queue is empty,
/// waiting for write readiness in between) do them.
async fn socket_task(receiver: &OutboxReceiver, socket: &ModelSocket) {
    let mut backlog = false;
    loop {
        let outbox_woke = poll_fn(|cx| {
            if receiver.poll_work(cx).is_ready() {
                return Poll::Ready(true);
            }
            if backlog && socket.poll_writable(cx).is_ready() {
                return Poll::Ready(false);
            }
            Poll::Pending
        })
        .await;
        if outbox_woke && receiver.is_closing() {
            break;
        }
        backlog = !flushed(receiver);
    }
    let reason = receiver.reason();
    let flush = reason.flushes_queue();
    receiver.finish(close_frame(), reason, flush);
    while !flushed(receiver) {
        poll_fn(|cx| socket.poll_writable(cx)).await;
    }
}

/// [`OutboxReceiver::flush`] on a socket that never breaks.
fn flushed(receiver: &OutboxReceiver) -> bool {
    receiver
        .flush()
        .unwrap_or_else(|err| panic!("the model socket never fails: {err}"))
}

/// Checks what a peer read: two-byte frames, then the close frame, then nothing. Each source's
/// frames must appear in order, each at most once, and, where `complete`, all of them.
fn check_stream(read: &[u8], sources: &[&[&str]], complete: bool) {
    let shown = String::from_utf8_lossy(read);
    let Some(body) = read.strip_suffix(CLOSE) else {
        panic!("the stream must end with the close frame: {shown:?}");
    };
    assert_eq!(body.len() % 2, 0, "a torn frame in {shown:?}");
    let mut next = vec![0; sources.len()];
    for frame in body.chunks(2) {
        let source = sources
            .iter()
            .position(|frames| frames.iter().any(|f| f.as_bytes() == frame))
            .unwrap_or_else(|| panic!("a torn or foreign frame in {shown:?}"));
        let expected = sources[source].get(next[source]).map(|f| f.as_bytes());
        assert_eq!(
            expected,
            Some(frame),
            "duplicate or out of order: {shown:?}"
        );
        next[source] += 1;
    }
    if complete {
        for (source, frames) in sources.iter().enumerate() {
            assert_eq!(next[source], frames.len(), "frames lost: {shown:?}");
        }
    }
}

/// Two producers push (a batch of two frames, and one frame) through the direct-write
/// path while the socket task flushes the backlog and the peer reads a 3-byte socket buffer,
/// so each write takes all, part or none of a frame; then the connection closes.
///
/// Every frame arrives once, whole, in each producer's order, and the close frame last.
///
/// Fails (each mutation made by hand, run, reverted) when:
/// - `Signal::poll` does not check the flag again after `waker.register`: loom reports
///   "deadlock" (a frame queued, the socket task asleep);
/// - `Outbox::offer` raises `queued` only for an unwired outbox (a backlog never announced):
///   "deadlock";
/// - `Outbox::offer` raises `queued` before it takes the lock and queues: "deadlock";
/// - `Outbox::offer` on a wired outbox writes to the socket even when frames are queued:
///   "a torn or foreign frame in `a1ab12#`".
#[test]
fn two_producers_and_the_socket_task_deliver_every_frame_once_in_order() {
    model(WIRED, || {
        let socket = ModelSocket::new(3);
        let (outbox, receiver) = Outbox::wired(4, socket.clone());
        let batch = thread::spawn({
            let outbox = outbox.clone();
            move || outbox.push_all(&[text("a1"), text("a2")])
        });
        let singles = thread::spawn({
            let outbox = outbox.clone();
            move || outbox.push(text("b1"))
        });
        let task = thread::spawn({
            let socket = socket.clone();
            move || block_on(socket_task(&receiver, &socket))
        });
        let mut read = Vec::new();
        socket.read_until(&mut read, |read| read.len() >= 6);
        outbox.close(CloseReason::Normal);
        socket.read_until(&mut read, |read| read.ends_with(CLOSE));
        assert_eq!(batch.join().ok(), Some(Pushed::Queued));
        assert_eq!(singles.join().ok(), Some(Pushed::Queued));
        assert!(task.join().is_ok());
        read.extend(socket.leftover());
        check_stream(&read, &[&["a1", "a2"], &["b1"]], true);
    });
}

/// A `send_all` of three frames into a queue of one waits for room twice while the transport
/// (`recv`, as the SSE stream reads) drains it.
///
/// Fails (each mutation made by hand, run, reverted) when the `room_wanted` store before the
/// offer in `Outbox::offer_waiting` is removed (loom: "deadlock", the send never woken); when
/// `OutboxReceiver::try_recv` does not call `frames_left` ("deadlock"); when `Outbox::offer`
/// raises `queued` before it takes the lock and queues ("deadlock": the receiver woke, found
/// nothing, and the raise was spent); when `Signal::poll` does not check again after
/// registering ("deadlock").
#[test]
fn a_send_waiting_for_room_is_woken_by_the_receivers_drain() {
    model(SMALL, || {
        let (outbox, receiver) = Outbox::new(1);
        let sender = thread::spawn(move || {
            block_on(outbox.send_all(&[message("m1", 1), message("m2", 2), message("m3", 3)]))
        });
        let ids = block_on(async {
            let mut ids = Vec::new();
            while ids.len() < 3 {
                let frame = receiver.recv().await;
                ids.push(frame.and_then(|frame| frame.msg_id));
            }
            ids
        });
        assert_eq!(ids, [Some(1), Some(2), Some(3)]);
        assert_eq!(sender.join().ok(), Some(true));
    });
}

/// A `send_all` of three frames into a wired queue of one waits for room while the socket
/// task flushes the backlog into a 2-byte socket buffer the peer reads: the drain that wakes
/// the send is the socket task's `flush`, not a `recv`.
///
/// Fails (mutation made by hand, run, reverted) when `Shared::write_queued` does not call
/// `frames_left` after popping frames: loom reports "deadlock" (the send waits for room that
/// was made).
#[test]
fn a_send_waiting_for_room_is_woken_by_the_socket_tasks_flush() {
    model(WIRED, || {
        let socket = ModelSocket::new(2);
        let (outbox, receiver) = Outbox::wired(1, socket.clone());
        let sender = thread::spawn({
            let outbox = outbox.clone();
            move || block_on(outbox.send_all(&[text("m1"), text("m2"), text("m3")]))
        });
        let task = thread::spawn({
            let socket = socket.clone();
            move || block_on(socket_task(&receiver, &socket))
        });
        let mut read = Vec::new();
        socket.read_until(&mut read, |read| read.len() >= 6);
        outbox.close(CloseReason::Normal);
        socket.read_until(&mut read, |read| read.ends_with(CLOSE));
        assert_eq!(sender.join().ok(), Some(true));
        assert!(task.join().is_ok());
        read.extend(socket.leftover());
        check_stream(&read, &[&["m1", "m2", "m3"]], true);
    });
}

/// A close (a shutdown, which flushes) races a producer's two pushes and the transport's
/// `recv`; the transport then finishes with its close frame and drains the queue, as the
/// socket task does.
///
/// `recv` sees the close; every frame pushed as `Queued` is read, once, in order, before the
/// close frame; nothing follows it. Fails (each mutation made by hand, run, reverted) when
/// `Shared::close` does not raise `queued` (loom: "deadlock", the close never seen); when
/// `Outbox::offer` does not refuse a finished queue ("every queued frame is read": a push after
/// the finish was answered `Queued` and never read); and when `Signal::raise` is a plain
/// `store` instead of a swap ("deadlock": that was a real bug, see `Signal::raise`).
#[test]
fn a_close_racing_push_and_recv_is_seen_and_nothing_follows_the_close_frame() {
    model(SMALL, || {
        let (outbox, receiver) = Outbox::new(4);
        let producer = thread::spawn({
            let outbox = outbox.clone();
            move || [outbox.push(text("f1")), outbox.push(text("f2"))]
        });
        let closer = thread::spawn(move || outbox.close(CloseReason::Shutdown));
        let mut read = block_on(async {
            let mut read = Vec::new();
            while let Some(frame) = receiver.recv().await {
                read.extend_from_slice(&frame.json);
            }
            read
        });
        let reason = receiver.reason();
        assert_eq!(reason, CloseReason::Shutdown);
        receiver.finish(close_frame(), reason, true);
        while let Some(frame) = receiver.try_recv() {
            read.extend_from_slice(&frame.json);
        }
        let pushed = producer.join().unwrap_or([Pushed::Closed; 2]);
        assert!(closer.join().is_ok());
        let queued = pushed.iter().filter(|p| **p == Pushed::Queued).count();
        assert_eq!(
            read.len(),
            2 * queued + CLOSE.len(),
            "every queued frame is read"
        );
        check_stream(&read, &[&["f1", "f2"]], false);
    });
}

/// A waiter on `Outbox::closing` (the SSE session's task) races the close.
///
/// Fails (each mutation made by hand, run, reverted) when `Shared::close` does not notify
/// `drained` (loom: "deadlock"), and when `Shared::wait_closed` checks the flag before
/// creating its `Notified` ("deadlock").
#[test]
fn a_close_wakes_whoever_waits_for_it() {
    model(SMALL, || {
        let (outbox, receiver) = Outbox::new(1);
        let waiter = thread::spawn({
            let outbox = outbox.clone();
            move || block_on(outbox.closing())
        });
        outbox.close(CloseReason::Shutdown);
        assert!(waiter.join().is_ok());
        assert_eq!(receiver.reason(), CloseReason::Shutdown);
    });
}

/// A producer pushes three frames into a wired queue of one while a shutdown races it, the
/// socket task finishes the connection and the peer reads a 3-byte buffer. The queue may
/// overflow first (a slow-consumer close, whose queue is dropped but for a frame the socket
/// took part of) or the shutdown may win (everything queued is flushed).
///
/// Either way the stream is whole frames in order, each once, then the close frame, nothing
/// after it; on a shutdown every frame pushed as `Queued` is in it. Fails (each mutation made
/// by hand, run, reverted) when `OutboxReceiver::finish` does not set `finished` (loom: "the
/// stream must end with the close frame: `f1#f2`"), and when it drops a partly written
/// frame ("deadlock": the close frame is then written from the dropped frame's offset, so it
/// never leaves and the peer waits for it).
#[test]
fn finish_racing_push_and_the_slow_consumer_close_keep_the_stream_whole() {
    model(WIRED, || {
        let socket = ModelSocket::new(3);
        let (outbox, receiver) = Outbox::wired(1, socket.clone());
        let producer = thread::spawn({
            let outbox = outbox.clone();
            move || {
                [
                    outbox.push(text("f1")),
                    outbox.push(text("f2")),
                    outbox.push(text("f3")),
                ]
            }
        });
        let closer = thread::spawn(move || outbox.close(CloseReason::Shutdown));
        let task = thread::spawn({
            let socket = socket.clone();
            move || {
                block_on(socket_task(&receiver, &socket));
                receiver.reason()
            }
        });
        let mut read = Vec::new();
        socket.read_until(&mut read, |read| read.ends_with(CLOSE));
        let pushed = producer.join().unwrap_or([Pushed::Closed; 3]);
        assert!(closer.join().is_ok());
        let reason = task.join().expect("the socket task ends without a panic");
        read.extend(socket.leftover());
        check_stream(&read, &[&["f1", "f2", "f3"]], false);
        if reason == CloseReason::Shutdown {
            let queued = pushed.iter().filter(|p| **p == Pushed::Queued).count();
            assert_eq!(
                read.len(),
                2 * queued + CLOSE.len(),
                "every queued frame is read"
            );
        } else {
            assert_eq!(reason, CloseReason::SlowConsumer);
            assert!(pushed.contains(&Pushed::Overflowed));
        }
    });
}
