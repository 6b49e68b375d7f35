//! The echo floor: the least a WebSocket echo server can cost per round trip on this machine.
//!
//! One thread, one `epoll` (through mio, edge-triggered), no runtime, no task per connection,
//! no allocation per frame: read what the socket has, unmask each frame into a reply buffer,
//! write the buffer back. That is the kernel's three calls per round trip (the wake-up from
//! `epoll_wait` shared between the sockets it reports, one `recv`, one `send`) and hardly
//! anything else. The echo scenario runs the same generator against it as against the servers,
//! so "≥ 1.2× the best peer" can be set against what no server can beat here.
//!
//! It speaks just enough WebSocket for the generator: the upgrade (any path), unfragmented
//! text and binary frames echoed, pings answered, close echoed. It is a measuring instrument,
//! not a server: no limits, no timeouts, no validation beyond what keeps it from misreading.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use anyhow::{Context, Result};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

const LISTENER: Token = Token(usize::MAX);
/// Bytes asked of each `recv`; a read that returns fewer emptied the socket.
const READ_CHUNK: usize = 4096;

/// One connection: what was read and not yet understood, and what is waiting to be written.
struct Conn {
    stream: TcpStream,
    /// Zeroed once and reused: `input[..filled]` is what was read and not yet answered.
    input: Vec<u8>,
    filled: usize,
    output: Vec<u8>,
    upgraded: bool,
    closing: bool,
}

/// Serve on `addr` until killed.
pub fn serve(addr: SocketAddr) -> Result<()> {
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
    serve_on(listener)
}

/// Serve on a bound listener until killed.
fn serve_on(listener: std::net::TcpListener) -> Result<()> {
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let mut poll = Poll::new().context("epoll")?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(1024);
    loop {
        if let Err(err) = poll.poll(&mut events, None) {
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err).context("epoll_wait");
        }
        for event in &events {
            if event.token() == LISTENER {
                accept(&poll, &listener, &mut conns, &mut free)?;
                continue;
            }
            let slot = event.token().0;
            let Some(conn) = conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            let open =
                (!event.is_readable() || conn.read_all()) && (!event.is_writable() || conn.flush());
            if !open || (conn.closing && conn.output.is_empty()) {
                if let Some(mut gone) = conns.get_mut(slot).and_then(Option::take) {
                    let _ = poll.registry().deregister(&mut gone.stream);
                }
                free.push(slot);
            }
        }
    }
}

