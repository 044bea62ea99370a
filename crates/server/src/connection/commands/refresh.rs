//! `refresh`: replace the connection's token before it expires. The new token must be
//! valid, not revoked, and belong to the same user; its grants replace the old ones at once: every
//! subscription the new token no longer allows ends, with an `unsubscribed` that says
//! `FORBIDDEN` (before the `refreshed`). A bad token gets an error and the old one keeps
//! running until it expires.

use tidewire_protocol::command::Refresh;
use tidewire_protocol::message::Refreshed;
use tidewire_protocol::{CloseCode, Control, ErrorCode};

use crate::connection::session::{Next, Session};
use crate::hub::now_timestamp;

pub fn apply(session: &mut Session, command: Refresh) -> Next {
    match session.hub.authenticate(&command.token) {
        Ok(grant) if grant.user == session.grant.user => {
            session.hub.sessions().renew(session.id(), &grant);
            // A revocation of the new token given between its check and the renewal
            // above looked at the old one: look again now that any later one will.
            if session.hub.is_revoked(&grant) {
                return Next::Close(CloseCode::REVOKED, crate::auth::AuthError::Revoked.to_string());
            }
            session.grant = grant;
            for channel in session.channels_not_granted() {
                let why =
                    (ErrorCode::Forbidden, format!("the refreshed token does not allow subscribing to {channel}"));
                session.unsubscribe(&channel, None, Some(why));
            }
            tracing::debug!(connection = session.id(), user = %session.grant.user, "token refreshed");
            session.send(Control::Refreshed(Refreshed {
                timestamp: now_timestamp(),
                id: command.id,
                expires_at: Some(session.grant.expires_at_timestamp()),
            }));
        }
        Ok(_) => session.send_error(command.id, ErrorCode::Forbidden, "the new token is for another user", None),
        Err(error) => {
            session
                .hub
                .metrics()
                .auth_failures
                .get_or_create(&crate::metrics::ErrorLabel { code: error.code().as_str() })
                .inc();
            session.send_error(command.id, error.code(), error.to_string(), None)
        }
    }
    Next::Continue
}
