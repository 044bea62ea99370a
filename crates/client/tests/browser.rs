//! The browser driver in headless Chromium, against a real tidewire node (the `fixture`
//! example, started by `cargo xtask test`, whose control URL is baked in at build time
//! as `TIDEWIRE_FIXTURE`).

#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Function, Object, Reflect};
use tidewire_client::browser::{EventListener, Handler, Options, StateListener, TidewireClient};
use tidewire_desk::catalogue::{AnalyticsEvent, AnalyticsPublication};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

// Read at run time would need the page's environment; `env!` would stop clippy and
// `cargo check` from looking at this file without a fixture.
#[allow(clippy::option_env_unwrap)]
fn fixture() -> &'static str {
    option_env!("TIDEWIRE_FIXTURE").expect("build with TIDEWIRE_FIXTURE=http://… (cargo xtask test does)")
}

async fn control(path: &str) -> String {
    let window = web_sys::window().expect("a window");
    let response =
        JsFuture::from(window.fetch_with_str(&format!("{}{path}", fixture()))).await.expect("fixture answers");
    let response: web_sys::Response = response.unchecked_into();
    assert!(response.ok(), "fixture {path}: {}", response.status());
    JsFuture::from(response.text().unwrap()).await.unwrap().as_string().unwrap()
}

async fn sleep(ms: u32) {
    gloo_timers::future::TimeoutFuture::new(ms).await;
}

/// Waits up to `ms` for `check` to hold.
async fn eventually(ms: u32, what: &str, mut check: impl FnMut() -> bool) {
    let mut waited = 0;
    while !check() {
        assert!(waited < ms, "timed out waiting for {what}");
        sleep(20).await;
        waited += 20;
    }
}

struct Recorder {
    messages: Rc<RefCell<Vec<JsValue>>>,
    events: Rc<RefCell<Vec<JsValue>>>,
    states: Rc<RefCell<Vec<String>>>,
}

impl Recorder {
    fn new() -> Recorder {
        Recorder { messages: Rc::default(), events: Rc::default(), states: Rc::default() }
    }

    fn handler(&self) -> Handler {
        let messages = self.messages.clone();
        Closure::<dyn FnMut(JsValue)>::new(move |m| messages.borrow_mut().push(m)).into_js_value().unchecked_into()
    }

    fn event_listener(&self) -> EventListener {
        let events = self.events.clone();
        Closure::<dyn FnMut(JsValue)>::new(move |e| events.borrow_mut().push(e)).into_js_value().unchecked_into()
    }

    fn state_listener(&self) -> StateListener {
        let states = self.states.clone();
        Closure::<dyn FnMut(JsValue)>::new(move |s: JsValue| {
            let state = Reflect::get(&s, &"state".into()).unwrap().as_string().unwrap();
            let mut states = states.borrow_mut();
            if states.last() != Some(&state) {
                states.push(state);
            }
        })
        .into_js_value()
        .unchecked_into()
    }

    fn seqs(&self) -> Vec<u64> {
        self.messages
            .borrow()
            .iter()
            .map(|m| Reflect::get(m, &"seq".into()).unwrap().as_f64().unwrap() as u64)
            .collect()
    }

    /// The event types in order (`subscribing`, `subscribed`, `snapshot-end`, …).
    fn event_types(&self) -> Vec<String> {
        self.events.borrow().iter().filter_map(|e| Reflect::get(e, &"type".into()).ok()?.as_string()).collect()
    }

    fn subscribed_events(&self) -> Vec<Option<bool>> {
        self.events
            .borrow()
            .iter()
            .filter(|e| Reflect::get(e, &"type".into()).unwrap().as_string().as_deref() == Some("subscribed"))
            .map(|e| Reflect::get(e, &"recovered".into()).unwrap().as_bool())
            .collect()
    }
}

async fn client(extra: &[(&str, JsValue)]) -> TidewireClient {
    let info: serde_json::Value = serde_json::from_str(&control("/info").await).unwrap();
    let token = control("/token?sub=browser").await;
    let options = Object::new();
    Reflect::set(&options, &"url".into(), &info["ws"].as_str().unwrap().into()).unwrap();
    Reflect::set(&options, &"token".into(), &token.into()).unwrap();
    Reflect::set(&options, &"maxReconnectDelayMs".into(), &1000.into()).unwrap();
    for (key, value) in extra {
        Reflect::set(&options, &(*key).into(), value).unwrap();
    }
    TidewireClient::new(options.unchecked_into::<Options>()).expect("client")
}