fn accept(
    poll: &Poll,
    listener: &TcpListener,
    conns: &mut Vec<Option<Conn>>,
    free: &mut Vec<usize>,
) -> Result<()> {
    loop {
        let (mut stream, _) = match listener.accept() {
            Ok(pair) => pair,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            // Out of files and the like: the generator sees the refusal; keep serving.
            Err(_) => return Ok(()),
        };
        stream.set_nodelay(true)?;
        let slot = free.pop().unwrap_or_else(|| {
            conns.push(None);
            conns.len() - 1
        });
        poll.registry().register(
            &mut stream,
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        conns[slot] = Some(Conn {
            stream,
            input: vec![0; READ_CHUNK],
            filled: 0,
            output: Vec::new(),
            upgraded: false,
            closing: false,
        });
    }
}

impl Conn {
    /// Reads until the socket is empty, answers what arrived; false when the connection is over.
    fn read_all(&mut self) -> bool {
        loop {
            if self.input.len() - self.filled < READ_CHUNK {
                self.input.resize(self.filled + READ_CHUNK, 0);
            }
            let n = match self.stream.read(&mut self.input[self.filled..]) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            };
            let asked = self.input.len() - self.filled;
            self.filled += n;
            // Edge-triggered: a short read emptied the socket, and anything arriving later is a
            // new edge, so the EAGAIN read can be skipped.
            if n < asked {
                break;
            }
        }
        if !self.upgraded && !self.upgrade() {
            return false;
        }
        if self.upgraded {
            self.answer_frames();
        }
        self.flush()
    }

    /// Answers the HTTP upgrade once the request's head is in; false on a request it cannot use.
    fn upgrade(&mut self) -> bool {
        let Some(end) = self.input[..self.filled]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
        else {
            return true;
        };
        let head = String::from_utf8_lossy(&self.input[..end]).into_owned();
        let key = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_string())
        });
        let Some(key) = key else {
            return false;
        };
        let reply = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            derive_accept_key(key.as_bytes())
        );
        self.output.extend_from_slice(reply.as_bytes());
        self.consume(end + 4);
        self.upgraded = true;
        true
    }

    /// Turns every whole client frame in `input` into its reply in `output`.
    fn answer_frames(&mut self) {
        let mut at = 0;
        while let Some((opcode, header, len)) = parse_header(&self.input[at..self.filled]) {
            let start = at + header;
            let mask = [
                self.input[start - 4],
                self.input[start - 3],
                self.input[start - 2],
                self.input[start - 1],
            ];
            let reply_opcode = match opcode {
                0x1 | 0x2 => Some(opcode),
                0x9 => Some(0xA),
                0x8 => {
                    self.closing = true;
                    Some(0x8)
                }
                _ => None,
            };
            if let Some(op) = reply_opcode {
                push_header(&mut self.output, op, len);
                let payload = &self.input[start..start + len];
                self.output
                    .extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
            }
            at = start + len;
            if self.closing {
                break;
            }
        }
        self.consume(at);
    }

    /// Forgets the first `n` bytes read.
    fn consume(&mut self, n: usize) {
        self.input.copy_within(n..self.filled, 0);
        self.filled -= n;
    }

    /// Writes as much of `output` as the socket takes; false when the peer is gone.
    fn flush(&mut self) -> bool {
        while !self.output.is_empty() {
            match self.stream.write(&self.output) {
                Ok(0) => return false,
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return true,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }
}

/// A whole masked client frame at the start of `buf`: (opcode, header length with the mask key,
/// payload length). `None` until all of it has arrived.
fn parse_header(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let (&b0, &b1) = (buf.first()?, buf.get(1)?);
    let (len, at) = match b1 & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => {
            let bytes: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (usize::try_from(u64::from_be_bytes(bytes)).ok()?, 10)
        }
        short => (short as usize, 2),
    };
    let header = at + 4;
    (buf.len() >= header + len).then_some((b0 & 0x0f, header, len))
}

/// An unmasked server frame header (FIN set).
fn push_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    match len {
        0..=125 => out.push(len as u8),
        126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::{self, Message};

    use super::*;

    #[test]
    fn a_websocket_client_gets_its_frames_back() -> Result<()> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        std::thread::spawn(move || serve_on(listener));
        let stream = std::net::TcpStream::connect(addr)?;
        let (mut ws, _) = tungstenite::client(format!("ws://{addr}/echo"), stream)?;
        let long = "x".repeat(70_000);
        for text in ["hello", "", &long] {
            ws.send(Message::text(text))?;
            assert_eq!(ws.read()?, Message::text(text));
        }
        ws.send(Message::binary(vec![0u8, 1, 2]))?;
        assert_eq!(ws.read()?, Message::binary(vec![0u8, 1, 2]));
        ws.send(Message::Ping(b"p".to_vec().into()))?;
        assert_eq!(ws.read()?, Message::Pong(b"p".to_vec().into()));
        ws.close(None)?;
        assert!(matches!(ws.read()?, Message::Close(_)));
        Ok(())
    }

    #[test]
    fn a_masked_frame_is_parsed_once_whole() {
        let frame = [0x81, 0x83, 1, 2, 3, 4, b'a' ^ 1, b'b' ^ 2, b'c' ^ 3];
        assert_eq!(parse_header(&frame[..8]), None);
        assert_eq!(parse_header(&frame), Some((0x1, 6, 3)));
    }

    #[test]
    fn reply_headers_use_the_extended_lengths() {
        let mut out = Vec::new();
        push_header(&mut out, 0x1, 300);
        assert_eq!(out, [0x81, 126, 1, 44]);
    }
}
