//! The overview's traffic rollup: requests and 5xx errors per UTC minute (`traffic_minutely`)
//! and hour (`traffic_hourly`) and latency bin, total latency and gateway overhead apart.
//! Usage batches add to it in their own transaction (`Store::insert_usage`), as they add to
//! `usage_daily`, and delete what has aged past [`TRAFFIC_KEPT`]; so the overview's last hour
//! and day are a few thousand rows however many requests they held. Percentiles come from
//! the bins in the dashboard, since SQLite and PostgreSQL share no percentile function.

use super::usage::{MultiRow, UsageRecord};
use super::{Store, StoreResult, with_pool};
use chrono::{DateTime, Duration, Utc};
use std::collections::BTreeMap;

/// How long the rollup keeps a bucket: the overview shows the last 24 hours. The migration
/// that made the tables (0007) backfilled the same span.
pub const TRAFFIC_KEPT: Duration = Duration::days(2);

/// The time bucket of a traffic query, and its rollup table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    Minute,
    Hour,
}

impl Bucket {
    pub(super) const ALL: [Bucket; 2] = [Bucket::Minute, Bucket::Hour];

    pub(super) fn sql(self) -> &'static RollupSql {
        &ROLLUPS[self as usize]
    }

    fn table(self) -> &'static str {
        match self {
            Bucket::Minute => "traffic_minutely",
            Bucket::Hour => "traffic_hourly",
        }
    }

    pub fn seconds(self) -> i64 {
        match self {
            Bucket::Minute => 60,
            Bucket::Hour => 3600,
        }
    }

    /// The bucket holding `at`, as stored: whole minutes (or hours) since the Unix epoch, one
    /// integer that orders and compares alike on both backends.
    pub fn key(self, at: DateTime<Utc>) -> i64 {
        at.timestamp().div_euclid(self.seconds())
    }
}

/// How many requests of one time bucket fell into one latency bin.
/// `series` 0 is total latency, 1 is gateway overhead (latency − upstream time).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TrafficRow {
    pub series: i64,
    /// [`Bucket::key`].
    pub bucket: i64,
    pub bin: i64,
    pub requests: i64,
    pub errors: i64,
}

/// A microsecond value rounded down to two significant digits, encoded as
/// `digits * 100 + leading two digits` (0 for values below 1): at most 10% wide, and about
/// 90 bins a decade. The migration's backfill computes the same number in SQL.
pub fn latency_bin(us: i64) -> i64 {
    if us < 1 {
        return 0;
    }
    let digits = i64::from(us.ilog10()) + 1;
    let lead = if digits <= 2 { us } else { us / 10i64.pow(us.ilog10() - 1) };
    digits * 100 + lead
}

/// The `[low, high)` microseconds a [`latency_bin`] number stands for.
pub fn bin_bounds(bin: i64) -> (f64, f64) {
    let (digits, lead) = (bin / 100, (bin % 100) as f64);
    if digits <= 1 {
        return (lead, lead + 1.0);
    }
    let scale = 10f64.powi(i32::try_from(digits - 2).unwrap_or(0));
    (lead * scale, (lead + 1.0) * scale)
}

/// A batch's contribution to one rollup row.
#[derive(Default)]
pub(super) struct TrafficDelta {
    pub requests: i64,
    pub errors: i64,
}

/// The rollup rows of `bucket` a batch adds to, keyed (bucket, series, bin) and sorted, so
/// every writer locks them in the same order; records older than `since` are left out.
pub(super) fn traffic_deltas(
    records: &[UsageRecord],
    bucket: Bucket,
    since: DateTime<Utc>,
) -> BTreeMap<(i64, i64, i64), TrafficDelta> {
    let mut deltas: BTreeMap<(i64, i64, i64), TrafficDelta> = BTreeMap::new();
    for r in records.iter().filter(|r| r.at >= since) {
        let key = bucket.key(r.at);
        let total = deltas.entry((key, 0, latency_bin(r.latency_us))).or_default();
        total.requests += 1;
        total.errors += i64::from(r.status >= 500);
        if let Some(upstream) = r.upstream_us {
            deltas.entry((key, 1, latency_bin(r.latency_us - upstream))).or_default().requests += 1;
        }
    }
    deltas
}

