//! End-to-end tests of the mailer against real servers on loopback: a fake Postmark API
//! (wiremock) and a real SMTP server (Python's aiosmtpd, see tests/support/smtp_sink.py).

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use omi::billing::mailer::{EmailAddress, KeyEmailLinks, Mailer, OutgoingEmail, SendError, key_email};
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "pm-server-token-5f0c1d2e";
const KEY: &str = "omi_live_3xAmPlEk3y";
const BASE_URL: &str = "https://api.example.com/v1";

fn email(addr: &str) -> EmailAddress {
    EmailAddress::parse(addr).expect("test address is valid")
}

fn http_client() -> reqwest::Client {
    // reqwest is built with `rustls-no-provider`; main() installs ring, tests must too.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().expect("reqwest client builds")
}

fn postmark_mailer(base_url: &str) -> Mailer {
    Mailer::from_settings(
        Some(SecretString::from(TOKEN)),
        Some(base_url),
        None,
        email("keys@omi.example"),
        http_client(),
    )
    .expect("postmark settings are valid")
}

fn welcome() -> OutgoingEmail {
    key_email(email("ada@example.com"), KEY, KeyEmailLinks { api_base: BASE_URL, portal: None }, "pro")
}

/// A port nothing listens on: bound by us, then released.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("local addr").port()
}

async fn postmark_replying(status: u16, body: Value) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/email"))
        .respond_with(ResponseTemplate::new(status).set_body_json(body))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn postmark_200_sends_exact_headers_and_body() {
    let server = postmark_replying(
        200,
        json!({
            "To": "ada@example.com",
            "SubmittedAt": "2026-02-10T12:00:00.0000000-05:00",
            "MessageID": "0a129aee-e1cd-480d-b08d-4f48548ff48d",
            "ErrorCode": 0,
            "Message": "OK",
            "SomeFieldPostmarkAddsLater": {"nested": true}
        }),
    )
    .await;
    let mailer = postmark_mailer(&server.uri());
    assert_eq!(mailer.kind(), "postmark");
    let outgoing = welcome();

    assert_eq!(mailer.send(&outgoing).await, Ok(()));

    let requests = server.received_requests().await.expect("recording is on");
    assert_eq!(requests.len(), 1, "exactly one attempt, no retries inside send");
    let req = &requests[0];
    assert_eq!(req.method.as_str(), "POST");
    assert_eq!(req.url.path(), "/email");
    let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert_eq!(header("accept"), "application/json");
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(header("x-postmark-server-token"), TOKEN);

    let body: Value = req.body_json().expect("JSON body");
    assert_eq!(
        body,
        json!({
            "From": "keys@omi.example",
            "To": "ada@example.com",
            "Subject": "Your OMI API key",
            "TextBody": outgoing.text_body,
            "HtmlBody": outgoing.html_body,
            "MessageStream": "outbound",
            "Tag": "api-key",
        })
    );
    assert!(body["TextBody"].as_str().is_some_and(|t| t.contains(KEY)));
}

#[tokio::test]
async fn postmark_omits_absent_optional_fields() {
    let server = postmark_replying(200, json!({"ErrorCode": 0, "Message": "OK"})).await;
    let plain = OutgoingEmail {
        to: email("bob@example.org"),
        subject: "Hi".to_owned(),
        text_body: "Just text".to_owned(),
        html_body: None,
        tag: None,
    };
    assert_eq!(postmark_mailer(&server.uri()).send(&plain).await, Ok(()));
    let requests = server.received_requests().await.expect("recording is on");
    let body: Value = requests[0].body_json().expect("JSON body");
    assert_eq!(
        body,
        json!({
            "From": "keys@omi.example",
            "To": "bob@example.org",
            "Subject": "Hi",
            "TextBody": "Just text",
            "MessageStream": "outbound",
        })
    );
}

#[tokio::test]
async fn postmark_422_inactive_recipient_is_permanent() {
    let server = postmark_replying(
        422,
        json!({"ErrorCode": 406, "Message": "You tried to send to a recipient that has been marked as inactive."}),
    )
    .await;
    let err = postmark_mailer(&server.uri()).send(&welcome()).await.expect_err("422 must fail");
    assert!(matches!(err, SendError::Permanent(_)), "{err:?}");
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(text.contains("422") && text.contains("406"), "{text}");
    assert!(text.contains("marked as inactive"), "{text}");
}

