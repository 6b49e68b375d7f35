//! Who the client of a request is. Without `--trusted-proxy` it is the TCP peer, always. Behind a
//! reverse proxy every peer is the proxy, so one client's limits would be everyone's: for a peer
//! inside a `--trusted-proxy` network only, the client is read from the `Forwarded` (RFC 7239
//! `for=`) or `X-Forwarded-For` header.
//!
//! Those headers are lists of hops, each proxy appending the address it received the request
//! from. Only the right end of the list was written by proxies we trust; everything to the left
//! of the first untrusted hop was written by the client or by proxies we know nothing of, and
//! may be made up. So the hops are walked right to left, skipping trusted proxies, and the first
//! address that is not a trusted proxy is the client (docs/security.md). Anything that makes the
//! answer doubtful (an unparsable hop before the client is found, or the two headers naming
//! different clients) falls back to the peer address, the one address nobody can forge.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use ipnet::IpNet;
use tracing::debug;

/// The address a request's client is counted and logged under: what the connection caps, the
/// rate limits and the access log use. Put on every request by the HTTP loop (`listen.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Only a router served without `serve_http` lacks it: a bug of assembly, not of input.
        parts.extensions.get::<ClientAddr>().copied().ok_or((
            StatusCode::INTERNAL_SERVER_ERROR,
            "the client address is unknown",
        ))
    }
}

/// The networks of `--trusted-proxy`: peers whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: Arc<[IpNet]>,
}

/// The `Forwarded` header (RFC 7239).
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
/// The de facto `X-Forwarded-For` header.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Why the forwarding headers of a trusted peer were not used.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Doubt {
    /// A hop that is not an IP address where the client had to be looked for.
    Malformed(String),
    /// The two headers name different clients: one of them was not written by our proxy.
    Conflict {
        forwarded: IpAddr,
        x_forwarded_for: IpAddr,
    },
}

impl TrustedProxies {
    /// The trusted networks.
    pub fn new(networks: &[IpNet]) -> Self {
        Self {
            networks: networks.into(),
        }
    }

    /// Whether `ip` (an IPv4-mapped IPv6 address as its IPv4 address) is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.networks.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that came from `peer` with `headers`: the peer itself unless it
    /// is a trusted proxy; else the rightmost hop of the forwarding headers that is not a
    /// trusted proxy (the peer when the headers are absent or doubtful; see the module doc).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        match self.forwarded_client(headers) {
            Ok(Some(client)) => client,
            Ok(None) => peer,
            Err(doubt) => {
                debug!(%peer, ?doubt, "forwarding headers of a trusted proxy not used");
                peer
            }
        }
    }

    /// The client the headers name; `None` when neither header is there. With both, they must
    /// agree: a proxy maintains one of them, and the other may have come from the client.
    fn forwarded_client(&self, headers: &HeaderMap) -> Result<Option<IpAddr>, Doubt> {
        let forwarded = self.rightmost_untrusted(headers, &FORWARDED, forwarded_hops)?;
        let x_forwarded_for = self.rightmost_untrusted(headers, &X_FORWARDED_FOR, xff_hops)?;
        match (forwarded, x_forwarded_for) {
            (Some(forwarded), Some(x_forwarded_for)) if forwarded != x_forwarded_for => {
                Err(Doubt::Conflict {
                    forwarded,
                    x_forwarded_for,
                })
            }
            (forwarded, x_forwarded_for) => Ok(forwarded.or(x_forwarded_for)),
        }
    }

    /// Walks the hops of every `name` header line (in order, as one list) from the right and
    /// returns the first that is not a trusted proxy; when every hop is trusted, the leftmost
    /// (the request started at a trusted machine). `None`: no such header.
    fn rightmost_untrusted<'a>(
        &self,
        headers: &'a HeaderMap,
        name: &HeaderName,
        hops: fn(&'a str) -> Vec<&'a str>,
    ) -> Result<Option<IpAddr>, Doubt> {
        let mut lines = headers.get_all(name).iter().peekable();
        if lines.peek().is_none() {
            return Ok(None);
        }
        let mut all: Vec<&str> = Vec::new();
        for line in lines {
            let line = line
                .to_str()
                .map_err(|_| Doubt::Malformed(format!("{name}: not visible ASCII")))?;
            all.extend(hops(line));
        }
        let mut leftmost = None;
        for hop in all.iter().rev() {
            let ip =
                hop_address(hop).ok_or_else(|| Doubt::Malformed(format!("{name}: hop {hop:?}")))?;
            if !self.contains(ip) {
                return Ok(Some(ip));
            }
            leftmost = Some(ip);
        }
        leftmost
            .map(Some)
            .ok_or_else(|| Doubt::Malformed(format!("{name}: no hop")))
    }
}

/// The hops of one `X-Forwarded-For` line: comma-separated addresses.
fn xff_hops(line: &str) -> Vec<&str> {
    line.split(',').map(str::trim).collect()
}

/// The `for=` value of each element of one `Forwarded` line (elements are comma-separated,
/// their pairs `;`-separated; commas and semicolons inside quoted strings do not count). An
/// element without `for=` is a hop we cannot name, kept as an empty value (malformed if it is
/// reached).
fn forwarded_hops(line: &str) -> Vec<&str> {
    split_unquoted(line, ',')
        .into_iter()
        .map(|element| {
            split_unquoted(element, ';')
                .into_iter()
                .find_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    key.trim().eq_ignore_ascii_case("for").then(|| value.trim())
                })
                .unwrap_or("")
        })
        .collect()
}

