//! RFC 6455 framing errors, written as raw bytes: /ws and /echo close with 1002 on broken framing
//! and 1007 on a close reason that is not UTF-8, and /echo completes a client's close handshake.
//! The Autobahn suite (tests/autobahn/run.sh) covers this ground case by case; these pin the
//! close codes into `cargo test`, which runs without Python.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use common::{WAIT, start_server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens a TCP connection and performs the WebSocket upgrade on `path` by hand.
async fn upgraded(addr: SocketAddr, path: &str) -> TcpStream {
    upgraded_with(addr, path, &[]).await
}

/// [`upgraded`], with `early` bytes sent in the same write as the upgrade request.
async fn upgraded_with(addr: SocketAddr, path: &str, early: &[u8]) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes();
    request.extend_from_slice(early);
    tcp.write_all(&request).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
    tcp
}

/// A masked client frame (mask key 0, so the payload goes as is).
fn frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut bytes = vec![first_byte, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    bytes.extend_from_slice(payload);
    bytes
}

/// Reads server frames until a close frame and returns its code; skips pings and text.
async fn close_code(tcp: &mut TcpStream) -> u16 {
    loop {
        let mut header = [0u8; 2];
        tokio::time::timeout(WAIT, tcp.read_exact(&mut header))
            .await
            .expect("the server answers in time")
            .expect("a close frame before the connection ends");
        let len = usize::from(header[1] & 0x7f);
        assert!(len < 126, "short frames only");
        let mut payload = vec![0u8; len];
        tcp.read_exact(&mut payload).await.unwrap();
        if header[0] & 0x0f == 0x8 {
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

/// Reads until the server ends the TCP connection, proving it does not linger.
async fn ends(tcp: &mut TcpStream) {
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut rest))
        .await
        .expect("the server closes the connection")
        .ok();
}

#[tokio::test]
async fn reserved_bits_close_1002_on_both_websockets() {
    let server = start_server().await;
    for path in ["/ws", "/echo"] {
        let mut tcp = upgraded(server.addr, path).await;
        // FIN + RSV1 + text: RSV1 means a negotiated extension, and none was.
        tcp.write_all(&frame(0xC1, b"hi")).await.unwrap();
        assert_eq!(close_code(&mut tcp).await, 1002, "{path}");
        ends(&mut tcp).await;
    }
}

#[tokio::test]
async fn reserved_opcode_and_fragmented_ping_close_1002_on_echo() {
    let server = start_server().await;
    for bad in [frame(0x83, b""), frame(0x09, b"ping")] {
        let mut tcp = upgraded(server.addr, "/echo").await;
        tcp.write_all(&bad).await.unwrap();
        assert_eq!(close_code(&mut tcp).await, 1002);
    }
}

#[tokio::test]
async fn close_frame_with_a_one_byte_payload_closes_1002() {
    let server = start_server().await;
    let mut tcp = upgraded(server.addr, "/echo").await;
    tcp.write_all(&frame(0x88, &[0x03])).await.unwrap();
    assert_eq!(close_code(&mut tcp).await, 1002);
}

#[tokio::test]
async fn close_reason_that_is_not_utf8_closes_1007() {
    let server = start_server().await;
    let mut tcp = upgraded(server.addr, "/echo").await;
    tcp.write_all(&frame(0x88, &[0x03, 0xe8, 0xff, 0xfe]))
        .await
        .unwrap();
    assert_eq!(close_code(&mut tcp).await, 1007);
}

#[tokio::test]
async fn echo_answers_a_clients_close_with_the_same_code_then_hangs_up() {
    let server = start_server().await;
    let mut tcp = upgraded(server.addr, "/echo").await;
    tcp.write_all(&frame(0x81, b"hello")).await.unwrap();
    // 1000 with a reason: the reply carries the code back.
    tcp.write_all(&frame(0x88, b"\x03\xe8bye")).await.unwrap();
    assert_eq!(close_code(&mut tcp).await, 1000);
    ends(&mut tcp).await;
}

#[tokio::test]
async fn chat_socket_answers_a_clients_close_with_the_same_code() {
    let server = start_server().await;
    let mut tcp = upgraded(server.addr, "/ws").await;
    // 1001 ("going away", what a browser sends when the page unloads).
    tcp.write_all(&frame(0x88, b"\x03\xe9")).await.unwrap();
    assert_eq!(close_code(&mut tcp).await, 1001);
    ends(&mut tcp).await;
}

#[tokio::test]
async fn frames_sent_right_behind_the_upgrade_request_are_read() {
    // A client may pipeline its first frame with the handshake; hyper has read those bytes
    // already, and the socket task must start from them.
    let server = start_server().await;
    let mut tcp = upgraded_with(server.addr, "/echo", &frame(0x81, b"early")).await;
    let mut reply = [0u8; 7];
    tokio::time::timeout(WAIT, tcp.read_exact(&mut reply))
        .await
        .expect("the echo arrives in time")
        .unwrap();
    assert_eq!(&reply, b"\x81\x05early");
}