fn channel_name(prefix: &str) -> String {
    format!("{prefix}-{}", (js_sys::Math::random() * 1e9) as u64)
}

#[wasm_bindgen_test]
async fn connects_subscribes_and_receives_batched_typed_frames() {
    let recorder = Recorder::new();
    let client = client(&[]).await;
    client.on_state(recorder.state_listener());
    let channel = channel_name("routing");
    let _sub = client.subscribe(channel.clone(), recorder.handler(), Some(recorder.event_listener()), None);
    eventually(5000, "subscribed", || !recorder.subscribed_events().is_empty()).await;
    assert_eq!(recorder.subscribed_events(), vec![None]);

    control(&format!("/publish?channel={channel}&count=300")).await;
    eventually(10_000, "300 messages", || recorder.messages.borrow().len() >= 300).await;
    assert_eq!(recorder.seqs(), (1..=300).collect::<Vec<_>>());

    // Batched: far fewer frames than messages.
    let stats = client.stats();
    let frames = Reflect::get(&stats, &"frames".into()).unwrap().as_f64().unwrap();
    assert!(frames < 300.0 / 5.0, "{frames} frames for 300 messages");

    // Typed: every message decodes as the catalogue's routing decision.
    for message in recorder.messages.borrow().iter() {
        let json = String::from(js_sys::JSON::stringify(message).unwrap());
        let typed: AnalyticsPublication = serde_json::from_str(&json).expect("a typed analytics publication");
        assert!(matches!(typed.event, AnalyticsEvent::RoutingDecision(ref d) if d.symbol == "EURUSD"));
    }

    // The page deletes a row: the publication comes back with its op.
    let row = js_sys::JSON::parse(r#"{"n":1}"#).unwrap();
    client.publish(channel.clone(), "row".into(), row, Some("k".into()), Some("delete".into())).unwrap();
    eventually(5000, "the delete", || recorder.messages.borrow().len() > 300).await;
    let last = recorder.messages.borrow().last().cloned().unwrap();
    assert_eq!(Reflect::get(&last, &"op".into()).unwrap().as_string().as_deref(), Some("delete"));
    let bad = client.publish(channel.clone(), "row".into(), JsValue::NULL, None, Some("drop".into()));
    assert!(bad.is_err(), "an op the protocol does not know is refused at once");
    assert_eq!(client.state(), "connected");
    client.close();
    eventually(2000, "closed", || client.state() == "disconnected").await;
}

#[wasm_bindgen_test]
async fn reconnects_after_a_server_restart_and_recovers_everything() {
    let recorder = Recorder::new();
    let client = client(&[]).await;
    client.on_state(recorder.state_listener());
    let channel = channel_name("restart");
    let _sub = client.subscribe(channel.clone(), recorder.handler(), Some(recorder.event_listener()), None);
    eventually(5000, "subscribed", || !recorder.subscribed_events().is_empty()).await;
    // A fresh channel holds no latest values: its (empty) snapshot ends at once.
    eventually(5000, "snapshot-end", || recorder.event_types().iter().any(|t| t == "snapshot-end")).await;
    let types = recorder.event_types();
    assert_eq!(&types[..3], ["subscribing", "subscribed", "snapshot-end"], "{types:?}");
    control(&format!("/publish?channel={channel}&count=20")).await;
    eventually(5000, "20 messages", || recorder.messages.borrow().len() >= 20).await;

    // The node drains (1012), 30 publications happen while it is down, it comes back.
    control(&format!("/restart?down_ms=400&publish=30&channel={channel}")).await;
    eventually(15_000, "reconnected and recovered", || recorder.subscribed_events().len() >= 2).await;
    control(&format!("/publish?channel={channel}&count=10")).await;
    eventually(10_000, "60 messages", || recorder.messages.borrow().len() >= 60).await;

    assert_eq!(recorder.seqs(), (1..=60).collect::<Vec<_>>(), "every seq exactly once, in order");
    assert_eq!(recorder.subscribed_events(), vec![None, Some(true)]);
    let states = recorder.states.borrow().clone();
    let reconnect = states.windows(3).any(|w| w == ["connected", "connecting", "connected"]);
    assert!(reconnect, "states went connected → connecting → connected: {states:?}");
    client.close();
}

#[wasm_bindgen_test]
async fn a_bad_token_is_terminal_and_says_why() {
    let stopped: Rc<RefCell<Option<JsValue>>> = Rc::default();
    let info: serde_json::Value = serde_json::from_str(&control("/info").await).unwrap();
    let options = Object::new();
    Reflect::set(&options, &"url".into(), &info["ws"].as_str().unwrap().into()).unwrap();
    Reflect::set(&options, &"token".into(), &"not-a-token".into()).unwrap();
    let client = TidewireClient::new(options.unchecked_into()).unwrap();
    let seen = stopped.clone();
    let listener: Function = Closure::<dyn FnMut(JsValue)>::new(move |s: JsValue| {
        let stop = Reflect::get(&s, &"stopped".into()).unwrap();
        if !stop.is_undefined() {
            *seen.borrow_mut() = Some(stop);
        }
    })
    .into_js_value()
    .unchecked_into();
    client.on_state(listener.unchecked_into());
    eventually(5000, "a terminal stop", || stopped.borrow().is_some()).await;
    let stop = stopped.borrow().clone().unwrap();
    assert_eq!(Reflect::get(&stop, &"reason".into()).unwrap().as_string().as_deref(), Some("terminal"));
    assert_eq!(Reflect::get(&stop, &"code".into()).unwrap().as_f64(), Some(4501.0));
    let message = Reflect::get(&stop, &"message".into()).unwrap().as_string().unwrap();
    assert!(message.starts_with("AUTH_INVALID"), "{message}");
    sleep(1500).await;
    assert_eq!(client.state(), "disconnected", "no reconnect after an auth failure");
}

#[wasm_bindgen_test]
async fn token_provider_and_unsubscribe() {
    let token = control("/token?sub=provider").await;
    let calls = Rc::new(RefCell::new(0));
    let counter = calls.clone();
    let get_token = Closure::<dyn FnMut() -> js_sys::Promise>::new(move || {
        *counter.borrow_mut() += 1;
        js_sys::Promise::resolve(&JsValue::from_str(&token))
    })
    .into_js_value();
    let recorder = Recorder::new();
    let client = client(&[("getToken", get_token), ("token", JsValue::UNDEFINED)]).await;
    let channel = channel_name("provider");
    let sub = client.subscribe(channel.clone(), recorder.handler(), Some(recorder.event_listener()), None);
    eventually(5000, "subscribed", || !recorder.subscribed_events().is_empty()).await;
    assert_eq!(*calls.borrow(), 1, "the provider was asked before connecting");
    control(&format!("/publish?channel={channel}&count=3")).await;
    eventually(5000, "3 messages", || recorder.messages.borrow().len() >= 3).await;
    assert_eq!(control(&format!("/subscribers?channel={channel}")).await, "1");
    sub.unsubscribe();
    // The server, not only the driver, lets go of the channel.
    let mut released = false;
    for _ in 0..100 {
        if control(&format!("/subscribers?channel={channel}")).await == "0" {
            released = true;
            break;
        }
        sleep(50).await;
    }
    assert!(released, "the server still has the subscription 5 s after unsubscribe");
    control(&format!("/publish?channel={channel}&count=3")).await;
    sleep(500).await;
    assert_eq!(recorder.messages.borrow().len(), 3, "nothing after unsubscribe");
    client.close();
}

#[wasm_bindgen_test]
async fn where_websocket_is_blocked_the_http_fallback_does_everything_with_zero_loss() {
    let info: serde_json::Value = serde_json::from_str(&control("/info").await).unwrap();
    let refused_before = info["refused"].as_u64().unwrap();
    let recorder = Recorder::new();
    // Through a proxy that refuses WebSocket upgrades; the options are the defaults a
    // page would use, apart from a shorter wait before WebSocket is tried again.
    let blocked = JsValue::from_str(info["blocked"].as_str().unwrap());
    let client = client(&[("url", blocked), ("websocketRetryMs", 2000.into())]).await;
    client.on_state(recorder.state_listener());
    let channel = channel_name("fallback");
    let _sub = client.subscribe(channel.clone(), recorder.handler(), Some(recorder.event_listener()), None);
    eventually(10_000, "subscribed over HTTP", || !recorder.subscribed_events().is_empty()).await;
    let refused: serde_json::Value = serde_json::from_str(&control("/info").await).unwrap();
    assert!(refused["refused"].as_u64().unwrap() > refused_before, "the WebSocket was tried and refused");
    control(&format!("/publish?channel={channel}&count=20")).await;
    eventually(5000, "20 messages", || recorder.messages.borrow().len() >= 20).await;
    // A publish goes out as a POST and comes back on the stream, once.
    let data = js_sys::JSON::parse(r#"{"symbol":"EURUSD","side":"BUY","volume":1}"#).unwrap();
    client.publish(channel.clone(), "routing-decision".into(), data, None, None).unwrap();
    eventually(5000, "the page's own publish", || recorder.messages.borrow().len() >= 21).await;

    // The node drains, 30 publications happen while it is down, it comes back; the
    // client also goes back to try WebSocket (still refused) and stays on HTTP.
    control(&format!("/restart?down_ms=400&publish=30&channel={channel}")).await;
    eventually(15_000, "reconnected and recovered", || recorder.subscribed_events().len() >= 2).await;
    sleep(2500).await;
    control(&format!("/publish?channel={channel}&count=10")).await;
    eventually(10_000, "61 messages", || recorder.messages.borrow().len() >= 61).await;
    sleep(300).await;

    assert_eq!(recorder.seqs(), (1..=61).collect::<Vec<_>>(), "every seq exactly once, in order");
    assert!(recorder.subscribed_events()[1..].iter().all(|r| *r == Some(true)), "{:?}", recorder.subscribed_events());
    let states = recorder.states.borrow().clone();
    assert_eq!(states.first().map(String::as_str), Some("connecting"));
    assert_eq!(client.state(), "connected");
    client.close();
}

#[wasm_bindgen_test]
async fn a_bare_event_source_resumes_from_last_event_id_and_misses_nothing() {
    let info: serde_json::Value = serde_json::from_str(&control("/info").await).unwrap();
    let token = control("/token?sub=event-source").await;
    let channel = channel_name("sse");
    let base = info["ws"].as_str().unwrap().replacen("ws://", "http://", 1).replace("/ws", "");
    let url = format!("{base}/sse?channels={channel}&token={token}");
    let seqs: Rc<RefCell<Vec<u64>>> = Rc::default();
    let recovered: Rc<RefCell<Vec<Option<bool>>>> = Rc::default();
    let source = web_sys::EventSource::new(&url).expect("an EventSource");
    let seen = seqs.clone();
    let on_message = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |event: web_sys::MessageEvent| {
        let message: serde_json::Value = serde_json::from_str(&event.data().as_string().unwrap()).unwrap();
        seen.borrow_mut().push(message["seq"].as_u64().unwrap());
    });
    source.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    let subscribed = recovered.clone();
    let on_subscribed = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |event: web_sys::MessageEvent| {
        let message: serde_json::Value = serde_json::from_str(&event.data().as_string().unwrap()).unwrap();
        subscribed.borrow_mut().push(message["recovered"].as_bool());
    });
    source.add_event_listener_with_callback("subscribed", on_subscribed.as_ref().unchecked_ref()).unwrap();
    eventually(10_000, "subscribed", || !recovered.borrow().is_empty()).await;
    control(&format!("/publish?channel={channel}&count=20")).await;
    eventually(5000, "20 messages", || seqs.borrow().len() >= 20).await;

    // The node drains and ends the stream; 30 are published while it is down; the
    // EventSource reconnects by itself, sending the last id it saw.
    control(&format!("/restart?down_ms=400&publish=30&channel={channel}")).await;
    eventually(20_000, "resubscribed", || recovered.borrow().len() >= 2).await;
    control(&format!("/publish?channel={channel}&count=10")).await;
    eventually(10_000, "60 messages", || seqs.borrow().len() >= 60).await;
    sleep(300).await;
    assert_eq!(*seqs.borrow(), (1..=60).collect::<Vec<_>>(), "every seq exactly once, in order");
    assert_eq!(recovered.borrow()[1..], [Some(true)], "resumed from Last-Event-ID");
    source.close();
}
