//! The browser driver's HTTP fallback transport (see `transports.rs` in the core for
//! when it is used).
//!
//! The JavaScript side (`js/http_transport.js`) only moves bytes: it reads the
//! session's event stream with `fetch` and POSTs commands in order. The events are
//! parsed here, with the protocol crate's [`EventParser`], and become what a WebSocket
//! would have delivered: the `session` event names the session for the POSTs, each
//! unnamed event is a frame, a `ping` event is answered with a `ping` command (the
//! server's proof that the page still reads), and the `close` event is the close code
//! and reason.

use std::cell::RefCell;
use std::rc::Rc;

use tidewire_protocol::event_stream::{CLOSE_EVENT, CloseEvent, EventParser, PING_EVENT, SESSION_EVENT, ServerEvent};
use wasm_bindgen::prelude::*;

use super::{Inner, Wire, feed};
use crate::core::{Event, TransportId};

/// The largest event (one frame) the client accepts before it drops the link.
const MAX_EVENT_BYTES: usize = 16 << 20;

#[wasm_bindgen(module = "/js/http_transport.js")]
extern "C" {
    pub type HttpTransport;

    #[wasm_bindgen(js_name = openHttp)]
    fn open_http(
        url: &str,
        token: Option<String>,
        on_bytes: &Closure<dyn FnMut(js_sys::Uint8Array)>,
        on_end: &Closure<dyn FnMut(u16, String)>,
    ) -> HttpTransport;

    #[wasm_bindgen(method)]
    fn session(this: &HttpTransport, id: &str);

    #[wasm_bindgen(method)]
    pub fn send(this: &HttpTransport, text: &str);

    /// The token the POSTs carry from now on (after a refresh).
    #[wasm_bindgen(method)]
    pub fn token(this: &HttpTransport, token: &str);

    #[wasm_bindgen(method)]
    pub fn close(this: &HttpTransport);
}

/// Opens a fallback session at `url` (the stream's).
pub fn open(inner: &Rc<RefCell<Inner>>, transport: TransportId, url: &str, token: Option<&str>) -> Wire {
    let weak = Rc::downgrade(inner);
    let mut parser = EventParser::new(MAX_EVENT_BYTES);
    let on_bytes = Closure::<dyn FnMut(js_sys::Uint8Array)>::new(move |bytes: js_sys::Uint8Array| {
        let Some(inner) = weak.upgrade() else { return };
        let mut events = Vec::new();
        if parser.push(&bytes.to_vec(), |event| events.push(event)).is_err() {
            return lost(&inner, transport, 1009, "an event too large".into());
        }
        for event in events {
            on_event(&inner, transport, event);
        }
    });
    let weak = Rc::downgrade(inner);
    let on_end = Closure::<dyn FnMut(u16, String)>::new(move |code: u16, reason: String| {
        if let Some(inner) = weak.upgrade() {
            lost(&inner, transport, code, reason);
        }
    });
    let http = open_http(url, token.map(str::to_owned), &on_bytes, &on_end);
    Wire::Http { http, _on_bytes: on_bytes, _on_end: on_end }
}

fn on_event(inner: &Rc<RefCell<Inner>>, transport: TransportId, event: ServerEvent) {
    match event.name.as_str() {
        SESSION_EVENT => {
            if let Some(Wire::Http { http, .. }) = inner.borrow().wire_of(transport) {
                http.session(&event.data);
            }
        }
        // The server's ping: any command answers it, a `ping` is the smallest.
        PING_EVENT => {
            if let Some(Wire::Http { http, .. }) = inner.borrow().wire_of(transport) {
                http.send(r#"{"action":"ping"}"#);
            }
        }
        CLOSE_EVENT => {
            let close = CloseEvent::decode(&event.data).unwrap_or(CloseEvent { code: 1006, reason: event.data });
            lost(inner, transport, close.code, close.reason);
        }
        _ => {
            inner.borrow_mut().counters.frames += 1.0;
            feed(inner, Event::Frame { transport, text: event.data });
        }
    }
}

/// The session ended: the transport is dropped (which aborts its requests) and the core
/// told.
fn lost(inner: &Rc<RefCell<Inner>>, transport: TransportId, code: u16, reason: String) {
    {
        let mut state = inner.borrow_mut();
        if state.socket.as_ref().is_some_and(|s| s.transport == transport) {
            state.socket = None;
        }
    }
    feed(inner, Event::TransportClosed { transport, code, reason });
}
