//! A subscriber over the HTTP fallback (`GET /http/stream`), for the runs that price it
//! next to WebSocket: the response's chunked body is de-chunked, its events read with
//! the protocol crate's parser, and each frame handed over as a WebSocket reader would.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tidewire_protocol::event_stream::{CLOSE_EVENT, EventParser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest event a bench subscriber accepts.
const MAX_EVENT_BYTES: usize = 16 << 20;

pub struct HttpStream {
    stream: TcpStream,
    /// Bytes read and not yet de-chunked.
    raw: Vec<u8>,
    parser: EventParser,
    frames: VecDeque<String>,
    ended: bool,
}

impl HttpStream {
    /// Opens a fallback session subscribed to `channel` and waits for `subscribed`.
    pub async fn open(stream: TcpStream, port: u16, token: &str, channel: &str) -> Result<HttpStream, String> {
        let mut http = HttpStream {
            stream,
            raw: Vec::new(),
            parser: EventParser::new(MAX_EVENT_BYTES),
            frames: VecDeque::new(),
            ended: false,
        };
        let request = format!(
            "GET /http/stream?channels={channel} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Authorization: Bearer {token}\r\n\r\n"
        );
        http.stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(end) = http.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&http.raw[..end]).into_owned();
                if !head.starts_with("HTTP/1.1 200") {
                    return Err(format!("the stream answered {}", head.lines().next().unwrap_or_default()));
                }
                http.raw.drain(..end + 4);
                break;
            }
            http.fill(deadline).await?;
        }
        http.dechunk()?;
        loop {
            match tokio::time::timeout_at(deadline.into(), http.next_frame()).await {
                Ok(Some(frame)) if frame.contains("\"type\":\"subscribed\"") => return Ok(http),
                Ok(Some(_)) => continue,
                Ok(None) => return Err("the stream ended before subscribed".to_owned()),
                Err(_) => return Err("no subscribed in time".to_owned()),
            }
        }
    }

    async fn fill(&mut self, deadline: Instant) -> Result<(), String> {
        let mut chunk = [0u8; 16384];
        let read = tokio::time::timeout_at(deadline.into(), self.stream.read(&mut chunk))
            .await
            .map_err(|_| "no response in time".to_owned())?
            .map_err(|e| e.to_string())?;
        if read == 0 {
            return Err("the connection closed".to_owned());
        }
        self.raw.extend_from_slice(&chunk[..read]);
        Ok(())
    }

    /// Takes the complete chunks out of `raw` into the event parser.
    fn dechunk(&mut self) -> Result<(), String> {
        loop {
            let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else { return Ok(()) };
            let size = std::str::from_utf8(&self.raw[..line_end])
                .ok()
                .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                .ok_or("a bad chunk size")?;
            if size == 0 {
                self.ended = true;
                return Ok(());
            }
            let start = line_end + 2;
            if self.raw.len() < start + size + 2 {
                return Ok(());
            }
            let frames = &mut self.frames;
            let mut closed = false;
            self.parser
                .push(&self.raw[start..start + size], |event| match event.name.as_str() {
                    "message" => frames.push_back(event.data),
                    CLOSE_EVENT => closed = true,
                    _ => {}
                })
                .map_err(|e| e.to_string())?;
            self.raw.drain(..start + size + 2);
            self.ended |= closed;
        }
    }

    /// The next frame; `None` once the stream ended.
    pub async fn next_frame(&mut self) -> Option<String> {
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return Some(frame);
            }
            if self.ended {
                return None;
            }
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.raw.extend_from_slice(&chunk[..n]),
            }
            if self.dechunk().is_err() {
                return None;
            }
        }
    }
}
