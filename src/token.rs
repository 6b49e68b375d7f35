//! Auth tokens: HS256 JWTs signed with the server's `--auth-secret`. A token names its holder
//! (`sub`, which becomes the display name) and may limit the rooms it opens (`rooms`, patterns
//! allowed, see [`RoomGrant`]). Used by the transports to check tokens and by `hubbub token` to
//! mint them; no HTTP here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::Secret;
use crate::protocol::{RoomGrant, display_name};

/// Seconds of clock skew tolerated on `exp` between the minting host and this server.
const LEEWAY_SECS: u64 = 5;

/// The claims hubbub reads. Other claims are ignored, so tokens from an existing identity
/// provider work if they carry these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The holder's display name; must pass the name rule.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch. Required: a token that never expires cannot be
    /// withdrawn short of changing the secret.
    pub exp: u64,
    /// Issued-at, seconds since the Unix epoch (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Rooms (exact names or `*` patterns) the holder may use; absent means every room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
}

/// Who a valid token says the holder is, and where they may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// The display name (`sub`, normalised by the name rule).
    pub name: String,
    /// The rooms the holder may use.
    pub grant: RoomGrant,
    /// When the token expires (`exp`, seconds since the Unix epoch): a connection opened with it
    /// is closed then.
    pub expires: u64,
}

impl Identity {
    /// Time left before the token expires (zero once it has).
    pub(crate) fn remaining(&self) -> Duration {
        Duration::from_secs(self.expires.saturating_sub(now_secs()))
    }
}

/// Why a token was not accepted (all answered with 401) or could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// Not a JWT, wrong algorithm, bad signature or missing `exp`.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Signed correctly but `sub` or `rooms` break the name or room rules.
    #[error("invalid token claims: {0}")]
    Claims(String),
    /// Signing failed (minting only).
    #[error("could not sign the token: {0}")]
    Sign(String),
}

impl Claims {
    /// Claims for `sub`, valid for `ttl` from now.
    pub fn new(sub: &str, rooms: Option<Vec<String>>, ttl: Duration) -> Self {
        let now = now_secs();
        Self {
            sub: sub.to_owned(),
            exp: now.saturating_add(ttl.as_secs()),
            iat: Some(now),
            rooms,
        }
    }

    /// The identity these claims describe, if they follow the rules.
    pub(crate) fn identity(&self) -> Result<Identity, TokenError> {
        let name = display_name(&self.sub).map_err(|m| TokenError::Claims(format!("sub: {m}")))?;
        let grant = match &self.rooms {
            None => RoomGrant::all(),
            Some(rooms) => RoomGrant::only(rooms.clone())
                .map_err(|m| TokenError::Claims(format!("rooms: {m}")))?,
        };
        Ok(Identity {
            name,
            grant,
            expires: self.exp,
        })
    }
}

/// Signs `claims` after checking them, so `hubbub token` never prints a token the server would
/// refuse.
pub fn mint(secret: &Secret, claims: &Claims) -> Result<String, TokenError> {
    claims.identity()?;
    sign(secret, claims)
}

/// Signs `claims` as they are (tests use it to build expired or malformed tokens).
pub fn sign(secret: &Secret, claims: &Claims) -> Result<String, TokenError> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    )
    .map_err(|e| TokenError::Sign(e.to_string()))
}

/// Checks a presented token: HS256 only (no `none`, no algorithm the header picks), signature,
/// `exp`, then the claims' rules.
pub(crate) fn verify(secret: &Secret, token: &str) -> Result<Identity, TokenError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = LEEWAY_SECS;
    validation.set_required_spec_claims(&["exp", "sub"]);
    let data = jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.expose().as_bytes()),
        &validation,
    )
    .map_err(|e| match e.kind() {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        _ => TokenError::Invalid(e.to_string()),
    })?;
    data.claims.identity()
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("test-secret")
    }

    #[test]
    fn minted_token_verifies_to_its_identity() {
        let claims = Claims::new(
            "alice",
            Some(vec!["team-*".into()]),
            Duration::from_secs(60),
        );
        let token = mint(&secret(), &claims).unwrap();
        let identity = verify(&secret(), &token).unwrap();
        assert_eq!(identity.name, "alice");
        assert!(!identity.grant.is_unrestricted());
    }

    #[test]
    fn expired_wrong_secret_and_garbage_tokens_are_refused() {
        let mut claims = Claims::new("alice", None, Duration::from_secs(60));
        claims.exp = now_secs() - 3600;
        let expired = sign(&secret(), &claims).unwrap();
        assert!(matches!(
            verify(&secret(), &expired),
            Err(TokenError::Expired)
        ));
        let other = mint(
            &Secret::new("other"),
            &Claims::new("a", None, Duration::from_secs(60)),
        )
        .unwrap();
        assert!(matches!(
            verify(&secret(), &other),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            verify(&secret(), "nope"),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn token_with_a_bad_sub_is_refused() {
        let claims = Claims::new("a\u{202E}b", None, Duration::from_secs(60));
        assert!(mint(&secret(), &claims).is_err());
        let token = sign(&secret(), &claims).unwrap();
        assert!(matches!(
            verify(&secret(), &token),
            Err(TokenError::Claims(_))
        ));
    }
}
