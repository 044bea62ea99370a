//! Tokens: where they come from, how they are verified, and what they grant.
//!
//! A JWT is verified with exactly one algorithm, pinned by configuration (a token that
//! names another algorithm, `none` included, is refused), with no leeway on `exp` and
//! `nbf`. Its claims:
//!
//! | claim      | required | meaning                                                         |
//! |------------|----------|-----------------------------------------------------------------|
//! | `sub`      | yes      | the user id                                                     |
//! | `exp`      | yes      | expiry (seconds since the epoch)                                |
//! | `channels` | no       | patterns the user may subscribe to; absent = every shared channel |
//! | `publish`  | no       | patterns the user may publish to; absent = none                 |
//! | `operator` | no       | `true` grants the operator endpoints (`GET /api/channels`); never give it to browsers |
//! | `subs`     | no       | channels subscribed at connect (each checked against `channels`) |
//! | `jti`      | no       | the token's id, which `POST /api/revoke {jti}` can revoke        |
//! | `iat`      | no       | when issued; `POST /api/revoke {user}` revokes those before a time (and without `iat`) |
//! | `aud`, `iss`, `nbf` | when configured / present | checked                           |
//!
//! The channel rules themselves live in the protocol crate; this module turns claims
//! into a [`Grant`] that applies them.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tidewire_protocol::channel::{self, Access, PatternSet};
use tidewire_protocol::{ErrorCode, Timestamp};

use crate::config::{Config, JwtAlgorithm};
use crate::hub::PublishError;

/// The claims tidewire reads (others are ignored).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Grants the operator endpoints; distinct from any publish grant.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub operator: bool,
    /// Channels the server subscribes the connection to at connect, as if the client
    /// had asked (each checked against `channels`), so a dashboard gets its entitled
    /// channels without asking.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subs: Vec<String>,
    /// The token's id, for revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// When the token was issued (seconds since the epoch), for revocation by user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// What a verified token allows.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub user: String,
    pub subscribe: Option<PatternSet>,
    pub publish: Option<PatternSet>,
    /// Seconds since the epoch.
    pub expires_at: u64,
    /// May use the operator endpoints.
    pub operator: bool,
    /// Channels subscribed at connect (the token's `subs`).
    pub subscriptions: Vec<String>,
    /// The token's `jti`.
    pub token_id: Option<String>,
    /// The token's `iat`.
    pub issued_at: Option<u64>,
}

impl Grant {
    /// What a connection without a token gets when `--anonymous-channels` is set:
    /// subscribing to those patterns only, publishing nowhere, no expiry. Its user is
    /// empty, which no token's can be (`sub` must not be), and which no user-scoped
    /// channel can name as its owner.
    pub fn anonymous(config: &Config) -> Option<Grant> {
        if config.anonymous_channels.is_empty() {
            return None;
        }
        let patterns: Vec<String> = config.anonymous_channels.iter().map(ToString::to_string).collect();
        Some(Grant {
            user: String::new(),
            subscribe: PatternSet::parse(patterns.iter().map(String::as_str)).ok(),
            publish: None,
            expires_at: u64::MAX,
            operator: false,
            subscriptions: Vec::new(),
            token_id: None,
            issued_at: None,
        })
    }

    /// Whether this is the grant of a connection without a token.
    pub fn is_anonymous(&self) -> bool {
        self.user.is_empty()
    }

    /// What revocation looks at in the token.
    pub fn token(&self) -> crate::hub::revocation::Token<'_> {
        crate::hub::revocation::Token { user: &self.user, jti: self.token_id.as_deref(), issued_at: self.issued_at }
    }

    pub fn subscribe_access(&self, channel: &str) -> Access {
        channel::subscribe_access(channel, &self.user, self.subscribe.as_ref())
    }

    pub fn publish_access(&self, channel: &str) -> Access {
        channel::publish_access(channel, self.publish.as_ref())
    }

    /// Subscribing to `channel`, as the refusal a client gets: INVALID_CHANNEL with
    /// the rule broken, or FORBIDDEN. The one place those answers are worded.
    pub fn check_subscribe(&self, channel: &str) -> Result<(), PublishError> {
        refusal(self.subscribe_access(channel), channel, "subscribing to")
    }

    /// Publishing to `channel`, as the refusal a client gets (see [`Grant::check_subscribe`]).
    pub fn check_publish(&self, channel: &str) -> Result<(), PublishError> {
        refusal(self.publish_access(channel), channel, "publishing to")
    }

    /// Whether the token grants publishing anywhere.
    pub fn can_publish(&self) -> bool {
        self.publish.as_ref().is_some_and(|set| !set.patterns().is_empty())
    }

    pub fn expires_at_timestamp(&self) -> Timestamp {
        Timestamp::from_unix_micros(
            i64::try_from(self.expires_at).unwrap_or(i64::MAX / 1_000_000).saturating_mul(1_000_000),
        )
    }

    /// Time left before expiry, zero once expired.
    pub fn time_left(&self, now: SystemTime) -> Duration {
        // A token may say `exp` = 2^64 - 1; cap what is left at a century.
        const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        match UNIX_EPOCH.checked_add(Duration::from_secs(self.expires_at)) {
            Some(expiry) => expiry.duration_since(now).unwrap_or(Duration::ZERO).min(CENTURY),
            None => CENTURY,
        }
    }
}

