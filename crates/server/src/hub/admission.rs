//! Who may hold a connection: the node's counts of WebSocket sessions (in total, per
//! user, per client address) and of plain HTTP connections (in total and per peer
//! address), each with a guard that gives the place back when dropped.
//!
//! Two layers, because they see different things. Every TCP connection starts as an
//! HTTP connection, counted from accept until it closes or becomes a WebSocket; that
//! bounds what unauthenticated peers can hold open (handshakes, idle keep-alives,
//! stalled requests) before anything about them is known. A WebSocket is then counted as
//! a session of its token's user and of its client's address, which behind a trusted
//! proxy is the address the proxy reports, not the proxy's.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::engine::Shared;
use super::lock;

/// Counts per key, with entries removed at zero so the map holds only live keys.
#[derive(Debug)]
struct Counts<K>(Mutex<HashMap<K, usize>>);

impl<K: Hash + Eq> Counts<K> {
    fn new() -> Counts<K> {
        Counts(Mutex::new(HashMap::new()))
    }

    fn release(map: &mut HashMap<K, usize>, key: &K) {
        if let Some(count) = map.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                map.remove(key);
            }
        }
    }
}

/// The node's admission state.
#[derive(Debug)]
pub struct Admission {
    users: Counts<String>,
    addresses: Counts<IpAddr>,
    sessions: AtomicUsize,
    next_session: AtomicU64,
    http_peers: Counts<IpAddr>,
    http: AtomicUsize,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Node,
    User,
    /// `--max-anonymous-connections`.
    Anonymous,
    Address,
}

impl Refusal {
    /// The limit's name in logs and in `tidewire_connections_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Node => "node",
            Refusal::User => "user",
            Refusal::Anonymous => "anonymous",
            Refusal::Address => "address",
        }
    }
}

impl Default for Admission {
    fn default() -> Admission {
        Admission::new()
    }
}

impl Admission {
    pub fn new() -> Admission {
        Admission {
            users: Counts::new(),
            addresses: Counts::new(),
            sessions: AtomicUsize::new(0),
            next_session: AtomicU64::new(1),
            http_peers: Counts::new(),
            http: AtomicUsize::new(0),
        }
    }

    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::SeqCst)
    }

    /// Open HTTP connections that are not (yet) WebSockets.
    pub fn http_connections(&self) -> usize {
        self.http.load(Ordering::SeqCst)
    }

    /// Admits a WebSocket session within the node's, the user's and the address's limits.
    pub(super) fn admit_session(
        this: &Arc<Admission>,
        shared: &Arc<Shared>,
        user: &str,
        address: Option<IpAddr>,
    ) -> Result<SessionSlot, Refusal> {
        let config = &shared.config;
        let mut users = lock(&this.users.0);
        let mut addresses = lock(&this.addresses.0);
        if this.sessions.load(Ordering::SeqCst) >= config.max_connections {
            return Err(Refusal::Node);
        }
        // Connections without a token share the empty user and its own limit.
        let per_user = if user.is_empty() { config.max_anonymous_connections } else { config.max_connections_per_user };
        if users.get(user).is_some_and(|&n| n >= per_user) {
            return Err(if user.is_empty() { Refusal::Anonymous } else { Refusal::User });
        }
        if let Some(ip) = address {
            if addresses.get(&ip).is_some_and(|&n| n >= config.max_connections_per_ip) {
                return Err(Refusal::Address);
            }
            *addresses.entry(ip).or_insert(0) += 1;
        }
        *users.entry(user.to_owned()).or_insert(0) += 1;
        this.sessions.fetch_add(1, Ordering::SeqCst);
        shared.metrics.connections.inc();
        shared.metrics.connections_total.inc();
        let id = this.next_session.fetch_add(1, Ordering::Relaxed);
        Ok(SessionSlot { admission: this.clone(), shared: shared.clone(), user: user.to_owned(), address, id })
    }

    /// Admits an HTTP connection from `peer` within `--max-http-connections` and, unless
    /// the peer is a trusted proxy (which speaks for many clients),
    /// `--max-http-connections-per-ip`.
    pub(super) fn admit_http(this: &Arc<Admission>, shared: &Arc<Shared>, peer: IpAddr) -> Result<HttpSlot, Refusal> {
        let config = &shared.config;
        let mut peers = lock(&this.http_peers.0);
        if this.http.load(Ordering::SeqCst) >= config.max_http_connections {
            return Err(Refusal::Node);
        }
        let counted = !config.is_trusted_proxy(peer);
        if counted {
            if peers.get(&peer).is_some_and(|&n| n >= config.max_http_connections_per_ip) {
                return Err(Refusal::Address);
            }
            *peers.entry(peer).or_insert(0) += 1;
        }
        this.http.fetch_add(1, Ordering::SeqCst);
        shared.metrics.http_connections.inc();
        Ok(HttpSlot { admission: this.clone(), shared: shared.clone(), peer: counted.then_some(peer) })
    }
}

/// A WebSocket session's place in the node's limits; dropping it frees the place.
#[derive(Debug)]
pub struct SessionSlot {
    admission: Arc<Admission>,
    shared: Arc<Shared>,
    user: String,
    address: Option<IpAddr>,
    pub id: u64,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let admission = &self.admission;
        let mut users = lock(&admission.users.0);
        let mut addresses = lock(&admission.addresses.0);
        Counts::release(&mut users, &self.user);
        if let Some(ip) = &self.address {
            Counts::release(&mut addresses, ip);
        }
        admission.sessions.fetch_sub(1, Ordering::SeqCst);
        self.shared.metrics.connections.dec();
    }
}

/// An HTTP connection's place, shared with the requests it carries: a request that
/// becomes a long-lived session (an HTTP stream) takes it, and gives it back once the
/// session holds a place of its own, as an upgraded WebSocket does. Such a response
/// closes its connection when it ends, so the connection is never uncounted while idle.
#[derive(Debug, Clone)]
pub struct HttpPlace(Arc<Mutex<Option<HttpSlot>>>);

impl HttpPlace {
    pub fn new(slot: HttpSlot) -> HttpPlace {
        HttpPlace(Arc::new(Mutex::new(Some(slot))))
    }

    /// The connection's place, if no request took it yet.
    pub fn take(&self) -> Option<HttpSlot> {
        lock(&self.0).take()
    }
}

/// An HTTP connection's place; held from accept until it closes or is upgraded.
#[derive(Debug)]
pub struct HttpSlot {
    admission: Arc<Admission>,
    shared: Arc<Shared>,
    peer: Option<IpAddr>,
}

impl Drop for HttpSlot {
    fn drop(&mut self) {
        let mut peers = lock(&self.admission.http_peers.0);
        if let Some(peer) = &self.peer {
            Counts::release(&mut peers, peer);
        }
        self.admission.http.fetch_sub(1, Ordering::SeqCst);
        self.shared.metrics.http_connections.dec();
    }
}
