//! `omi doctor` against fake services on loopback: each check passing and failing, the exit
//! codes, the `--json` shape, and no secret in what it prints.

use crate::mailer::{SinkTls, SmtpSink, sink_python, userinfo};
use crate::support::{Backend, TestDb};
use omi::config::{Config, ProviderConfig, ProviderKind};
use omi::doctor::{Check, Options, Status};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use wiremock::matchers::{header, header_exists, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The house key the fakes accept: providers read it from `CARGO_MANIFEST_DIR`, which always exists.
const HOUSE_KEY: &str = env!("CARGO_MANIFEST_DIR");
const POSTMARK_TOKEN: &str = "pm-doctor-token-8c1e0f7a";
const LONG_SECRET: &str = "a-long-random-secret-of-forty-characters";

/// A provider API that accepts only [`HOUSE_KEY`]: as a bearer (OpenAI kind), or as
/// `x-api-key` with an `anthropic-version` (Anthropic kind); anything else is a 401.
async fn provider_fake() -> MockServer {
    let server = MockServer::start().await;
    let models = ResponseTemplate::new(200).set_body_json(json!({"object": "list", "data": []}));
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .and(header("authorization", format!("Bearer {HOUSE_KEY}").as_str()))
        .respond_with(models.clone())
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .and(header("x-api-key", HOUSE_KEY))
        .and(header_exists("anthropic-version"))
        .respond_with(models)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {"message": "Incorrect API key"}})))
        .with_priority(10)
        .mount(&server)
        .await;
    server
}

/// Postmark's `GET /server`: 200 with [`POSTMARK_TOKEN`], else 401 (ErrorCode 10).
async fn postmark_fake() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/server"))
        .and(header("x-postmark-server-token", POSTMARK_TOKEN))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ID": 1, "Name": "omi"})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"ErrorCode": 10, "Message": "Bad token"})))
        .with_priority(10)
        .mount(&server)
        .await;
    server
}

/// Slack and n8n: `/slack` and `/n8n` answer `status`.
async fn webhooks_fake(status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(status).set_body_string("ok")).mount(&server).await;
    server
}

fn provider(name: &str, kind: ProviderKind, base_url: String, key_env: &str, models: &[&str]) -> ProviderConfig {
    ProviderConfig {
        name: name.into(),
        kind,
        base_url,
        api_key_env: Some(key_env.into()),
        models: models.iter().map(|m| m.to_string()).collect(),
        ..Default::default()
    }
}

fn base_config(db: &TestDb) -> Config {
    Config { database_url: SecretString::from(db.url.clone()), ..Config::default() }
}

fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
    checks.iter().find(|c| c.check == name).unwrap_or_else(|| panic!("no `{name}` check in {checks:#?}"))
}

fn assert_status(checks: &[Check], name: &str, status: Status, says: &str) {
    let check = find(checks, name);
    assert_eq!(check.status, status, "{check}");
    assert!(check.message.contains(says), "`{name}` should say {says:?}: {check}");
}

/// A port nothing listens on: bound by us, then released.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("local addr").port()
}

