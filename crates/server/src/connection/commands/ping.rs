//! `ping` → `pong`, echoing the id.

use tidewire_protocol::Control;
use tidewire_protocol::command::Ping;
use tidewire_protocol::message::Pong;

use crate::connection::session::{Next, Session};
use crate::hub::now_timestamp;

pub fn apply(session: &mut Session, command: Ping) -> Next {
    session.send(Control::Pong(Pong { timestamp: now_timestamp(), id: command.id }));
    Next::Continue
}