fn refusal(access: Access, channel: &str, action: &str) -> Result<(), PublishError> {
    match access {
        Access::Allowed => Ok(()),
        Access::Invalid => {
            let reason = channel::validate(channel)
                .err()
                .map_or_else(|| format!("invalid channel {channel:?}"), |e| crate::hub::invalid_channel(channel, e));
            Err(PublishError::new(ErrorCode::InvalidChannel, reason))
        }
        Access::Forbidden => {
            Err(PublishError::new(ErrorCode::Forbidden, format!("the token does not allow {action} {channel}")))
        }
    }
}

/// Why a token was refused; each maps to an error code and a close code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token: pass ?token=, an Authorization: Bearer header, or a tidewire.token.<jwt> subprotocol")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token revoked by an operator")]
    Revoked,
    /// The node has not read the cluster's revocations yet (Redis unreachable since it
    /// started): it cannot tell whether the token was revoked.
    #[error("the node cannot check revocations yet (the broker is unreachable); retry shortly")]
    RevocationsUnknown,
}

impl AuthError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Missing => ErrorCode::AuthRequired,
            AuthError::Expired => ErrorCode::TokenExpired,
            AuthError::Invalid(_) => ErrorCode::AuthInvalid,
            AuthError::Revoked => ErrorCode::TokenRevoked,
            AuthError::RevocationsUnknown => ErrorCode::Unavailable,
        }
    }
}

/// A misconfiguration found at start.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("--jwt-secret (TIDEWIRE_JWT_SECRET) is required for HS256")]
    MissingSecret,
    #[error(
        "--jwt-secret (TIDEWIRE_JWT_SECRET) is {0} bytes; HS256 needs at least {MIN_SECRET_BYTES} \
         (e.g. `openssl rand -base64 32`)"
    )]
    ShortSecret(usize),
    #[error("--jwt-public-key (TIDEWIRE_JWT_PUBLIC_KEY) is required for {0:?}")]
    MissingPublicKey(JwtAlgorithm),
    #[error("cannot read the public key {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the public key is not a valid PEM key for {algorithm:?}: {source}")]
    Parse { algorithm: JwtAlgorithm, source: jsonwebtoken::errors::Error },
}

/// Verifies tokens with the configured key and rules.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("algorithms", &self.validation.algorithms).finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn from_config(config: &Config) -> Result<Verifier, KeyError> {
        let algorithm = config.jwt_algorithm;
        let key = match algorithm {
            JwtAlgorithm::Hs256 => {
                let secret = config.jwt_secret.as_deref().ok_or(KeyError::MissingSecret)?;
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(KeyError::ShortSecret(secret.len()));
                }
                DecodingKey::from_secret(secret.as_bytes())
            }
            other => {
                let path = config.jwt_public_key.as_ref().ok_or(KeyError::MissingPublicKey(other))?;
                let pem = std::fs::read(path)
                    .map_err(|source| KeyError::Read { path: path.display().to_string(), source })?;
                let parsed = match other {
                    JwtAlgorithm::Rs256 => DecodingKey::from_rsa_pem(&pem),
                    JwtAlgorithm::Es256 => DecodingKey::from_ec_pem(&pem),
                    _ => DecodingKey::from_ed_pem(&pem),
                };
                parsed.map_err(|source| KeyError::Parse { algorithm: other, source })?
            }
        };
        let mut validation = Validation::new(jwt_algorithm(algorithm));
        validation.leeway = 0;
        validation.validate_nbf = true;
        // A configured audience or issuer is required, not only checked when present:
        // jsonwebtoken checks `aud` and `iss` only in tokens that have them unless they
        // are required claims too.
        validation.required_spec_claims = HashSet::from(["exp".to_owned(), "sub".to_owned()]);
        match &config.jwt_audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".to_owned());
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &config.jwt_issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        Ok(Verifier { key, validation })
    }

    /// Verifies a token and reads what it grants.
    pub fn verify(&self, token: &str) -> Result<Grant, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::InvalidAlgorithm => AuthError::Invalid("algorithm not allowed".to_owned()),
            ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".to_owned()),
            ErrorKind::ImmatureSignature => AuthError::Invalid("not valid yet (nbf)".to_owned()),
            ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience".to_owned()),
            ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer".to_owned()),
            ErrorKind::MissingRequiredClaim(claim) => AuthError::Invalid(format!("missing claim {claim}")),
            _ => AuthError::Invalid("malformed token".to_owned()),
        })?;
        let claims = data.claims;
        if claims.sub.is_empty() {
            return Err(AuthError::Invalid("empty sub".to_owned()));
        }
        let patterns = |claim: &Option<Vec<String>>, name: &str| {
            claim
                .as_ref()
                .map(|list| PatternSet::parse(list.iter().map(String::as_str)))
                .transpose()
                .map_err(|e| AuthError::Invalid(format!("bad pattern in {name}: {e}")))
        };
        Ok(Grant {
            subscribe: patterns(&claims.channels, "channels")?,
            publish: patterns(&claims.publish, "publish")?,
            user: claims.sub,
            expires_at: claims.exp,
            operator: claims.operator,
            subscriptions: claims.subs,
            token_id: claims.jti,
            issued_at: claims.iat,
        })
    }
}

