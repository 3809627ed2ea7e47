//! Hand-computed cases for the sales facts and minute rollups.

use std::collections::{BTreeMap, BTreeSet};

use shopflow_model::{SalesEffect, SalesFact, SalesMinute};

use crate::ledger_tests::Log;
use crate::{compute, Config, Views};

/// 2024-02-27 11:14:00 KST: the start of a minute.
const M0: u64 = 1_709_000_040_000;
const MIN: u64 = 60_000;

/// The terms of a line: (sku, seller, category, member, unit_price).
type Terms = (u64, u64, u64, u64, u64);

/// The fact of `effect` (refund number `n`, 0 otherwise) on `line` of `order`.
fn fact(
    order: u64,
    line: u64,
    t: Terms,
    effect: SalesEffect,
    n: u32,
    qty: i64,
    ts: u64,
) -> SalesFact {
    let (sku, seller_id, category_id, member_id, unit_price) = t;
    let id = match effect {
        Refunded => format!("{order}:{line}:refunded:{n}"),
        e => format!("{order}:{line}:{}", e.as_str()),
    };
    SalesFact {
        id,
        order_id: order,
        line_no: line,
        sku,
        seller_id,
        category_id,
        member_id,
        effect,
        qty,
        amount: qty * unit_price as i64,
        ts,
    }
}

fn minute(
    seller: u64,
    minute: u64,
    orders: u64,
    units: i64,
    gross: i64,
    refunds: i64,
) -> SalesMinute {
    SalesMinute {
        seller_id: seller,
        minute,
        orders,
        units,
        gross,
        refunds,
        net: gross - refunds,
    }
}

fn facts(v: &Views) -> Vec<SalesFact> {
    let mut f: Vec<SalesFact> = v.sales_facts.values().cloned().collect();
    f.sort_by(|a, b| (a.ts, &a.id).cmp(&(b.ts, &b.id)));
    f
}

fn minutes(v: &Views) -> Vec<SalesMinute> {
    v.sales_minutes.values().copied().collect()
}

use SalesEffect::{Cancelled, Confirmed, Delivered, Paid, Placed, Refunded, Shipped};

#[test]
fn paid_then_cancelled_in_another_minute() {
    let mut log = Log::default();
    log.product(M0, 10, 7, 1)
        .place(M0 + 1_000, 1, 3, &[(1, 10, 2, 1_000)])
        .pay(M0 + 2_000, 1, 2_500)
        .step("order.cancelled", M0 + MIN + 5_000, 1);
    let v = log.run();
    let t = (10, 7, 1, 3, 1_000);
    assert_eq!(
        facts(&v),
        [
            fact(1, 1, t, Placed, 0, 2, M0 + 1_000),
            fact(1, 1, t, Paid, 0, 2, M0 + 2_000),
            fact(1, 1, t, Cancelled, 0, -2, M0 + MIN + 5_000),
        ]
    );
    assert_eq!(
        minutes(&v),
        [
            minute(7, M0, 1, 2, 2_000, 0),
            minute(7, M0 + MIN, 0, 0, 0, 2_000), // net −2,000
        ]
    );
    assert_eq!(v.sales_minutes[&(7, M0 + MIN)].net, -2_000);
}

#[test]
fn a_cancel_before_payment_has_facts_but_no_rollup() {
    let mut log = Log::default();
    log.product(M0, 10, 7, 1)
        .place(M0 + 1_000, 2, 3, &[(1, 10, 4, 250), (2, 10, 1, 100)])
        .step("order.cancelled", M0 + 2_000, 2);
    let v = log.run();
    let (t1, t2) = ((10, 7, 1, 3, 250), (10, 7, 1, 3, 100));
    assert_eq!(
        facts(&v),
        [
            fact(2, 1, t1, Placed, 0, 4, M0 + 1_000),
            fact(2, 2, t2, Placed, 0, 1, M0 + 1_000),
            fact(2, 1, t1, Cancelled, 0, -4, M0 + 2_000),
            fact(2, 2, t2, Cancelled, 0, -1, M0 + 2_000),
        ]
    );
    assert!(v.sales_minutes.is_empty());
}

