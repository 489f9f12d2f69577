//! The storage suite, run unchanged against SQLite and PostgreSQL.

use crate::on_both_backends;
use crate::support::{Backend, TestDb};
use omi::customers::EmailAddress;
use omi::keys::{self, ApiKey, KeyStatus};
use omi::store::StoreError;

on_both_backends!(keys_round_trip, status_changes_are_logged_and_revocation_is_final, prefixes_resolve_or_refuse);

async fn keys_round_trip(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let store = db.store().await;
    store.migrate().await.expect("migrating twice is a no-op");
    let email = EmailAddress::parse("Ada@Example.com").expect("email");
    let (key, listing) = keys::issue(&store, &email, "pro", Some("laptop")).await.expect("issue");
    assert_eq!(listing.email, "ada@example.com");
    assert_eq!(listing.status, "active");
    assert_eq!(listing.name.as_deref(), Some("laptop"));
    assert_eq!(listing.prefix, key.display_prefix());

    let found = store.find_key(&key.hash()).await.expect("find").expect("present");
    assert_eq!((found.key_id, found.email.as_str(), found.plan.as_str()), (listing.id, "ada@example.com", "pro"));
    let other = ApiKey::generate().expect("key");
    assert!(store.find_key(&other.hash()).await.expect("find").is_none());

    // A second key for the same customer reuses the customer row.
    let (_, second) = keys::issue(&store, &email, "team", None).await.expect("issue");
    let found2 =
        store.find_key(&ApiKey::parse(key.expose()).expect("parse").hash()).await.expect("find").expect("present");
    assert_eq!(found2.customer_id, found.customer_id);
    let all = store.list_keys().await.expect("list");
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].id, second.id);

    let when = chrono::Utc::now();
    store.touch_keys(&[(listing.id, when)]).await.expect("touch");
    let touched = store.key_by_id(listing.id).await.expect("by id");
    let stored = touched.last_used_at.expect("last used");
    assert!((stored - when).num_milliseconds().abs() < 2, "{stored} vs {when}");
    // The database never holds the plaintext.
    let listing_json = serde_json::to_string(&all).expect("json");
    assert!(!listing_json.contains(key.expose()));
}

async fn status_changes_are_logged_and_revocation_is_final(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let store = db.store().await;
    let email = EmailAddress::parse("bob@example.com").expect("email");
    let before = store.latest_key_change().await.expect("seq");
    let (key, listing) = keys::issue(&store, &email, "pro", None).await.expect("issue");
    let suspended = store.set_key_status(listing.id, KeyStatus::Suspended).await.expect("suspend");
    assert_eq!(suspended.status, "suspended");
    let restored = store.set_key_status(listing.id, KeyStatus::Active).await.expect("restore");
    assert_eq!(restored.status, "active");
    store.set_key_status(listing.id, KeyStatus::Revoked).await.expect("revoke");
    let again = store.set_key_status(listing.id, KeyStatus::Active).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "a revoked key stays revoked: {again:?}");
    assert_eq!(store.key_by_id(listing.id).await.expect("key").status, "revoked");

    let changes = store.key_changes_since(before).await.expect("changes");
    assert_eq!(changes.len(), 4, "create, suspend, restore, revoke");
    assert!(changes.iter().all(|(_, hash)| *hash == key.hash()));
    assert!(changes.windows(2).all(|w| w[0].0 < w[1].0));
}

async fn prefixes_resolve_or_refuse(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let store = db.store().await;
    let email = EmailAddress::parse("carol@example.com").expect("email");
    let (key, listing) = keys::issue(&store, &email, "pro", None).await.expect("issue");
    assert_eq!(store.resolve_key(&key.display_prefix()).await.expect("by prefix").id, listing.id);
    assert_eq!(store.resolve_key(&listing.id.to_string()).await.expect("by id").id, listing.id);
    assert!(matches!(store.resolve_key("omi_nothing").await, Err(StoreError::NotFound(_))));
}
