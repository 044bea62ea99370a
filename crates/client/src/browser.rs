//! The browser driver: the core's decisions carried out with the browser's WebSocket and
//! timers, behind a JavaScript API.
//!
//! ```ts
//! import init, { TidewireClient } from "tidewire-client";
//! await init();
//! const client = new TidewireClient({ url: "wss://desk.example/ws", getToken: () => fetchToken() });
//! client.onState((s) => console.log(s.state, s.attempt));
//! const sub = client.subscribe("lp-performance", (message) => render(message));
//! sub.unsubscribe();
//! client.close();
//! ```
//!
//! Like the tokio driver, this file only moves bytes and time. Two browser matters live
//! here: the token travels as a `tidewire.token.<jwt>` subprotocol (browsers cannot set
//! headers), and the page's `online`/`offline` and `visibilitychange` events feed the
//! core (offline closes the link, online reconnects at once, and with
//! `pauseWhenHidden` a hidden page stops receiving and catches up with `since` when it
//! is shown again).
//!
//! JS callbacks are never called while the driver's state is borrowed, so a handler may
//! call back into the client (subscribe, unsubscribe, publish, close).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};

use js_sys::{Function, Object, Reflect};
use tidewire_protocol::Op;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

use crate::core::{
    Action, ClientConfig, ClientCore, ConnectionState, Event, OutgoingPublish, SubscriptionEvent, SubscriptionOptions,
    TokenError, TransportId, TransportKind,
};

#[path = "browser_http.rs"]
mod http;
#[path = "browser_objects.rs"]
mod objects;
use objects::{error_object, state_name, state_object, subscription_event_object};

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &'static str = r#"
import type { Publication } from "./types/index";
export type * from "./types/index";

/** Options for `new TidewireClient(options)`. */
export interface TidewireOptions {
  /** The server's WebSocket URL, e.g. `wss://desk.example/ws`. */
  url?: string;
  /** Several servers to rotate through on reconnect. */
  urls?: string[];
  /** A fixed token. */
  token?: string;
  /** Called before each connect and before the token expires. Resolve with a token;
   *  resolve with `null` (or "") when the user is not authorized (terminal); reject on
   *  other failures (retried with backoff). */
  getToken?: () => Promise<string | null>;
  /** Stop receiving while the page is hidden and catch up when it is shown (default false). */
  pauseWhenHidden?: boolean;
  /** Reconnect backoff bounds in ms (default 500 and 20000). */
  minReconnectDelayMs?: number;
  maxReconnectDelayMs?: number;
  /** The transports to try, in order (default `["websocket", "http"]`): where a proxy
   *  breaks WebSocket, the client falls back to an event stream plus POSTs
   *  (`/http/stream` beside `/ws`) and keeps its subscriptions, positions and publishes. */
  transports?: ("websocket" | "http")[];
  /** How long a transport may take to open before the next is tried (default 5000 ms). */
  openTimeoutMs?: number;
  /** How long a fallback link lives before WebSocket is tried again (default 60000 ms,
   *  doubling while it keeps failing, up to 30 minutes). */
  websocketRetryMs?: number;
}

/** The connection's state. */
export interface TidewireState {
  state: "disconnected" | "connecting" | "connected";
  /** Failed attempts since the last successful connect. */
  attempt: number;
  /** Why the client stopped, when it is not trying to reconnect. */
  stopped?: {
    reason: "closed" | "offline" | "terminal" | "unauthorized" | "unsupported-protocol";
    code?: number;
    message?: string;
  };
}

/** A subscription's lifecycle. `recovered`: true when everything missed was replayed,
 *  false when the app must reload its state (a snapshot follows). `snapshot-end`: the
 *  snapshot that followed `subscribed` is complete (also when it was empty). */
export type TidewireSubscriptionEvent =
  | { type: "subscribing" }
  | { type: "subscribed"; recovered?: boolean; maxRate?: number; deltas?: boolean }
  | { type: "unsubscribed" }
  | { type: "snapshot-end" }
  | { type: "refused"; code: string; message: string };

/** Errors that do not stop the client. */
export interface TidewireError {
  kind: "server" | "decode" | "publishes-dropped" | "publish-too-large" | "publish-unconfirmed" | "token";
  message: string;
  code?: string;
  channel?: string;
}

