//! The chat WebSocket at `/ws`: a reader task that decodes frames into the session, a writer task
//! that drains the outbox in batches, and one cleanup path when either ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::time::{Instant, interval_at, timeout};

use super::auth::Caller;
use super::guard::{ConnectionPermit, check_origin};
use super::rate::{FrameKind, FrameLimiter, Verdict};
use super::{ApiError, AppState};
use crate::hub::{Access, CloseReason, Outbox, OutboxReceiver, Outgoing, Session};
use crate::protocol::{ErrorCode, Limits, Rejection, RoomName, parse_client_frame, room_name};

/// Frames taken from the outbox per write: several frames leave in one flush under load.
const WRITE_BATCH: usize = 64;
/// tungstenite's initial read buffer; its 128 KiB default would dominate an idle connection's
/// memory. Larger frames grow it on demand.
const READ_BUFFER_BYTES: usize = 512;
/// Bytes buffered before tungstenite writes to the socket on its own: about 25 chat frames per
/// write under load, and a bounded buffer (it never shrinks) on every connection that saw a burst.
const WRITE_BUFFER_BYTES: usize = 4 * 1024;
/// How long a close handshake or final flush may take before the socket is dropped.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Query of `GET /ws`.
#[derive(Debug, Deserialize)]
pub struct ChatQuery {
    name: Option<String>,
    room: Option<String>,
}

/// `GET /ws`. Everything that can refuse a connection is answered here, before the upgrade, as a
/// plain HTTP error: a foreign `Origin` (403), a missing or bad token (401), a bad name or room
/// (400), a name or room the token does not allow (403), a full server (503) or a client address
/// at its cap (429).
pub async fn chat(
    ws: WebSocketUpgrade,
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    caller: Result<Caller, ApiError>,
    Query(query): Query<ChatQuery>,
) -> Response {
    match admit(&state, peer, &headers, caller, &query) {
        Ok(admitted) => {
            let frame_limit = state.config.max_frame_bytes;
            configure(ws, frame_limit).on_upgrade(move |socket| {
                let tracker = state.tracker.clone();
                tracker.track_future(run(socket, state, admitted))
            })
        }
        Err(err) => err.into_response(),
    }
}

/// What the checks before the upgrade hand to the socket task.
struct Admitted {
    name: Option<String>,
    room: Option<RoomName>,
    access: Access,
    /// When the connection's token expires: it is closed (1008) then.
    deadline: Option<Instant>,
    permit: ConnectionPermit,
}

fn admit(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    caller: Result<Caller, ApiError>,
    query: &ChatQuery,
) -> Result<Admitted, ApiError> {
    check_origin(headers, &state.config.allowed_origins)?;
    let caller = caller?;
    let name = caller.name(query.name.as_deref())?;
    let room = query.room.as_deref().map(room_name).transpose()?;
    if let Some(room) = &room {
        caller.check_room(room)?;
    }
    let permit = state.admit(peer.ip(), "ws")?;
    Ok(Admitted {
        name,
        room,
        access: caller.access(),
        deadline: caller.deadline(),
        permit,
    })
}

/// The WebSocket settings /ws and /echo share; only the size limit differs.
pub(super) fn configure(ws: WebSocketUpgrade, max_bytes: usize) -> WebSocketUpgrade {
    ws.max_message_size(max_bytes)
        .max_frame_size(max_bytes)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(max_bytes.saturating_mul(2).max(WRITE_BUFFER_BYTES * 2))
}

async fn run(socket: WebSocket, state: Arc<AppState>, admitted: Admitted) {
    let Admitted {
        name,
        room,
        access,
        deadline,
        // Held until this task ends: the connection's place under the caps.
        permit: _permit,
    } = admitted;
    let gauge = state.metrics.connections("ws");
    gauge.inc();
    let (sink, mut stream) = socket.split();
    let (outbox, receiver) = Outbox::new(state.config.hub.outbox_frames);
    let mut session = state.hub.connect_with(name, access, outbox.clone());
    let writer = state
        .tracker
        .spawn(write_loop(sink, receiver, state.config.ping_interval));
    if let Some(room) = room {
        session.join(room, None, None).await;
    }
    let reason = read_loop(&mut stream, &mut session, &state, deadline).await;
    outbox.close(reason);
    // The writer flushes what is queued (acks included) and sends the close frame.
    let _ = writer.await;
    session.disconnect().await;
    finish_close(&mut stream).await;
    gauge.dec();
}

