//! The PostgreSQL outbox source: publications a service committed in its own
//! transaction, in an outbox table, published in order and removed once published.
//!
//! The table (created if missing, with its dead-letter table and a trigger that
//! notifies on insert):
//!
//! ```sql
//! CREATE TABLE tidewire_outbox (
//!   id bigserial PRIMARY KEY,
//!   channel text,                       -- the channel; NULL: routed by the [[route]] rules
//!   routing_key text NOT NULL DEFAULT '',-- what `when_key` and `{key}` see when routed
//!   type text,                          -- the message type (required with a channel)
//!   key text,                           -- the publication's key (latest value per key)
//!   op text,                            -- 'delete' or 'clear'; NULL: an upsert
//!   data jsonb NOT NULL,
//!   created_at timestamptz NOT NULL DEFAULT now(),
//!   attempts integer NOT NULL DEFAULT 0
//! );
//! -- a producer, inside the transaction that changes its own state:
//! INSERT INTO tidewire_outbox (channel, type, key, data)
//!   VALUES ('lp-performance', 'lp-metrics', 'LMAX', '{"lpName":"LMAX","latencyMs":12}');
//! ```
//!
//! A node takes a batch in one transaction, under a transaction-scoped advisory lock on
//! the table, so several nodes on one table take turns and rows go out in id order,
//! one node at a time: nothing is taken by two nodes, and per-channel order holds.
//! Each row is published with an idempotency key of its own (`pg:<id>:<table>`), and
//! the rows published are deleted in the same transaction: a node that stops before
//! committing leaves them for the next batch, whose publications the hub recognises
//! within its idempotency window (so they are not published twice), and at least once
//! after it. A row no route can publish, or the hub refuses for good, moves to
//! `<table>_dead` with the reason; a row the node refuses for now (a publish rate, an
//! internal error) stops the batch and is tried again, and after `max_attempts` it
//! moves to the dead table too, so a poison row never blocks the table behind it. While
//! the broker behind the hub is down no row is to blame: the batch waits, uncounted.
//! `LISTEN`/`NOTIFY` wakes the source at once; a poll every
//! `poll_interval` covers a lost notification.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tidewire_protocol::{NewPublication, Op};
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::routing::Route;
use super::{Backoff, Outcome, PostgresSource};
use crate::hub::Hub;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The longest table name: the idempotency key `pg:<id>:<table>` must fit in 64 bytes.
pub const MAX_TABLE_NAME: usize = 40;

/// Whether `name` is a table name this source interpolates into SQL as it is.
pub fn valid_table_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
        && name.len() <= MAX_TABLE_NAME
}

/// Runs the source until the node drains.
pub async fn run(hub: Hub, source: PostgresSource, routes: Arc<[Route]>) {
    let mut backoff = Backoff::new(source.reconnect_delay, source.max_reconnect_wait);
    loop {
        match consume(&hub, &source, &routes, &mut backoff).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(source = %source.name, "PostgreSQL source failed: {e}; reconnecting"),
        }
        if !backoff.wait(&hub).await {
            return;
        }
    }
}

/// What one batch did.
enum Batch {
    /// Rows went out (published or dead-lettered): look again at once.
    Took,
    /// Another node holds the table: look again shortly.
    Busy,
    /// Nothing to take: wait for a notification or the poll.
    Empty,
    /// A row could not be published now: wait before trying it again.
    Stalled,
}

async fn consume(hub: &Hub, source: &PostgresSource, routes: &[Route], backoff: &mut Backoff) -> Result<(), Error> {
    let connect = tokio_postgres::connect(&source.url, NoTls);
    let (mut client, mut connection) =
        tokio::time::timeout(Duration::from_secs(5), connect).await.map_err(|_| "PostgreSQL connect timed out")??;
    // The connection is driven by its own task, which also hears the notifications.
    let notified = Arc::new(Notify::new());
    let (gone_tx, mut gone) = tokio::sync::oneshot::channel::<String>();
    let wake = notified.clone();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        let why = loop {
            match messages.next().await {
                Some(Ok(AsyncMessage::Notification(_))) => wake.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(e)) => break e.to_string(),
                None => break "the connection closed".to_owned(),
            }
        };
        let _ = gone_tx.send(why);
    });
    let table = &source.table;
    if source.create_tables {
        create_tables(&mut client, table).await?;
    }
    client.batch_execute(&format!("LISTEN {table}")).await?;
    tracing::info!(source = %source.name, table, "PostgreSQL outbox source consuming");
    backoff.reset();
    let shutdown = hub.shutdown_token();
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let pause = match batch(hub, source, routes, &mut client).await? {
            // Give the other nodes on the table their turn: one that found it busy looks
            // again sooner than the one that just had it.
            Batch::Took => Duration::from_millis(10),
            Batch::Busy => Duration::from_millis(5),
            Batch::Stalled => Duration::from_millis(500),
            Batch::Empty => source.poll_interval,
        };
        tokio::select! {
            () = notified.notified() => {}
            () = tokio::time::sleep(pause) => {}
            () = shutdown.cancelled() => return Ok(()),
            why = &mut gone => return Err(why.unwrap_or_default().into()),
        }
    }
}

/// Creates the outbox table, its dead-letter table and the notifying trigger when
/// missing (nodes starting together take turns).
async fn create_tables(client: &mut Client, table: &str) -> Result<(), Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&format!("tidewire-ddl:{table}")]).await?;
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (
           id bigserial PRIMARY KEY,
           channel text,
           routing_key text NOT NULL DEFAULT '',
           type text,
           key text,
           op text,
           data jsonb NOT NULL,
           created_at timestamptz NOT NULL DEFAULT now(),
           attempts integer NOT NULL DEFAULT 0
         );
         CREATE TABLE IF NOT EXISTS {table}_dead (
           LIKE {table},
           reason text NOT NULL,
           dead_at timestamptz NOT NULL DEFAULT now()
         );
         CREATE OR REPLACE FUNCTION {table}_notify() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN PERFORM pg_notify('{table}', ''); RETURN NULL; END $$;
         CREATE OR REPLACE TRIGGER {table}_notify AFTER INSERT ON {table}
           FOR EACH STATEMENT EXECUTE FUNCTION {table}_notify();"
    ))
    .await?;
    tx.commit().await?;
    Ok(())
}

