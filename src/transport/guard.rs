//! What is answered before a connection is upgraded: the connection caps (global and per client
//! IP) and the Origin check. Refusing here costs a small HTTP response; accepting and then
//! dropping would cost a socket task and tell the client nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::http::{HeaderMap, Uri, header};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ApiError;
use crate::config::FD_HEADROOM;
use crate::protocol::ErrorCode;

/// Used when the open-file limit cannot be read (or is absurdly low).
const FALLBACK_MAX_CONNECTIONS: usize = 1024;

/// The default global connection cap: every connection holds one file descriptor, so the
/// process's open-file soft limit minus [`FD_HEADROOM`] (kept for the database, the listener and
/// accept bursts). Past the fd limit `accept` fails and the listener stalls for everyone; below
/// it, the cap refuses cleanly with 503.
pub fn connections_from_fd_limit() -> usize {
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, _hard)) => usize::try_from(soft)
            .unwrap_or(usize::MAX)
            .saturating_sub(FD_HEADROOM)
            .max(1),
        Err(_) => FALLBACK_MAX_CONNECTIONS,
    }
}

/// The address a client is counted under: its IPv4 address, or the /64 prefix of its IPv6
/// address. One IPv6 host usually holds a whole /64, so counting single v6 addresses would let
/// it open 2^64 times the per-IP cap. IPv4-mapped IPv6 addresses count as the IPv4 address.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(prefix))
            }
        },
    }
}

/// The connection caps: one semaphore for the whole server and a count per client IP.
pub struct ConnectionCaps {
    global: Arc<Semaphore>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    per_ip_max: usize,
}

/// One admitted connection's share of the caps. It moves into the socket task and gives both
/// counts back when that task ends, however it ends.
pub struct ConnectionPermit {
    _global: OwnedSemaphorePermit,
    /// `None` for a connection counted only under the global cap.
    _ip: Option<IpRelease>,
}

impl ConnectionCaps {
    /// Caps of `max` connections in all and `per_ip_max` per client IP.
    pub fn new(max: usize, per_ip_max: usize) -> Self {
        Self {
            global: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            per_ip: Arc::new(Mutex::new(HashMap::new())),
            per_ip_max,
        }
    }

    /// Takes a place for a connection from `ip`, or says why not: 429 `too_many_connections`
    /// when that IP is at its cap, 503 `server_full` when the server is.
    pub fn try_admit(&self, ip: IpAddr) -> Result<ConnectionPermit, ApiError> {
        let ip = client_key(ip);
        {
            let mut counts = lock(&self.per_ip);
            let count = counts.entry(ip).or_insert(0);
            if *count >= self.per_ip_max {
                if *count == 0 {
                    counts.remove(&ip);
                }
                return Err(ApiError::new(
                    ErrorCode::TooManyConnections,
                    format!(
                        "this address already has {} connections open",
                        self.per_ip_max
                    ),
                ));
            }
            *count += 1;
        }
        // From here the permit's Drop gives the IP's count back, even if the global cap refuses.
        let release = IpRelease {
            ip,
            per_ip: self.per_ip.clone(),
        };
        let global = self.try_global()?;
        Ok(ConnectionPermit {
            _global: global,
            _ip: Some(release),
        })
    }

    /// Takes a place under the global cap only: for a connection from a trusted proxy, which
    /// carries many clients' requests. Their own caps are applied per request, by the client
    /// address the proxy names.
    pub fn try_admit_unkeyed(&self) -> Result<ConnectionPermit, ApiError> {
        Ok(ConnectionPermit {
            _global: self.try_global()?,
            _ip: None,
        })
    }

    fn try_global(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.global.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                ErrorCode::ServerFull,
                "the server is at its connection limit; retry later",
            )
        })
    }

    /// Connections `ip` has open now.
    #[cfg(test)]
    pub fn open(&self, ip: IpAddr) -> usize {
        lock(&self.per_ip)
            .get(&client_key(ip))
            .copied()
            .unwrap_or(0)
    }
}

/// Gives one IP's count back on drop.
struct IpRelease {
    ip: IpAddr,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for IpRelease {
    fn drop(&mut self) {
        release(&self.per_ip, self.ip);
    }
}

fn release(per_ip: &Mutex<HashMap<IpAddr, usize>>, ip: IpAddr) {
    let mut counts = lock(per_ip);
    if let Some(count) = counts.get_mut(&ip) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            // Keep the map as small as the set of addresses that are connected right now.
            counts.remove(&ip);
        }
    }
}

fn lock(map: &Mutex<HashMap<IpAddr, usize>>) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
    // Plain counters: a panic elsewhere cannot leave them half-updated, so recover the guard.
    map.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Cross-Site WebSocket Hijacking guard: a browser page may open a socket only if its `Origin`
