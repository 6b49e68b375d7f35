//! A WebSocket connection after the upgrade: the handshake answer, the raw TCP socket taken back
//! from hyper, and [`Socket`], the one task per connection that reads and decodes client frames,
//! answers pings, keeps the ping and idle timers, and writes the outbox's backlog.
//!
//! Most outgoing frames never pass through this task: the outbox writes them to the socket from
//! the broadcaster as long as nothing is queued ([`Outbox`]). This task only writes
//! what the socket did not take at once, when the kernel says it can take more.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{self, Either};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep, sleep_until, timeout};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tracing::warn;

use super::AppState;
use super::frame::{self, Decoded, Decoder, FrameError, Incoming, MAX_HEADER, Payload};
use super::outbox::{CloseReason, Outbox, OutboxReceiver, Outgoing, Wire};

/// How long a close handshake or final flush may take before the socket is dropped.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes read per `read()`; a larger frame reads in more calls. The buffer is freed whenever
/// everything read has been decoded, so an idle connection holds none.
const READ_CHUNK: usize = 4096;
/// Frames written per `sendmsg` (two slices each: header and payload).
const WRITE_BATCH: usize = 64;
/// Frames up to this size (header included) are sent from one stack buffer.
const SMALL_FRAME: usize = 512;

/// A valid WebSocket upgrade request (RFC 6455 section 4.2.1), taken from the request before the
/// handler's own checks run. Anything else is refused like axum's extractor does: 405 for a
/// method other than GET, 400 for missing or wrong headers, 426 for a connection hyper cannot
/// upgrade.
pub struct WsUpgrade {
    accept: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Why a request is not a WebSocket upgrade.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeRejection {
    /// The method is not GET.
    #[error("WebSocket upgrades use GET")]
    MethodNotGet,
    /// A header RFC 6455 requires is missing or wrong.
    #[error("not a WebSocket upgrade: {0}")]
    BadHeader(&'static str),
    /// The connection cannot be upgraded (e.g. HTTP/2).
    #[error("this connection cannot be upgraded")]
    NotUpgradable,
}

impl IntoResponse for UpgradeRejection {
    fn into_response(self) -> Response {
        let status = match self {
            UpgradeRejection::MethodNotGet => StatusCode::METHOD_NOT_ALLOWED,
            UpgradeRejection::BadHeader(_) => StatusCode::BAD_REQUEST,
            UpgradeRejection::NotUpgradable => StatusCode::UPGRADE_REQUIRED,
        };
        (status, self.to_string()).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WsUpgrade {
    type Rejection = UpgradeRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if parts.method != Method::GET {
            return Err(UpgradeRejection::MethodNotGet);
        }
        let headers = &parts.headers;
        if !header_has_token(headers, header::CONNECTION, "upgrade") {
            return Err(UpgradeRejection::BadHeader(
                "Connection must include upgrade",
            ));
        }
        if !header_has_token(headers, header::UPGRADE, "websocket") {
            return Err(UpgradeRejection::BadHeader("Upgrade must be websocket"));
        }
        if headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(HeaderValue::as_bytes)
            != Some(b"13")
        {
            return Err(UpgradeRejection::BadHeader(
                "Sec-WebSocket-Version must be 13",
            ));
        }
        let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
            return Err(UpgradeRejection::BadHeader("Sec-WebSocket-Key is missing"));
        };
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let accept = HeaderValue::from_str(&accept)
            .map_err(|_| UpgradeRejection::BadHeader("Sec-WebSocket-Key"))?;
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or(UpgradeRejection::NotUpgradable)?;
        Ok(WsUpgrade { accept, on_upgrade })
    }
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}

impl WsUpgrade {
    /// Answers 101 and runs `task` with the raw socket once hyper hands it over. No extension or
    /// subprotocol is negotiated, so none is offered back.
    pub fn on_upgrade<F, Fut>(self, task: F) -> Response
    where
        F: FnOnce(TcpStream, Bytes) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let WsUpgrade { accept, on_upgrade } = self;
        tokio::spawn(upgraded(on_upgrade, task));
        (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::CONNECTION, HeaderValue::from_static("upgrade")),
                (header::UPGRADE, HeaderValue::from_static("websocket")),
                (header::SEC_WEBSOCKET_ACCEPT, accept),
            ],
        )
            .into_response()
    }
}

