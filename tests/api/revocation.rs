//! A revocation made anywhere is obeyed everywhere within 2 s.

use crate::support::{Backend, TestApp, chat_body, eventually, spawn_mock, start_server, test_config};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_postgres_refuse_a_key_revoked_through_either() {
    let Some(a) = TestApp::spawn(Backend::Postgres).await else { return };
    let mock = spawn_mock().await;
    let b = start_server(test_config(&a.db, &mock)).await;
    let b_url = format!("http://{}/v1/chat/completions", b.addr);
    let key = a.create_key("ada@example.com").await;

    // Both instances have the key cached as valid.
    assert_eq!(a.chat(&key, chat_body(false)).send().await.expect("a").status(), 200);
    let on_b = || a.http.post(&b_url).bearer_auth(&key).json(&chat_body(false)).send();
    assert_eq!(on_b().await.expect("b").status(), 200);

    let id = a.state().store.resolve_key(&key[..12]).await.expect("resolve").id;
    let revoked = a.admin(reqwest::Method::DELETE, &format!("/admin/api/keys/{id}")).send().await.expect("revoke");
    assert_eq!(revoked.status(), 200);
    let took =
        eventually(Duration::from_secs(2), || async { on_b().await.map(|r| r.status() == 403).unwrap_or(false) }).await;
    let took = took.expect("instance B refuses the key within 2 s");
    eprintln!("revocation reached the other instance in {took:?}");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_revoking_on_the_same_sqlite_file_is_noticed_by_the_server() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else { return };
    let key = app.create_key("ada@example.com").await;
    assert_eq!(app.chat(&key, chat_body(false)).send().await.expect("send").status(), 200);
    // Another process writes the file: the real `omi` binary.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_omi"))
        .args(["keys", "revoke", &key[..12]])
        .env("DATABASE_URL", &app.db.url)
        .output()
        .await
        .expect("run omi");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let took = eventually(Duration::from_secs(2), || async {
        app.chat(&key, chat_body(false)).send().await.map(|r| r.status() == 403).unwrap_or(false)
    })
    .await;
    assert!(took.is_some(), "the server refuses the key within 2 s of the CLI revoking it");
}