/// Splits `text` at `separator` outside double-quoted strings (RFC 7230 quoted-string, with
/// backslash escapes).
fn split_unquoted(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (at, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..at]);
                start = at + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// The IP address of one hop: `192.0.2.7`, `192.0.2.7:4711`, `2001:db8::7`, `[2001:db8::7]`,
/// `[2001:db8::7]:4711`, optionally double-quoted (`Forwarded` quotes IPv6 and ports). `None`
/// for anything else, such as RFC 7239's `unknown` and obfuscated `_names`.
fn hop_address(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    let hop = hop
        .strip_prefix('"')
        .and_then(|h| h.strip_suffix('"'))
        .unwrap_or(hop);
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(socket) = hop.parse::<SocketAddr>() {
        return Some(socket.ip().to_canonical());
    }
    let bracketed = hop.strip_prefix('[')?.strip_suffix(']')?;
    bracketed
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(|v6| IpAddr::V6(v6).to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const PROXY: &str = "10.0.0.5";

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(&["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()])
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn headers(lines: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn client_via_proxy(lines: &[(&'static str, &str)]) -> IpAddr {
        trusted().client(ip(PROXY), &headers(lines))
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let spoof = headers(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("forwarded", "for=198.51.100.7"),
        ]);
        assert_eq!(trusted().client(ip("192.0.2.1"), &spoof), ip("192.0.2.1"));
        let nobody = TrustedProxies::default();
        assert_eq!(nobody.client(ip(PROXY), &spoof), ip(PROXY));
    }

    #[test]
    fn a_trusted_peer_without_headers_is_the_client() {
        assert_eq!(client_via_proxy(&[]), ip(PROXY));
    }

    #[test]
    fn x_forwarded_for_gives_the_rightmost_untrusted_hop() {
        assert_eq!(
            client_via_proxy(&[("x-forwarded-for", "198.51.100.7")]),
            ip("198.51.100.7")
        );
        // The client wrote the first two; our proxies wrote the last two.
        assert_eq!(
            client_via_proxy(&[(
                "x-forwarded-for",
                "6.6.6.6, not-an-address, 198.51.100.7, 10.1.1.1"
            )]),
            ip("198.51.100.7")
        );
        // Several header lines are one list, in order.
        assert_eq!(
            client_via_proxy(&[
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-for", "203.0.113.9, 10.2.2.2"),
            ]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn hops_with_ports_brackets_and_mapped_addresses_are_read() {
        for (hop, want) in [
            ("198.51.100.7:4711", "198.51.100.7"),
            ("2001:db8::7", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
            ("[2001:db8::7]:4711", "2001:db8::7"),
            ("::ffff:198.51.100.7", "198.51.100.7"),
        ] {
            assert_eq!(
                client_via_proxy(&[("x-forwarded-for", hop)]),
                ip(want),
                "{hop}"
            );
        }
        let mapped_proxy = trusted().client(
            ip("::ffff:10.0.0.5"),
            &headers(&[("x-forwarded-for", "198.51.100.7")]),
        );
        assert_eq!(mapped_proxy, ip("198.51.100.7"));
    }

    #[test]
    fn forwarded_gives_the_rightmost_untrusted_for() {
        assert_eq!(
            client_via_proxy(&[("forwarded", "for=198.51.100.7;proto=https")]),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_via_proxy(&[(
                "forwarded",
                r#"for=6.6.6.6, for="[2001:db8:cafe::17]:4711";by=10.0.0.5, For="10.3.3.3""#
            )]),
            ip("2001:db8:cafe::17")
        );
        // A quoted comma does not split an element.
        assert_eq!(
            client_via_proxy(&[("forwarded", r#"for=198.51.100.7;host="a,b", for=10.3.3.3"#)]),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn every_hop_trusted_gives_the_leftmost() {
        assert_eq!(
            client_via_proxy(&[("x-forwarded-for", "10.9.9.9, 10.1.1.1")]),
            ip("10.9.9.9")
        );
    }

    #[test]
    fn doubtful_headers_fall_back_to_the_peer() {
        for lines in [
            vec![("x-forwarded-for", "garbage")],
            vec![("x-forwarded-for", "198.51.100.7, unknown")],
            vec![("x-forwarded-for", "")],
            vec![("forwarded", "for=unknown")],
            vec![("forwarded", "for=_hidden, for=10.1.1.1")],
            vec![("forwarded", "proto=https")],
            // The proxy appends to one header; the other, naming someone else, came from the
            // client.
            vec![
                ("x-forwarded-for", "198.51.100.7"),
                ("forwarded", "for=203.0.113.9"),
            ],
            vec![
                ("x-forwarded-for", "198.51.100.7"),
                ("forwarded", "for=garbage"),
            ],
        ] {
            assert_eq!(client_via_proxy(&lines), ip(PROXY), "{lines:?}");
        }
    }

    #[test]
    fn both_headers_naming_the_same_client_are_used() {
        assert_eq!(
            client_via_proxy(&[
                ("x-forwarded-for", "198.51.100.7"),
                ("forwarded", "for=198.51.100.7"),
            ]),
            ip("198.51.100.7")
        );
    }
}
