//! The usage writer's own SQLite connection, whose thread runs at idle scheduling priority
//! (issue 18, bench/README.md "The c=1 tail is the usage writer").
//!
//! Booking usage costs SQLite about 18k instructions a record on the connection's thread
//! (sqlx starts one per connection). At normal priority that thread took the CPU that
//! requests' wake-ups needed: at c=1 a p99 of 448-528 µs with the writer, 232-268 µs without.
//! On this lane the thread is SCHED_IDLE, which any waking thread preempts: the books are
//! written with the CPU that requests leave.
//!
//! sqlx owns its connection threads; the only code of ours that runs on one is SQLite's
//! progress handler, so that is where the thread lowers itself, on the handler's first call.
//!
//! On a saturated machine an idle-class thread gets almost no CPU while it holds SQLite's one
//! write lock. So every write has a time budget: once it has passed, the progress handler
//! interrupts the statement, SQLite rolls the transaction back, and the caller writes the same
//! records on the normal pool ([`LaneError::OutOfTime`]): nothing is lost or booked twice. The
//! interrupted connection is closed rather than reused: SQLite has already rolled back, which
//! sqlx's transaction bookkeeping does not know.

use super::{Store, StoreError, UsageRecord};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

/// SQLite virtual-machine steps between two calls of the progress handler: microseconds of
/// work, so a budget is kept to within that, and the clock read stays cheap beside it.
const PROGRESS_STEPS: i32 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum LaneError {
    /// The write was interrupted and rolled back; write the records elsewhere.
    #[error("the idle lane's write ran past its {0:?} budget and was rolled back")]
    OutOfTime(Duration),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A one-connection pool on the store's SQLite file, for writes nobody waits for.
pub struct IdleLane {
    options: SqliteConnectOptions,
    deadline: Arc<Deadline>,
    pool: SqlitePool,
}

impl Store {
    /// The idle lane on this store's SQLite file; `None` on PostgreSQL (the server does the
    /// work in its own processes, not on our threads) and off Linux.
    pub fn idle_lane(&self) -> Option<IdleLane> {
        let Store::Sqlite(pool) = self else { return None };
        if !cfg!(target_os = "linux") {
            return None;
        }
        let options = (*pool.connect_options()).clone().thread_name(|n| format!("omi-idle-lane-{n}"));
        let deadline = Arc::new(Deadline::default());
        let pool = open(&options, &deadline);
        Some(IdleLane { options, deadline, pool })
    }
}

impl IdleLane {
    /// Writes the records as [`Store::insert_usage`] does, giving up after `budget`.
    pub async fn insert_usage(&mut self, records: &[UsageRecord], budget: Duration) -> Result<(), LaneError> {
        let started = Instant::now();
        let result = {
            let _armed = self.deadline.arm(budget);
            Store::Sqlite(self.pool.clone()).insert_usage(records).await
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if interrupted(&e) => {
                let gave_up_after = started.elapsed();
                self.pool.close().await;
                self.pool = open(&self.options, &self.deadline);
                tracing::info!(?budget, ?gave_up_after, closed_after = ?started.elapsed(), records = records.len(),
                    "the idle lane ran out of time; its batch was rolled back");
                Err(LaneError::OutOfTime(budget))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The lane's pool, connecting on first use; each connection's progress handler lowers its
/// thread and enforces the deadline.
fn open(options: &SqliteConnectOptions, deadline: &Arc<Deadline>) -> SqlitePool {
    let deadline = deadline.clone();
    SqlitePoolOptions::new()
        .max_connections(1)
        .after_connect(move |conn, _| {
            let deadline = deadline.clone();
            Box::pin(async move {
                let mut lowered = false;
                conn.lock_handle().await?.set_progress_handler(PROGRESS_STEPS, move || {
                    if !lowered {
                        lowered = true;
                        run_this_thread_when_idle();
                    }
                    !deadline.passed()
                });
                Ok(())
            })
        })
        .connect_lazy_with(options.clone())
}

/// SQLITE_INTERRUPT: the progress handler stopped the statement.
fn interrupted(e: &StoreError) -> bool {
    matches!(e, StoreError::Database(sqlx::Error::Database(db)) if db.code().as_deref() == Some("9"))
}

/// Puts the calling thread in the SCHED_IDLE class. Always allowed (lowering needs no
/// privilege); if it fails anyway the lane still works, at normal priority.
fn run_this_thread_when_idle() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy, thread_native_id,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        if let Err(e) = set_thread_priority_and_policy(thread_native_id(), thread_priority::ThreadPriority::Min, idle) {
            tracing::warn!(error = ?e, "the usage writer's thread stays at normal priority");
        }
    }
}

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// When the running write must give up, in nanoseconds since `EPOCH`; `u64::MAX` when no
/// write is running (the pool's own statements are never interrupted).
struct Deadline(AtomicU64);

impl Default for Deadline {
    fn default() -> Deadline {
        Deadline(AtomicU64::new(u64::MAX))
    }
}

impl Deadline {
    fn now() -> u64 {
        u64::try_from(EPOCH.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
    }

    fn arm(&self, budget: Duration) -> Armed<'_> {
        let budget = u64::try_from(budget.as_nanos()).unwrap_or(u64::MAX);
        self.0.store(Deadline::now().saturating_add(budget).min(u64::MAX - 1), Ordering::Relaxed);
        Armed(self)
    }

    fn passed(&self) -> bool {
        Deadline::now() >= self.0.load(Ordering::Relaxed)
    }
}

/// Disarms the deadline when the write ends, however it ends (a cancelled future too).
struct Armed<'a>(&'a Deadline);

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.0.0.store(u64::MAX, Ordering::Relaxed);
    }
}
