//! `/events`: Server-Sent Events for clients that cannot use WebSocket. The connection is a
//! receive-only session joined to one room; it streams the same JSON frames a WebSocket member
//! gets, with the message id as the SSE event id so `Last-Event-ID` resumes without gaps.

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
    name: Option<String>,
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
    let since = door
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(query.since);

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
        session.join(room, since, None).await;
        tokio::select! {
            () = outbox.closing() => {}
            () = shutdown.cancelled() => outbox.close(CloseReason::Shutdown),
            () = expiry(deadline) => outbox.close(CloseReason::Policy("token expired")),
        }
        session.disconnect().await;
        log_ended(&outbox, opened);
        gauge.dec();
    });
    Ok(Sse::new(stream(receiver))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Turns the outbox into SSE events; ends when the session closes (after flushing on shutdown).
fn stream(receiver: OutboxReceiver) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold((receiver, false), |(receiver, closed)| async move {
        if closed {
            let frame = receiver.try_recv()?;
            return Some((Ok(to_event(&frame)), (receiver, true)));
        }
        match receiver.recv().await {
            Some(frame) => Some((Ok(to_event(&frame)), (receiver, false))),
            // Closing: flush what is queued only when the reason allows it.
            None if receiver.reason().flushes_queue() => {
                let frame = receiver.try_recv()?;
                Some((Ok(to_event(&frame)), (receiver, true)))
            }
            None => None,
        }
    })
}

fn to_event(frame: &Outgoing) -> Event {
    let event = Event::default().data(String::from_utf8_lossy(&frame.json));
    match frame.msg_id {
        Some(id) => event.id(id.to_string()),
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