#[tokio::test]
async fn postmark_422_maintenance_is_transient() {
    let server = postmark_replying(422, json!({"ErrorCode": 100, "Message": "Maintenance"})).await;
    let err = postmark_mailer(&server.uri()).send(&welcome()).await.expect_err("maintenance must fail");
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn postmark_401_is_permanent_and_never_shows_the_token() {
    // A hostile or buggy server echoing the token back must not get it into our error text.
    let server =
        postmark_replying(401, json!({"ErrorCode": 10, "Message": format!("Bad or missing server token: {TOKEN}")}))
            .await;
    let mailer = postmark_mailer(&server.uri());
    let err = mailer.send(&welcome()).await.expect_err("401 must fail");
    assert!(matches!(err, SendError::Permanent(_)), "{err:?}");
    let shown = format!("{err} {err:?} {mailer:?}");
    assert!(!shown.contains(TOKEN), "token leaked: {shown}");
    assert!(shown.contains("401") && shown.contains("[redacted]"), "{shown}");
}

#[tokio::test]
async fn postmark_429_and_5xx_are_transient() {
    for status in [429, 500, 503] {
        let server = postmark_replying(status, json!({"ErrorCode": 0, "Message": "try later"})).await;
        let err = postmark_mailer(&server.uri()).send(&welcome()).await.expect_err("must fail");
        assert!(matches!(err, SendError::Transient(_)), "{status}: {err:?}");
        assert!(err.to_string().contains(&status.to_string()), "{err}");
    }
}

#[tokio::test]
async fn postmark_non_json_error_body_is_still_classified() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(502).set_body_string("<html>Bad gateway</html>"))
        .mount(&server)
        .await;
    let err = postmark_mailer(&server.uri()).send(&welcome()).await.expect_err("502 must fail");
    assert!(matches!(err, SendError::Transient(_)), "{err:?}");
    assert!(err.to_string().contains("Bad gateway"), "{err}");
}

#[tokio::test]
async fn postmark_connection_refused_is_transient() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let err = postmark_mailer(&url).send(&welcome()).await.expect_err("nothing listens there");
    assert!(matches!(err, SendError::Transient(_)), "{err:?}");
    // The cause has to reach the operator, not just "error sending request".
    assert!(err.to_string().to_lowercase().contains("refused"), "{err}");
    assert!(!err.to_string().contains(TOKEN));
}

#[tokio::test]
async fn settings_choose_the_transport() {
    let from = || email("keys@omi.example");
    let smtp = || Some(SecretString::from("smtp://127.0.0.1:2525?tls=none"));

    let both =
        Mailer::from_settings(Some(SecretString::from(TOKEN)), None, smtp(), from(), http_client()).expect("valid");
    assert_eq!(both.kind(), "postmark");

    let only_smtp = Mailer::from_settings(None, None, smtp(), from(), http_client()).expect("valid");
    assert_eq!(only_smtp.kind(), "smtp");

    // Blank values, as left by `POSTMARK_SERVER_TOKEN=` in an env file, mean "unset".
    let blank_token =
        Mailer::from_settings(Some(SecretString::from("  ")), None, smtp(), from(), http_client()).expect("valid");
    assert_eq!(blank_token.kind(), "smtp");

    let disabled =
        Mailer::from_settings(None, None, Some(SecretString::from("")), from(), http_client()).expect("valid");
    assert_eq!(disabled.kind(), "disabled");
    let err = disabled.send(&welcome()).await.expect_err("disabled never sends");
    assert!(matches!(err, SendError::Permanent(_)), "{err:?}");
}

#[tokio::test]
async fn invalid_settings_are_reported_without_secrets() {
    let from = || email("keys@omi.example");
    let bad_url =
        Mailer::from_settings(Some(SecretString::from(TOKEN)), Some("not a url"), None, from(), http_client());
    assert!(bad_url.is_err());

    let bad_token = Mailer::from_settings(Some(SecretString::from("tok\nen")), None, None, from(), http_client());
    assert!(bad_token.is_err());

    let err = Mailer::from_settings(
        None,
        None,
        Some(SecretString::from("smtp://user:Sup3rS3cret@mail.example.com?tls=none")),
        from(),
        http_client(),
    )
    .expect_err("plaintext credentials to a remote host are refused");
    assert!(!err.to_string().contains("Sup3rS3cret"), "{err}");
}

#[test]
fn smtp_outside_a_tokio_runtime_is_an_error_not_a_panic() {
    let result = Mailer::from_settings(
        None,
        None,
        Some(SecretString::from("smtp://127.0.0.1:2525?tls=none")),
        email("keys@omi.example"),
        http_client(),
    );
    assert!(result.is_err());
}

// ---------------------------------------------------------------------------------------------
// SMTP against a real server: aiosmtpd in a Python venv under the target directory.

const PY_PACKAGES: [&str; 2] = ["aiosmtpd==1.4.6", "trustme==1.2.1"];
const SMTP_USER: &str = "sender@omi.example";
/// Characters that must be percent-encoded in SMTP_URL, to prove decoding.
const SMTP_PASSWORD: &str = "p@ss:w/rd%42 x";

