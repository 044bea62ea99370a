//! `subscribe`: join channels, each checked on its own. A forbidden or invalid channel
//! gets an `error` naming it while the others in the same command still succeed.
//! Subscribing to a channel already joined answers `subscribed` again with the current
//! head and changes nothing. A command names at most `--max-channels` distinct channels
//! (repeats count once).

use tidewire_protocol::ErrorCode;
use tidewire_protocol::command::Subscribe;

use crate::connection::session::{Next, Session};

pub fn apply(session: &mut Session, command: Subscribe) -> Next {
    let max = session.hub.config().max_channels;
    let Some(channels) = super::distinct_channels(session, command.id.as_ref(), command.channels) else {
        return Next::Continue;
    };
    for channel in &channels {
        let id = command.id.clone();
        if let Err(refused) = session.grant.check_subscribe(channel) {
            if refused.code == ErrorCode::Forbidden {
                let (connection, user) = (session.id(), &session.grant.user);
                tracing::info!(connection, user = %user, %channel, "subscription forbidden");
            }
            session.send_error(id, refused.code, refused.message, Some(channel));
            continue;
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
        let options = command.options.unwrap_or_default();
        let subscribed = session.hub.subscribe(session.id(), &session.outbox, channel, since, id.clone(), options);
        if let Err(refused) = subscribed {
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
