//! The NATS source: core NATS (at most once) or a JetStream durable pull consumer (at
//! least once, acknowledged after the node accepted the publication).
//!
//! Unroutable events are published to the dead-letter subject with the reason in a
//! `Tidewire-Dead-Letter-Reason` header (and terminated, on JetStream, so they are not
//! redelivered). The client reconnects by itself; a failed consumer is re-created with
//! exponential backoff.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures_util::StreamExt;

use super::routing::Route;
use super::{Backoff, NatsSource, Outcome, deliver};
use crate::hub::Hub;

/// Runs the source until the node drains.
pub async fn run(hub: Hub, source: NatsSource, routes: Arc<[Route]>) {
    let mut backoff = Backoff::new(source.reconnect_delay, source.max_reconnect_wait);
    // Stream sequences this node published recently: a broker that crashed before
    // persisting an acknowledgement redelivers them, and those repeats are skipped.
    let mut published = Recent::default();
    loop {
        let result = match &source.jetstream {
            Some(js) => consume_jetstream(&hub, &source, js, &routes, &mut backoff, &mut published).await,
            None => consume_core(&hub, &source, &routes, &mut backoff).await,
        };
        match result {
            Ok(()) => return,
            Err(e) => tracing::warn!(source = %source.name, "NATS source failed: {e}; reconnecting"),
        }
        if !backoff.wait(&hub).await {
            return;
        }
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn connect(source: &NatsSource) -> Result<async_nats::Client, Error> {
    let options =
        async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(2)).retry_on_initial_connect();
    let client = tokio::time::timeout(Duration::from_secs(5), options.connect(source.url.as_str()))
        .await
        .map_err(|_| "NATS connect timed out")??;
    Ok(client)
}

async fn dead_letter(client: &async_nats::Client, source: &NatsSource, reason: &str, payload: bytes::Bytes) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(super::DEAD_LETTER_REASON_HEADER, super::header_reason(reason).as_str());
    if let Err(e) = client.publish_with_headers(source.dead_letter_subject.clone(), headers, payload).await {
        tracing::warn!(source = %source.name, "cannot publish a dead letter: {e}");
    }
}

async fn consume_core(hub: &Hub, source: &NatsSource, routes: &[Route], backoff: &mut Backoff) -> Result<(), Error> {
    let client = connect(source).await?;
    let mut subscription = match &source.queue_group {
        Some(group) => client.queue_subscribe(source.subject.clone(), group.clone()).await?,
        None => client.subscribe(source.subject.clone()).await?,
    };
    tracing::info!(source = %source.name, subject = %source.subject, "NATS source subscribed");
    backoff.reset();
    let shutdown = hub.shutdown_token();
    loop {
        let message = tokio::select! {
            message = subscription.next() => message.ok_or("NATS subscription ended")?,
            () = shutdown.cancelled() => return Ok(()),
        };
        match deliver(hub, routes, &source.name, message.subject.as_str(), &message.payload).await {
            Outcome::Published => {}
            Outcome::DeadLetter(reason) => dead_letter(&client, source, &reason, message.payload.clone()).await,
            // Core NATS cannot redeliver: the event is lost, and said so (use JetStream).
            Outcome::Retry(reason) | Outcome::Unavailable(reason) => {
                dead_letter(&client, source, &format!("not accepted: {reason}"), message.payload.clone()).await
            }
        }
    }
}

async fn consume_jetstream(
    hub: &Hub,
    source: &NatsSource,
    js: &super::JetStream,
    routes: &[Route],
    backoff: &mut Backoff,
    published: &mut Recent,
) -> Result<(), Error> {
    let client = connect(source).await?;
    let context = jetstream::new(client.clone());
    let stream = context
        .get_or_create_stream(jetstream::stream::Config {
            name: js.stream.clone(),
            subjects: vec![source.subject.clone()],
            ..Default::default()
        })
        .await?;
    // A stream deleted and created again numbers its messages from 1 again: what this
    // node published from the old one says nothing about the new one.
    published.for_stream(stream.cached_info().created.unix_timestamp_nanos());
    let consumer: jetstream::consumer::Consumer<pull::Config> = stream
        .get_or_create_consumer(
            &js.durable,
            pull::Config {
                durable_name: Some(js.durable.clone()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer.messages().await?;
    tracing::info!(source = %source.name, stream = %js.stream, durable = %js.durable, "JetStream source consuming");
    backoff.reset();
    let shutdown = hub.shutdown_token();
    loop {
        let message = tokio::select! {
            message = messages.next() => message.ok_or("JetStream consumer ended")??,
            () = shutdown.cancelled() => return Ok(()),
        };
        // Skip only what this node itself published before (a broker that lost our ack
        // redelivers it, with its delivery count reset by a restart); a NAK'd message
        // was never published, so it is not in the set and goes through again.
        let sequence = message.info().map(|info| info.stream_sequence).unwrap_or(0);
        if published.contains(sequence) {
            message.double_ack().await?;
            continue;
        }
        match deliver(hub, routes, &source.name, message.subject.as_str(), &message.payload).await {
            Outcome::Published => {
                published.insert(sequence);
                // Wait for the broker to confirm, so a restart redelivers as little as possible.
                message.double_ack().await?;
            }
            Outcome::DeadLetter(reason) => {
                dead_letter(&client, source, &reason, message.payload.clone()).await;
                message.ack_with(AckKind::Term).await?;
            }
            Outcome::Retry(_) | Outcome::Unavailable(_) => {
                message.ack_with(AckKind::Nak(Some(Duration::from_millis(500)))).await?
            }
        }
    }
}

/// The last stream sequences published (bounded), to recognise redeliveries, for one
/// incarnation of the stream (its creation time).
#[derive(Default)]
struct Recent {
    stream_created: Option<i128>,
    order: std::collections::VecDeque<u64>,
    set: std::collections::HashSet<u64>,
}

impl Recent {
    const KEEP: usize = 65_536;

    /// Forgets every sequence when the stream is not the one they were published from.
    fn for_stream(&mut self, created: i128) {
        if self.stream_created != Some(created) {
            self.stream_created = Some(created);
            self.order.clear();
            self.set.clear();
        }
    }

    fn insert(&mut self, sequence: u64) {
        if sequence == 0 || !self.set.insert(sequence) {
            return;
        }
        self.order.push_back(sequence);
        if self.order.len() > Self::KEEP {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    fn contains(&self, sequence: u64) -> bool {
        self.set.contains(&sequence)
    }
}

#[cfg(test)]
mod tests {
    use super::Recent;

    #[test]
    fn recent_sequences_belong_to_one_incarnation_of_the_stream() {
        let mut recent = Recent::default();
        recent.for_stream(1);
        recent.insert(1);
        recent.insert(2);
        recent.for_stream(1);
        assert!(recent.contains(1) && recent.contains(2), "a reconnect to the same stream keeps them");
        recent.for_stream(2);
        assert!(!recent.contains(1) && !recent.contains(2), "a recreated stream starts over");
    }

    #[test]
    fn recent_keeps_a_bounded_window() {
        let mut recent = Recent::default();
        for sequence in 1..=(Recent::KEEP as u64 + 10) {
            recent.insert(sequence);
        }
        assert!(!recent.contains(10) && recent.contains(11) && recent.contains(Recent::KEEP as u64 + 10));
        assert_eq!(recent.set.len(), Recent::KEEP);
    }
}
