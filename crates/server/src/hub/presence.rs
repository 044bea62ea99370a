//! Presence: who is subscribed to a channel, and how many.
//!
//! Nothing is written when a client subscribes: presence is read from what the node
//! holds anyway, the engine's local subscribers of the channel (connection ids) mapped
//! to users by the session registry, when an operator asks (`GET /api/presence`). A
//! channel with thousands of subscribers costs one pass over them per question, and
//! nothing at all in between. With the Redis engine the asking node puts the question
//! on the control channel; every other node answers with its own part on a Redis list
//! made for that question, and the asking node merges what arrives within
//! [`ANSWER_WINDOW`] (saying how many of the nodes that heard the question answered).
//!
//! Join and leave messages are separate: for channels configured with
//! `--presence-events`, a subscription's start and end are published on the channel
//! itself as `presence.join` / `presence.leave` publications (`{user, connection}`),
//! numbered and kept in history like any other, so a subscriber that recovers after a
//! reconnect misses none. Those types are reserved: no publisher can forge them. They
//! do not draw on the channel's publish rate (a client cannot spend its publishers'
//! budget): each connection pays for them instead, two per subscription to such a
//! channel, from `--presence-joins-per-minute`, and a subscribe past it is refused.
//! A connection that ends with its node (a crash) leaves no `presence.leave`: the
//! presence API is the authoritative answer of who is there.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The most users one node lists for a channel; past it the list is cut
/// (`truncated: true`) and the counts stay exact for connections.
pub const MAX_PRESENCE_USERS: usize = 10_000;

/// Join and leave publications waiting to be published, the node's connections
/// together.
pub const EVENT_BACKLOG: usize = 4096;

/// How long the asking node waits for the other nodes' answers.
pub const ANSWER_WINDOW: Duration = Duration::from_secs(1);

/// One node's part of a channel's presence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePresence {
    pub node: String,
    /// Connections subscribed.
    pub connections: u64,
    /// Distinct users among them.
    pub users: u64,
    /// Each user and their connections, by user name; at most [`MAX_PRESENCE_USERS`].
    pub by_user: Vec<(String, u64)>,
    /// More users than [`MAX_PRESENCE_USERS`] were subscribed.
    pub truncated: bool,
}

impl NodePresence {
    /// Presence from each subscribed connection's user (`None` for a connection that
    /// is closing and no longer registered).
    pub fn of(node: &str, users: impl IntoIterator<Item = Option<String>>) -> NodePresence {
        let mut counts: HashMap<String, u64> = HashMap::new();
        let mut connections = 0;
        for user in users.into_iter().flatten() {
            connections += 1;
            *counts.entry(user).or_insert(0) += 1;
        }
        let distinct = counts.len() as u64;
        let mut by_user: Vec<(String, u64)> = counts.into_iter().collect();
        by_user.sort_unstable();
        let truncated = by_user.len() > MAX_PRESENCE_USERS;
        by_user.truncate(MAX_PRESENCE_USERS);
        NodePresence { node: node.to_owned(), connections, users: distinct, by_user, truncated }
    }
}

/// What the other nodes answered, and how many were asked.
#[derive(Debug, Clone, Default)]
pub struct Gathered {
    pub answers: Vec<NodePresence>,
    pub asked: usize,
}

/// A user as `GET /api/presence` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserPresence {
    pub user: String,
    pub connections: u64,
}

/// A channel's presence across the cluster (`GET /api/presence`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub channel: String,
    /// Connections subscribed, every node together.
    pub connections: u64,
    /// Distinct users (a lower bound when `truncated`).
    pub users: u64,
    /// Each user and their connections, by name (absent when only counts were asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence: Option<Vec<UserPresence>>,
    /// Nodes counted (this one and those that answered in time).
    pub nodes: usize,
    /// Every node that heard the question answered.
    pub complete: bool,
    /// A node had more users than it lists.
    pub truncated: bool,
}

impl Report {
    /// Merges this node's part with the others' answers.
    pub fn merge(channel: &str, here: NodePresence, gathered: Gathered, list_users: bool) -> Report {
        let answered = gathered.answers.len();
        let parts: Vec<NodePresence> = std::iter::once(here).chain(gathered.answers).collect();
        let connections = parts.iter().map(|p| p.connections).sum();
        let truncated = parts.iter().any(|p| p.truncated);
        let mut users: HashMap<&str, u64> = HashMap::new();
        for (user, count) in parts.iter().flat_map(|p| p.by_user.iter()) {
            *users.entry(user).or_insert(0) += count;
        }
        // With one node the distinct count is exact even when its list is cut.
        let distinct = if parts.len() == 1 { parts[0].users } else { users.len() as u64 };
        let presence = list_users.then(|| {
            let mut list: Vec<UserPresence> = users
                .into_iter()
                .map(|(user, connections)| UserPresence { user: user.to_owned(), connections })
                .collect();
            list.sort_unstable_by(|a, b| a.user.cmp(&b.user));
            list.truncate(MAX_PRESENCE_USERS);
            list
        });
        Report {
            channel: channel.to_owned(),
            connections,
            users: distinct,
            presence,
            nodes: parts.len(),
            complete: answered >= gathered.asked,
            truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(users: &[&str]) -> Vec<Option<String>> {
        users.iter().map(|u| Some((*u).to_owned())).collect()
    }

    #[test]
    fn a_node_counts_connections_per_user() {
        let mut users = some(&["bob", "alice", "bob"]);
        users.push(None);
        let part = NodePresence::of("n1", users);
        assert_eq!(part.connections, 3);
        assert_eq!(part.users, 2);
        assert_eq!(part.by_user, vec![("alice".to_owned(), 1), ("bob".to_owned(), 2)]);
        assert!(!part.truncated);
    }

    #[test]
    fn parts_merge_by_user_and_say_whether_every_node_answered() {
        let here = NodePresence::of("n1", some(&["alice", "bob"]));
        let there = NodePresence::of("n2", some(&["bob", "carol", "carol"]));
        let report = Report::merge("c", here.clone(), Gathered { answers: vec![there], asked: 2 }, true);
        assert_eq!((report.connections, report.users, report.nodes), (5, 3, 2));
        assert!(!report.complete, "one of two nodes answered");
        let listed: Vec<(&str, u64)> =
            report.presence.as_ref().unwrap().iter().map(|p| (p.user.as_str(), p.connections)).collect();
        assert_eq!(listed, vec![("alice", 1), ("bob", 2), ("carol", 2)]);
        let counts = Report::merge("c", here, Gathered::default(), false);
        assert!(counts.complete && counts.presence.is_none());
        assert_eq!((counts.connections, counts.users), (2, 2));
    }

    #[test]
    fn a_long_list_is_cut_and_says_so() {
        let names: Vec<String> = (0..MAX_PRESENCE_USERS + 5).map(|i| format!("u{i:06}")).collect();
        let part = NodePresence::of("n", names.iter().cloned().map(Some));
        assert!(part.truncated);
        assert_eq!(part.by_user.len(), MAX_PRESENCE_USERS);
        assert_eq!(part.users as usize, MAX_PRESENCE_USERS + 5);
        let report = Report::merge("c", part, Gathered::default(), true);
        assert!(report.truncated);
        assert_eq!(report.users as usize, MAX_PRESENCE_USERS + 5);
    }
}
