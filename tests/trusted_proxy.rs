//! `--trusted-proxy` (issue 18): behind a reverse proxy every connection comes from the proxy, so
//! the client is read from `X-Forwarded-For` or `Forwarded`, but only on connections from a
//! trusted proxy, taking the rightmost hop that is not itself a trusted proxy. Everyone else's
//! headers are ignored. Shown through what the client address is used for: the per-address
//! connection cap on /ws and /events, the API's per-address rate limit, and the access log.
//!
//! The "proxy" is this test on 127.0.0.1, trusted as 127.0.0.1/32; an untrusted client binds its
//! socket to 127.0.0.2 (all of 127.0.0.0/8 is loopback on Linux).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{TestServer, WAIT, refusal, try_connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The proxy this test plays: it connects from 127.0.0.1.
const PROXY: &str = "127.0.0.1/32";

/// A server that trusts 127.0.0.1 (and 10.0.0.0/8, an inner proxy tier) and allows one open
/// connection per client address.
async fn server_one_connection_each() -> TestServer {
    common::start_server_with(|c| {
        c.trusted_proxies = vec![PROXY.parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
        c.max_connections_per_ip = 1;
    })
    .await
}

/// Opens /ws from `source` (127.0.0.1: the proxy) with one forwarding header; panics unless the
/// upgrade is accepted. The returned client holds its address's place under the cap.
async fn open_ws(server: &TestServer, source: &str, header: (&str, &str)) -> common::Client {
    match try_connect(server.addr, "/ws", &[header], Some(source)).await {
        Ok(client) => client,
        Err(err) => panic!("upgrade with {header:?} from {source} refused: {err:?}"),
    }
}

/// Asserts /ws from `source` with `header` is refused as over its address's cap.
async fn assert_ws_over_cap(server: &TestServer, source: &str, header: (&str, &str)) {
    let refused = try_connect(server.addr, "/ws", &[header], Some(source)).await;
    assert_eq!(
        refusal(refused),
        (429, "too_many_connections".to_owned()),
        "{header:?} from {source}"
    );
}

#[tokio::test]
async fn each_forwarded_client_of_a_trusted_proxy_gets_its_own_connection_quota() {
    let server = server_one_connection_each().await;
    let _first = open_ws(&server, "127.0.0.1", ("x-forwarded-for", "198.51.100.7")).await;
    // The same forwarded client shares its quota...
    assert_ws_over_cap(&server, "127.0.0.1", ("x-forwarded-for", "198.51.100.7")).await;
    // ...another one has its own, though both come from the proxy's address.
    let _second = open_ws(&server, "127.0.0.1", ("x-forwarded-for", "198.51.100.8")).await;
    server.stop().await;
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    let server = server_one_connection_each().await;
    let _first = open_ws(&server, "127.0.0.2", ("x-forwarded-for", "198.51.100.7")).await;
    // A different forged client changes nothing: 127.0.0.2 is the client, and it is at its cap.
    assert_ws_over_cap(&server, "127.0.0.2", ("x-forwarded-for", "198.51.100.9")).await;
    assert_ws_over_cap(&server, "127.0.0.2", ("forwarded", "for=198.51.100.10")).await;
    // And the forged address was never charged: the proxy can still bring that client in.
    let _real = open_ws(&server, "127.0.0.1", ("x-forwarded-for", "198.51.100.7")).await;
    server.stop().await;
}

#[tokio::test]
async fn the_rightmost_untrusted_hop_is_the_client_not_a_spoofed_leftmost_one() {
    let server = server_one_connection_each().await;
    // The client wrote 198.51.100.7 itself; the outer proxy appended the address it saw
    // (203.0.113.9), an inner trusted proxy (10.1.2.3) appended the outer one's.
    let _chain = open_ws(
        &server,
        "127.0.0.1",
        ("x-forwarded-for", "198.51.100.7, 203.0.113.9, 10.1.2.3"),
    )
    .await;
    assert_ws_over_cap(&server, "127.0.0.1", ("x-forwarded-for", "203.0.113.9")).await;
    // The spoofed address was not charged.
    let _spoofed = open_ws(&server, "127.0.0.1", ("x-forwarded-for", "198.51.100.7")).await;
    server.stop().await;
}

#[tokio::test]
async fn the_forwarded_header_names_the_client_as_x_forwarded_for_does() {
    let server = server_one_connection_each().await;
    let _v4 = open_ws(
        &server,
        "127.0.0.1",
        ("forwarded", "for=198.51.100.7;proto=https;by=10.0.0.1"),
    )
    .await;
    assert_ws_over_cap(&server, "127.0.0.1", ("x-forwarded-for", "198.51.100.7")).await;
    // Quoted IPv6 with a port, after a spoofed element, before a trusted inner proxy: counted
    // per /64 like any IPv6 client.
    let _v6 = open_ws(
        &server,
        "127.0.0.1",
        (
            "forwarded",
            r#"for=198.51.100.99, for="[2001:db8:cafe::17]:4711", for=10.9.9.9"#,
        ),
    )
    .await;
    assert_ws_over_cap(
        &server,
        "127.0.0.1",
        ("x-forwarded-for", "2001:db8:cafe::42"),
    )
    .await;
    let _spoofed = open_ws(&server, "127.0.0.1", ("forwarded", "for=198.51.100.99")).await;
    server.stop().await;
}

#[tokio::test]
async fn malformed_forwarding_headers_from_a_trusted_proxy_count_as_the_proxy() {
    let server = server_one_connection_each().await;
    let _garbage = open_ws(&server, "127.0.0.1", ("x-forwarded-for", "not-an-address")).await;
    // Counted as 127.0.0.1, like a request without the header.
    let unnamed = try_connect(server.addr, "/ws", &[], Some("127.0.0.1")).await;
    assert_eq!(refusal(unnamed), (429, "too_many_connections".to_owned()));
    assert_ws_over_cap(&server, "127.0.0.1", ("forwarded", "for=unknown")).await;
    let _named = open_ws(&server, "127.0.0.1", ("x-forwarded-for", "198.51.100.7")).await;
    server.stop().await;
}

#[tokio::test]
async fn event_streams_are_capped_per_forwarded_client() {
    let server = server_one_connection_each().await;
    let events = |client: &'static str| {
        let header = format!("X-Forwarded-For: {client}");
        async move {
            open_request(
                server.addr,
                "127.0.0.1",
                "GET /events?room=r HTTP/1.1",
                &[&header],
            )
            .await
        }
    };
    let (first, _stream) = events("198.51.100.7").await;
    assert_eq!(status_line(&first), "HTTP/1.1 200 OK", "{first}");
    let (same, _) = events("198.51.100.7").await;
    assert_eq!(
        status_line(&same),
        "HTTP/1.1 429 Too Many Requests",
        "{same}"
    );
    let (other, _other_stream) = events("198.51.100.8").await;
    assert_eq!(status_line(&other), "HTTP/1.1 200 OK", "{other}");
    server.stop().await;
}