/// Reads (and drops) what the peer still sends until its close reply or the end of the stream.
/// A server that closes the TCP connection with frames from the peer unread makes the kernel send
/// a reset, and a reset can destroy our close frame before the peer reads it: a client in the
/// middle of a burst would see a broken connection instead of 1001 on shutdown.
async fn finish_close(stream: &mut SplitStream<WebSocket>) {
    let _ = timeout(CLOSE_TIMEOUT, async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
}

/// Reads client frames until the client leaves, breaks a rule, goes silent, or the server stops.
async fn read_loop(
    stream: &mut SplitStream<WebSocket>,
    session: &mut Session,
    state: &AppState,
    deadline: Option<Instant>,
) -> CloseReason {
    let limits = Limits {
        max_message_bytes: state.config.max_message_bytes,
    };
    let idle = state.config.idle_timeout;
    let mut limiter = FrameLimiter::new(&state.config);
    loop {
        let next = tokio::select! {
            biased;
            () = state.shutdown.cancelled() => return CloseReason::Shutdown,
            () = session.outbox().closing() => return CloseReason::Normal,
            () = expiry(deadline) => return CloseReason::Policy("token expired"),
            next = timeout(idle, stream.next()) => next,
        };
        let message = match next {
            Err(_) => return CloseReason::Policy("no frames or pongs within the idle timeout"),
            Ok(None) => return CloseReason::Normal,
            Ok(Some(Err(err))) => return classify(err),
            Ok(Some(Ok(message))) => message,
        };
        match message {
            Message::Text(text) => {
                let parsed = parse_client_frame(text.as_str(), limits);
                let kind = parsed
                    .as_ref()
                    .map_or(FrameKind::Other, |request| FrameKind::of(&request.frame));
                let verdict = limiter.as_mut().map_or(Verdict::Allow, |l| l.check(kind));
                if verdict != Verdict::Allow {
                    state.metrics.rate_limited.inc();
                }
                match (verdict, parsed) {
                    // Boxed so an idle connection's task does not carry the largest command's
                    // state.
                    (Verdict::Allow, Ok(request)) => Box::pin(session.handle(request)).await,
                    (Verdict::Allow, Err(rejection)) => session.reject(&rejection),
                    (Verdict::Reject, parsed) => session.reject(&Rejection {
                        code: ErrorCode::RateLimited,
                        message: "over the rate limit; nothing was done".to_owned(),
                        reference: match parsed {
                            Ok(request) => request.reference,
                            Err(rejection) => rejection.reference,
                        },
                    }),
                    (Verdict::Drop, _) => {}
                    (Verdict::Abuse, _) => {
                        state.metrics.flood_closes.inc();
                        return CloseReason::Policy("sustained flooding over the rate limit");
                    }
                }
            }
            Message::Binary(_) => return CloseReason::Unsupported,
            Message::Close(_) => return CloseReason::Normal,
            // tungstenite answers pings itself; any frame counts as a sign of life.
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
}

/// Resolves at the token's expiry; never without a token.
pub(super) async fn expiry(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Maps a read error to the close code RFC 6455 asks for: 1009 over the size limit, 1007 for
/// text (or a close reason) that is not UTF-8, 1002 for broken framing. Anything else (I/O errors,
/// a reset) ends a connection whose peer is gone, so the code hardly matters: 1000.
pub(super) fn classify(err: axum::Error) -> CloseReason {
    match err.into_inner().downcast::<tungstenite::Error>() {
        Ok(inner) => match *inner {
            tungstenite::Error::Capacity(_) => CloseReason::TooBig,
            tungstenite::Error::Utf8(_) => CloseReason::BadUtf8,
            tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            ) => CloseReason::Normal,
            tungstenite::Error::Protocol(_) => CloseReason::Protocol,
            _ => CloseReason::Normal,
        },
        Err(_) => CloseReason::Normal,
    }
}

/// Drains the outbox into the socket, pings the peer, and ends with a close frame.
async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    receiver: OutboxReceiver,
    ping_every: Duration,
) {
    let mut ping = interval_at(Instant::now() + ping_every, ping_every);
    loop {
        tokio::select! {
            biased;
            frame = receiver.recv() => {
                // `None`: the connection is closing.
                let Some(frame) = frame else { break };
                // A peer that stops reading blocks this write; the hub then closes the outbox
                // (slow consumer) and we stop waiting.
                let written = tokio::select! {
                    biased;
                    result = write_queued(&mut sink, &receiver, frame) => result,
                    () = receiver.closing() => break,
                };
                if written.is_err() {
                    return;
                }
            }
            _ = ping.tick() => {
                if sink.send(Message::Ping(bytes::Bytes::new())).await.is_err() {
                    return;
                }
            }
        }
    }
    let reason = receiver.reason();
    if reason.flushes_queue() {
        let flush = async {
            while let Some(frame) = receiver.try_recv() {
                write_queued(&mut sink, &receiver, frame).await?;
            }
            Ok::<(), axum::Error>(())
        };
        let _ = timeout(CLOSE_TIMEOUT, flush).await;
    }
    let close = Message::Close(Some(CloseFrame {
        code: reason.code(),
        reason: Utf8Bytes::from_static(reason.text()),
    }));
    let _ = timeout(CLOSE_TIMEOUT, sink.send(close)).await;
}

/// Writes `first` and up to `WRITE_BATCH - 1` more queued frames, then flushes once: under load
/// several frames leave in one write, and an idle connection holds no batch buffer.
async fn write_queued(
    sink: &mut SplitSink<WebSocket, Message>,
    receiver: &OutboxReceiver,
    first: Outgoing,
) -> Result<(), axum::Error> {
    let mut next = Some(first);
    let mut fed = 0;
    while let Some(frame) = next.take() {
        // The hub only queues UTF-8 JSON, so this conversion never fails; it only re-checks.
        if let Ok(text) = Utf8Bytes::try_from(frame.json) {
            sink.feed(Message::Text(text)).await?;
        }
        fed += 1;
        if fed < WRITE_BATCH {
            next = receiver.try_recv();
        }
    }
    sink.flush().await
}
