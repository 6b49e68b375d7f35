//! Password hashing: argon2id with the crate's default cost (19 MiB, 2 passes, 1 lane: the
//! OWASP minimum for argon2id), a fresh random salt per hash from the operating system, and the
//! PHC string format, which carries the algorithm, cost and salt, so the cost can be raised later
//! without invalidating stored hashes.
//!
//! Hashing is CPU- and memory-heavy on purpose, so it runs on the blocking pool, at most
//! [`MAX_CONCURRENT_HASHES`] at once: a burst of sign-ins waits instead of taking every core
//! and 19 MiB each.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use tokio::sync::{OnceCell, Semaphore};

use super::AccountError;

/// Fewest characters a new password may have.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Most bytes a password may have: longer ones only cost hashing time.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Hashes computed at once, server-wide.
pub const MAX_CONCURRENT_HASHES: usize = 2;

/// Checks a new password against the password rule; the error says the rule.
pub fn check_new_password(password: &str) -> Result<(), AccountError> {
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(AccountError::BadPassword(format!(
            "passwords are at least {MIN_PASSWORD_CHARS} characters and at most \
             {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Hashes `password` with a new salt (blocking: call through [`Hasher`] from async code).
pub fn hash_blocking(password: &str) -> Result<String, AccountError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| AccountError::Hash(err.to_string()))
}

/// Whether `password` matches the PHC string `hash` (blocking). A hash that does not parse
/// matches nothing.
pub fn verify_blocking(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Runs hashes on the blocking pool, a few at a time, and keeps the dummy hash that unknown
/// names are verified against (so they take as long as wrong passwords).
pub struct Hasher {
    permits: Arc<Semaphore>,
    dummy: OnceCell<String>,
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher {
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_HASHES)),
            dummy: OnceCell::new(),
        }
    }
}

impl Hasher {
    /// A new hash of `password`.
    pub async fn hash(&self, password: &str) -> Result<String, AccountError> {
        let password = password.to_owned();
        self.run(move || hash_blocking(&password)).await?
    }

    /// Whether `password` matches `hash`; with `None` (an unknown name, or an account without
    /// a password) it verifies against the dummy hash and answers `false`, spending the same
    /// time as a wrong password.
    pub async fn verify(&self, hash: Option<&str>, password: &str) -> Result<bool, AccountError> {
        let (hash, real) = match hash {
            Some(hash) => (hash.to_owned(), true),
            None => (self.dummy().await?.to_owned(), false),
        };
        let password = password.to_owned();
        let matched = self.run(move || verify_blocking(&hash, &password)).await?;
        Ok(matched && real)
    }

    /// The dummy hash: a hash of a random password made once, with the same parameters as
    /// real ones.
    async fn dummy(&self) -> Result<&str, AccountError> {
        let hash = self
            .dummy
            .get_or_try_init(|| async {
                let secret = super::secret::random_token();
                self.run(move || hash_blocking(&secret)).await?
            })
            .await?;
        Ok(hash.as_str())
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AccountError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| AccountError::Hash("the hasher is closed".to_owned()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|err| AccountError::Hash(err.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let hash = hash_blocking("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_blocking(&hash, "correct horse"));
        assert!(!verify_blocking(&hash, "correct horsE"));
    }

    #[test]
    fn two_hashes_of_one_password_differ_by_salt() {
        assert_ne!(
            hash_blocking("pw-12345").unwrap(),
            hash_blocking("pw-12345").unwrap()
        );
    }

    #[test]
    fn a_garbled_hash_matches_nothing() {
        assert!(!verify_blocking("not a phc string", "anything"));
    }

    #[test]
    fn short_and_huge_passwords_break_the_rule() {
        assert!(check_new_password("1234567").is_err());
        assert!(check_new_password("12345678").is_ok());
        assert!(check_new_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }

    #[tokio::test]
    async fn an_unknown_name_never_verifies() {
        let hasher = Hasher::default();
        assert!(!hasher.verify(None, "").await.unwrap());
    }
}
