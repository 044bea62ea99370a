//! Token verification across algorithms and claims, end to end through `/ws`.

mod support;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use support::*;
use tidewire_server::auth::{Claims, unix_now};
use tidewire_server::config::JwtAlgorithm;

fn key_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys").join(name)
}

fn sign(algorithm: Algorithm, key: &EncodingKey, claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).unwrap()
}

async fn close_code(server: &TestServer, token: &str) -> Result<String, u16> {
    let mut client = Client::connect(&server.url(&format!("token={token}"))).await;
    match client.try_next(std::time::Duration::from_secs(5)).await {
        Ok(Some(message)) => Ok(message["userId"].as_str().unwrap_or_default().to_owned()),
        Ok(None) => panic!("no answer"),
        Err(closed) => Err(closed.code),
    }
}

fn valid_claims() -> serde_json::Value {
    json!({"sub": "alice", "exp": unix_now() + 600})
}

#[tokio::test]
async fn public_key_algorithms() {
    let cases = [
        (JwtAlgorithm::Rs256, Algorithm::RS256, "rsa", EncodingKey::from_rsa_pem as fn(&[u8]) -> _),
        (JwtAlgorithm::Es256, Algorithm::ES256, "ec", EncodingKey::from_ec_pem),
        (JwtAlgorithm::EdDsa, Algorithm::EdDSA, "ed", EncodingKey::from_ed_pem),
    ];
    for (configured, algorithm, name, load) in cases {
        let server = TestServer::with(|c| {
            c.jwt_algorithm = configured;
            c.jwt_secret = None;
            c.jwt_public_key = Some(key_path(&format!("{name}-public.pem")));
        })
        .await;
        let private = load(&std::fs::read(key_path(&format!("{name}-private.pem"))).unwrap()).unwrap();
        assert_eq!(
            close_code(&server, &sign(algorithm, &private, &valid_claims())).await,
            Ok("alice".into()),
            "{name}"
        );
        // An HS256 token signed with the public key's bytes (the classic confusion attack).
        let public_bytes = std::fs::read(key_path(&format!("{name}-public.pem"))).unwrap();
        let confused = sign(Algorithm::HS256, &EncodingKey::from_secret(&public_bytes), &valid_claims());
        assert_eq!(close_code(&server, &confused).await, Err(4501), "{name}: algorithm is pinned");
    }
}

#[test]
fn a_missing_or_bad_key_is_a_startup_error() {
    let mut config = tidewire_server::Config::for_tests("a-secret-of-at-least-thirty-two-bytes");
    config.jwt_secret = None;
    assert!(tidewire_server::Hub::new(config.clone()).is_err(), "HS256 without a secret");
    config.jwt_algorithm = JwtAlgorithm::Rs256;
    assert!(tidewire_server::Hub::new(config.clone()).is_err(), "RS256 without a key");
    config.jwt_public_key = Some(key_path("ed-public.pem"));
    assert!(tidewire_server::Hub::new(config.clone()).is_err(), "an Ed25519 key for RS256");
    config.jwt_public_key = Some(key_path("no-such-file.pem"));
    let error = tidewire_server::Hub::new(config).unwrap_err().to_string();
    assert!(error.contains("no-such-file.pem"), "{error}");
}

#[tokio::test]
async fn claims_are_checked() {
    let server = TestServer::with(|c| {
        c.jwt_audience = Some("desk".into());
        c.jwt_issuer = Some("auth.example".into());
    })
    .await;
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let now = unix_now();
    let good = json!({"sub": "a", "exp": now + 600, "aud": "desk", "iss": "auth.example"});
    assert_eq!(close_code(&server, &sign(Algorithm::HS256, &key, &good)).await, Ok("a".into()));
    let mut cases = vec![];
    let mut with = |field: &str, value: serde_json::Value| {
        let mut claims = good.clone();
        claims[field] = value;
        cases.push((field.to_owned(), claims));
    };
    with("aud", json!("other"));
    with("iss", json!("evil.example"));
    with("nbf", json!(now + 600));
    with("exp", json!("soon"));
    with("channels", json!(["a*b"]));
    with("sub", json!(""));
    for (field, claims) in cases {
        assert_eq!(close_code(&server, &sign(Algorithm::HS256, &key, &claims)).await, Err(4501), "{field}");
    }
    let mut no_sub = good.clone();
    no_sub.as_object_mut().unwrap().remove("sub");
    assert_eq!(close_code(&server, &sign(Algorithm::HS256, &key, &no_sub)).await, Err(4501), "no sub");
    let mut no_exp = good.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(close_code(&server, &sign(Algorithm::HS256, &key, &no_exp)).await, Err(4501), "no exp");
    let mut expired = good.clone();
    expired["exp"] = json!(now - 1);
    assert_eq!(close_code(&server, &sign(Algorithm::HS256, &key, &expired)).await, Err(4502), "expired");
}

#[tokio::test]
async fn alg_none_and_wrong_algorithms_are_refused() {
    let server = TestServer::start().await;
    let encode = |value: &serde_json::Value| base64_url::encode(&value.to_string());
    let unsigned = format!("{}.{}.", encode(&json!({"alg": "none", "typ": "JWT"})), encode(&valid_claims()));
    assert_eq!(close_code(&server, &unsigned).await, Err(4501), "alg none");
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &valid_claims(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(close_code(&server, &hs512).await, Err(4501), "HS512 when HS256 is pinned");
    let mut tampered = token("alice");
    tampered.push('x');
    assert_eq!(close_code(&server, &tampered).await, Err(4501), "bad signature");
}

#[tokio::test]
async fn a_token_can_name_the_channels_the_connection_starts_subscribed_to() {
    // The token's `subs`: subscribed at connect as if the client had asked, each checked
    // against the token's own `channels`, together with the URL's `?channels=`.
    let server = TestServer::start().await;
    let claims = Claims {
        channels: Some(vec!["lp-*".into(), "alerts".into()]),
        subs: vec!["lp-performance".into(), "alerts".into(), "exposure".into()],
        ..claims("trader")
    };
    let mut client = Client::connect(&server.url(&format!("token={}&channels=alerts", token_with(&claims)))).await;
    client.expect_type("connected").await;
    let mut subscribed = Vec::new();
    let mut refused = Vec::new();
    while subscribed.len() + refused.len() < 3 {
        let message = client.next().await;
        match message["type"].as_str() {
            Some("subscribed") => subscribed.push(message["channel"].as_str().unwrap().to_owned()),
            Some("error") => refused.push((message["channel"].clone(), message["code"].clone())),
            _ => {}
        }
    }
    subscribed.sort();
    assert_eq!(subscribed, ["alerts", "lp-performance"], "alerts once, though both name it");
    assert_eq!(refused, [(json!("exposure"), json!("FORBIDDEN"))], "not granted by the token's channels");
}
