//! SMTP submission (Gmail with an App Password, or any relay) through lettre's pooled async
//! transport.
//!
//! `SMTP_URL` forms:
//! - `smtps://user:pass@smtp.gmail.com:465`: implicit TLS (port defaults to 465).
//! - `smtp://user:pass@smtp.example.com:587`: STARTTLS, required (port defaults to 587). A
//!   server that does not offer STARTTLS gets neither the password nor the mail.
//! - `smtp://localhost:1025?tls=none`: plaintext (port defaults to 25), for local sinks such as
//!   Mailpit in development and tests. The opt-out must be spelled out, so a forgotten `s` in
//!   `smtps` cannot silently downgrade; and credentials are refused with `tls=none` unless the
//!   host is loopback, so a password never crosses a network in the clear.
//!
//! Query options: `tls=required|none` (`smtp://` only; `required` is the default) and
//! `tls_ca_file=/path/ca.pem`, a PEM CA trusted in addition to the public web roots (relays with a
//! private CA; also how the tests exercise real TLS). Unknown options are an error, so a typo such
//! as `?tsl=none` is caught at startup. User name and password are percent-decoded (write `@` as
//! `%40`, `:` as `%3A`, `%` as `%25`); AUTH uses PLAIN, or LOGIN when PLAIN is not offered.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::{EmailAddress, MailerConfigError, OutgoingEmail, SendError, VerifyError, redact};
use crate::web::error_chain::error_chain;

/// Per SMTP command. lettre's default is 60 s; a relay silent for 30 s is better retried later
/// than allowed to stall the outbox worker.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    ImplicitTls,
    StartTls,
    Plaintext,
}

/// What `SMTP_URL` says, decoded and checked.
struct SmtpSettings {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<(String, SecretString)>,
    ca_file: Option<PathBuf>,
}

pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    host: String,
    port: u16,
    security: Security,
    username: Option<String>,
    /// Kept only to scrub it from error messages.
    password: Option<SecretString>,
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("from", &self.from.email.to_string())
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

impl SmtpMailer {
    pub(super) fn from_url(url: &SecretString, from: EmailAddress) -> Result<Self, MailerConfigError> {
        let settings = parse_smtp_url(url.expose_secret())?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(MailerConfigError::NoTokioRuntime);
        }
        let from = to_lettre_address(&from)
            .map(|address| Mailbox::new(None, address))
            .map_err(|e| MailerConfigError::Sender(e.to_string()))?;

        let tls = match settings.security {
            Security::ImplicitTls => Tls::Wrapper(tls_parameters(&settings.host, settings.ca_file.as_deref())?),
            Security::StartTls => Tls::Required(tls_parameters(&settings.host, settings.ca_file.as_deref())?),
            Security::Plaintext => Tls::None,
        };
        // "dangerous" only means "no TLS unless configured": TLS is set explicitly right here.
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            .port(settings.port)
            .tls(tls)
            .timeout(Some(COMMAND_TIMEOUT));
        let (username, password) = match settings.credentials {
            Some((user, password)) => {
                builder = builder.credentials(Credentials::new(user.clone(), password.expose_secret().to_owned()));
                (Some(user), Some(password))
            }
            None => (None, None),
        };

        Ok(SmtpMailer {
            transport: builder.build(),
            from,
            host: settings.host,
            port: settings.port,
            security: settings.security,
            username,
            password,
        })
    }

    pub(super) async fn send(&self, email: &OutgoingEmail) -> Result<(), SendError> {
        let to = to_lettre_address(&email.to).map_err(|e| SendError::Permanent(format!("recipient rejected: {e}")))?;
        let builder =
            Message::builder().from(self.from.clone()).to(Mailbox::new(None, to)).subject(email.subject.as_str());
        let message = match &email.html_body {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(email.text_body.clone(), html.clone())),
            None => builder.header(ContentType::TEXT_PLAIN).body(email.text_body.clone()),
        }
        .map_err(|e| SendError::Permanent(format!("could not build the message: {e}")))?;

        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(err) => Err(self.classify(&err)),
        }
    }

    /// Connects and logs in as a send would, and sends nothing: a 5xx reply (535: the login
    /// was refused) is a refusal, anything else a failure to reach the relay.
    pub(super) async fn verify(&self) -> Result<(), VerifyError> {
        match self.transport.test_connection().await {
            Ok(true) => Ok(()),
            Ok(false) => {
                Err(VerifyError::Unreachable(format!("smtp {}:{}: the connection closed", self.host, self.port)))
            }
            Err(err) if err.is_permanent() => Err(VerifyError::Refused(self.describe(&err))),
            Err(err) => Err(VerifyError::Unreachable(self.describe(&err))),
        }
    }

    /// The error with host and port, the password scrubbed.
    fn describe(&self, err: &lettre::transport::smtp::Error) -> String {
        let text = format!("smtp {}:{}: {}", self.host, self.port, error_chain(err));
        match &self.password {
            Some(password) => redact(&text, password),
            None => text,
        }
    }

    /// 5xx replies and client-side refusals (no STARTTLS offered, no usable AUTH mechanism) are
    /// permanent until someone changes the configuration or the recipient; 4xx replies,
    /// connection, TLS, timeout and protocol errors may clear up, so they are transient.
    fn classify(&self, err: &lettre::transport::smtp::Error) -> SendError {
        let text = self.describe(err);
        if err.is_permanent() || err.is_client() { SendError::Permanent(text) } else { SendError::Transient(text) }
    }
}

