//! Operator control of live connections: the node's registry of sessions by connection
//! and user, and the orders an operator gives them (end the connection, leave a
//! channel).
//!
//! An order is handed to a connection through its outbox ([`Outbox::order`]), which
//! wakes the connection's IO loop; the loop carries it out as it would a command of the
//! client's own (closing with the code, or unsubscribing with an `unsubscribed` that
//! carries a code, so the client does not subscribe again by itself). Nothing here
//! touches a socket, and giving an order never waits for a client.
//!
//! The registry holds one entry per connection of this node (a user name and a weak
//! pointer); an order addresses a user's connections or one connection by the id its
//! `connected` message gave it. The node that receives an order gives it to its own
//! connections and hands it to the engine, which tells the other nodes (the Redis
//! engine on its control channel, as a [`Broadcast`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use serde::{Deserialize, Serialize};
use tidewire_protocol::CloseCode;

use super::outbox::Outbox;
use super::revocation::{Revocation, Token};
use crate::auth::Grant;

/// What an operator asks of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "order", rename_all = "lowercase")]
pub enum Order {
    /// Close with `code` (`DISCONNECTED` or `REVOKED`) and `reason`.
    Disconnect { code: CloseCode, reason: String },
    /// Leave `channel`, telling the client why; it does not subscribe again by itself.
    Unsubscribe { channel: String, reason: String },
}

/// Which connections an order is for: a user's, or one connection (its id as
/// `connected.connectionId` gave it), or one connection of a user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub user: Option<String>,
    pub connection: Option<String>,
}

/// What the registry shows of a live connection, shared with its session, which
/// keeps it current: when and from where it connected, its channels, and what it was
/// sent.
#[derive(Debug)]
pub struct SessionView {
    pub connected_at: tidewire_protocol::Timestamp,
    pub address: Option<std::net::IpAddr>,
    pub frames: std::sync::atomic::AtomicU64,
    pub messages: std::sync::atomic::AtomicU64,
    pub bytes: std::sync::atomic::AtomicU64,
    pub gaps: std::sync::atomic::AtomicU64,
    channels: Mutex<Vec<Arc<str>>>,
    /// Frames not yet told to a watcher (see [`super::trace::FRAME_EVENT_INTERVAL`]).
    frame_tally: Mutex<super::trace::FrameTally>,
}

impl SessionView {
    pub fn new(address: Option<std::net::IpAddr>) -> SessionView {
        SessionView {
            connected_at: super::now_timestamp(),
            address,
            frames: Default::default(),
            messages: Default::default(),
            bytes: Default::default(),
            gaps: Default::default(),
            channels: Mutex::new(Vec::new()),
            frame_tally: Mutex::default(),
        }
    }

    pub fn frame_tally(&self) -> std::sync::MutexGuard<'_, super::trace::FrameTally> {
        self.frame_tally.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn channels(&self) -> std::sync::MutexGuard<'_, Vec<Arc<str>>> {
        self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The connection subscribed to `channel` (the name its subscriptions hold, shared).
    pub fn subscribed(&self, channel: Arc<str>) {
        let mut channels = self.channels();
        if !channels.contains(&channel) {
            channels.push(channel);
        }
    }

    pub fn unsubscribed(&self, channel: &str) {
        self.channels().retain(|c| &**c != channel);
    }

    /// A frame of `messages` messages and `bytes` bytes went out, with `gaps` drops.
    pub fn sent(&self, messages: u64, bytes: u64, gaps: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.frames.fetch_add(1, Relaxed);
        self.messages.fetch_add(messages, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
        self.gaps.fetch_add(gaps, Relaxed);
    }
}

/// The most connections one node lists in detail, and users in a summary.
pub const MAX_LISTED: usize = 1000;

/// A connection as `GET /api/connections?user=` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionInfo {
    pub connection: String,
    pub user: String,
    pub node: String,
    pub connected_at: tidewire_protocol::Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    pub channels: Vec<String>,
    pub frames: u64,
    pub messages: u64,
    pub bytes: u64,
    pub gaps: u64,
    pub queued_bytes: u64,
}