#[tokio::test]
async fn the_api_rate_limit_counts_each_forwarded_client_separately() {
    let server = common::start_server_with(|c| {
        c.trusted_proxies = vec![PROXY.parse().unwrap()];
        c.rate_limit = 1;
        c.rate_burst = 1;
    })
    .await;
    let rooms = |source: &'static str, client: &'static str| {
        let header = format!("X-Forwarded-For: {client}");
        async move { raw_request(server.addr, source, "GET /api/rooms HTTP/1.1", &[&header]).await }
    };
    let ok = "HTTP/1.1 200 OK";
    let over = "HTTP/1.1 429 Too Many Requests";
    assert_eq!(status_line(&rooms("127.0.0.1", "198.51.100.7").await), ok);
    assert_eq!(status_line(&rooms("127.0.0.1", "198.51.100.7").await), over);
    assert_eq!(status_line(&rooms("127.0.0.1", "198.51.100.8").await), ok);
    // An untrusted peer's header is ignored: its second request is over, whoever it names.
    assert_eq!(status_line(&rooms("127.0.0.2", "198.51.100.9").await), ok);
    assert_eq!(
        status_line(&rooms("127.0.0.2", "198.51.100.10").await),
        over
    );
    server.stop().await;
}

/// Plain HTTP connections one address may hold beyond `--max-connections-per-ip`
/// (`transport::listen::HTTP_HEADROOM`).
const HTTP_HEADROOM: usize = 32;

#[tokio::test]
async fn a_trusted_proxys_connections_are_not_capped_as_one_clients() {
    let server = server_one_connection_each().await;
    // More idle connections than one client address may hold, from the proxy...
    let idle = idle_connections(server.addr, "127.0.0.1", 1 + HTTP_HEADROOM + 8).await;
    let response = raw_request(server.addr, "127.0.0.1", "GET /healthz HTTP/1.1", &[]).await;
    assert_eq!(status_line(&response), "HTTP/1.1 200 OK", "{response}");
    // ...while an untrusted address is refused past its cap: answered 503 and closed at once.
    let idle_untrusted = idle_connections(server.addr, "127.0.0.2", 1 + HTTP_HEADROOM).await;
    let mut over = connect_from(server.addr, "127.0.0.2").await;
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, over.read_to_end(&mut answer))
        .await
        .expect("closed at once")
        .unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 503"));
    drop((idle, idle_untrusted));
    server.stop().await;
}

