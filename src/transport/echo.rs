//! `/echo`: the tutorial's first server. Every text or binary message goes back unchanged. It
//! shares the WebSocket stack and settings with /ws, with its own (larger) size limit.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::ws::{CLOSE_TIMEOUT, classify, configure};
use crate::hub::CloseReason;

/// `GET /echo`. Counted under the connection caps like /ws; exempt from the Origin check and
/// from auth, because it holds no data and acts for no one (docs/security.md; `--no-echo`
/// removes it).
pub async fn echo(
    ws: WebSocketUpgrade,
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    let permit = match state.admit(peer.ip(), "echo") {
        Ok(permit) => permit,
        Err(err) => return err.into_response(),
    };
    let shutdown = state.shutdown.clone();
    let gauge = state.metrics.connections("echo");
    configure(ws, state.config.max_echo_bytes).on_upgrade(move |socket| {
        state.tracker.track_future(async move {
            let _permit = permit;
            gauge.inc();
            run(socket, shutdown).await;
            gauge.dec();
        })
    })
}

async fn run(mut socket: WebSocket, shutdown: CancellationToken) {
    let reason = loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => break CloseReason::Shutdown,
            next = socket.recv() => next,
        };
        match next {
            Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                if socket.send(message).await.is_err() {
                    return;
                }
            }
            Some(Ok(Message::Close(_))) => {
                // tungstenite has queued its echo of the peer's close frame; reading on flushes
                // it and then reports the end. Returning now would drop the reply unsent.
                finish(&mut socket).await;
                return;
            }
            None => return,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Err(err)) => break classify(err),
        }
    };
    let close = Message::Close(Some(CloseFrame {
        code: reason.code(),
        reason: Utf8Bytes::from_static(reason.text()),
    }));
    if timeout(CLOSE_TIMEOUT, socket.send(close)).await.is_ok() {
        finish(&mut socket).await;
    }
}

/// Reads until the peer's side of the close handshake is done (or it gives up), so the close is
/// clean: the peer sees our close frame and its reply before the TCP connection goes.
async fn finish(socket: &mut WebSocket) {
    let _ = timeout(CLOSE_TIMEOUT, async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}