/// is this server (same scheme-less host and port as the `Host` header) or one of `allowed`
/// (`*` allows any). A request without `Origin` is not from a browser page and is allowed; a
/// browser always sends it on WebSocket and EventSource requests to another origin.
pub fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let refuse = || {
        ApiError::new(
            ErrorCode::BadOrigin,
            "cross-origin sockets are not allowed (see --allowed-origin)",
        )
    };
    let origin = origin.to_str().map_err(|_| refuse())?.trim();
    if allowed.iter().any(|a| a == "*") {
        return Ok(());
    }
    if origin.eq_ignore_ascii_case("null") {
        // Sandboxed frames and file:// pages: only by explicit opt-in.
        return if allowed.iter().any(|a| a.eq_ignore_ascii_case("null")) {
            Ok(())
        } else {
            Err(refuse())
        };
    }
    let Some((scheme, authority)) = split_origin(origin) else {
        return Err(refuse());
    };
    if allowed
        .iter()
        .filter_map(|a| split_origin(a.trim_end_matches('/')))
        .any(|(s, a)| s == scheme && a == authority)
    {
        return Ok(());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or_else(refuse)?;
    let host = normalise_authority(host, None).ok_or_else(refuse)?;
    // Same origin: the page was served by this host:port. The Host header carries no scheme,
    // so an http page and an https page of the same host both pass; the browser itself keeps
    // https pages off ws://.
    let origin_authority = normalise_authority(&authority, None).ok_or_else(refuse)?;
    if origin_authority == host {
        Ok(())
    } else {
        Err(refuse())
    }
}

/// `scheme://host[:port]` → (scheme, `host[:port]` with the scheme's default port dropped), both
/// lowercase.
fn split_origin(origin: &str) -> Option<(String, String)> {
    let uri: Uri = origin.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let authority = uri.authority()?.as_str();
    let default_port = match scheme.as_str() {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    };
    Some((scheme, normalise_authority(authority, default_port)?))
}

/// Lowercases `host[:port]` and drops `:default_port` (or, with no scheme known, :80 and :443).
fn normalise_authority(authority: &str, default_port: Option<u16>) -> Option<String> {
    if authority.contains('@') {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        // [IPv6]:port
        let (address, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?.parse::<u16>().ok()?),
        };
        (format!("[{address}]"), port)
    } else {
        match authority.split_once(':') {
            None => (authority.clone(), None),
            Some((host, port)) => (host.to_owned(), Some(port.parse::<u16>().ok()?)),
        }
    };
    let is_default = |p: u16| match default_port {
        Some(d) => p == d,
        None => p == 80 || p == 443,
    };
    match port {
        Some(p) if !is_default(p) => Some(format!("{host}:{p}")),
        _ => Some(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(origin) = origin {
            map.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        map
    }

    #[test]
    fn same_origin_and_no_origin_pass() {
        assert!(check_origin(&headers(None, "chat.example:3000"), &[]).is_ok());
        let h = headers(Some("http://chat.example:3000"), "chat.example:3000");
        assert!(check_origin(&h, &[]).is_ok());
        let h = headers(Some("https://Chat.Example"), "chat.example");
        assert!(check_origin(&h, &[]).is_ok());
        let h = headers(Some("http://[::1]:3000"), "[::1]:3000");
        assert!(check_origin(&h, &[]).is_ok());
    }

    #[test]
    fn other_origins_are_refused_unless_allowed() {
        let h = headers(Some("https://evil.example"), "chat.example:3000");
        assert_eq!(
            check_origin(&h, &[]).unwrap_err().code,
            ErrorCode::BadOrigin
        );
        let h = headers(Some("http://chat.example:3001"), "chat.example:3000");
        assert!(check_origin(&h, &[]).is_err());
        let h = headers(Some("null"), "chat.example");
        assert!(check_origin(&h, &[]).is_err());
        let allowed = vec!["https://app.example/".to_owned()];
        let h = headers(Some("https://app.example"), "chat.example");
        assert!(check_origin(&h, &allowed).is_ok());
        let h = headers(Some("http://app.example"), "chat.example");
        assert!(check_origin(&h, &allowed).is_err(), "scheme must match");
        let h = headers(Some("https://evil.example"), "chat.example");
        assert!(check_origin(&h, &["*".to_owned()]).is_ok());
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
        let caps = ConnectionCaps::new(10, 1);
        let _first = caps.try_admit(a).unwrap();
        assert!(caps.try_admit(b).is_err(), "same /64, same count");
        assert!(caps.try_admit(c).is_ok());
    }

    #[test]
    fn per_ip_cap_then_global_cap() {
        let caps = ConnectionCaps::new(3, 2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let first = caps.try_admit(a).unwrap();
        let _second = caps.try_admit(a).unwrap();
        let err = caps.try_admit(a).err().unwrap();
        assert_eq!(err.code, ErrorCode::TooManyConnections);
        let _third = caps.try_admit(b).unwrap();
        let err = caps.try_admit(b).err().unwrap();
        assert_eq!(err.code, ErrorCode::ServerFull);
        assert_eq!(
            caps.open(b),
            1,
            "a refused admission gives its IP count back"
        );
        drop(first);
        assert_eq!(caps.open(a), 1);
        assert!(caps.try_admit(b).is_ok());
    }
}