/// The future [`WsUpgrade::on_upgrade`] spawns: the upgrade, then `task` with the raw socket.
/// Its own function so that a test can measure what a connection's task holds.
pub(super) fn upgraded<F, Fut>(on_upgrade: OnUpgrade, task: F) -> impl Future<Output = ()> + Send
where
    F: FnOnce(TcpStream, Bytes) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    // Two stages in one enum (`flatten`), not one `async` block: a block would keep the
    // upgrade and the unconsumed `task` beside the connection's future for its whole life.
    on_upgrade
        .map(move |upgraded| {
            let upgraded = match upgraded {
                Ok(upgraded) => upgraded,
                Err(err) => {
                    tracing::debug!(cause = %err, "upgrade did not complete");
                    return Either::Right(future::ready(()));
                }
            };
            match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => Either::Left(task(parts.io.into_inner(), parts.read_buf)),
                Err(_) => {
                    warn!("upgraded connection is not a TCP stream; dropped");
                    Either::Right(future::ready(()))
                }
            }
        })
        .flatten()
}

/// WebSocket framing for the outbox's direct writes: a text frame per hub frame, the
/// transport's own frames as they are.
struct WsWire {
    /// Inline, not behind another `Arc`: one pointer less to chase per delivery.
    tcp: TcpStream,
}

impl Wire for WsWire {
    fn wire_len(&self, frame: &Outgoing) -> usize {
        if frame.framed {
            frame.json.len()
        } else {
            frame::frame_len(frame.json.len())
        }
    }

    fn write_now(
        &self,
        frames: &mut dyn Iterator<Item = &Outgoing>,
        skip: usize,
    ) -> io::Result<usize> {
        // Straight to the socket, past tokio's readiness bookkeeping: the broadcaster never
        // waits on it, and a full socket is handed to the socket task, whose `drain` goes
        // through tokio and so arms its wake-up.
        would_block_is_zero(self.send(frames, skip))
    }

    fn drain(&self, frames: &mut dyn Iterator<Item = &Outgoing>, skip: usize) -> io::Result<usize> {
        would_block_is_zero(
            self.tcp
                .try_io(Interest::WRITABLE, || self.send(frames, skip)),
        )
    }
}

/// A full socket took nothing.
fn would_block_is_zero(result: io::Result<usize>) -> io::Result<usize> {
    match result {
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(0),
        other => other,
    }
}

impl WsWire {
    /// One `send` of the frames (at most [`WRITE_BATCH`]), the first from byte `skip` on.
    fn send(&self, frames: &mut dyn Iterator<Item = &Outgoing>, skip: usize) -> io::Result<usize> {
        let Some(first) = frames.next() else {
            return Ok(0);
        };
        let Some(second) = frames.next() else {
            return self.send_one(first, skip);
        };
        let mut batch = [first; WRITE_BATCH];
        batch[1] = second;
        let mut count = 2;
        for (slot, frame) in batch[2..].iter_mut().zip(frames) {
            *slot = frame;
            count += 1;
        }
        self.send_vectored::<WRITE_BATCH, { 2 * WRITE_BATCH }>(&batch[..count], skip)
    }

    /// Almost every delivery is one small frame: header and JSON are copied into one buffer on
    /// the stack and leave in a plain `send()`, which costs the kernel less than a `writev`.
    fn send_one(&self, frame: &Outgoing, skip: usize) -> io::Result<usize> {
        let (head, head_len) = if frame.framed {
            ([0u8; MAX_HEADER], 0)
        } else {
            frame::header(frame::OP_TEXT, frame.json.len())
        };
        let total = head_len + frame.json.len();
        if total > SMALL_FRAME {
            return self.send_vectored::<1, 2>(&[frame], skip);
        }
        let mut buf = [0u8; SMALL_FRAME];
        buf[..head_len].copy_from_slice(&head[..head_len]);
        buf[head_len..total].copy_from_slice(&frame.json);
        SockRef::from(&self.tcp).send(buf.get(skip..total).unwrap_or_default())
    }

