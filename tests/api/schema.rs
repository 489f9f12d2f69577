//! `schema.sql`, `omi schema` and the migrations never disagree.

use crate::support::{Backend, TestDb};
use sqlx::PgPool;

const SCHEMA_FILE: &str = include_str!("../../schema.sql");

#[test]
fn omi_schema_is_the_committed_file() {
    assert_eq!(
        omi::store::postgres_schema(),
        SCHEMA_FILE,
        "schema.sql is stale: run `cargo run -- schema > schema.sql`"
    );
}

/// Columns, constraints, indexes and RLS flags of the public schema, as comparable text.
async fn describe(pool: &PgPool) -> Vec<String> {
    let mut out: Vec<String> = sqlx::query_scalar(
        "SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' || COALESCE(column_default, '')
         FROM information_schema.columns WHERE table_schema = 'public'",
    )
    .fetch_all(pool)
    .await
    .expect("columns");
    let constraints: Vec<String> = sqlx::query_scalar(
        "SELECT conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
         FROM pg_constraint WHERE connamespace = 'public'::regnamespace",
    )
    .fetch_all(pool)
    .await
    .expect("constraints");
    let indexes: Vec<String> = sqlx::query_scalar("SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'")
        .fetch_all(pool)
        .await
        .expect("indexes");
    let rls: Vec<String> = sqlx::query_scalar(
        "SELECT relname || ' rls=' || relrowsecurity::text FROM pg_class
         WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'",
    )
    .fetch_all(pool)
    .await
    .expect("rls");
    out.extend(constraints);
    out.extend(indexes);
    out.extend(rls);
    out.sort();
    out
}

#[tokio::test]
async fn schema_sql_and_migrations_give_the_same_database() {
    let Some(migrated) = TestDb::new(Backend::Postgres).await else { return };
    let Some(pasted) = TestDb::new(Backend::Postgres).await else { return };
    migrated.store().await;

    let pool = PgPool::connect(&pasted.url).await.expect("connect");
    sqlx::raw_sql(SCHEMA_FILE).execute(&pool).await.expect("schema.sql applies cleanly");
    // `omi migrate` on a database made from schema.sql has nothing to do.
    let store = omi::store::Store::connect(&pasted.url).await.expect("connect");
    store.migrate().await.expect("sees the database as up to date");

    let a = describe(&PgPool::connect(&migrated.url).await.expect("connect")).await;
    let b = describe(&pool).await;
    assert!(!a.is_empty());
    assert_eq!(a, b, "schema.sql and the migrations disagree");
    let without_rls: Vec<_> = b.iter().filter(|l| l.ends_with("rls=false")).collect();
    assert!(without_rls.is_empty(), "every table has RLS enabled: {without_rls:?}");
    let applied: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations").fetch_one(&pool).await.expect("count");
    assert_eq!(applied as usize, omi::store::postgres_schema().matches("INSERT INTO _sqlx_migrations").count());
}
