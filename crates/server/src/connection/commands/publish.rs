//! `publish` over the WebSocket: the same path as `POST /api/publish`, for tokens with
//! a `publish` grant on the channel. Answers `published` with the seq.

use tidewire_protocol::channel::Access;
use tidewire_protocol::command::Publish;
use tidewire_protocol::message::Published;
use tidewire_protocol::{Control, ErrorCode};

use crate::connection::session::{Next, Session};
use crate::hub::now_timestamp;

pub fn apply(session: &mut Session, command: Publish) -> Next {
    let channel = command.publication.channel.clone();
    match session.grant.publish_access(&channel) {
        Access::Allowed => {}
        Access::Invalid => {
            session.send_error(command.id, ErrorCode::InvalidChannel, format!("invalid channel {channel:?}"), Some(&channel));
            return Next::Continue;
        }
        Access::Forbidden => {
            session.send_error(command.id, ErrorCode::Forbidden, format!("the token does not allow publishing to {channel}"), Some(&channel));
            return Next::Continue;
        }
    }
    match session.hub.publish(command.publication) {
        Ok(accepted) => session.send(Control::Published(Published {
            timestamp: now_timestamp(),
            id: command.id,
            channel: accepted.channel,
            seq: accepted.seq,
        })),
        Err(error) => session.send_error(command.id, error.code, error.message, Some(&channel)),
    }
    Next::Continue
}