/// The statements of one rollup table: the overview's read, the batch's multi-row upsert
/// and the deletion of buckets older than a key.
pub(super) struct RollupSql {
    pub select: String,
    pub upsert: MultiRow,
    pub prune: String,
}

/// In [`Bucket::ALL`] order, which is the enum's.
static ROLLUPS: std::sync::LazyLock<[RollupSql; 2]> = std::sync::LazyLock::new(|| {
    Bucket::ALL.map(|bucket| {
        let table = bucket.table();
        RollupSql {
            select: format!(
                "SELECT series, bucket, bin, requests, errors FROM {table} WHERE bucket >= $1 AND bucket <= $2"
            ),
            upsert: MultiRow::new(
                format!("INSERT INTO {table} (bucket, series, bin, requests, errors) VALUES "),
                5,
                format!(
                    " ON CONFLICT (bucket, series, bin) DO UPDATE SET requests = {table}.requests + excluded.requests,
                  errors = {table}.errors + excluded.errors"
                ),
            ),
            prune: format!("DELETE FROM {table} WHERE bucket < $1"),
        }
    })
});

impl Store {
    /// Latency and overhead histograms per `bucket` over the buckets that hold `[from, to]`.
    pub async fn traffic(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        bucket: Bucket,
    ) -> StoreResult<Vec<TrafficRow>> {
        let sql = sqlx::AssertSqlSafe(bucket.sql().select.as_str());
        let (first, last) = (bucket.key(from), bucket.key(to));
        Ok(with_pool!(self, pool => sqlx::query_as(sql).bind(first).bind(last).fetch_all(pool).await)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_cover_their_values() {
        assert_eq!(latency_bin(0), 0);
        assert_eq!(latency_bin(-5), 0, "an upstream time over the total (clock steps) is not negative");
        assert_eq!((latency_bin(7), latency_bin(12_345), latency_bin(999)), (107, 512, 399));
        assert_eq!(bin_bounds(107), (7.0, 8.0));
        assert_eq!(bin_bounds(512), (12_000.0, 13_000.0));
        assert_eq!(bin_bounds(399), (990.0, 1000.0));
        assert_eq!(bin_bounds(0), (0.0, 1.0));
        for us in (1..2_000_000).step_by(997).chain([1, 9, 10, 99, 100, 999_999, 1_000_000, i64::MAX]) {
            let (low, high) = bin_bounds(latency_bin(us));
            assert!(low <= us as f64 && (us as f64) < high, "{us} in [{low}, {high})");
            assert!(high - low <= (low * 0.1).max(1.0), "{us}: at most 10% wide");
        }
    }

    #[test]
    fn each_bucket_has_its_own_table() {
        assert!(Bucket::ALL.iter().all(|b| b.sql().select.contains(b.table())));
    }

    #[test]
    fn keys_count_whole_buckets_since_the_epoch() {
        let at = chrono::DateTime::from_timestamp(1_772_368_496, 0).expect("2026-03-01 12:34:56 UTC");
        assert_eq!((Bucket::Minute.key(at), Bucket::Hour.key(at)), (29_539_474, 492_324));
        assert_eq!(Bucket::Minute.key(at + Duration::seconds(3)), 29_539_474, "12:34:59 is the same minute");
        assert_eq!(Bucket::Minute.key(at + Duration::seconds(4)), 29_539_475, "12:35:00 is the next");
        assert_eq!(Bucket::Hour.key(at), Bucket::Minute.key(at) / 60, "an hour is 60 minutes");
    }
}
