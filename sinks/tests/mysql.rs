//! The MySQL ledger against the real database of `SHOPFLOW_MYSQL_URL` (MariaDB from
//! `deploy/local/up.sh mysql`). Each test works in a fresh `shopflow_t…` database and drops
//! it at the end. Without the variable the tests fail: they never pass by skipping.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};

use shopflow_model::time::{
    kst_month_start, kst_next_month_start, kst_next_week_start, kst_week_start,
};
use shopflow_model::{
    EntryCause, MemberView, Millis, Payout, PointsEntry, SettlementEntry, TaxInvoice, ViewBatch,
};
use shopflow_sinks::mysql::MysqlLedger;
use shopflow_sinks::SinkError;

/// Wednesday 2026-03-04 12:00 KST (03:00 UTC): its week ends on Monday 2026-03-09, well
/// before its month does (2026-04-01).
const T0: Millis = 1_772_593_200_000;
const HOUR: Millis = 3_600_000;

fn admin_url() -> String {
    std::env::var("SHOPFLOW_MYSQL_URL").unwrap_or_else(|_| {
        panic!(
            "SHOPFLOW_MYSQL_URL is not set: start MariaDB with deploy/local/up.sh mysql and \
             source .shopflow/env (./test.sh does both)"
        )
    })
}

