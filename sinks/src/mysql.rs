//! The exact ledgers in MySQL (or MariaDB): points entries, settlement entries, weekly
//! payouts, monthly tax invoices, and copies of the member grades and known sellers
//! (SPEC §5.2, §5.3). The schema is `sinks/migrations/`, embedded in the binary and applied
//! by [`MysqlLedger::connect`]; `docs/sink-schemas.md` describes every table.
//!
//! # One batch, one transaction
//!
//! [`MysqlLedger::write`] applies a [`ViewBatch`] in one InnoDB transaction:
//!
//! 1. `SELECT as_of FROM sink_progress WHERE sink = 'ledger' FOR UPDATE` — the row lock
//!    serializes writers; if the stored `as_of` is ≥ the batch's, the batch is a replay:
//!    roll back and return `Ok(false)`.
//! 2. Insert the new points and settlement entries (multi-row `INSERT … ON DUPLICATE KEY
//!    UPDATE id = id`, [`MAX_ROWS_PER_INSERT`] rows a statement), so an entry that is
//!    already there is left as it is.
//! 3. Upsert payouts, tax invoices, members and sellers with their absolute values.
//! 4. Mark every payout and invoice whose period ended at or before `as_of` final (SPEC §8:
//!    a period is final when T ≥ the start of the next one).
//! 5. Store the batch's `as_of` in `sink_progress` and commit.
//!
//! # Why every entry lands exactly once
//!
//! - Entries are immutable and append-only, with deterministic ids (`{order}:confirmed`,
//!   `{order}:{line}:refund:{n}`, …): a replayed entry hits its primary key and is a
//!   no-op, so an entry can be written any number of times and is stored once.
//! - Aggregates (payouts, invoices, members) are written as absolute values, not
//!   increments: writing the same row twice leaves the same row.
//! - Batches at or below the stored `as_of` are skipped as a whole, and the stored `as_of`
//!   moves in the same transaction as the rows, so the database never holds rows of a
//!   batch without its `as_of` or the other way round: a crash before the commit leaves
//!   nothing of the batch, and after it the replayed batch is skipped.
//!
//! Skipping an *equal* `as_of` is safe because the pipeline's batches are as of its
//! frontier: a batch at T holds every change with time ≤ T, so a second batch at the same T
//! has nothing new.
//!
//! Amounts summed over entries are `i128` and stored as `DECIMAL(39,0)`: they are bound as
//! decimal strings and read back with `CAST(… AS CHAR)`, so no decimal crate is needed and
//! nothing is rounded.
//!
//! The client is sqlx without TLS: connect over loopback or a private network (or add a TLS
//! feature of sqlx). MySQL 8 accounts using `caching_sha2_password` need TLS or sqlx's
//! `mysql-rsa` feature for their first login over plain TCP; MariaDB's default
//! `mysql_native_password` needs neither.

use std::str::FromStr;
use std::time::Duration;

use shopflow_model::time::{kst_date, kst_month, kst_next_month_start, kst_next_week_start};
use shopflow_model::{
    EntryCause, Grade, MemberView, Millis, Payout, PointsEntry, SettlementEntry, TaxInvoice,
    ViewBatch,
};
use sqlx::mysql::{
    MySql, MySqlConnectOptions, MySqlConnection, MySqlDatabaseError, MySqlPool, MySqlPoolOptions,
    MySqlRow,
};
use sqlx::query_builder::Separated;
use sqlx::{Connection as _, QueryBuilder, Row as _};

use shopflow_model::Writers;

use crate::SinkError;

/// The `sink_progress.sink` of the ledger writer.
pub const LEDGER_SINK: &str = "ledger";

/// Most rows in one multi-row `INSERT` (each row binds at most 15 values; MySQL allows
/// 65,535 per statement).
pub const MAX_ROWS_PER_INSERT: usize = 500;

/// Connections in the pool.
pub const POOL_SIZE: u32 = 4;

/// How long to wait for the database to answer a new connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Reads and writes shopflow's ledgers in one MySQL or MariaDB database.
#[derive(Clone)]
pub struct MysqlLedger {
    /// The URL without its password, for messages.
    url: String,
    pool: MySqlPool,
    /// This writer among the cluster's: its progress row, and the sellers whose payouts
    /// and invoices it finalizes.
    writers: Writers,
}

impl std::fmt::Debug for MysqlLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlLedger")
            .field("url", &self.url)
            .finish()
    }
}