#[tokio::test]
async fn every_check_passes_against_working_services() {
    omi::install_crypto_provider();
    let Some(db) = TestDb::new(Backend::Sqlite).await else { return };
    db.store().await.close().await;
    let (upstream, postmark, hooks) = (provider_fake().await, postmark_fake().await, webhooks_fake(200).await);
    let redis = crate::firewall::shared_redis().await.map(|_| crate::firewall::redis_url());
    let config = Config {
        providers: vec![
            provider(
                "house",
                ProviderKind::OpenAi,
                format!("{}/v1", upstream.uri()),
                "CARGO_MANIFEST_DIR",
                &["gpt-4o-mini"],
            ),
            provider(
                "claude",
                ProviderKind::Anthropic,
                format!("{}/v1", upstream.uri()),
                "CARGO_MANIFEST_DIR",
                &["claude-sonnet-4-5"],
            ),
        ],
        redis_url: redis.clone().map(SecretString::from),
        postmark_server_token: Some(SecretString::from(POSTMARK_TOKEN)),
        postmark_api_url: Some(postmark.uri()),
        email_from: Some("keys@omi.example".into()),
        slack_webhook_url: Some(SecretString::from(format!("{}/slack", hooks.uri()))),
        n8n_webhook_url: Some(SecretString::from(format!("{}/n8n", hooks.uri()))),
        n8n_webhook_secret: Some(SecretString::from(LONG_SECRET)),
        lemonsqueezy_signing_secret: Some(SecretString::from(LONG_SECRET)),
        admin_key: Some(SecretString::from(LONG_SECRET)),
        trusted_proxies: "cloudflare, 10.0.0.0/8".parse().expect("proxies"),
        ..base_config(&db)
    };
    let checks = omi::doctor::run(&config, &Options { notify_test: true, ..Options::default() }).await;
    for check in &checks {
        assert_eq!(check.status, Status::Ok, "{check}");
    }
    assert!(!omi::doctor::failed(&checks));
    assert_status(&checks, "provider house", Status::Ok, "house key accepted");
    assert_status(&checks, "provider claude", Status::Ok, "house key accepted");
    assert_status(&checks, "email", Status::Ok, "postmark: credentials accepted");
    assert_status(&checks, "database", Status::Ok, "all");
    if redis.is_some() {
        assert_status(&checks, "redis", Status::Ok, "PING");
    }
    // --notify-test posted one message to each; n8n's is signed.
    let posts = hooks.received_requests().await.expect("recorded");
    let to = |p: &str| posts.iter().filter(|r| r.url.path() == p).count();
    assert_eq!((to("/slack"), to("/n8n")), (1, 1), "{posts:?}");
    assert!(posts.iter().any(|r| r.url.path() == "/n8n" && r.headers.contains_key("x-omi-signature")));

    // Without --notify-test nothing is posted: Slack and n8n are only said to be configured.
    let quiet = omi::doctor::run(&config, &Options::default()).await;
    assert_status(&quiet, "slack", Status::Ok, "configured");
    assert_eq!(hooks.received_requests().await.expect("recorded").len(), 2);
}

#[tokio::test]
async fn each_failing_service_fails_its_check_and_says_what_to_do() {
    omi::install_crypto_provider();
    let Some(db) = TestDb::new(Backend::Sqlite).await else { return };
    db.store().await.close().await;
    let (upstream, postmark, hooks) = (provider_fake().await, postmark_fake().await, webhooks_fake(404).await);
    // Accepts connections and never answers: a dead host must cost one timeout, not a hang.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    let config = Config {
        providers: vec![
            // `CARGO_PKG_NAME` holds a key the fake refuses.
            provider(
                "refused",
                ProviderKind::OpenAi,
                format!("{}/v1", upstream.uri()),
                "CARGO_PKG_NAME",
                &["gpt-4o-mini"],
            ),
            // A pool with one good key and one refused: the refused one is named by its variable.
            ProviderConfig {
                api_key_envs: vec!["CARGO_PKG_NAME".into()],
                ..provider(
                    "pool",
                    ProviderKind::OpenAi,
                    format!("{}/v1", upstream.uri()),
                    "CARGO_MANIFEST_DIR",
                    &["gpt-4o-mini"],
                )
            },
            provider(
                "gone",
                ProviderKind::OpenAi,
                format!("http://127.0.0.1:{}/v1", closed_port()),
                "CARGO_MANIFEST_DIR",
                &["gpt-4o"],
            ),
            provider(
                "silent",
                ProviderKind::Anthropic,
                format!("http://127.0.0.1:{silent_port}/v1"),
                "CARGO_MANIFEST_DIR",
                &["mystery-model-x"],
            ),
        ],
        redis_url: Some(SecretString::from(format!("redis://127.0.0.1:{}/", closed_port()))),
        postmark_server_token: Some(SecretString::from("pm-a-wrong-token-0000")),
        postmark_api_url: Some(postmark.uri()),
        email_from: Some("keys@omi.example".into()),
        slack_webhook_url: Some(SecretString::from(format!("{}/slack", hooks.uri()))),
        admin_key: Some(SecretString::from("twenty-chars-secret!")),
        trusted_proxies: "0.0.0.0/0".parse().expect("proxies"),
        ..base_config(&db)
    };
    let options = Options { notify_test: true, timeout: Duration::from_secs(2), ..Options::default() };
    let started = Instant::now();
    let checks = omi::doctor::run(&config, &options).await;
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "checks run concurrently, each bounded: {:?}",
        started.elapsed()
    );

    assert_status(&checks, "provider refused", Status::Fail, "house key for provider refused refused");
    assert_status(
        &checks,
        "provider pool",
        Status::Fail,
        "house key for provider pool refused (CARGO_PKG_NAME: HTTP 401)",
    );
    assert_status(&checks, "provider gone", Status::Fail, "unreachable");
    assert_status(&checks, "provider silent", Status::Fail, "no answer within 2 s");
    assert_status(&checks, "redis", Status::Fail, "unreachable");
    assert_status(&checks, "email", Status::Fail, "Postmark refused the server token");
    assert_status(&checks, "slack", Status::Fail, "refused the test message: HTTP 404");
    assert_status(&checks, "prices", Status::Warn, "mystery-model-x (silent)");
    assert_status(&checks, "secrets", Status::Warn, "OMI_ADMIN_KEY");
    assert_status(&checks, "trusted proxies", Status::Warn, "0.0.0.0/0");
    assert_status(&checks, "lemonsqueezy", Status::Warn, "refuses every call");
    assert!(omi::doctor::failed(&checks));
    let all = format!("{checks:?}");
    for secret in ["pm-a-wrong-token-0000", "twenty-chars-secret!", HOUSE_KEY] {
        assert!(!all.contains(secret), "{secret} shown: {all}");
    }
    drop(silent);
}