/** Counters for status bars. `recoveries`: subscriptions that caught up on everything
 *  they missed (after a reconnect or a gap). */
export interface TidewireStats {
  frames: number;
  messages: number;
  recoveries: number;
  reconnects: number;
  /** Bytes of publications received per channel, as they came on the wire (field
   *  deltas count their own size, not the rebuilt value's). */
  bytes: Record<string, number>;
}

/** What a handler receives: the publication, whole. `changed`: on a value that arrived
 *  as a field delta, the top-level fields of `data` it changed. */
export type MessageHandler<M = Publication & { changed?: string[] }> = (message: M) => void;

/** Channel name → the events it carries, as `{ type; data }` unions, so that a handler's
 *  message is typed by the channel it subscribes to. Empty here: an app names its
 *  channels by merging into it, e.g. with the generated catalogue:
 *  `declare module "tidewire-client" { interface TidewireChannels extends AnalyticsChannels {} }`.
 *  A channel it does not name is handled as a plain `Publication` (`data: unknown`). */
export interface TidewireChannels {}

/** The publication a handler of `channel` receives. */
export type ChannelPublication<C extends string> = (C extends keyof TidewireChannels
  ? Omit<Publication, "type" | "data"> & TidewireChannels[C]
  : Publication) & { changed?: string[] };

export interface TidewireClient {
  /** Subscribes `handler` to `channel`; `onEvent` (optional) hears the subscription's
   *  lifecycle; `options` (optional) filters it on the server. Snapshot messages
   *  (`snapshot: true`) reach the handler first. The handler's message is typed by the
   *  channel (see `TidewireChannels`). */
  subscribe<C extends string>(
    channel: C,
    handler: MessageHandler<ChannelPublication<C>>,
    onEvent?: ((event: TidewireSubscriptionEvent) => void) | null,
    options?: TidewireSubscribeOptions | null,
  ): TidewireSubscription;
}

/** What a subscription asks of the server: only these message types, only these keys
 *  (unkeyed publications pass a key filter), at most `maxRate` updates per second per
 *  key (the newest value each time; unkeyed messages all arrive; the rate granted comes
 *  in the `subscribed` event), and `deltas`: keyed object values travel as field deltas
 *  and are rebuilt whole before the handler sees them (with `changed`; whether the
 *  server granted them comes in the `subscribed` event). The first subscribe of a
 *  channel sets them until it is left. */
export interface TidewireSubscribeOptions {
  types?: string[];
  keys?: string[];
  maxRate?: number;
  deltas?: boolean;
}
"#;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(typescript_type = "TidewireOptions")]
    pub type Options;
    #[wasm_bindgen(typescript_type = "(state: TidewireState) => void")]
    pub type StateListener;
    #[wasm_bindgen(typescript_type = "(error: TidewireError) => void")]
    pub type ErrorListener;
    #[wasm_bindgen(typescript_type = "MessageHandler<any>")]
    pub type Handler;
    #[wasm_bindgen(typescript_type = "(event: TidewireSubscriptionEvent) => void")]
    pub type EventListener;
    #[wasm_bindgen(typescript_type = "TidewireStats")]
    pub type Stats;
    #[wasm_bindgen(typescript_type = "TidewireSubscribeOptions")]
    pub type SubscribeOptions;
}

/// A list of strings from an options object (`None` when absent or not an array).
fn string_list(object: &JsValue, field: &str) -> Option<Vec<String>> {
    let value = Reflect::get(object, &field.into()).ok()?;
    if !js_sys::Array::is_array(&value) {
        return None;
    }
    Some(js_sys::Array::from(&value).iter().filter_map(|v| v.as_string()).collect())
}

struct Socket {
    transport: TransportId,
    wire: Wire,
}

/// A link's transport, with the callbacks it holds.
enum Wire {
    Ws {
        ws: WebSocket,
        _on_message: Closure<dyn FnMut(MessageEvent)>,
        _on_close: Closure<dyn FnMut(CloseEvent)>,
    },
    Http {
        http: http::HttpTransport,
        _on_bytes: Closure<dyn FnMut(js_sys::Uint8Array)>,
        _on_end: Closure<dyn FnMut(u16, String)>,
    },
}

