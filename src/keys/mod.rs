//! Keys at work: issuing one to a customer, verifying them on every request (`verifier`),
//! recording when each was last used (`activity`). The key type itself is
//! [`crate::domain::key`].

pub mod activity;
pub mod verifier;

use crate::customers::EmailAddress;
use crate::domain::key::{ApiKey, KeyError};
use crate::store::{KeyListing, NewKey, Store, StoreError};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

pub use verifier::{KeyVerifier, Verification, VerifiedKey};

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates a key for a customer (created on first use) and returns its plaintext, which
/// exists only in the returned value: the store keeps the hash. With the plan's `max_keys`, a
/// customer already holding that many keys on the plan (revoked ones aside) gets none:
/// `StoreError::MaxKeys`.
pub async fn issue(
    store: &Store,
    email: &EmailAddress,
    plan: &str,
    name: Option<&str>,
    max_keys: Option<u32>,
) -> Result<(ApiKey, KeyListing), IssueError> {
    let key = ApiKey::generate()?;
    let new = NewKey { email, name, plan, hash: key.hash(), prefix: key.display_prefix(), max_keys };
    let listing = store.insert_key(&new).await?;
    Ok((key, listing))
}

/// Constant-time comparison of a presented secret with the configured one (admin key).
pub fn secrets_match(presented: &str, expected: &SecretString) -> bool {
    use subtle::ConstantTimeEq;
    // Hashing first makes the comparison length-independent as well.
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.expose_secret().as_bytes());
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_secret_comparison() {
        let expected = SecretString::from("s3cret-admin");
        assert!(secrets_match("s3cret-admin", &expected));
        assert!(!secrets_match("s3cret-admiN", &expected));
        assert!(!secrets_match("", &expected));
    }
}
