//! `publish` over the WebSocket: the same path as `POST /api/publish`, for tokens with
//! a `publish` grant on the channel. Answers `published` with the seq.

use tidewire_protocol::Control;
use tidewire_protocol::command::Publish;
use tidewire_protocol::message::Published;

use futures_util::FutureExt;
use tidewire_protocol::batch::Outbound;

use crate::connection::session::{Next, Session, error_reply};
use crate::hub::{control, now_timestamp};

pub fn apply(session: &mut Session, command: Publish) -> Next {
    let channel = command.publication.channel.clone();
    if let Err(refused) = session.grant.check_publish(&channel) {
        session.send_error(command.id, refused.code, refused.message, Some(&channel));
        return Next::Continue;
    }
    if let Err(refused) = crate::hub::check_client_publication(&command.publication) {
        session.send_error(command.id, refused.code, refused.message, Some(&channel));
        return Next::Continue;
    }
    // The in-memory engine answers at once; an engine with a round trip answers later,
    // from a task, so the connection keeps reading meanwhile.
    let hub = session.hub.clone();
    let outbox = session.outbox.clone();
    let id = command.id;
    let publish = async move {
        let reply = match hub.publish(command.publication).await {
            Ok(accepted) => Control::Published(Published {
                timestamp: now_timestamp(),
                id,
                channel: accepted.channel,
                seq: accepted.seq,
            }),
            Err(error) => error_reply(&hub, id, error.code, error.message, Some(&channel)),
        };
        outbox.push(Outbound::control(control(reply)));
    };
    let mut publish = Box::pin(publish);
    if publish.as_mut().now_or_never().is_none() {
        tokio::spawn(publish);
    }
    Next::Continue
}
