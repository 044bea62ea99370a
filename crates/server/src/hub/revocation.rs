//! Token revocation: the tokens an operator took back before they expire.
//!
//! Two kinds: one token by its `jti`, or every token of a user issued before a time
//! (its `iat`; a token without `iat` counts as issued before any time, so it is covered
//! too). A revocation is kept until `expires_at`, when the tokens it covers have all
//! expired: the operator gives it, or it is `--revocation-ttl` from now, so a
//! revocation never outlives the tokens it covers by more than the operator says.
//!
//! Every node holds the table in memory and checks it wherever a token is verified (a
//! WebSocket's connect, `refresh`, every HTTP API call), so a check costs a hash lookup
//! and never a round trip. The Redis engine keeps the table in one sorted set as well
//! (scored by expiry), loads it when its pub/sub connection comes up (at start and
//! after every reconnect, before the node reports ready again), and tells the other
//! nodes of each new revocation on its control channel. The table is bounded by
//! `--max-revocations`; a revocation past that is refused (`TOO_MANY_KEYS`) rather than
//! silently forgotten.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// What revocation looks at in a token: whose it is, its `jti`, and when it was
/// issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    pub user: &'a str,
    pub jti: Option<&'a str>,
    pub issued_at: Option<u64>,
}

/// The longest `jti` or user name a revocation may name.
pub const MAX_REVOKED_ID_BYTES: usize = 256;

/// One revocation. Times are seconds since the epoch, like a JWT's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Revocation {
    /// The token whose `jti` is this.
    #[serde(rename_all = "camelCase")]
    Token { jti: String, expires_at: u64 },
    /// Every token of `user` issued before `issued_before` (or without `iat`).
    #[serde(rename_all = "camelCase")]
    User { user: String, issued_before: u64, expires_at: u64 },
}

impl Revocation {
    pub fn expires_at(&self) -> u64 {
        match self {
            Revocation::Token { expires_at, .. } | Revocation::User { expires_at, .. } => *expires_at,
        }
    }

    /// Its member in the Redis engine's set: `jti:<id>` or `user:<name>`, and the cut
    /// for a user.
    pub fn member(&self) -> (String, Option<u64>) {
        match self {
            Revocation::Token { jti, .. } => (format!("jti:{jti}"), None),
            Revocation::User { user, issued_before, .. } => (format!("user:{user}"), Some(*issued_before)),
        }
    }

    /// The revocation a member of the Redis engine's set stands for.
    pub fn from_member(member: &str, expires_at: u64, cut: Option<u64>) -> Option<Revocation> {
        if let Some(jti) = member.strip_prefix("jti:") {
            return Some(Revocation::Token { jti: jti.to_owned(), expires_at });
        }
        let user = member.strip_prefix("user:")?;
        Some(Revocation::User { user: user.to_owned(), issued_before: cut?, expires_at })
    }

    pub fn set_expires_at(&mut self, at: u64) {
        match self {
            Revocation::Token { expires_at, .. } | Revocation::User { expires_at, .. } => *expires_at = at,
        }
    }

    /// Whether this revocation takes back `token`.
    pub fn covers(&self, token: Token<'_>) -> bool {
        match self {
            Revocation::Token { jti, .. } => token.jti == Some(jti.as_str()),
            Revocation::User { user, issued_before, .. } => {
                token.user == user && token.issued_at.is_none_or(|iat| iat < *issued_before)
            }
        }
    }
}

/// Why a revocation was not kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the node holds its limit of {0} revocations (--max-revocations)")]
pub struct Full(pub usize);

#[derive(Debug, Default)]
struct Table {
    /// `jti` → until when.
    tokens: HashMap<String, u64>,
    /// user → (issued before, until when): a later revocation of the same user widens
    /// both.
    users: HashMap<String, (u64, u64)>,
}

impl Table {
    fn len(&self) -> usize {
        self.tokens.len() + self.users.len()
    }
}

/// This node's revocations. See the module docs.
#[derive(Debug)]
pub struct Revocations {
    table: Mutex<Table>,
    max: usize,
}