/// The venv's python with aiosmtpd and trustme importable, or None when the machine cannot
/// provide them (then the SMTP tests skip, except under CI=true where they fail).
pub(crate) async fn sink_python() -> Option<PathBuf> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    tokio::task::spawn_blocking(|| PYTHON.get_or_init(provision_venv).clone())
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

pub(crate) fn provision_venv() -> Option<PathBuf> {
    match try_provision_venv() {
        Ok(python) => Some(python),
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("SMTP tests need python3 with venv + pip to install aiosmtpd (CI=true, so not skipping): {why}")
        }
        Err(why) => {
            // Straight to stderr: libtest captures println!, and a silent skip looks like a pass.
            let _ = writeln!(std::io::stderr(), "SKIPPED: SMTP tests (need python3 + pip for aiosmtpd): {why}");
            None
        }
    }
}

fn try_provision_venv() -> Result<PathBuf, String> {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let venv = tmp.join("test-venv");
    let python = venv.join("bin").join("python");
    std::fs::create_dir_all(tmp).map_err(|e| format!("create {}: {e}", tmp.display()))?;
    // The OnceLock covers threads of this test binary; the file lock covers other processes
    // (nextest runs every test in its own process, and two `cargo test` may run at once).
    let lock = File::create(tmp.join("test-venv.lock")).map_err(|e| format!("lock file: {e}"))?;
    lock.lock().map_err(|e| format!("lock: {e}"))?;

    if has_sink_packages(&python) {
        return Ok(python);
    }
    run(Command::new("python3").args(["-m", "venv", "--clear"]).arg(&venv))?;
    run(Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .args(PY_PACKAGES))?;
    if has_sink_packages(&python) {
        Ok(python)
    } else {
        Err("aiosmtpd/trustme still not importable after pip install".to_owned())
    }
}

fn has_sink_packages(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import aiosmtpd, trustme"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| format!("{shown}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{shown} exited with {}: {}", out.status, String::from_utf8_lossy(&out.stderr)))
    }
}

#[derive(Clone, Copy)]
pub(crate) enum SinkTls {
    None,
    StartTls,
    Implicit,
}

/// A running smtp_sink.py; killed (and its directory removed) on drop.
pub(crate) struct SmtpSink {
    child: Child,
    dir: PathBuf,
    pub(crate) port: u16,
}

impl SmtpSink {
    pub(crate) async fn start(python: &Path, tls: SinkTls, auth: bool) -> SmtpSink {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "smtp-sink-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create sink dir");
        let stderr = File::create(dir.join("stderr.log")).expect("sink stderr file");

        let mut cmd = Command::new(python);
        cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/smtp_sink.py"))
            .arg(&dir)
            .arg("--tls")
            .arg(match tls {
                SinkTls::None => "none",
                SinkTls::StartTls => "starttls",
                SinkTls::Implicit => "implicit",
            })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if auth {
            cmd.args(["--user", SMTP_USER, "--password", SMTP_PASSWORD]);
        }
        let child = cmd.spawn().expect("spawn smtp_sink.py");
        // Owned from here on, so the process dies even if the wait below panics.
        let mut sink = SmtpSink { child, dir, port: 0 };

        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(port) = std::fs::read_to_string(sink.dir.join("port")) {
                sink.port = port.trim().parse().expect("port file holds a number");
                return sink;
            }
            if let Ok(Some(status)) = sink.child.try_wait() {
                panic!("smtp_sink.py exited with {status}: {}", sink.stderr());
            }
            assert!(Instant::now() < deadline, "smtp_sink.py not listening after 30 s: {}", sink.stderr());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    fn ca_file_query(&self) -> String {
        let path = self.dir.join("ca.pem");
        let encoded: String = url::form_urlencoded::byte_serialize(path.to_string_lossy().as_bytes()).collect();
        format!("tls_ca_file={encoded}")
    }

    pub(crate) fn messages(&self) -> Vec<Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .expect("read sink dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("msg-") && n.ends_with(".json"))
            })
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(p).expect("read message");
                serde_json::from_str(&text).expect("message is JSON")
            })
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn userinfo() -> String {
    let enc = |s: &str| -> String {
        url::form_urlencoded::byte_serialize(s.as_bytes())
            .collect::<String>()
            // form encoding writes a space as '+', which userinfo would keep literally.
            .replace('+', "%20")
    };
    format!("{}:{}", enc(SMTP_USER), enc(SMTP_PASSWORD))
}

fn smtp_mailer(url: String) -> Mailer {
    let mailer =
        Mailer::from_settings(None, None, Some(SecretString::from(url)), email("sender@omi.example"), http_client())
            .expect("smtp settings are valid");
    assert_eq!(mailer.kind(), "smtp");
    mailer
}

