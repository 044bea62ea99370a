//! The in-process publisher: what a Rust service embedding tidewire calls to push
//! updates, through the same path as `POST /api/publish`.
//!
//! [`Publisher::publish`] takes any publication; [`Publisher::publish_event`] any typed
//! [`Event`] of an application's catalogue (helpers for one catalogue belong with it,
//! as `tidewire-desk` shows).

use tidewire_protocol::{ErrorCode, Event, NewPublication};

use crate::hub::{Accepted, Hub, PublishError};

/// Publishes into a hub. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Publisher {
    hub: Hub,
}

impl Publisher {
    pub fn new(hub: Hub) -> Publisher {
        Publisher { hub }
    }

    /// Publishes an untyped message.
    pub async fn publish(&self, publication: NewPublication) -> Result<Accepted, PublishError> {
        self.hub.publish(publication).await
    }

    /// Publishes a typed event on its home channel.
    pub async fn publish_event<E: Event>(&self, event: &E) -> Result<Accepted, PublishError> {
        let publication =
            event.to_publication().map_err(|e| PublishError { code: ErrorCode::BadRequest, message: e.to_string() })?;
        self.hub.publish(publication).await
    }
}
