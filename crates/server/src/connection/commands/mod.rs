//! One file per client command: each takes the decoded command, applies it to the
//! session and the hub, and queues its replies.
//!
//! One command's work is bounded: a channel list names each channel once (repeats are
//! ignored) and at most `--max-channels` of them, so no command costs more than a
//! connection's whole subscription limit.

pub mod ping;
pub mod publish;
pub mod refresh;
pub mod subscribe;
pub mod unsubscribe;

use tidewire_protocol::{CommandId, ErrorCode};

use super::session::Session;

/// The command's channels, each once, in the order given; `None` (after queuing a
/// `TOO_MANY_CHANNELS` error for the whole command) when it names more distinct channels
/// than a connection may hold.
pub fn distinct_channels(session: &Session, id: Option<&CommandId>, channels: Vec<String>) -> Option<Vec<String>> {
    let max = session.hub.config().max_channels;
    let mut distinct: Vec<String> = Vec::with_capacity(channels.len().min(max));
    let mut seen = std::collections::HashSet::with_capacity(channels.len().min(max));
    for channel in channels {
        if seen.contains(channel.as_str()) {
            continue;
        }
        if distinct.len() == max {
            session.send_error(
                id.cloned(),
                ErrorCode::TooManyChannels,
                format!("a command may name at most {max} channels; nothing was done"),
                None,
            );
            return None;
        }
        seen.insert(channel.clone());
        distinct.push(channel);
    }
    Some(distinct)
}
