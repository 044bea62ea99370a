//! Publishes: the bounded queue, its pacing, and the promise that each is answered.
//!
//! Each publish goes out with a command id and an idempotency key of this client's
//! (`<instance>-<n>`), and stays in `unacked` until its `published` (or a refusal)
//! arrives. When the link is lost, the unanswered ones go back to the front of the queue
//! and are sent again, with the same keys, after the next `connected`: the server
//! publishes a key it has seen once, so a publish caught in a cut link or a node's
//! shutdown arrives exactly once. One still unanswered after the server's idempotency
//! window is not resent (it might then be published twice) but reported as unconfirmed.
//! A publish too large for the server's message limit is refused here, with an error,
//! rather than sent to be closed for.

use std::collections::VecDeque;
use std::time::Duration;

use tidewire_protocol::batch::{BatchConfig, Batcher, Dropped, Outbound, Position};

use super::backoff::Jitter;
use super::link::Link;
use super::{Action, ClientCore, ClientError, OutgoingPublish, TransportId};

/// The server's default command rate (`commandsPerSecond`), assumed until one announces
/// its own.
pub const DEFAULT_COMMANDS_PER_SECOND: u32 = 1000;

/// What a publish's `id` and `idempotencyKey` add to its command, at most.
const PUBLISH_ENVELOPE_BYTES: usize = 120;

/// Pacing that keeps publishes within a server's command limit: nine tenths of its rate,
/// leaving room for other commands and for frames that reach the server closer together
/// than they left; as many per frame as a 16 ms frame's share of that (at least one, at
/// most half the announced burst), with the interval set so the average is that rate
/// (1000/s: 15 every 16.7 ms; 100/s: 2 every 22.2 ms; 1000/s with a burst of 10: 5 every
/// 5.6 ms). Publishes beyond it wait instead of being refused by the server's limiter;
/// how many may wait is the queue's own bound ([`Batcher::for_own_queue`]), not frames'.
pub fn publish_pacing(commands_per_second: u32, burst: Option<u32>) -> BatchConfig {
    const FRAME_MICROS: u64 = 16_000;
    let rate = (u64::from(commands_per_second) * 9 / 10).max(1);
    let half_burst = burst.map_or(u64::MAX, |b| u64::from(b / 2).max(1));
    let per_frame = (rate * FRAME_MICROS).div_ceil(1_000_000).clamp(1, half_burst);
    let interval = Duration::from_micros((per_frame * 1_000_000).div_ceil(rate));
    BatchConfig {
        max_batch: usize::try_from(per_frame).unwrap_or(usize::MAX),
        interval,
        max_queued_batches: 1,
        max_bytes: usize::MAX,
    }
}

/// A publish on the wire, waiting for its answer.
#[derive(Debug)]
struct Unacked {
    id: u64,
    outbound: Outbound,
    first_sent: Duration,
}

/// The publishes of one client: queued, paced, sent and waiting for their answers.
#[derive(Debug)]
pub struct Publishes {
    /// Waiting to be sent, paced to the server's command rate.
    queue: Batcher,
    /// The local number of the last publish queued.
    last_number: u64,
    /// Sent and not answered yet, oldest first.
    unacked: VecDeque<Unacked>,
    /// When queued publishes that were sent before (and came back unanswered) were first
    /// sent, by local number, in increasing order like the queue itself.
    first_sent: VecDeque<(u64, Duration)>,
    /// This client's idempotency keys are `<key_prefix>-<local number>`.
    key_prefix: String,
    /// At most this many wait in the queue, and at most this many wait for answers.
    bound: usize,
}

impl Publishes {
    pub fn new(bound: usize, seed: u64) -> Publishes {
        // Until a server announces its command rate, publishes are paced at its default.
        let queue = Batcher::for_own_queue(publish_pacing(DEFAULT_COMMANDS_PER_SECOND, None), bound);
        // Its own draw from the seed: one client's idempotency keys are no other's.
        let key_prefix = format!("{:016x}", Jitter::new(seed ^ 0x1de4_907e_c0de_5eed).next_u64());
        Publishes { queue, last_number: 0, unacked: VecDeque::new(), first_sent: VecDeque::new(), key_prefix, bound }
    }

