//! Which web pages may talk to the node: the Origin check of the WebSocket handshake,
//! and the Host check that keeps DNS rebinding away from a node on loopback.
//!
//! An origin is a scheme, a host and a port; all three must match. A page is allowed
//! when its origin is in `--allowed-origins` (or that list is `*`), or when it is the
//! node's own origin: the `Host` the request was sent to, with the scheme the node is
//! reached by (`http`, or what a trusted proxy says in `X-Forwarded-Proto`) and that
//! scheme's default port when none is written. Requests without an Origin are not from
//! browsers and are not subject to this check.
//!
//! DNS rebinding defeats any same-origin rule built on `Host`: an attacker's page at
//! `http://evil.example:7999` whose name is made to resolve to 127.0.0.1 is "same origin"
//! with the node by its own `Host` header. A node that listens only on loopback is meant
//! for this machine, so it answers only requests whose `Host` names loopback
//! (`localhost`, `*.localhost`, a 127.0.0.0/8 address or `[::1]`); others get 403.

use std::net::IpAddr;

use axum::http::{HeaderMap, header};

use crate::hub::Hub;

/// An origin: scheme, host and port, normalized (lowercase, default ports filled in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// `http` and `ws` (and `https` and `wss`) name the same kind of transport.
fn web_scheme(scheme: &str) -> &str {
    match scheme {
        "ws" => "http",
        "wss" => "https",
        other => other,
    }
}

/// Splits `host[:port]` (with `[v6]` brackets kept on the host).
fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    if authority.is_empty() || authority.contains(['/', '@', '?', '#', ' ']) {
        return None;
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        let host = &authority[..inner.len() + 2];
        return match after {
            "" => Some((host, None)),
            port => Some((host, Some(port.strip_prefix(':')?.parse().ok()?))),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => Some((host, Some(port.parse().ok()?))),
        Some(_) => None,
        None => Some((authority, None)),
    }
}

impl Origin {
    /// Reads `scheme://host[:port]` (a trailing `/` is tolerated, nothing else).
    pub fn parse(text: &str) -> Option<Origin> {
        let (scheme, rest) = text.trim().split_once("://")?;
        let scheme = web_scheme(&scheme.to_ascii_lowercase()).to_owned();
        let (host, port) = split_authority(rest.strip_suffix('/').unwrap_or(rest))?;
        let port = port.or_else(|| default_port(&scheme))?;
        Some(Origin { scheme, host: host.to_ascii_lowercase(), port })
    }

    /// The origin a request was sent to: its `Host` with `scheme`.
    fn of_request(scheme: &str, host: &str) -> Option<Origin> {
        let scheme = web_scheme(&scheme.to_ascii_lowercase()).to_owned();
        let (host, port) = split_authority(host)?;
        let port = port.or_else(|| default_port(&scheme))?;
        Some(Origin { scheme, host: host.to_ascii_lowercase(), port })
    }
}

/// The scheme clients use to reach the node: `http`, unless a trusted proxy in front
/// says otherwise in `X-Forwarded-Proto`.
fn request_scheme(hub: &Hub, peer: Option<IpAddr>, headers: &HeaderMap) -> String {
    let trusted = peer.is_some_and(|peer| hub.config().is_trusted_proxy(peer));
    let forwarded = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).and_then(|v| v.split(',').next());
    match forwarded {
        Some(proto) if trusted => proto.trim().to_ascii_lowercase(),
        _ => "http".to_owned(),
    }
}

/// Whether a WebSocket handshake's Origin may connect (see the module docs).
pub fn allowed(hub: &Hub, peer: Option<IpAddr>, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let Some(origin) = origin.to_str().ok().and_then(Origin::parse) else { return false };
    let listed = &hub.config().allowed_origins;
    if listed.iter().any(|entry| entry == "*" || Origin::parse(entry).as_ref() == Some(&origin)) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    Origin::of_request(&request_scheme(hub, peer, headers), host).is_some_and(|own| own == origin)
}

/// Whether a `Host` header names this machine's loopback.
pub fn is_loopback_host(host: &str) -> bool {
    let Some((name, _)) = split_authority(host) else { return false };
    let name = name.to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    let bare = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(&name);
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let o = |t: &str| Origin::parse(t);
        assert_eq!(o("https://desk.example"), o("https://DESK.example:443/"));
        assert_eq!(o("http://h:7999"), Origin::of_request("ws", "h:7999"));
        assert_ne!(o("https://h:7999"), Origin::of_request("http", "h:7999"), "scheme");
        assert_ne!(o("http://h:8000"), Origin::of_request("http", "h:7999"), "port");
        assert_ne!(o("http://h"), Origin::of_request("http", "h:7999"), "default port");
        assert_eq!(o("http://[::1]:80"), Origin::of_request("http", "[::1]"));
        for bad in ["null", "desk.example", "http://", "http://a:b", "http://a/b", "http://u@h", "ftp://h"] {
            assert_eq!(o(bad), None, "{bad}");
        }
    }

    #[test]
    fn loopback_hosts() {
        for host in
            ["localhost", "localhost:7999", "app.localhost", "127.0.0.1:7999", "127.9.9.9", "[::1]:7999", "[::1]"]
        {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["evil.example:7999", "10.0.0.1", "localhost.evil.example", "", "[::2]"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
