//! Server-Sent Events as tidewire's HTTP transports speak them.
//!
//! Two streams use this framing (`text/event-stream`, see `docs/protocol.md`):
//!
//! - the **fallback session** (`GET /http/stream`): each event's data is one frame,
//!   exactly as a WebSocket text message would carry it, plus a `session` event first
//!   and a `close` event last ([`CloseEvent`]), so one client core reads both
//!   transports;
//! - the **one-way stream** (`GET /sse`): one event per message, publications as
//!   unnamed events (what `EventSource.onmessage` sees), control messages named by
//!   their type, and each publication's `id` the stream's position in every channel
//!   ([`StreamIds`]), so a reconnecting `EventSource` resumes with `Last-Event-ID`.
//!
//! [`write_event`] frames, [`EventParser`] reads (incrementally, bytes bounded). Data
//! may hold line breaks (a publisher's JSON may be pretty-printed): each line becomes
//! its own `data:` field, which the reader joins with `\n` again, as the format says.

use crate::command::StreamPosition;

/// The event that names a fallback session (its data is the session id).
pub const SESSION_EVENT: &str = "session";

/// The event a fallback session's client answers with a command (a `ping`): the
/// server's proof that the client still reads the stream (its data is empty).
pub const PING_EVENT: &str = "ping";

/// The event that ends a stream, with the close code and reason a WebSocket close
/// frame would carry ([`CloseEvent`]).
pub const CLOSE_EVENT: &str = "close";

/// The data of a [`CLOSE_EVENT`]: the code, a space, the reason (`4000 SLOW_CONSUMER:
/// …`), plain text a person reading `curl -N` understands and a client reads without a
/// JSON decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseEvent {
    pub code: u16,
    pub reason: String,
}

impl CloseEvent {
    pub fn encode(&self) -> String {
        format!("{} {}", self.code, self.reason)
    }

    /// `None` when `data` does not start with a code.
    pub fn decode(data: &str) -> Option<CloseEvent> {
        let (code, reason) = data.split_once(' ').unwrap_or((data, ""));
        Some(CloseEvent { code: code.parse().ok()?, reason: reason.to_owned() })
    }
}

/// Appends one event to `out`: its name (none for the default `message`), its id, and
/// its data, one `data:` field per line of `data`.
pub fn write_event(out: &mut String, name: Option<&str>, id: Option<&str>, data: &str) {
    if let Some(name) = name {
        out.push_str("event: ");
        out.push_str(name);
        out.push('\n');
    }
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    // `\r\n`, `\r` and `\n` all end a line for the reader (which joins with `\n`).
    let mut rest = data;
    loop {
        out.push_str("data: ");
        let Some(at) = rest.find(['\r', '\n']) else {
            out.push_str(rest);
            out.push('\n');
            break;
        };
        out.push_str(&rest[..at]);
        out.push('\n');
        rest = &rest[at + if rest[at..].starts_with("\r\n") { 2 } else { 1 }..];
    }
    out.push('\n');
}

/// Appends a comment, which readers ignore (keeps proxies from timing out a quiet
/// stream, and pads the start past the buffers of proxies that hold the first bytes).
pub fn write_comment(out: &mut String, text: &str) {
    out.push(':');
    out.push_str(text);
    out.push_str("\n\n");
}

/// One event as a reader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEvent {
    /// `message` when the event had no name.
    pub name: String,
    pub data: String,
    /// The event's `id`, when it had one.
    pub id: Option<String>,
}

/// An event stream was longer than its reader accepts between two events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event of more than {max} bytes")]
pub struct EventTooLong {
    pub max: usize,
}

/// Reads an event stream as its bytes arrive, in chunks cut anywhere.
#[derive(Debug)]
pub struct EventParser {
    /// Bytes of the line being read.
    line: Vec<u8>,
    name: String,
    data: String,
    id: Option<String>,
    has_data: bool,
    /// The last byte was a `\r` (a `\n` right after it ends the same line).
    after_cr: bool,
    /// Bytes held for the event being read, at most `max`.
    held: usize,
    max: usize,
}

impl EventParser {
    /// A reader that refuses an event of more than `max` bytes.
    pub fn new(max: usize) -> EventParser {
        EventParser {
            line: Vec::new(),
            name: String::new(),
            data: String::new(),
            id: None,
            has_data: false,
            after_cr: false,
            held: 0,
            max,
        }
    }