    /// When the pacing lets the next publishes go.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.queue.poll_timeout()
    }

    /// Paces to a server's announced command rate.
    pub fn reconfigure(&mut self, commands_per_second: u32, burst: Option<u32>) -> Dropped {
        self.queue.reconfigure(publish_pacing(commands_per_second, burst))
    }

    /// Whether the command `id` is a publish waiting for its answer.
    pub fn is_unacked(&self, id: u64) -> bool {
        self.unacked.iter().any(|u| u.id == id)
    }

    /// The idempotency key of this client's publish number `n`.
    fn idempotency_key(&self, n: u64) -> String {
        format!("{}-{n}", self.key_prefix)
    }

    /// When the publish numbered `n`, about to be sent, was sent first (`now` if never).
    fn first_sent(&mut self, n: u64, now: Duration) -> Duration {
        // The queue goes out in increasing local numbers: earlier entries belong to
        // publishes the queue dropped since.
        while self.first_sent.front().is_some_and(|(m, _)| *m < n) {
            self.first_sent.pop_front();
        }
        match self.first_sent.front() {
            Some((m, at)) if *m == n => {
                let at = *at;
                self.first_sent.pop_front();
                at
            }
            _ => now,
        }
    }

    /// The server answered the command `id`: if it was a publish, it is done.
    pub fn acknowledged(&mut self, id: u64) {
        if let Some(index) = self.unacked.iter().position(|u| u.id == id) {
            self.unacked.remove(index);
        }
    }

    /// Puts every unanswered publish back in front of the queue, in order, to be sent
    /// again (with its idempotency key) when the link allows.
    pub fn requeue_unacked(&mut self) -> Dropped {
        if self.unacked.is_empty() {
            return Dropped::default();
        }
        let waiting = self.queue.take_queue();
        let mut again = Vec::with_capacity(self.unacked.len());
        // Everything still in `first_sent` comes after every sent publish.
        for unacked in self.unacked.drain(..).rev() {
            if let Some(position) = unacked.outbound.position() {
                self.first_sent.push_front((position.seq, unacked.first_sent));
            }
            again.push(unacked.outbound);
        }
        again.reverse();
        let mut dropped = Dropped::default();
        for outbound in again.into_iter().chain(waiting) {
            dropped.add(self.queue.push(outbound));
        }
        dropped
    }
}

impl ClientCore {
    pub(super) fn on_publish(&mut self, publish: OutgoingPublish) {
        let size = publish.command.len() + PUBLISH_ENVELOPE_BYTES;
        let max = self.limits.max_message_bytes;
        if size > max {
            self.push(Action::Error(ClientError::PublishTooLarge { channel: publish.channel, size, max }));
            return;
        }
        let publishes = &mut self.publishes;
        publishes.last_number += 1;
        let position = Position {
            channel: publish.channel.as_str().into(),
            seq: publishes.last_number,
            key: publish.key.as_deref().map(Into::into),
        };
        let dropped = publishes.queue.push(Outbound::publication(publish.command, position));
        self.report_dropped(dropped);
        self.flush_publishes();
    }

    /// Tells the app about publishes its queue dropped.
    pub(super) fn report_dropped(&mut self, dropped: Dropped) {
        if dropped.total() > 0 {
            self.push(Action::Error(ClientError::PublishesDropped { count: dropped.total() }));
        }
    }

    /// Sends the publishes that are due, paced by the batcher, while fewer than the
    /// queue's bound wait for an answer.
    pub(super) fn flush_publishes(&mut self) {
        let Link::Connected(transport) = self.link else { return };
        while self.publishes.unacked.len() < self.publishes.bound {
            let Some(frame) = self.publishes.queue.poll_frame(self.now) else { break };
            for outbound in frame.messages {
                self.send_publish(transport, outbound);
            }
        }
    }

    fn send_publish(&mut self, transport: TransportId, outbound: Outbound) {
        let Some(position) = outbound.position() else { return };
        let (n, channel) = (position.seq, position.channel.to_string());
        let first_sent = self.publishes.first_sent(n, self.now);
        if self.now.saturating_sub(first_sent) > self.limits.idempotency_window {
            // The server may have forgotten its key: sending it again could publish it twice.
            self.push(Action::Error(ClientError::PublishUnconfirmed { channel }));
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let key = self.publishes.idempotency_key(n);
        // `OutgoingPublish` always makes a command of this shape.
        let Some(text) = tidewire_protocol::command::publish_with_id(outbound.message(), id, &key) else { return };
        let max = self.limits.max_message_bytes;
        if text.len() > max {
            self.push(Action::Error(ClientError::PublishTooLarge { channel, size: text.len(), max }));
            return;
        }
        self.push(Action::Send { transport, text });
        self.publishes.unacked.push_back(Unacked { id, outbound, first_sent });
    }

    /// Puts the unanswered publishes back in the queue (see [`Publishes::requeue_unacked`]).
    pub(super) fn requeue_unacked(&mut self) {
        let dropped = self.publishes.requeue_unacked();
        self.report_dropped(dropped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_follows_the_announced_rate() {
        let pacing = publish_pacing(1000, None);
        assert_eq!((pacing.max_batch, pacing.interval.as_micros()), (15, 16_667));
        let pacing = publish_pacing(100, None);
        assert_eq!((pacing.max_batch, pacing.interval.as_micros()), (2, 22_223));
        let pacing = publish_pacing(1000, Some(10));
        assert_eq!((pacing.max_batch, pacing.interval.as_micros()), (5, 5_556));
    }
}
