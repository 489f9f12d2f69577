//! The `omi` binary as operators use it.

use crate::support::{Backend, TestDb};
use serde_json::Value;
use std::process::Output;

pub(crate) async fn omi(db: &TestDb, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_omi"))
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env_remove("OMI_CONFIG")
        .output()
        .await
        .expect("run omi")
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn keys_create_list_revoke() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else { return };
    let plain = omi(&db, &["keys", "create", "--email", "ada@example.com"]).await;
    assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
    let key = stdout(&plain).trim().to_string();
    assert!(omi::domain::key::ApiKey::parse(&key).is_ok(), "the key alone on stdout: {key:?}");

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

/// `omi keys create` refuses a customer's key past its plan's `max_keys` (revoked keys aside)
/// with exit 1 and one line; another customer, or a plan without the limit, still gets one.
#[tokio::test]
async fn keys_create_refuses_a_key_past_the_plans_max_keys() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("omi.toml");
    let plans = "[[plans]]\nname = \"pro\"\nmonthly_price_usd = 29.0\nmax_keys = 1\n";
    std::fs::write(&config, plans).expect("write omi.toml");
    let config = config.to_str().expect("utf-8 path");
    let db = &db;
    let create = |email: &'static str, plan: &'static str| async move {
        omi(db, &["--config", config, "keys", "create", "--email", email, "--plan", plan, "--json"]).await
    };
    let first = create("ada@example.com", "pro").await;
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let second = create("ada@example.com", "pro").await;
    assert_eq!(second.status.code(), Some(1));
    assert!(second.stdout.is_empty(), "no key printed");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
    assert!(stderr.contains("ada@example.com already has 1 keys on plan `pro` (its max_keys)"), "{stderr}");
    assert!(create("bob@example.com", "pro").await.status.success(), "another customer");
    assert!(create("ada@example.com", "team").await.status.success(), "a plan without max_keys");

    let created: Value = serde_json::from_slice(&first.stdout).expect("json");
    let revoked = omi(db, &["keys", "revoke", created["id"].as_str().expect("id")]).await;
    assert!(revoked.status.success());
    assert!(create("ada@example.com", "pro").await.status.success(), "a revoked key frees its place");
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

/// `omi serve` with only `vars` configured (and a fresh database), on a port of its own.
fn serve(db: &TestDb, vars: &[(&str, &str)]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_omi"));
    command
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("OMI_LISTEN", "127.0.0.1:0")
        .env_remove("OMI_CONFIG")
        .env_remove("PORT")
        .envs(vars.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}

#[tokio::test]
async fn serve_refuses_a_short_secret_in_one_line_naming_it() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else { return };
    const SHORT: &str = "fifteen-chars!!";
    for var in ["OMI_ADMIN_KEY", "LEMONSQUEEZY_SIGNING_SECRET", "N8N_WEBHOOK_SECRET"] {
        let run = serve(&db, &[(var, SHORT)]).output();
        let out = tokio::time::timeout(std::time::Duration::from_secs(30), run).await.expect("exits").expect("runs");
        assert_eq!(out.status.code(), Some(1), "{var}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(var) && stderr.contains("16 characters"), "{stderr}");
        let both = format!("{stderr}{}", stdout(&out));
        assert!(!both.contains(SHORT), "the value is never printed: {both}");
    }
}

#[tokio::test]
async fn empty_secrets_leave_admin_and_the_webhook_off() {
    use hmac::{Hmac, KeyInit, Mac};
    use tokio::io::AsyncBufReadExt;
    let Some(db) = TestDb::new(Backend::Sqlite).await else { return };
    let mut child = serve(&db, &[("OMI_ADMIN_KEY", ""), ("LEMONSQUEEZY_SIGNING_SECRET", " ")]).spawn().expect("spawn");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let listening = async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some(base) = line.strip_prefix("omi listening on ") {
                return base.to_string();
            }
        }
        panic!("omi serve ended before listening");
    };
    let base = tokio::time::timeout(std::time::Duration::from_secs(30), listening).await.expect("listens");
    omi::install_crypto_provider();
    let http = reqwest::Client::new();

    // An empty password does not open the dashboard or the admin API: admin is off.
    let login = http
        .post(format!("{base}/admin/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("key=")
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 404);
    let api = http.get(format!("{base}/admin/api/keys")).header("Authorization", "Bearer ").send().await;
    assert_eq!(api.expect("api").status(), 404);

    // A body signed with the empty key vends nothing: the webhook refuses every call.
    let body = r#"{"meta":{"event_name":"order_created"},"data":{"id":"1","attributes":{"status":"paid"}}}"#;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"").expect("hmac takes any key");
    mac.update(body.as_bytes());
    let forged = http
        .post(format!("{base}/webhooks/lemonsqueezy"))
        .header("x-signature", hex::encode(mac.finalize().into_bytes()))
        .body(body)
        .send()
        .await
        .expect("webhook");
    assert_eq!(forged.status(), 401);
    let answer: Value = forged.json().await.expect("json");
    assert_eq!(answer["error"]["code"], "webhook_disabled");
    child.kill().await.expect("stop omi");
}

#[tokio::test]
async fn json_logs_are_one_object_a_line_and_an_unknown_format_stops_serve() {
    use tokio::io::AsyncBufReadExt;
    let Some(db) = TestDb::new(Backend::Sqlite).await else { return };
    let mut child = serve(&db, &[("OMI_LOG_FORMAT", "json"), ("RUST_LOG", "info")]).spawn().expect("spawn");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let serving = async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            let entry: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            if entry["fields"]["message"] == "omi is serving" {
                return entry;
            }
        }
        panic!("omi serve ended before logging that it serves");
    };
    let entry = tokio::time::timeout(std::time::Duration::from_secs(30), serving).await.expect("logs");
    assert_eq!(entry["level"], "INFO", "{entry}");
    assert_eq!(entry["fields"]["database"], "sqlite", "{entry}");
    assert!(entry["timestamp"].is_string() && entry["target"].is_string(), "{entry}");
    child.kill().await.expect("stop omi");

    let run = serve(&db, &[("OMI_LOG_FORMAT", "xml")]).output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), run).await.expect("exits").expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("OMI_LOG_FORMAT") && stderr.contains("`json`"), "{stderr}");
}
