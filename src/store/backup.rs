//! `omi backup PATH`: a consistent copy of the live SQLite database while instances serve it.
//! `VACUUM INTO` reads one snapshot in a read transaction (WAL: the serving writers go on) and
//! writes a compact copy; the copy is then opened on its own and checked (`integrity_check`,
//! its keys and usage records counted) before it is called a backup. PostgreSQL is copied with
//! `pg_dump`, which `omi backup` names instead of copying anything.

use super::{DatabaseUrl, StoreError, sqlite_options};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use std::path::{Path, PathBuf};

/// What the check of a fresh copy found.
#[derive(Debug)]
pub struct BackupReport {
    pub path: PathBuf,
    pub bytes: u64,
    pub keys: i64,
    pub usage_records: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "PostgreSQL is backed up with pg_dump, not omi backup: pg_dump --format=custom --file=omi.dump \"$DATABASE_URL\" \
         (restore: pg_restore --clean --if-exists --no-owner --dbname \"$DATABASE_URL\" omi.dump)"
    )]
    Postgres,
    #[error("{} already exists; omi backup never overwrites a file (choose a new path)", .0.display())]
    Exists(PathBuf),
    #[error("{} is not a directory; create it first", .0.display())]
    NoDirectory(PathBuf),
    #[error("the backup path must be valid UTF-8")]
    NotUtf8,
    #[error("the database file {0} does not exist (check DATABASE_URL)")]
    NoDatabase(String),
    #[error("the copy failed its check and was removed: {0}")]
    Check(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("writing the copy: {0}")]
    Io(#[from] std::io::Error),
}

impl From<sqlx::Error> for BackupError {
    fn from(e: sqlx::Error) -> Self {
        BackupError::Store(StoreError::Database(e))
    }
}

/// Copies the database `database_url` names to `path`, which must not exist yet.
pub async fn backup(database_url: &str, path: &Path) -> Result<BackupReport, BackupError> {
    let source = match DatabaseUrl::parse(database_url)? {
        DatabaseUrl::Postgres => return Err(BackupError::Postgres),
        DatabaseUrl::Sqlite(source) => source,
    };
    if tokio::fs::symlink_metadata(path).await.is_ok() {
        return Err(BackupError::Exists(path.to_path_buf()));
    }
    let directory = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !tokio::fs::metadata(directory).await.is_ok_and(|m| m.is_dir()) {
        return Err(BackupError::NoDirectory(directory.to_path_buf()));
    }
    let target = path.to_str().ok_or(BackupError::NotUtf8)?;
    // Never create an empty database where the operator expected theirs.
    if !tokio::fs::try_exists(source).await? {
        return Err(BackupError::NoDatabase(source.to_owned()));
    }
    let copied = copy_and_check(source, target).await;
    if copied.is_err() {
        // Only what this call created: `path` did not exist before it.
        let _ = tokio::fs::remove_file(path).await;
    }
    copied.map(|(keys, usage_records, bytes)| BackupReport { path: path.to_path_buf(), bytes, keys, usage_records })
}

async fn copy_and_check(source: &str, target: &str) -> Result<(i64, i64, u64), BackupError> {
    let mut live = sqlite_options(source).connect().await?;
    sqlx::query("VACUUM INTO $1").bind(target).execute(&mut live).await?;
    live.close().await?;

    // The copy on its own, as one self-contained file (no -wal beside it).
    let mut copy = SqliteConnectOptions::new()
        .filename(target)
        .journal_mode(SqliteJournalMode::Delete)
        .connect()
        .await
        .map_err(|e| BackupError::Check(format!("cannot open the copy: {e}")))?;
    let problems = integrity_problems(&mut copy).await?;
    if !problems.is_empty() {
        return Err(BackupError::Check(format!("integrity_check: {}", problems.join("; "))));
    }
    let keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys").fetch_one(&mut copy).await?;
    let usage_records: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_records").fetch_one(&mut copy).await?;
    copy.close().await?;

    // VACUUM INTO does not sync the file it writes; a backup must survive a power cut.
    let file = tokio::fs::File::open(target).await?;
    file.sync_all().await?;
    Ok((keys, usage_records, file.metadata().await?.len()))
}

/// `PRAGMA integrity_check`'s findings (it answers one row, `ok`, when there are none).
async fn integrity_problems(copy: &mut SqliteConnection) -> Result<Vec<String>, BackupError> {
    let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check(20)").fetch_all(copy).await?;
    Ok(rows.into_iter().filter(|row| row != "ok").collect())
}
