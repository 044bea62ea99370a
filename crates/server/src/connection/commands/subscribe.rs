//! `subscribe`: join channels, each checked on its own. A forbidden or invalid channel
//! gets an `error` naming it while the others in the same command still succeed.
//! Subscribing to a channel already joined answers `subscribed` again with the current
//! head and changes nothing. A command names at most `--max-channels` distinct channels
//! (repeats count once).

use tidewire_protocol::ErrorCode;
use tidewire_protocol::channel::{Access, validate};
use tidewire_protocol::command::Subscribe;

use crate::connection::session::{Next, Session};
use crate::hub::invalid_channel;

pub fn apply(session: &mut Session, command: Subscribe) -> Next {
    let max = session.hub.config().max_channels;
    let Some(channels) = super::distinct_channels(session, command.id.as_ref(), command.channels) else {
        return Next::Continue;
    };
    for channel in &channels {
        let id = command.id.clone();
        match session.grant.subscribe_access(channel) {
            Access::Allowed => {}
            Access::Invalid => {
                let reason = validate(channel).err().map(|e| invalid_channel(channel, e)).unwrap_or_default();
                session.send_error(id, ErrorCode::InvalidChannel, reason, Some(channel));
                continue;
            }
            Access::Forbidden => {
                tracing::info!(
                    connection = session.id(),
                    user = %session.grant.user,
                    %channel,
                    "subscription forbidden"
                );
                session.send_error(
                    id,
                    ErrorCode::Forbidden,
                    format!("the token does not allow subscribing to {channel}"),
                    Some(channel),
                );
                continue;
            }
        }
        let already = session.subscriptions.contains(channel.as_str());
        if !already && session.subscriptions.len() >= max {
            session.send_error(
                id,
                ErrorCode::TooManyChannels,
                format!("at most {max} channels per connection"),
                Some(channel),
            );
            continue;
        }
        let since = command.since.as_ref().and_then(|since| since.get(channel));
        if let Err(refused) = session.hub.subscribe(session.id(), &session.outbox, channel, since, id.clone()) {
            session.send_error(id, refused.code, refused.message, Some(channel));
            continue;
        }
        if !already {
            session.subscriptions.insert(channel);
            tracing::debug!(connection = session.id(), user = %session.grant.user, %channel, "subscribed");
        }
    }
    Next::Continue
}
