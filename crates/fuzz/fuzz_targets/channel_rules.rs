//! Channel names and patterns: the rules never panic, a valid name is ASCII and at most
//! 255 characters, every valid name is a valid exact pattern that matches itself, and
//! access decisions are consistent with validation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidewire_protocol::channel::{self, Access, ChannelPattern, PatternSet};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // "name\npattern\nuser"
    let mut parts = text.splitn(3, '\n');
    let name = parts.next().unwrap_or_default();
    let pattern = parts.next().unwrap_or_default();
    let user = parts.next().unwrap_or_default();
    let valid = channel::validate(name).is_ok();
    if valid {
        assert!(name.is_ascii() && !name.is_empty() && name.len() <= channel::MAX_CHANNEL_LEN);
        let exact = ChannelPattern::parse(name).expect("a valid name is a valid pattern");
        assert!(exact.matches(name));
    }
    let grants = PatternSet::parse([pattern]).ok();
    let subscribe = channel::subscribe_access(name, user, grants.as_ref());
    let publish = channel::publish_access(name, grants.as_ref());
    if !valid {
        assert_eq!(subscribe, Access::Invalid);
        assert_eq!(publish, Access::Invalid);
    }
    if let Ok(p) = ChannelPattern::parse(pattern) {
        assert_eq!(ChannelPattern::parse(&p.to_string()), Ok(p));
    }
});
