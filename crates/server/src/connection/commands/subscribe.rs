//! `subscribe`: join channels, each checked on its own. A forbidden or invalid channel
//! gets an `error` naming it while the others in the same command still succeed.
//! Subscribing to a channel already joined starts it again (`subscribed`, then its
//! snapshot or replay) with the new command's options. A command names at most `--max-channels` distinct channels
//! (repeats count once). Its options apply to every channel it names; a filter or a
//! rate that breaks a rule refuses the whole command (BAD_REQUEST), and the filters of one
//! connection hold at most `--max-filter-bytes` (TOO_MANY_KEYS for the channel beyond).

use std::sync::Arc;

use tidewire_protocol::ErrorCode;
use tidewire_protocol::command::Subscribe;

use crate::connection::session::{Next, Session};
use crate::hub::SubscribeStart;

pub fn apply(session: &mut Session, command: Subscribe) -> Next {
    let max = session.hub.config().max_channels;
    let options = command.options.unwrap_or_default();
    let Some(channels) = super::distinct_channels(session, command.id.as_ref(), command.channels) else {
        return Next::Continue;
    };
    let floor_ms = u64::try_from(session.hub.config().min_subscriber_interval.as_millis()).unwrap_or(u64::MAX);
    let rate = match options.rate(floor_ms) {
        Ok(rate) => rate,
        Err(error) => {
            for channel in &channels {
                session.send_error(command.id.clone(), ErrorCode::BadRequest, error.to_string(), Some(channel));
            }
            return Next::Continue;
        }
    };
    let filter = match options.filter() {
        Ok(filter) => filter.map(Arc::new),
        Err(error) => {
            // Each channel is told (so a client can tell which subscription was refused);
            // there are at most --max-channels of them.
            for channel in &channels {
                session.send_error(command.id.clone(), ErrorCode::BadRequest, error.to_string(), Some(channel));
            }
            return Next::Continue;
        }
    };
    // A filtered start scans what it then does not send, so nothing fills the client's
    // queue to stop a loop of them: each channel of a filtered subscribe costs a command.
    if filter.is_some() && !session.charge(channels.len().saturating_sub(1)) {
        let limit = session.hub.config().commands_per_second;
        let message = format!("a filtered subscribe costs a command per channel; more than {limit} per second");
        session.send_error(command.id, ErrorCode::RateLimitExceeded, message, None);
        return Next::Continue;
    }
    let filter_bytes = filter.as_ref().map_or(0, |f| f.bytes());
    let max_filter_bytes = session.hub.config().max_filter_bytes;
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
        if session.subscriptions.filter_bytes_with(channel, filter_bytes) > max_filter_bytes {
            session.send_error(
                id,
                ErrorCode::TooManyKeys,
                format!("this connection's filters would hold more than {max_filter_bytes} bytes (--max-filter-bytes)"),
                Some(channel),
            );
            continue;
        }
        if !already && session.hub.has_presence_events(channel) && !session.pay_for_presence() {
            let per_minute = session.hub.config().presence_joins_per_minute;
            session.send_error(
                id,
                ErrorCode::RateLimitExceeded,
                format!(
                    "{channel} announces joins and leaves: a connection may join such channels {per_minute} times a \
                     minute (--presence-joins-per-minute)"
                ),
                Some(channel),
            );
            continue;
        }
        let since = command.since.as_ref().and_then(|since| since.get(channel));
        let (snapshot_end, deltas) = (options.snapshot_end, options.deltas);
        let start = SubscribeStart { since, id: id.clone(), snapshot_end, filter: filter.clone(), rate, deltas };
        if let Err(refused) = session.hub.subscribe(session.id(), &session.outbox, channel, start) {
            session.send_error(id, refused.code, refused.message, Some(channel));
            continue;
        }
        let name = session.subscriptions.insert(channel, filter_bytes);
        if !already {
            tracing::debug!(connection = session.id(), user = %session.grant.user, %channel, "subscribed");
            session.hub.announce_presence(channel, &session.grant.user, session.id(), true);
            session.view().subscribed(name);
            session.trace(|| crate::hub::trace::Event::Subscribed { channel: channel.to_owned() });
        }
    }
    Next::Continue
}
