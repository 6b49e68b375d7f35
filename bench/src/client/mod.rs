//! Client modes: how the load generator speaks to each kind of server.
//!
//! Every server under test broadcasts text, but each wraps it differently: peers relay raw
//! text, Socket.IO wraps it in Engine.IO/Socket.IO packets, hubbub in its JSON envelope. The
//! modes differ only in the handshake, in how a post is framed and in how a received frame is
//! classified; the payload inside is the same [`Marker`] everywhere, so latency and loss are
//! measured identically for all servers.

pub mod hubbub;
pub mod raw;
pub mod socketio;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A client connection.
pub type Ws = WebSocketStream<TcpStream>;

/// Which WebSocket route a worker's connections open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// The chat route: `/ws` (raw peers and hubbub) or the Socket.IO endpoint.
    Chat,
    /// The echo route: `/echo`, or Socket.IO's `echo` event.
    Echo,
}

/// Which wire protocol the load generator speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Plain text frames, broadcast verbatim (Node `ws`, Go gorilla hub).
    Raw,
    /// Engine.IO v4 / Socket.IO v5 over a WebSocket.
    Socketio,
    /// hubbub protocol v1 (`join`/`joined`, `msg`, `ack`).
    Hubbub,
}

/// What a received text frame means to the load generator.
#[derive(Debug, PartialEq)]
pub enum Incoming<'a> {
    /// A broadcast post carrying a [`Marker`].
    Delivery(Marker),
    /// hubbub acknowledged the post whose `ref` was this number.
    Ack(u64),
    /// The server answered with an error frame.
    Error(&'a str),
    /// A keep-alive that must be answered with this text (Engine.IO ping).
    Reply(&'static str),
    /// Anything else (presence, typing, history replays, ...): ignored.
    Other,
}

impl Mode {
    /// The request path for a route.
    pub fn path(self, route: Route) -> &'static str {
        match (self, route) {
            (Mode::Socketio, _) => "/socket.io/?EIO=4&transport=websocket",
            (_, Route::Chat) => "/ws",
            (_, Route::Echo) => "/echo",
        }
    }

    /// Frame a post of `text` to `room`, with correlation number `seq`.
    pub fn encode_post(self, room: &str, text: &str, seq: u64) -> String {
        match self {
            Mode::Raw => raw::encode_post(text),
            Mode::Socketio => socketio::encode_event("message", text),
            Mode::Hubbub => hubbub::encode_post(room, text, seq),
        }
    }

    /// Frame an echo request.
    pub fn encode_echo(self, text: &str) -> String {
        match self {
            Mode::Socketio => socketio::encode_event("echo", text),
            _ => text.to_string(),
        }
    }

    /// Classify a received text frame. Cheap on the hot path: a delivery is recognised by its
    /// marker without parsing JSON.
    pub fn classify(self, frame: &str) -> Incoming<'_> {
        if let Some(m) = Marker::find(frame) {
            return Incoming::Delivery(m);
        }
        match self {
            Mode::Raw => Incoming::Other,
            Mode::Socketio => socketio::classify(frame),
            Mode::Hubbub => hubbub::classify(frame),
        }
    }

    /// Run the mode's handshake on a fresh connection: after this the connection is a member of
    /// `room` (hubbub) or registered (Socket.IO) and ready for traffic.
    pub async fn handshake(self, ws: &mut Ws, route: Route, room: &str) -> Result<()> {
        match self {
            Mode::Raw => Ok(()),
            Mode::Socketio => socketio::handshake(ws).await,
            Mode::Hubbub if route == Route::Echo => Ok(()),
            Mode::Hubbub => hubbub::handshake(ws, room).await,
        }
    }
}

/// The payload every post carries: `#b<nonce>:<sender>:<seq>:<sent_us>#` followed by padding.
/// The send time is wall-clock microseconds, which all processes on one machine share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub nonce: u64,
    pub sender: u64,
    pub seq: u64,
    pub sent_us: u64,
}

impl Marker {
    /// The text of a post, padded with `x` to `len` bytes (longer if the marker needs it).
    pub fn text(&self, len: usize) -> String {
        let mut s = format!(
            "#b{}:{}:{}:{}#",
            self.nonce, self.sender, self.seq, self.sent_us
        );
        while s.len() < len {
            s.push('x');
        }
        s
    }

    /// Find and parse the first marker in `frame`.
    pub fn find(frame: &str) -> Option<Marker> {
        Marker::all(frame).next()
    }