impl Drop for Socket {
    fn drop(&mut self) {
        // Detach before the closures are freed, so a late event finds no dangling callback.
        match &self.wire {
            Wire::Ws { ws, .. } => {
                ws.set_onmessage(None);
                ws.set_onclose(None);
            }
            Wire::Http { http, .. } => http.close(),
        }
    }
}

impl Inner {
    /// The transport of link `transport`, while it is the current one.
    fn wire_of(&self, transport: TransportId) -> Option<&Wire> {
        self.socket.as_ref().filter(|s| s.transport == transport).map(|s| &s.wire)
    }
}

struct Listener {
    id: u32,
    handler: Function,
    events: Option<Function>,
}

#[derive(Default)]
struct Counters {
    frames: f64,
    messages: f64,
    recoveries: f64,
    reconnects: f64,
    /// Publication bytes per channel (a few channels: a list is smaller code than a map).
    bytes: Vec<(String, f64)>,
}

/// A page event listener kept registered for the client's life: target, event, handler.
type PageListener = (web_sys::EventTarget, &'static str, Closure<dyn FnMut(web_sys::Event)>);

struct Inner {
    core: ClientCore,
    socket: Option<Socket>,
    handlers: HashMap<String, Vec<Listener>>,
    state_listeners: Vec<Function>,
    error_listeners: Vec<Function>,
    get_token: Option<Function>,
    timer: Option<gloo_timers::callback::Timeout>,
    next_listener: u32,
    counters: Counters,
    _page_events: Vec<PageListener>,
}

/// A tidewire connection. See the module docs for an example.
#[wasm_bindgen]
pub struct TidewireClient {
    inner: Rc<RefCell<Inner>>,
}

/// One handler's subscription; `unsubscribe()` removes it (and leaves the channel when
/// it was the last handler).
#[wasm_bindgen]
pub struct TidewireSubscription {
    inner: Weak<RefCell<Inner>>,
    channel: String,
    id: u32,
}

fn now() -> std::time::Duration {
    let ms = web_sys::window().and_then(|w| w.performance()).map_or_else(js_sys::Date::now, |p| p.now());
    std::time::Duration::from_secs_f64(ms.max(0.0) / 1000.0)
}

fn get(object: &JsValue, key: &str) -> JsValue {
    Reflect::get(object, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn set(object: &Object, key: &str, value: impl Into<JsValue>) {
    let _ = Reflect::set(object, &JsValue::from_str(key), &value.into());
}

#[wasm_bindgen]
impl TidewireClient {
    /// Creates the client and starts connecting.
    #[wasm_bindgen(constructor)]
    pub fn new(options: Options) -> Result<TidewireClient, JsError> {
        let options: JsValue = options.into();
        let mut urls: Vec<String> = match get(&options, "urls").dyn_into::<js_sys::Array>() {
            Ok(list) => list.iter().filter_map(|u| u.as_string()).collect(),
            Err(_) => Vec::new(),
        };
        if let Some(url) = get(&options, "url").as_string() {
            urls.insert(0, url);
        }
        if urls.is_empty() {
            return Err(JsError::new("TidewireClient needs `url` or `urls`"));
        }
        let mut config = ClientConfig::new(urls[0].clone());
        config.urls = urls;
        config.seed = (js_sys::Math::random() * 9_007_199_254_740_991.0) as u64;
        config.token = get(&options, "token").as_string();
        let get_token = get(&options, "getToken").dyn_into::<Function>().ok();
        config.token_provider = get_token.is_some();
        if let Some(ms) = get(&options, "minReconnectDelayMs").as_f64() {
            config.backoff.min = std::time::Duration::from_secs_f64(ms.max(0.0) / 1000.0);
        }
        if let Some(ms) = get(&options, "maxReconnectDelayMs").as_f64() {
            config.backoff.max = std::time::Duration::from_secs_f64(ms.max(0.0) / 1000.0);
        }
        config.transports = match get(&options, "transports").dyn_into::<js_sys::Array>() {
            Ok(list) => list
                .iter()
                .filter_map(|kind| match kind.as_string().as_deref() {
                    Some("websocket") => Some(TransportKind::WebSocket),
                    Some("http") => Some(TransportKind::Http),
                    _ => None,
                })
                .collect(),
            Err(_) => vec![TransportKind::WebSocket, TransportKind::Http],
        };
        if config.transports.is_empty() {
            return Err(JsError::new("`transports` names \"websocket\" and/or \"http\""));
        }
        if let Some(ms) = get(&options, "openTimeoutMs").as_f64() {
            config.open_timeout = std::time::Duration::from_secs_f64(ms.max(0.0) / 1000.0);
        }
        if let Some(ms) = get(&options, "websocketRetryMs").as_f64() {
            config.upgrade_after = std::time::Duration::from_secs_f64(ms.max(0.0) / 1000.0);
        }
        let pause_when_hidden = get(&options, "pauseWhenHidden").as_bool().unwrap_or(false);

        let inner = Rc::new(RefCell::new(Inner {
            core: ClientCore::new(config),
            socket: None,
            handlers: HashMap::new(),
            state_listeners: Vec::new(),
            error_listeners: Vec::new(),
            get_token,
            timer: None,
            next_listener: 1,
            counters: Counters::default(),
            _page_events: Vec::new(),
        }));
        listen_to_page(&inner, pause_when_hidden);
        if web_sys::window().is_some_and(|w| !w.navigator().on_line()) {
            feed(&inner, Event::Offline);
        }
        feed(&inner, Event::Connect);
        Ok(TidewireClient { inner })
    }

    /// Calls `listener` with every state change (and once now).
    #[wasm_bindgen(js_name = onState)]
    pub fn on_state(&self, listener: StateListener) {
        let listener: Function = listener.unchecked_into();
        let current = {
            let inner = self.inner.borrow();
            state_object(inner.core.state(), inner.core.attempt(), None)
        };
        let _ = listener.call1(&JsValue::NULL, &current);
        self.inner.borrow_mut().state_listeners.push(listener);
    }

    /// Calls `listener` with errors that do not stop the client.
    #[wasm_bindgen(js_name = onError)]
    pub fn on_error(&self, listener: ErrorListener) {
        self.inner.borrow_mut().error_listeners.push(listener.unchecked_into());
    }

    /// Subscribes `handler` to a channel; `onEvent` (optional) hears the subscription's
    /// lifecycle; `options` (optional) filters it on the server. Snapshot messages
    /// (`snapshot: true`) reach the handler first. (Its TypeScript signature, typed by
    /// channel, is declared above, with `TidewireChannels`.)
    #[wasm_bindgen(skip_typescript)]
    pub fn subscribe(
        &self,
        channel: String,
        handler: Handler,
        on_event: Option<EventListener>,
        options: Option<SubscribeOptions>,
    ) -> TidewireSubscription {
        let first = {
            let mut inner = self.inner.borrow_mut();
            let id = inner.next_listener;
            inner.next_listener += 1;
            let listeners = inner.handlers.entry(channel.clone()).or_default();
            listeners.push(Listener {
                id,
                handler: handler.unchecked_into(),
                events: on_event.map(|f| f.unchecked_into()),
            });
            (listeners.len() == 1, id)
        };
        if first.0 {
            let options = options.map(JsValue::from).map_or_else(Default::default, |o| SubscriptionOptions {
                types: string_list(&o, "types"),
                keys: string_list(&o, "keys"),
                // 0, negative and NaN rates become 0 ms and infinite intervals the most
                // there is: the server refuses both with BAD_REQUEST.
                min_interval_ms: Reflect::get(&o, &"maxRate".into())
                    .ok()
                    .and_then(|v| v.as_f64())
                    .map(|rate| (1000.0 / rate).ceil() as u64),
                deltas: Reflect::get(&o, &"deltas".into()).ok().and_then(|v| v.as_bool()).unwrap_or(false),
            });
            feed(&self.inner, Event::SubscribeWith { channel: channel.clone(), options });
        }
        TidewireSubscription { inner: Rc::downgrade(&self.inner), channel, id: first.1 }
    }

    /// Publishes `data` as a message of `type` on `channel` (queued while offline);
    /// `op` `"delete"` (with `key`) takes the key out of the channel's table, `"clear"`
    /// empties it.
    pub fn publish(
        &self,
        channel: String,
        kind: String,
        data: JsValue,
        key: Option<String>,
        op: Option<String>,
    ) -> Result<(), JsError> {
        let op = match op.as_deref() {
            None | Some("upsert") => Op::Upsert,
            Some("delete") => Op::Delete,
            Some("clear") => Op::Clear,
            Some(_) => return Err(JsError::new("op is \"upsert\", \"delete\" or \"clear\"")),
        };
        // Stringified by the browser itself: no JSON tree is built in wasm.
        let json = js_sys::JSON::stringify(&data)
            .ok()
            .and_then(|j| j.as_string())
            .ok_or_else(|| JsError::new("data is not JSON-serializable"))?;
        feed(&self.inner, Event::Publish(OutgoingPublish::from_json(channel, &kind, &json, key, op)));
        Ok(())
    }

    /// Reconnects after `close()` or a terminal stop.
    pub fn connect(&self) {
        feed(&self.inner, Event::Connect);
    }

    /// Closes the connection; no reconnect until `connect()`.
    pub fn close(&self) {
        feed(&self.inner, Event::Close);
    }

    /// Stops receiving (background mode) until `resume()`.
    pub fn pause(&self) {
        feed(&self.inner, Event::Pause);
    }

    pub fn resume(&self) {
        feed(&self.inner, Event::Resume);
    }

    /// "disconnected", "connecting" or "connected".
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> String {
        state_name(self.inner.borrow().core.state()).to_owned()
    }

    /// Frames and messages received, recoveries and reconnects, since creation.
    pub fn stats(&self) -> Stats {
        let inner = self.inner.borrow();
        let object = Object::new();
        set(&object, "frames", inner.counters.frames);
        set(&object, "messages", inner.counters.messages);
        set(&object, "recoveries", inner.counters.recoveries);
        set(&object, "reconnects", inner.counters.reconnects);
        let bytes = Object::new();
        for (channel, n) in &inner.counters.bytes {
            set(&bytes, channel, *n);
        }
        let _ = Reflect::set(&object, &"bytes".into(), &bytes);
        object.unchecked_into()
    }
}

#[wasm_bindgen]
impl TidewireSubscription {
    pub fn unsubscribe(&self) {
        let Some(inner) = self.inner.upgrade() else { return };
        let last = {
            let mut state = inner.borrow_mut();
            let Some(listeners) = state.handlers.get_mut(&self.channel) else { return };
            let before = listeners.len();
            listeners.retain(|l| l.id != self.id);
            let removed = listeners.len() != before;
            let empty = listeners.is_empty();
            if empty {
                state.handlers.remove(&self.channel);
            }
            removed && empty
        };
        if last {
            feed(&inner, Event::Unsubscribe { channel: self.channel.clone() });
        }
    }

    #[wasm_bindgen(getter)]
    pub fn channel(&self) -> String {
        self.channel.clone()
    }
}

/// Feeds an event to the core and carries out what it asks.
fn feed(inner: &Rc<RefCell<Inner>>, event: Event) {
    inner.borrow_mut().core.handle(event, now());
    pump(inner);
}

/// Performs every pending action, then re-arms the timer.
fn pump(inner: &Rc<RefCell<Inner>>) {
    loop {
        let action = inner.borrow_mut().core.poll_action();
        let Some(action) = action else { break };
        perform(inner, action);
    }
    let deadline = inner.borrow().core.poll_timeout();
    let timer = deadline.map(|at| {
        let delay = at.saturating_sub(now()).as_millis().min(u32::MAX as u128) as u32;
        let weak = Rc::downgrade(inner);
        gloo_timers::callback::Timeout::new(delay, move || {
            if let Some(inner) = weak.upgrade() {
                inner.borrow_mut().core.handle_timeout(now());
                pump(&inner);
            }
        })
    });
    // Replacing the timer cancels the previous one.
    inner.borrow_mut().timer = timer;
}

fn perform(inner: &Rc<RefCell<Inner>>, action: Action) {
    match action {
        Action::FetchToken => fetch_token(inner),
        Action::Open { transport, kind, url, token } => open(inner, transport, kind, &url, token.as_deref()),
        Action::Send { transport, text } => {
            let failed = match inner.borrow().wire_of(transport) {
                Some(Wire::Ws { ws, .. }) => ws.send_with_str(&text).is_err(),
                Some(Wire::Http { http, .. }) => {
                    http.send(&text);
                    false
                }
                None => false,
            };
            if failed {
                inner
                    .borrow_mut()
                    .core
                    .handle(Event::TransportClosed { transport, code: 1006, reason: "send failed".into() }, now());
            }
        }
        Action::Close { transport, code, reason } => {
            let socket = {
                let mut state = inner.borrow_mut();
                match &state.socket {
                    Some(socket) if socket.transport == transport => state.socket.take(),
                    _ => None,
                }
            };
            // An HTTP session ends with its requests, which dropping it aborts.
            if let Some(Socket { wire: Wire::Ws { ws, .. }, .. }) = &socket {
                // Browsers only let pages send 1000 or 3000–4999.
                let code = if code == 1000 || (3000..=4999).contains(&code) { code } else { 1000 };
                let _ = ws.close_with_code_and_reason(code, &reason);
            }
        }
        Action::Deliver(delivery) => {
            let handlers: Vec<Function> = {
                let mut state = inner.borrow_mut();
                state.counters.messages += 1.0;
                let bytes = &mut state.counters.bytes;
                match bytes.iter_mut().find(|(channel, _)| *channel == delivery.channel) {
                    Some((_, n)) => *n += delivery.wire_bytes as f64,
                    None => bytes.push((delivery.channel.clone(), delivery.wire_bytes as f64)),
                }
                state
                    .handlers
                    .get(&delivery.channel)
                    .map(|ls| ls.iter().map(|l| l.handler.clone()).collect())
                    .unwrap_or_default()
            };
            if handlers.is_empty() {
                return;
            }
            let Ok(message) = js_sys::JSON::parse(&delivery.json) else { return };
            if let Some(changed) = &delivery.changed {
                let fields: js_sys::Array = changed.iter().map(|f| JsValue::from_str(f)).collect();
                let _ = Reflect::set(&message, &"changed".into(), &fields);
            }
            for handler in handlers {
                let _ = handler.call1(&JsValue::NULL, &message);
            }
        }
        Action::Subscription { channel, event } => {
            if let SubscriptionEvent::Subscribed { recovered: Some(true) } = event {
                inner.borrow_mut().counters.recoveries += 1.0;
            }
            let listeners: Vec<Function> = inner
                .borrow()
                .handlers
                .get(&channel)
                .map(|ls| ls.iter().filter_map(|l| l.events.clone()).collect())
                .unwrap_or_default();
            if listeners.is_empty() {
                return;
            }
            let object = subscription_event_object(&event);
            if matches!(event, SubscriptionEvent::Subscribed { .. }) {
                let core = &inner.borrow().core;
                if let Some(ms) = core.granted_interval_ms(&channel) {
                    set(object.unchecked_ref(), "maxRate", 1000.0 / ms as f64);
                }
                if core.deltas_granted(&channel) {
                    let _ = Reflect::set(&object, &"deltas".into(), &JsValue::TRUE);
                }
            }
            for listener in listeners {
                let _ = listener.call1(&JsValue::NULL, &object);
            }
        }
        Action::State { state, attempt, stopped } => {
            if state == ConnectionState::Connecting && attempt > 0 {
                inner.borrow_mut().counters.reconnects += 1.0;
            }
            let listeners = inner.borrow().state_listeners.clone();
            let object = state_object(state, attempt, stopped.as_ref());
            for listener in listeners {
                let _ = listener.call1(&JsValue::NULL, &object);
            }
        }
        Action::Error(error) => {
            let listeners = inner.borrow().error_listeners.clone();
            let object = error_object(&error);
            if listeners.is_empty() {
                web_sys::console::warn_2(&JsValue::from_str("tidewire:"), &object);
                return;
            }
            for listener in listeners {
                let _ = listener.call1(&JsValue::NULL, &object);
            }
        }
    }
}

fn open(inner: &Rc<RefCell<Inner>>, transport: TransportId, kind: TransportKind, url: &str, token: Option<&str>) {
    inner.borrow_mut().socket = None;
    if kind == TransportKind::Http {
        let wire = http::open(inner, transport, url, token);
        inner.borrow_mut().socket = Some(Socket { transport, wire });
        return;
    }
    let protocols = js_sys::Array::new();
    protocols.push(&JsValue::from_str("tidewire.v1"));
    if let Some(token) = token {
        protocols.push(&JsValue::from_str(&format!("tidewire.token.{token}")));
    }
    let ws = match WebSocket::new_with_str_sequence(url, &protocols) {
        Ok(ws) => ws,
        Err(e) => {
            let reason = e.as_string().unwrap_or_else(|| "cannot open WebSocket".into());
            inner.borrow_mut().core.handle(Event::TransportClosed { transport, code: 1006, reason }, now());
            return;
        }
    };
    let weak = Rc::downgrade(inner);
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        let Some(inner) = weak.upgrade() else { return };
        let Some(text) = event.data().as_string() else { return };
        inner.borrow_mut().counters.frames += 1.0;
        feed(&inner, Event::Frame { transport, text });
    });
    let weak = Rc::downgrade(inner);
    let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
        let Some(inner) = weak.upgrade() else { return };
        {
            let mut state = inner.borrow_mut();
            if state.socket.as_ref().is_some_and(|s| s.transport == transport) {
                state.socket = None;
            }
        }
        feed(&inner, Event::TransportClosed { transport, code: event.code(), reason: event.reason() });
    });
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    let wire = Wire::Ws { ws, _on_message: on_message, _on_close: on_close };
    inner.borrow_mut().socket = Some(Socket { transport, wire });
}

