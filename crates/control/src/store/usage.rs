//! Usage metering: relays' reports, applied once each, summed per app, day, mode and tier.
//!
//! A report carries an id chosen by the relay (`<relay>-<boot>-<sequence>`). Applying it
//! records the id and adds its records in one transaction, so a report retried after a lost
//! response, or sent to a second control-plane process, counts once.

use super::{parse_wire, with_pool, with_tx, Store, UsageDay, UsageReport};
use crate::error::StoreError;
use crate::model::QualityTier;

/// The stored spelling of an optional tier.
pub(crate) fn quality_str(q: Option<QualityTier>) -> &'static str {
    q.map_or("none", QualityTier::as_str)
}

/// Adds (seconds, bytes, peak) to a day's row inside an open transaction of either backend
/// (a macro, so each `with_tx!` copy is checked against its own driver).
macro_rules! add_usage_impl {
    ($tx:expr, $pg:expr, $app:expr, $day:expr, $mode:expr, $quality:expr, $v:expr) => {{
        let (seconds, bytes, peak): (i64, i64, i64) = $v;
        // The sums saturate at i64::MAX (see `crate::limits`): SQLite would turn an
        // overflowing `+` into a REAL, PostgreSQL would fail the report for good.
        let q = concat!(
            "INSERT INTO usage_daily (app_id, day, mode, quality, seconds, bytes, ",
            "peak_concurrency) VALUES ($1, $2, $3, $4, $5, $6, $7) ",
            "ON CONFLICT (app_id, day, mode, quality) DO UPDATE SET seconds = ",
            $crate::limits::saturating_add_sql!("usage_daily.seconds", "excluded.seconds"),
            ", bytes = ",
            $crate::limits::saturating_add_sql!("usage_daily.bytes", "excluded.bytes"),
            // The larger of the two, in words both backends know (GREATEST vs MAX).
            ", peak_concurrency = CASE WHEN excluded.peak_concurrency > ",
            "usage_daily.peak_concurrency THEN excluded.peak_concurrency ",
            "ELSE usage_daily.peak_concurrency END"
        );
        let _one_text_for_both_backends = $pg;
        sqlx::query(q)
            .bind($app)
            .bind($day)
            .bind($mode.as_str())
            .bind($crate::store::usage::quality_str($quality))
            .bind(seconds)
            .bind(bytes)
            .bind(peak)
            .execute(&mut *$tx)
            .await
            .map(|_| ())
    }};
}

pub(crate) use add_usage_impl as add_usage;

impl Store {
    /// Applies a report once. `Ok(false)`: its id was seen before, nothing changed.
    pub async fn apply_usage(&self, report: &UsageReport, now: i64) -> Result<bool, StoreError> {
        let applied = with_tx!(self, |tx, pg| {
            let fresh = sqlx::query(
                "INSERT INTO usage_reports (report_id, relay_id, received_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (report_id) DO NOTHING",
            )
            .bind(&report.report_id)
            .bind(&report.relay_id)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if fresh {
                for r in &report.records {
                    let v = (r.seconds as i64, r.bytes as i64, r.peak_concurrency as i64);
                    add_usage!(tx, pg, &r.app_id, &r.day, r.mode, r.quality, v)?;
                }
            }
            fresh
        });
        Ok(applied)
    }

    /// An app's per-day usage between two days (inclusive), oldest first.
    pub async fn usage(
        &self,
        app_id: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<UsageDay>, StoreError> {
        let q = "SELECT day, mode, quality, seconds, bytes, peak_concurrency FROM usage_daily \
                 WHERE app_id = $1 AND day >= $2 AND day <= $3 ORDER BY day, mode, quality";
        let rows: Vec<(String, String, String, i64, i64, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(q)
                .bind(app_id)
                .bind(from)
                .bind(to)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|(day, mode, quality, seconds, bytes, peak)| {
                Ok(UsageDay {
                    day,
                    mode: parse_wire("usage mode", &mode)?,
                    quality: match quality.as_str() {
                        "none" => None,
                        q => Some(parse_wire("quality", q)?),
                    },
                    seconds: seconds.max(0) as u64,
                    minutes: seconds.max(0) as f64 / 60.0,
                    bytes: bytes.max(0) as u64,
                    peak_concurrency: peak.max(0) as u64,
                })
            })
            .collect()
    }
}
