//! The subscribers of an ingest bench (`outbox`, `kafka`): each message carries the
//! microsecond its source stamped in it (`sentAt`), so every subscriber records the
//! latency from the source to itself; the figures come out as one `RunResult`.

use hdrhistogram::Histogram;
use memchr::memmem;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::load::{Latency, RunResult, connect, now_micros};

/// S subscribers of one channel, reading until `finish`.
pub struct Readers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<(u64, Histogram<u64>)>>,
}

/// What the subscribers received, all together.
pub struct Received {
    subscribers: usize,
    delivered: u64,
    histogram: Histogram<u64>,
}

impl Readers {
    pub async fn connect(port: u16, token: &str, channel: &str, subscribers: usize) -> Result<Readers, String> {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::with_capacity(subscribers);
        for _ in 0..subscribers {
            let ws = connect(port, token, channel, false).await?;
            tasks.push(tokio::spawn(read(ws, stopped.clone())));
        }
        Ok(Readers { stop, tasks })
    }

    /// Stops the subscribers and adds up what they received.
    pub async fn finish(self) -> Result<Received, String> {
        let _ = self.stop.send(true);
        let subscribers = self.tasks.len();
        let mut delivered = 0u64;
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).map_err(|e| e.to_string())?;
        for task in self.tasks {
            let (count, seen) = task.await.map_err(|e| e.to_string())?;
            delivered += count;
            histogram.add(seen).map_err(|e| e.to_string())?;
        }
        Ok(Received { subscribers, delivered, histogram })
    }
}

impl Received {
    /// The run's row: `published` messages at `rate` per second for `seconds`, the node
    /// having used `cpu` seconds.
    pub fn result(&self, name: &str, rate: u32, published: u64, seconds: f64, cpu: f64, notes: String) -> RunResult {
        let expected = published * self.subscribers as u64;
        let delivered = self.delivered;
        RunResult {
            name: name.to_owned(),
            subscribers: self.subscribers,
            rate,
            seconds,
            published,
            delivered_per_second: delivered as f64 / seconds,
            loss_percent: if expected == 0 {
                0.0
            } else {
                expected.saturating_sub(delivered) as f64 * 100.0 / expected as f64
            },
            latency_ms: Latency::of(&self.histogram),
            server_cpu_seconds: cpu,
            server_cpu_per_million: if delivered == 0 { 0.0 } else { cpu * 1e6 / delivered as f64 },
            notes,
            ..RunResult::default()
        }
    }
}

/// Counts one subscriber's messages and records each one's latency from its `sentAt`.
async fn read(
    mut ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    mut stop: watch::Receiver<bool>,
) -> (u64, Histogram<u64>) {
    use futures_util::StreamExt;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("bounds");
    let mut delivered = 0;
    let finder = memmem::Finder::new(br#""sentAt":"#);
    loop {
        let message = tokio::select! {
            message = ws.next() => message,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) = message else {
            if matches!(message, Some(Ok(_))) {
                continue;
            }
            break;
        };
        let now = now_micros();
        let bytes = text.as_bytes();
        for at in finder.find_iter(bytes) {
            let digits = &bytes[at + 9..];
            let end = digits.iter().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
            if let Some(sent) = std::str::from_utf8(&digits[..end]).ok().and_then(|d| d.parse::<i64>().ok()) {
                delivered += 1;
                let _ = histogram.record((now - sent).max(1) as u64);
            }
        }
    }
    (delivered, histogram)
}
