//! The `omi` binary as operators use it.

use crate::support::{Backend, TestDb};
use serde_json::Value;
use std::process::Output;

async fn omi(db: &TestDb, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_omi"))
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env_remove("OMI_CONFIG")
        .output()
        .await
        .expect("run omi")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn keys_create_list_revoke() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else { return };
    let plain = omi(&db, &["keys", "create", "--email", "ada@example.com"]).await;
    assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
    let key = stdout(&plain).trim().to_string();
    assert!(omi::keys::ApiKey::parse(&key).is_ok(), "the key alone on stdout: {key:?}");

    let json =
        omi(&db, &["keys", "create", "--email", "bob@example.com", "--plan", "team", "--name", "ci", "--json"]).await;
    let created: Value = serde_json::from_slice(&json.stdout).expect("one JSON object");
    for field in ["id", "key", "prefix", "email", "plan"] {
        assert!(created.get(field).is_some(), "missing {field}: {created}");
    }
    assert_eq!(created["plan"], "team");

    let listed = omi(&db, &["keys", "list", "--json"]).await;
    let listed_text = stdout(&listed);
    let keys: Value = serde_json::from_str(&listed_text).expect("json list");
    assert_eq!(keys.as_array().map(Vec::len), Some(2));
    assert!(!listed_text.contains(&key) && !listed_text.contains(created["key"].as_str().expect("key")));
    let table = stdout(&omi(&db, &["keys", "list"]).await);
    assert!(table.contains("PREFIX") && table.contains("ada@example.com") && table.contains("never"));

    let revoked = omi(&db, &["keys", "revoke", created["prefix"].as_str().expect("prefix")]).await;
    assert!(revoked.status.success());
    let keys: Value = serde_json::from_slice(&omi(&db, &["keys", "list", "--json"]).await.stdout).expect("json");
    assert!(keys.as_array().expect("array").iter().any(|k| k["status"] == "revoked"));
}

#[tokio::test]
async fn exit_codes_and_messages() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else { return };
    let usage = omi(&db, &["keys", "create"]).await;
    assert_eq!(usage.status.code(), Some(2), "missing --email is a usage error");
    let bad_email = omi(&db, &["keys", "create", "--email", "not-an-email"]).await;
    assert_eq!(bad_email.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_email.stderr).contains("not a valid email"));
    let missing = omi(&db, &["keys", "revoke", "omi_nothing"]).await;
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
    let schema = omi(&db, &["schema"]).await;
    assert_eq!(stdout(&schema), include_str!("../../schema.sql"));
    let migrate = omi(&db, &["migrate"]).await;
    assert!(migrate.status.success());
}
