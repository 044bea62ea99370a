//! Channel names, the patterns tokens grant, and who may subscribe or publish where.
//!
//! These are pure functions so the server, the client (to reject a bad name before it
//! travels) and the fuzzers all apply the same rules.
//!
//! - A **name** is 1..=255 characters from `A–Z a–z 0–9 - _ . : @ / = +`, plus at most
//!   one `#`. Names are ASCII, so characters and bytes agree.
//! - A name with a `#` is **user-scoped**: `trading#alice` belongs to user `alice`, and
//!   only a connection whose token subject is `alice` may subscribe to it. Both sides of
//!   the `#` must be non-empty.
//! - A **pattern** (in a token's `channels` or `publish` claim) is a name, or a prefix
//!   followed by a single trailing `*`: `lp-*` matches `lp-performance`, `*` matches
//!   everything. No other wildcard exists, so matching is a prefix comparison.
//! - **Subscribe**: a user-scoped channel needs the owner to be the subscriber; then, if
//!   the token has a `channels` claim, a pattern must match. Without the claim every
//!   shared channel (and the user's own channels) is allowed.
//! - **Publish**: needs a `publish` claim with a matching pattern; without it, nothing.
//!   Owners are not checked, since publishers are services writing to users' channels.

use std::fmt;

/// The longest channel name, in characters.
pub const MAX_CHANNEL_LEN: usize = 255;

/// Separates a user-scoped channel's name from its owner.
pub const USER_SEPARATOR: char = '#';

/// Why a channel name or pattern is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("channel name is empty")]
    Empty,
    #[error("channel name is {len} characters long; at most {MAX_CHANNEL_LEN} are allowed")]
    TooLong { len: usize },
    #[error("channel name contains {found:?}, which is not allowed (use A-Z a-z 0-9 - _ . : @ / = + and one #)")]
    BadCharacter { found: char },
    #[error("a user-scoped channel needs a name and a user around a single '#'")]
    BadUserScope,
    #[error("a pattern may only have one '*', at its end")]
    BadWildcard,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@' | '/' | '=' | '+')
}

/// The two kinds of channel, as [`validate`] finds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind<'a> {
    /// Anyone the token allows may subscribe.
    Shared,
    /// Only `owner` may subscribe.
    UserScoped { owner: &'a str },
}

/// Checks a channel name against the rules and says which kind it is.
pub fn validate(name: &str) -> Result<ChannelKind<'_>, ChannelError> {
    check_chars(name, false)?;
    Ok(kind_of(name))
}

/// The kind of an already validated name.
fn kind_of(name: &str) -> ChannelKind<'_> {
    match name.split_once(USER_SEPARATOR) {
        Some((_, owner)) => ChannelKind::UserScoped { owner },
        None => ChannelKind::Shared,
    }
}

fn check_chars(text: &str, pattern: bool) -> Result<(), ChannelError> {
    if text.is_empty() {
        return Err(ChannelError::Empty);
    }
    let len = text.chars().count();
    if len > MAX_CHANNEL_LEN {
        return Err(ChannelError::TooLong { len });
    }
    let body = if pattern { text.strip_suffix('*').unwrap_or(text) } else { text };
    let mut separators = 0;
    for c in body.chars() {
        match c {
            USER_SEPARATOR => separators += 1,
            '*' if pattern => return Err(ChannelError::BadWildcard),
            c if !is_name_char(c) => return Err(ChannelError::BadCharacter { found: c }),
            _ => {}
        }
    }
    if separators > 1 {
        return Err(ChannelError::BadUserScope);
    }
    if separators == 1 && !pattern {
        let (name, owner) = text.split_once(USER_SEPARATOR).unwrap_or_default();
        if name.is_empty() || owner.is_empty() {
            return Err(ChannelError::BadUserScope);
        }
    }
    Ok(())
}

/// A channel pattern from a token claim: an exact name or a `prefix*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChannelPattern {
    Exact(String),
    Prefix(String),
}

impl ChannelPattern {
    /// Parses `name` or `prefix*` (a lone `*` matches every channel).
    pub fn parse(text: &str) -> Result<ChannelPattern, ChannelError> {
        check_chars(text, true)?;
        Ok(match text.strip_suffix('*') {
            Some(prefix) => ChannelPattern::Prefix(prefix.to_owned()),
            None => ChannelPattern::Exact(text.to_owned()),
        })
    }

    pub fn matches(&self, channel: &str) -> bool {
        match self {
            ChannelPattern::Exact(name) => name == channel,
            ChannelPattern::Prefix(prefix) => channel.starts_with(prefix.as_str()),
        }
    }
}

impl fmt::Display for ChannelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelPattern::Exact(name) => f.write_str(name),
            ChannelPattern::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

/// The patterns of one claim; matches when any pattern does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatternSet(Vec<ChannelPattern>);

impl PatternSet {
    /// Parses every pattern; the first bad one is the error.
    pub fn parse<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<PatternSet, ChannelError> {
        patterns.into_iter().map(ChannelPattern::parse).collect::<Result<_, _>>().map(PatternSet)
    }

    pub fn matches(&self, channel: &str) -> bool {
        self.0.iter().any(|p| p.matches(channel))
    }