    /// Feeds bytes; calls `on_event` for every event they complete.
    pub fn push(&mut self, bytes: &[u8], mut on_event: impl FnMut(ServerEvent)) -> Result<(), EventTooLong> {
        for &byte in bytes {
            if self.after_cr && byte == b'\n' {
                self.after_cr = false;
                continue;
            }
            self.after_cr = byte == b'\r';
            if byte == b'\n' || byte == b'\r' {
                let line = std::mem::take(&mut self.line);
                if let Some(event) = self.on_line(&line) {
                    on_event(event);
                }
                continue;
            }
            self.held += 1;
            if self.held > self.max {
                return Err(EventTooLong { max: self.max });
            }
            self.line.push(byte);
        }
        Ok(())
    }

    fn on_line(&mut self, line: &[u8]) -> Option<ServerEvent> {
        if line.is_empty() {
            self.held = 0;
            let name = std::mem::take(&mut self.name);
            let data = std::mem::take(&mut self.data);
            let id = self.id.take();
            if !std::mem::take(&mut self.has_data) {
                return None;
            }
            return Some(ServerEvent { name: if name.is_empty() { "message".to_owned() } else { name }, data, id });
        }
        // The server writes UTF-8; a line that is not is no field.
        let Ok(line) = std::str::from_utf8(line) else { return None };
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.name),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {}
        }
        None
    }
}

/// The longest epoch an event id carries.
pub const MAX_EPOCH_BYTES: usize = 64;

/// The longest event id read back (32 channels of a 20-digit seq and a whole epoch fit).
pub const MAX_EVENT_ID_BYTES: usize = 4096;

/// The positions a one-way stream has reached, one per channel of its URL, written as
/// an event id and read back from `Last-Event-ID`.
///
/// The id lists, in the URL's channel order and separated by `,`, each channel's
/// `seq:epoch` (the epoch left out when it equals the previous channel's; nothing when
/// the channel has no position yet; `seq:` alone for no epoch after one that had one).
/// Channel names stay in the URL, which a reconnecting `EventSource` sends again, so
/// the id stays short: epochs are the server's own short tokens ([`MAX_EPOCH_BYTES`] of
/// `A–Z a–z 0–9 - _ .`), and an id that is longer than [`MAX_EVENT_ID_BYTES`] or names
/// any other epoch is no id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamIds {
    positions: Vec<Option<StreamPosition>>,
}

impl StreamIds {
    /// No position yet on any of `channels` channels.
    pub fn new(channels: usize) -> StreamIds {
        StreamIds { positions: vec![None; channels] }
    }

    pub fn get(&self, index: usize) -> Option<&StreamPosition> {
        self.positions.get(index).and_then(Option::as_ref)
    }

    pub fn set(&mut self, index: usize, position: StreamPosition) {
        if let Some(slot) = self.positions.get_mut(index) {
            *slot = Some(position);
        }
    }

    /// Moves channel `index` to `seq` when that is past where it is.
    pub fn advance(&mut self, index: usize, seq: u64) {
        if let Some(Some(position)) = self.positions.get_mut(index) {
            position.seq = position.seq.max(seq);
        }
    }

    /// The id naming these positions (a position whose epoch is not a plain token is
    /// left out: a reconnect then starts that channel afresh).
    pub fn encode(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let mut previous: Option<&str> = None;
        for (i, position) in self.positions.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let Some(position) = position else { continue };
            let epoch = position.epoch.as_deref();
            if epoch.is_some_and(|e| !is_plain_epoch(e)) {
                continue;
            }
            let _ = write!(out, "{}", position.seq);
            if epoch != previous {
                // `seq:` alone says "no epoch" after a channel that had one.
                out.push(':');
                out.push_str(epoch.unwrap_or(""));
            }
            previous = epoch;
        }
        out
    }

    /// The positions an id names for a stream of `channels` channels; `None` when the
    /// id is not one (another URL's, or garbage), which means starting afresh.
    pub fn decode(id: &str, channels: usize) -> Option<StreamIds> {
        if id.len() > MAX_EVENT_ID_BYTES || id.bytes().filter(|&b| b == b',').count() + 1 != channels {
            return None;
        }
        let mut ids = StreamIds::new(channels);
        let mut previous: Option<String> = None;
        for (i, part) in id.split(',').enumerate() {
            if part.is_empty() {
                continue;
            }
            let (seq, epoch) = match part.split_once(':') {
                Some((seq, "")) => (seq, None),
                Some((seq, epoch)) if is_plain_epoch(epoch) => (seq, Some(epoch.to_owned())),
                Some(_) => return None,
                None => (part, previous.clone()),
            };
            let seq: u64 = seq.parse().ok()?;
            previous.clone_from(&epoch);
            ids.set(i, StreamPosition { seq, epoch });
        }
        Some(ids)
    }
}

