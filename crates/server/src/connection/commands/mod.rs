//! One file per client command: each takes the decoded command, applies it to the
//! session and the hub, and queues its replies.

pub mod ping;
pub mod publish;
pub mod refresh;
pub mod subscribe;
pub mod unsubscribe;