#[tokio::test]
async fn smtp_login_is_checked_and_a_test_email_is_sent_on_request() {
    omi::install_crypto_provider();
    let Some(python) = sink_python().await else { return };
    let Some(db) = TestDb::new(Backend::Sqlite).await else { return };
    db.store().await.close().await;
    let sink = SmtpSink::start(&python, SinkTls::None, true).await;
    let smtp = |userinfo: &str| Config {
        smtp_url: Some(SecretString::from(format!("smtp://{userinfo}@127.0.0.1:{}?tls=none", sink.port))),
        email_from: Some("sender@omi.example".into()),
        ..base_config(&db)
    };
    let to = omi::customers::EmailAddress::parse("ops@example.com").expect("address");
    let options = Options { send_test_email: Some(to), ..Options::default() };
    let checks = omi::doctor::run(&smtp(&userinfo()), &options).await;
    assert_status(&checks, "email", Status::Ok, "smtp: credentials accepted");
    assert_status(&checks, "test email", Status::Ok, "sent to ops@example.com");
    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(
        (messages[0]["to"].as_str(), messages[0]["subject"].as_str()),
        (Some("ops@example.com"), Some("omi doctor: test email"))
    );

    let wrong = "sender%40omi.example:not-the-password-9x";
    let checks = omi::doctor::run(&smtp(wrong), &Options::default()).await;
    assert_status(&checks, "email", Status::Fail, "smtp: smtp 127.0.0.1");
    assert!(!find(&checks, "email").message.contains("not-the-password-9x"), "{checks:?}");
    assert_eq!(sink.messages().len(), 1, "a check sends nothing");
}

async fn the_database_check_compares_the_migrations(backend: Backend) {
    omi::install_crypto_provider();
    let Some(db) = TestDb::new(backend).await else { return };
    let config = base_config(&db);
    let database = |checks: Vec<Check>| find(&checks, "database").clone();
    if matches!(backend, Backend::Sqlite) {
        let absent = database(omi::doctor::run(&config, &Options::default()).await);
        assert_eq!(absent.status, Status::Warn, "{absent}");
        assert!(absent.message.contains("no database at"), "{absent}");
        assert!(!std::path::Path::new(omi::store::sqlite_path(&db.url).expect("path")).exists(), "doctor created it");
        sqlx::SqlitePool::connect(&format!("{}?mode=rwc", db.url)).await.expect("create").close().await;
    }
    let fresh = database(omi::doctor::run(&config, &Options::default()).await);
    assert_eq!(fresh.status, Status::Warn, "{fresh}");
    assert!(fresh.message.contains("not applied") && fresh.message.contains("omi migrate"), "{fresh}");

    let store = db.store().await;
    let migrated = database(omi::doctor::run(&config, &Options::default()).await);
    assert_eq!(migrated.status, Status::Ok, "{migrated}");

    // A migration a newer omi applied (each backend writes a byte string its own way).
    let insert = "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                  VALUES (99999, 'from the future', TRUE, $1, 0)";
    match &store {
        omi::store::Store::Sqlite(pool) => sqlx::query(insert).bind(vec![0u8]).execute(pool).await.map(|_| ()),
        omi::store::Store::Postgres(pool) => sqlx::query(insert).bind(vec![0u8]).execute(pool).await.map(|_| ()),
    }
    .expect("record a migration");
    let newer = database(omi::doctor::run(&config, &Options::default()).await);
    assert_eq!(newer.status, Status::Fail, "{newer}");
    assert!(newer.message.contains("99999") && newer.message.contains("newer omi"), "{newer}");
    store.close().await;
}

