//! The node's one pub/sub connection: it (re)connects with backoff, keeps the set of
//! channels this node listens to, and routes each message to its channel's actor.
//!
//! The routes live in one table whatever the connection's state: while it is down,
//! subscribe requests wait in the table (and their confirmations with them) and are
//! subscribed when it is back. The backoff is reset only once every route is subscribed
//! again, so a Redis that accepts connections but refuses `SUBSCRIBE` is retried at the
//! backoff's pace, and the node stays unready (`/ready` 503) until pub/sub works.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::actor::Input;
use super::scripts::{Keys, parse_delivered};
use crate::hub::engine::Shared;
use crate::hub::operator::{Broadcast, Notice};
use crate::hub::revocation::Revocation;

/// Where operator orders from other nodes arrive, and the node that carries them out.
pub struct Control {
    pub channel: String,
    /// The pub/sub channel of trace events (see [`crate::hub::trace`]).
    pub traces: String,
    /// The sorted set of the cluster's revocations, and the users' cuts beside it.
    pub revocations: String,
    pub revocation_cuts: String,
    pub shared: Arc<Shared>,
    /// What answers other nodes' questions (the engine, held weakly).
    pub answers: std::sync::Weak<super::EngineInner>,
}

impl Control {
    /// Acts on what another node broadcast: an order for this node's connections, a
    /// revocation, or a question to answer.
    fn receive(&self, payload: &[u8]) {
        let Ok(broadcast) = serde_json::from_slice::<Broadcast>(payload) else {
            tracing::warn!("an unreadable operator notice on {}", self.channel);
            return;
        };
        if broadcast.from == self.shared.instance {
            return;
        }
        match broadcast.notice {
            Notice::Order { target, order } => {
                let taken = self.shared.order(&target, &order);
                tracing::info!(from = %broadcast.from, taken, "operator order from another node");
            }
            Notice::Revoke { revocation } => match self.shared.revoke(&revocation) {
                Ok(ended) => tracing::info!(from = %broadcast.from, ended, "revocation from another node"),
                Err(e) => tracing::warn!(from = %broadcast.from, "a revocation from another node: {e}"),
            },
            Notice::Trace { user } => self.shared.tracer.lease(&user),
            Notice::Ask { reply, question } => {
                if let Some(answers) = self.answers.upgrade() {
                    tokio::spawn(super::answer(answers, reply, question));
                }
            }
        }
    }

    /// A trace event from another node, for this node's watchers.
    fn receive_trace(&self, payload: &[u8]) {
        match serde_json::from_slice::<crate::hub::trace::Trace>(payload) {
            Ok(trace) if trace.node != self.shared.instance => self.shared.tracer.deliver(trace),
            Ok(_) => {}
            Err(_) => tracing::warn!("an unreadable trace event on {}", self.traces),
        }
    }

    /// Reads the cluster's revocations into this node's table, ending the connections
    /// they cover (it may have missed some while it was cut off from Redis).
    async fn load_revocations(&self, client: &redis::Client) -> bool {
        let read = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::Script::new(super::scripts::REVOCATIONS)
                .key(&self.revocations)
                .key(&self.revocation_cuts)
                .arg(crate::auth::unix_now())
                .invoke_async::<Vec<String>>(&mut conn)
                .await
        };
        let Ok(Ok(found)) = tokio::time::timeout(Duration::from_secs(2), read).await else { return false };
        let now = crate::auth::unix_now();
        let (mut kept, mut lost) = (0, 0);
        for entry in found.chunks_exact(3) {
            let (expires_at, cut) = (entry[1].parse::<f64>().unwrap_or(0.0) as u64, entry[2].parse::<u64>().ok());
            let Some(revocation) = Revocation::from_member(&entry[0], expires_at, cut) else { continue };
            match self.shared.revocations.add(&revocation, now) {
                Ok(()) => kept += 1,
                Err(_) => lost += 1,
            }
        }
        if lost > 0 {
            tracing::warn!(lost, "revocations in Redis beyond --max-revocations were not kept on this node");
        }
        self.shared.revocations_loaded.store(true, std::sync::atomic::Ordering::Release);
        let ended = self.shared.sessions.end_revoked(&self.shared.revocations, now);
        tracing::debug!(kept, ended, "revocations loaded from Redis");
        true
    }
}

/// What the engine asks of the pub/sub task.
pub enum PubSubCommand {
    Subscribe { channel: String, actor: u64, inbox: mpsc::UnboundedSender<Input>, done: oneshot::Sender<()> },
    Unsubscribe { channel: String, actor: u64 },
}

