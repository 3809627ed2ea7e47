//! Seller sales analytics in ClickHouse (SPEC §5.5): a fact row per order line and effect,
//! per-seller per-minute rollups, and the sink's progress. `docs/sink-schemas.md` is the
//! analysts' description of the tables, with example queries.
//!
//! # Exactly once without transactions
//!
//! ClickHouse has no multi-statement transactions, so the guarantees come from the rows:
//!
//! - **Facts** are immutable, with deterministic ids (`{order}:{line}:{effect}`). The writer
//!   inserts a batch's facts, then its rollups, then its `as_of` into `sink_progress`. After
//!   a start or a failed write the sink does not know what a half-done write left behind,
//!   so its next write first reads the ids already stored in the batch's time range and
//!   skips them: `sales_facts` holds every fact exactly once. (The table is also a
//!   `ReplacingMergeTree` on the id, a second line of defence.)
//! - **Rollups** are absolute values per (seller, minute), versioned by the batch's `as_of`
//!   in a `ReplacingMergeTree(as_of)`: a replay rewrites a minute with the same values, and
//!   a newer batch supersedes older versions. Read them with `FINAL` (or `argMax(…, as_of)`);
//!   the API does.
//! - Batches at or below the stored `as_of` are skipped.
//!
//! The DDL is the subset both the ClickHouse 18.16 server available here and current
//! servers accept: MergeTree engines with custom partitioning, `DateTime('Asia/Seoul')`,
//! no `DateTime64`, `LowCardinality`, codecs or TTL. The `clickhouse` client speaks HTTP;
//! row validation is off by default because 18.16 does not know
//! `RowBinaryWithNamesAndTypes` ([`ClickHouseSales::connect`] takes the flag).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use shopflow_model::sales::{Bucket, SalesPoint};
use shopflow_model::{Millis, SalesEffect, SalesFact, SalesMinute, ViewBatch, Writers};

use crate::SinkError;

const DDL: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS sales_facts (
        fact_id String,
        order_id UInt64,
        line_no UInt64,
        sku UInt64,
        seller_id UInt64,
        category_id UInt64,
        member_id UInt64,
        effect String,
        qty Int64,
        amount Int64,
        ts UInt64,
        event_time DateTime('Asia/Seoul'),
        as_of UInt64
    ) ENGINE = ReplacingMergeTree(as_of)
    PARTITION BY toYYYYMM(event_time)
    ORDER BY (seller_id, ts, fact_id)",
    "CREATE TABLE IF NOT EXISTS sales_minute (
        seller_id UInt64,
        minute DateTime('Asia/Seoul'),
        minute_ms UInt64,
        orders UInt64,
        units Int64,
        gross Int64,
        refunds Int64,
        net Int64,
        as_of UInt64
    ) ENGINE = ReplacingMergeTree(as_of)
    PARTITION BY toYYYYMM(minute)
    ORDER BY (seller_id, minute_ms)",
    "CREATE TABLE IF NOT EXISTS sink_progress (
        sink String,
        as_of UInt64
    ) ENGINE = ReplacingMergeTree(as_of)
    ORDER BY sink",
];

/// The name of this sink's row in `sink_progress`.
pub const SALES_SINK: &str = "sales";

/// Most rows sent in one `INSERT`.
pub const MAX_ROWS_PER_INSERT: usize = 100_000;

#[derive(Debug, Row, Serialize, Deserialize)]
struct FactRow {
    fact_id: String,
    order_id: u64,
    line_no: u64,
    sku: u64,
    seller_id: u64,
    category_id: u64,
    member_id: u64,
    effect: String,
    qty: i64,
    amount: i64,
    ts: u64,
    event_time: u32,
    as_of: u64,
}

#[derive(Debug, Row, Serialize, Deserialize)]
struct MinuteRow {
    seller_id: u64,
    minute: u32,
    minute_ms: u64,
    orders: u64,
    units: i64,
    gross: i64,
    refunds: i64,
    net: i64,
    as_of: u64,
}

#[derive(Debug, Row, Serialize, Deserialize)]
struct ProgressRow {
    sink: String,
    as_of: u64,
}

/// One bucket of a sales series as ClickHouse returns it.
#[derive(Debug, Row, Serialize, Deserialize)]
struct PointRow {
    start: i64,
    orders: u64,
    units: i64,
    gross: i64,
    refunds: i64,
    net: i64,
}