/// One row of the outbox.
struct Row {
    id: i64,
    channel: Option<String>,
    routing_key: String,
    kind: Option<String>,
    key: Option<String>,
    op: Option<String>,
    data: String,
    attempts: i32,
}

/// Takes, publishes and removes one batch of rows, in one transaction.
async fn batch(hub: &Hub, source: &PostgresSource, routes: &[Route], client: &mut Client) -> Result<Batch, Error> {
    let table = &source.table;
    let tx = client.transaction().await?;
    let locked: bool = tx.query_one("SELECT pg_try_advisory_xact_lock(hashtext($1))", &[table]).await?.get(0);
    if !locked {
        return Ok(Batch::Busy);
    }
    let limit = i64::from(source.batch);
    let rows = tx
        .query(
            &format!(
                "SELECT id, channel, routing_key, type, key, op, data::text, attempts FROM {table} \
                 ORDER BY id LIMIT $1 FOR UPDATE"
            ),
            &[&limit],
        )
        .await?;
    if rows.is_empty() {
        return Ok(Batch::Empty);
    }
    let mut published = Vec::new();
    let mut outcome = Batch::Took;
    for row in rows {
        let row = Row {
            id: row.get(0),
            channel: row.get(1),
            routing_key: row.get(2),
            kind: row.get(3),
            key: row.get(4),
            op: row.get(5),
            data: row.get(6),
            attempts: row.get(7),
        };
        let shown = row.channel.clone().unwrap_or_else(|| row.routing_key.clone());
        match super::deliver_publication(hub, &source.name, &shown, publication(&row, routes, table)).await {
            Outcome::Published => published.push(row.id),
            Outcome::DeadLetter(reason) => dead_letter(&tx, table, row.id, &reason).await?,
            Outcome::Retry(reason) if row.attempts + 1 >= source.max_attempts => {
                let reason = format!("not published after {} attempts: {reason}", row.attempts + 1);
                dead_letter(&tx, table, row.id, &reason).await?;
            }
            Outcome::Retry(_) => {
                // The rows behind it wait: order first.
                tx.execute(&format!("UPDATE {table} SET attempts = attempts + 1 WHERE id = $1"), &[&row.id]).await?;
                outcome = Batch::Stalled;
                break;
            }
            // Nothing can be published now: the row is not to blame, and waits uncounted.
            Outcome::Unavailable(_) => {
                outcome = Batch::Stalled;
                break;
            }
        }
    }
    if !published.is_empty() {
        tx.execute(&format!("DELETE FROM {table} WHERE id = ANY($1)"), &[&published]).await?;
    }
    tx.commit().await?;
    Ok(outcome)
}

/// Moves a row to the dead-letter table with the reason.
async fn dead_letter(tx: &tokio_postgres::Transaction<'_>, table: &str, id: i64, reason: &str) -> Result<(), Error> {
    let reason = super::header_reason(reason);
    tx.execute(
        &format!(
            "INSERT INTO {table}_dead (id, channel, routing_key, type, key, op, data, created_at, attempts, reason) \
             SELECT id, channel, routing_key, type, key, op, data, created_at, attempts, $2 FROM {table} WHERE id = $1"
        ),
        &[&id, &reason],
    )
    .await?;
    tx.execute(&format!("DELETE FROM {table} WHERE id = $1"), &[&id]).await?;
    Ok(())
}

/// What a row publishes: its own channel, type and key, or what the routes make of its
/// data and routing key (its type and key, when set, still win).
fn publication(row: &Row, routes: &[Route], table: &str) -> Result<NewPublication, String> {
    let mut publication = match &row.channel {
        Some(channel) => {
            let kind = row.kind.clone().ok_or("a row with a channel needs a type")?;
            let data = serde_json::from_str(&row.data).map_err(|e| format!("data is not JSON: {e}"))?;
            NewPublication { channel: channel.clone(), kind, data, ..NewPublication::default() }
        }
        None => super::routing::route(routes, &row.routing_key, row.data.as_bytes()).map_err(|e| e.to_string())?,
    };
    if let Some(kind) = &row.kind {
        publication.kind.clone_from(kind);
    }
    if row.key.is_some() {
        publication.key.clone_from(&row.key);
    }
    publication.op = match row.op.as_deref() {
        None | Some("upsert") => Op::Upsert,
        Some("delete") => Op::Delete,
        Some("clear") => Op::Clear,
        Some(other) => return Err(format!("unknown op {other:?} (upsert, delete or clear)")),
    };
    publication.idempotency_key = Some(format!("pg:{}:{table}", row.id));
    Ok(publication)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_plain_identifiers_that_fit_the_idempotency_key() {
        for good in ["tidewire_outbox", "_x", "a1"] {
            assert!(valid_table_name(good), "{good}");
        }
        for bad in ["", "1a", "Outbox", "a-b", "a;drop", "a b", &"a".repeat(MAX_TABLE_NAME + 1)] {
            assert!(!valid_table_name(bad), "{bad}");
        }
        let key = format!("pg:{}:{}", i64::MAX, "a".repeat(MAX_TABLE_NAME));
        assert!(key.len() <= tidewire_protocol::command::MAX_IDEMPOTENCY_KEY_BYTES);
    }
}
