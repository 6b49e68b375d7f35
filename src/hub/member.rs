//! One connection's bounded outbound queue, and the verdict on a consumer that cannot keep up.
//!
//! The broadcaster only ever calls [`Outbox::push`], which never waits: when the queue is full the
//! connection is marked for closing (1013) instead of slowing the room down. The transport's
//! writer task drains the queue in batches, so several queued frames can leave in one write.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;

/// One encoded frame on its way to a client. The JSON bytes are shared by every recipient.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The encoded frame (UTF-8 JSON).
    pub json: Bytes,
    /// The message id for `msg` frames: SSE sends it as the event id, replay de-duplicates by it.
    pub msg_id: Option<u64>,
}

impl Outgoing {
    /// A frame that is not a stored message.
    pub fn control(json: Bytes) -> Self {
        Self { json, msg_id: None }
    }
}

/// Why a connection is being closed, and so which close code it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client went away or asked to close.
    Normal,
    /// The server is shutting down.
    Shutdown,
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
    /// The server failed on this connection.
    Internal,
}

impl CloseReason {
    /// The WebSocket close code (RFC 6455 section 7.4).
    pub fn code(&self) -> u16 {
        match self {
            CloseReason::Normal => 1000,
            CloseReason::Shutdown => 1001,
            CloseReason::Unsupported => 1003,
            CloseReason::BadUtf8 => 1007,
            CloseReason::Policy(_) => 1008,
            CloseReason::TooBig => 1009,
            CloseReason::Internal => 1011,
            CloseReason::SlowConsumer => 1013,
        }
    }

    /// The close frame's reason text.
    pub fn text(&self) -> &'static str {
        match self {
            CloseReason::Normal => "bye",
            CloseReason::Shutdown => "server shutting down",
            CloseReason::Unsupported => "binary frames are not supported",
            CloseReason::BadUtf8 => "text frame is not valid UTF-8",
            CloseReason::Policy(why) => why,
            CloseReason::TooBig => "frame too big",
            CloseReason::Internal => "internal error",
            CloseReason::SlowConsumer => "slow consumer: resume with since",
        }
    }

    /// Whether queued frames should still be written before closing. A slow consumer's queue is
    /// the problem, so it is dropped; on shutdown pending acks must still go out.
    pub fn flushes_queue(&self) -> bool {
        !matches!(self, CloseReason::SlowConsumer | CloseReason::Internal)
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

struct Shared {
    closing: CancellationToken,
    reason: Mutex<Option<CloseReason>>,
}

/// The sending side of a connection's queue, held by the hub for every room the connection is in.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    shared: Arc<Shared>,
}

/// The writer task's side of the queue.
pub struct OutboxReceiver {
    rx: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
}

impl Outbox {
    /// A queue holding at most `capacity` frames.
    pub fn new(capacity: usize) -> (Outbox, OutboxReceiver) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let shared = Arc::new(Shared {
            closing: CancellationToken::new(),
            reason: Mutex::new(None),
        });
        (
            Outbox {
                tx,
                shared: shared.clone(),
            },
            OutboxReceiver { rx, shared },
        )
    }

    /// Queues a frame without ever waiting; a full queue closes the connection as a slow consumer.
    pub fn push(&self, frame: Outgoing) -> Pushed {
        if self.shared.closing.is_cancelled() {
            return Pushed::Closed;
        }
        match self.tx.try_send(frame) {
            Ok(()) => Pushed::Queued,
            Err(TrySendError::Full(_)) => {
                self.close(CloseReason::SlowConsumer);
                Pushed::Overflowed
            }
            Err(TrySendError::Closed(_)) => Pushed::Closed,
        }
    }

    /// Queues a frame, waiting for room: only for a connection's own bulk answers (replay,
    /// history), where waiting slows nobody but that connection.
    pub async fn send(&self, frame: Outgoing) -> bool {
        if self.shared.closing.is_cancelled() {
            return false;
        }
        tokio::select! {
            sent = self.tx.send(frame) => sent.is_ok(),
            () = self.shared.closing.cancelled() => false,
        }
    }

    /// Starts closing the connection; the first reason given wins.
    pub fn close(&self, reason: CloseReason) {
        if let Ok(mut slot) = self.shared.reason.lock() {
            slot.get_or_insert(reason);
        }
        self.shared.closing.cancel();
    }

    /// Whether the connection is closing.
    pub fn is_closing(&self) -> bool {
        self.shared.closing.is_cancelled()
    }

    /// Resolves once the connection starts closing, for whichever task must stop then.
    pub async fn closing(&self) {
        self.shared.closing.cancelled().await;
    }
}

impl OutboxReceiver {
    /// Waits for at least one frame and takes up to `limit`; 0 means every sender is gone.
    pub async fn recv_many(&mut self, buffer: &mut Vec<Outgoing>, limit: usize) -> usize {
        self.rx.recv_many(buffer, limit).await
    }

    /// Takes a frame if one is queued, for the final flush before a close.
    pub fn try_recv(&mut self) -> Option<Outgoing> {
        self.rx.try_recv().ok()
    }

    /// A token cancelled once the connection starts closing; a clone, so a task can wait on it
    /// while it also receives.
    pub fn closing(&self) -> CancellationToken {
        self.shared.closing.clone()
    }

    /// Why the connection is closing (`Normal` when no reason was recorded).
    pub fn reason(&self) -> CloseReason {
        self.shared
            .reason
            .lock()
            .ok()
            .and_then(|slot| slot.clone())
            .unwrap_or(CloseReason::Normal)
    }
}

impl Drop for OutboxReceiver {
    /// A dropped receiver means the client is gone (e.g. an SSE stream the browser closed): tell
    /// the session so it leaves its rooms.
    fn drop(&mut self) {
        if let Ok(mut slot) = self.shared.reason.lock() {
            slot.get_or_insert(CloseReason::Normal);
        }
        self.shared.closing.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn dropping_the_receiver_marks_the_outbox_closing() {
        let (outbox, receiver) = Outbox::new(2);
        drop(receiver);
        assert!(outbox.is_closing());
    }
}
