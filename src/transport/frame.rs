//! RFC 6455 framing, server side, without I/O: decoding client frames in place (unmasking,
//! fragments, control frames, UTF-8, size limits) and the header of an unmasked server frame.
//!
//! hubbub frames its own WebSocket bytes instead of going through tungstenite's `WebSocket` so
//! that a broadcast can be written straight from the fan-out loop with one `writev` of a 2–10
//! byte header and the shared JSON bytes, and so that an idle connection holds no read or write
//! buffer at all. The rules here are the ones the Autobahn suite checks (tests/autobahn).

use std::ops::Range;

/// Continuation of a fragmented message.
const OP_CONTINUATION: u8 = 0x0;
/// A text message (UTF-8).
pub(super) const OP_TEXT: u8 = 0x1;
/// A binary message.
pub(super) const OP_BINARY: u8 = 0x2;
/// Close.
pub(super) const OP_CLOSE: u8 = 0x8;
/// Ping.
pub(super) const OP_PING: u8 = 0x9;
/// Pong.
pub(super) const OP_PONG: u8 = 0xA;

/// Longest server frame header: 2 bytes plus a 64-bit length.
pub(super) const MAX_HEADER: usize = 10;

/// Why the peer's bytes are not acceptable WebSocket frames; each has its close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum FrameError {
    /// Reserved bits or opcodes, an unmasked frame, a bad control frame or fragment sequence,
    /// an invalid close code: 1002.
    #[error("WebSocket protocol error")]
    Protocol,
    /// A text message or close reason that is not UTF-8: 1007.
    #[error("text is not valid UTF-8")]
    BadUtf8,
    /// A frame or message over the size limit: 1009.
    #[error("frame or message too big")]
    TooBig,
}

/// Where a decoded payload is: in the caller's buffer, or reassembled from fragments.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Payload {
    /// This range of the buffer passed to [`Decoder::decode`] (unmasked in place).
    Borrowed(Range<usize>),
    /// A message put together from several fragments.
    Owned(Vec<u8>),
}

/// One complete thing the peer sent.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Incoming {
    /// A text message, already checked to be UTF-8.
    Text(Payload),
    /// A binary message.
    Binary(Payload),
    /// A ping; the payload is to be sent back in a pong.
    Ping(Range<usize>),
    /// A pong (or an unsolicited one): a sign of life, nothing more.
    Pong,
    /// A close frame and its status code, if it had one.
    Close(Option<u16>),
}

/// What [`Decoder::decode`] found at the start of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decoded {
    /// The frame is not all there yet: this many bytes are needed in all.
    Incomplete(usize),
    /// A frame of `consumed` bytes; `None` for a fragment that does not end its message.
    Frame {
        consumed: usize,
        message: Option<Incoming>,
    },
}

/// A fragmented message still being received.
#[derive(Debug)]
struct Partial {
    text: bool,
    data: Vec<u8>,
    /// Bytes of `data` known to be valid UTF-8 (an incomplete trailing character excepted), so
    /// invalid text fails at the fragment that breaks it, not at the end.
    checked: usize,
}

/// Per-connection decoding state: only the fragmented message in progress, if any.
#[derive(Debug)]
pub(super) struct Decoder {
    max_message: usize,
    /// Boxed: every connection holds a decoder, few are ever in the middle of a fragmented one.
    partial: Option<Box<Partial>>,
}

impl Decoder {
    /// A decoder refusing frames and messages over `max_message` bytes.
    pub(super) fn new(max_message: usize) -> Self {
        Self {
            max_message,
            partial: None,
        }
    }

    /// Decodes the frame at the start of `buf`, unmasking its payload in place.
    pub(super) fn decode(&mut self, buf: &mut [u8]) -> Result<Decoded, FrameError> {
        let Some(header) = Header::parse(buf)? else {
            return Ok(Decoded::Incomplete(header_needed(buf)));
        };
        let in_progress = self.partial.as_ref().map_or(0, |p| p.data.len());
        if header.opcode & 0x8 == 0 && in_progress.saturating_add(header.len) > self.max_message {
            return Err(FrameError::TooBig);
        }
        let end = header.start.saturating_add(header.len);
        if buf.len() < end {
            return Ok(Decoded::Incomplete(end));
        }
        let range = header.start..end;
        unmask(&mut buf[range.clone()], header.mask);
        let message = self.message(&header, &buf[range.clone()], range)?;
        Ok(Decoded::Frame {
            consumed: end,
            message,
        })
    }

