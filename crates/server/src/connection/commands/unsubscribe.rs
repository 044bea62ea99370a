//! `unsubscribe`: leave channels. Leaving a channel one is not in still answers
//! `unsubscribed`, so a client's bookkeeping converges whatever happened before.
//! Publications already queued for the channel may still follow the reply. A command
//! names at most `--max-channels` distinct channels (repeats count once).

use tidewire_protocol::command::Unsubscribe;
use tidewire_protocol::message::Unsubscribed;
use tidewire_protocol::Control;

use tidewire_protocol::batch::Outbound;

use crate::connection::session::{Next, Session};
use crate::hub::{control, now_timestamp};

pub fn apply(session: &mut Session, command: Unsubscribe) -> Next {
    let Some(channels) = super::distinct_channels(session, command.id.as_ref(), command.channels) else {
        return Next::Continue;
    };
    for channel in channels {
        let reply = control(Control::Unsubscribed(Unsubscribed { timestamp: now_timestamp(), id: command.id.clone(), channel: channel.clone() }));
        if session.subscriptions.remove(channel.as_str()) {
            // The engine queues the reply after anything it still owes for the channel.
            session.hub.unsubscribe(session.id(), &channel, Some((session.outbox.clone(), reply)));
            tracing::debug!(connection = session.id(), user = %session.grant.user, %channel, "unsubscribed");
        } else {
            session.outbox.push(Outbound::control(reply));
        }
    }
    Next::Continue
}