fn to_lettre_address(email: &EmailAddress) -> Result<Address, lettre::address::AddressError> {
    email.as_str().parse()
}

fn tls_parameters(host: &str, ca_file: Option<&Path>) -> Result<TlsParameters, MailerConfigError> {
    let mut builder = TlsParameters::builder(host.to_owned());
    if let Some(path) = ca_file {
        let shown = path.display();
        let pem = std::fs::read(path)
            .map_err(|e| MailerConfigError::SmtpUrl(format!("cannot read tls_ca_file {shown}: {e}")))?;
        let cert = Certificate::from_pem(&pem)
            .map_err(|e| MailerConfigError::SmtpUrl(format!("tls_ca_file {shown} is not a PEM certificate: {e}")))?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build_rustls().map_err(|e| MailerConfigError::SmtpUrl(format!("TLS setup failed: {e}")))
}

/// Parses `SMTP_URL`. Error messages describe the problem but never echo the URL, which holds
/// the password.
fn parse_smtp_url(raw: &str) -> Result<SmtpSettings, MailerConfigError> {
    let invalid = |why: &str| MailerConfigError::SmtpUrl(why.to_owned());
    let url = Url::parse(raw.trim()).map_err(|e| invalid(&format!("not a URL ({e})")))?;

    let mut tls = None;
    let mut ca_file = None;
    for (key, value) in url.query_pairs() {
        let slot = match key.as_ref() {
            "tls" => &mut tls,
            "tls_ca_file" => &mut ca_file,
            _ => {
                return Err(invalid("unknown query option (expected tls or tls_ca_file)"));
            }
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(invalid("query option given twice"));
        }
    }

    let (security, default_port) = match (url.scheme(), tls.as_deref()) {
        ("smtps", None) => (Security::ImplicitTls, 465),
        ("smtps", Some(_)) => return Err(invalid("tls= applies to smtp:// only")),
        ("smtp", None | Some("required")) => (Security::StartTls, 587),
        ("smtp", Some("none")) => (Security::Plaintext, 25),
        ("smtp", Some(_)) => return Err(invalid("tls must be required or none")),
        _ => return Err(invalid("scheme must be smtps:// or smtp://")),
    };
    if security == Security::Plaintext && ca_file.is_some() {
        return Err(invalid("tls_ca_file needs TLS, but tls=none"));
    }
    if !matches!(url.path(), "" | "/") || url.fragment().is_some() {
        return Err(invalid("unexpected path or fragment"));
    }

    // smtp:// is not a scheme the URL standard knows, so hosts stay opaque strings: IPv4
    // literals and case are left as written. Bracketed IPv6 is parsed, and lettre wants it bare.
    let host = match url.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => return Err(invalid("missing host")),
    };

    let credentials = match (url.username(), url.password()) {
        ("", None) => None,
        ("", Some(_)) => return Err(invalid("password given without a user name")),
        (_, None | Some("")) => return Err(invalid("user name given without a password")),
        (user, Some(password)) => Some((
            percent_decode(user).ok_or_else(|| invalid("bad %-escape in the user name"))?,
            SecretString::from(percent_decode(password).ok_or_else(|| invalid("bad %-escape in the password"))?),
        )),
    };
    if security == Security::Plaintext && credentials.is_some() && !is_loopback(&host) {
        return Err(invalid(
            "refusing to send credentials without TLS to a non-loopback host; use smtps:// or smtp:// with STARTTLS",
        ));
    }

    Ok(SmtpSettings {
        host,
        port: url.port().unwrap_or(default_port),
        security,
        credentials,
        ca_file: ca_file.map(PathBuf::from),
    })
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Decodes `%XX` escapes in URL user info. `url` leaves them encoded; a `%` that does not start
/// a valid escape, or bytes that are not UTF-8, make the value invalid (`None`).
pub(crate) fn percent_decode(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> SmtpSettings {
        parse_smtp_url(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn creds(settings: &SmtpSettings) -> Option<(&str, &str)> {
        settings.credentials.as_ref().map(|(u, p)| (u.as_str(), p.expose_secret()))
    }

    #[test]
    fn smtps_is_implicit_tls_on_465() {
        let s = parse("smtps://me%40gmail.com:abcd%20efgh@smtp.gmail.com");
        assert_eq!((s.host.as_str(), s.port), ("smtp.gmail.com", 465));
        assert_eq!(s.security, Security::ImplicitTls);
        assert_eq!(creds(&s), Some(("me@gmail.com", "abcd efgh")));
        assert_eq!(parse("smtps://u:p@smtp.gmail.com:2465").port, 2465);
    }

    #[test]
    fn smtp_requires_starttls_by_default() {
        let s = parse("smtp://u:p%3A%2F%25@smtp.example.com");
        assert_eq!((s.port, s.security), (587, Security::StartTls));
        assert_eq!(creds(&s), Some(("u", "p:/%")));
        let s = parse("smtp://relay.example.com:2525?tls=required");
        assert_eq!((s.port, s.security), (2525, Security::StartTls));
        assert_eq!(creds(&s), None);
    }

    #[test]
    fn plaintext_needs_explicit_opt_out() {
        let s = parse("smtp://127.0.0.1:1025?tls=none");
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 1025));
        assert_eq!(s.security, Security::Plaintext);
        assert_eq!(parse("smtp://mailpit?tls=none").port, 25);
        // Credentials in the clear only to this machine.
        assert!(parse_smtp_url("smtp://u:p@localhost:1025?tls=none").is_ok());
        assert!(parse_smtp_url("smtp://u:p@[::1]:1025?tls=none").is_ok());
        assert_eq!(parse("smtp://u:p@[::1]:1025?tls=none").host, "::1");
        assert!(parse_smtp_url("smtp://u:p@mail.example.com:25?tls=none").is_err());
    }

    #[test]
    fn tls_ca_file_is_read() {
        let s = parse("smtps://h.example?tls_ca_file=/etc/ca%20dir/ca.pem");
        assert_eq!(s.ca_file.as_deref(), Some(Path::new("/etc/ca dir/ca.pem")));
    }

    #[test]
    fn bad_urls_are_rejected_without_echoing_the_password() {
        for bad in [
            "not a url",
            "http://u:hunter22@h.example",
            "smtps://u:hunter22@h.example?tls=none",
            "smtp://u:hunter22@h.example?tls=maybe",
            "smtp://u:hunter22@h.example?tsl=none",
            "smtp://u:hunter22@h.example?tls=none&tls=none",
            "smtp://h.example?tls=none&tls_ca_file=/ca.pem",
            "smtp://u:hunter22@h.example/ehlo",
            "smtp://u@h.example",
            "smtp://:hunter22@h.example",
            "smtp://u:hunter22%zz@h.example",
            "smtp://u:hunter22%ff@h.example",
            "smtps://u:hunter22@:465",
        ] {
            match parse_smtp_url(bad) {
                Ok(_) => panic!("{bad} should be rejected"),
                Err(e) => assert!(!e.to_string().contains("hunter22"), "{e}"),
            }
        }
    }

    #[test]
    fn percent_decode_handles_escapes() {
        assert_eq!(percent_decode("a%40b%2b"), Some("a@b+".to_owned()));
        assert_eq!(percent_decode("%C3%A9"), Some("é".to_owned()));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%+1"), None);
    }

    #[test]
    fn every_accepted_email_is_a_lettre_address() {
        for ok in ["ada@example.com", "o'brien+x@sub.example.ie", "a{b}|c~@x-y.io"] {
            let email = EmailAddress::parse(ok).unwrap();
            assert!(to_lettre_address(&email).is_ok(), "{ok}");
        }
    }
}