    pub fn patterns(&self) -> &[ChannelPattern] {
        &self.0
    }
}

/// Whether a subscriber may subscribe to a channel, or why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// The name breaks the rules (answer `INVALID_CHANNEL`).
    Invalid,
    /// The token does not grant it (answer `FORBIDDEN`).
    Forbidden,
}

/// May `user`, holding a `channels` claim of `grants` (`None` = claim absent), subscribe?
pub fn subscribe_access(channel: &str, user: &str, grants: Option<&PatternSet>) -> Access {
    match validate(channel) {
        Err(_) => Access::Invalid,
        Ok(ChannelKind::UserScoped { owner }) if owner != user => Access::Forbidden,
        Ok(_) => match grants {
            Some(set) if !set.matches(channel) => Access::Forbidden,
            _ => Access::Allowed,
        },
    }
}

/// May a holder of a `publish` claim of `grants` (`None` = claim absent) publish here?
pub fn publish_access(channel: &str, grants: Option<&PatternSet>) -> Access {
    if validate(channel).is_err() {
        return Access::Invalid;
    }
    match grants {
        Some(set) if set.matches(channel) => Access::Allowed,
        _ => Access::Forbidden,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_channels_are_valid_and_shared() {
        for name in ["routing-metrics", "lp-performance", "exposure-updates", "alerts", "prices.IN1234567890"] {
            assert_eq!(validate(name), Ok(ChannelKind::Shared), "{name}");
        }
    }

    #[test]
    fn user_scoped_channels() {
        assert_eq!(validate("trading#alice"), Ok(ChannelKind::UserScoped { owner: "alice" }));
        assert_eq!(validate("risk#bob@example.com"), Ok(ChannelKind::UserScoped { owner: "bob@example.com" }));
        for bad in ["#alice", "trading#", "a#b#c", "#"] {
            assert_eq!(validate(bad), Err(ChannelError::BadUserScope), "{bad}");
        }
    }

    #[test]
    fn bad_names() {
        assert_eq!(validate(""), Err(ChannelError::Empty));
        assert_eq!(validate(&"a".repeat(256)), Err(ChannelError::TooLong { len: 256 }));
        assert!(validate(&"a".repeat(255)).is_ok());
        assert_eq!(validate("a b"), Err(ChannelError::BadCharacter { found: ' ' }));
        assert_eq!(validate("lp-*"), Err(ChannelError::BadCharacter { found: '*' }));
        assert_eq!(validate("é"), Err(ChannelError::BadCharacter { found: 'é' }));
        assert_eq!(validate("a\u{0}"), Err(ChannelError::BadCharacter { found: '\u{0}' }));
    }

    #[test]
    fn patterns() {
        let p = ChannelPattern::parse("lp-*").unwrap();
        assert!(p.matches("lp-performance"));
        assert!(p.matches("lp-"));
        assert!(!p.matches("alerts"));
        assert!(ChannelPattern::parse("*").unwrap().matches("anything"));
        assert!(ChannelPattern::parse("alerts").unwrap().matches("alerts"));
        assert!(!ChannelPattern::parse("alerts").unwrap().matches("alerts-2"));
        assert_eq!(ChannelPattern::parse("a*b"), Err(ChannelError::BadWildcard));
        assert_eq!(ChannelPattern::parse("a**"), Err(ChannelError::BadWildcard));
        assert_eq!(ChannelPattern::parse("trading#*").unwrap().to_string(), "trading#*");
        assert_eq!(ChannelPattern::parse(""), Err(ChannelError::Empty));
    }

    #[test]
    fn subscribe_rules() {
        let grants = PatternSet::parse(["routing-metrics", "lp-*"]).unwrap();
        assert_eq!(subscribe_access("lp-performance", "alice", Some(&grants)), Access::Allowed);
        assert_eq!(subscribe_access("alerts", "alice", Some(&grants)), Access::Forbidden);
        assert_eq!(subscribe_access("alerts", "alice", None), Access::Allowed);
        assert_eq!(subscribe_access("bad name", "alice", None), Access::Invalid);
        assert_eq!(subscribe_access("trading#alice", "alice", None), Access::Allowed);
        assert_eq!(subscribe_access("trading#bob", "alice", None), Access::Forbidden);
        assert_eq!(subscribe_access("trading#alice", "alice", Some(&grants)), Access::Forbidden);
        let own = PatternSet::parse(["trading#*"]).unwrap();
        assert_eq!(subscribe_access("trading#alice", "alice", Some(&own)), Access::Allowed);
        assert_eq!(subscribe_access("trading#bob", "alice", Some(&own)), Access::Forbidden);
    }

    #[test]
    fn publish_rules() {
        let grants = PatternSet::parse(["alerts", "trading#*"]).unwrap();
        assert_eq!(publish_access("alerts", Some(&grants)), Access::Allowed);
        assert_eq!(publish_access("trading#bob", Some(&grants)), Access::Allowed);
        assert_eq!(publish_access("routing-metrics", Some(&grants)), Access::Forbidden);
        assert_eq!(publish_access("alerts", None), Access::Forbidden);
        assert_eq!(publish_access("", Some(&grants)), Access::Invalid);
    }
}
