//! A trading desk on tidewire, and the model for any application's catalogue.
//!
//! The gateway (`tidewire-server`) and the protocol carry any JSON; an application gives
//! its messages types in a crate of its own, as this one does for the routing dashboard
//! the project grew from:
//!
//! - [`catalogue`]: the typed messages (routing decisions, LP metrics, exposure, alerts),
//!   their channels and keys, as serde structs with an [`Event`] impl each. It builds
//!   without the `node` feature for any target, the browser's included, and derives the
//!   TypeScript bindings under `ts`.
//! - [`publish`] (`node`): [`DeskPublisher`], typed helpers that take the event structs,
//!   so no caller passes eight positional numbers in the wrong order.
//! - [`demo`] (`node`): a synthetic desk publishing through those helpers, and the
//!   `tidewire-desk` binary that runs it with the dashboard, embedding the same node as
//!   the `tidewire` binary ([`tidewire_server::process::run`]) plus its own routes.
//!
//! [`Event`]: tidewire_protocol::Event

pub mod catalogue;
#[cfg(feature = "node")]
pub mod demo;
#[cfg(feature = "node")]
pub mod publish;

#[cfg(feature = "node")]
pub use publish::DeskPublisher;
