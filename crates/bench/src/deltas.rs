//! Field deltas on the demo's channels: what they save, against the alternatives.
//!
//! The demo desk's own publisher runs into an in-process node for a stretch of virtual
//! time (the runtime's clock is paused and jumps from one timer to the next, so an hour
//! of the desk takes seconds), with two real sessions subscribed to the LP grid and the
//! exposure panel: one asking for deltas, one not. Every publication each session is
//! sent is counted in bytes, as it would go on the wire. From the whole values, the run
//! also encodes each update the other ways a delta could be sent (RFC 6902 JSON Patch,
//! and the changed top-level fields only) and checks that the delta session's rebuilt
//! values equal the whole ones.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use serde_json::value::RawValue;
use tidewire_protocol::delta::apply_to_text;
use tidewire_server::auth::{Claims, mint_hs256, unix_now};
use tidewire_server::hub::Clock;
use tidewire_server::session::Session;
use tidewire_server::{Config, Hub};

use crate::DeltasArgs;

const SECRET: &str = "tidewire-bench-secret-of-32-bytes-or-more";
const CHANNELS: [&str; 2] = ["lp-performance", "exposure-updates"];

/// What one channel cost each way.
#[derive(Default)]
struct Costs {
    updates: u64,
    whole: u64,
    sent_with_deltas: u64,
    deltas: u64,
    json_patch: u64,
    changed_fields: u64,
}

pub fn run(args: &DeltasArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(measure(args))
}

