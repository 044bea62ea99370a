//! Property tests: what goes on the wire comes back unchanged, decoders never panic,
//! and the batcher never loses a message without reporting it.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use tidewire_protocol::batch::{BatchConfig, Batcher, Outbound, Position};
use tidewire_protocol::command::{Ping, Publish, Refresh, Subscribe, SubscribeOptions, Unsubscribe};
use tidewire_protocol::message::{
    Connected, ErrorMessage, GapNotice, GapReason, Heartbeat, Limits, Pong, Published, Refreshed, Subscribed,
    Unsubscribed,
};
use tidewire_protocol::{
    Command, CommandId, Control, EncodedMessage, ErrorCode, NewPublication, Op, Publication, ServerMessage,
    StreamPosition, Timestamp, channel, decode_command, decode_frame, encode_frame,
};

fn channel_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,20}",
        "[a-z]{1,8}#[a-z0-9@.]{1,12}",
        Just("routing-metrics".to_owned()),
        Just("lp-performance".to_owned()),
    ]
}

fn message_type() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9.-]{0,30}".prop_filter("reserved", |t| tidewire_protocol::message::validate_message_type(t).is_ok())
}

fn json_data() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1e12f64..1e12).prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn command_id() -> impl Strategy<Value = Option<CommandId>> {
    prop::option::of(prop_oneof![any::<u64>().prop_map(CommandId::Number), ".{0,12}".prop_map(CommandId::Text)])
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    (0i64..4_102_444_800_000_000).prop_map(Timestamp::from_unix_micros)
}

fn stream_position() -> impl Strategy<Value = StreamPosition> {
    (any::<u64>(), prop::option::of("[a-z0-9]{1,16}")).prop_map(|(seq, epoch)| StreamPosition { seq, epoch })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![Just(Op::Upsert), Just(Op::Delete), Just(Op::Clear)]
}

fn new_publication() -> impl Strategy<Value = NewPublication> {
    (channel_name(), message_type(), json_data(), prop::option::of("[A-Z]{1,6}"), op()).prop_map(
        |(channel, kind, data, key, op)| NewPublication { channel, kind, data, key, idempotency_key: None, op },
    )
}