/// Writes and reads the sales tables of one ClickHouse database.
#[derive(Clone)]
pub struct ClickHouseSales {
    url: String,
    database: String,
    client: Client,
    /// The last write may have left part of a batch behind (or the sink just started): the
    /// next write first learns how far stored facts may reach ([`Self::check_until`]).
    unsure: Arc<AtomicBool>,
    /// Facts with a time at or before this may already be stored without a recorded
    /// `as_of` (a run died, or a write failed, after inserting them): the largest `as_of`
    /// any stored fact was written with. Facts up to it are checked against the stored
    /// ids before inserting; 0 when there is nothing to check.
    check_until: Arc<AtomicU64>,
    /// This writer among the cluster's: its progress row.
    writers: Writers,
}

impl std::fmt::Debug for ClickHouseSales {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseSales")
            .field("url", &self.url)
            .field("database", &self.database)
            .finish()
    }
}

fn ch_error(url: &str, what: impl Into<String>, source: clickhouse::error::Error) -> SinkError {
    SinkError::ClickHouse {
        url: url.to_string(),
        what: what.into(),
        source: Box::new(source),
    }
}

impl ClickHouseSales {
    /// Connects to the HTTP interface at `url` (e.g. `http://127.0.0.1:8123`), creates
    /// `database` and the tables if missing. `validation` turns on the client's row
    /// validation (needs a server newer than 18.16).
    pub async fn connect(url: &str, database: &str, validation: bool) -> Result<Self, SinkError> {
        if database.is_empty()
            || !database
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(SinkError::Config(format!(
                "ClickHouse database name {database:?}: use letters, digits and _"
            )));
        }
        let root = Client::default().with_url(url).with_validation(validation);
        root.query(&format!("CREATE DATABASE IF NOT EXISTS {database}"))
            .execute()
            .await
            .map_err(|e| ch_error(url, format!("creating database {database}"), e))?;
        let client = root.with_database(database);
        for ddl in DDL {
            client
                .query(ddl)
                .execute()
                .await
                .map_err(|e| ch_error(url, "creating the sales tables", e))?;
        }
        Ok(ClickHouseSales {
            url: url.to_string(),
            database: database.to_string(),
            client,
            unsure: Arc::new(AtomicBool::new(true)),
            check_until: Arc::new(AtomicU64::new(0)),
            writers: Writers::ONE,
        })
    }

    /// Drops `database` (tests clean up with it).
    pub async fn drop_database(url: &str, database: &str) -> Result<(), SinkError> {
        Client::default()
            .with_url(url)
            .query(&format!("DROP DATABASE IF EXISTS {database}"))
            .execute()
            .await
            .map_err(|e| ch_error(url, format!("dropping database {database}"), e))
    }

    fn err(&self, what: &str, e: clickhouse::error::Error) -> SinkError {
        ch_error(&self.url, what, e)
    }

    /// The same store as the writer `writers` among several: its own progress row; reads
    /// answer as of the smallest of the writers' (see [`shopflow_model::writers`]).
    pub fn with_writers(mut self, writers: Writers) -> Self {
        self.writers = writers;
        self
    }

    /// The `as_of` every sales row is at least as new as: the smallest of the writers' (0
    /// for one that has written nothing yet); `None` if no batch was written.
    pub async fn as_of(&self) -> Result<Option<Millis>, SinkError> {
        let mut stored = Vec::with_capacity(self.writers.processes);
        for record in self.writers.records(SALES_SINK) {
            stored.push(self.as_of_of(&record).await?);
        }
        Ok(Writers::smallest(stored))
    }

    /// The `as_of` of the last batch this writer wrote, if any.
    pub async fn written_as_of(&self) -> Result<Option<Millis>, SinkError> {
        self.as_of_of(&self.writers.record(SALES_SINK)).await
    }

    /// The `as_of` in progress row `record`, if it has one.
    async fn as_of_of(&self, record: &str) -> Result<Option<Millis>, SinkError> {
        let (n, as_of): (u64, u64) = self
            .client
            .query("SELECT count(), max(as_of) FROM sink_progress WHERE sink = ?")
            .bind(record)
            .fetch_one()
            .await
            .map_err(|e| self.err("reading sink_progress", e))?;
        Ok((n > 0).then_some(as_of))
    }

    /// Writes a batch's facts, rollups and `as_of`; returns `false` if ClickHouse already
    /// held an `as_of` ≥ the batch's (a replay, skipped).
    pub async fn write(&self, batch: &ViewBatch) -> Result<bool, SinkError> {
        let result = self.try_write(batch).await;
        if result.is_err() {
            // Part of the batch may be stored: relearn how far stored facts reach.
            self.unsure.store(true, Ordering::SeqCst);
        }
        result
    }

    async fn try_write(&self, batch: &ViewBatch) -> Result<bool, SinkError> {
        if self
            .written_as_of()
            .await?
            .is_some_and(|a| a >= batch.as_of)
        {
            return Ok(false);
        }
        if self.unsure.load(Ordering::SeqCst) {
            // A batch is written as facts, rollups, then `as_of`; a run that died (or a
            // write that failed) in between left facts up to its batch's `as_of` behind,
            // and a restart's batches need not line up with the dead run's.
            let (n, reach): (u64, u64) = self
                .client
                .query("SELECT count(), max(as_of) FROM sales_facts")
                .fetch_one()
                .await
                .map_err(|e| self.err("reading how far stored facts reach", e))?;
            self.check_until
                .store(if n > 0 { reach } else { 0 }, Ordering::SeqCst);
            self.unsure.store(false, Ordering::SeqCst);
        }
        let check_until = self.check_until.load(Ordering::SeqCst);
        let mut facts: Vec<&SalesFact> = batch.sales_facts.iter().collect();
        let lo = facts.iter().map(|f| f.ts).min().unwrap_or(0);
        if check_until > 0 && !facts.is_empty() && lo <= check_until {
            let hi = facts
                .iter()
                .map(|f| f.ts)
                .max()
                .unwrap_or(0)
                .min(check_until);
            let stored: Vec<String> = self
                .client
                .query("SELECT fact_id FROM sales_facts WHERE ts >= ? AND ts <= ?")
                .bind(lo)
                .bind(hi)
                .fetch_all()
                .await
                .map_err(|e| self.err("reading stored fact ids", e))?;
            let stored: std::collections::HashSet<String> = stored.into_iter().collect();
            facts.retain(|f| !stored.contains(&f.id));
        }
        for chunk in facts.chunks(MAX_ROWS_PER_INSERT) {
            let mut insert = self
                .client
                .insert::<FactRow>("sales_facts")
                .await
                .map_err(|e| self.err("inserting facts", e))?;
            for f in chunk {
                let row = FactRow {
                    fact_id: f.id.clone(),
                    order_id: f.order_id,
                    line_no: f.line_no,
                    sku: f.sku,
                    seller_id: f.seller_id,
                    category_id: f.category_id,
                    member_id: f.member_id,
                    effect: f.effect.as_str().to_string(),
                    qty: f.qty,
                    amount: f.amount,
                    ts: f.ts,
                    event_time: (f.ts / 1000).min(u32::MAX as u64) as u32,
                    as_of: batch.as_of,
                };
                insert
                    .write(&row)
                    .await
                    .map_err(|e| self.err("inserting facts", e))?;
            }
            insert
                .end()
                .await
                .map_err(|e| self.err("inserting facts", e))?;
        }
        for chunk in batch.sales_minutes.chunks(MAX_ROWS_PER_INSERT) {
            let mut insert = self
                .client
                .insert::<MinuteRow>("sales_minute")
                .await
                .map_err(|e| self.err("inserting rollups", e))?;
            for m in chunk {
                let row = MinuteRow {
                    seller_id: m.seller_id,
                    minute: (m.minute / 1000).min(u32::MAX as u64) as u32,
                    minute_ms: m.minute,
                    orders: m.orders,
                    units: m.units,
                    gross: m.gross,
                    refunds: m.refunds,
                    net: m.net,
                    as_of: batch.as_of,
                };
                insert
                    .write(&row)
                    .await
                    .map_err(|e| self.err("inserting rollups", e))?;
            }
            insert
                .end()
                .await
                .map_err(|e| self.err("inserting rollups", e))?;
        }
        let mut insert = self
            .client
            .insert::<ProgressRow>("sink_progress")
            .await
            .map_err(|e| self.err("storing progress", e))?;
        insert
            .write(&ProgressRow {
                sink: self.writers.record(SALES_SINK),
                as_of: batch.as_of,
            })
            .await
            .map_err(|e| self.err("storing progress", e))?;
        insert
            .end()
            .await
            .map_err(|e| self.err("storing progress", e))?;
        if batch.as_of >= check_until {
            // Later batches only hold facts after this `as_of`: none can be stored yet.
            self.check_until.store(0, Ordering::SeqCst);
        }
        Ok(true)
    }

    /// A seller's sales in [from, to) (minutes starting in the range), grouped by `bucket`.
    pub async fn sales(
        &self,
        seller_id: u64,
        from: Millis,
        to: Millis,
        bucket: Bucket,
    ) -> Result<Vec<SalesPoint>, SinkError> {
        let (offset, size) = bucket.offset_size();
        let rows = self
            .client
            .query(
                "SELECT intDiv(toInt64(minute_ms) + ?, ?) * ? - ? AS start,
                        sum(orders) AS orders, sum(units) AS units, sum(gross) AS gross,
                        sum(refunds) AS refunds, sum(net) AS net
                 FROM sales_minute FINAL
                 WHERE seller_id = ? AND minute_ms >= ? AND minute_ms < ?
                 GROUP BY start ORDER BY start",
            )
            .bind(offset)
            .bind(size)
            .bind(size)
            .bind(offset)
            .bind(seller_id)
            .bind(from)
            .bind(to)
            .fetch_all::<PointRow>()
            .await
            .map_err(|e| self.err("reading sales", e))?;
        Ok(rows
            .into_iter()
            .map(|r| SalesPoint {
                start: r.start,
                orders: r.orders,
                units: r.units,
                gross: r.gross,
                refunds: r.refunds,
                net: r.net,
            })
            .collect())
    }

    /// Every fact (for tests and audits), deduplicated with `FINAL`.
    pub async fn all_facts(&self) -> Result<Vec<SalesFact>, SinkError> {
        let rows: Vec<FactRow> = self
            .client
            .query(
                "SELECT fact_id, order_id, line_no, sku, seller_id, category_id, member_id,
                        effect, qty, amount, ts, toUInt32(event_time) AS event_time, as_of
                 FROM sales_facts FINAL",
            )
            .fetch_all()
            .await
            .map_err(|e| self.err("reading facts", e))?;
        rows.into_iter()
            .map(|r| {
                let effect = parse_effect(&r.effect).ok_or_else(|| {
                    SinkError::Config(format!("fact {}: unknown effect {:?}", r.fact_id, r.effect))
                })?;
                Ok(SalesFact {
                    id: r.fact_id,
                    order_id: r.order_id,
                    line_no: r.line_no,
                    sku: r.sku,
                    seller_id: r.seller_id,
                    category_id: r.category_id,
                    member_id: r.member_id,
                    effect,
                    qty: r.qty,
                    amount: r.amount,
                    ts: r.ts,
                })
            })
            .collect()
    }

    /// How many fact rows are stored physically (without `FINAL`): equal to
    /// `all_facts().len()` when no fact was written twice.
    pub async fn stored_fact_rows(&self) -> Result<u64, SinkError> {
        self.client
            .query("SELECT count() FROM sales_facts")
            .fetch_one()
            .await
            .map_err(|e| self.err("counting facts", e))
    }

    /// Every minute rollup, latest version (for tests and audits).
    pub async fn all_minutes(&self) -> Result<Vec<SalesMinute>, SinkError> {
        let rows: Vec<MinuteRow> = self
            .client
            .query(
                "SELECT seller_id, toUInt32(minute) AS minute, minute_ms, orders, units, gross,
                        refunds, net, as_of
                 FROM sales_minute FINAL",
            )
            .fetch_all()
            .await
            .map_err(|e| self.err("reading rollups", e))?;
        Ok(rows
            .into_iter()
            .map(|r| SalesMinute {
                seller_id: r.seller_id,
                minute: r.minute_ms,
                orders: r.orders,
                units: r.units,
                gross: r.gross,
                refunds: r.refunds,
                net: r.net,
            })
            .collect())
    }
}

fn parse_effect(s: &str) -> Option<SalesEffect> {
    [
        SalesEffect::Placed,
        SalesEffect::Paid,
        SalesEffect::Cancelled,
        SalesEffect::Shipped,
        SalesEffect::Delivered,
        SalesEffect::Confirmed,
        SalesEffect::Refunded,
    ]
    .into_iter()
    .find(|e| e.as_str() == s)
}