    /// One `sendmsg` of `frames` (at most `F`; `S` = 2 × `F` slices), the first from byte `skip`.
    fn send_vectored<const F: usize, const S: usize>(
        &self,
        frames: &[&Outgoing],
        mut skip: usize,
    ) -> io::Result<usize> {
        let mut heads = [([0u8; MAX_HEADER], 0usize); F];
        for (head, frame) in heads.iter_mut().zip(frames) {
            if !frame.framed {
                *head = frame::header(frame::OP_TEXT, frame.json.len());
            }
        }
        let mut slices = [IoSlice::new(&[]); S];
        let mut used = 0;
        for (frame, (head, head_len)) in frames.iter().zip(heads.iter()) {
            for part in [&head[..*head_len], &frame.json[..]] {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                if let Some(slot) = slices.get_mut(used) {
                    *slot = IoSlice::new(&part[skip..]);
                    used += 1;
                }
                skip = 0;
            }
        }
        SockRef::from(&self.tcp).send_vectored(&slices[..used])
    }
}

/// Timing settings of one socket, in milliseconds: every connection holds a copy, and a
/// `Duration` takes 16 bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    ping_every_ms: u32,
    idle_ms: u32,
    /// When the connection's token expires (1008 then).
    expiry: Option<Instant>,
}

impl Timing {
    /// Pings every `ping_every`, closes (1008) a peer silent for `idle` or at `expiry`.
    pub(super) fn new(ping_every: Duration, idle: Duration, expiry: Option<Instant>) -> Self {
        let millis = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        Self {
            ping_every_ms: millis(ping_every),
            idle_ms: millis(idle),
            expiry,
        }
    }

    fn ping_every(&self) -> Duration {
        Duration::from_millis(self.ping_every_ms.into())
    }

    fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms.into())
    }
}

/// How a socket's conversation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ending {
    /// The peer sent a close frame (with this code): answer it and hang up.
    PeerClosed(Option<u16>),
    /// The TCP connection is gone: nothing more can be written.
    Gone,
    /// The server closes, with this reason.
    Close(CloseReason),
}

/// What [`Socket::next`] hands to the endpoint.
pub(super) enum Event {
    /// A text message: read it with [`Socket::text`].
    Text(Payload),
    /// A binary message: read it with [`Socket::bytes`].
    Binary(Payload),
    /// The conversation is over.
    Ended(Ending),
}

/// One upgraded WebSocket connection, driven by its single task.
pub(super) struct Socket {
    /// The socket, shared with the outbox that writes to it.
    wire: Arc<WsWire>,
    /// Bytes read and not yet decoded start at `pos`.
    pending: Vec<u8>,
    pos: usize,
    /// How many bytes after `pos` the frame being read needs in all.
    /// `u32`, not `usize`: with the two counters below it fills the 16 bytes `usize` and the
    /// flags took, so the task did not grow. A frame needing more is read in capped chunks anyway.
    needed: u32,
    decoder: Decoder,
    outbox: Outbox,
    receiver: OutboxReceiver,
    /// The outbox has frames the socket has not taken yet.
    backlog: bool,
    /// Messages (text or binary) read from the peer, for the line logged when it ends.
    messages_in: u32,
    /// When the connection was opened, for the same line: [`clock_ms`], because an `Instant`
    /// would grow every connection's task by 16 bytes.
    opened_ms: u32,
    timing: Timing,
    /// When the timer last saw the peer active (or the connection started).
    last_seen: Instant,
    /// The peer sent something since the timer last looked. A flag rather than a clock read
    /// per `read()`: the idle close may come up to one ping interval late, never early.
    active: bool,
    next_ping: Instant,
    timer: Pin<Box<Sleep>>,
}

/// What woke the socket task.
enum Wake {
    Shutdown,
    Outbox,
    Writable(io::Result<()>),
    Readable(io::Result<()>),
    Timer,
}

impl Socket {
    /// Wraps an upgraded socket; `early` holds bytes the client sent right behind its upgrade
    /// request. `outbox_frames` bounds the outbox, `max_message` the frames and messages read.
    pub(super) fn new(
        tcp: TcpStream,
        early: Bytes,
        outbox_frames: usize,
        max_message: usize,
        timing: Timing,
    ) -> Socket {
        let wire = Arc::new(WsWire { tcp });
        let (outbox, receiver) = Outbox::wired(outbox_frames, wire.clone());
        let now = Instant::now();
        let next_ping = now + timing.ping_every();
        let mut socket = Socket {
            wire,
            pending: early.to_vec(),
            pos: 0,
            needed: 0,
            decoder: Decoder::new(max_message),
            outbox,
            receiver,
            backlog: false,
            messages_in: 0,
            opened_ms: clock_ms(now),
            timing,
            last_seen: now,
            active: false,
            next_ping,
            timer: Box::pin(sleep_until(next_ping)),
        };
        socket.arm_timer();
        socket
    }

