//! Tokens for the signed-in hubbub (`hubbub-accounts`): an HS256 JWT per connection whose `sub`
//! is the connection's name, so each connection is its own account on the server (issue 19).
//! Minted here with the same crate the server verifies with, rather than by running
//! `hubbub token` once per connection.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// How long a bench token stays valid: a day, far longer than any run.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The claims hubbub reads: the account name and the expiry (seconds since the Unix epoch).
#[derive(Debug, Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
}

/// An HS256 token for account `sub`, signed with `secret`, expiring a day from now.
pub fn mint(secret: &str, sub: &str) -> Result<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("clock before the Unix epoch")?;
    let claims = Claims {
        sub,
        exp: (now + TOKEN_TTL).as_secs(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .context("sign bench token")
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation, decode};
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Read {
        sub: String,
        exp: u64,
    }

    #[test]
    fn minted_token_verifies_with_the_secret_and_names_the_account() {
        let token = mint("0123456789abcdef0123456789abcdef", "b42").expect("mint");
        let read = decode::<Read>(
            &token,
            &DecodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
            &Validation::new(Algorithm::HS256),
        )
        .expect("verify");
        assert_eq!(read.claims.sub, "b42");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        assert!(
            read.claims.exp > now + 23 * 60 * 60,
            "valid for about a day"
        );
    }

    #[test]
    fn minted_token_fails_under_another_secret() {
        let token = mint("0123456789abcdef0123456789abcdef", "b1").expect("mint");
        let other = decode::<Read>(
            &token,
            &DecodingKey::from_secret(b"another-secret-another-secret-xx"),
            &Validation::new(Algorithm::HS256),
        );
        assert!(other.is_err());
    }
}