fn fetch_token(inner: &Rc<RefCell<Inner>>) {
    let Some(get_token) = inner.borrow().get_token.clone() else { return };
    let weak = Rc::downgrade(inner);
    let promise = match get_token.call0(&JsValue::NULL).map(|value| js_sys::Promise::resolve(&value)) {
        Ok(promise) => promise,
        Err(e) => {
            let message = e.as_string().unwrap_or_else(|| "getToken threw".into());
            inner.borrow_mut().core.handle(Event::Token(Err(TokenError::Failed(message))), now());
            return;
        }
    };
    wasm_bindgen_futures::spawn_local(async move {
        let result = wasm_bindgen_futures::JsFuture::from(promise).await;
        let Some(inner) = weak.upgrade() else { return };
        let answer = match result {
            Ok(value) => match value.as_string().filter(|t| !t.is_empty()) {
                Some(token) => Ok(token),
                None => Err(TokenError::Unauthorized("getToken returned no token".into())),
            },
            Err(error) => {
                let message = Reflect::get(&error, &JsValue::from_str("message"))
                    .ok()
                    .and_then(|m| m.as_string())
                    .or_else(|| error.as_string())
                    .unwrap_or_else(|| "getToken failed".into());
                Err(TokenError::Failed(message))
            }
        };
        // POSTs of a fallback session carry the newest token.
        if let (Ok(token), Some(Socket { wire: Wire::Http { http, .. }, .. })) = (&answer, &inner.borrow().socket) {
            http.token(token);
        }
        feed(&inner, Event::Token(answer));
    });
}