fn jwt_algorithm(algorithm: JwtAlgorithm) -> Algorithm {
    match algorithm {
        JwtAlgorithm::Hs256 => Algorithm::HS256,
        JwtAlgorithm::Rs256 => Algorithm::RS256,
        JwtAlgorithm::Es256 => Algorithm::ES256,
        JwtAlgorithm::EdDsa => Algorithm::EdDSA,
    }
}

/// Signs an HS256 token: what `tidewire token` and the tests use.
pub fn mint_hs256(secret: &str, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes()))
}

/// Seconds since the epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The shortest HS256 secret accepted: the hash's size (RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// The subprotocol prefix that carries a token from browsers (which cannot set headers).
pub const TOKEN_PROTOCOL_PREFIX: &str = "tidewire.token.";
/// The subprotocol the server selects, so browsers accept the handshake.
pub const PROTOCOL_NAME: &str = "tidewire.v1";

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "a-secret-of-at-least-thirty-two-bytes";

    fn verifier(secret: &str) -> Verifier {
        Verifier::from_config(&Config::for_tests(secret)).unwrap()
    }

    fn claims(sub: &str, ttl: i64) -> Claims {
        Claims { sub: sub.into(), exp: (unix_now() as i64 + ttl) as u64, ..Claims::default() }
    }

    #[test]
    fn valid_token_grants_its_claims() {
        let mut c = claims("alice", 60);
        c.channels = Some(vec!["lp-*".into()]);
        c.publish = Some(vec!["alerts".into()]);
        let grant = verifier(S).verify(&mint_hs256(S, &c).unwrap()).unwrap();
        assert_eq!(grant.user, "alice");
        assert_eq!(grant.subscribe_access("lp-performance"), Access::Allowed);
        assert_eq!(grant.subscribe_access("alerts"), Access::Forbidden);
        assert_eq!(grant.publish_access("alerts"), Access::Allowed);
        assert!(grant.can_publish());
    }

    #[test]
    fn refusals() {
        let v = verifier(S);
        assert_eq!(v.verify(&mint_hs256(S, &claims("a", -5)).unwrap()), Err(AuthError::Expired));
        assert!(matches!(
            v.verify(&mint_hs256("another-secret-of-at-least-32-bytes", &claims("a", 60)).unwrap()),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(v.verify("garbage"), Err(AuthError::Invalid(_))));
        assert!(matches!(v.verify(&mint_hs256(S, &claims("", 60)).unwrap()), Err(AuthError::Invalid(_))));
        let mut bad = claims("a", 60);
        bad.channels = Some(vec!["a*b".into()]);
        assert!(matches!(v.verify(&mint_hs256(S, &bad).unwrap()), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn short_secrets_are_refused_at_start() {
        let error = Verifier::from_config(&Config::for_tests("31-bytes-are-one-byte-too-short")).unwrap_err();
        assert!(matches!(error, KeyError::ShortSecret(31)), "{error}");
        assert!(error.to_string().contains("at least 32"));
    }

    #[test]
    fn a_configured_audience_and_issuer_are_required() {
        let mut config = Config::for_tests(S);
        config.jwt_audience = Some("desk".into());
        config.jwt_issuer = Some("idp".into());
        let v = Verifier::from_config(&config).unwrap();
        let full = Claims { aud: Some("desk".into()), iss: Some("idp".into()), ..claims("a", 60) };
        assert!(v.verify(&mint_hs256(S, &full).unwrap()).is_ok());
        for (what, token) in
            [("aud", Claims { aud: None, ..full.clone() }), ("iss", Claims { iss: None, ..full.clone() })]
        {
            let refused = v.verify(&mint_hs256(S, &token).unwrap());
            assert_eq!(refused, Err(AuthError::Invalid(format!("missing claim {what}"))), "{what}");
        }
    }
}