    fn message(
        &mut self,
        header: &Header,
        payload: &[u8],
        range: Range<usize>,
    ) -> Result<Option<Incoming>, FrameError> {
        match header.opcode {
            OP_PING => Ok(Some(Incoming::Ping(range))),
            OP_PONG => Ok(Some(Incoming::Pong)),
            OP_CLOSE => close_code(payload).map(|code| Some(Incoming::Close(code))),
            OP_TEXT | OP_BINARY => {
                if self.partial.is_some() {
                    return Err(FrameError::Protocol);
                }
                let text = header.opcode == OP_TEXT;
                if header.fin {
                    if text && std::str::from_utf8(payload).is_err() {
                        return Err(FrameError::BadUtf8);
                    }
                    let payload = Payload::Borrowed(range);
                    return Ok(Some(if text {
                        Incoming::Text(payload)
                    } else {
                        Incoming::Binary(payload)
                    }));
                }
                let mut partial = Box::new(Partial {
                    text,
                    data: payload.to_vec(),
                    checked: 0,
                });
                partial.check()?;
                self.partial = Some(partial);
                Ok(None)
            }
            OP_CONTINUATION => {
                let Some(partial) = self.partial.as_mut() else {
                    return Err(FrameError::Protocol);
                };
                partial.data.extend_from_slice(payload);
                partial.check()?;
                if !header.fin {
                    return Ok(None);
                }
                let Some(done) = self.partial.take() else {
                    return Err(FrameError::Protocol);
                };
                if done.text && done.checked < done.data.len() {
                    return Err(FrameError::BadUtf8);
                }
                let payload = Payload::Owned(done.data);
                Ok(Some(if done.text {
                    Incoming::Text(payload)
                } else {
                    Incoming::Binary(payload)
                }))
            }
            _ => Err(FrameError::Protocol),
        }
    }
}

impl Partial {
    /// Checks the text received so far; an incomplete character at the end may still complete.
    fn check(&mut self) -> Result<(), FrameError> {
        if !self.text {
            return Ok(());
        }
        match std::str::from_utf8(&self.data[self.checked..]) {
            Ok(_) => self.checked = self.data.len(),
            Err(err) if err.error_len().is_none() => self.checked += err.valid_up_to(),
            Err(_) => return Err(FrameError::BadUtf8),
        }
        Ok(())
    }
}

/// A parsed frame header.
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Where the payload starts.
    start: usize,
    len: usize,
}

impl Header {
    /// Parses the header at the start of `buf`; `None` until all of it has arrived.
    fn parse(buf: &[u8]) -> Result<Option<Header>, FrameError> {
        let [first, second, ..] = *buf else {
            return Ok(None);
        };
        if first & 0x70 != 0 {
            // RSV1-3 mean a negotiated extension, and none is.
            return Err(FrameError::Protocol);
        }
        if second & 0x80 == 0 {
            // RFC 6455 section 5.1: a server must close on an unmasked client frame.
            return Err(FrameError::Protocol);
        }
        let fin = first & 0x80 != 0;
        let opcode = first & 0x0f;
        let (len, at) = match second & 0x7f {
            126 => match buf.get(2..4) {
                Some(&[a, b]) => (u64::from(u16::from_be_bytes([a, b])), 4),
                _ => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(bytes) => {
                    let mut be = [0u8; 8];
                    be.copy_from_slice(bytes);
                    (u64::from_be_bytes(be), 10)
                }
                None => return Ok(None),
            },
            short => (u64::from(short), 2),
        };
        if len >> 63 != 0 {
            return Err(FrameError::Protocol);
        }
        let is_control = opcode & 0x8 != 0;
        if is_control && (!fin || len > 125) {
            return Err(FrameError::Protocol);
        }
        if !matches!(
            opcode,
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
        ) {
            return Err(FrameError::Protocol);
        }
        let Some(&[a, b, c, d]) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        Ok(Some(Header {
            fin,
            opcode,
            mask: [a, b, c, d],
            start: at + 4,
            // Over usize (32-bit hosts) is over any limit.
            len: usize::try_from(len).unwrap_or(usize::MAX),
        }))
    }
}

/// Bytes needed to see the whole header that `buf` starts.
fn header_needed(buf: &[u8]) -> usize {
    match buf.get(1).map(|b| b & 0x7f) {
        Some(126) => 8,
        Some(127) => 14,
        Some(_) => 6,
        None => 2,
    }
}

/// The close frame's status code; a reason must be UTF-8 and a code one a peer may send.
fn close_code(payload: &[u8]) -> Result<Option<u16>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::Protocol),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            let allowed = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !allowed {
                return Err(FrameError::Protocol);
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(FrameError::BadUtf8);
            }
            Ok(Some(code))
        }
    }
}

/// XORs `payload` with the repeating 4-byte `mask`, 8 bytes at a time.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let [a, b, c, d] = mask;
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the mask lines up again at index 0.
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask.iter().cycle()) {
        *byte ^= key;
    }
}

