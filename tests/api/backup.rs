//! `omi backup PATH`: a consistent, checked copy of the live SQLite database while the gateway
//! serves, which a new instance then runs on; PostgreSQL is pointed to `pg_dump`.

use crate::support::{Backend, TestApp, chat_body, start_server, test_config};
use secrecy::SecretString;
use sqlx::{Connection, SqliteConnection};
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

async fn omi_backup(database_url: &str, path: &Path) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_omi"))
        .arg("backup")
        .arg(path)
        .env("DATABASE_URL", database_url)
        .env_remove("OMI_CONFIG")
        .output()
        .await
        .expect("run omi backup")
}

async fn usage_request_ids(connection: &mut SqliteConnection) -> Vec<String> {
    sqlx::query_scalar("SELECT request_id FROM usage_records ORDER BY request_id")
        .fetch_all(connection)
        .await
        .expect("usage records")
}

/// Requests through the gateway and the mock upstream, several at a time, until `stop`:
/// how many were answered, and whether any was not a 200.
struct Hammer {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Hammer {
    fn start(app: &TestApp, key: &str) -> Hammer {
        let (stop, answered, failed) = Default::default();
        let mut hammer = Hammer { stop, answered, failed, tasks: Vec::new() };
        for _ in 0..4 {
            let request = app.chat(key, chat_body(false));
            let (stop, answered, failed) = (hammer.stop.clone(), hammer.answered.clone(), hammer.failed.clone());
            hammer.tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let request = request.try_clone().expect("a JSON body clones");
                    match request.send().await {
                        Ok(response) if response.status() == 200 => answered.fetch_add(1, Ordering::SeqCst),
                        _ => failed.fetch_add(1, Ordering::SeqCst),
                    };
                }
            }));
        }
        hammer
    }

    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("hammer task");
        }
        (self.answered.load(Ordering::SeqCst), self.failed.load(Ordering::SeqCst))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_serving_holds_what_was_committed_and_a_new_instance_runs_on_it() {
    let Some(mut app) = TestApp::spawn_with(Backend::Sqlite, |c| c.rate_limit_per_minute = 0).await else { return };
    let keys = [
        app.create_key("ada@example.com").await,
        app.create_key("bob@example.com").await,
        app.create_key("cy@example.com").await,
    ];
    for _ in 0..5 {
        assert_eq!(app.chat(&keys[0], chat_body(false)).send().await.expect("chat").status(), 200);
    }
    // The five usage records are committed (the accountant writes in batches) before the backup.
    let mut live = SqliteConnection::connect(&app.db.url).await.expect("open the live database");
    let mut committed = Vec::new();
    for _ in 0..100 {
        committed = usage_request_ids(&mut live).await;
        if committed.len() == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(committed.len(), 5, "the first five requests are booked");

    let hammer = Hammer::start(&app, &keys[1]);
    while hammer.answered.load(Ordering::SeqCst) < 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("omi-backup.db");
    let answered_before = hammer.answered.load(Ordering::SeqCst);
    let backup = omi_backup(&app.db.url, &copy).await;
    let answered_during = hammer.answered.load(Ordering::SeqCst) - answered_before;
    let (answered, failed) = hammer.finish().await;
    assert!(backup.status.success(), "{}", String::from_utf8_lossy(&backup.stderr));
    let said = String::from_utf8_lossy(&backup.stdout);
    assert!(said.contains("integrity ok") && said.contains("keys 3"), "{said}");
    assert!(answered_during > 0, "requests were answered while the backup ran");
    assert_eq!(failed, 0, "the backup disturbed no request ({answered} answered)");

    // The copy, on its own: intact, one file, every key and every record committed before.
    let copy_url = format!("sqlite://{}", copy.display());
    let mut restored = SqliteConnection::connect(&copy_url).await.expect("open the copy");
    let integrity: Vec<String> =
        sqlx::query_scalar("PRAGMA integrity_check").fetch_all(&mut restored).await.expect("check");
    assert_eq!(integrity, ["ok"]);
    let key_rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys").fetch_one(&mut restored).await.expect("n");
    assert_eq!(key_rows, 3);
    let in_copy = usage_request_ids(&mut restored).await;
    assert!(committed.iter().all(|id| in_copy.contains(id)), "{committed:?} all in {in_copy:?}");
    restored.close().await.expect("close");
    assert!(!dir.path().join("omi-backup.db-wal").exists(), "the backup is one self-contained file");

    // A second backup to the same path is refused and leaves the first untouched.
    let first = std::fs::read(&copy).expect("read the copy");
    let again = omi_backup(&app.db.url, &copy).await;
    assert_eq!(again.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::read(&copy).expect("read the copy"), first);

    // Restore: a new instance on the copy serves the keys it holds.
    app.stop().await;
    let mut config = test_config(&app.db, &app.mock);
    config.database_url = SecretString::from(copy_url);
    let server = start_server(config).await;
    let http = reqwest::Client::new();
    for key in &keys {
        let answer = http
            .post(format!("http://{}/v1/chat/completions", server.addr))
            .bearer_auth(key)
            .json(&chat_body(false))
            .send()
            .await
            .expect("chat on the restored instance");
        assert_eq!(answer.status(), 200);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn backup_on_postgresql_names_pg_dump_and_copies_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("omi.dump");
    // No server is needed: the URL's scheme decides, and its password is never printed.
    let out = omi_backup("postgres://omi:hunter2-not-printed@127.0.0.1:9/omi", &path).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
    assert!(stderr.contains("pg_dump --format=custom") && stderr.contains("pg_restore"), "{stderr}");
    assert!(!stderr.contains("hunter2") && out.stdout.is_empty(), "{stderr}");
    assert!(!path.exists());
}

#[tokio::test]
async fn backup_refuses_a_missing_database_or_directory_without_creating_either() {
    let dir = tempfile::tempdir().expect("tempdir");
    let database = dir.path().join("nothing-here.db");
    let url = format!("sqlite://{}", database.display());
    let out = omi_backup(&url, &dir.path().join("copy.db")).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist (check DATABASE_URL)"));
    assert!(!database.exists() && !dir.path().join("copy.db").exists(), "nothing created");

    let out = omi_backup(&url, &dir.path().join("no-such-dir/copy.db")).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a directory"));
}