#[tokio::test]
async fn the_access_log_names_the_forwarded_client() {
    let (_dir, data) = common::scratch();
    let (_logs, log_dir) = common::scratch();
    let log = log_dir.join("hubbub.log");
    let server = common::Binary::start_logging_to(
        &data,
        common::free_port(),
        &["--trusted-proxy", PROXY],
        &log,
    )
    .await;
    let proxied = raw_request(
        server.addr,
        "127.0.0.1",
        "GET /api/rooms HTTP/1.1",
        &["X-Forwarded-For: 198.51.100.7"],
    )
    .await;
    assert_eq!(status_line(&proxied), "HTTP/1.1 200 OK", "{proxied}");
    let forged = raw_request(
        server.addr,
        "127.0.0.2",
        "GET /api/rooms/forged/messages HTTP/1.1",
        &["X-Forwarded-For: 203.0.113.66"],
    )
    .await;
    assert_eq!(status_line(&forged), "HTTP/1.1 200 OK", "{forged}");
    let text = log_line_with(&log, "/api/rooms/forged/messages").await;
    assert!(text.contains("client=127.0.0.2"), "{text}");
    let all = std::fs::read_to_string(&log).unwrap();
    assert!(
        all.lines()
            .any(|line| line.contains("client=198.51.100.7") && line.contains("path=/api/rooms")),
        "{all}"
    );
    assert!(
        !all.contains("203.0.113.66"),
        "a forged address is never logged: {all}"
    );
}

#[tokio::test]
async fn a_bad_trusted_proxy_cidr_refuses_to_start_naming_it() {
    let (_dir, data) = common::scratch();
    let (stderr, status) = run_to_exit(&data, &["--trusted-proxy", "10.0.0.0/33"], None).await;
    assert!(!status.success());
    assert!(stderr.contains("--trusted-proxy"), "{stderr}");
    assert!(stderr.contains("10.0.0.0/33"), "{stderr}");
    assert!(stderr.contains("CIDR"), "{stderr}");
    // The variable is comma-separated; one bad entry refuses the whole.
    let (stderr, status) = run_to_exit(&data, &[], Some("127.0.0.1/32,proxy.example")).await;
    assert!(!status.success());
    assert!(stderr.contains("proxy.example"), "{stderr}");
    assert!(stderr.contains("CIDR"), "{stderr}");
}

/// Runs `hubbub serve` with `args` (and `HUBBUB_TRUSTED_PROXY=env`) expecting it to refuse to
/// start; returns its stderr and exit status.
async fn run_to_exit(
    data: &Path,
    args: &[&str],
    env: Option<&str>,
) -> (String, std::process::ExitStatus) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hubbub"));
    command
        .arg("serve")
        .args(["--addr", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(env) = env {
        command.env("HUBBUB_TRUSTED_PROXY", env);
    }
    let output = tokio::time::timeout(WAIT, command.output())
        .await
        .expect("hubbub exits instead of serving")
        .unwrap();
    (
        String::from_utf8_lossy(&output.stderr).into_owned(),
        output.status,
    )
}

/// Waits (bounded) until the log has a line containing `needle`, and returns it.
async fn log_line_with(log: &Path, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|line| line.contains(needle)) {
            return line.to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no log line with {needle:?}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Connects from `source` to `addr`.
async fn connect_from(addr: SocketAddr, source: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// `count` connections from `source` that send nothing.
async fn idle_connections(addr: SocketAddr, source: &str, count: usize) -> Vec<TcpStream> {
    let mut idle = Vec::new();
    for _ in 0..count {
        idle.push(connect_from(addr, source).await);
    }
    idle
}

/// Sends one HTTP/1.1 request from `source` and returns the response's head (status line and
/// headers).
async fn raw_request(
    addr: SocketAddr,
    source: &str,
    request_line: &str,
    headers: &[&str],
) -> String {
    open_request(addr, source, request_line, headers).await.0
}

/// [`raw_request`], also returning the connection: a streaming response (/events) holds its
/// place under the caps while it is open.
async fn open_request(
    addr: SocketAddr,
    source: &str,
    request_line: &str,
    headers: &[&str],
) -> (String, TcpStream) {
    let mut tcp = connect_from(addr, source).await;
    let mut request = format!("{request_line}\r\nHost: {addr}\r\n");
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut buf).await.unwrap() {
                0 => break,
                n => head.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("an answer in time");
    (String::from_utf8_lossy(&head).into_owned(), tcp)
}

/// The status line of a response head.
fn status_line(head: &str) -> &str {
    head.lines().next().unwrap_or_default()
}
