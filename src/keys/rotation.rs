//! Rotation: a new key for the same customer, name, plan, status and expiry, while the old one
//! is revoked or given a grace period, in one transaction (`Store::rotate_key`).
//!
//! A customer's rotate may carry an `Idempotency-Key`: a retry with the same value from the
//! same old key within [`ROTATION_REPLAY_WINDOW`] returns the same new key. To return it, the
//! database keeps the new key *sealed* under the old key's plaintext, which it never holds (it
//! stores the hash): XOR with an HMAC-SHA256 keystream keyed by the old key and bound to the
//! `Idempotency-Key`. Only a caller presenting the old key and the same `Idempotency-Key` can
//! unseal it, and the unsealed key must hash to the new key's stored hash. The record is deleted
//! after 24 h by the lifecycle sweep.

use crate::domain::key::{ApiKey, KeyError, KeyHash};
use crate::store::{OldKey, RotationRecord, Store, StoreError};
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use uuid::Uuid;

/// How long a retried rotate returns the same key; its record is erased after.
pub const ROTATION_REPLAY_WINDOW: chrono::Duration = chrono::Duration::hours(24);
/// The longest grace a customer may give the key they rotate away from.
pub const MAX_GRACE_SECS: u32 = 86_400;

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The record exists but does not open to a key with the recorded hash (never expected).
    #[error("the recorded rotation does not match its key")]
    Unsealable,
}

/// A customer's rotate with an `Idempotency-Key`: the key they presented (the one rotated
/// away from) and the header's value.
pub struct Replay<'a> {
    pub presented: &'a ApiKey,
    pub idempotency_key: &'a str,
}

/// The new key, shown once (or again, to an idempotent retry).
pub struct Rotation {
    pub key: ApiKey,
    pub key_id: Uuid,
    /// When the replaced key stops working (`None`: revoked).
    pub old_key_expires_at: Option<DateTime<Utc>>,
    /// True when this call made the key; false when it returned an earlier call's.
    pub minted: bool,
}

impl Rotation {
    /// What the customer API and `omi keys rotate --json` print, once:
    /// `{"key", "id", "prefix", "old_key_expires_at"}`.
    pub fn shown_once(&self) -> serde_json::Value {
        serde_json::json!({
            "key": self.key.expose(),
            "id": self.key_id,
            "prefix": self.key.display_prefix(),
            "old_key_expires_at": self.old_key_expires_at,
        })
    }
}

/// Rotates `old_key_id` (see the module's documentation). With `replay`, the rotation is
/// recorded under its `Idempotency-Key`, and a retry that raced this call and recorded first
/// wins: its key is returned instead. Look for an earlier rotation first with [`replayed`].
pub async fn rotate(
    store: &Store,
    old_key_id: Uuid,
    old_key: OldKey,
    replay: Option<&Replay<'_>>,
) -> Result<Rotation, RotateError> {
    let key = ApiKey::generate()?;
    let sealed = replay
        .map(|r| seal(r.presented, r.idempotency_key, key.expose().as_bytes()).ok_or(RotateError::Unsealable))
        .transpose()?;
    let record = replay
        .zip(sealed.as_deref())
        .map(|(r, sealed_key)| RotationRecord { idempotency_key: r.idempotency_key, sealed_key });
    match store.rotate_key(old_key_id, &key, old_key, record).await {
        Ok(rotated) => Ok(Rotation {
            key,
            key_id: rotated.vended.key_id,
            old_key_expires_at: rotated.old_key_expires_at,
            minted: true,
        }),
        // A concurrent retry recorded its rotation first: return that one.
        Err(StoreError::Conflict(message)) => match replay {
            Some(replay) => {
                replayed(store, old_key_id, replay).await?.ok_or(RotateError::Store(StoreError::Conflict(message)))
            }
            None => Err(StoreError::Conflict(message).into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// The rotation recorded for this old key and `Idempotency-Key` within the replay window, its
/// new key unsealed with the presented old key.
pub async fn replayed(store: &Store, old_key_id: Uuid, replay: &Replay<'_>) -> Result<Option<Rotation>, RotateError> {
    let since = Utc::now() - ROTATION_REPLAY_WINDOW;
    let Some(found) = store.find_rotation(old_key_id, replay.idempotency_key, since).await? else {
        return Ok(None);
    };
    let opened = seal(replay.presented, replay.idempotency_key, &found.sealed_key).unwrap_or_default();
    let key = std::str::from_utf8(&opened)
        .ok()
        .and_then(|text| ApiKey::parse(text).ok())
        .filter(|key| KeyHash::from_slice(&found.new_key_hash) == Some(key.hash()))
        .ok_or(RotateError::Unsealable)?;
    Ok(Some(Rotation { key, key_id: found.new_key_id, old_key_expires_at: found.old_key_expires_at, minted: false }))
}

/// XOR with HMAC-SHA256(old key, label ‖ idempotency key ‖ block number) blocks: its own
/// inverse, so it both seals and opens. Each (old key, idempotency key) pair seals one new key
/// only (the record's primary key), so a keystream is never reused for two stored keys.
/// `None` only if HMAC refused the key, which it does for no length.
fn seal(old_key: &ApiKey, idempotency_key: &str, data: &[u8]) -> Option<Vec<u8>> {
    let keyed = Hmac::<Sha256>::new_from_slice(old_key.expose().as_bytes()).ok()?;
    let mut out = Vec::with_capacity(data.len());
    for (block, chunk) in data.chunks(32).enumerate() {
        let mut mac = keyed.clone();
        mac.update(b"omi key rotation\0");
        mac.update(idempotency_key.as_bytes());
        mac.update(&[0, u8::try_from(block).unwrap_or(u8::MAX)]);
        let pad = mac.finalize().into_bytes();
        out.extend(chunk.iter().zip(pad.iter()).map(|(byte, pad)| byte ^ pad));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_twice_opens_and_needs_the_old_key_and_the_same_idempotency_key() {
        let (old, other, new) = (ApiKey::generate().unwrap(), ApiKey::generate().unwrap(), ApiKey::generate().unwrap());
        let plain = new.expose().as_bytes();
        let sealed = seal(&old, "retry-1", plain).unwrap();
        assert_eq!(sealed.len(), plain.len());
        assert_ne!(sealed, plain, "sealed, not the plaintext");
        assert!(!sealed.windows(12).any(|w| w == new.display_prefix().as_bytes()));
        assert_eq!(seal(&old, "retry-1", &sealed).unwrap(), plain);
        assert_ne!(seal(&other, "retry-1", &sealed).unwrap(), plain, "another key cannot open it");
        assert_ne!(seal(&old, "retry-2", &sealed).unwrap(), plain, "another Idempotency-Key cannot open it");
    }
}
