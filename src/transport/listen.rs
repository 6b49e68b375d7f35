//! The HTTP server loop. It replaces `axum::serve` for one reason: `axum::serve` cannot bound how
//! long a client may take to send its request headers, so a slowloris client (a few bytes, then
//! silence) would hold a socket and a task forever. hyper's HTTP/1.1 `header_read_timeout` closes
//! such a connection, and the same timer closes keep-alive connections that sit idle.
//!
//! Each connection gets TCP_NODELAY; TCP keepalive and (on Linux) TCP_USER_TIMEOUT, so a peer
//! that vanished without a FIN or RST (a half-open connection) is found by the kernel even where
//! no WebSocket ping would notice it (an SSE stream); the peer's address as `ConnectInfo` and
//! each request's client address as [`ClientAddr`] (the peer, or for a `--trusted-proxy` peer
//! the client its forwarding headers name: the connection caps, the API rate limit and the
//! access log key on it); and upgrade support (WebSocket). On
//! shutdown the loop stops accepting and asks every connection to finish its current request and
//! close; upgraded sockets are no longer HTTP connections and are shut down by the socket tasks
//! themselves.
//!
//! Only HTTP/1.1 is served: browsers speak HTTP/2 only over TLS, which a reverse proxy terminates
//! in front of hubbub, and cleartext HTTP/2 would bypass the header timeout.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::counter::Counter;
use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::client::{ClientAddr, TrustedProxies};
use super::guard::ConnectionCaps;
use tracing::{debug, error, warn};

/// Pause after an accept error other than a reset (e.g. out of file descriptors), so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(200);

/// Settings of the HTTP server loop.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// How long a client may take to send a request's headers.
    pub header: Duration,
    /// How long a peer may leave sent data unacknowledged, or stay idle without answering TCP
    /// keepalive probes, before the kernel drops the connection.
    pub dead_peer: Duration,
    /// How long shutdown waits for in-flight requests.
    pub grace: Duration,
    /// Plain HTTP connections (not yet upgraded) the server holds at once.
    pub max_connections: usize,
    /// Plain HTTP connections one client address holds at once.
    pub max_connections_per_ip: usize,
    /// Counts connections refused at accept (`connections_refused{transport="http"}`).
    pub refused: Counter,
    /// Peers whose forwarding headers name the client (`--trusted-proxy`).
    pub trusted: TrustedProxies,
}

/// Plain HTTP connections allowed beyond the socket caps. A connection that upgrades leaves the
/// HTTP count a moment after its upgrade is answered, so without headroom a client reconnecting
/// at once could be refused here instead of getting the upgrade handler's 429/503 with its JSON
/// body. Within the fd headroom the default global cap keeps.
pub const HTTP_HEADROOM: usize = 32;

/// Answer to a TCP connection over the HTTP connection caps: written without waiting (it fits in
/// any socket buffer), then the socket is closed.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\
connection: close\r\nretry-after: 1\r\n\r\n";

/// Serves `app` on `listener` until `shutdown` resolves, then waits up to `settings.grace` for
/// in-flight HTTP requests (SSE streams included) to finish.
///
/// Plain HTTP connections are capped like sockets (globally and per client address, plus
/// [`HTTP_HEADROOM`]), with their own counts: without that, one address could hold thousands of
/// connections that each send a header byte every few seconds, and run the process out of file
/// descriptors. A connection over the cap gets a bare 503 and is closed at once. An upgraded
/// connection leaves this count (its HTTP connection ends) and is held by the socket caps
/// instead. Connections from a `--trusted-proxy` peer are under the global cap only: the proxy
/// carries every client's requests (and keeps slow headers from reaching us), so its address
/// must not be capped like one client's; the handlers cap each client by the address the proxy
/// names.
pub async fn serve_http(
    listener: TcpListener,
    app: Router,
    settings: HttpSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let HttpSettings {
        header: header_timeout,
        dead_peer,
        grace,
        refused,
        trusted,
        ..
    } = settings;
    let caps = ConnectionCaps::new(
        settings.max_connections.saturating_add(HTTP_HEADROOM),
        settings
            .max_connections_per_ip
            .saturating_add(HTTP_HEADROOM),
    );
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) if is_connection_error(&err) => continue,
                Err(err) => {
                    error!(cause = %err, "accept failed; backing off");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // A trusted proxy carries many clients: only the global cap applies to its
        // connections; each request's client is capped by the handlers, by its own address.
        let admitted = if trusted.contains(remote.ip()) {
            caps.try_admit_unkeyed()
        } else {
            caps.try_admit(remote.ip())
        };
        let permit = match admitted {
            Ok(permit) => permit,
            Err(err) => {
                debug!(%remote, code = err.code.as_str(), "HTTP connection refused");
                refused.inc();
                let _ = tcp.try_write(OVER_CAPACITY);
                continue;
            }
        };
        // Without TCP_NODELAY a `msg` and its `ack` written back to back wait on the peer's
        // delayed ACK (Nagle), adding ~40 ms to every ack.
        if let Err(err) = tcp.set_nodelay(true) {
            warn!(cause = %err, "could not set TCP_NODELAY");
        }
        if let Err(err) = detect_dead_peers(&tcp, dead_peer) {
            warn!(cause = %err, "could not set TCP keepalive");
        }
        let trusted = trusted.clone();
        let service = app.clone().map_request(move |request: Request<Incoming>| {
            let mut request = request.map(Body::new);
            let client = trusted.client(remote.ip(), request.headers());
            request.extensions_mut().insert(ConnectInfo(remote));
            request.extensions_mut().insert(ClientAddr(client));
            request
        });
        let connection = builder
            .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
            .with_upgrades();
        let stop = stop.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut connection = pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = result {
                debug!(%remote, cause = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    stop.cancel();
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        warn!(
            open = connections.len(),
            "HTTP connections still open after the grace period"
        );
    }
    Ok(())
}

/// Lets the kernel drop a connection whose peer is gone: keepalive probes start after
/// `dead_peer` of silence (every `dead_peer / 4`, 4 tries), and on Linux TCP_USER_TIMEOUT drops
/// a connection whose sent data stays unacknowledged for `dead_peer`.
fn detect_dead_peers(tcp: &TcpStream, dead_peer: Duration) -> io::Result<()> {
    let socket = SockRef::from(tcp);
    // Keepalive timers have whole-second granularity.
    let dead_peer = dead_peer.max(Duration::from_secs(1));
    let probe_every = (dead_peer / 4).max(Duration::from_secs(1));
    socket.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(dead_peer)
            .with_interval(probe_every)
            .with_retries(4),
    )?;
    #[cfg(target_os = "linux")]
    socket.set_tcp_user_timeout(Some(dead_peer))?;
    Ok(())
}

/// Errors that concern one connection, not the listener.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
