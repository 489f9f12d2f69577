//! The `omi` command line (INTERFACE.md): exit 0 on success, 2 on a usage error, 1 on any
//! other failure with one clear line on stderr.

use crate::config::Config;
use crate::customers::EmailAddress;
use crate::domain::key::{ApiKey, KeyStatus};
use crate::keys;
use crate::server::Server;
use crate::store::{KeyListing, OldKey, Store};
use chrono::Utc;
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "omi", version, about = "The company layer of an AI API business, in one binary")]
struct Cli {
    /// Path to omi.toml (also OMI_CONFIG).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway, webhooks, agents and admin dashboard.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage customer keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print the PostgreSQL schema (the same text as schema.sql).
    Schema,
    /// SQLite: copy the live database to PATH (a new file), consistent while serving, and
    /// check the copy. PostgreSQL: use pg_dump (exit 1, copies nothing).
    Backup { path: PathBuf },
    /// Prepaid credit.
    Credits {
        #[command(subcommand)]
        command: CreditsCommand,
    },
    /// Reports from the books.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Check the configuration and every service it names, one line each; exit 1 on a failure.
    Doctor {
        /// One JSON array of {"check", "status", "message"} instead of lines.
        #[arg(long)]
        json: bool,
        /// Also send one real email to ADDRESS through the configured transport.
        #[arg(long, value_name = "ADDRESS")]
        send_test_email: Option<String>,
        /// Also post a test message to Slack and n8n.
        #[arg(long)]
        notify_test: bool,
    },
    /// The Sentinel's tools.
    Sentinel {
        #[command(subcommand)]
        command: SentinelCommand,
    },
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Revenue, upstream cost and margin per customer and in total.
    Margins {
        /// YYYY-MM; defaults to the current UTC month.
        #[arg(long)]
        month: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: ReportFormat,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReportFormat {
    Table,
    Json,
    Csv,
}

#[derive(Subcommand)]
enum CreditsCommand {
    /// Add prepaid credit to a customer (negative to take it back); prints the new balance.
    Grant {
        #[arg(long)]
        email: String,
        /// USD, e.g. 10 or 2.50 or -1.25.
        #[arg(long, allow_negative_numbers = true)]
        usd: f64,
        /// Why, kept in the ledger.
        #[arg(long)]
        note: Option<String>,
    },
}

#[derive(Subcommand)]
enum SentinelCommand {
    /// Score prompts from stdin, one a line (JSON with a `text` field, or plain text); prints
    /// one JSON verdict a line: {"score", "injection", "rules"}.
    Scan,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it once.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, default_value = crate::DEFAULT_PLAN)]
        plan: String,
        #[arg(long)]
        name: Option<String>,
        /// Refuse the key after this long: 90s, 15m, 12h, 14d (default: the plan's
        /// `trial_days`, else never).
        #[arg(long)]
        expires_in: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id or display prefix.
    Revoke { id_or_prefix: String },
    /// Email the customer a fresh key, replacing this one (the old key stops working).
    Resend { id_or_prefix: String },
    /// Replace a key with a new one (same customer, plan, name and expiry), printed once and
    /// emailed; the old key is refused after the grace period.
    Rotate {
        id_or_prefix: String,
        /// Seconds the old key keeps working (0 to 86400).
        #[arg(long, default_value_t = 0)]
        grace_secs: u32,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("omi: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(execute(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(message)) => {
            eprintln!("omi: {message}");
            ExitCode::from(2)
        }
        Err(CliError::Other(e)) => {
            eprintln!("omi: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn execute(cli: Cli) -> Result<(), CliError> {
    let load = || -> anyhow::Result<Config> {
        let config = Config::load(cli.config.as_deref())?;
        crate::telemetry::init_logging(config.log_format);
        Ok(config)
    };
    match cli.command {
        Command::Schema => print!("{}", crate::store::postgres_schema()),
        Command::Serve => serve(load()?).await?,
        Command::Migrate => {
            let store = open_store(&load()?).await?;
            println!("migrations applied ({})", store.backend());
        }
        Command::Keys { command } => keys_command(&load()?, command).await?,
        Command::Backup { path } => {
            let report = crate::store::backup::backup(load()?.database_url.expose_secret(), &path)
                .await
                .map_err(anyhow::Error::from)?;
            println!(
                "backed up to {} ({} bytes): integrity ok; keys {}, usage records {}",
                report.path.display(),
                report.bytes,
                report.keys,
                report.usage_records
            );
        }
        Command::Report { command: ReportCommand::Margins { month, format } } => {
            let month = month.unwrap_or_else(crate::agents::accountant::report::current_month);
            crate::agents::accountant::report::month_range(&month).map_err(|e| CliError::Usage(e.to_string()))?;
            let config = load()?;
            let store = open_store(&config).await?;
            let report = crate::agents::accountant::report::margins(&store, &config, &month).await?;
            match format {
                ReportFormat::Table => print!("{}", report.to_table()),
                ReportFormat::Csv => print!("{}", report.to_csv()),
                ReportFormat::Json => println!("{}", serde_json::to_string(&report).map_err(anyhow::Error::from)?),
            }
        }
        Command::Credits { command: CreditsCommand::Grant { email, usd, note } } => {
            let email = EmailAddress::parse(&email).map_err(|e| CliError::Usage(e.to_string()))?;
            let amount = crate::config::credit_nano(usd).filter(|nano| *nano != 0).ok_or_else(|| {
                let most = crate::config::MAX_CREDIT_USD;
                CliError::Usage(format!("--usd must be a non-zero amount of at most {most} either way"))
            })?;
            let store = open_store(&load()?).await?;
            let (_, balance) =
                store.grant_credit(email.as_str(), amount, note.as_deref()).await.map_err(anyhow::Error::from)?;
            let balance = crate::billing::prices::nano_to_usd(i128::from(balance));
            println!("credit balance of {}: ${balance:.6}", email.as_str());
        }
        Command::Doctor { json, send_test_email, notify_test } => {
            let send_test_email = send_test_email
                .map(|address| EmailAddress::parse(&address).map_err(|e| CliError::Usage(e.to_string())))
                .transpose()?;
            let options = crate::doctor::Options { send_test_email, notify_test, ..Default::default() };
            // A configuration that does not load is the first failure, reported like any other.
            let checks = match load() {
                Ok(config) => crate::doctor::run(&config, &options).await,
                Err(e) => vec![crate::doctor::Check::fail("configuration", format!("{e:#}"))],
            };
            if json {
                println!("{}", serde_json::to_string(&checks).map_err(anyhow::Error::from)?);
            } else {
                checks.iter().for_each(|check| println!("{check}"));
            }
            if crate::doctor::failed(&checks) {
                let failures = checks.iter().filter(|c| c.status == crate::doctor::Status::Fail).count();
                return Err(anyhow::anyhow!("doctor: {failures} check(s) failed").into());
            }
        }
        // Local rules only: no configuration, database or network needed.
        Command::Sentinel { command: SentinelCommand::Scan } => {
            let stdin = std::io::stdin();
            sentinel_scan(stdin.lock(), std::io::stdout().lock())?
        }
    }
    Ok(())
}

fn sentinel_scan(input: impl std::io::BufRead, mut out: impl std::io::Write) -> anyhow::Result<()> {
    let rules = crate::agents::sentinel::Rules::with_model();
    for (n, line) in input.lines().enumerate() {
        let line = line.map_err(|e| anyhow::anyhow!("reading line {}: {e}", n + 1))?;
        let text = prompt_of_line(&line).map_err(|e| anyhow::anyhow!("line {}: {e}", n + 1))?;
        serde_json::to_writer(&mut out, &rules.scan(&text))?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}

/// A line is a JSON object with a `text` field, or else the prompt itself.
fn prompt_of_line(line: &str) -> Result<String, &'static str> {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(object)) => match object.get("text") {
            Some(serde_json::Value::String(text)) => Ok(text.clone()),
            _ => Err("a JSON object needs a string `text` field"),
        },
        _ => Ok(line.to_owned()),
    }
}

async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let store = Store::connect(config.database_url.expose_secret()).await?;
    store.migrate().await?;
    Ok(store)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let addr = config.listen_addr()?;
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let server = Server::start(config, listener).await?;
    println!("omi listening on http://{}", server.addr);
    shutdown_signal().await;
    tracing::info!("shutdown requested; finishing in-flight requests");
    server.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

async fn keys_command(config: &Config, command: KeysCommand) -> Result<(), CliError> {
    match command {
        KeysCommand::Create { email, plan, name, expires_in, json } => {
            let email = EmailAddress::parse(&email).map_err(|e| CliError::Usage(e.to_string()))?;
            let expires_at = crate::admin::new_key_expiry(config, &plan, None, expires_in.as_deref(), Utc::now())
                .map_err(CliError::Usage)?;
            let store = open_store(config).await?;
            let terms = keys::KeyTerms { max_keys: config.plan(&plan).and_then(|plan| plan.max_keys), expires_at };
            let (key, listing) =
                keys::issue(&store, &email, &plan, name.as_deref(), terms).await.map_err(anyhow::Error::from)?;
            if json {
                let out = serde_json::json!({"id": listing.id, "key": key.expose(), "prefix": listing.prefix, "email": listing.email, "plan": listing.plan});
                println!("{out}");
            } else {
                println!("{}", key.expose());
            }
        }
        KeysCommand::List { json } => {
            let store = open_store(config).await?;
            let keys = store.list_keys().await.map_err(anyhow::Error::from)?;
            if json {
                println!("{}", serde_json::to_string(&keys).map_err(anyhow::Error::from)?);
            } else {
                print_key_table(&keys);
            }
        }
        KeysCommand::Revoke { id_or_prefix } => {
            let store = open_store(config).await?;
            let key = store.resolve_key(&id_or_prefix).await.map_err(anyhow::Error::from)?;
            let key = store.set_key_status(key.id, KeyStatus::Revoked).await.map_err(anyhow::Error::from)?;
            println!("revoked {} ({}, {})", key.id, key.prefix, key.email);
        }
        KeysCommand::Resend { id_or_prefix } => {
            let store = open_store(config).await?;
            let old = store.resolve_key(&id_or_prefix).await.map_err(anyhow::Error::from)?;
            let new_key = ApiKey::generate().map_err(anyhow::Error::from)?;
            let vended =
                store.rotate_key(old.id, &new_key, OldKey::Revoke, None).await.map_err(anyhow::Error::from)?.vended;
            println!(
                "replaced {} with {} ({}); the running server emails it to {}",
                old.prefix, vended.prefix, vended.key_id, vended.email
            );
        }
        KeysCommand::Rotate { id_or_prefix, grace_secs, json } => {
            if grace_secs > keys::MAX_GRACE_SECS {
                return Err(CliError::Usage(format!("--grace-secs must be between 0 and {}", keys::MAX_GRACE_SECS)));
            }
            let store = open_store(config).await?;
            let old = store.resolve_key(&id_or_prefix).await.map_err(anyhow::Error::from)?;
            let old_key = OldKey::ExpiresAt(Utc::now() + chrono::Duration::seconds(i64::from(grace_secs)));
            let rotation = keys::rotate(&store, old.id, old_key, None).await.map_err(anyhow::Error::from)?;
            if json {
                println!("{}", rotation.shown_once());
            } else {
                println!("{}", rotation.key.expose());
            }
        }
    }
    Ok(())
}

fn print_key_table(keys: &[KeyListing]) {
    println!(
        "{:<36}  {:<12}  {:<30}  {:<8}  {:<9}  {:<20}  {:<20}  LAST USED",
        "ID", "PREFIX", "EMAIL", "PLAN", "STATUS", "CREATED", "EXPIRES"
    );
    let time = |t: chrono::DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
    for k in keys {
        println!(
            "{:<36}  {:<12}  {:<30}  {:<8}  {:<9}  {:<20}  {:<20}  {}",
            k.id,
            k.prefix,
            k.email,
            k.plan,
            k.status,
            time(k.created_at),
            k.expires_at.map_or_else(|| "never".into(), time),
            k.last_used_at.map_or_else(|| "never".into(), time)
        );
    }
}
