//! tidewire's gateway, as a library to embed in an axum app and as the `tidewire` binary.
//!
//! # Layout
//!
//! - [`config`]: every setting, its default, flag and `TIDEWIRE_*` variable.
//! - [`auth`]: JWT verification and what a token grants.
//! - [`hub`]: channels, history, snapshots and the fan-out, with no sockets.
//! - `connection`: one IO loop per WebSocket, and one file per client command.
//! - [`http`]: `/ws`, `/api/publish`, `/api/channels`, `/health`, `/ready`, `/metrics`.
//! - [`Publisher`]: publishing from Rust, with typed helpers for the analytics catalogue.
//! - [`server`]: binding, serving and graceful shutdown.
//!
//! # Embedding
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = tidewire_server::Hub::new(tidewire_server::Config::for_tests("a-secret-of-at-least-thirty-two-bytes"))?;
//! let app = axum::Router::new().merge(tidewire_server::router(hub.clone()));
//! hub.publisher().notify_alert(
//!     tidewire_protocol::analytics::Severity::Info,
//!     tidewire_protocol::analytics::Category::System,
//!     "Started", "The desk is live", "main", &[],
//! ).await?;
//! # let _ = app; Ok(()) }
//! ```

pub mod auth;
pub mod config;
mod connection;
pub mod demo;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod metrics;
mod publisher;
pub mod server;

pub use config::Config;
pub use http::router;
pub use hub::Hub;
pub use publisher::Publisher;
