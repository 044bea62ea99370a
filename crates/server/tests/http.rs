//! The HTTP endpoints over real sockets: the publish API, channel listing, health,
//! readiness, metrics, and the `tidewire` binary's `token` and `healthcheck`.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

#[tokio::test]
async fn publish_one_and_many() {
    let server = TestServer::start().await;
    let mut client = server.client("u").await;
    client.next().await;
    client.send(r#"{"action":"subscribe","channels":["alerts"]}"#).await;
    client.expect_type("subscribed").await;

    let token = publisher_token();
    let (status, body) =
        post_publish(&server, Some(&token), r#"{"channel":"alerts","type":"alert","data":{"title":"one"}}"#).await;
    assert_eq!((status, body), (200, json!({"channel":"alerts","seq":1})));
    let (status, body) = post_publish(
        &server,
        Some(&token),
        concat!(
            r#"[{"channel":"alerts","type":"alert","data":{"n":2}},"#,
            r#"{"channel":"alerts","type":"alert","data":{"n":3},"key":"k"}]"#,
        ),
    )
    .await;
    assert_eq!((status, body), (200, json!([{"channel":"alerts","seq":2},{"channel":"alerts","seq":3}])));
    for seq in 1..=3 {
        assert_eq!(client.next().await["seq"], seq);
    }
}

#[tokio::test]
async fn publish_errors_have_codes_and_statuses() {
    let server = TestServer::with(|c| c.max_publication_bytes = 100).await;
    let token = publisher_token();
    let mut limited = claims("svc");
    limited.publish = Some(vec!["alerts".into()]);
    let limited = token_with(&limited);
    let ok = r#"{"channel":"alerts","type":"alert","data":{}}"#;
    let cases: Vec<(Option<&str>, String, u16, &str)> = vec![
        (None, ok.into(), 401, "AUTH_REQUIRED"),
        (Some("garbage"), ok.into(), 401, "AUTH_INVALID"),
        (Some(&limited), r#"{"channel":"routing-metrics","type":"x","data":{}}"#.into(), 403, "FORBIDDEN"),
        (Some(&token), "not json".into(), 400, "BAD_REQUEST"),
        (Some(&token), r#"{"channel":"bad name","type":"x","data":{}}"#.into(), 400, "INVALID_CHANNEL"),
        (Some(&token), r#"{"channel":"alerts","type":"gap","data":{}}"#.into(), 400, "BAD_REQUEST"),
        (
            Some(&token),
            format!(r#"{{"channel":"alerts","type":"x","data":"{}"}}"#, "x".repeat(200)),
            413,
            "MESSAGE_TOO_BIG",
        ),
    ];
    for (token, body, status, code) in cases {
        let (got_status, got) = post_publish(&server, token, &body).await;
        assert_eq!((got_status, got["code"].as_str().unwrap_or_default()), (status, code), "{body}");
    }
    // A user token without a publish claim may not publish.
    let (status, body) = post_publish(&server, Some(&support::token("plain")), ok).await;
    assert_eq!((status, body["code"].as_str().unwrap()), (403, "FORBIDDEN"));
    // A batch with one bad item publishes nothing.
    let (status, _) = post_publish(
        &server,
        Some(&token),
        r#"[{"channel":"alerts","type":"a","data":1},{"channel":"","type":"a","data":1}]"#,
    )
    .await;
    assert_eq!(status, 400);
    assert!(server.hub.channels().await.iter().all(|c| c.seq == 0));
}

#[tokio::test]
async fn channels_listing_needs_an_operator_and_hides_user_channels() {
    let server = TestServer::start().await;
    let mut client = server.client("u").await;
    client.next().await;
    client.send(r#"{"action":"subscribe","channels":["alerts","positions#u"]}"#).await;
    client.expect_type("subscribed").await;
    client.expect_type("subscribed").await;
    publish_many(&server.hub, "alerts", 2).await;
    publish_many(&server.hub, "positions#u", 1).await;
    let (status, body) = http_request(&server, "GET", "/api/channels", Some(&operator_token()), None).await;
    assert_eq!(status, 200);
    assert_eq!(body.as_array().map(Vec::len), Some(1), "user channels are never listed: {body}");
    assert_eq!(body[0]["channel"], "alerts");
    assert_eq!(body[0]["subscribers"], 1);
    assert_eq!(body[0]["seq"], 2);
    // A publish grant, even on every channel, is not an operator grant.
    for token in [publisher_token(), support::token("u")] {
        let (status, body) = http_request(&server, "GET", "/api/channels", Some(&token), None).await;
        assert_eq!((status, body["code"].as_str()), (403, Some("FORBIDDEN")));
    }
    let (status, _) = http_request(&server, "GET", "/api/channels", None, None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn health_ready_and_metrics() {
    let mut server = TestServer::with(|c| c.drain_window = Duration::from_millis(500)).await;
    let mut client = server.client("u").await;
    client.next().await;
    client.send(r#"{"action":"subscribe","channels":["alerts"]}"#).await;
    client.expect_type("subscribed").await;
    publish_many(&server.hub, "alerts", 3).await;
    for _ in 0..3 {
        client.next().await;
    }
    let (status, health) = http_request(&server, "GET", "/health", None, None).await;
    assert_eq!((status, health["connections"].as_u64()), (200, Some(1)));
    assert_eq!(http_request(&server, "GET", "/ready", None, None).await.0, 200);

    let (status, head, text) = http_exchange(&server, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"), "{head}");
    // A strict OpenMetrics parser: types, `_total` suffixes and `# EOF` must all be right.
    let exposition = openmetrics_parser::openmetrics::parse_openmetrics(&text).expect("OpenMetrics text format");
    let value = |family: &str| {
        let family = exposition.families.get(family)?;
        family.iter_samples().next().map(|sample| match &sample.value {
            openmetrics_parser::OpenMetricsValue::Counter(counter) => counter.value.as_f64(),
            openmetrics_parser::OpenMetricsValue::Gauge(gauge) => gauge.as_f64(),
            _ => f64::NAN,
        })
    };
    assert_eq!(value("tidewire_connections"), Some(1.0));
    assert_eq!(value("tidewire_messages_published"), Some(3.0), "a counter, read as one");
    assert_eq!(value("tidewire_messages_delivered"), Some(3.0));
    assert!(value("tidewire_frames_sent").unwrap() >= 2.0);
    assert!(text.contains("tidewire_batch_size_bucket"));
    assert!(text.contains("tidewire_publish_to_write_seconds_bucket"));

    // Draining: readiness fails at once, liveness still answers.
    server.shutdown();
    // Readiness fails as soon as the drain begins (the shutdown signal is asynchronous).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (status, ready) = loop {
        let (status, ready) = http_request(&server, "GET", "/ready", None, None).await;
        if status == 503 || std::time::Instant::now() > deadline {
            break (status, ready);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!((status, ready["status"].as_str()), (503, Some("draining")));
    assert_eq!(http_request(&server, "GET", "/health", None, None).await.0, 200);
    let (status, refused) = http_request(&server, "GET", "/ws", None, None).await;
    assert_eq!((status, refused["code"].as_str()), (503, Some("UNAVAILABLE")));
    let closed = client.closed().await;
    assert_eq!(closed.code, 1012);
}

#[tokio::test]
async fn per_channel_publish_rate_limits() {
    let server = TestServer::with(|c| c.publish_rate_limits = vec!["prices.*=3/1".parse().unwrap()]).await;
    let token = publisher_token();
    let publish = |channel: &'static str| {
        let body = format!(r#"{{"channel":"{channel}","type":"tick","data":1}}"#);
        let server = &server;
        let token = token.clone();
        async move { post_publish(server, Some(&token), &body).await }
    };
    for _ in 0..3 {
        assert_eq!(publish("prices.EURUSD").await.0, 200);
    }
    let (status, body) = publish("prices.EURUSD").await;
    assert_eq!((status, body["code"].as_str()), (429, Some("RATE_LIMIT_EXCEEDED")));
    assert_eq!(publish("prices.GBPUSD").await.0, 200, "each channel has its own budget");
    for _ in 0..10 {
        assert_eq!(publish("alerts").await.0, 200, "unmatched channels are unlimited");
    }
}
