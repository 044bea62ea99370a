//! `unsubscribe`: leave channels. Leaving a channel one is not in still answers
//! `unsubscribed`, so a client's bookkeeping converges whatever happened before.
//! Publications already queued for the channel may still follow the reply.

use tidewire_protocol::command::Unsubscribe;
use tidewire_protocol::message::Unsubscribed;
use tidewire_protocol::Control;

use crate::connection::session::{Next, Session};
use crate::hub::now_timestamp;

pub fn apply(session: &mut Session, command: Unsubscribe) -> Next {
    for channel in command.channels {
        if session.subscriptions.remove(channel.as_str()) {
            session.hub.unsubscribe(session.id(), &channel);
            tracing::debug!(connection = session.id(), user = %session.grant.user, %channel, "unsubscribed");
        }
        session.send(Control::Unsubscribed(Unsubscribed { timestamp: now_timestamp(), id: command.id.clone(), channel }));
    }
    Next::Continue
}