#[test]
fn a_partial_refund_after_delivery_counts_line_value_not_money() {
    let mut log = Log::default();
    log.product(M0, 10, 7, 1)
        .product(M0, 11, 7, 2)
        .delivered(
            M0 + 1_000,
            1,
            3,
            &[(1, 10, 3, 1_000), (2, 11, 1, 500)],
            3_000,
        )
        .refund(M0 + 2 * MIN + 10, 1, 1_500, &[(1, 2)]); // 1,500 back for 2,000 of goods
    let v = log.run();
    let (t1, t2) = ((10, 7, 1, 3, 1_000), (11, 7, 2, 3, 500));
    assert_eq!(
        facts(&v),
        [
            fact(1, 1, t1, Placed, 0, 3, M0 + 1_000),
            fact(1, 2, t2, Placed, 0, 1, M0 + 1_000),
            fact(1, 1, t1, Paid, 0, 3, M0 + 1_001),
            fact(1, 2, t2, Paid, 0, 1, M0 + 1_001),
            fact(1, 1, t1, Shipped, 0, 3, M0 + 1_002),
            fact(1, 2, t2, Shipped, 0, 1, M0 + 1_002),
            fact(1, 1, t1, Delivered, 0, 3, M0 + 1_003),
            fact(1, 2, t2, Delivered, 0, 1, M0 + 1_003),
            fact(1, 1, t1, Refunded, 1, -2, M0 + 2 * MIN + 10),
        ]
    );
    assert_eq!(
        minutes(&v),
        [
            minute(7, M0, 1, 4, 3_500, 0),
            minute(7, M0 + 2 * MIN, 0, 0, 0, 2_000),
        ]
    );
}

#[test]
fn a_refund_before_confirmation_reduces_the_confirmed_fact() {
    let mut log = Log::default();
    log.product(M0, 10, 7, 1)
        .delivered(
            M0 + 1_000,
            1,
            3,
            &[(1, 10, 3, 1_000), (2, 10, 1, 500)],
            3_500,
        )
        .refund(M0 + MIN, 1, 1_500, &[(1, 1), (2, 1)]) // line 2 fully refunded
        .confirm(M0 + 2 * MIN, 1)
        .refund(M0 + 3 * MIN, 1, 2_000, &[(1, 2)]);
    let v = log.run();
    let (t1, t2) = ((10, 7, 1, 3, 1_000), (10, 7, 1, 3, 500));
    let after_delivery: Vec<SalesFact> =
        facts(&v).into_iter().filter(|f| f.ts >= M0 + MIN).collect();
    assert_eq!(
        after_delivery,
        [
            fact(1, 1, t1, Refunded, 1, -1, M0 + MIN),
            fact(1, 2, t2, Refunded, 1, -1, M0 + MIN),
            fact(1, 1, t1, Confirmed, 0, 2, M0 + 2 * MIN), // 3 − 1; line 2: 0, omitted
            fact(1, 1, t1, Refunded, 2, -2, M0 + 3 * MIN),
        ]
    );
    assert!(!v.sales_facts.contains_key("1:2:confirmed"));
    assert_eq!(v.sales_facts.len(), 8 + 4);
    assert_eq!(
        minutes(&v),
        [
            minute(7, M0, 1, 4, 3_500, 0),
            minute(7, M0 + MIN, 0, 0, 0, 1_500),
            minute(7, M0 + 3 * MIN, 0, 0, 0, 2_000),
        ]
    );
}