    /// Every marker in `frame`, in order: the Go hub (like gorilla's chat example) packs
    /// messages that queued up into one frame, newline-separated.
    pub fn all(frame: &str) -> impl Iterator<Item = Marker> + '_ {
        let mut rest = frame;
        std::iter::from_fn(move || {
            loop {
                let start = rest.find("#b")? + 2;
                let after = &rest[start..];
                let end = after.find('#')?;
                rest = &after[end + 1..];
                if let Some(m) = Marker::parse(&after[..end]) {
                    return Some(m);
                }
            }
        })
    }

    /// Parse `nonce:sender:seq:sent_us`.
    fn parse(body: &str) -> Option<Marker> {
        let mut it = body.split(':').map(|p| p.parse::<u64>().ok());
        let m = Marker {
            nonce: it.next()??,
            sender: it.next()??,
            seq: it.next()??,
            sent_us: it.next()??,
        };
        if it.next().is_some() {
            return None;
        }
        Some(m)
    }
}

/// Wall-clock microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Client-side WebSocket buffers: small reads (frames are ~200 bytes) and eager writes, so
/// 9,000 connections per worker stay cheap and every post leaves at once.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
}

/// Who a hubbub chat connection is: a guest by name, or a signed-in member by token.
#[derive(Debug, Clone)]
pub enum Credential {
    /// `/ws?name=<name>`.
    Guest(String),
    /// `/ws?token=<jwt>` (the token's `sub` names the account).
    Token(String),
}

impl Credential {
    /// The query string that presents this credential on the `/ws` route.
    fn query(&self) -> String {
        match self {
            Credential::Guest(name) => format!("?name={name}"),
            Credential::Token(token) => format!("?token={token}"),
        }
    }
}

/// Open one WebSocket from `source_ip` (ephemeral port) to `server` and run the handshake.
pub async fn connect(
    mode: Mode,
    route: Route,
    source_ip: Ipv4Addr,
    server: SocketAddr,
    room: &str,
    credential: &Credential,
) -> Result<Ws> {
    let socket = TcpSocket::new_v4().context("socket")?;
    socket
        .bind(SocketAddr::new(source_ip.into(), 0))
        .with_context(|| format!("bind {source_ip}"))?;
    let stream = socket.connect(server).await.context("connect")?;
    stream.set_nodelay(true).context("nodelay")?;
    let mut path = mode.path(route).to_string();
    if mode == Mode::Hubbub && route == Route::Chat {
        path.push_str(&credential.query());
    }
    let url = format!("ws://{server}{path}");
    let (mut ws, _resp) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config()))
            .await
            .context("websocket upgrade")?;
    tokio::time::timeout(
        Duration::from_secs(30),
        mode.handshake(&mut ws, route, room),
    )
    .await
    .context("handshake timed out")??;
    Ok(ws)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trips_inside_every_framing() {
        let m = Marker {
            nonce: 77,
            sender: 3,
            seq: 9,
            sent_us: 1_764_000_000_000_000,
        };
        let text = m.text(120);
        assert_eq!(text.len(), 120);
        for mode in [Mode::Raw, Mode::Socketio, Mode::Hubbub] {
            let framed = mode.encode_post("bench", &text, 9);
            assert_eq!(mode.classify(&framed), Incoming::Delivery(m), "{mode:?}");
        }
        let relayed =
            format!(r#"{{"type":"msg","room":"bench","id":4,"ts":1,"from":"b3","data":"{text}"}}"#);
        assert_eq!(Mode::Hubbub.classify(&relayed), Incoming::Delivery(m));
    }

    #[test]
    fn coalesced_frames_yield_every_marker() {
        let a = Marker {
            nonce: 1,
            sender: 2,
            seq: 3,
            sent_us: 4,
        };
        let b = Marker {
            nonce: 1,
            sender: 5,
            seq: 6,
            sent_us: 7,
        };
        let frame = format!("{}\n{}", a.text(40), b.text(40));
        assert_eq!(Marker::all(&frame).collect::<Vec<_>>(), vec![a, b]);
    }

    #[test]
    fn garbage_is_not_a_marker() {
        assert_eq!(Marker::find("#b1:2:3#"), None);
        assert_eq!(Marker::find("#b1:2:3:x#"), None);
        assert_eq!(Marker::find("hello"), None);
    }
}
