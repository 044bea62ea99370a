//! What the browser driver tells the page, as the JavaScript objects its TypeScript
//! declarations (`TidewireState`, `TidewireSubscriptionEvent`, `TidewireError` in
//! `browser.rs`) describe: built here, in one place per kind.

use js_sys::Object;
use wasm_bindgen::JsValue;

use super::set;
use crate::core::{ClientError, ConnectionState, StopReason, SubscriptionEvent};

pub(super) fn state_name(state: ConnectionState) -> &'static str {
    match state {
        ConnectionState::Disconnected => "disconnected",
        ConnectionState::Connecting => "connecting",
        ConnectionState::Connected => "connected",
    }
}

pub(super) fn state_object(state: ConnectionState, attempt: u32, stopped: Option<&StopReason>) -> JsValue {
    let object = Object::new();
    set(&object, "state", state_name(state));
    set(&object, "attempt", attempt);
    if let Some(stopped) = stopped {
        let reason = Object::new();
        match stopped {
            StopReason::Closed => set(&reason, "reason", "closed"),
            StopReason::Offline => set(&reason, "reason", "offline"),
            StopReason::Terminal { code, reason: message } => {
                set(&reason, "reason", "terminal");
                set(&reason, "code", *code);
                set(&reason, "message", message.as_str());
            }
            StopReason::Unauthorized(message) => {
                set(&reason, "reason", "unauthorized");
                set(&reason, "message", message.as_str());
            }
            StopReason::UnsupportedProtocol { server } => {
                set(&reason, "reason", "unsupported-protocol");
                set(&reason, "message", format!("server speaks protocol v{server}"));
            }
        }
        set(&object, "stopped", reason);
    }
    object.into()
}

pub(super) fn subscription_event_object(event: &SubscriptionEvent) -> JsValue {
    let object = Object::new();
    match event {
        SubscriptionEvent::Subscribing => set(&object, "type", "subscribing"),
        SubscriptionEvent::Subscribed { recovered } => {
            set(&object, "type", "subscribed");
            if let Some(recovered) = recovered {
                set(&object, "recovered", *recovered);
            }
        }
        SubscriptionEvent::Unsubscribed => set(&object, "type", "unsubscribed"),
        SubscriptionEvent::SnapshotEnd => set(&object, "type", "snapshot-end"),
        SubscriptionEvent::Refused { code, message } => {
            set(&object, "type", "refused");
            set(&object, "code", code.as_str());
            set(&object, "message", message.as_str());
        }
    }
    object.into()
}

pub(super) fn error_object(error: &ClientError) -> JsValue {
    let object = Object::new();
    match error {
        ClientError::Server { code, message, channel } => {
            set(&object, "kind", "server");
            set(&object, "code", code.as_str());
            set(&object, "message", message.as_str());
            if let Some(channel) = channel {
                set(&object, "channel", channel.as_str());
            }
        }
        ClientError::Decode(message) => {
            set(&object, "kind", "decode");
            set(&object, "message", message.as_str());
        }
        ClientError::PublishesDropped { count } => {
            set(&object, "kind", "publishes-dropped");
            set(&object, "message", format!("{count} queued publishes were dropped"));
        }
        ClientError::PublishTooLarge { channel, size, max } => {
            set(&object, "kind", "publish-too-large");
            set(&object, "message", format!("a publish of {size} bytes was not sent: the server takes at most {max}"));
            set(&object, "channel", channel.as_str());
        }
        ClientError::PublishUnconfirmed { channel } => {
            set(&object, "kind", "publish-unconfirmed");
            set(
                &object,
                "message",
                "a publish got no answer within the server's idempotency window; it was not sent again",
            );
            set(&object, "channel", channel.as_str());
        }
        ClientError::Token(message) => {
            set(&object, "kind", "token");
            set(&object, "message", message.as_str());
        }
    }
    object.into()
}