#[test]
fn a_sale_stays_with_the_seller_at_placement() {
    let mut log = Log::default();
    log.product(M0, 10, 7, 1)
        .place(M0 + 1_000, 1, 3, &[(1, 10, 1, 1_000)])
        .product(M0 + 2_000, 10, 8, 2) // the SKU moves to seller 8, category 2
        .pay(M0 + 3_000, 1, 1_000)
        .place(M0 + 4_000, 2, 4, &[(1, 10, 2, 1_000)])
        .pay(M0 + 5_000, 2, 2_000)
        // Two upserts at one time: the later in the log is the listing at that time.
        .product(M0 + 6_000, 10, 9, 3)
        .place(M0 + 6_000, 3, 4, &[(1, 10, 1, 700)])
        .product(M0 + 6_000, 10, 5, 4)
        .pay(M0 + 7_000, 3, 700);
    let v = log.run();
    assert_eq!(
        facts(&v),
        [
            fact(1, 1, (10, 7, 1, 3, 1_000), Placed, 0, 1, M0 + 1_000),
            fact(1, 1, (10, 7, 1, 3, 1_000), Paid, 0, 1, M0 + 3_000),
            fact(2, 1, (10, 8, 2, 4, 1_000), Placed, 0, 2, M0 + 4_000),
            fact(2, 1, (10, 8, 2, 4, 1_000), Paid, 0, 2, M0 + 5_000),
            fact(3, 1, (10, 5, 4, 4, 700), Placed, 0, 1, M0 + 6_000),
            fact(3, 1, (10, 5, 4, 4, 700), Paid, 0, 1, M0 + 7_000),
        ]
    );
    assert_eq!(
        minutes(&v),
        [
            minute(5, M0, 1, 1, 700, 0),
            minute(7, M0, 1, 1, 1_000, 0),
            minute(8, M0, 1, 2, 2_000, 0),
        ]
    );
}

#[test]
fn facts_wait_for_the_sku_and_keep_their_times() {
    let build = |with_listing: bool| {
        let mut log = Log::default();
        log.product(M0, 10, 7, 1)
            .place(M0 + 1_000, 1, 3, &[(1, 30, 2, 400), (2, 10, 1, 100)])
            .pay(M0 + 2_000, 1, 900)
            .place(M0 + 3_000, 2, 3, &[(1, 31, 1, 100)]) // SKU 31 never listed
            .pay(M0 + 4_000, 2, 100)
            .product(M0 + 3 * MIN, 11, 7, 1); // as_of moves on either way
        if with_listing {
            // Listed with a category nobody ever upserts: known is enough.
            log.product(M0 + 3 * MIN, 30, 9, 44);
        }
        log.run()
    };

    let v = build(false);
    let t2 = (10, 7, 1, 3, 100);
    assert_eq!(
        facts(&v),
        [
            fact(1, 2, t2, Placed, 0, 1, M0 + 1_000),
            fact(1, 2, t2, Paid, 0, 1, M0 + 2_000),
        ]
    );
    assert_eq!(minutes(&v), [minute(7, M0, 1, 1, 100, 0)]);

    let v = build(true);
    let t1 = (30, 9, 44, 3, 400);
    assert_eq!(
        facts(&v),
        [
            fact(1, 1, t1, Placed, 0, 2, M0 + 1_000),
            fact(1, 2, t2, Placed, 0, 1, M0 + 1_000),
            fact(1, 1, t1, Paid, 0, 2, M0 + 2_000),
            fact(1, 2, t2, Paid, 0, 1, M0 + 2_000),
        ]
    );
    assert!(v.sales_facts.values().all(|f| f.order_id == 1));
    assert_eq!(
        minutes(&v),
        [minute(7, M0, 1, 1, 100, 0), minute(9, M0, 1, 2, 800, 0)]
    );
}

#[test]
fn orders_count_distinct_orders_per_seller_and_minute() {
    let mut log = Log::default();
    log.product(M0, 10, 7, 1)
        .product(M0, 11, 7, 1)
        .product(M0, 12, 8, 1)
        // Two orders paid in minute M0, the first with two lines of seller 7.
        .place(M0 + 1_000, 1, 3, &[(1, 10, 1, 100), (2, 11, 2, 200)])
        .pay(M0 + 2_000, 1, 500)
        .place(M0 + 3_000, 2, 4, &[(1, 10, 3, 100), (2, 12, 1, 1_000)])
        .pay(M0 + 59_999, 2, 1_300)
        // One order with two lines of seller 7 in the next minute.
        .place(M0 + MIN, 3, 3, &[(1, 10, 1, 100), (2, 11, 1, 200)])
        .pay(M0 + MIN, 3, 300);
    let v = log.run();
    assert_eq!(
        minutes(&v),
        [
            minute(7, M0, 2, 6, 800, 0),
            minute(7, M0 + MIN, 1, 2, 300, 0),
            minute(8, M0, 1, 1, 1_000, 0),
        ]
    );
}