/// `url` without the password of its user info, e.g. `mysql://shopflow@127.0.0.1/shopflow`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let user = authority[..at].split(':').next().unwrap_or("");
            format!(
                "{}{}@{}{}",
                &url[..scheme_end],
                user,
                &authority[at + 1..],
                &rest[authority_end..]
            )
        }
        None => url.to_string(),
    }
}

/// `url` with its database (the path) replaced by `database`, keeping any `?options`.
pub fn url_with_database(url: &str, database: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let tail = &rest[authority_end..];
    let query = tail.find('?').map_or("", |q| &tail[q..]);
    format!(
        "{}{}/{database}{query}",
        &url[..scheme_end],
        &rest[..authority_end]
    )
}

/// True for the errors of a database that is down, unreachable or refuses the login.
fn is_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Configuration(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            // 1044/1045: access denied; 1049: unknown database.
            .is_some_and(|m| matches!(m.number(), 1044 | 1045 | 1049)),
        _ => false,
    }
}

fn mysql_error(url: &str, what: impl Into<String>, source: sqlx::Error) -> SinkError {
    SinkError::Mysql {
        url: url.to_string(),
        what: what.into(),
        unreachable: is_unreachable(&source),
        source: Box::new(source),
    }
}

/// A database name that is safe to put in SQL unquoted: `[A-Za-z0-9_]{1,64}`.
fn check_database_name(url: &str, name: &str) -> Result<(), SinkError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(mysql_error(
            url,
            format!("database name {name:?}"),
            sqlx::Error::InvalidArgument(
                "a database name here is 1 to 64 of A-Z, a-z, 0-9 and _".to_string(),
            ),
        ))
    }
}

/// One connection to `url` (an error if the database does not answer in time).
async fn connect_once(url: &str) -> Result<MySqlConnection, SinkError> {
    let shown = redact_url(url);
    let options = MySqlConnectOptions::from_str(url)
        .map_err(|e| mysql_error(&shown, "parsing the URL", e))?;
    match tokio::time::timeout(CONNECT_TIMEOUT, MySqlConnection::connect_with(&options)).await {
        Ok(conn) => conn.map_err(|e| mysql_error(&shown, "connecting", e)),
        Err(_) => Err(mysql_error(
            &shown,
            "connecting",
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            )),
        )),
    }
}

fn cause_from_str(s: &str) -> Result<EntryCause, sqlx::Error> {
    match s {
        "confirmed" => Ok(EntryCause::Confirmed),
        "refund" => Ok(EntryCause::Refund),
        other => Err(sqlx::Error::Decode(
            format!("unknown entry cause {other:?}").into(),
        )),
    }
}

fn grade_from_str(s: &str) -> Result<Grade, sqlx::Error> {
    [Grade::Bronze, Grade::Silver, Grade::Gold, Grade::Vip]
        .into_iter()
        .find(|g| g.as_str() == s)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown grade {s:?}").into()))
}

/// A `DECIMAL` column selected as `CAST(col AS CHAR) AS col`, as an integer type that
/// holds it (`i128` for sums of entries).
fn get_decimal<T>(row: &MySqlRow, col: &str) -> Result<T, sqlx::Error>
where
    T: TryFrom<i128>,
    T::Error: std::error::Error + Send + Sync + 'static,
{
    let text: String = row.try_get(col)?;
    let bad = |source: Box<dyn std::error::Error + Send + Sync>| sqlx::Error::ColumnDecode {
        index: col.to_string(),
        source,
    };
    let value: i128 = text.parse().map_err(|e| bad(Box::new(e)))?;
    T::try_from(value).map_err(|e| bad(Box::new(e)))
}

/// A signed `INT` column as a `u32` (rates in basis points).
fn get_u32(row: &MySqlRow, col: &str) -> Result<u32, sqlx::Error> {
    let v: i32 = row.try_get(col)?;
    u32::try_from(v).map_err(|e| sqlx::Error::ColumnDecode {
        index: col.to_string(),
        source: Box::new(e),
    })
}

fn points_from_row(row: &MySqlRow) -> Result<PointsEntry, sqlx::Error> {
    Ok(PointsEntry {
        id: row.try_get("id")?,
        member_id: row.try_get("member_id")?,
        order_id: row.try_get("order_id")?,
        cause: cause_from_str(row.try_get("cause")?)?,
        ts: row.try_get("ts")?,
        rate_bp: get_u32(row, "rate_bp")?,
        amount: row.try_get("amount")?,
        points: row.try_get("points")?,
    })
}