fn assert_received_key_email(msg: &Value, tls: bool) {
    assert_eq!(msg["mail_from"], "sender@omi.example");
    assert_eq!(msg["rcpt_tos"], json!(["ada@example.com"]));
    assert_eq!(msg["auth_login"], SMTP_USER);
    assert_eq!(msg["tls"], tls);
    assert_eq!(msg["from"], "sender@omi.example");
    assert_eq!(msg["to"], "ada@example.com");
    assert_eq!(msg["subject"], "Your OMI API key");
    let text = msg["text"].as_str().expect("text/plain part");
    assert!(text.contains(KEY) && text.contains(BASE_URL), "{text}");
    assert!(text.contains("curl ") && text.contains("OpenAI(base_url="), "{text}");
    let html = msg["html"].as_str().expect("text/html part");
    assert!(html.contains(KEY), "{html}");
}

#[tokio::test]
async fn smtp_plaintext_with_auth_delivers_the_key_email() {
    let Some(python) = sink_python().await else {
        return;
    };
    let sink = SmtpSink::start(&python, SinkTls::None, true).await;
    let mailer = smtp_mailer(format!("smtp://{}@127.0.0.1:{}?tls=none", userinfo(), sink.port));

    assert_eq!(mailer.send(&welcome()).await, Ok(()));

    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_received_key_email(&messages[0], false);
}

#[tokio::test]
async fn smtp_starttls_delivers_over_tls() {
    let Some(python) = sink_python().await else {
        return;
    };
    let sink = SmtpSink::start(&python, SinkTls::StartTls, true).await;
    let mailer = smtp_mailer(format!("smtp://{}@127.0.0.1:{}?{}", userinfo(), sink.port, sink.ca_file_query()));

    assert_eq!(mailer.send(&welcome()).await, Ok(()));

    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_received_key_email(&messages[0], true);
}

#[tokio::test]
async fn smtps_implicit_tls_delivers_over_tls() {
    let Some(python) = sink_python().await else {
        return;
    };
    let sink = SmtpSink::start(&python, SinkTls::Implicit, true).await;
    let mailer = smtp_mailer(format!("smtps://{}@127.0.0.1:{}?{}", userinfo(), sink.port, sink.ca_file_query()));

    assert_eq!(mailer.send(&welcome()).await, Ok(()));

    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_received_key_email(&messages[0], true);
}

#[tokio::test]
async fn smtps_rejects_an_untrusted_certificate() {
    let Some(python) = sink_python().await else {
        return;
    };
    let sink = SmtpSink::start(&python, SinkTls::Implicit, true).await;
    // No tls_ca_file: the sink's throwaway CA is not a public root.
    let mailer = smtp_mailer(format!("smtps://{}@127.0.0.1:{}", userinfo(), sink.port));

    let err = mailer.send(&welcome()).await.expect_err("must not trust the cert");
    assert!(err.is_retryable(), "{err:?}");
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn smtp_without_starttls_support_sends_nothing() {
    let Some(python) = sink_python().await else {
        return;
    };
    // STARTTLS is the default for smtp://, and this server does not offer it.
    let sink = SmtpSink::start(&python, SinkTls::None, true).await;
    let mailer = smtp_mailer(format!("smtp://{}@127.0.0.1:{}", userinfo(), sink.port));

    let err = mailer.send(&welcome()).await.expect_err("no downgrade");
    assert!(matches!(err, SendError::Permanent(_)), "{err:?}");
    assert!(err.to_string().contains("STARTTLS"), "{err}");
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn smtp_wrong_password_is_permanent_and_never_shown() {
    let Some(python) = sink_python().await else {
        return;
    };
    let sink = SmtpSink::start(&python, SinkTls::None, true).await;
    let wrong = "Wr0ngPassw0rd";
    let mailer = smtp_mailer(format!("smtp://sender%40omi.example:{wrong}@127.0.0.1:{}?tls=none", sink.port));

    let err = mailer.send(&welcome()).await.expect_err("bad credentials");
    assert!(matches!(err, SendError::Permanent(_)), "{err:?}");
    assert!(err.to_string().contains("535"), "{err}");
    let shown = format!("{err} {err:?} {mailer:?}");
    assert!(!shown.contains(wrong), "password leaked: {shown}");
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn smtp_connection_refused_is_transient() {
    let mailer = smtp_mailer(format!("smtp://{}@127.0.0.1:{}?tls=none", userinfo(), closed_port()));
    let err = mailer.send(&welcome()).await.expect_err("nothing listens there");
    assert!(matches!(err, SendError::Transient(_)), "{err:?}");
    assert!(err.to_string().to_lowercase().contains("refused"), "{err}");
    assert!(!format!("{err} {mailer:?}").contains(SMTP_PASSWORD));
}
