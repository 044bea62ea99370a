//! Token claims: any JSON claims signed with the right key, and any token text, verify
//! without panicking; an accepted token always names a user and has valid patterns.
#![no_main]

use jsonwebtoken::{EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use tidewire_server::Config;
use tidewire_server::auth::Verifier;

const SECRET: &str = "fuzz-secret-of-at-least-32-bytes";

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static VERIFIER: Verifier = Verifier::from_config(&Config::for_tests(SECRET)).expect("verifier");
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    VERIFIER.with(|verifier| {
        if let Ok(grant) = verifier.verify(text) {
            assert!(!grant.user.is_empty());
        }
        let Ok(claims) = serde_json::from_str::<serde_json::Value>(text) else { return };
        let Ok(token) = jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes()))
        else {
            return;
        };
        if let Ok(grant) = verifier.verify(&token) {
            assert!(!grant.user.is_empty());
            assert_eq!(claims["sub"].as_str(), Some(grant.user.as_str()));
        }
    });
});
