//! The RabbitMQ (AMQP 0.9.1) source: a durable queue bound to an exchange, consumed with
//! manual acknowledgements.
//!
//! An unroutable event is published to the dead-letter exchange (`<exchange>.dead` unless
//! configured, with its queue `<queue>.dead`) with the reason in a
//! `Tidewire-Dead-Letter-Reason` header and the exchange it came from in
//! `Tidewire-Original-Exchange` (its routing key is kept), then acknowledged once the
//! broker confirms that publish. Dead letters go out on a connection of their own: the
//! broker blocks publishing connections during a memory or disk alarm, and consuming
//! must not stop with them. The queue is also declared with `x-dead-letter-exchange`,
//! so an event whose dead letter is refused, or not confirmed within five seconds, is
//! rejected and still lands there, without the reason (which is logged).
//!
//! An event the node cannot take right now is requeued after a short pause; a
//! connection or channel failure reconnects with exponential backoff, and the broker
//! redelivers what was not acknowledged.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::Confirmation;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};

use super::routing::Route;
use super::{AmqpSource, Backoff, Outcome, deliver};
use crate::hub::Hub;

fn exchange_kind(name: &str) -> ExchangeKind {
    match name {
        "direct" => ExchangeKind::Direct,
        "fanout" => ExchangeKind::Fanout,
        "headers" => ExchangeKind::Headers,
        "topic" => ExchangeKind::Topic,
        other => ExchangeKind::Custom(other.to_owned()),
    }
}