/// Online/offline and, optionally, page visibility.
fn listen_to_page(inner: &Rc<RefCell<Inner>>, pause_when_hidden: bool) {
    let Some(window) = web_sys::window() else { return };
    let mut registrations = Vec::new();
    let mut add = |target: web_sys::EventTarget, name: &'static str, event: fn() -> Option<Event>| {
        let weak = Rc::downgrade(inner);
        let closure = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            if let (Some(inner), Some(event)) = (weak.upgrade(), event()) {
                feed(&inner, event);
            }
        });
        let _ = target.add_event_listener_with_callback(name, closure.as_ref().unchecked_ref());
        registrations.push((target, name, closure));
    };
    add(window.clone().into(), "online", || Some(Event::Online));
    add(window.clone().into(), "offline", || Some(Event::Offline));
    if pause_when_hidden {
        if let Some(document) = window.document() {
            add(document.into(), "visibilitychange", || {
                let hidden = web_sys::window().and_then(|w| w.document()).is_some_and(|d| d.hidden());
                Some(if hidden { Event::Pause } else { Event::Resume })
            });
        }
    }
    inner.borrow_mut()._page_events = registrations;
}

impl Drop for TidewireClient {
    fn drop(&mut self) {
        let registrations = std::mem::take(&mut self.inner.borrow_mut()._page_events);
        for (target, name, closure) in registrations {
            let _ = target.remove_event_listener_with_callback(name, closure.as_ref().unchecked_ref());
        }
        feed(&self.inner, Event::Close);
        self.inner.borrow_mut().timer = None;
    }
}