/// What the table asks the live connection to do after a command.
enum Change {
    Subscribe(String),
    Unsubscribe(String),
    None,
}

/// Channel → its actor, and the confirmations owed once subscribed.
#[derive(Default)]
struct Routes {
    actors: HashMap<String, (u64, mpsc::UnboundedSender<Input>)>,
    waiting: Vec<(String, oneshot::Sender<()>)>,
}

impl Routes {
    /// Records a command; says what the connection must do for it. A subscribe's
    /// confirmation waits until [`Routes::confirm`].
    fn apply(&mut self, command: PubSubCommand) -> Change {
        match command {
            PubSubCommand::Subscribe { channel, actor, inbox, done } => {
                let fresh = self.actors.insert(channel.clone(), (actor, inbox)).is_none();
                self.waiting.push((channel.clone(), done));
                if fresh { Change::Subscribe(channel) } else { Change::None }
            }
            PubSubCommand::Unsubscribe { channel, actor } => {
                if self.actors.get(&channel).is_some_and(|(id, _)| *id == actor) {
                    self.actors.remove(&channel);
                    return Change::Unsubscribe(channel);
                }
                Change::None
            }
        }
    }

    /// Every route is subscribed: the actors may read their starts.
    fn confirm(&mut self) {
        for (_, done) in self.waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Backoff between connection attempts.
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(5);

pub async fn run(
    client: redis::Client,
    prefix: String,
    mut commands: mpsc::UnboundedReceiver<PubSubCommand>,
    up: Arc<AtomicBool>,
    control: Control,
) {
    let pubsub_prefix = Keys::pubsub(&prefix, "");
    let mut routes = Routes::default();
    let mut delay = FIRST_DELAY;
    let mut first = true;
    loop {
        let connected = match tokio::time::timeout(Duration::from_secs(2), client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => Some(pubsub.split()),
            _ => None,
        };
        let subscribed = match connected {
            Some((mut sink, stream)) => {
                // Revocations given while this node was cut off are read after the
                // control channel is listened to, so none falls between the two.
                let mut all = sink.subscribe(&control.channel).await.is_ok()
                    && sink.subscribe(&control.traces).await.is_ok()
                    && control.load_revocations(&client).await;
                for channel in routes.actors.keys() {
                    if sink.subscribe(format!("{pubsub_prefix}{channel}")).await.is_err() {
                        all = false;
                        break;
                    }
                }
                all.then_some((sink, stream))
            }
            None => None,
        };
        let Some((mut sink, mut stream)) = subscribed else {
            // Keep taking commands while down, so subscribers queue up.
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    command = commands.recv() => match command {
                        None => return,
                        Some(command) => { routes.apply(command); }
                    },
                }
            }
            delay = (delay * 2).min(MAX_DELAY);
            continue;
        };
        delay = FIRST_DELAY;
        up.store(true, Ordering::SeqCst);
        routes.confirm();
        if !first {
            tracing::info!(channels = routes.actors.len(), "pub/sub re-established; resyncing channels");
            for (_, inbox) in routes.actors.values() {
                let _ = inbox.send(Input::Resync);
            }
        }
        first = false;
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else { break };
                    if message.get_channel_name() == control.channel {
                        control.receive(message.get_payload_bytes());
                        continue;
                    }
                    if message.get_channel_name() == control.traces {
                        control.receive_trace(message.get_payload_bytes());
                        continue;
                    }
                    let Some(channel) = message.get_channel_name().strip_prefix(&pubsub_prefix) else { continue };
                    let (Some((_, inbox)), Some(delivered)) =
                        (routes.actors.get(channel), parse_delivered(message.get_payload_bytes()))
                    else {
                        continue;
                    };
                    let _ = inbox.send(Input::Delivered(delivered));
                }
                command = commands.recv() => {
                    let Some(command) = command else { return };
                    let ok = match routes.apply(command) {
                        Change::Subscribe(channel) => sink.subscribe(format!("{pubsub_prefix}{channel}")).await.is_ok(),
                        Change::Unsubscribe(channel) => {
                            sink.unsubscribe(format!("{pubsub_prefix}{channel}")).await.is_ok()
                        }
                        Change::None => true,
                    };
                    if !ok {
                        break;
                    }
                    routes.confirm();
                }
            }
        }
        up.store(false, Ordering::SeqCst);
        tracing::warn!("pub/sub connection lost; reconnecting");
        tokio::time::sleep(delay).await;
    }
}