fn session(hub: &Hub, deltas: bool) -> Result<Session, String> {
    let claims = Claims { sub: "bench-deltas".into(), exp: unix_now() + 3600 * 24 * 365, ..Claims::default() };
    let token = mint_hs256(SECRET, &claims).map_err(|e| e.to_string())?;
    let mut session = Session::open(hub, hub.verifier().verify(&token), None).map_err(|(_, reason)| reason)?;
    session.greet(Default::default());
    let options = if deltas { r#"{"deltas":true}"# } else { "{}" };
    let command =
        format!(r#"{{"action":"subscribe","channels":["{}","{}"],"options":{options}}}"#, CHANNELS[0], CHANNELS[1]);
    let _ = session.on_text(&command);
    Ok(session)
}

/// Every publication of `CHANNELS` in the frames `session` has due at `now`.
fn drain(session: &Session, now: std::time::Instant, into: &mut Vec<String>) {
    while let Some(frame) = session.next_frame(now, true) {
        let Ok(messages) = serde_json::from_str::<Vec<&RawValue>>(&frame) else { continue };
        for message in messages {
            let text = message.get();
            if text.contains(r#""seq":"#) && !text.contains(r#""type":"subscribed""#) {
                into.push(text.to_owned());
            }
        }
    }
}

async fn measure(args: &DeltasArgs) -> Result<(), String> {
    let clock = Clock::manual();
    let mut config = Config::for_tests(SECRET);
    config.max_queued_bytes = 64 << 20;
    let hub = Hub::with_clock(config, clock.clone()).map_err(|e| e.to_string())?;
    let (with_deltas, whole) = (session(&hub, true)?, session(&hub, false)?);
    let listing = tidewire_desk::demo::Listing::default();
    tokio::spawn(tidewire_desk::demo::run_publisher(hub.clone(), args.rate, listing));
    let (mut sent_deltas, mut sent_whole) = (Vec::new(), Vec::new());
    let step = Duration::from_millis(50);
    let mut elapsed = Duration::ZERO;
    while elapsed < args.duration {
        tokio::time::sleep(step).await;
        clock.advance(step);
        elapsed += step;
        drain(&with_deltas, clock.now(), &mut sent_deltas);
        drain(&whole, clock.now(), &mut sent_whole);
    }
    hub.shutdown_token().cancel();
    report(args, &sent_whole, &sent_deltas)
}

fn report(args: &DeltasArgs, whole: &[String], with_deltas: &[String]) -> Result<(), String> {
    let mut costs: HashMap<&str, Costs> = HashMap::new();
    let mut previous: HashMap<(String, String), Value> = HashMap::new();
    for text in whole {
        let message: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let (Some(channel), Some(key)) = (message["channel"].as_str(), message["key"].as_str()) else { continue };
        let Some(channel) = CHANNELS.iter().find(|c| **c == channel) else { continue };
        let cost = costs.entry(channel).or_default();
        cost.updates += 1;
        cost.whole += text.len() as u64;
        // What carries the change in each encoding: the envelope and `"base":<seq>`.
        let base = format!(r#","base":{}"#, message["seq"].as_u64().unwrap_or(0)).len();
        let envelope = text.len() - message["data"].to_string().len() + base;
        let data = &message["data"];
        match previous.insert((channel.to_string(), key.to_owned()), data.clone()) {
            Some(before) => {
                cost.json_patch += (envelope + json_patch(&before, data).to_string().len()) as u64;
                cost.changed_fields += (envelope + changed_fields(&before, data).to_string().len()) as u64;
            }
            None => {
                cost.json_patch += text.len() as u64;
                cost.changed_fields += text.len() as u64;
            }
        }
    }
    // The delta session's stream, rebuilt as a client does; it must equal the whole one.
    let mut held: HashMap<(String, String), (u64, String)> = HashMap::new();
    let mut rebuilt_equal = 0;
    for (text, whole) in with_deltas.iter().zip(whole) {
        let message: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let (Some(channel), Some(key)) = (message["channel"].as_str(), message["key"].as_str()) else { continue };
        let Some(cost) = costs.get_mut(channel) else { continue };
        cost.sent_with_deltas += text.len() as u64;
        let seq = message["seq"].as_u64().unwrap_or(0);
        let data = match message["base"].as_u64() {
            Some(base) => {
                cost.deltas += 1;
                let (at, value) =
                    held.get(&(channel.to_owned(), key.to_owned())).ok_or("a delta for a key not held")?;
                if *at != base {
                    return Err(format!("a delta against {base}, but {at} is held"));
                }
                apply_to_text(value, &message["data"].to_string()).ok_or("a patch that does not apply")?
            }
            None => message["data"].to_string(),
        };
        let expected: Value = serde_json::from_str(whole).map_err(|e| e.to_string())?;
        let rebuilt: Value = serde_json::from_str(&data).map_err(|e| e.to_string())?;
        if rebuilt != expected["data"] || expected["seq"].as_u64() != Some(seq) {
            return Err(format!("seq {seq} of {channel} rebuilt as {rebuilt}, not {}", expected["data"]));
        }
        rebuilt_equal += 1;
        held.insert((channel.to_owned(), key.to_owned()), (seq, data));
    }
    if with_deltas.len() != whole.len() {
        return Err(format!("{} publications with deltas, {} without", with_deltas.len(), whole.len()));
    }
    println!(
        "deltas: the demo desk for {} of virtual time ({} routing decisions/s); every byte is a publication as sent",
        humantime::format_duration(args.duration),
        args.rate
    );
    println!(
        "  {:<17} {:>7} {:>11} {:>16} {:>11} {:>15} {:>8}",
        "channel", "updates", "whole B", "merge patch B", "JSON Patch B", "changed only B", "saved"
    );
    for channel in CHANNELS {
        let Some(c) = costs.get(channel) else { continue };
        let saved = 100.0 * (1.0 - c.sent_with_deltas as f64 / c.whole.max(1) as f64);
        println!(
            "  {:<17} {:>7} {:>11} {:>16} {:>11} {:>15} {:>7.1}%",
            channel,
            c.updates,
            c.whole,
            format!("{} ({} deltas)", c.sent_with_deltas, c.deltas),
            c.json_patch,
            c.changed_fields,
            saved
        );
    }
    println!("  {rebuilt_equal} values rebuilt from the delta stream, all equal to the whole ones");
    Ok(())
}

/// RFC 6902 operations turning `before` into `after` (objects recursed, anything else
/// replaced), for comparison.
fn json_patch(before: &Value, after: &Value) -> Value {
    fn walk(path: &str, before: &Value, after: &Value, ops: &mut Vec<Value>) {
        match (before, after) {
            (Value::Object(b), Value::Object(a)) => {
                for (field, old) in b {
                    let at = format!("{path}/{}", field.replace('~', "~0").replace('/', "~1"));
                    match a.get(field) {
                        None => ops.push(serde_json::json!({"op": "remove", "path": at})),
                        Some(new) => walk(&at, old, new, ops),
                    }
                }
                for (field, new) in a {
                    if !b.contains_key(field) {
                        let at = format!("{path}/{}", field.replace('~', "~0").replace('/', "~1"));
                        ops.push(serde_json::json!({"op": "add", "path": at, "value": new}));
                    }
                }
            }
            (b, a) if b == a => {}
            (_, a) => ops.push(serde_json::json!({"op": "replace", "path": path, "value": a})),
        }
    }
    let mut ops = Vec::new();
    walk("", before, after, &mut ops);
    Value::Array(ops)
}

/// The top-level fields whose values changed, whole (what a field-level delta without
/// nesting sends).
fn changed_fields(before: &Value, after: &Value) -> Value {
    let (Value::Object(b), Value::Object(a)) = (before, after) else { return after.clone() };
    let changed = a.iter().filter(|(k, v)| b.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), v.clone()));
    Value::Object(changed.collect())
}