fn command() -> impl Strategy<Value = Command> {
    let channels = || prop::collection::vec(channel_name(), 0..5);
    prop_oneof![
        (
            command_id(),
            channels(),
            prop::option::of(prop::collection::btree_map(channel_name(), stream_position(), 0..3)),
            prop::option::of(
                any::<bool>().prop_map(|snapshot_end| SubscribeOptions { snapshot_end, ..Default::default() })
            ),
        )
            .prop_map(|(id, channels, since, options)| Command::Subscribe(Subscribe {
                id,
                channels,
                since,
                options
            })),
        (command_id(), channels()).prop_map(|(id, channels)| Command::Unsubscribe(Unsubscribe { id, channels })),
        (command_id(), new_publication()).prop_map(|(id, publication)| Command::Publish(Publish { id, publication })),
        command_id().prop_map(|id| Command::Ping(Ping { id })),
        (command_id(), ".{0,40}").prop_map(|(id, token)| Command::Refresh(Refresh { id, token })),
    ]
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    let publication = (new_publication(), timestamp(), any::<u64>(), any::<bool>(), prop::option::of(any::<u64>()))
        .prop_map(|(p, timestamp, seq, snapshot, base)| {
            ServerMessage::Publication(Publication {
                kind: p.kind,
                timestamp,
                channel: p.channel,
                seq,
                key: p.key,
                op: Default::default(),
                snapshot,
                base,
                data: p.data,
            })
        });
    let control = prop_oneof![
        (timestamp(), ".{0,10}", ".{0,10}", any::<u32>(), any::<u64>(), prop::option::of(timestamp())).prop_map(
            |(timestamp, connection_id, user_id, version, heartbeat_interval_ms, expires_at)| {
                Control::Connected(Connected {
                    timestamp,
                    connection_id,
                    user_id,
                    version,
                    heartbeat_interval_ms,
                    expires_at,
                    limits: Limits {
                        max_batch: 50,
                        batch_interval_ms: 16,
                        max_queued_batches: 10,
                        max_channels: 128,
                        max_message_bytes: 4096,
                        commands_per_second: 1000,
                        command_burst: 200,
                        max_queued_bytes: 1 << 20,
                        idempotency_window_ms: 120_000,
                    },
                })
            }
        ),
        (timestamp(), command_id(), channel_name(), any::<u64>(), "[a-z0-9]{1,8}", prop::option::of(any::<bool>()))
            .prop_map(|(timestamp, id, channel, seq, epoch, recovered)| {
                Control::Subscribed(Subscribed {
                    timestamp,
                    id,
                    channel,
                    seq,
                    epoch,
                    recovered,
                    min_interval: None,
                    deltas: false,
                })
            }),
        (timestamp(), command_id(), channel_name()).prop_map(|(timestamp, id, channel)| Control::Unsubscribed(
            Unsubscribed { timestamp, id, channel, code: None, message: None }
        )),
        (timestamp(), command_id(), channel_name(), any::<u64>())
            .prop_map(|(timestamp, id, channel, seq)| Control::Published(Published { timestamp, id, channel, seq })),
        (timestamp(), command_id(), prop::option::of(timestamp()))
            .prop_map(|(timestamp, id, expires_at)| Control::Refreshed(Refreshed { timestamp, id, expires_at })),
        (
            timestamp(),
            command_id(),
            prop::sample::select(ErrorCode::ALL.to_vec()),
            ".{0,30}",
            prop::option::of(channel_name()),
            prop::option::of(json_data())
        )
            .prop_map(|(timestamp, id, code, message, channel, details)| {
                // `details: null` is indistinguishable from an absent field on the wire.
                let details = details.filter(|d| !d.is_null());
                Control::Error(ErrorMessage { timestamp, id, code, message, channel, details })
            }),
        (timestamp(), command_id()).prop_map(|(timestamp, id)| Control::Pong(Pong { timestamp, id })),
        timestamp().prop_map(|timestamp| Control::Heartbeat(Heartbeat { timestamp })),
        (timestamp(), channel_name(), any::<u64>(), 0u64..1000, prop::bool::ANY).prop_map(
            |(timestamp, channel, from, len, superseded)| {
                let reason = if superseded { GapReason::Superseded } else { GapReason::Overflow };
                Control::Gap(GapNotice { timestamp, channel, from, to: from.saturating_add(len), reason })
            }
        ),
    ];
    prop_oneof![publication, control.prop_map(ServerMessage::Control)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn commands_round_trip(cmd in command()) {
        let text = serde_json::to_string(&cmd).unwrap();
        prop_assert_eq!(decode_command(&text).unwrap(), cmd);
    }

    #[test]
    fn frames_round_trip(messages in prop::collection::vec(server_message(), 0..8)) {
        let encoded: Vec<EncodedMessage> = messages.iter().map(|m| EncodedMessage::encode(m).unwrap()).collect();
        let frame = encode_frame(&encoded);
        prop_assert_eq!(decode_frame(&frame).unwrap(), messages);
    }

    #[test]
    fn decoders_never_panic(text in ".{0,200}") {
        let _ = decode_command(&text);
        let _ = decode_frame(&text);
        let _ = channel::validate(&text);
        let _ = channel::ChannelPattern::parse(&text);
        let _ = Timestamp::parse(&text);
    }

    #[test]
    fn decoders_never_panic_on_near_json(cmd in command(), cut in 0usize..400, junk in ".{0,4}") {
        let text = serde_json::to_string(&cmd).unwrap();
        let cut = (0..=cut.min(text.len())).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        let mangled = format!("{}{}{}", &text[..cut], junk, &text[cut..]);
        let _ = decode_command(&mangled);
        let _ = decode_frame(&format!("[{mangled}]"));
    }

    /// Drives a batcher with random pushes and polls: every publication is delivered
    /// once, or covered by exactly one reported gap; per channel, deliveries are in order.
    #[test]
    fn batcher_never_loses_a_message_silently(
        ops in prop::collection::vec((0u8..4, 0usize..3, prop::option::of(0u8..3), 0u64..40), 1..400),
        max_batch in 1usize..8,
        max_queued_batches in 1usize..4,
    ) {
        let channels = ["a", "b", "c"];
        let mut batcher = Batcher::new(BatchConfig {
            max_batch,
            interval: Duration::from_millis(16),
            max_queued_batches,
            ..BatchConfig::default()
        });
        let mut next_seq: HashMap<&str, u64> = HashMap::new();
        let mut outcome: HashMap<(String, u64), &str> = HashMap::new();
        let mut last_delivered: HashMap<String, u64> = HashMap::new();
        let mut pushed = 0u64;
        let mut now = Duration::ZERO;

        let drain = |batcher: &mut Batcher,
                     now: Duration,
                     outcome: &mut HashMap<(String, u64), &str>,
                     last: &mut HashMap<String, u64>|
         -> Result<(), TestCaseError> {
            if let Some(frame) = batcher.poll_frame(now) {
                prop_assert!(frame.len() <= max_batch);
                for gap in &frame.gaps {
                    for seq in gap.from..=gap.to {
                        prop_assert!(outcome.insert((gap.channel.to_string(), seq), "gap").is_none(), "reported twice");
                    }
                }
                for message in &frame.messages {
                    let v: Value = serde_json::from_str(message.message().as_str()).unwrap();
                    let channel = v["channel"].as_str().unwrap().to_owned();
                    let seq = v["seq"].as_u64().unwrap();
                    if let Some(prev) = last.insert(channel.clone(), seq) {
                        prop_assert!(seq > prev, "out of order on {}", channel);
                    }
                    prop_assert!(outcome.insert((channel, seq), "delivered").is_none(), "delivered twice");
                }
            }
            Ok(())
        };

        for (op, channel_index, key, advance) in ops {
            match op {
                0..=2 => {
                    let channel = channels[channel_index];
                    let seq = next_seq.entry(channel).or_insert(0);
                    *seq += 1;
                    let message = EncodedMessage::encode(&json!({"channel": channel, "seq": *seq})).unwrap();
                    let position =
                        Position { channel: channel.into(), seq: *seq, key: key.map(|k| k.to_string().into()) };
                    batcher.push(Outbound::publication(message, position));
                    pushed += 1;
                }
                _ => {
                    now += Duration::from_millis(advance);
                    drain(&mut batcher, now, &mut outcome, &mut last_delivered)?;
                }
            }
        }
        while let Some(at) = batcher.poll_timeout() {
            now = now.max(at);
            drain(&mut batcher, now, &mut outcome, &mut last_delivered)?;
        }
        prop_assert_eq!(outcome.len() as u64, pushed, "every publication delivered or reported");
    }

    /// With a byte budget and control messages in the mix: what waits never exceeds the
    /// budget unless the batcher went over budget, and from then on it refuses every
    /// message; publications are delivered, reported in a gap, or refused (counted).
    #[test]
    fn batcher_stays_within_its_byte_budget(
        ops in prop::collection::vec((0u8..5, 1usize..300, 0u64..40), 1..400),
        max_bytes in 200usize..4000,
    ) {
        let mut batcher = Batcher::new(BatchConfig { max_bytes, ..BatchConfig::default() });
        let (mut seq, mut now) = (0u64, Duration::ZERO);
        let (mut accounted, mut refused) = (0u64, 0u64);
        for (op, size, advance) in ops {
            let padding = "x".repeat(size);
            let dropped = match op {
                0..=2 => {
                    seq += 1;
                    let message = EncodedMessage::encode(&json!({"channel": "a", "seq": seq, "p": padding})).unwrap();
                    batcher.push(Outbound::publication(message, Position { channel: "a".into(), seq, key: None }))
                }
                3 => {
                    let message = EncodedMessage::encode(&json!({"type": "pong", "p": padding})).unwrap();
                    batcher.push(Outbound::control(message))
                }
                _ => {
                    now += Duration::from_millis(advance);
                    if let Some(frame) = batcher.poll_frame(now) {
                        accounted += frame.gaps.iter().map(|g| g.len()).sum::<u64>();
                        accounted += frame.messages.iter().filter(|m| m.position().is_some()).count() as u64;
                    }
                    Default::default()
                }
            };
            if op <= 2 {
                refused += u64::from(dropped.refused);
            }
            if batcher.is_over_budget() {
                let message = EncodedMessage::encode(&json!({})).unwrap();
                prop_assert_eq!(batcher.push(Outbound::control(message)).refused, 1);
            } else {
                prop_assert!(batcher.bytes() <= max_bytes, "{} bytes wait, budget {}", batcher.bytes(), max_bytes);
            }
        }
        while let Some(at) = batcher.poll_timeout() {
            now = now.max(at);
            if let Some(frame) = batcher.poll_frame(now) {
                accounted += frame.gaps.iter().map(|g| g.len()).sum::<u64>();
                accounted += frame.messages.iter().filter(|m| m.position().is_some()).count() as u64;
            }
        }
        prop_assert_eq!(accounted + refused, seq, "every publication delivered, reported or refused");
    }
}

#[test]
fn since_map_order_is_stable() {
    let since: BTreeMap<String, StreamPosition> = [
        ("b".to_owned(), StreamPosition { seq: 1, epoch: None }),
        ("a".to_owned(), StreamPosition { seq: 2, epoch: None }),
    ]
    .into();
    let cmd = Command::Subscribe(Subscribe {
        id: None,
        channels: vec!["a".into(), "b".into()],
        since: Some(since),
        options: None,
    });
    assert_eq!(
        serde_json::to_string(&cmd).unwrap(),
        r#"{"action":"subscribe","channels":["a","b"],"since":{"a":2,"b":1}}"#
    );
}

mod event_stream {
    use proptest::prelude::*;
    use tidewire_protocol::StreamPosition;
    use tidewire_protocol::event_stream::{EventParser, MAX_EVENT_ID_BYTES, StreamIds, write_event};

    fn epoch() -> impl Strategy<Value = Option<String>> {
        prop::option::of("[a-z0-9][a-z0-9._-]{0,20}")
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Whatever the data (any line breaks) and however the bytes are cut, a reader
        /// gets back the events written, lines joined by `\n`.
        #[test]
        fn events_read_back_through_any_cuts(
            events in prop::collection::vec(("[a-z]{0,8}", "(?s).{0,60}"), 1..6),
            cut in 1usize..17,
        ) {
            let mut out = String::new();
            for (name, data) in &events {
                write_event(&mut out, (!name.is_empty()).then_some(name.as_str()), None, data);
            }
            let mut parser = EventParser::new(1 << 20);
            let mut read = Vec::new();
            for piece in out.as_bytes().chunks(cut) {
                parser.push(piece, |e| read.push(e)).unwrap();
            }
            prop_assert_eq!(read.len(), events.len());
            for (event, (name, data)) in read.iter().zip(&events) {
                let expected_name = if name.is_empty() { "message" } else { name.as_str() };
                prop_assert_eq!(event.name.as_str(), expected_name);
                prop_assert_eq!(event.data.clone(), data.replace("\r\n", "\n").replace('\r', "\n"));
            }
        }

        /// Any bytes: no panic, and never more than the bound held.
        #[test]
        fn the_reader_never_panics_and_stays_bounded(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let mut parser = EventParser::new(64);
            let _ = parser.push(&bytes, |e| assert!(e.data.len() <= 64 && e.name.len() <= 64));
        }

        #[test]
        fn ids_round_trip(positions in prop::collection::vec(prop::option::of((any::<u64>(), epoch())), 1..33)) {
            let mut ids = StreamIds::new(positions.len());
            for (i, position) in positions.iter().enumerate() {
                if let Some((seq, epoch)) = position {
                    ids.set(i, StreamPosition { seq: *seq, epoch: epoch.clone() });
                }
            }
            let id = ids.encode();
            prop_assert!(id.len() <= MAX_EVENT_ID_BYTES);
            prop_assert_eq!(StreamIds::decode(&id, positions.len()), Some(ids));
        }

        #[test]
        fn id_decoding_never_panics(text in "(?s).{0,300}", channels in 0usize..40) {
            let _ = StreamIds::decode(&text, channels);
        }
    }
}