    /// [`Socket::new`] with the server's settings: its outbox size, ping interval and idle
    /// timeout; `max_message` is the endpoint's size limit, `expiry` the token's.
    pub(super) fn open(
        tcp: TcpStream,
        early: Bytes,
        state: &AppState,
        max_message: usize,
        expiry: Option<Instant>,
    ) -> Socket {
        let config = &state.config;
        let timing = Timing::new(config.ping_interval, config.idle_timeout, expiry);
        Socket::new(tcp, early, config.hub.outbox_frames, max_message, timing)
    }

    /// The connection's outbox, for the session (or the echo loop) to push frames into.
    pub(super) fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The text of a [`Event::Text`] payload (already checked to be UTF-8).
    pub(super) fn text<'a>(&'a self, payload: &'a Payload) -> &'a str {
        std::str::from_utf8(self.bytes(payload)).unwrap_or_default()
    }

    /// The bytes of a payload handed out by [`Socket::next`].
    pub(super) fn bytes<'a>(&'a self, payload: &'a Payload) -> &'a [u8] {
        match payload {
            Payload::Borrowed(range) => self.pending.get(range.clone()).unwrap_or_default(),
            Payload::Owned(bytes) => bytes,
        }
    }

    /// The next message from the peer, answering pings and writing the backlog meanwhile; ends
    /// when the peer leaves, breaks a rule, goes silent, the outbox closes or `shutdown` (the
    /// server's) is cancelled. The token is the caller's, not the socket's: a field would have
    /// to be cloned here, once per message, for the poll below to borrow all of `self`.
    pub(super) async fn next(&mut self, shutdown: &CancellationToken) -> Event {
        let shutdown = shutdown.cancelled();
        tokio::pin!(shutdown);
        // One poll function, not nested `async fn`s: each level would store its own copy of
        // `self` in every idle connection's task.
        std::future::poll_fn(|cx| {
            loop {
                match self.decode_one() {
                    Ok(Some(event)) => return Poll::Ready(event),
                    Ok(None) => {}
                    Err(err) => return Poll::Ready(Event::Ended(Ending::Close(close_reason(err)))),
                }
                let Poll::Ready(wake) = self.poll_wake(shutdown.as_mut(), cx) else {
                    return Poll::Pending;
                };
                if let Err(ending) = self.on_wake(wake) {
                    return Poll::Ready(Event::Ended(ending));
                }
            }
        })
        .await
    }

    /// Decodes one frame from what was read; `None` when a whole frame has not arrived yet.
    fn decode_one(&mut self) -> Result<Option<Event>, FrameError> {
        loop {
            // The payload handed out last lies before `pos`; nothing borrows it any more.
            let Some(rest) = self.pending.get_mut(self.pos..) else {
                return Ok(None);
            };
            if rest.is_empty() {
                // An idle connection keeps no read buffer.
                self.pending = Vec::new();
                self.pos = 0;
                return Ok(None);
            }
            let (consumed, message) = match self.decoder.decode(rest)? {
                Decoded::Incomplete(needed) => {
                    self.needed = u32::try_from(needed).unwrap_or(u32::MAX);
                    return Ok(None);
                }
                Decoded::Frame { consumed, message } => (consumed, message),
            };
            let at = self.pos;
            self.pos += consumed;
            // Ranges are relative to where the frame started; make them index `pending`.
            let rebase = |payload: Payload| match payload {
                Payload::Borrowed(range) => Payload::Borrowed(at + range.start..at + range.end),
                owned => owned,
            };
            match message {
                None | Some(Incoming::Pong) => {}
                Some(Incoming::Ping(range)) => {
                    let pong = frame::encode(frame::OP_PONG, &self.pending[at..][range]);
                    self.outbox.push(Outgoing::framed(Bytes::from(pong)));
                }
                Some(Incoming::Close(code)) => {
                    return Ok(Some(Event::Ended(Ending::PeerClosed(code))));
                }
                Some(Incoming::Text(payload)) => {
                    self.messages_in = self.messages_in.saturating_add(1);
                    return Ok(Some(Event::Text(rebase(payload))));
                }
                Some(Incoming::Binary(payload)) => {
                    self.messages_in = self.messages_in.saturating_add(1);
                    return Ok(Some(Event::Binary(rebase(payload))));
                }
            }
        }
    }