fn settlement_from_row(row: &MySqlRow) -> Result<SettlementEntry, sqlx::Error> {
    Ok(SettlementEntry {
        id: row.try_get("id")?,
        seller_id: row.try_get("seller_id")?,
        order_id: row.try_get("order_id")?,
        line_no: row.try_get("line_no")?,
        sku: row.try_get("sku")?,
        cause: cause_from_str(row.try_get("cause")?)?,
        ts: row.try_get("ts")?,
        qty: row.try_get("qty")?,
        unit_price: row.try_get("unit_price")?,
        commission_bp: get_u32(row, "commission_bp")?,
        gross: row.try_get("gross")?,
        commission: row.try_get("commission")?,
        payment_fee: row.try_get("payment_fee")?,
        payout: row.try_get("payout")?,
    })
}

fn payout_from_row(row: &MySqlRow) -> Result<(Payout, bool), sqlx::Error> {
    Ok((
        Payout {
            seller_id: row.try_get("seller_id")?,
            week_start: row.try_get("week_start")?,
            amount: get_decimal(row, "amount")?,
            entries: row.try_get("entries")?,
        },
        row.try_get("final")?,
    ))
}

fn invoice_from_row(row: &MySqlRow) -> Result<(TaxInvoice, bool), sqlx::Error> {
    Ok((
        TaxInvoice {
            seller_id: row.try_get("seller_id")?,
            month_start: row.try_get("month_start")?,
            supply: get_decimal(row, "supply")?,
            vat: get_decimal(row, "vat")?,
            total: get_decimal(row, "total")?,
            entries: row.try_get("entries")?,
        },
        row.try_get("final")?,
    ))
}

fn member_from_row(row: &MySqlRow) -> Result<MemberView, sqlx::Error> {
    Ok(MemberView {
        member_id: row.try_get("member_id")?,
        grade: grade_from_str(row.try_get("grade")?)?,
        spend_6m: get_decimal(row, "spend_6m")?,
        accrual_bp: get_u32(row, "accrual_bp")?,
        wow: row.try_get("wow")?,
    })
}

// The readers' column lists, as macros so `concat!` can make `&'static str` queries.
macro_rules! points_select {
    () => {
        "SELECT id, member_id, order_id, cause, ts, rate_bp, amount, points FROM points_entries"
    };
}
macro_rules! settlements_select {
    () => {
        "SELECT id, seller_id, order_id, line_no, sku, cause, ts, qty, unit_price, \
         commission_bp, gross, commission, payment_fee, payout FROM settlement_entries"
    };
}
macro_rules! payouts_select {
    () => {
        "SELECT seller_id, week_start, CAST(amount AS CHAR) AS amount, entries, `final` \
         FROM payouts"
    };
}
macro_rules! invoices_select {
    () => {
        "SELECT seller_id, month_start, CAST(supply AS CHAR) AS supply, \
         CAST(vat AS CHAR) AS vat, CAST(total AS CHAR) AS total, entries, `final` \
         FROM tax_invoices"
    };
}
macro_rules! members_select {
    () => {
        "SELECT member_id, grade, CAST(spend_6m AS CHAR) AS spend_6m, accrual_bp, wow \
         FROM members"
    };
}

