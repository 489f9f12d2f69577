//! Key verification off the database: a bounded in-memory cache of known and unknown key
//! hashes, kept honest by polling the `key_changes` log once a second, so a revocation made
//! anywhere (another instance, the CLI on the same SQLite file) is obeyed within 2 s.

use crate::domain::key::{ApiKey, KeyHash, KeyStatus};
use crate::store::{Store, StoreResult};
use crate::ticker::Ticker;
use chrono::{DateTime, Utc};
use moka::future::Cache;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Sequence numbers can commit out of order under concurrent writers (PostgreSQL
/// sequences), so the poller re-reads this many recent entries and acts on the unseen ones.
const CHANGE_LOOKBACK: i64 = 256;

/// A known key as cached: what every request decides with, and what `GET /v1/key` shows.
#[derive(Debug)]
pub struct VerifiedKey {
    pub key_id: Uuid,
    pub customer_id: Uuid,
    pub email: Arc<str>,
    pub plan: Arc<str>,
    pub status: KeyStatus,
    pub prefix: String,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Checked against the clock on every request, so an expiry needs no cache invalidation;
    /// changing it does (the change is logged like a status change).
    pub expires_at: Option<DateTime<Utc>>,
}

impl VerifiedKey {
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

pub enum Verification {
    Known(Arc<VerifiedKey>),
    Unknown,
}

pub struct KeyVerifier {
    store: Store,
    known: Cache<KeyHash, Arc<VerifiedKey>>,
    unknown: Cache<KeyHash, ()>,
    sync: Mutex<ChangeCursor>,
    /// Bumped on every invalidation: a lookup that raced a change does not cache its answer.
    generation: AtomicU64,
}

#[derive(Default)]
struct ChangeCursor {
    last_seq: i64,
    seen: BTreeSet<i64>,
}

impl KeyVerifier {
    pub async fn new(store: Store) -> StoreResult<KeyVerifier> {
        let last_seq = store.latest_key_change().await?;
        Ok(KeyVerifier {
            store,
            // The TTL is a safety net only; correctness comes from the change log.
            known: Cache::builder().max_capacity(200_000).time_to_live(Duration::from_secs(300)).build(),
            // Bounded so a flood of random well-formed keys cannot grow memory.
            unknown: Cache::builder().max_capacity(20_000).time_to_live(Duration::from_secs(60)).build(),
            sync: Mutex::new(ChangeCursor { last_seq, seen: BTreeSet::new() }),
            generation: AtomicU64::new(0),
        })
    }

    pub async fn verify(&self, key: &ApiKey) -> StoreResult<Verification> {
        let hash = key.hash();
        if let Some(found) = self.known.get(&hash).await {
            return Ok(Verification::Known(found));
        }
        if self.unknown.contains_key(&hash) {
            return Ok(Verification::Unknown);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let found = self.store.find_key(&hash).await?;
        let cacheable = self.generation.load(Ordering::Acquire) == generation;
        match found {
            Some(record) => {
                let verified = Arc::new(VerifiedKey {
                    key_id: record.key_id,
                    customer_id: record.customer_id,
                    email: record.email.into(),
                    plan: record.plan.into(),
                    // An unreadable status is treated as the most restrictive one.
                    status: KeyStatus::parse(&record.status).unwrap_or(KeyStatus::Revoked),
                    prefix: record.prefix,
                    name: record.name,
                    created_at: record.created_at,
                    expires_at: record.expires_at,
                });
                if cacheable {
                    self.known.insert(hash, verified.clone()).await;
                }
                Ok(Verification::Known(verified))
            }
            None => {
                if cacheable {
                    self.unknown.insert(hash, ()).await;
                }
                Ok(Verification::Unknown)
            }
        }
    }

    /// Drops every cached entry whose key changed since the last call; returns how many
    /// changes were new.
    pub async fn sync_changes(&self) -> StoreResult<usize> {
        let mut cursor = self.sync.lock().await;
        let changes = self.store.key_changes_since(cursor.last_seq - CHANGE_LOOKBACK).await?;
        let mut fresh = 0;
        for (seq, hash) in changes {
            if cursor.seen.insert(seq) {
                self.generation.fetch_add(1, Ordering::AcqRel);
                self.known.invalidate(&hash).await;
                self.unknown.invalidate(&hash).await;
                cursor.last_seq = cursor.last_seq.max(seq);
                fresh += 1;
            }
        }
        let horizon = cursor.last_seq - CHANGE_LOOKBACK;
        cursor.seen = cursor.seen.split_off(&horizon);
        Ok(fresh)
    }

    pub fn spawn_sync(self: &Arc<Self>, every: Duration, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let verifier = Arc::clone(self);
        crate::tasks::owned(async move {
            let mut ticker = Ticker::new(every, shutdown);
            while ticker.tick().await {
                if let Err(e) = verifier.sync_changes().await {
                    tracing::warn!(error = %e, "key change poll failed; cached keys are kept until it recovers");
                }
            }
        })
    }
}
