//! The tidewire wire protocol, defined once for the server, the browser client and
//! TypeScript.
//!
//! This crate has no IO, no async runtime and no clock: everything time-dependent takes
//! `now` as an argument. That is what lets the same code run in the native server, in
//! the wasm client and in deterministic tests, and what makes a change of the wire
//! format a change in one place.
//!
//! # Map
//!
//! - [`command`]: what a client sends (`subscribe`, `unsubscribe`, `publish`, `ping`,
//!   `refresh`) and [`decode_command`], which never panics and always yields a typed error.
//! - [`message`]: what a server sends: publications and control messages.
//! - [`codec`]: serialize once, frame by joining, decode frames.
//! - [`batch`]: the batching and backpressure rule (frames of ≤ 50 per 16 ms, bounded
//!   queue, conflation by key, exact gap reports).
//! - [`filter`], [`rate`] and [`delta`]: what a subscription may ask of its delivery
//!   (only some types or keys; at most a rate per key; field deltas instead of whole
//!   records).
//! - [`channel`]: channel names, token patterns, and who may subscribe or publish.
//! - [`ErrorCode`] and [`CloseCode`]: the stable error and close codes.
//! - [`event`]: typed application messages (an application's catalogue lives in its own
//!   crate, as `tidewire-desk` shows).
//! - [`Timestamp`]: the wire's RFC 3339 microsecond timestamps.
//! - [`event_stream`]: the Server-Sent Events framing of the HTTP transports (the
//!   fallback session and the one-way stream) and the one-way stream's event ids.
//!
//! The protocol reference (`docs/protocol.md` in the repository) shows every message
//! with examples.

pub mod batch;
pub mod channel;
pub mod close_code;
pub mod codec;
pub mod command;
pub mod delta;
pub mod error_code;
pub mod event;
pub mod event_stream;
pub mod filter;
pub mod message;
pub mod rate;
pub mod timestamp;

pub use close_code::{CloseCode, Disposition};
pub use codec::{DecodeError, EncodedMessage, PublicationTemplate, decode_frame, encode_frame};
pub use command::{Command, CommandError, CommandId, NewPublication, Op, StreamPosition, decode_command};
pub use error_code::ErrorCode;
pub use event::Event;
pub use message::{Control, Publication, ServerMessage};
pub use timestamp::Timestamp;

/// The protocol version a server announces in `connected`. A client refuses a server
/// whose version it does not speak. It changes only when old clients would misread
/// new messages; adding optional fields or message types does not change it.
pub const PROTOCOL_VERSION: u32 = 1;