/// One node's connections: the count, each user with their count (most first), and
/// when asked for one user, that user's connections in detail.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConnections {
    pub node: String,
    pub connections: u64,
    pub users: Vec<(String, u64)>,
    pub detail: Vec<ConnectionInfo>,
    pub truncated: bool,
}

/// A connection as a listing copies it out of the registry: its number, user, view
/// (for the user asked about) and outbox.
type Listed = (u64, Arc<str>, Option<Arc<SessionView>>, Weak<Outbox>);

#[derive(Debug)]
struct Entry {
    user: Arc<str>,
    /// The token as revocation sees it (see [`Entry::token`]): its `jti`, when it was
    /// issued and when it expires; the channel grants are the session's.
    jti: Option<Box<str>>,
    issued_at: Option<u64>,
    expires_at: u64,
    outbox: Weak<Outbox>,
    view: Arc<SessionView>,
}

impl Entry {
    fn new(grant: &Grant, outbox: &Arc<Outbox>, view: &Arc<SessionView>) -> Entry {
        Entry {
            user: grant.user.as_str().into(),
            jti: grant.token_id.as_deref().map(Into::into),
            issued_at: grant.issued_at,
            expires_at: grant.expires_at,
            outbox: Arc::downgrade(outbox),
            view: view.clone(),
        }
    }

    fn token(&self) -> Token<'_> {
        Token { user: &self.user, jti: self.jti.as_deref(), issued_at: self.issued_at }
    }
}

/// One node as the operator sees it (`GET /api/info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    /// The node's run (the prefix of its connections' ids).
    pub id: String,
    pub version: String,
    /// `memory` or `redis`.
    pub engine: String,
    pub started_at: tidewire_protocol::Timestamp,
    pub uptime_seconds: u64,
    pub connections: u64,
    pub subscriptions: u64,
    pub channels: u64,
    pub draining: bool,
}

/// What one node tells the others on the Redis engine's control channel, with the node
/// it comes from, so that node does not act on it twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Broadcast {
    pub from: String,
    #[serde(flatten)]
    pub notice: Notice,
}

/// See [`Broadcast`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "notice", rename_all = "lowercase")]
pub enum Notice {
    /// Give `order` to the connections `target` names.
    Order { target: Target, order: Order },
    /// Keep `revocation` and end the connections it covers.
    Revoke { revocation: Revocation },
    /// Answer `question` by pushing the answer onto the Redis list `reply`.
    Ask { reply: String, question: Question },
    /// An operator on the sending node watches `user`: send their trace events out
    /// for a while (see [`super::trace`]).
    Trace { user: String },
}

/// What a node asks every other node (see [`Notice::Ask`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "question", rename_all = "lowercase")]
pub enum Question {
    /// Who is subscribed to `channel` on your node.
    Presence { channel: String },
    /// Your connections (see [`NodeConnections`]).
    Connections { user: Option<String> },
}

/// This node's sessions. See the module docs.
#[derive(Debug, Default)]
pub struct Sessions {
    entries: Mutex<HashMap<u64, Entry>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn register(&self, id: u64, grant: &Grant, outbox: &Arc<Outbox>, view: &Arc<SessionView>) {
        self.lock().insert(id, Entry::new(grant, outbox, view));
    }

