//! Typed application messages on top of the untyped wire.
//!
//! On the wire a publication's `data` is any JSON. An application that wants types
//! implements [`Event`] for each payload: the message `type` it travels as, the channel
//! it belongs on, and (optionally) the key that makes it conflatable and part of the
//! channel's snapshot. Then [`Event::to_publication`] builds what to publish and
//! [`Event::from_publication`] reads it back, checking the type. The analytics catalogue
//! of the `tidewire-desk` crate is one such application and the model for others.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::command::NewPublication;
use crate::message::Publication;

/// A typed payload with a fixed message type and home channel.
pub trait Event: Serialize + DeserializeOwned {
    /// The message `type` on the wire, e.g. `routing-decision`.
    const TYPE: &'static str;
    /// The channel this event is published on, e.g. `routing-metrics`.
    const CHANNEL: &'static str;

    /// The conflation and snapshot key, e.g. the LP name; `None` for a stream of facts.
    fn key(&self) -> Option<String> {
        None
    }

    /// What to publish: this event on its home channel.
    fn to_publication(&self) -> Result<NewPublication, serde_json::Error> {
        self.to_publication_on(Self::CHANNEL)
    }

    /// What to publish: this event on another channel (a user-scoped one, say).
    fn to_publication_on(&self, channel: &str) -> Result<NewPublication, serde_json::Error> {
        Ok(NewPublication {
            channel: channel.to_owned(),
            kind: Self::TYPE.to_owned(),
            data: serde_json::to_value(self)?,
            key: self.key(),
            ..Default::default()
        })
    }

    /// Reads the event from a publication; `Ok(None)` when the publication has another type.
    fn from_publication(publication: &Publication) -> Result<Option<Self>, serde_json::Error> {
        if publication.kind != Self::TYPE {
            return Ok(None);
        }
        Self::deserialize(&publication.data).map(Some)
    }
}
