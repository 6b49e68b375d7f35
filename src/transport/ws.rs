//! The chat WebSocket at `/ws`: one task per connection decodes frames into the session (the
//! [`Socket`] also answers pings and writes the outbox's backlog), and one cleanup path ends it.
//! Broadcasts reach the socket from the hub's fan-out directly, through the outbox.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::AppState;
use super::admission::{self, Door, Entry};
use super::frame::Payload;
use super::guard::ConnectionPermit;
use super::outbox::CloseReason;
use super::rate::{FrameKind, FrameLimiter, Verdict};
use super::socket::{Ending, Event, Socket, WsUpgrade};
use crate::hub::{Access, Session};
use crate::protocol::{ErrorCode, Limits, Rejection, RoomName, parse_client_frame};

/// Query of `GET /ws`.
#[derive(Debug, Deserialize)]
pub struct ChatQuery {
    name: Option<String>,
    room: Option<String>,
}

/// `GET /ws`. Everything that can refuse a connection is answered before the upgrade, as a
/// plain HTTP error, by the admission path (transport/admission.rs, which lists the steps and
/// their answers in order).
pub async fn chat(
    ws: WsUpgrade,
    State(state): State<Arc<AppState>>,
    door: Door,
    Query(query): Query<ChatQuery>,
) -> Response {
    let entry = Entry::Chat {
        name: query.name.as_deref(),
        room: query.room.as_deref(),
    };
    match door.admit(&state, entry).await.map(Admitted::for_socket) {
        Ok(admitted) => {
            ws.on_upgrade(move |tcp, early| connection_task(state, admitted, tcp, early))
        }
        Err(err) => err.into_response(),
    }
}

/// The connection's task once the socket is upgraded, tracked so that shutdown waits for it.
fn connection_task(
    state: Arc<AppState>,
    admitted: Admitted,
    tcp: TcpStream,
    early: Bytes,
) -> impl Future<Output = ()> + Send + 'static {
    let tracker = state.tracker.clone();
    tracker.track_future(Connection::open(tcp, early, state, admitted).run())
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

impl Admitted {
    /// The socket task's share of what passed the door: only what the connection keeps.
    fn for_socket(mut admitted: admission::Admitted) -> Self {
        Admitted {
            permit: admitted.connection_permit(),
            name: admitted.name,
            room: admitted.room,
            access: admitted.caller.access(),
            deadline: admitted.caller.deadline(),
        }
    }
}

/// Everything one chat connection's task holds for its whole life. Built before the task's
/// future, and used in place by it: arguments of an `async fn` are stored twice in its state.
struct Connection {
    socket: Socket,
    session: Session,
    /// Joined before the first frame is read.
    room: Option<RoomName>,
    state: Arc<AppState>,
    gauge: Gauge,
    /// Held until the task ends: the connection's place under the caps.
    permit: ConnectionPermit,
}

impl Connection {
    fn open(tcp: TcpStream, early: Bytes, state: Arc<AppState>, admitted: Admitted) -> Self {
        let Admitted {
            name,
            room,
            access,
            deadline,
            permit,
        } = admitted;
        let socket = Socket::open(tcp, early, &state, state.config.max_frame_bytes, deadline);
        let session = state
            .hub
            .connect_with(name, access, socket.outbox().clone());
        let gauge = state.metrics.connections("ws");
        Connection {
            socket,
            session,
            room,
            state,
            gauge,
            permit,
        }
    }

    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would store `self` twice in every connection's task"
    )]
    fn run(mut self) -> impl Future<Output = ()> + Send {
        async move {
            self.gauge.inc();
            if let Some(room) = self.room.take() {
                let join = Box::pin(self.session.join(room, None, None));
                self.socket.drive(join).await;
            }
            // Inline, not an `async fn`: that would store its references once more.
            let mut limiter = Limiter::Unused;
            let ending = loop {
                let payload = match self.socket.next(&self.state.shutdown).await {
                    Event::Text(payload) => payload,
                    Event::Binary(_) => break Ending::Close(CloseReason::Unsupported),
                    Event::Ended(ending) => break ending,
                };
                let step = on_frame(
                    &self.socket,
                    &mut self.session,
                    &self.state,
                    &mut limiter,
                    payload,
                );
                match step {
                    Step::Done => {}
                    Step::Run(work) => self.socket.drive(work).await,
                    Step::End(ending) => break ending,
                }
            };
            // Pending acks go out before the close frame; then the session leaves its rooms.
            // These run once per connection, so they are boxed: their state would otherwise be
            // part of every idle connection's task.
            let awaits_reply = Box::pin(self.socket.send_close(&ending)).await;
            Box::pin(self.session.disconnect()).await;
            if awaits_reply {
                Box::pin(self.socket.finish()).await;
            }
            self.socket.log_ended("ws", &ending);
            self.gauge.dec();
            // Named so that the block owns it (it captures only the fields it uses), and so
            // the connection keeps its place under the caps until here.
            drop(self.permit);
        }
    }
}