crate::on_both_backends!(the_database_check_compares_the_migrations);

/// `omi doctor` as a script runs it: only `vars` set, in an empty directory (no `.env`).
async fn doctor(vars: &[(&str, String)], args: &[&str]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_omi"))
        .arg("doctor")
        .args(args)
        .env_clear()
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(dir.path())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out).await.expect("doctor ends").expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn exit_code_json_shape_and_no_secret_in_the_output() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else { return };
    db.store().await.close().await;
    let (upstream, postmark, hooks) = (provider_fake().await, postmark_fake().await, webhooks_fake(200).await);
    const OPENAI_KEY: &str = "sk-doctor-house-key-never-shown";
    const SLACK_SECRET: &str = "T000/B000/slack-secret-path-part";
    const ADMIN_KEY: &str = "admin-key-20-chars!!";
    const PM_TOKEN: &str = "pm-wrong-token-never-shown";
    let failing = vec![
        ("DATABASE_URL", db.url.clone()),
        ("OPENAI_BASE_URL", format!("{}/v1", upstream.uri())),
        ("OPENAI_API_KEY", OPENAI_KEY.to_owned()),
        ("POSTMARK_SERVER_TOKEN", PM_TOKEN.to_owned()),
        ("POSTMARK_API_URL", postmark.uri()),
        ("OMI_EMAIL_FROM", "keys@omi.example".to_owned()),
        ("SLACK_WEBHOOK_URL", format!("{}/services/{SLACK_SECRET}", hooks.uri())),
        ("OMI_ADMIN_KEY", ADMIN_KEY.to_owned()),
    ];
    let (code, stdout, stderr) = doctor(&failing, &["--json", "--notify-test"]).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let checks: Value = serde_json::from_str(&stdout).expect("one JSON document on stdout");
    let checks = checks.as_array().expect("an array");
    for check in checks {
        let object = check.as_object().expect("an object");
        assert_eq!(object.len(), 3, "{check}");
        assert!(object["check"].is_string() && object["message"].is_string(), "{check}");
        assert!(["ok", "warn", "fail"].contains(&object["status"].as_str().unwrap_or_default()), "{check}");
    }
    let status_of = |name: &str| checks.iter().find(|c| c["check"] == name).map(|c| c["status"].clone());
    assert_eq!(status_of("provider openai"), Some(json!("fail")), "{stdout}");
    assert_eq!(status_of("email"), Some(json!("fail")), "{stdout}");
    assert_eq!(status_of("slack"), Some(json!("ok")), "{stdout}");
    assert!(stderr.contains("check(s) failed"), "{stderr}");

    let (code, text, text_err) = doctor(&failing, &["--notify-test"]).await;
    assert_eq!(code, Some(1));
    assert!(
        text.lines().any(|l| l.starts_with("fail  provider openai: house key for provider openai refused")),
        "{text}"
    );
    for output in [&stdout, &stderr, &text, &text_err] {
        for secret in [OPENAI_KEY, SLACK_SECRET, ADMIN_KEY, PM_TOKEN] {
            assert!(!output.contains(secret), "{secret} shown: {output}");
        }
    }

    // Warnings alone (no email, no Slack, no Lemon Squeezy secret) do not fail it.
    let passing = vec![
        ("DATABASE_URL", db.url.clone()),
        ("OPENAI_BASE_URL", format!("{}/v1", upstream.uri())),
        ("OPENAI_API_KEY", HOUSE_KEY.to_owned()),
    ];
    let (code, text, stderr) = doctor(&passing, &[]).await;
    assert_eq!(code, Some(0), "{text}{stderr}");
    assert!(
        text.contains("ok    provider openai: reachable, house key accepted") && text.contains("warn  email"),
        "{text}"
    );

    let (code, _, stderr) = doctor(&passing, &["--send-test-email", "not-an-address"]).await;
    assert_eq!(code, Some(2), "a bad address is a usage error: {stderr}");
    let (code, stdout, _) = doctor(&[("OMI_LOG_FORMAT", "xml".to_owned())], &["--json"]).await;
    assert_eq!(code, Some(1));
    assert!(
        stdout.contains(r#""check":"configuration","status":"fail""#) && stdout.contains("OMI_LOG_FORMAT"),
        "{stdout}"
    );
}