/// Runs the source until the node drains.
pub async fn run(hub: Hub, source: AmqpSource, routes: Arc<[Route]>) {
    let mut backoff = Backoff::new(source.reconnect_delay, source.max_reconnect_wait);
    loop {
        match consume(&hub, &source, &routes, &mut backoff).await {
            Ok(()) => return, // draining
            Err(e) => tracing::warn!(source = %source.name, "AMQP source failed: {e}; reconnecting"),
        }
        if !backoff.wait(&hub).await {
            return;
        }
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn consume(hub: &Hub, source: &AmqpSource, routes: &[Route], backoff: &mut Backoff) -> Result<(), Error> {
    let connection = Connection::connect(&source.url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel.basic_qos(source.prefetch, BasicQosOptions::default()).await?;
    let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    channel
        .exchange_declare(
            source.exchange.as_str().into(),
            exchange_kind(&source.exchange_type),
            durable,
            FieldTable::default(),
        )
        .await?;
    let dead_exchange = source.dead_letter_exchange.clone().unwrap_or_else(|| format!("{}.dead", source.exchange));
    let dead_queue = format!("{}.dead", source.queue);
    channel
        .exchange_declare(dead_exchange.as_str().into(), ExchangeKind::Fanout, durable, FieldTable::default())
        .await?;
    let queue_options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(dead_queue.as_str().into(), queue_options, FieldTable::default()).await?;
    channel
        .queue_bind(
            dead_queue.as_str().into(),
            dead_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut arguments = FieldTable::default();
    arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(dead_exchange.as_str().into()));
    channel.queue_declare(source.queue.as_str().into(), queue_options, arguments).await?;
    for binding in &source.bindings {
        channel
            .queue_bind(
                source.queue.as_str().into(),
                source.exchange.as_str().into(),
                binding.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    let dead_letters = DeadLetters::connect(&source.url, dead_exchange, &source.name).await?;
    let tag = format!("tidewire-{}", fastrand::u32(..));
    let mut consumer = channel
        .basic_consume(
            source.queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(source = %source.name, queue = %source.queue, "AMQP source consuming");
    backoff.reset();
    let shutdown = hub.shutdown_token();
    loop {
        let delivery = tokio::select! {
            delivery = consumer.next() => delivery,
            () = shutdown.cancelled() => {
                let _ = dead_letters.connection.close(200, "tidewire is shutting down".into()).await;
                let _ = connection.close(200, "tidewire is shutting down".into()).await;
                return Ok(());
            }
        };
        let Some(delivery) = delivery else { return Err("the AMQP consumer ended".into()) };
        let delivery = delivery?;
        let key = delivery.routing_key.as_str().to_owned();
        match deliver(hub, routes, &source.name, &key, &delivery.data).await {
            Outcome::Published => {
                delivery.ack(BasicAckOptions::default()).await?;
            }
            Outcome::DeadLetter(reason) => dead_letters.send(delivery, &reason).await?,
            Outcome::Retry(_) | Outcome::Unavailable(_) => {
                tokio::time::sleep(Duration::from_millis(250)).await;
                delivery.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await?;
            }
        }
    }
}

/// How long the broker may take to confirm a dead letter before the event is rejected
/// instead (a memory or disk alarm blocks publishing).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// The publishing side of dead-lettering: its own connection and a channel in confirm
/// mode.
struct DeadLetters {
    connection: Connection,
    channel: lapin::Channel,
    exchange: String,
    source: String,
}

impl DeadLetters {
    async fn connect(url: &str, exchange: String, source: &str) -> Result<DeadLetters, Error> {
        let connection = Connection::connect(url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(DeadLetters { connection, channel, exchange, source: source.to_owned() })
    }

    /// Publishes `delivery` to the dead-letter exchange with `reason`, then acknowledges
    /// it; rejects it instead (the queue's own dead-lettering takes it there, without the
    /// reason) when the broker refuses or does not confirm in time. An error means the
    /// publishing connection failed: the event was rejected, and the source reconnects.
    async fn send(&self, delivery: Delivery, reason: &str) -> Result<(), Error> {
        let published = async {
            let confirm = self
                .channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    delivery.routing_key.clone(),
                    BasicPublishOptions::default(),
                    &delivery.data,
                    dead_letter_properties(&delivery, reason),
                )
                .await?;
            confirm.await
        };
        let failure = match tokio::time::timeout(CONFIRM_TIMEOUT, published).await {
            Ok(Ok(Confirmation::Ack(_))) => {
                delivery.ack(BasicAckOptions::default()).await?;
                return Ok(());
            }
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => {
                tracing::warn!(
                    source = %self.source,
                    "the broker did not confirm a dead letter in {CONFIRM_TIMEOUT:?}"
                );
                None
            }
        };
        tracing::warn!(
            source = %self.source,
            reason,
            "dead letter not confirmed; rejecting the event, whose reason is only in this log"
        );
        delivery.nack(BasicNackOptions { requeue: false, ..BasicNackOptions::default() }).await?;
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

/// The dead letter's properties: the original's descriptive ones (not `user-id`, which
/// the broker checks against the publishing login, nor `expiration`, which would let it
/// vanish from the dead-letter queue), persistent, and headers that say why and whence.
fn dead_letter_properties(delivery: &Delivery, reason: &str) -> BasicProperties {
    let original = &delivery.properties;
    let mut headers = original.headers().clone().unwrap_or_default();
    headers.insert(
        super::DEAD_LETTER_REASON_HEADER.into(),
        AMQPValue::LongString(super::header_reason(reason).as_str().into()),
    );
    headers.insert("Tidewire-Original-Exchange".into(), AMQPValue::LongString(delivery.exchange.as_str().into()));
    let mut properties = BasicProperties::default().with_headers(headers).with_delivery_mode(2);
    if let Some(v) = original.content_type() {
        properties = properties.with_content_type(v.clone());
    }
    if let Some(v) = original.content_encoding() {
        properties = properties.with_content_encoding(v.clone());
    }
    if let Some(v) = original.correlation_id() {
        properties = properties.with_correlation_id(v.clone());
    }
    if let Some(v) = original.message_id() {
        properties = properties.with_message_id(v.clone());
    }
    if let Some(v) = original.timestamp() {
        properties = properties.with_timestamp(*v);
    }
    if let Some(v) = original.kind() {
        properties = properties.with_type(v.clone());
    }
    if let Some(v) = original.app_id() {
        properties = properties.with_app_id(v.clone());
    }
    properties
}
