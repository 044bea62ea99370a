//! tidewire's gateway, as a library to embed in an axum app and as the `tidewire` binary.
//!
//! # Layout
//!
//! - [`config`]: every setting, its default, flag and `TIDEWIRE_*` variable.
//! - [`auth`]: JWT verification and what a token grants.
//! - [`hub`]: channels, history, snapshots and the fan-out, with no sockets.
//! - `connection`: one IO loop per WebSocket, and one file per client command;
//!   [`session`], the connection without its socket, is public.
//! - [`http`]: `/ws`, `/api/publish`, `/api/channels`, `/health`, `/ready`, `/metrics`.
//! - [`Publisher`]: publishing from Rust, untyped or as any application's typed events.
//! - [`server`]: binding, serving and graceful shutdown; [`process`]: a node as a
//!   process (what the `tidewire` binary runs, for binaries that add their own routes).
//!
//! The gateway knows no application: a catalogue of typed messages, with its helpers
//! and demo, lives in a crate of its own on top (`tidewire-desk` is the example).
//!
//! # Embedding
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = tidewire_server::Hub::new(tidewire_server::Config::for_tests("a-secret-of-at-least-thirty-two-bytes"))?;
//! let app = axum::Router::new().merge(tidewire_server::router(hub.clone()));
//! hub.publisher().publish(tidewire_protocol::NewPublication {
//!     channel: "alerts".into(),
//!     kind: "alert".into(),
//!     data: serde_json::json!({"title": "Started"}),
//!     ..Default::default()
//! }).await?;
//! # let _ = app; Ok(()) }
//! ```

pub mod auth;
pub mod config;
mod connection;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod metrics;
pub mod process;
mod publisher;
pub mod server;

pub use config::Config;
/// One connection's protocol state without its socket (what the IO loop drives, and
/// what a test can drive on virtual time).
pub use connection::session;
pub use http::router;
pub use hub::Hub;
pub use publisher::Publisher;
