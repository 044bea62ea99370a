//! The RabbitMQ (AMQP 0.9.1) source: a durable queue bound to an exchange, consumed with
//! manual acknowledgements.
//!
//! An unroutable event is published to the dead-letter exchange (`<exchange>.dead` unless
//! configured, with its queue `<queue>.dead`) with the reason in a
//! `Tidewire-Dead-Letter-Reason` header, and acknowledged once the broker confirms that
//! publish. The queue is also declared with `x-dead-letter-exchange`: should the broker
//! not confirm, the event is rejected and still lands there, without the reason (which
//! is logged). An event the node cannot take right now is requeued after a short pause;
//! a connection or channel failure reconnects with exponential backoff, and the broker
//! redelivers what was not acknowledged.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::Confirmation;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};

use super::routing::Route;
use super::{deliver, AmqpSource, Backoff, Outcome};
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
    // Dead letters are acknowledged only once the broker confirms their publish.
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    channel.exchange_declare(source.exchange.as_str().into(), exchange_kind(&source.exchange_type), durable, FieldTable::default()).await?;
    let dead_exchange = source.dead_letter_exchange.clone().unwrap_or_else(|| format!("{}.dead", source.exchange));
    let dead_queue = format!("{}.dead", source.queue);
    channel.exchange_declare(dead_exchange.as_str().into(), ExchangeKind::Fanout, durable, FieldTable::default()).await?;
    let queue_options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(dead_queue.as_str().into(), queue_options, FieldTable::default()).await?;
    channel.queue_bind(dead_queue.as_str().into(), dead_exchange.as_str().into(), "".into(), QueueBindOptions::default(), FieldTable::default()).await?;
    let mut arguments = FieldTable::default();
    arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(dead_exchange.as_str().into()));
    channel.queue_declare(source.queue.as_str().into(), queue_options, arguments).await?;
    for binding in &source.bindings {
        channel
            .queue_bind(source.queue.as_str().into(), source.exchange.as_str().into(), binding.as_str().into(), QueueBindOptions::default(), FieldTable::default())
            .await?;
    }
    let tag = format!("tidewire-{}", fastrand::u32(..));
    let mut consumer = channel.basic_consume(source.queue.as_str().into(), tag.as_str().into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
    tracing::info!(source = %source.name, queue = %source.queue, "AMQP source consuming");
    backoff.reset();
    let shutdown = hub.shutdown_token();
    loop {
        let delivery = tokio::select! {
            delivery = consumer.next() => delivery,
            () = shutdown.cancelled() => {
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
            Outcome::DeadLetter(reason) => dead_letter(&channel, &dead_exchange, &source.name, delivery, &reason).await?,
            Outcome::Retry(_) => {
                tokio::time::sleep(Duration::from_millis(250)).await;
                delivery.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await?;
            }
        }
    }
}

/// Publishes an unroutable event to the dead-letter exchange with the reason in a
/// header, then acknowledges it; rejects it instead when the broker does not confirm
/// that publish (the queue's own dead-lettering then takes it there, without the reason).
async fn dead_letter(channel: &lapin::Channel, exchange: &str, source: &str, delivery: Delivery, reason: &str) -> Result<(), Error> {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(super::DEAD_LETTER_REASON_HEADER.into(), AMQPValue::LongString(super::header_reason(reason).as_str().into()));
    let properties = delivery.properties.clone().with_headers(headers);
    let confirmation = channel
        .basic_publish(exchange.into(), delivery.routing_key.clone(), BasicPublishOptions::default(), &delivery.data, properties)
        .await?
        .await?;
    if matches!(confirmation, Confirmation::Ack(_)) {
        delivery.ack(BasicAckOptions::default()).await?;
    } else {
        tracing::warn!(source, reason, "the dead-letter exchange did not confirm; rejecting the event without its reason");
        delivery.nack(BasicNackOptions { requeue: false, ..BasicNackOptions::default() }).await?;
    }
    Ok(())
}
