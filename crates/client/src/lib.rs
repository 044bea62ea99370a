//! tidewire's client.
//!
//! - [`core`]: the sans-IO state machine that decides everything (reconnects, tokens,
//!   subscriptions, recovery, dead links, the offline publish queue). Pure Rust, no
//!   clock, tested with virtual time.
//! - `native` (non-wasm targets): a tokio driver with a Rust API.
//! - `browser` (`wasm32`): a wasm-bindgen driver with a JavaScript API, packaged for npm
//!   by `cargo xtask wasm`.

pub mod core;

#[cfg(not(target_arch = "wasm32"))]
pub mod native;

#[cfg(target_arch = "wasm32")]
pub mod browser;