/// The connection's frame limiter, made at its first frame: a member who only listens (most of
/// a big room) never needs one, and a fresh limiter is full, as it would be by then anyway.
enum Limiter {
    Unused,
    Off,
    On(Box<FrameLimiter>),
}

/// What one client frame asks of the connection's task.
enum Step<'a> {
    /// Answered already (or dropped).
    Done,
    /// A command to run while the socket keeps writing.
    Run(Pin<Box<dyn Future<Output = ()> + Send + 'a>>),
    /// Close the connection.
    End(Ending),
}

/// Parses and rate-limits one text frame. A plain function, so that nothing of the frame is part
/// of the connection's task state while a command runs or the socket waits.
fn on_frame<'a>(
    socket: &Socket,
    session: &'a mut Session,
    state: &AppState,
    limiter: &mut Limiter,
    payload: Payload,
) -> Step<'a> {
    let limits = Limits {
        max_message_bytes: state.config.max_message_bytes,
    };
    let parsed = parse_client_frame(socket.text(&payload), limits);
    let kind = parsed
        .as_ref()
        .map_or(FrameKind::Other, |request| FrameKind::of(&request.frame));
    if matches!(limiter, Limiter::Unused) {
        *limiter = match FrameLimiter::new(&state.config) {
            Some(made) => Limiter::On(Box::new(made)),
            None => Limiter::Off,
        };
    }
    let verdict = match limiter {
        Limiter::On(limiter) => limiter.check(kind),
        Limiter::Unused | Limiter::Off => Verdict::Allow,
    };
    if verdict != Verdict::Allow {
        state.metrics.rate_limited.inc();
    }
    match (verdict, parsed) {
        (Verdict::Allow, Ok(request)) => Step::Run(Box::pin(session.handle(request))),
        (Verdict::Allow, Err(rejection)) => {
            session.reject(&rejection);
            Step::Done
        }
        (Verdict::Reject, parsed) => {
            session.reject(&Rejection {
                code: ErrorCode::RateLimited,
                message: "over the rate limit; nothing was done".to_owned(),
                reference: match parsed {
                    Ok(request) => request.reference,
                    Err(rejection) => rejection.reference,
                },
            });
            Step::Done
        }
        (Verdict::Drop, _) => Step::Done,
        (Verdict::Abuse, _) => {
            state.metrics.flood_closes.inc();
            Step::End(Ending::Close(CloseReason::Policy(
                "sustained flooding over the rate limit",
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use hyper::upgrade::OnUpgrade;

    use super::*;
    use crate::transport::socket::upgraded;

    /// The size of what `build` returns, without running it.
    fn output_size<A, B, R>(_build: &impl FnOnce(A, B) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// An idle connection is mostly its task, and the task was shaped by hand to a 768-byte
    /// tokio task cell (docs/benchmarks.md, "Memory per idle connection"; `-Zprint-type-sizes`
    /// on nightly shows the layout). The cell is this future (560 bytes when this test was
    /// written) plus about 110 bytes of tokio's header, scheduler handle, task id and trailer,
    /// rounded up to 128 bytes. The bound is the measured size, not the cell's last byte: a
    /// bigger task is a decision to make with the numbers in hand. Built exactly as `chat`
    /// spawns it.
    #[test]
    fn a_connection_task_future_stays_within_its_768_byte_cell() {
        let build = |on_upgrade: OnUpgrade, (state, admitted): (Arc<AppState>, Admitted)| {
            upgraded(on_upgrade, move |tcp, early| {
                connection_task(state, admitted, tcp, early)
            })
        };
        let size = output_size(&build);
        assert!(
            size <= 560,
            "the WebSocket connection's task future is {size} bytes, over the 560 it was shaped to: \
             every idle connection pays for it in its tokio task cell (768 bytes at 560) \
             (docs/benchmarks.md, \"Memory per idle connection\", says how the task was \
             shaped; measure again with -Zprint-type-sizes and change this number knowingly)"
        );
    }
}
