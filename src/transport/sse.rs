//! `/events`: Server-Sent Events for clients that cannot use WebSocket. The connection is a
//! receive-only session joined to one room; it streams the same JSON frames a WebSocket member
//! gets, with the message id as the SSE event id so `Last-Event-ID` resumes without gaps.
//!
//! With the change feed (issue 20): a stream opened with `changes_since=C` (or resumed with a
//! `Last-Event-ID` of the form `M.C`) also gets the room's changes after `C`, and from then on
//! its message and `change` events carry ids `M.C` (the newest message id and change number it
//! sent), so a reconnecting EventSource resumes both without gap or duplicate. Streams that
//! never see a change keep plain message ids, as before.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use tokio::time::Instant;

use super::admission::{Admitted, Door, Entry};
use super::outbox::{CloseReason, Outbox, OutboxReceiver, Outgoing};
use super::{ApiError, AppState};

/// Query of `GET /events`.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    room: String,
    since: Option<u64>,
    changes_since: Option<u64>,
    name: Option<String>,
}

/// Where a stream is: the newest message id and change number it sent (see the module doc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cursor {
    msg: Option<u64>,
    change: Option<u64>,
}

impl Cursor {
    /// Reads `M` or `M.C` (a `Last-Event-ID`).
    fn parse(raw: &str) -> Option<Cursor> {
        let raw = raw.trim();
        let (msg, change) = match raw.split_once('.') {
            Some((msg, change)) => (msg, Some(change.parse::<u64>().ok()?)),
            None => (raw, None),
        };
        Some(Cursor {
            msg: Some(msg.parse::<u64>().ok()?),
            change,
        })
    }

    /// Moves past `frame`; its event id, for messages and changes.
    fn advance(&mut self, frame: &Outgoing) -> Option<String> {
        if let Some(id) = frame.msg_id {
            self.msg = Some(id);
        } else if frame.change_seq != 0 {
            self.change = Some(u64::from(frame.change_seq));
        } else {
            return None;
        }
        let msg = self.msg.unwrap_or(0);
        Some(match self.change {
            Some(change) => format!("{msg}.{change}"),
            None => msg.to_string(),
        })
    }
}

/// `GET /events?room=R&since=ID&name=N[&token=T]`. Refused before the stream starts, like a
/// WebSocket upgrade, by the admission path (transport/admission.rs lists the steps and their
/// answers in order).
pub async fn events(
    State(state): State<Arc<AppState>>,
    door: Door,
    Query(query): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let entry = Entry::Events {
        name: query.name.as_deref(),
        room: &query.room,
    };
    let mut admitted = door.admit(&state, entry).await?;
    let permit = admitted.connection_permit();
    let room = admitted.named_room();
    let Admitted { caller, name, .. } = admitted;
    let deadline = caller.deadline();
    // A reconnecting EventSource sends the last id it saw; it wins over the original `since`.
    let resumed = door
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(Cursor::parse);
    let since = resumed.and_then(|cursor| cursor.msg).or(query.since);
    let changes_since = resumed
        .and_then(|cursor| cursor.change)
        .or(query.changes_since);
    let cursor = Cursor {
        msg: since,
        change: changes_since,
    };

    let (outbox, receiver) = Outbox::new(state.config.hub.outbox_frames);
    let mut session = state
        .hub
        .connect_with(name, caller.access(), outbox.clone());
    let gauge = state.metrics.connections("sse");
    let shutdown = state.shutdown.clone();
    let opened = Instant::now();
    state.tracker.spawn(async move {
        // Held until the stream's session ends: its place under the caps.
        let _permit = permit;
        gauge.inc();
        session
            .join_catching_up(room, since, changes_since, None)
            .await;
        tokio::select! {
            () = outbox.closing() => {}
            () = shutdown.cancelled() => outbox.close(CloseReason::Shutdown),
            () = expiry(deadline) => outbox.close(CloseReason::Policy("token expired")),
        }
        session.disconnect().await;
        log_ended(&outbox, opened);
        gauge.dec();
    });
    Ok(Sse::new(stream(receiver, cursor))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Turns the outbox into SSE events; ends when the session closes (after flushing on shutdown).
fn stream(
    receiver: OutboxReceiver,
    cursor: Cursor,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let start = (receiver, false, cursor);
    futures_util::stream::unfold(start, |(receiver, closed, mut cursor)| async move {
        if closed {
            let frame = receiver.try_recv()?;
            let event = to_event(&frame, &mut cursor);
            return Some((Ok(event), (receiver, true, cursor)));
        }
        match receiver.recv().await {
            Some(frame) => {
                let event = to_event(&frame, &mut cursor);
                Some((Ok(event), (receiver, false, cursor)))
            }
            // Closing: flush what is queued only when the reason allows it.
            None if receiver.reason().flushes_queue() => {
                let frame = receiver.try_recv()?;
                let event = to_event(&frame, &mut cursor);
                Some((Ok(event), (receiver, true, cursor)))
            }
            None => None,
        }
    })
}

fn to_event(frame: &Outgoing, cursor: &mut Cursor) -> Event {
    let event = Event::default().data(String::from_utf8_lossy(&frame.json));
    match cursor.advance(frame) {
        Some(id) => event.id(id),
        None => event,
    }
}

/// Logs, at debug (as a WebSocket's end is, and for the same reason: routine, and 19,000 of
/// them at once in a reconnect storm), that a stream ended: why, the close code a WebSocket
/// would have got for it, after how long, and the frames the stream took.
fn log_ended(outbox: &Outbox, opened: Instant) {
    let (reason, frames_out) = outbox.summary();
    let duration_ms = u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::debug!(
        transport = "sse",
        reason = reason.text(),
        code = reason.code(),
        duration_ms,
        frames_out,
        "connection ended"
    );
}

/// Resolves at the token's expiry; never without a token.
async fn expiry(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn a_plain_message_id_resumes_messages_only() {
        let cursor = Cursor::parse(" 41 ").expect("cursor");
        assert_eq!((cursor.msg, cursor.change), (Some(41), None));
        assert_eq!(Cursor::parse("x"), None);
        assert_eq!(Cursor::parse("4.x"), None);
    }

    #[test]
    fn once_a_change_is_sent_every_event_id_carries_both_cursors() {
        let mut cursor = Cursor::default();
        let msg = Outgoing::message(Bytes::from_static(b"{}"), 7);
        assert_eq!(cursor.advance(&msg).as_deref(), Some("7"));
        let change = Outgoing::change(Bytes::from_static(b"{}"), 3);
        assert_eq!(cursor.advance(&change).as_deref(), Some("7.3"));
        let next = Outgoing::message(Bytes::from_static(b"{}"), 8);
        assert_eq!(cursor.advance(&next).as_deref(), Some("8.3"));
        assert_eq!(Cursor::parse("8.3"), Some(cursor));
        let presence = Outgoing::control(Bytes::from_static(b"{}"));
        assert_eq!(cursor.advance(&presence), None);
    }
}