    /// This node's connections: every user with their count (most first, at most
    /// [`MAX_LISTED`]), and with `user`, that user's connections in detail.
    pub fn list(&self, node: &str, user: Option<&str>, label: impl Fn(u64) -> String) -> NodeConnections {
        // Only pointers are copied under the registry's lock: the counting, sorting and
        // reading of each connection happen outside it, so connects never wait on a
        // listing.
        let (total, snapshot): (usize, Vec<Listed>) = {
            let entries = self.lock();
            let snapshot = entries
                .iter()
                .map(|(id, entry)| {
                    let mine = user.is_some_and(|u| *entry.user == *u);
                    (*id, entry.user.clone(), mine.then(|| entry.view.clone()), entry.outbox.clone())
                })
                .collect();
            (entries.len(), snapshot)
        };
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for (_, name, ..) in &snapshot {
            *counts.entry(name).or_insert(0) += 1;
        }
        let mut users: Vec<(String, u64)> = counts.into_iter().map(|(u, n)| (u.to_owned(), n)).collect();
        users.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut truncated = users.len() > MAX_LISTED;
        users.truncate(MAX_LISTED);
        let mut detail = Vec::new();
        for (id, name, view, outbox) in &snapshot {
            use std::sync::atomic::Ordering::Relaxed;
            let Some(view) = view else { continue };
            if detail.len() >= MAX_LISTED {
                truncated = true;
                break;
            }
            detail.push(ConnectionInfo {
                connection: label(*id),
                user: name.to_string(),
                node: node.to_owned(),
                connected_at: view.connected_at,
                address: view.address.map(|a| a.to_string()),
                channels: view.channels().iter().map(|c| c.to_string()).collect(),
                frames: view.frames.load(Relaxed),
                messages: view.messages.load(Relaxed),
                bytes: view.bytes.load(Relaxed),
                gaps: view.gaps.load(Relaxed),
                queued_bytes: outbox.upgrade().map_or(0, |o| o.bytes() as u64),
            });
        }
        detail.sort_unstable_by(|a, b| a.connection.cmp(&b.connection));
        NodeConnections { node: node.to_owned(), connections: total as u64, users, detail, truncated }
    }

    /// The connection refreshed its token.
    pub fn renew(&self, id: u64, grant: &Grant) {
        if let Some(entry) = self.lock().get_mut(&id) {
            (entry.jti, entry.issued_at, entry.expires_at) =
                (grant.token_id.as_deref().map(Into::into), grant.issued_at, grant.expires_at);
        }
    }

    /// Ends the connections whose token `revocation` covers, with `REVOKED`; returns
    /// how many took the order.
    pub fn revoke(&self, revocation: &Revocation) -> usize {
        let outboxes: Vec<Arc<Outbox>> = self
            .lock()
            .values()
            .filter(|entry| revocation.covers(entry.token()))
            .filter_map(|entry| entry.outbox.upgrade())
            .collect();
        let order = Order::Disconnect { code: CloseCode::REVOKED, reason: "token revoked by an operator".to_owned() };
        outboxes.iter().filter(|outbox| outbox.order(order.clone())).count()
    }

    pub fn unregister(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Gives `order` to the connections of this node that `target` names (`label`
    /// turns a connection's number into its id); returns how many took it.
    pub fn order(&self, target: &Target, order: &Order, label: impl Fn(u64) -> String) -> usize {
        let outboxes: Vec<Arc<Outbox>> = self
            .lock()
            .iter()
            .filter(|(_, entry)| target.user.as_deref().is_none_or(|user| *entry.user == *user))
            .filter(|(id, _)| target.connection.as_deref().is_none_or(|wanted| label(**id) == wanted))
            .filter_map(|(_, entry)| entry.outbox.upgrade())
            .collect();
        outboxes.iter().filter(|outbox| outbox.order(order.clone())).count()
    }

    /// The latest expiry among the live tokens `revocation` covers.
    pub fn latest_expiry_covered(&self, revocation: &Revocation) -> Option<u64> {
        self.lock().values().filter(|e| revocation.covers(e.token())).map(|e| e.expires_at).max()
    }

    /// Ends the connections whose token any revocation in `table` covers (after a node
    /// read revocations it may have missed); returns how many took the order.
    pub fn end_revoked(&self, table: &super::revocation::Revocations, now: u64) -> usize {
        if table.is_empty() {
            return 0;
        }
        let outboxes: Vec<Arc<Outbox>> = self
            .lock()
            .values()
            .filter(|entry| table.covers(entry.token(), now))
            .filter_map(|entry| entry.outbox.upgrade())
            .collect();
        let order = Order::Disconnect { code: CloseCode::REVOKED, reason: "token revoked by an operator".to_owned() };
        outboxes.iter().filter(|outbox| outbox.order(order.clone())).count()
    }

    /// The user of each connection, `None` for one no longer registered.
    pub fn users_of(&self, ids: &[u64]) -> Vec<Option<String>> {
        let entries = self.lock();
        ids.iter().map(|id| entries.get(id).map(|entry| entry.user.to_string())).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