#[test]
fn a_late_payment_is_dated_by_its_applied_time() {
    let mut log = Log::default();
    log.product(M0, 10, 7, 1)
        .place(M0 + 1_000, 1, 3, &[(1, 10, 1, 100)])
        .product(M0 + 100_000, 11, 7, 1) // moves the stream's frontier to M0 + 95,000
        .pay(M0 + 2_000, 1, 100); // applied at M0 + 95,000
    let v = log.run();
    assert_eq!(v.sales_facts["1:1:paid"].ts, M0 + 95_000);
    assert_eq!(minutes(&v), [minute(7, M0 + MIN, 1, 1, 100, 0)]);
}

/// Invariants over a generated workload with late catalog entries.
#[test]
fn generated_workload_is_consistent() {
    let log = shopflow_gen::generate(&shopflow_gen::GenConfig {
        events: 12_000,
        skus: 300,
        members: 300,
        concurrency: 100,
        late_catalog_rate: 0.2,
        ..shopflow_gen::GenConfig::default()
    });
    let msgs: Vec<Vec<u8>> = log.into_iter().map(|m| m.payload).collect();
    let v = compute(&[msgs], Config::default());
    let as_of = v.as_of.unwrap();
    assert!(v.sales_facts.len() > 1_000);

    // Every line's facts share its terms and start with `placed`; units never go below 0.
    let mut lines: BTreeMap<(u64, u64), Vec<&SalesFact>> = BTreeMap::new();
    for (id, f) in &v.sales_facts {
        assert_eq!(*id, f.id);
        assert!(f.ts <= as_of);
        assert_eq!(f.amount.signum(), f.qty.signum());
        lines.entry((f.order_id, f.line_no)).or_default().push(f);
    }
    for ((order, line), fs) in &lines {
        let first = fs[0];
        assert!(fs.iter().all(|f| (f.sku, f.seller_id, f.category_id)
            == (first.sku, first.seller_id, first.category_id)));
        let placed = &v.sales_facts[&format!("{order}:{line}:placed")];
        let paid = v.sales_facts.get(&format!("{order}:{line}:paid"));
        let removed: i64 = fs
            .iter()
            .filter(|f| matches!(f.effect, Cancelled | Refunded))
            .map(|f| f.qty)
            .sum();
        assert!(placed.qty + removed >= 0);
        if paid.is_none() {
            assert!(fs.iter().all(|f| matches!(f.effect, Placed | Cancelled)));
        }
    }

    // The rollups add up the facts.
    let mut gross = 0i64;
    let mut refunds = 0i64;
    let mut paid_orders: BTreeSet<(u64, u64, u64)> = BTreeSet::new();
    for f in v.sales_facts.values() {
        match f.effect {
            Paid => {
                gross += f.amount;
                paid_orders.insert((f.seller_id, f.ts - f.ts % MIN, f.order_id));
            }
            Refunded => refunds -= f.amount,
            Cancelled
                if v.sales_facts
                    .contains_key(&format!("{}:{}:paid", f.order_id, f.line_no)) =>
            {
                refunds -= f.amount
            }
            _ => {}
        }
    }
    assert!(gross > 0 && refunds > 0);
    assert_eq!(
        v.sales_minutes.values().map(|m| m.gross).sum::<i64>(),
        gross
    );
    assert_eq!(
        v.sales_minutes.values().map(|m| m.refunds).sum::<i64>(),
        refunds
    );
    assert_eq!(
        v.sales_minutes.values().map(|m| m.orders).sum::<u64>(),
        paid_orders.len() as u64
    );
    for (&(seller, start), m) in &v.sales_minutes {
        assert_eq!((m.seller_id, m.minute), (seller, start));
        assert_eq!(start % MIN, 0);
        assert_eq!(m.net, m.gross - m.refunds);
    }
}