/// The header of an unmasked, final server frame: the bytes and how many of them are used.
pub(super) fn header(opcode: u8, len: usize) -> ([u8; MAX_HEADER], usize) {
    let mut bytes = [0u8; MAX_HEADER];
    bytes[0] = 0x80 | opcode;
    let used = match len {
        0..=125 => {
            // `len` fits in 7 bits here.
            bytes[1] = len as u8;
            2
        }
        126..=0xffff => {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        }
    };
    (bytes, used)
}

/// Bytes of a server frame with a `len`-byte payload.
pub(super) fn frame_len(len: usize) -> usize {
    header(OP_TEXT, len).1 + len
}

/// A whole server frame in one buffer (control frames, echo replies).
pub(super) fn encode(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let (head, used) = header(opcode, payload.len());
    let mut frame = Vec::with_capacity(used + payload.len());
    frame.extend_from_slice(&head[..used]);
    frame.extend_from_slice(payload);
    frame
}

/// A close frame's payload bytes framed: the code, then the reason.
pub(super) fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    // Control frames carry at most 125 bytes.
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    encode(OP_CLOSE, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A masked client frame.
    fn client(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![first];
        match payload.len() {
            len @ 0..=125 => frame.push(0x80 | len as u8),
            len @ 126..=0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&MASK);
        frame.extend(payload.iter().zip(MASK.iter().cycle()).map(|(b, k)| b ^ k));
        frame
    }

    fn decode_all(decoder: &mut Decoder, mut bytes: Vec<u8>) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            match decoder.decode(&mut bytes[at..])? {
                Decoded::Incomplete(_) => break,
                Decoded::Frame { consumed, message } => {
                    match message {
                        Some(Incoming::Text(Payload::Borrowed(r)))
                        | Some(Incoming::Binary(Payload::Borrowed(r))) => {
                            out.push(bytes[at..][r].to_vec());
                        }
                        Some(Incoming::Text(Payload::Owned(v)))
                        | Some(Incoming::Binary(Payload::Owned(v))) => out.push(v),
                        _ => {}
                    }
                    at += consumed;
                }
            }
        }
        Ok(out)
    }

    #[test]
    fn masked_text_frame_decodes_in_place() {
        let mut d = Decoder::new(1 << 20);
        let text = "héllo wörld, longer than eight bytes".as_bytes();
        assert_eq!(
            decode_all(&mut d, client(0x81, text)),
            Ok(vec![text.to_vec()])
        );
    }

    #[test]
    fn sixteen_and_sixty_four_bit_lengths_decode() {
        let mut d = Decoder::new(1 << 20);
        for len in [126, 65535, 65536, 70000] {
            let payload = vec![b'x'; len];
            assert_eq!(
                decode_all(&mut d, client(0x82, &payload)),
                Ok(vec![payload])
            );
        }
    }

    #[test]
    fn a_frame_split_anywhere_waits_for_the_rest() {
        let whole = client(0x81, &[b'a'; 300]);
        for cut in 0..whole.len() {
            let mut d = Decoder::new(1 << 20);
            let mut part = whole[..cut].to_vec();
            assert!(matches!(d.decode(&mut part), Ok(Decoded::Incomplete(n)) if n > cut));
        }
    }

    #[test]
    fn fragments_reassemble_with_control_frames_between() {
        let mut d = Decoder::new(1 << 20);
        let mut bytes = client(0x01, "frag".as_bytes());
        bytes.extend(client(0x89, b"ping"));
        bytes.extend(client(0x80, "mented".as_bytes()));
        assert_eq!(decode_all(&mut d, bytes), Ok(vec![b"fragmented".to_vec()]));
    }

    #[test]
    fn utf8_split_across_fragments_is_accepted() {
        let mut d = Decoder::new(1 << 20);
        let euro = "€".as_bytes();
        let mut bytes = client(0x01, &euro[..1]);
        bytes.extend(client(0x80, &euro[1..]));
        assert_eq!(decode_all(&mut d, bytes), Ok(vec![euro.to_vec()]));
    }

    #[test]
    fn invalid_utf8_fails_at_the_fragment_that_breaks_it() {
        let mut d = Decoder::new(1 << 20);
        let mut first = client(0x01, &[b'o', b'k', 0xff]);
        assert_eq!(d.decode(&mut first), Err(FrameError::BadUtf8));
    }

    #[test]
    fn text_ending_in_an_incomplete_character_is_bad_utf8() {
        let mut d = Decoder::new(1 << 20);
        let mut bytes = client(0x01, b"ok");
        bytes.extend(client(0x80, &"€".as_bytes()[..2]));
        assert_eq!(decode_all(&mut d, bytes), Err(FrameError::BadUtf8));
    }

    #[test]
    fn framing_violations_are_protocol_errors() {
        let cases: Vec<Vec<u8>> = vec![
            client(0xC1, b"rsv1"),
            client(0x83, b""),
            client(0x09, b"fragmented ping"),
            client(0x80, b"continuation first"),
            client(0x88, &[0x03]),
            client(0x88, &[0x03, 0xed]),
            client(0x89, &[0u8; 126]),
            vec![0x81, 0x02, b'h', b'i'],
        ];
        for mut bytes in cases {
            let mut d = Decoder::new(1 << 20);
            assert_eq!(
                d.decode(&mut bytes),
                Err(FrameError::Protocol),
                "{bytes:02x?}"
            );
        }
    }

    #[test]
    fn new_message_inside_a_fragmented_one_is_a_protocol_error() {
        let mut d = Decoder::new(1 << 20);
        let mut bytes = client(0x01, b"a");
        bytes.extend(client(0x81, b"b"));
        assert_eq!(decode_all(&mut d, bytes), Err(FrameError::Protocol));
    }

    #[test]
    fn oversize_frame_is_refused_before_its_payload_arrives() {
        let mut d = Decoder::new(100);
        let mut head = client(0x81, &[b'a'; 101])[..8].to_vec();
        assert_eq!(d.decode(&mut head), Err(FrameError::TooBig));
    }

    #[test]
    fn oversize_message_in_fragments_is_too_big() {
        let mut d = Decoder::new(100);
        let mut bytes = client(0x01, &[b'a'; 60]);
        bytes.extend(client(0x80, &[b'a'; 60]));
        assert_eq!(decode_all(&mut d, bytes), Err(FrameError::TooBig));
    }

    #[test]
    fn close_codes_follow_the_rfc() {
        for (code, ok) in [
            (1000, true),
            (1001, true),
            (3000, true),
            (4999, true),
            (999, false),
            (1004, false),
            (1005, false),
            (1006, false),
            (1016, false),
            (2000, false),
            (5000, false),
        ] {
            let payload = u16::to_be_bytes(code);
            assert_eq!(close_code(&payload).is_ok(), ok, "{code}");
        }
        assert_eq!(close_code(&[0x03, 0xe8, 0xff]), Err(FrameError::BadUtf8));
        assert_eq!(close_code(&[]), Ok(None));
    }

    #[test]
    fn server_headers_use_the_shortest_length() {
        assert_eq!(header(OP_TEXT, 5).1, 2);
        assert_eq!(
            header(OP_TEXT, 126),
            ([0x81, 126, 0, 126, 0, 0, 0, 0, 0, 0], 4)
        );
        assert_eq!(header(OP_BINARY, 70000).1, 10);
        assert_eq!(frame_len(200), 204);
    }

    proptest::proptest! {
        /// Hostile bytes: the decoder answers every input with a frame, a wait or an error,
        /// and never claims more bytes than it was given.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let mut d = Decoder::new(1000);
            let mut buf = bytes;
            let mut at = 0;
            while at < buf.len() {
                match d.decode(&mut buf[at..]) {
                    Ok(Decoded::Frame { consumed, .. }) => {
                        proptest::prop_assert!(consumed > 0 && consumed <= buf.len() - at);
                        at += consumed;
                    }
                    Ok(Decoded::Incomplete(needed)) => {
                        proptest::prop_assert!(needed > buf.len() - at);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }

        /// Any text, cut into any fragments, comes out whole.
        #[test]
        fn fragmented_text_reassembles(text in "\\PC{0,200}", cuts in proptest::collection::vec(0usize..200, 0..6)) {
            let bytes = text.as_bytes();
            let mut points: Vec<usize> = cuts.into_iter().filter(|&c| c < bytes.len()).collect();
            points.sort_unstable();
            points.dedup();
            let mut frames = Vec::new();
            let mut start = 0;
            let ends: Vec<usize> = points.into_iter().chain(std::iter::once(bytes.len())).collect();
            let last = ends.len() - 1;
            for (i, end) in ends.into_iter().enumerate() {
                let opcode = if i == 0 { OP_TEXT } else { 0 };
                let fin = if i == last { 0x80 } else { 0 };
                frames.extend(client(fin | opcode, &bytes[start..end]));
                start = end;
            }
            let mut d = Decoder::new(1 << 20);
            proptest::prop_assert_eq!(decode_all(&mut d, frames), Ok(vec![bytes.to_vec()]));
        }
    }

    #[test]
    fn close_frame_reason_is_cut_at_a_character_boundary() {
        let frame = close_frame(1000, &"é".repeat(100));
        assert!(frame.len() <= 2 + 125);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }
}
