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
use super::revocation::Revocation;
use crate::auth::Grant;

/// What revocation needs of a grant: who, and which token.
fn token_of(grant: &Grant) -> Grant {
    Grant {
        user: grant.user.clone(),
        subscribe: None,
        publish: None,
        expires_at: grant.expires_at,
        operator: grant.operator,
        subscriptions: Vec::new(),
        token_id: grant.token_id.clone(),
        issued_at: grant.issued_at,
    }
}

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

#[derive(Debug)]
struct Entry {
    /// The connection's token as revocation sees it (its user, `jti` and `iat`; the
    /// channel grants are left out).
    token: Grant,
    outbox: Weak<Outbox>,
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
}

/// What a node asks every other node (see [`Notice::Ask`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "question", rename_all = "lowercase")]
pub enum Question {
    /// Who is subscribed to `channel` on your node.
    Presence { channel: String },
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

    pub fn register(&self, id: u64, grant: &Grant, outbox: &Arc<Outbox>) {
        self.lock().insert(id, Entry { token: token_of(grant), outbox: Arc::downgrade(outbox) });
    }

    /// The connection refreshed its token.
    pub fn renew(&self, id: u64, grant: &Grant) {
        if let Some(entry) = self.lock().get_mut(&id) {
            entry.token = token_of(grant);
        }
    }

    /// Ends the connections whose token `revocation` covers, with `REVOKED`; returns
    /// how many took the order.
    pub fn revoke(&self, revocation: &Revocation) -> usize {
        let outboxes: Vec<Arc<Outbox>> = self
            .lock()
            .values()
            .filter(|entry| revocation.covers(&entry.token))
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
            .filter(|(_, entry)| target.user.as_deref().is_none_or(|user| entry.token.user == user))
            .filter(|(id, _)| target.connection.as_deref().is_none_or(|wanted| label(**id) == wanted))
            .filter_map(|(_, entry)| entry.outbox.upgrade())
            .collect();
        outboxes.iter().filter(|outbox| outbox.order(order.clone())).count()
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
            .filter(|entry| table.covers(&entry.token, now))
            .filter_map(|entry| entry.outbox.upgrade())
            .collect();
        let order = Order::Disconnect { code: CloseCode::REVOKED, reason: "token revoked by an operator".to_owned() };
        outboxes.iter().filter(|outbox| outbox.order(order.clone())).count()
    }

    /// The user of each connection, `None` for one no longer registered.
    pub fn users_of(&self, ids: &[u64]) -> Vec<Option<String>> {
        let entries = self.lock();
        ids.iter().map(|id| entries.get(id).map(|entry| entry.token.user.clone())).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
