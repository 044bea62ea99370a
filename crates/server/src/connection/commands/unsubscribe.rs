//! `unsubscribe`: leave channels. Leaving a channel one is not in still answers
//! `unsubscribed`, so a client's bookkeeping converges whatever happened before.
//! Publications already queued for the channel may still follow the reply. A command
//! names at most `--max-channels` distinct channels (repeats count once).

use tidewire_protocol::command::Unsubscribe;

use crate::connection::session::{Next, Session};

pub fn apply(session: &mut Session, command: Unsubscribe) -> Next {
    let Some(channels) = super::distinct_channels(session, command.id.as_ref(), command.channels) else {
        return Next::Continue;
    };
    for channel in channels {
        session.unsubscribe(&channel, command.id.clone(), None);
    }
    Next::Continue
}
