//! The chat WebSocket at `/ws`: one task per connection decodes frames into the session (the
//! [`Socket`] also answers pings and writes the outbox's backlog), and one cleanup path ends it.
//! Broadcasts reach the socket from the hub's fan-out directly, through the outbox.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::auth::Caller;
use super::guard::{ConnectionPermit, check_origin};
use super::rate::{FrameKind, FrameLimiter, Verdict};
use super::socket::{Ending, Event, Socket, WsUpgrade};
use super::{ApiError, AppState};
use crate::hub::{Access, CloseReason, Session};
use crate::protocol::{ErrorCode, Limits, Rejection, RoomName, parse_client_frame, room_name};

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
    ws: WsUpgrade,
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    caller: Result<Caller, ApiError>,
    Query(query): Query<ChatQuery>,
) -> Response {
    match admit(&state, peer, &headers, caller, &query) {
        Ok(admitted) => ws.on_upgrade(move |tcp, early| {
            let tracker = state.tracker.clone();
            tracker.track_future(run(tcp, early, state, admitted))
        }),
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

async fn run(tcp: TcpStream, early: Bytes, state: Arc<AppState>, admitted: Admitted) {
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
    let max_frame = state.config.max_frame_bytes;
    let mut socket = Socket::open(tcp, early, &state, max_frame, deadline);
    let mut session = state
        .hub
        .connect_with(name, access, socket.outbox().clone());
    if let Some(room) = room {
        socket.drive(Box::pin(session.join(room, None, None))).await;
    }
    let ending = read_loop(&mut socket, &mut session, &state).await;
    // Pending acks go out before the close frame; then the session leaves its rooms. These run
    // once per connection, so they are boxed: their state would otherwise be part of every idle
    // connection's task.
    let awaits_reply = Box::pin(socket.send_close(&ending)).await;
    Box::pin(session.disconnect()).await;
    if awaits_reply {
        Box::pin(socket.finish()).await;
    }
    gauge.dec();
}

/// Reads client frames until the client leaves, breaks a rule, goes silent, or the server stops.
async fn read_loop(socket: &mut Socket, session: &mut Session, state: &AppState) -> Ending {
    let limits = Limits {
        max_message_bytes: state.config.max_message_bytes,
    };
    let mut limiter = FrameLimiter::new(&state.config);
    loop {
        let payload = match socket.next().await {
            Event::Text(payload) => payload,
            Event::Binary(_) => return Ending::Close(CloseReason::Unsupported),
            Event::Ended(ending) => return ending,
        };
        let parsed = parse_client_frame(socket.text(&payload), limits);
        let kind = parsed
            .as_ref()
            .map_or(FrameKind::Other, |request| FrameKind::of(&request.frame));
        let verdict = limiter.as_mut().map_or(Verdict::Allow, |l| l.check(kind));
        if verdict != Verdict::Allow {
            state.metrics.rate_limited.inc();
        }
        match (verdict, parsed) {
            // Boxed so an idle connection's task does not carry the largest command's state.
            (Verdict::Allow, Ok(request)) => {
                socket.drive(Box::pin(session.handle(request))).await;
            }
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
                return Ending::Close(CloseReason::Policy(
                    "sustained flooding over the rate limit",
                ));
            }
        }
    }
}