/// Inserts `rows` in statements of at most [`MAX_ROWS_PER_INSERT`] rows:
/// `{head} VALUES (…), (…) {tail}`, each row's values bound by `bind`.
async fn insert_rows<T>(
    conn: &mut MySqlConnection,
    head: &'static str,
    tail: &'static str,
    rows: &[T],
    mut bind: impl FnMut(&mut Separated<'_, MySql, &'static str>, &T),
) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(MAX_ROWS_PER_INSERT) {
        let mut qb = QueryBuilder::<MySql>::new(head);
        qb.push_values(chunk, |mut values, row| bind(&mut values, row));
        qb.push(tail);
        // Only full chunks share one statement text: keep those prepared, not the rest.
        qb.build()
            .persistent(chunk.len() == MAX_ROWS_PER_INSERT)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The batch's writes, inside the caller's transaction: `Ok(false)` if it is a replay.
/// An error names the step that failed.
async fn apply(
    conn: &mut MySqlConnection,
    batch: &ViewBatch,
    writers: Writers,
) -> Result<bool, (&'static str, sqlx::Error)> {
    let as_of = batch.as_of;
    let record = writers.record(LEDGER_SINK);
    let stored: Option<Option<Millis>> =
        sqlx::query_scalar("SELECT as_of FROM sink_progress WHERE sink = ? FOR UPDATE")
            .bind(&record)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| ("locking sink_progress", e))?;
    if stored.flatten().is_some_and(|s| s >= as_of) {
        return Ok(false);
    }

    insert_rows(
        conn,
        "INSERT INTO points_entries \
         (id, member_id, order_id, cause, ts, rate_bp, amount, points, as_of) ",
        " ON DUPLICATE KEY UPDATE id = id",
        &batch.points,
        |v, e| {
            v.push_bind(e.id.as_str())
                .push_bind(e.member_id)
                .push_bind(e.order_id)
                .push_bind(e.cause.as_str())
                .push_bind(e.ts)
                .push_bind(i64::from(e.rate_bp))
                .push_bind(e.amount)
                .push_bind(e.points)
                .push_bind(as_of);
        },
    )
    .await
    .map_err(|e| ("inserting points entries", e))?;

    insert_rows(
        conn,
        "INSERT INTO settlement_entries \
         (id, seller_id, order_id, line_no, sku, cause, ts, qty, unit_price, commission_bp, \
         gross, commission, payment_fee, payout, as_of) ",
        " ON DUPLICATE KEY UPDATE id = id",
        &batch.settlements,
        |v, e| {
            v.push_bind(e.id.as_str())
                .push_bind(e.seller_id)
                .push_bind(e.order_id)
                .push_bind(e.line_no)
                .push_bind(e.sku)
                .push_bind(e.cause.as_str())
                .push_bind(e.ts)
                .push_bind(e.qty)
                .push_bind(e.unit_price)
                .push_bind(i64::from(e.commission_bp))
                .push_bind(e.gross)
                .push_bind(e.commission)
                .push_bind(e.payment_fee)
                .push_bind(e.payout)
                .push_bind(as_of);
        },
    )
    .await
    .map_err(|e| ("inserting settlement entries", e))?;

    insert_rows(
        conn,
        "INSERT INTO payouts \
         (seller_id, week_start, week_start_date, week_end, amount, entries, `final`, as_of) ",
        " ON DUPLICATE KEY UPDATE amount = VALUES(amount), entries = VALUES(entries), \
         as_of = VALUES(as_of)",
        &batch.payouts,
        |v, p| {
            v.push_bind(p.seller_id)
                .push_bind(p.week_start)
                .push_bind(sql_date(p.week_start))
                .push_bind(kst_next_week_start(p.week_start))
                .push_bind(p.amount.to_string())
                .push_bind(p.entries)
                .push_bind(false)
                .push_bind(as_of);
        },
    )
    .await
    .map_err(|e| ("upserting payouts", e))?;

    insert_rows(
        conn,
        "INSERT INTO tax_invoices \
         (seller_id, month_start, month, month_end, supply, vat, total, entries, `final`, as_of) ",
        " ON DUPLICATE KEY UPDATE supply = VALUES(supply), vat = VALUES(vat), \
         total = VALUES(total), entries = VALUES(entries), as_of = VALUES(as_of)",
        &batch.invoices,
        |v, i| {
            v.push_bind(i.seller_id)
                .push_bind(i.month_start)
                .push_bind(kst_month(i.month_start))
                .push_bind(kst_next_month_start(i.month_start))
                .push_bind(i.supply.to_string())
                .push_bind(i.vat.to_string())
                .push_bind(i.total.to_string())
                .push_bind(i.entries)
                .push_bind(false)
                .push_bind(as_of);
        },
    )
    .await
    .map_err(|e| ("upserting tax invoices", e))?;

    insert_rows(
        conn,
        "INSERT INTO members (member_id, grade, spend_6m, accrual_bp, wow, as_of) ",
        " ON DUPLICATE KEY UPDATE grade = VALUES(grade), spend_6m = VALUES(spend_6m), \
         accrual_bp = VALUES(accrual_bp), wow = VALUES(wow), as_of = VALUES(as_of)",
        &batch.members,
        |v, m| {
            v.push_bind(m.member_id)
                .push_bind(m.grade.as_str())
                .push_bind(m.spend_6m.to_string())
                .push_bind(i64::from(m.accrual_bp))
                .push_bind(m.wow)
                .push_bind(as_of);
        },
    )
    .await
    .map_err(|e| ("upserting members", e))?;

    insert_rows(
        conn,
        "INSERT INTO sellers (seller_id, as_of) ",
        " ON DUPLICATE KEY UPDATE seller_id = seller_id",
        &batch.sellers,
        |v, &s| {
            v.push_bind(s).push_bind(as_of);
        },
    )
    .await
    .map_err(|e| ("inserting sellers", e))?;

    if writers.processes == 1 {
        sqlx::query("UPDATE payouts SET `final` = TRUE WHERE `final` = FALSE AND week_end <= ?")
            .bind(as_of)
            .execute(&mut *conn)
            .await
            .map_err(|e| ("finalizing payouts", e))?;
        sqlx::query(
            "UPDATE tax_invoices SET `final` = TRUE WHERE `final` = FALSE AND month_end <= ?",
        )
        .bind(as_of)
        .execute(&mut *conn)
        .await
        .map_err(|e| ("finalizing tax invoices", e))?;
    } else {
        finalize_own(conn, "payouts", "week_start", "week_end", as_of, writers)
            .await
            .map_err(|e| ("finalizing payouts", e))?;
        finalize_own(
            conn,
            "tax_invoices",
            "month_start",
            "month_end",
            as_of,
            writers,
        )
        .await
        .map_err(|e| ("finalizing tax invoices", e))?;
    }

    sqlx::query(
        "INSERT INTO sink_progress (sink, as_of, updated_at) VALUES (?, ?, CURRENT_TIMESTAMP(3)) \
         ON DUPLICATE KEY UPDATE as_of = VALUES(as_of), updated_at = VALUES(updated_at)",
    )
    .bind(&record)
    .bind(as_of)
    .execute(&mut *conn)
    .await
    .map_err(|e| ("storing as_of in sink_progress", e))?;
    Ok(true)
}

