//! Test harness: a fresh database per test (a temporary SQLite file, or a new PostgreSQL
//! database `omi_test_<random>` dropped afterwards), the mock upstream on a random port,
//! and the real server on another.

use omi::config::Config;
use omi::customers::EmailAddress;
use omi::mock_upstream::{MockConfig, MockUpstream};
use omi::server::Server;
use omi::store::Store;
use secrecy::SecretString;
use std::net::SocketAddr;
use std::time::Duration;

pub const HOUSE_KEY: &str = "sk-house-test-0123456789";
pub const ADMIN_KEY: &str = "admin-test-key-0123456789";

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates one test per backend from an `async fn(Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() { super::$name($crate::support::Backend::Sqlite).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() { super::$name($crate::support::Backend::Postgres).await }
        }
    )*};
}

pub fn pg_admin_url() -> String {
    std::env::var("OMI_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A service this test needs is missing: fatal in CI, a loud skip elsewhere.
pub fn service_missing(what: &str, detail: &str) {
    if in_ci() {
        panic!("{what} is required in CI (CI=true) but unreachable: {detail}");
    }
    eprintln!("SKIPPED: {what} unreachable ({detail}); start it to run this test");
}

pub fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("OS randomness");
    hex::encode(bytes)
}

pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}", dir.path().join("omi.db").display());
                Some(TestDb { url, pg_name: None, _dir: Some(dir) })
            }
            Backend::Postgres => {
                let admin = pg_admin_url();
                let pool = match sqlx::PgPool::connect(&admin).await {
                    Ok(pool) => pool,
                    Err(e) => {
                        service_missing("PostgreSQL", &e.to_string());
                        return None;
                    }
                };
                let name = format!("omi_test_{}", random_suffix());
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&pool)
                    .await
                    .expect("create test database");
                pool.close().await;
                let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or(admin);
                Some(TestDb { url: format!("{base}/{name}"), pg_name: Some(name), _dir: None })
            }
        }
    }

    pub async fn store(&self) -> Store {
        let store = Store::connect(&self.url).await.expect("connect");
        store.migrate().await.expect("migrate");
        store
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else { return };
        let admin = pg_admin_url();
        // Drop runs inside the test's runtime: use a thread with its own small runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                if let Ok(pool) = sqlx::PgPool::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                        .execute(&pool)
                        .await;
                }
            });
        })
        .join();
    }
}

pub struct Mock {
    pub upstream: MockUpstream,
    pub url: String,
}

pub async fn spawn_mock() -> Mock {
    spawn_mock_with(MockConfig::default()).await
}

pub async fn spawn_mock_with(config: MockConfig) -> Mock {
    let upstream = MockUpstream::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
    let addr = listener.local_addr().expect("addr");
    let router = upstream.router();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Mock { upstream, url: format!("http://{addr}/v1") }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub server: Option<Server>,
    pub http: reqwest::Client,
    pub db: TestDb,
    pub mock: Mock,
}

pub fn test_config(db: &TestDb, mock: &Mock) -> Config {
    Config {
        database_url: SecretString::from(db.url.clone()),
        openai_base_url: mock.url.clone(),
        openai_api_key: Some(SecretString::from(HOUSE_KEY)),
        admin_key: Some(SecretString::from(ADMIN_KEY)),
        shutdown_grace_ms: 5_000,
        ..Config::default()
    }
}

impl TestApp {
    /// `None` only when the backend is unavailable outside CI (already reported).
    pub async fn spawn(backend: Backend) -> Option<TestApp> {
        TestApp::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<TestApp> {
        TestApp::spawn_with_mock(backend, MockConfig::default(), tweak).await
    }

    /// As [`TestApp::spawn_with`], the mock upstream configured so.
    pub async fn spawn_with_mock(
        backend: Backend,
        mock: MockConfig,
        tweak: impl FnOnce(&mut Config),
    ) -> Option<TestApp> {
        omi::install_crypto_provider();
        let db = TestDb::new(backend).await?;
        let mock = spawn_mock_with(mock).await;
        let mut config = test_config(&db, &mock);
        tweak(&mut config);
        let server = start_server(config).await;
        let addr = server.addr;
        Some(TestApp {
            addr,
            base: format!("http://{addr}"),
            server: Some(server),
            http: reqwest::Client::new(),
            db,
            mock,
        })
    }

    pub fn state(&self) -> &omi::app::AppState {
        &self.server.as_ref().expect("running").state
    }

    pub async fn create_key(&self, email: &str) -> String {
        let email = EmailAddress::parse(email).expect("email");
        let (key, _) = omi::keys::issue(&self.state().store, &email, "pro", None, None).await.expect("issue");
        key.expose().to_string()
    }

    pub fn chat(&self, key: &str, body: serde_json::Value) -> reqwest::RequestBuilder {
        self.http.post(format!("{}/v1/chat/completions", self.base)).bearer_auth(key).json(&body)
    }

    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).bearer_auth(ADMIN_KEY)
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

pub async fn start_server(config: Config) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    Server::start(config, listener).await.expect("server starts")
}

/// Polls `check` until it returns true or `within` passes; returns the time it took.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

pub fn chat_body(stream: bool) -> serde_json::Value {
    serde_json::json!({"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": "Say hello in three words"}]})
}

/// A TCP forwarder to a real service that the test can cut and restore (a database outage
/// without stopping the shared database).
pub struct Outage {
    pub addr: SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Outage {
    pub async fn start(target: SocketAddr) -> Outage {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let generation = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (up2, generation2) = (up.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused in effect
                }
                let born = generation2.load(Ordering::SeqCst);
                let generation = generation2.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    let cut = async {
                        while generation.load(Ordering::SeqCst) == born {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! { _ = copy => {}, _ = cut => {} }
                });
            }
        });
        Outage { addr, up, generation }
    }

    /// Cuts every open connection and refuses new ones.
    pub fn down(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn up(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The next request booked on the bus (other events skipped), within 10 s.
pub async fn next_request_event(rx: &mut omi::events::Subscription) -> omi::events::RequestEvent {
    loop {
        let event =
            tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("event in time").expect("open");
        if let omi::events::Event::Request(request) = &*event {
            return (**request).clone();
        }
    }
}
