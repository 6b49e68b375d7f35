//! `/echo`: the tutorial's first server. Every text or binary message goes back unchanged. It
//! shares the WebSocket stack (framing, pings, idle timeout, close handshake) with /ws, with its
//! own (larger) size limit.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::admission::{Door, Entry};
use super::frame::{self, OP_BINARY, OP_TEXT};
use super::outbox::Outgoing;
use super::socket::{Event, Socket, WsUpgrade};

/// `GET /echo`. Counted under the connection caps like /ws; exempt from the Origin check and
/// from auth, because it holds no data and acts for no one (docs/security.md; `--no-echo`
/// removes it). Admission (transport/admission.rs) runs only those steps for it.
pub async fn echo(ws: WsUpgrade, State(state): State<Arc<AppState>>, door: Door) -> Response {
    let permit = match door.admit(&state, Entry::Echo).await {
        Ok(mut admitted) => admitted.connection_permit(),
        Err(err) => return err.into_response(),
    };
    ws.on_upgrade(move |tcp, early| {
        let tracker = state.tracker.clone();
        let mut socket = Socket::open(tcp, early, &state, state.config.max_echo_bytes, None);
        let gauge = state.metrics.connections("echo");
        let shutdown = state.shutdown.clone();
        // Owns what it uses in place: see `ws::Connection` on why this is not an `async fn`.
        tracker.track_future(async move {
            gauge.inc();
            echo_loop(&mut socket, &shutdown).await;
            gauge.dec();
            // Held until here: the connection's place under the caps.
            drop(permit);
        })
    })
}

async fn echo_loop(socket: &mut Socket, shutdown: &CancellationToken) {
    let ending = loop {
        let (opcode, payload) = match socket.next(shutdown).await {
            Event::Text(payload) => (OP_TEXT, payload),
            Event::Binary(payload) => (OP_BINARY, payload),
            Event::Ended(ending) => break ending,
        };
        // A peer that sends without reading fills its outbox and is closed as a slow consumer.
        let reply = frame::encode(opcode, socket.bytes(&payload));
        socket.outbox().push(Outgoing::framed(Bytes::from(reply)));
    };
    if Box::pin(socket.send_close(&ending)).await {
        Box::pin(socket.finish()).await;
    }
    socket.log_ended("echo", &ending);
}