/// Marks final the periods of `table` (keyed by `seller_id` and `start`, ending at `end`)
/// of this writer's sellers that ended at or before `as_of`. Only its own sellers: another
/// writer may not have written a period's last change yet. The keys are found by a plain
/// (non-locking) read and updated one by one by primary key, so a writer locks no row of
/// another's (an `UPDATE … WHERE seller_id % n = p` locks every row it scans, and two
/// writers deadlocked on each other's).
async fn finalize_own(
    conn: &mut MySqlConnection,
    table: &'static str,
    start: &'static str,
    end: &'static str,
    as_of: Millis,
    writers: Writers,
) -> Result<(), sqlx::Error> {
    // The names are this module's constants, never input.
    let keys: Vec<(u64, u64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT seller_id, {start} FROM {table} WHERE `final` = FALSE AND {end} <= ? \
         AND seller_id % ? = ?"
    )))
    .bind(as_of)
    .bind(writers.processes as u64)
    .bind(writers.process as u64)
    .fetch_all(&mut *conn)
    .await?;
    for (seller, period) in keys {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET `final` = TRUE WHERE seller_id = ? AND {start} = ?"
        )))
        .bind(seller)
        .bind(period)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The KST date of `ms` for a `DATE` column, `None` past 9999-12-31 (`DATE`'s range).
fn sql_date(ms: Millis) -> Option<String> {
    let date = kst_date(ms);
    (date.len() == 10).then_some(date)
}

impl MysqlLedger {
    /// Connects to `url` (e.g. `mysql://shopflow:shopflow@127.0.0.1:13306/shopflow`) with a
    /// pool of [`POOL_SIZE`] connections and applies the schema's migrations.
    ///
    /// A database that does not answer, refuses the login or does not exist gives a
    /// one-line error marked `unreachable` (the binary says how to start one).
    pub async fn connect(url: &str) -> Result<Self, SinkError> {
        let shown = redact_url(url);
        // One plain connection first: its error says why (refused, denied, unknown
        // database), where the pool would only report a timeout.
        connect_once(url)
            .await?
            .close()
            .await
            .map_err(|e| mysql_error(&shown, "connecting", e))?;
        let options = MySqlConnectOptions::from_str(url)
            .map_err(|e| mysql_error(&shown, "parsing the URL", e))?;
        let pool = MySqlPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(CONNECT_TIMEOUT)
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    // Over-long ids and out-of-range values must fail the batch, never be
                    // truncated into a colliding key, whatever the server's default mode.
                    sqlx::query(
                        "SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_TRANS_TABLES')",
                    )
                    .execute(&mut *conn)
                    .await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| mysql_error(&shown, "connecting", e))?;
        // The processes of a cluster start together on one database: two may apply the same
        // migration at once, and the second fails on the first's record of it; or one finds
        // the record while the other is still creating the tables (sqlx's migration lock
        // does not keep them apart here, and DDL commits as it goes). Running the migrations again, and
        // creating the progress row only once its table is there, settles both.
        // The progress row exists from the start, so `SELECT … FOR UPDATE` always locks a
        // row (not a gap) and concurrent writers queue on it.
        let mut attempt = 0u64;
        loop {
            let step = match MIGRATOR.run(&pool).await {
                Ok(()) => sqlx::query(
                    "INSERT INTO sink_progress (sink, as_of, updated_at) \
                     VALUES (?, NULL, CURRENT_TIMESTAMP(3)) ON DUPLICATE KEY UPDATE sink = sink",
                )
                .bind(LEDGER_SINK)
                .execute(&pool)
                .await
                .map(|_| ())
                .map_err(|e| ("creating the sink_progress row", e)),
                Err(e) => Err(("applying migrations", e.into())),
            };
            match step {
                Ok(()) => break,
                Err((what, e)) if attempt < 10 => {
                    tracing::debug!(error = %e, "{what} raced another process; again");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err((what, e)) => return Err(mysql_error(&shown, what, e)),
            }
        }
        Ok(MysqlLedger {
            url: shown,
            pool,
            writers: Writers::ONE,
        })
    }

    /// The same ledger as the writer `writers` among several: its own progress row (created
    /// here), its own sellers' periods finalized; reads answer as of the smallest of the
    /// writers' (see [`shopflow_model::writers`]).
    pub async fn with_writers(mut self, writers: Writers) -> Result<Self, SinkError> {
        sqlx::query(
            "INSERT INTO sink_progress (sink, as_of, updated_at) \
             VALUES (?, NULL, CURRENT_TIMESTAMP(3)) ON DUPLICATE KEY UPDATE sink = sink",
        )
        .bind(writers.record(LEDGER_SINK))
        .execute(&self.pool)
        .await
        .map_err(|e| self.err("creating the sink_progress row", e))?;
        self.writers = writers;
        Ok(self)
    }

    /// Creates the database `name` (1 to 64 of `A-Za-z0-9_`; the local user may create
    /// `shopflow_*`) through `admin_url` if it does not exist, and returns `admin_url` with
    /// its database replaced by `name`. For tests, which each use a fresh database.
    pub async fn create_database(admin_url: &str, name: &str) -> Result<String, SinkError> {
        let shown = redact_url(admin_url);
        check_database_name(&shown, name)?;
        let mut conn = connect_once(admin_url).await?;
        let sql = format!(
            "CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        );
        // `name` is checked above to hold only letters, digits and underscores.
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .map_err(|e| mysql_error(&shown, format!("creating database {name}"), e))?;
        let _ = conn.close().await;
        Ok(url_with_database(admin_url, name))
    }

    /// Drops the database `name` through `admin_url` if it exists (tests clean up with it).
    pub async fn drop_database(admin_url: &str, name: &str) -> Result<(), SinkError> {
        let shown = redact_url(admin_url);
        check_database_name(&shown, name)?;
        let mut conn = connect_once(admin_url).await?;
        let sql = format!("DROP DATABASE IF EXISTS `{name}`");
        // `name` is checked above to hold only letters, digits and underscores.
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .map_err(|e| mysql_error(&shown, format!("dropping database {name}"), e))?;
        let _ = conn.close().await;
        Ok(())
    }

    /// Closes the pool's connections; later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn err(&self, what: &str, source: sqlx::Error) -> SinkError {
        mysql_error(&self.url, what, source)
    }

    /// Writes a batch in one transaction (see the module doc): returns `Ok(false)` without
    /// changing anything if the database already holds an `as_of` ≥ the batch's (a
    /// replay), `Ok(true)` once the batch is committed. On an error nothing of the batch is
    /// kept and the stored `as_of` is unchanged, so the batch can be retried.
    pub async fn write(&self, batch: &ViewBatch) -> Result<bool, SinkError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| self.err("starting a transaction", e))?;
        if self.writers.processes > 1 {
            // Several writers: each finalizes only its own sellers' periods, but under
            // REPEATABLE READ that `UPDATE` locks every row (and gap) it scans, and the
            // writers deadlock on each other's rows. READ COMMITTED keeps only the rows it
            // changes locked; each writer's own progress row still serializes its batches.
            sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
                .execute(&mut *conn)
                .await
                .map_err(|e| self.err("starting a transaction", e))?;
        }
        let mut tx = conn
            .begin()
            .await
            .map_err(|e| self.err("starting a transaction", e))?;
        match apply(&mut tx, batch, self.writers).await {
            Ok(true) => {
                tx.commit()
                    .await
                    .map_err(|e| self.err("committing a batch", e))?;
                Ok(true)
            }
            Ok(false) => {
                tx.rollback()
                    .await
                    .map_err(|e| self.err("rolling back a replayed batch", e))?;
                Ok(false)
            }
            Err((what, e)) => {
                // Dropping the transaction would roll back too; doing it here returns the
                // connection clean. The first error is the one worth reporting.
                let _ = tx.rollback().await;
                Err(self.err(what, e))
            }
        }
    }

    /// The `as_of` every ledger row is at least as new as: the smallest of the writers'
    /// (0 for one that has written nothing yet); `None` if no batch was written.
    pub async fn as_of(&self) -> Result<Option<Millis>, SinkError> {
        let mut stored = Vec::with_capacity(self.writers.processes);
        for record in self.writers.records(LEDGER_SINK) {
            stored.push(self.as_of_of(&record).await?);
        }
        Ok(Writers::smallest(stored))
    }

    /// The `as_of` of the last batch this writer wrote, if any.
    pub async fn written_as_of(&self) -> Result<Option<Millis>, SinkError> {
        self.as_of_of(&self.writers.record(LEDGER_SINK)).await
    }

    /// The `as_of` in progress row `record`.
    async fn as_of_of(&self, record: &str) -> Result<Option<Millis>, SinkError> {
        let stored: Option<Option<Millis>> =
            sqlx::query_scalar("SELECT as_of FROM sink_progress WHERE sink = ?")
                .bind(record)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.err("reading sink_progress", e))?;
        Ok(stored.flatten())
    }

    async fn fetch<T>(
        &self,
        what: &str,
        query: sqlx::query::Query<'_, MySql, sqlx::mysql::MySqlArguments>,
        decode: impl Fn(&MySqlRow) -> Result<T, sqlx::Error>,
    ) -> Result<Vec<T>, SinkError> {
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(what, e))?;
        rows.iter()
            .map(|r| decode(r).map_err(|e| self.err(what, e)))
            .collect()
    }

    async fn exists(
        &self,
        what: &str,
        query: sqlx::query::Query<'_, MySql, sqlx::mysql::MySqlArguments>,
    ) -> Result<bool, SinkError> {
        Ok(query
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(what, e))?
            .is_some())
    }

    /// A member's points entries, by time then id.
    pub async fn points(&self, member_id: u64) -> Result<Vec<PointsEntry>, SinkError> {
        let sql = concat!(points_select!(), " WHERE member_id = ? ORDER BY ts, id");
        self.fetch(
            "reading points entries",
            sqlx::query(sql).bind(member_id),
            points_from_row,
        )
        .await
    }

    /// A seller's settlement entries dated in [`from`, `to`), by time then id.
    pub async fn settlements(
        &self,
        seller_id: u64,
        from: Millis,
        to: Millis,
    ) -> Result<Vec<SettlementEntry>, SinkError> {
        let sql = concat!(
            settlements_select!(),
            " WHERE seller_id = ? AND ts >= ? AND ts < ? ORDER BY ts, id"
        );
        self.fetch(
            "reading settlement entries",
            sqlx::query(sql).bind(seller_id).bind(from).bind(to),
            settlement_from_row,
        )
        .await
    }

    /// A seller's weekly payouts with their `final` flags, oldest week first.
    pub async fn payouts(&self, seller_id: u64) -> Result<Vec<(Payout, bool)>, SinkError> {
        let sql = concat!(
            payouts_select!(),
            " WHERE seller_id = ? ORDER BY week_start"
        );
        self.fetch(
            "reading payouts",
            sqlx::query(sql).bind(seller_id),
            payout_from_row,
        )
        .await
    }

    /// A seller's monthly tax invoices with their `final` flags, oldest month first.
    pub async fn invoices(&self, seller_id: u64) -> Result<Vec<(TaxInvoice, bool)>, SinkError> {
        let sql = concat!(
            invoices_select!(),
            " WHERE seller_id = ? ORDER BY month_start"
        );
        self.fetch(
            "reading tax invoices",
            sqlx::query(sql).bind(seller_id),
            invoice_from_row,
        )
        .await
    }

    /// A member's grade row, if the member is known.
    pub async fn member(&self, member_id: u64) -> Result<Option<MemberView>, SinkError> {
        let sql = concat!(members_select!(), " WHERE member_id = ?");
        let mut rows = self
            .fetch(
                "reading a member",
                sqlx::query(sql).bind(member_id),
                member_from_row,
            )
            .await?;
        Ok(rows.pop())
    }

    /// Whether the seller is known (a batch named it in `sellers`).
    pub async fn seller_known(&self, seller_id: u64) -> Result<bool, SinkError> {
        self.exists(
            "reading sellers",
            sqlx::query("SELECT 1 FROM sellers WHERE seller_id = ?").bind(seller_id),
        )
        .await
    }

    /// Whether the member is known (a batch wrote its grade row).
    pub async fn member_known(&self, member_id: u64) -> Result<bool, SinkError> {
        self.exists(
            "reading members",
            sqlx::query("SELECT 1 FROM members WHERE member_id = ?").bind(member_id),
        )
        .await
    }

    /// Every points entry, by id (for tests and audits).
    pub async fn all_points(&self) -> Result<Vec<PointsEntry>, SinkError> {
        let sql = concat!(points_select!(), " ORDER BY id");
        self.fetch("reading points entries", sqlx::query(sql), points_from_row)
            .await
    }

    /// Every settlement entry, by id (for tests and audits).
    pub async fn all_settlements(&self) -> Result<Vec<SettlementEntry>, SinkError> {
        let sql = concat!(settlements_select!(), " ORDER BY id");
        self.fetch(
            "reading settlement entries",
            sqlx::query(sql),
            settlement_from_row,
        )
        .await
    }

    /// Every payout with its `final` flag, by seller then week (for tests and audits).
    pub async fn all_payouts(&self) -> Result<Vec<(Payout, bool)>, SinkError> {
        let sql = concat!(payouts_select!(), " ORDER BY seller_id, week_start");
        self.fetch("reading payouts", sqlx::query(sql), payout_from_row)
            .await
    }

    /// Every tax invoice with its `final` flag, by seller then month (for tests and audits).
    pub async fn all_invoices(&self) -> Result<Vec<(TaxInvoice, bool)>, SinkError> {
        let sql = concat!(invoices_select!(), " ORDER BY seller_id, month_start");
        self.fetch("reading tax invoices", sqlx::query(sql), invoice_from_row)
            .await
    }

    /// Every member's grade row, by member (for tests and audits).
    pub async fn all_members(&self) -> Result<Vec<MemberView>, SinkError> {
        let sql = concat!(members_select!(), " ORDER BY member_id");
        self.fetch("reading members", sqlx::query(sql), member_from_row)
            .await
    }

    /// Every known seller, ascending (for tests and audits).
    pub async fn all_sellers(&self) -> Result<Vec<u64>, SinkError> {
        self.fetch(
            "reading sellers",
            sqlx::query("SELECT seller_id FROM sellers ORDER BY seller_id"),
            |r| r.try_get("seller_id"),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_hide_the_password_and_swap_the_database() {
        assert_eq!(
            redact_url("mysql://shopflow:secret@127.0.0.1:13306/shopflow?ssl-mode=disabled"),
            "mysql://shopflow@127.0.0.1:13306/shopflow?ssl-mode=disabled"
        );
        assert_eq!(redact_url("mysql://127.0.0.1/x"), "mysql://127.0.0.1/x");
        assert_eq!(
            url_with_database("mysql://u:p@h:1/shopflow?a=b", "shopflow_t1"),
            "mysql://u:p@h:1/shopflow_t1?a=b"
        );
        assert_eq!(url_with_database("mysql://h", "d"), "mysql://h/d");
        assert_eq!(url_with_database("mysql://h?x=1", "d"), "mysql://h/d?x=1");
    }

    #[test]
    fn database_names_are_checked() {
        assert!(check_database_name("u", "shopflow_t_1").is_ok());
        for bad in ["", "a`b", "a-b", "a b", &"x".repeat(65)] {
            assert!(check_database_name("u", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dates_past_9999_are_null() {
        assert_eq!(sql_date(0).as_deref(), Some("1970-01-01"));
        assert_eq!(sql_date(shopflow_model::MAX_ID), None);
    }
}