/// Runs `body` with the URL of a fresh database, then drops the database whether `body`
/// passed or panicked.
async fn with_database<F, Fut>(stem: &str, body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let admin = admin_url();
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    let name = format!(
        "shopflow_t_{stem}_{}x{millis}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let url = MysqlLedger::create_database(&admin, &name)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let outcome = tokio::spawn(body(url)).await;
    MysqlLedger::drop_database(&admin, &name)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn connect(url: &str) -> MysqlLedger {
    MysqlLedger::connect(url)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn points(order_id: u64, member_id: u64, refund: u32, ts: Millis, amount: i64) -> PointsEntry {
    let cause = if refund == 0 {
        EntryCause::Confirmed
    } else {
        EntryCause::Refund
    };
    let rate_bp = 300;
    let magnitude = amount.abs() * rate_bp as i64 / 10_000;
    PointsEntry {
        id: PointsEntry::entry_id(order_id, cause, refund),
        member_id,
        order_id,
        cause,
        ts,
        rate_bp,
        amount,
        points: if amount < 0 { -magnitude } else { magnitude },
    }
}

#[allow(clippy::too_many_arguments)]
fn settlement(
    order_id: u64,
    line_no: u64,
    refund: u32,
    seller_id: u64,
    sku: u64,
    ts: Millis,
    qty: u64,
    unit_price: u64,
) -> SettlementEntry {
    let cause = if refund == 0 {
        EntryCause::Confirmed
    } else {
        EntryCause::Refund
    };
    let commission_bp = 1080;
    let (g, c, f, p) = SettlementEntry::amounts(qty, unit_price, commission_bp);
    let sign = if refund == 0 { 1 } else { -1 };
    SettlementEntry {
        id: SettlementEntry::entry_id(order_id, line_no, cause, refund),
        seller_id,
        order_id,
        line_no,
        sku,
        cause,
        ts,
        qty: sign * qty as i64,
        unit_price: unit_price as i64,
        commission_bp,
        gross: sign * g,
        commission: sign * c,
        payment_fee: sign * f,
        payout: sign * p,
    }
}

fn member(member_id: u64, spend_6m: i128, wow: bool) -> MemberView {
    MemberView::new(member_id, spend_6m, wow)
}

/// Payouts and invoices of `entries`, as the pipeline would send them.
fn aggregates(entries: &[SettlementEntry]) -> (Vec<Payout>, Vec<TaxInvoice>) {
    use std::collections::BTreeMap;
    let mut weeks: BTreeMap<(u64, Millis), (i128, u64)> = BTreeMap::new();
    let mut months: BTreeMap<(u64, Millis), (i128, u64)> = BTreeMap::new();
    for e in entries {
        let w = weeks
            .entry((e.seller_id, kst_week_start(e.ts)))
            .or_default();
        w.0 += e.payout as i128;
        w.1 += 1;
        let m = months
            .entry((e.seller_id, kst_month_start(e.ts)))
            .or_default();
        m.0 += (e.commission + e.payment_fee) as i128;
        m.1 += 1;
    }
    let payouts = weeks
        .into_iter()
        .map(|((seller_id, week_start), (amount, entries))| Payout {
            seller_id,
            week_start,
            amount,
            entries,
        })
        .collect();
    let invoices = months
        .into_iter()
        .map(|((seller_id, month_start), (supply, entries))| {
            TaxInvoice::new(seller_id, month_start, supply, entries)
        })
        .collect();
    (payouts, invoices)
}

#[derive(Debug, PartialEq)]
struct Snapshot {
    as_of: Option<Millis>,
    points: Vec<PointsEntry>,
    settlements: Vec<SettlementEntry>,
    payouts: Vec<(Payout, bool)>,
    invoices: Vec<(TaxInvoice, bool)>,
    members: Vec<MemberView>,
    sellers: Vec<u64>,
}

async fn snapshot(ledger: &MysqlLedger) -> Snapshot {
    Snapshot {
        as_of: ledger.as_of().await.unwrap(),
        points: ledger.all_points().await.unwrap(),
        settlements: ledger.all_settlements().await.unwrap(),
        payouts: ledger.all_payouts().await.unwrap(),
        invoices: ledger.all_invoices().await.unwrap(),
        members: ledger.all_members().await.unwrap(),
        sellers: ledger.all_sellers().await.unwrap(),
    }
}

fn sorted<T: Ord + Clone>(rows: &[T]) -> Vec<T> {
    let mut v = rows.to_vec();
    v.sort();
    v
}

/// Two batches: the first confirms a few orders; the second refunds one line, confirms
/// 1,200 more lines (several INSERT chunks) and moves the aggregates.
fn two_batches() -> (ViewBatch, ViewBatch) {
    let t1 = T0 + HOUR;
    let entries1 = vec![
        settlement(1, 1, 0, 10, 100, T0, 3, 33_333),
        settlement(1, 2, 0, 11, 101, T0, 1, 5_000),
        settlement(2, 1, 0, 10, 100, T0 + 5, 2, 33_333),
    ];
    let (payouts1, invoices1) = aggregates(&entries1);
    let b1 = ViewBatch {
        as_of: t1,
        points: vec![
            points(1, 7, 0, T0, 104_999),
            points(2, 8, 0, T0 + 5, 66_666),
        ],
        settlements: entries1.clone(),
        payouts: payouts1,
        invoices: invoices1,
        members: vec![member(7, 104_999, false), member(8, 66_666, true)],
        sellers: vec![10, 11],
        ..ViewBatch::default()
    };

    let t2 = T0 + 2 * HOUR;
    let mut entries2 = vec![settlement(1, 1, 1, 10, 100, T0 + HOUR + 1, 1, 33_333)];
    for n in 0..1_200u64 {
        entries2.push(settlement(
            1_000 + n / 4,
            n % 4 + 1,
            0,
            12,
            200 + n % 7,
            T0 + HOUR + 10 + n,
            n % 5 + 1,
            1_000 + n,
        ));
    }
    let all: Vec<SettlementEntry> = entries1.iter().chain(&entries2).cloned().collect();
    let (payouts2, invoices2) = aggregates(&all);
    let b2 = ViewBatch {
        as_of: t2,
        points: vec![points(1, 7, 1, T0 + HOUR + 1, -33_333)],
        settlements: entries2,
        // Every aggregate row is resent with its absolute value (as if all changed).
        payouts: payouts2,
        invoices: invoices2,
        members: vec![member(7, 71_666, false), member(9, 0, false)],
        sellers: vec![12],
        ..ViewBatch::default()
    };
    (b1, b2)
}

#[tokio::test]
async fn two_batches_read_back_and_replays_change_nothing() {
    with_database("rw", |url| async move {
        let ledger = connect(&url).await;
        assert_eq!(ledger.as_of().await.unwrap(), None);
        let (b1, b2) = two_batches();

        assert!(ledger.write(&b1).await.unwrap());
        let after1 = snapshot(&ledger).await;
        assert_eq!(after1.as_of, Some(b1.as_of));
        assert_eq!(after1.points, sorted(&b1.points));
        assert_eq!(after1.settlements, sorted(&b1.settlements));
        assert_eq!(
            after1.payouts,
            b1.payouts.iter().map(|p| (*p, false)).collect::<Vec<_>>()
        );

        assert!(ledger.write(&b2).await.unwrap());
        let after2 = snapshot(&ledger).await;
        let all_points: Vec<PointsEntry> = b1.points.iter().chain(&b2.points).cloned().collect();
        let all_settlements: Vec<SettlementEntry> = b1
            .settlements
            .iter()
            .chain(&b2.settlements)
            .cloned()
            .collect();
        assert_eq!(after2.as_of, Some(b2.as_of));
        assert_eq!(after2.points, sorted(&all_points));
        assert_eq!(after2.settlements.len(), 1_204);
        assert_eq!(after2.settlements, sorted(&all_settlements));
        assert_eq!(
            after2.payouts,
            sorted(&b2.payouts)
                .into_iter()
                .map(|p| (p, false))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            after2.invoices,
            sorted(&b2.invoices)
                .into_iter()
                .map(|i| (i, false))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            after2.members,
            vec![
                member(7, 71_666, false),
                member(8, 66_666, true),
                member(9, 0, false)
            ]
        );
        assert_eq!(after2.sellers, vec![10, 11, 12]);

        // The API's readers.
        let member7 = ledger.points(7).await.unwrap();
        assert_eq!(
            member7.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["1:confirmed", "1:refund:1"]
        );
        assert!(ledger.points(99).await.unwrap().is_empty());
        let seller10 = ledger.settlements(10, T0, T0 + 6).await.unwrap();
        assert_eq!(
            seller10.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["1:1:confirmed", "2:1:confirmed"]
        );
        // [from, to): an entry at `to` is out.
        assert_eq!(ledger.settlements(10, T0, T0 + 5).await.unwrap().len(), 1);
        let seller12 = ledger.settlements(12, 0, u64::MAX >> 1).await.unwrap();
        assert_eq!(seller12.len(), 1_200);
        assert!(seller12
            .windows(2)
            .all(|w| (w[0].ts, &w[0].id) <= (w[1].ts, &w[1].id)));
        assert_eq!(
            ledger.payouts(10).await.unwrap(),
            b2.payouts
                .iter()
                .filter(|p| p.seller_id == 10)
                .map(|p| (*p, false))
                .collect::<Vec<_>>()
        );
        assert_eq!(ledger.invoices(11).await.unwrap().len(), 1);
        assert!(ledger.seller_known(12).await.unwrap());
        assert!(!ledger.seller_known(13).await.unwrap());
        assert!(ledger.member_known(9).await.unwrap());
        assert!(!ledger.member_known(10).await.unwrap());
        assert_eq!(
            ledger.member(8).await.unwrap(),
            Some(member(8, 66_666, true))
        );
        assert_eq!(ledger.member(10).await.unwrap(), None);

        // Replays (after a restart: a new pool) are skipped and change nothing.
        ledger.close().await;
        let ledger = connect(&url).await;
        assert!(!ledger.write(&b1).await.unwrap());
        assert!(!ledger.write(&b2).await.unwrap());
        assert_eq!(snapshot(&ledger).await, after2);

        // A batch that repeats entries already stored (a replay merged into a newer
        // batch) stores each once.
        let mut b3 = b2.clone();
        b3.as_of = b2.as_of + HOUR;
        b3.points.extend(b1.points.iter().cloned());
        assert!(ledger.write(&b3).await.unwrap());
        let after3 = snapshot(&ledger).await;
        assert_eq!(after3.points, after2.points);
        assert_eq!(after3.settlements, after2.settlements);
        assert_eq!(after3.as_of, Some(b3.as_of));
    })
    .await;
}

#[tokio::test]
async fn periods_turn_final_when_as_of_reaches_their_end() {
    with_database("final", |url| async move {
        let ledger = connect(&url).await;
        let week_end = kst_next_week_start(T0);
        let month_end = kst_next_month_start(T0);
        assert!(week_end < month_end);
        let e1 = settlement(1, 1, 0, 10, 100, T0, 1, 10_000);
        let e2 = settlement(2, 1, 0, 10, 100, week_end + 1, 1, 20_000);
        let (payouts, invoices) = aggregates(std::slice::from_ref(&e1));
        let b1 = ViewBatch {
            as_of: week_end - 1,
            settlements: vec![e1.clone()],
            payouts,
            invoices,
            sellers: vec![10],
            ..ViewBatch::default()
        };
        assert!(ledger.write(&b1).await.unwrap());
        let flags = |rows: Vec<(Payout, bool)>| rows.iter().map(|r| r.1).collect::<Vec<_>>();
        assert_eq!(flags(ledger.payouts(10).await.unwrap()), [false]);

        // T reaches the next week's start: that week is final, the month is not.
        let (payouts, invoices) = aggregates(&[e1.clone(), e2.clone()]);
        let b2 = ViewBatch {
            as_of: week_end + 1,
            settlements: vec![e2.clone()],
            payouts: payouts.clone(),
            invoices,
            ..ViewBatch::default()
        };
        assert!(ledger.write(&b2).await.unwrap());
        let stored = ledger.payouts(10).await.unwrap();
        assert_eq!(
            stored,
            vec![(payouts[0], true), (payouts[1], false)],
            "the first week is final, the second is open"
        );
        assert_eq!(
            ledger
                .invoices(10)
                .await
                .unwrap()
                .iter()
                .map(|r| r.1)
                .collect::<Vec<_>>(),
            [false]
        );

        // An empty batch moves T: exactly at the month's end the month is final (T ≥ the
        // next period's start), and so is the second week.
        let b3 = ViewBatch {
            as_of: month_end,
            ..ViewBatch::default()
        };
        assert!(ledger.write(&b3).await.unwrap());
        assert_eq!(flags(ledger.payouts(10).await.unwrap()), [true, true]);
        let invoices = ledger.invoices(10).await.unwrap();
        assert_eq!(invoices.len(), 1);
        assert!(invoices[0].1);
        assert_eq!(
            invoices[0].0.supply,
            (e1.commission + e1.payment_fee + e2.commission + e2.payment_fee) as i128
        );
        assert_eq!(ledger.as_of().await.unwrap(), Some(month_end));
    })
    .await;
}

#[tokio::test]
async fn amounts_beyond_i64_round_trip() {
    with_database("i128", |url| async move {
        let ledger = connect(&url).await;
        let big = i64::MAX as i128 * 1_000 + 7;
        let batch = ViewBatch {
            as_of: T0,
            payouts: vec![
                Payout {
                    seller_id: 1,
                    week_start: kst_week_start(T0),
                    amount: big,
                    entries: u64::MAX >> 1,
                },
                Payout {
                    seller_id: 2,
                    week_start: kst_week_start(T0),
                    amount: i128::MAX,
                    entries: 1,
                },
                Payout {
                    seller_id: 3,
                    week_start: kst_week_start(T0),
                    amount: i128::MIN,
                    entries: 1,
                },
            ],
            invoices: vec![TaxInvoice::new(1, kst_month_start(T0), -big, 3)],
            members: vec![member(5, big, true)],
            sellers: vec![1, 2, 3],
            ..ViewBatch::default()
        };
        assert!(ledger.write(&batch).await.unwrap());
        assert_eq!(
            ledger.all_payouts().await.unwrap(),
            batch
                .payouts
                .iter()
                .map(|p| (*p, false))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            ledger.all_invoices().await.unwrap(),
            vec![(batch.invoices[0], false)]
        );
        assert_eq!(ledger.all_invoices().await.unwrap()[0].0.vat, -big / 10);
        assert_eq!(ledger.all_members().await.unwrap(), batch.members);

        // The finance columns: KST dates and period ends.
        use sqlx::{Connection as _, Row as _};
        let mut conn = sqlx::MySqlConnection::connect(&url).await.unwrap();
        let row = sqlx::query(
            "SELECT CAST(week_start_date AS CHAR) AS d, week_end, CAST(amount AS CHAR) AS a \
             FROM payouts WHERE seller_id = 1",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(row.get::<String, _>("d"), "2026-03-02");
        assert_eq!(row.get::<u64, _>("week_end"), kst_next_week_start(T0));
        assert_eq!(row.get::<String, _>("a"), big.to_string());
        let row = sqlx::query("SELECT month, month_end FROM tax_invoices WHERE seller_id = 1")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(row.get::<String, _>("month"), "2026-03");
        assert_eq!(row.get::<u64, _>("month_end"), kst_next_month_start(T0));
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn times_past_year_9999_fit() {
    with_database("far", |url| async move {
        let ledger = connect(&url).await;
        let far = shopflow_model::MAX_ID;
        let batch = ViewBatch {
            as_of: far,
            payouts: vec![Payout {
                seller_id: 1,
                week_start: kst_week_start(far),
                amount: -5,
                entries: 1,
            }],
            invoices: vec![TaxInvoice::new(1, kst_month_start(far), 10, 1)],
            sellers: vec![1],
            ..ViewBatch::default()
        };
        assert!(ledger.write(&batch).await.unwrap());
        assert_eq!(
            ledger.payouts(1).await.unwrap(),
            vec![(batch.payouts[0], false)]
        );
        assert_eq!(
            ledger.invoices(1).await.unwrap(),
            vec![(batch.invoices[0], false)]
        );
    })
    .await;
}

#[tokio::test]
async fn a_failing_batch_leaves_nothing_behind() {
    with_database("fail", |url| async move {
        let ledger = connect(&url).await;
        let (b1, mut b2) = two_batches();
        assert!(ledger.write(&b1).await.unwrap());
        let before = snapshot(&ledger).await;

        // Points, then settlements are inserted: the over-long id fails the second
        // statement, after the first already inserted rows in the transaction.
        let good = b2.settlements.clone();
        b2.settlements[600].id = "x".repeat(200);
        let err = ledger
            .write(&b2)
            .await
            .expect_err("an id over 128 chars fails");
        match &err {
            SinkError::Mysql {
                what, unreachable, ..
            } => {
                assert_eq!(what, "inserting settlement entries");
                assert!(!unreachable, "not a connection problem: {err}");
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert_eq!(snapshot(&ledger).await, before);

        // The same batch, fixed, is applied in full.
        b2.settlements = good;
        assert!(ledger.write(&b2).await.unwrap());
        let after = snapshot(&ledger).await;
        assert_eq!(after.as_of, Some(b2.as_of));
        assert_eq!(after.settlements.len(), 1_204);
        assert_eq!(after.points.len(), 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_apply_a_batch_once() {
    with_database("race", |url| async move {
        let (a, b) = (connect(&url).await, connect(&url).await);
        let (b1, _) = two_batches();
        let (ra, rb) = tokio::join!(a.write(&b1), b.write(&b1));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert!(ra ^ rb, "exactly one writer applies the batch: {ra} {rb}");
        assert_eq!(a.all_points().await.unwrap(), sorted(&b1.points));
    })
    .await;
}

/// Whether `err` is a MySQL error marked unreachable (the binary then says how to start one).
fn unreachable(err: &SinkError) -> bool {
    matches!(
        err,
        SinkError::Mysql {
            unreachable: true,
            ..
        }
    )
}

#[tokio::test]
async fn an_unreachable_database_is_one_line_marked_unreachable() {
    let err = MysqlLedger::connect("mysql://shopflow:secret@127.0.0.1:1/shopflow")
        .await
        .expect_err("nothing listens on port 1");
    let text = err.to_string();
    assert!(unreachable(&err), "{err:?}");
    assert!(
        text.starts_with("MySQL at mysql://shopflow@127.0.0.1:1/shopflow: "),
        "{text}"
    );
    assert!(!text.contains('\n'), "one line: {text}");
    assert!(!text.contains("secret"), "no password: {text}");
    assert!(!text.contains("deploy/"), "advice is the binary's: {text}");
}

#[tokio::test]
async fn a_missing_database_is_marked_unreachable() {
    let url = shopflow_sinks::mysql::url_with_database(&admin_url(), "shopflow_no_such_db");
    let err = MysqlLedger::connect(&url)
        .await
        .expect_err("no such database");
    assert!(unreachable(&err), "{err:?}");
}