impl Revocations {
    pub fn new(max: usize) -> Revocations {
        Revocations { table: Mutex::new(Table::default()), max }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps `revocation` until it expires (by `now`, seconds); one already expired is
    /// dropped. Refused only when the table is full and this revocation is new.
    pub fn add(&self, revocation: &Revocation, now: u64) -> Result<(), Full> {
        if revocation.expires_at() <= now {
            return Ok(());
        }
        let mut table = self.lock();
        let full = table.len() >= self.max;
        match revocation {
            Revocation::Token { jti, expires_at } => {
                if full && !table.tokens.contains_key(jti) {
                    return Err(Full(self.max));
                }
                let until = table.tokens.entry(jti.clone()).or_insert(0);
                *until = (*until).max(*expires_at);
            }
            Revocation::User { user, issued_before, expires_at } => {
                if full && !table.users.contains_key(user) {
                    return Err(Full(self.max));
                }
                let (before, until) = table.users.entry(user.clone()).or_insert((0, 0));
                *before = (*before).max(*issued_before);
                *until = (*until).max(*expires_at);
            }
        }
        Ok(())
    }

    /// Whether any revocation in force at `now` covers `token`.
    pub fn covers(&self, token: Token<'_>, now: u64) -> bool {
        let table = self.lock();
        let by_id = token.jti.and_then(|jti| table.tokens.get(jti)).is_some_and(|until| *until > now);
        by_id
            || table
                .users
                .get(token.user)
                .is_some_and(|(before, until)| *until > now && token.issued_at.is_none_or(|iat| iat < *before))
    }

    /// Forgets what expired by `now`; returns how many are left.
    pub fn sweep(&self, now: u64) -> usize {
        let mut table = self.lock();
        table.tokens.retain(|_, until| *until > now);
        table.users.retain(|_, (_, until)| *until > now);
        table.len()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant<'a>(user: &'a str, jti: Option<&'a str>, iat: Option<u64>) -> Token<'a> {
        Token { user, jti, issued_at: iat }
    }

    #[test]
    fn a_jti_revocation_covers_that_token_only_until_it_expires() {
        let table = Revocations::new(10);
        table.add(&Revocation::Token { jti: "t1".into(), expires_at: 100 }, 10).unwrap();
        assert!(table.covers(grant("alice", Some("t1"), Some(5)), 50));
        assert!(!table.covers(grant("alice", Some("t2"), Some(5)), 50));
        assert!(!table.covers(grant("alice", None, None), 50));
        assert!(!table.covers(grant("alice", Some("t1"), Some(5)), 100), "expired");
        assert_eq!(table.sweep(100), 0);
    }

    #[test]
    fn a_user_revocation_covers_tokens_issued_before_and_tokens_without_iat() {
        let table = Revocations::new(10);
        table.add(&Revocation::User { user: "bob".into(), issued_before: 40, expires_at: 100 }, 10).unwrap();
        assert!(table.covers(grant("bob", None, Some(39)), 50));
        assert!(table.covers(grant("bob", Some("x"), None), 50), "no iat: covered");
        assert!(!table.covers(grant("bob", None, Some(40)), 50), "issued at the cut: a new token");
        assert!(!table.covers(grant("carol", None, Some(1)), 50));
        // A later revocation widens the cut and the expiry.
        table.add(&Revocation::User { user: "bob".into(), issued_before: 60, expires_at: 200 }, 10).unwrap();
        assert!(table.covers(grant("bob", None, Some(59)), 150));
        let older = Revocation::User { user: "bob".into(), issued_before: 20, expires_at: 30 };
        table.add(&older, 10).unwrap();
        assert!(table.covers(grant("bob", None, Some(59)), 150), "an older one never narrows it");
    }

    #[test]
    fn the_table_is_bounded_and_refuses_new_entries_when_full() {
        let table = Revocations::new(2);
        table.add(&Revocation::Token { jti: "a".into(), expires_at: 100 }, 0).unwrap();
        table.add(&Revocation::User { user: "u".into(), issued_before: 5, expires_at: 100 }, 0).unwrap();
        assert_eq!(table.add(&Revocation::Token { jti: "b".into(), expires_at: 100 }, 0), Err(Full(2)));
        // Renewing one it holds is fine, and an expired one costs nothing.
        table.add(&Revocation::Token { jti: "a".into(), expires_at: 200 }, 0).unwrap();
        table.add(&Revocation::Token { jti: "c".into(), expires_at: 5 }, 10).unwrap();
        assert_eq!(table.len(), 2);
        assert_eq!(table.sweep(150), 1);
        table.add(&Revocation::Token { jti: "b".into(), expires_at: 300 }, 150).unwrap();
    }

    #[test]
    fn revocations_round_trip_through_their_redis_members() {
        for revocation in [
            Revocation::Token { jti: "t:1".into(), expires_at: 9 },
            Revocation::User { user: "user:x".into(), issued_before: 3, expires_at: 9 },
        ] {
            let (member, cut) = revocation.member();
            assert_eq!(Revocation::from_member(&member, 9, cut), Some(revocation));
        }
        assert_eq!(Revocation::from_member("user:u", 9, None), None, "a user without its cut");
        assert_eq!(Revocation::from_member("other", 9, None), None);
    }

    #[test]
    fn revocations_travel_as_json() {
        for revocation in [
            Revocation::Token { jti: "t".into(), expires_at: 9 },
            Revocation::User { user: "u".into(), issued_before: 3, expires_at: 9 },
        ] {
            let text = serde_json::to_string(&revocation).unwrap();
            assert_eq!(serde_json::from_str::<Revocation>(&text).unwrap(), revocation, "{text}");
        }
    }
}
