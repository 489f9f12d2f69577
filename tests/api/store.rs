//! The storage suite, run unchanged against SQLite and PostgreSQL.

use crate::dashboard::{seed_usage, usage_record};
use crate::on_both_backends;
use crate::support::{Backend, TestDb};
use omi::customers::EmailAddress;
use omi::domain::key::{ApiKey, KeyStatus};
use omi::keys;
use omi::store::{Store, StoreError, TRAFFIC_KEPT};

on_both_backends!(
    alert_notices_are_claimed_once_per_incident,
    keys_round_trip,
    status_changes_are_logged_and_revocation_is_final,
    prefixes_resolve_or_refuse,
    the_traffic_rollup_is_what_its_backfill_computes
);

async fn keys_round_trip(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let store = db.store().await;
    store.migrate().await.expect("migrating twice is a no-op");
    let email = EmailAddress::parse("Ada@Example.com").expect("email");
    let (key, listing) = keys::issue(&store, &email, "pro", Some("laptop"), Default::default()).await.expect("issue");
    assert_eq!(listing.email, "ada@example.com");
    assert_eq!(listing.status, "active");
    assert_eq!(listing.name.as_deref(), Some("laptop"));
    assert_eq!(listing.prefix, key.display_prefix());

    let found = store.find_key(&key.hash()).await.expect("find").expect("present");
    assert_eq!((found.key_id, found.email.as_str(), found.plan.as_str()), (listing.id, "ada@example.com", "pro"));
    let other = ApiKey::generate().expect("key");
    assert!(store.find_key(&other.hash()).await.expect("find").is_none());

    // A second key for the same customer reuses the customer row.
    let (_, second) = keys::issue(&store, &email, "team", None, Default::default()).await.expect("issue");
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
    let (key, listing) = keys::issue(&store, &email, "pro", None, Default::default()).await.expect("issue");
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
    let (key, listing) = keys::issue(&store, &email, "pro", None, Default::default()).await.expect("issue");
    assert_eq!(store.resolve_key(&key.display_prefix()).await.expect("by prefix").id, listing.id);
    assert_eq!(store.resolve_key(&listing.id.to_string()).await.expect("by id").id, listing.id);
    assert!(matches!(store.resolve_key("omi_nothing").await, Err(StoreError::NotFound(_))));
}

/// Runs one SQL text on whichever pool the store holds.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}

type TrafficLine = (String, i64, i64, i64, i64, i64);

/// Both traffic rollup tables, in key order.
async fn traffic_tables(store: &Store) -> Vec<TrafficLine> {
    let sql = "SELECT 'minute' AS t, bucket, series, bin, requests, errors FROM traffic_minutely
               UNION ALL SELECT 'hour', bucket, series, bin, requests, errors FROM traffic_hourly ORDER BY 1, 2, 3, 4";
    on_pool!(store, pool => sqlx::query_as(sql).fetch_all(pool).await).expect("rollup")
}

/// The writer keeps the overview's rollup in step with the records (and within what it keeps);
/// the migration that made it computes the same rows from the records in SQL.
async fn the_traffic_rollup_is_what_its_backfill_computes(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let store = db.store().await;
    let email = EmailAddress::parse("ada@example.com").expect("email");
    let (_, key) = keys::issue(&store, &email, "pro", None, Default::default()).await.expect("issue");
    let stale = "INSERT INTO traffic_minutely (bucket, series, bin, requests, errors) VALUES (15778080, 0, 107, 1, 0)";
    on_pool!(&store, pool => sqlx::query(stale).execute(pool).await.map(|_| ())).expect("a stale bucket");
    seed_usage(&store, &key, 300).await;
    // Older than the rollup keeps: in the records, not in the rollup.
    let old = usage_record(&key, 1, chrono::Utc::now() - TRAFFIC_KEPT - chrono::Duration::hours(1));
    store.insert_usage(&[old]).await.expect("an old record");

    let written = traffic_tables(&store).await;
    assert!(!written.iter().any(|line| line.1 == 15_778_080), "buckets past what is kept (2000-01-01) are dropped");
    for table in ["minute", "hour"] {
        let lines = written.iter().filter(|line| line.0 == table);
        let (requests, errors) = lines.filter(|line| line.2 == 0).fold((0, 0), |(r, e), line| (r + line.4, e + line.5));
        assert_eq!((requests, errors), (300, 30), "{table}: every recent request once, one in ten failed");
        let overhead: i64 = written.iter().filter(|line| line.0 == table && line.2 == 1).map(|line| line.4).sum();
        assert_eq!(overhead, 300, "{table}: each request's overhead once");
    }

    let migration = match backend {
        Backend::Sqlite => include_str!("../../migrations/sqlite/0007_traffic_rollup.sql"),
        Backend::Postgres => include_str!("../../migrations/postgres/0007_traffic_rollup.sql"),
    };
    let drop = "DROP TABLE traffic_minutely; DROP TABLE traffic_hourly;";
    on_pool!(&store, pool => sqlx::raw_sql(drop).execute(pool).await.map(|_| ())).expect("drop");
    on_pool!(&store, pool => sqlx::raw_sql(migration).execute(pool).await.map(|_| ())).expect("the migration again");
    assert_eq!(traffic_tables(&store).await, written, "the backfill and the writer agree");
}

/// The shared incident of an alert key: each notification is claimed once across instances.
async fn alert_notices_are_claimed_once_per_incident(backend: Backend) {
    use omi::store::{IncidentClock, IncidentNotice};
    let Some(db) = TestDb::new(backend).await else { return };
    let store = db.store().await;
    let start = chrono::Utc::now();
    let at = |secs: i64| {
        let now = start + chrono::TimeDelta::seconds(secs);
        // Reminders every 60 s; an incident untouched for 600 s is abandoned.
        IncidentClock {
            now,
            remind_before: now - chrono::TimeDelta::seconds(60),
            abandoned_before: now - chrono::TimeDelta::seconds(600),
        }
    };
    let claim = |notice, severity, secs| {
        let store = store.clone();
        async move { store.claim_alert_notice("server_errors:gpt", notice, severity, &at(secs)).await.expect("claim") }
    };
    // Two instances fire: the first sends, the second joins.
    assert!(claim(IncidentNotice::Fired, "warning", 0).await);
    assert!(!claim(IncidentNotice::Fired, "warning", 1).await);
    // The first escalation goes out; the other instance's is already said.
    assert!(claim(IncidentNotice::Escalated, "critical", 2).await);
    assert!(!claim(IncidentNotice::Escalated, "critical", 3).await);
    // A reminder only once the last message is older than the interval, then once.
    assert!(!claim(IncidentNotice::Reminder, "critical", 30).await);
    assert!(claim(IncidentNotice::Reminder, "critical", 70).await);
    assert!(!claim(IncidentNotice::Reminder, "critical", 71).await);
    // The last instance to resolve sends the resolution.
    assert!(!claim(IncidentNotice::Resolved, "critical", 100).await);
    assert!(claim(IncidentNotice::Resolved, "critical", 101).await);
    // A new incident fires again; one whose instances all stopped is taken over.
    assert!(claim(IncidentNotice::Fired, "warning", 200).await);
    assert!(!claim(IncidentNotice::Fired, "warning", 300).await);
    assert!(claim(IncidentNotice::Fired, "warning", 2_000).await, "abandoned for longer than 600 s");
    assert!(claim(IncidentNotice::Resolved, "warning", 2_001).await);
    // A resolution when no incident is firing (its firing was sent unclaimed: the database
    // was away) is sent: never silence.
    assert!(claim(IncidentNotice::Resolved, "warning", 2_002).await);
}