    /// What needs doing first, if anything: the shutdown, the outbox's backlog, the socket, the
    /// timer. Every source but the shutdown is polled in place rather than awaited through a
    /// future of its own: an idle connection's task then holds no state for them.
    fn poll_wake(
        &mut self,
        shutdown: Pin<&mut WaitForCancellationFuture<'_>>,
        cx: &mut Context<'_>,
    ) -> Poll<Wake> {
        if shutdown.poll(cx).is_ready() {
            return Poll::Ready(Wake::Shutdown);
        }
        if self.receiver.poll_work(cx).is_ready() {
            return Poll::Ready(Wake::Outbox);
        }
        if self.backlog
            && let Poll::Ready(ready) = self.wire.tcp.poll_write_ready(cx)
        {
            return Poll::Ready(Wake::Writable(ready));
        }
        if let Poll::Ready(ready) = self.wire.tcp.poll_read_ready(cx) {
            return Poll::Ready(Wake::Readable(ready));
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Wake::Timer);
        }
        Poll::Pending
    }

    /// Does what woke the task: read, write the backlog, ping, or end.
    fn on_wake(&mut self, wake: Wake) -> Result<(), Ending> {
        match wake {
            Wake::Shutdown => Err(Ending::Close(CloseReason::Shutdown)),
            Wake::Outbox if self.receiver.is_closing() => {
                Err(Ending::Close(self.receiver.reason()))
            }
            Wake::Outbox | Wake::Writable(Ok(())) => self.flush(),
            Wake::Writable(Err(_)) | Wake::Readable(Err(_)) => Err(Ending::Gone),
            Wake::Readable(Ok(())) => self.read(),
            Wake::Timer => self.on_timer(),
        }
    }

    /// Writes what the outbox holds as far as the socket takes it.
    fn flush(&mut self) -> Result<(), Ending> {
        match self.receiver.flush() {
            Ok(empty) => {
                self.backlog = !empty;
                Ok(())
            }
            Err(_) => Err(Ending::Gone),
        }
    }

    /// Reads what the socket has.
    fn read(&mut self) -> Result<(), Ending> {
        if self.pos > 0 {
            self.pending.drain(..self.pos);
            self.pos = 0;
        }
        let want = usize::try_from(self.needed)
            .unwrap_or(usize::MAX)
            .saturating_sub(self.pending.len())
            .max(READ_CHUNK);
        self.pending.reserve(want.min(READ_CHUNK * 16));
        let room = self.pending.capacity() - self.pending.len();
        let mut got = None;
        // A read that did not fill the buffer emptied the socket: tell tokio so (by answering
        // `WouldBlock`) instead of paying another `read()` just to hear EAGAIN. tokio keeps any
        // readiness that arrived meanwhile, so no wake-up is lost.
        let tcp = &self.wire.tcp;
        let read = tcp.try_io(Interest::READABLE, || {
            let n = tcp.try_read_buf(&mut self.pending)?;
            got = Some(n);
            if n > 0 && n < room {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match (got, read) {
            (Some(0), _) => Err(Ending::Gone),
            (Some(_), _) => {
                self.active = true;
                Ok(())
            }
            (None, Err(err)) if err.kind() == io::ErrorKind::WouldBlock => Ok(()),
            (None, _) => Err(Ending::Gone),
        }
    }

    /// Pings when a ping is due, closes a silent peer or an expired token.
    fn on_timer(&mut self) -> Result<(), Ending> {
        let now = Instant::now();
        if self.timing.expiry.is_some_and(|at| now >= at) {
            return Err(Ending::Close(CloseReason::Policy("token expired")));
        }
        if std::mem::take(&mut self.active) {
            self.last_seen = now;
        }
        if now >= self.last_seen + self.timing.idle() {
            return Err(Ending::Close(CloseReason::Policy(
                "no frames or pongs within the idle timeout",
            )));
        }
        if now >= self.next_ping {
            self.next_ping = now + self.timing.ping_every();
            let ping = frame::encode(frame::OP_PING, &[]);
            self.outbox.push(Outgoing::framed(Bytes::from(ping)));
        }
        self.arm_timer();
        Ok(())
    }

    /// Sets the one timer to the earliest of the next ping, the idle deadline and the expiry.
    /// Activity only sets `active`; the timer finds out when it fires.
    fn arm_timer(&mut self) {
        let mut at = self.next_ping.min(self.last_seen + self.timing.idle());
        if let Some(expiry) = self.timing.expiry {
            at = at.min(expiry);
        }
        self.timer.as_mut().reset(at);
    }

    /// Runs `work` (a command that may queue many frames) while writing the backlog, so a
    /// command waiting for room in the outbox is not waiting for itself.
    pub(super) async fn drive<F: Future>(&mut self, work: F) -> F::Output {
        tokio::pin!(work);
        loop {
            let wake = std::future::poll_fn(|cx| {
                if let Poll::Ready(out) = work.as_mut().poll(cx) {
                    return Poll::Ready(Err(out));
                }
                if !self.receiver.is_closing() && self.receiver.poll_work(cx).is_ready() {
                    return Poll::Ready(Ok(Wake::Outbox));
                }
                if self.backlog
                    && let Poll::Ready(ready) = self.wire.tcp.poll_write_ready(cx)
                {
                    return Poll::Ready(Ok(Wake::Writable(ready)));
                }
                Poll::Pending
            })
            .await;
            match wake {
                Err(out) => return out,
                Ok(Wake::Writable(Err(_))) => self.backlog = false,
                Ok(_) => {
                    // A broken socket surfaces in `next`; here it only stops the writing.
                    if self.flush().is_err() {
                        self.backlog = false;
                    }
                }
            }
        }
    }

    /// Sends the close frame for `ending` (after the queue, when `reason` lets it flush) and
    /// waits, bounded, until it is written. Returns whether the peer still has to answer it.
    pub(super) async fn send_close(&mut self, ending: &Ending) -> bool {
        let (code, text, reason, flush) = match ending {
            Ending::Gone => {
                self.outbox.close(CloseReason::Normal);
                return false;
            }
            // RFC 6455 section 5.5.1: answer with the peer's status code, and send no more
            // data to a peer that is done.
            Ending::PeerClosed(code) => (code.unwrap_or(1000), "bye", CloseReason::Normal, false),
            Ending::Close(reason) => (
                reason.code(),
                reason.text(),
                reason.clone(),
                reason.flushes_queue(),
            ),
        };
        let close = Outgoing::framed(Bytes::from(frame::close_frame(code, text)));
        self.receiver.finish(close, reason, flush);
        let wire = self.wire.clone();
        let written = timeout(CLOSE_TIMEOUT, async {
            loop {
                match self.receiver.flush() {
                    Ok(true) => return true,
                    Ok(false) => {}
                    Err(_) => return false,
                }
                if wire.tcp.writable().await.is_err() {
                    return false;
                }
            }
        })
        .await;
        written.unwrap_or(false) && !matches!(ending, Ending::PeerClosed(_))
    }

    /// Logs, at debug, that the connection ended: how (`reason`, and the close `code` sent, none
    /// when the TCP connection was simply gone), after how long, the messages read and the
    /// frames written or queued (pings, pongs and the close frame included). Debug, not info:
    /// at 19,000 connections a reconnect storm would write 19,000 info lines in seconds, and a
    /// connection's end is routine; what is not routine (slow consumers, floods) has its own
    /// counter in /metrics. `transport` is the endpoint (`ws`, `echo`).
    pub(super) fn log_ended(&self, transport: &'static str, ending: &Ending) {
        let (code, reason) = match ending {
            Ending::PeerClosed(code) => (Some(code.unwrap_or(1000)), "peer closed"),
            Ending::Gone => (None, "connection lost"),
            Ending::Close(reason) => (Some(reason.code()), reason.text()),
        };
        let duration_ms = clock_ms(Instant::now()).wrapping_sub(self.opened_ms);
        let (_, frames_out) = self.receiver.summary();
        tracing::debug!(
            transport,
            reason,
            code,
            duration_ms,
            messages_in = self.messages_in,
            frames_out,
            "connection ended"
        );
    }

    /// Reads (and drops) what the peer still sends until its close reply or the end of the
    /// stream, bounded. A server that closes the TCP connection with frames from the peer unread
    /// makes the kernel send a reset, and a reset can destroy our close frame before the peer
    /// reads it: a client in the middle of a burst would see a broken connection instead of 1001.
    pub(super) async fn finish(&mut self) {
        let _ = timeout(CLOSE_TIMEOUT, async {
            let mut framing_ok = true;
            loop {
                if framing_ok {
                    match self.decode_one() {
                        Ok(Some(Event::Ended(Ending::PeerClosed(_)))) => return,
                        Ok(Some(_)) => continue,
                        Ok(None) => {}
                        // After broken framing, only the end of the stream is worth waiting for.
                        Err(_) => framing_ok = false,
                    }
                }
                if !framing_ok {
                    self.pending.clear();
                    self.pos = 0;
                }
                if self.wire.tcp.readable().await.is_err() || self.read().is_err() {
                    return;
                }
            }
        })
        .await;
    }
}

/// The close reason for broken framing (RFC 6455 section 7.4.1).
fn close_reason(err: FrameError) -> CloseReason {
    match err {
        FrameError::Protocol => CloseReason::Protocol,
        FrameError::BadUtf8 => CloseReason::BadUtf8,
        FrameError::TooBig => CloseReason::TooBig,
    }
}

/// Milliseconds on a clock that wraps every 49.7 days: the difference of two readings (with
/// `wrapping_sub`) is right for any connection shorter than that, whatever the uptime.
fn clock_ms(at: Instant) -> u32 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    // Truncating is the point: the clock wraps.
    at.saturating_duration_since(start).as_millis() as u32
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::transport::outbox::Pushed;

    /// A server `Socket` (its outbox bounded at `outbox_frames`) and the peer's end, connected
    /// over loopback.
    async fn pair(outbox_frames: usize, timing: Timing) -> (Socket, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let socket = Socket::new(server, Bytes::new(), outbox_frames, 1 << 20, timing);
        (socket, peer)
    }

    /// Timers that never fire during a test.
    fn quiet() -> Timing {
        Timing::new(Duration::from_secs(600), Duration::from_secs(1200), None)
    }

    /// The server's frames in `read` as (opcode, payload), the last possibly incomplete one left
    /// out. Server frames are unmasked and unfragmented.
    fn parse(read: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        let mut at = 0;
        while read.len() >= at + 2 {
            let opcode = read[at] & 0x0F;
            let (len, head) = match read[at + 1] & 0x7F {
                126 if read.len() >= at + 4 => (
                    usize::from(u16::from_be_bytes([read[at + 2], read[at + 3]])),
                    4,
                ),
                127 if read.len() >= at + 10 => {
                    let bytes: [u8; 8] = read[at + 2..at + 10].try_into().unwrap();
                    (usize::try_from(u64::from_be_bytes(bytes)).unwrap(), 10)
                }
                126 | 127 => break,
                len => (usize::from(len), 2),
            };
            if read.len() < at + head + len {
                break;
            }
            frames.push((opcode, read[at + head..at + head + len].to_vec()));
            at += head + len;
        }
        frames
    }

    /// Reads as the peer until a close frame has arrived; returns every frame read.
    async fn read_until_close(mut peer: TcpStream) -> Vec<(u8, Vec<u8>)> {
        let mut read = Vec::new();
        let mut chunk = vec![0u8; 1 << 16];
        let reading = async {
            loop {
                let frames = parse(&read);
                if frames.last().is_some_and(|(op, _)| *op == frame::OP_CLOSE) {
                    return frames;
                }
                let n = peer.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the connection ended before a close frame");
                read.extend_from_slice(&chunk[..n]);
            }
        };
        timeout(Duration::from_secs(10), reading)
            .await
            .expect("a close frame within 10 s")
    }

    /// The status code of a close frame's payload.
    fn close_code(payload: &[u8]) -> u16 {
        u16::from_be_bytes([payload[0], payload[1]])
    }

    /// A text frame of `len` bytes, all `fill`: a torn or reordered frame cannot pass for one.
    fn filled(fill: u8, len: usize) -> Outgoing {
        Outgoing::control(Bytes::from(vec![fill; len]))
    }

    /// A peer that reads nothing: pushes of large frames fill the socket, then the outbox, and
    /// the socket closes as a slow consumer. The peer then gets the frame the socket had taken
    /// part of, whole, and right after it the close frame with 1013; nothing queued behind
    /// that frame is written, nothing is torn.
    #[tokio::test]
    async fn a_full_outbox_closes_with_1013_right_after_the_partly_written_frame() {
        const LEN: usize = 256 * 1024;
        let (mut socket, peer) = pair(4, quiet()).await;
        let mut pushed = 0usize;
        while socket.outbox().push(filled(b'a', LEN)) != Pushed::Overflowed {
            pushed += 1;
            assert!(pushed < 1000, "loopback took 256 MiB without a full queue");
        }
        let shutdown = CancellationToken::new();
        let Event::Ended(ending) = socket.next(&shutdown).await else {
            panic!("the socket went on after its outbox overflowed");
        };
        assert_eq!(ending, Ending::Close(CloseReason::SlowConsumer));
        let reader = tokio::spawn(read_until_close(peer));
        assert!(
            socket.send_close(&ending).await,
            "the close frame was written"
        );
        let frames = reader.await.unwrap();
        let (close, texts) = frames.split_last().unwrap();
        assert_eq!((close.0, close_code(&close.1)), (frame::OP_CLOSE, 1013));
        assert!(
            texts
                .iter()
                .all(|(op, payload)| *op == frame::OP_TEXT && payload == &vec![b'a'; LEN]),
            "every frame before the close is whole"
        );
        assert!(
            texts.len() < pushed,
            "the queued frames were dropped ({} of {pushed} written)",
            texts.len()
        );
    }

    /// On shutdown the backlog the socket has not taken yet is written, in order, before the
    /// close frame with 1001.
    #[tokio::test]
    async fn on_shutdown_the_backlog_is_written_in_order_before_1001() {
        const LEN: usize = 256 * 1024;
        const FRAMES: u8 = 80;
        let (mut socket, peer) = pair(usize::from(FRAMES), quiet()).await;
        for fill in 0..FRAMES {
            assert_eq!(socket.outbox().push(filled(fill, LEN)), Pushed::Queued);
        }
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let Event::Ended(ending) = socket.next(&shutdown).await else {
            panic!("the socket went on after the shutdown");
        };
        assert_eq!(ending, Ending::Close(CloseReason::Shutdown));
        let reader = tokio::spawn(read_until_close(peer));
        assert!(
            socket.send_close(&ending).await,
            "the close frame was written"
        );
        let frames = reader.await.unwrap();
        let (close, texts) = frames.split_last().unwrap();
        assert_eq!((close.0, close_code(&close.1)), (frame::OP_CLOSE, 1001));
        let fills: Vec<u8> = texts
            .iter()
            .map(|(op, payload)| {
                assert_eq!((*op, payload.len()), (frame::OP_TEXT, LEN));
                payload[0]
            })
            .collect();
        assert_eq!(fills, (0..FRAMES).collect::<Vec<u8>>());
    }

    /// A masked client frame (RFC 6455 section 5.3), short payloads only.
    fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![0x80 | opcode, 0x80 | u8::try_from(payload.len()).unwrap()];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// A ping is answered with a pong carrying its payload, and the text after it is handed on.
    #[tokio::test]
    async fn a_ping_is_answered_with_a_pong_carrying_its_payload() {
        let (mut socket, mut peer) = pair(8, quiet()).await;
        let mut sent = client_frame(frame::OP_PING, b"hi");
        sent.extend(client_frame(frame::OP_TEXT, b"after"));
        peer.write_all(&sent).await.unwrap();
        let shutdown = CancellationToken::new();
        let Event::Text(payload) = socket.next(&shutdown).await else {
            panic!("the text after the ping was not handed on");
        };
        assert_eq!(socket.text(&payload), "after");
        let ending = Ending::Close(CloseReason::Normal);
        let reader = tokio::spawn(read_until_close(peer));
        assert!(socket.send_close(&ending).await);
        let frames = reader.await.unwrap();
        assert_eq!(frames[0], (frame::OP_PONG, b"hi".to_vec()));
    }

    /// A peer that sends nothing is pinged every ping interval and closed (1008) once silent
    /// for the idle timeout. Virtual time: the runtime's clock jumps to each timer.
    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_pinged_then_closed_with_1008() {
        let timing = Timing::new(Duration::from_secs(1), Duration::from_secs(3), None);
        let (mut socket, peer) = pair(8, timing).await;
        let shutdown = CancellationToken::new();
        let Event::Ended(ending) = socket.next(&shutdown).await else {
            panic!("a silent peer produced an event");
        };
        assert_eq!(
            ending,
            Ending::Close(CloseReason::Policy(
                "no frames or pongs within the idle timeout"
            ))
        );
        let reader = tokio::spawn(read_until_close(peer));
        assert!(socket.send_close(&ending).await);
        let frames = reader.await.unwrap();
        let opcodes: Vec<u8> = frames.iter().map(|(op, _)| *op).collect();
        assert_eq!(
            opcodes,
            [frame::OP_PING, frame::OP_PING, frame::OP_CLOSE],
            "pinged at 1 s and 2 s, closed at 3 s"
        );
        assert_eq!(close_code(&frames[2].1), 1008);
    }
}