/// Whether `epoch` is a token an event id may carry as it is.
fn is_plain_epoch(epoch: &str) -> bool {
    !epoch.is_empty()
        && epoch.len() <= MAX_EPOCH_BYTES
        && epoch.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(text: &[u8], chunk: usize) -> Vec<ServerEvent> {
        let mut parser = EventParser::new(1 << 16);
        let mut events = Vec::new();
        for piece in text.chunks(chunk.max(1)) {
            parser.push(piece, |e| events.push(e)).expect("within bounds");
        }
        events
    }

    #[test]
    fn events_round_trip_through_any_chunking() {
        let mut out = String::new();
        write_comment(&mut out, "padding");
        write_event(&mut out, Some(SESSION_EVENT), None, "abc");
        write_event(&mut out, None, Some("3:e1,,7"), "[{\"a\":\n1}]");
        write_event(&mut out, Some("close"), None, "1012 x");
        for chunk in [1, 2, 3, 7, 1000] {
            let events = parse_all(out.as_bytes(), chunk);
            assert_eq!(events.len(), 3, "chunk {chunk}");
            assert_eq!(events[0], ServerEvent { name: "session".into(), data: "abc".into(), id: None });
            assert_eq!(events[1].name, "message");
            assert_eq!(events[1].data, "[{\"a\":\n1}]");
            assert_eq!(events[1].id.as_deref(), Some("3:e1,,7"));
            assert_eq!(events[2].name, "close");
        }
    }

    #[test]
    fn data_with_any_line_break_reads_back_as_lines() {
        let mut out = String::new();
        write_event(&mut out, None, None, "a\rb\r\nc\nd");
        assert_eq!(parse_all(out.as_bytes(), 1)[0].data, "a\nb\nc\nd");
    }

    #[test]
    fn carriage_returns_end_lines_too() {
        let events = parse_all(b"event: x\r\ndata: 1\rdata: 2\r\n\r\n", 1);
        assert_eq!(events, vec![ServerEvent { name: "x".into(), data: "1\n2".into(), id: None }]);
    }

    #[test]
    fn an_overlong_event_is_refused() {
        let mut parser = EventParser::new(8);
        assert_eq!(parser.push(b"data: 0123456789", |_| {}), Err(EventTooLong { max: 8 }));
    }

    #[test]
    fn close_events_round_trip() {
        let close = CloseEvent { code: 4000, reason: "SLOW_CONSUMER: a write blocked".into() };
        assert_eq!(close.encode(), "4000 SLOW_CONSUMER: a write blocked");
        assert_eq!(CloseEvent::decode(&close.encode()), Some(close));
        assert_eq!(CloseEvent::decode("1005"), Some(CloseEvent { code: 1005, reason: String::new() }));
        assert_eq!(CloseEvent::decode("x y"), None);
    }

    #[test]
    fn positions_round_trip() {
        let mut ids = StreamIds::new(3);
        ids.set(0, StreamPosition { seq: 42, epoch: Some("n1-7".into()) });
        ids.set(2, StreamPosition { seq: 7, epoch: Some("n1-7".into()) });
        assert_eq!(ids.encode(), "42:n1-7,,7");
        assert_eq!(StreamIds::decode(&ids.encode(), 3), Some(ids.clone()));
        ids.set(1, StreamPosition { seq: 1, epoch: Some("odd,epoch:%".into()) });
        assert_eq!(ids.encode(), "42:n1-7,,7", "an epoch that is not a token is left out");
        ids.set(1, StreamPosition { seq: 1, epoch: Some("n2-8".into()) });
        assert_eq!(StreamIds::decode(&ids.encode(), 3), Some(ids.clone()));
        ids.advance(0, 41);
        ids.advance(0, 50);
        assert_eq!(ids.get(0).map(|p| p.seq), Some(50));
    }

    #[test]
    fn foreign_ids_start_afresh() {
        let long = format!("1:{},,", "e".repeat(MAX_EPOCH_BYTES + 1));
        let huge = format!("{},,", "1".repeat(MAX_EVENT_ID_BYTES));
        for bad in ["", "1,2", "x:e,,", "1:%zz,,", "1:!!,,", "18446744073709551616,,", &long, &huge] {
            assert_eq!(StreamIds::decode(bad, 3), None, "{bad:?}");
        }
        assert_eq!(StreamIds::decode(",,", 3), Some(StreamIds::new(3)));
    }
}
