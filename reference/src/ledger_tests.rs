//! Hand-computed cases for members, points and settlements.

use serde_json::{json, Value};
use shopflow_model::{EntryCause, Grade, MemberView, Payout, SettlementEntry, TaxInvoice};

use crate::{compute, Config, Views};

const DAY: u64 = 86_400_000;
const WINDOW: u64 = 183 * DAY;
/// 2024-02-27 11:13:20 KST, a Tuesday.
const T0: u64 = 1_709_000_000_000;
/// Sunday 2024-03-03 23:59:59.999 KST.
const SUN_LAST: u64 = 1_709_477_999_999;
/// Monday 2024-03-04 00:00 KST.
const MON: u64 = 1_709_478_000_000;
/// Monday 2024-02-26 00:00 KST.
const WEEK_FEB26: u64 = 1_708_873_200_000;
/// 2024-02-01 00:00 KST.
const FEB: u64 = 1_706_713_200_000;
/// 2024-03-01 00:00 KST.
const MARCH: u64 = 1_709_218_800_000;

/// A single-stream log built event by event (shared with the sales tests).
#[derive(Default)]
pub(crate) struct Log {
    msgs: Vec<Vec<u8>>,
}

impl Log {
    pub(crate) fn push(&mut self, ty: &str, ts: u64, fields: Value) -> &mut Self {
        let mut obj =
            json!({"event_id": format!("e{}", self.msgs.len() + 1), "type": ty, "ts": ts});
        if let (Value::Object(o), Value::Object(f)) = (&mut obj, fields) {
            o.extend(f);
        }
        self.msgs.push(serde_json::to_vec(&obj).unwrap());
        self
    }

    pub(crate) fn category(&mut self, ts: u64, id: u64, bp: u64) -> &mut Self {
        self.push(
            "category.upserted",
            ts,
            json!({"category_id": id, "name": "c", "commission_bp": bp}),
        )
    }

    pub(crate) fn product(&mut self, ts: u64, sku: u64, seller: u64, category: u64) -> &mut Self {
        self.push(
            "product.upserted",
            ts,
            json!({"sku": sku, "seller_id": seller, "category_id": category, "name": "p", "price": 1}),
        )
    }

    pub(crate) fn member(&mut self, ty: &str, ts: u64, member: u64) -> &mut Self {
        self.push(ty, ts, json!({ "member_id": member }))
    }

    /// `order.placed` with lines (line_no, sku, qty, unit_price).
    pub(crate) fn place(
        &mut self,
        ts: u64,
        order: u64,
        member: u64,
        lines: &[(u64, u64, u64, u64)],
    ) -> &mut Self {
        let lines: Vec<Value> = lines
            .iter()
            .map(|&(no, sku, qty, price)| json!({"line_no": no, "sku": sku, "qty": qty, "unit_price": price}))
            .collect();
        self.push(
            "order.placed",
            ts,
            json!({"order_id": order, "member_id": member, "shipping": "rocket", "lines": lines}),
        )
    }

    pub(crate) fn step(&mut self, ty: &str, ts: u64, order: u64) -> &mut Self {
        self.push(ty, ts, json!({ "order_id": order }))
    }

    pub(crate) fn pay(&mut self, ts: u64, order: u64, amount: u64) -> &mut Self {
        self.push(
            "payment.approved",
            ts,
            json!({"order_id": order, "amount": amount}),
        )
    }

    /// Placed, paid, shipped and delivered at `ts`, `ts + 1`, `ts + 2`, `ts + 3`.
    pub(crate) fn delivered(
        &mut self,
        ts: u64,
        order: u64,
        member: u64,
        lines: &[(u64, u64, u64, u64)],
        amount: u64,
    ) -> &mut Self {
        self.place(ts, order, member, lines)
            .pay(ts + 1, order, amount)
            .step("order.shipped", ts + 2, order)
            .step("order.delivered", ts + 3, order)
    }

    pub(crate) fn confirm(&mut self, ts: u64, order: u64) -> &mut Self {
        self.step("order.confirmed", ts, order)
    }

    /// `return.requested` at `ts − 1`, then `refund.completed` at `ts` of (line_no, qty).
    pub(crate) fn refund(
        &mut self,
        ts: u64,
        order: u64,
        amount: u64,
        lines: &[(u64, u64)],
    ) -> &mut Self {
        let lines: Vec<Value> = lines
            .iter()
            .map(|&(no, qty)| json!({"line_no": no, "qty": qty}))
            .collect();
        self.push(
            "return.requested",
            ts - 1,
            json!({"order_id": order, "reason": "x"}),
        )
        .push(
            "refund.completed",
            ts,
            json!({"order_id": order, "amount": amount, "restock": true, "lines": lines}),
        )
    }

    pub(crate) fn run(&self) -> Views {
        let v = compute(std::slice::from_ref(&self.msgs), Config::default());
        assert!(v.dead_letters.is_empty(), "{:?}", v.dead_letters);
        v
    }
}

fn member(id: u64, spend: i64, wow: bool) -> MemberView {
    let grade = Grade::of_spend(spend as i128);
    MemberView {
        member_id: id,
        grade,
        spend_6m: spend,
        accrual_bp: grade.accrual_bp(),
        wow,
    }
}

/// (member, ts, from, to) of every grade alert.
fn grade_alerts(v: &Views) -> Vec<(u64, u64, Grade, Grade)> {
    v.alerts
        .iter()
        .filter_map(|a| match a.body {
            shopflow_model::AlertBody::GradeChanged {
                member_id,
                from,
                to,
            } => Some((member_id, a.ts, from, to)),
            _ => None,
        })
        .collect()
}

/// (id, ts, rate_bp, amount, points) of every points entry.
fn points(v: &Views) -> Vec<(String, u64, u32, i64, i64)> {
    v.points
        .values()
        .map(|e| (e.id.clone(), e.ts, e.rate_bp, e.amount, e.points))
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn entry(
    order: u64,
    line: u64,
    sku: u64,
    refund: Option<u32>,
    ts: u64,
    seller: u64,
    qty: u64,
    unit_price: u64,
    bp: u32,
) -> SettlementEntry {
    let (g, c, f, p) = SettlementEntry::amounts(qty, unit_price, bp);
    let (cause, n, sign) = match refund {
        None => (EntryCause::Confirmed, 0, 1),
        Some(n) => (EntryCause::Refund, n, -1),
    };
    SettlementEntry {
        id: SettlementEntry::entry_id(order, line, cause, n),
        seller_id: seller,
        order_id: order,
        line_no: line,
        sku,
        cause,
        ts,
        qty: sign * qty as i64,
        unit_price: unit_price as i64,
        commission_bp: bp,
        gross: sign * g,
        commission: sign * c,
        payment_fee: sign * f,
        payout: sign * p,
    }
}

#[test]
fn grades_at_the_spend_boundaries() {
    let mut log = Log::default();
    for (m, paid) in [(1, 99_999), (2, 100_000), (3, 500_000), (4, 1_000_000)] {
        log.place(T0 + 10 * m, m, m, &[(1, 1, 1, paid)])
            .pay(T0 + 10 * m + 1, m, paid);
    }
    log.member("member.joined", T0 + 100, 5);
    let v = log.run();
    let want: Vec<MemberView> = vec![
        member(1, 99_999, false),
        member(2, 100_000, false),
        member(3, 500_000, false),
        member(4, 1_000_000, false),
        member(5, 0, false),
    ];
    assert_eq!(v.members.values().copied().collect::<Vec<_>>(), want);
    assert_eq!(
        want.iter()
            .map(|m| (m.grade, m.accrual_bp))
            .collect::<Vec<_>>(),
        [
            (Grade::Bronze, 100),
            (Grade::Silver, 200),
            (Grade::Gold, 300),
            (Grade::Vip, 500),
            (Grade::Bronze, 100)
        ]
    );
    assert_eq!(
        grade_alerts(&v),
        [
            (2, T0 + 21, Grade::Bronze, Grade::Silver),
            (3, T0 + 31, Grade::Bronze, Grade::Gold),
            (4, T0 + 41, Grade::Bronze, Grade::Vip),
        ]
    );
    assert_eq!(
        v.alerts.last().unwrap().event_id,
        format!("member.grade_changed:4:{}", T0 + 41)
    );
    assert!(v.points.is_empty() && v.settlements.is_empty() && v.sellers.is_empty());
}

#[test]
fn a_payment_counts_for_183_days_exactly() {
    let p = T0;
    let mut log = Log::default();
    log.place(p, 1, 1, &[(1, 1, 1, 100_000)])
        .pay(p, 1, 100_000)
        .place(p + 1, 2, 2, &[(1, 1, 1, 100_000)])
        .pay(p + 1, 2, 100_000)
        // The final as_of: 183 days after member 1's payment, 183 d − 1 ms after member 2's.
        .member("member.joined", p + WINDOW, 3);
    let v = log.run();
    assert_eq!(v.as_of, Some(p + WINDOW));
    assert_eq!(v.members[&1], member(1, 0, false));
    assert_eq!(v.members[&2], member(2, 100_000, false));
    assert_eq!(v.members[&3], member(3, 0, false));
    assert_eq!(
        grade_alerts(&v),
        [
            (1, p, Grade::Bronze, Grade::Silver),
            (2, p + 1, Grade::Bronze, Grade::Silver),
            // Member 2's payment leaves the window at p + 1 + 183 d, after the final as_of.
            (1, p + WINDOW, Grade::Silver, Grade::Bronze),
        ]
    );
}

#[test]
fn a_late_payment_counts_from_its_applied_time_for_183_days_from_its_effective_time() {
    let mut log = Log::default();
    log.member("member.joined", 1_000_000, 9) // moves the stream's frontier floor to 995,000
        .place(100_000, 1, 1, &[(1, 1, 1, 100_000)])
        .pay(100_001, 1, 100_000) // effective 100,001, applied at 995,000
        .member("member.joined", 100_001 + WINDOW, 9);
    let v = log.run();
    assert_eq!(v.members[&1], member(1, 0, false));
    assert_eq!(
        grade_alerts(&v),
        [
            (1, 995_000, Grade::Bronze, Grade::Silver),
            (1, 100_001 + WINDOW, Grade::Silver, Grade::Bronze),
        ]
    );
}

#[test]
fn grade_rises_and_falls_and_refunds_keep_the_frozen_rate() {
    let mut log = Log::default();
    log.delivered(T0, 1, 1, &[(1, 10, 1, 600_001)], 600_001) // paid at T0 + 1: GOLD
        .confirm(T0 + 4, 1) // rate 300
        .refund(T0 + 6, 1, 200_033, &[]) // spend 399,968: SILVER
        .delivered(T0 + 7, 2, 1, &[(1, 10, 1, 700_000)], 700_000) // paid at T0 + 8: VIP
        .confirm(T0 + 11, 2) // rate 500
        .refund(T0 + 13, 1, 100_000, &[(1, 1)]) // spend 999,968: GOLD; order 1 fully refunded
        .place(T0 + 14, 3, 1, &[(1, 10, 1, 50_000)])
        .pay(T0 + 15, 3, 50_000) // spend 1,049,968: VIP
        .step("order.cancelled", T0 + 16, 3); // spend 999,968: GOLD
    let v = log.run();
    assert_eq!(v.members[&1], member(1, 999_968, false));
    assert_eq!(
        grade_alerts(&v),
        [
            (1, T0 + 1, Grade::Bronze, Grade::Gold),
            (1, T0 + 6, Grade::Gold, Grade::Silver),
            (1, T0 + 8, Grade::Silver, Grade::Vip),
            (1, T0 + 13, Grade::Vip, Grade::Gold),
            (1, T0 + 15, Grade::Gold, Grade::Vip),
            (1, T0 + 16, Grade::Vip, Grade::Gold),
        ]
    );
    assert_eq!(
        points(&v),
        [
            // 600,001 × 3 % = 18,000.03; 200,033 × 3 % = 6,000.99 at the rate frozen at GOLD.
            ("1:confirmed".into(), T0 + 4, 300, 600_001, 18_000),
            ("1:refund:1".into(), T0 + 6, 300, -200_033, -6_000),
            ("1:refund:2".into(), T0 + 13, 300, -100_000, -3_000),
            ("2:confirmed".into(), T0 + 11, 500, 700_000, 35_000),
        ]
    );
    let e = &v.points["1:refund:1"];
    assert_eq!(
        (e.member_id, e.order_id, e.cause),
        (1, 1, EntryCause::Refund)
    );
    // SKU 10 is not in the catalog: no settlement entries yet.
    assert!(v.settlements.is_empty());
}

#[test]
fn sunday_last_millisecond_and_monday_midnight_are_different_weeks() {
    let mut log = Log::default();
    log.category(SUN_LAST - 10 * DAY, 1, 1000)
        .product(SUN_LAST - 10 * DAY, 10, 7, 1)
        .delivered(SUN_LAST - 5 * DAY, 1, 1, &[(1, 10, 2, 10_000)], 20_000)
        .delivered(SUN_LAST - 4 * DAY, 2, 2, &[(1, 10, 2, 10_000)], 20_000)
        .confirm(SUN_LAST, 1)
        .confirm(MON, 2);
    let v = log.run();
    assert_eq!(
        v.settlements.values().cloned().collect::<Vec<_>>(),
        [
            entry(1, 1, 10, None, SUN_LAST, 7, 2, 10_000, 1000),
            entry(2, 1, 10, None, MON, 7, 2, 10_000, 1000),
        ]
    );
    let e = &v.settlements["1:1:confirmed"];
    assert_eq!(
        (e.gross, e.commission, e.payment_fee, e.payout),
        (20_000, 2_000, 500, 17_500)
    );
    assert_eq!(
        v.payouts.values().copied().collect::<Vec<_>>(),
        [
            Payout {
                seller_id: 7,
                week_start: WEEK_FEB26,
                amount: 17_500,
                entries: 1
            },
            Payout {
                seller_id: 7,
                week_start: MON,
                amount: 17_500,
                entries: 1
            },
        ]
    );
    assert_eq!(
        v.invoices.values().copied().collect::<Vec<_>>(),
        [TaxInvoice {
            seller_id: 7,
            month_start: MARCH,
            supply: 5_000,
            vat: 500,
            total: 5_500,
            entries: 2
        }]
    );
    assert_eq!(v.sellers.iter().copied().collect::<Vec<_>>(), [7]);
    assert_eq!(
        points(&v),
        [
            ("1:confirmed".into(), SUN_LAST, 100, 20_000, 200),
            ("2:confirmed".into(), MON, 100, 20_000, 200),
        ]
    );
}

#[test]
fn a_month_with_only_refunds_has_a_negative_invoice() {
    let mut log = Log::default();
    log.category(FEB, 1, 1080)
        .product(FEB, 10, 7, 1)
        .delivered(MARCH - 3 * DAY, 1, 1, &[(1, 10, 3, 33_333)], 99_999)
        .confirm(MARCH - DAY, 1) // Thursday 2024-02-29
        .refund(MARCH + DAY, 1, 33_333, &[(1, 1)]); // Saturday 2024-03-02, same week
    let v = log.run();
    // 3 × 33,333 = 99,999 at 10.8 %: commission 10,799, fee 2,499, payout 86,701.
    // 1 × 33,333: commission 3,599, fee 833, payout 28,901.
    assert_eq!(
        v.settlements.values().cloned().collect::<Vec<_>>(),
        [
            entry(1, 1, 10, None, MARCH - DAY, 7, 3, 33_333, 1080),
            entry(1, 1, 10, Some(1), MARCH + DAY, 7, 1, 33_333, 1080),
        ]
    );
    assert_eq!(
        v.invoices.values().copied().collect::<Vec<_>>(),
        [
            TaxInvoice::new(7, FEB, 13_298, 1),
            TaxInvoice {
                seller_id: 7,
                month_start: MARCH,
                supply: -4_432,
                vat: -443,
                total: -4_875,
                entries: 1
            },
        ]
    );
    assert_eq!(
        v.payouts.values().copied().collect::<Vec<_>>(),
        [Payout {
            seller_id: 7,
            week_start: WEEK_FEB26,
            amount: 86_701 - 28_901,
            entries: 2
        }]
    );
    assert_eq!(
        points(&v),
        [
            ("1:confirmed".into(), MARCH - DAY, 100, 99_999, 999),
            ("1:refund:1".into(), MARCH + DAY, 100, -33_333, -333),
        ]
    );
}

#[test]
fn a_refund_keeps_the_seller_and_rate_of_the_confirmation() {
    let mut log = Log::default();
    log.category(T0, 1, 1000)
        .category(T0, 2, 1500)
        .product(T0, 10, 7, 1)
        .delivered(T0 + 1, 1, 1, &[(1, 10, 2, 10_000)], 20_000)
        .delivered(T0 + 5, 2, 2, &[(1, 10, 1, 10_000)], 10_000)
        .confirm(T0 + 10, 1)
        .product(T0 + 11, 10, 8, 2) // new seller, new category
        .category(T0 + 12, 1, 500) // and the old category's rate changes
        .refund(T0 + 14, 1, 10_000, &[(1, 1)])
        .confirm(T0 + 15, 2);
    let v = log.run();
    assert_eq!(
        v.settlements.values().cloned().collect::<Vec<_>>(),
        [
            entry(1, 1, 10, None, T0 + 10, 7, 2, 10_000, 1000),
            entry(1, 1, 10, Some(1), T0 + 14, 7, 1, 10_000, 1000),
            entry(2, 1, 10, None, T0 + 15, 8, 1, 10_000, 1500),
        ]
    );
    assert_eq!(v.sellers.iter().copied().collect::<Vec<_>>(), [7, 8]);
    let week = WEEK_FEB26;
    assert_eq!(v.payouts[&(7, week)].amount, 17_500 - 8_750);
    assert_eq!(v.payouts[&(7, week)].entries, 2);
    assert_eq!(v.payouts[&(8, week)].amount, 10_000 - 1_500 - 250);
    assert_eq!(v.invoices[&(7, FEB)].supply, 2_500 - 1_250);
}

#[test]
fn catalog_arriving_after_the_confirmation_dates_the_entries() {
    let mut log = Log::default();
    log.category(T0, 1, 1000)
        .product(T0 + 1, 21, 5, 9) // category 9 is not known yet
        .delivered(
            T0 + 10,
            1,
            1,
            &[(1, 20, 3, 1_000), (2, 21, 1, 5_000), (3, 22, 1, 2_000)],
            10_000,
        )
        .refund(T0 + 15, 1, 1_000, &[(1, 1)]) // refund 1, before confirmation: q = 2
        .confirm(T0 + 20, 1)
        .product(T0 + 20, 22, 7, 1) // same time, later in the log: known "at c"
        .refund(T0 + 30, 1, 1_000, &[(1, 1)]) // refund 2, before SKU 20 is known
        .product(T0 + 40, 20, 7, 1) // SKU 20 known
        .category(T0 + 45, 9, 1200) // SKU 21's category known
        .refund(T0 + 60, 1, 6_000, &[(1, 1), (2, 1)]); // refund 3
    let v = log.run();
    assert_eq!(
        v.settlements.values().cloned().collect::<Vec<_>>(),
        [
            entry(1, 1, 20, None, T0 + 40, 7, 2, 1_000, 1000),
            entry(1, 1, 20, Some(2), T0 + 40, 7, 1, 1_000, 1000),
            entry(1, 1, 20, Some(3), T0 + 60, 7, 1, 1_000, 1000),
            entry(1, 2, 21, None, T0 + 45, 5, 1, 5_000, 1200),
            entry(1, 2, 21, Some(3), T0 + 60, 5, 1, 5_000, 1200),
            entry(1, 3, 22, None, T0 + 20, 7, 1, 2_000, 1000),
        ]
    );
    let week = WEEK_FEB26;
    assert_eq!(
        v.payouts.values().copied().collect::<Vec<_>>(),
        [
            Payout {
                seller_id: 5,
                week_start: week,
                amount: 0,
                entries: 2
            },
            Payout {
                seller_id: 7,
                week_start: week,
                amount: 1_750 + 1_750 - 875 - 875,
                entries: 4
            },
        ]
    );
    assert_eq!(
        points(&v),
        [
            ("1:confirmed".into(), T0 + 20, 100, 9_000, 90),
            ("1:refund:2".into(), T0 + 30, 100, -1_000, -10),
            ("1:refund:3".into(), T0 + 60, 100, -6_000, -60),
        ]
    );
    assert_eq!(v.sellers.iter().copied().collect::<Vec<_>>(), [5, 7]);
}

#[test]
fn recent_orders_and_wow() {
    let mut log = Log::default();
    log.member("wow.subscribed", T0, 1)
        .member("wow.cancelled", T0 + 1, 1)
        .member("wow.subscribed", T0 + 2, 1)
        .member("wow.subscribed", T0 + 3, 2)
        .member("wow.cancelled", T0 + 4, 2)
        .member("wow.cancelled", T0 + 5, 3); // a no-op while not subscribed
                                             // Member 4 places 22 orders, three at each placement time.
    for id in 1..=22u64 {
        log.place(T0 + 10 + id / 3, id, 4, &[(1, 1, 1, 1)]);
    }
    let v = log.run();
    assert_eq!(
        v.members.values().copied().collect::<Vec<_>>(),
        [
            member(1, 0, true),
            member(2, 0, false),
            member(3, 0, false),
            member(4, 0, false)
        ]
    );
    assert_eq!(v.member_orders.keys().copied().collect::<Vec<_>>(), [4]);
    assert_eq!(
        v.member_orders[&4].order_ids,
        [22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3]
    );
    // Ties at one placement time: the larger id first (ids 3, 4, 5 share T0 + 11).
    let mut log = Log::default();
    log.place(T0 + 5, 9, 1, &[(1, 1, 1, 1)])
        .place(T0 + 5, 3, 1, &[(1, 1, 1, 1)])
        .place(T0 + 6, 1, 1, &[(1, 1, 1, 1)]);
    assert_eq!(log.run().member_orders[&1].order_ids, [1, 9, 3]);
}

/// Invariants over a generated workload with late catalog entries and commission changes.
#[test]
fn generated_workload_is_consistent() {
    use std::collections::BTreeMap;
    let log = shopflow_gen::generate(&shopflow_gen::GenConfig {
        events: 12_000,
        skus: 300,
        members: 300,
        concurrency: 100,
        late_catalog_rate: 0.2,
        mean_gap_ms: 1_500_000, // ~200 days: payments leave the 183-day window
        ..shopflow_gen::GenConfig::default()
    });
    let msgs: Vec<Vec<u8>> = log.into_iter().map(|m| m.payload).collect();
    let v = compute(&[msgs], Config::default());
    let as_of = v.as_of.unwrap();

    // The grade alerts of each member chain from BRONZE to the member's grade.
    let mut last: BTreeMap<u64, Grade> = BTreeMap::new();
    let mut falls = 0;
    for (m, _, from, to) in grade_alerts(&v) {
        assert_eq!(last.insert(m, to).unwrap_or(Grade::Bronze), from);
        falls += usize::from(to < from);
    }
    for m in v.members.values() {
        assert_eq!(
            last.get(&m.member_id).copied().unwrap_or(Grade::Bronze),
            m.grade
        );
        assert!(m.spend_6m >= 0);
    }
    assert!(falls > 0, "no grade fell");

    // Every confirmed order has a points entry; entries are never after as_of.
    for o in v.orders.values() {
        let confirmed = o
            .history
            .iter()
            .any(|h| h.status == shopflow_model::OrderStatus::Confirmed);
        assert_eq!(
            confirmed,
            v.points.contains_key(&format!("{}:confirmed", o.order_id))
        );
    }
    assert!(v.points.values().all(|e| e.ts <= as_of));

    // Entries per line never settle more units than confirmed; some wait for the catalog.
    let mut units: BTreeMap<(u64, u64), i64> = BTreeMap::new();
    let mut waited = 0;
    for e in v.settlements.values() {
        *units.entry((e.order_id, e.line_no)).or_default() += e.qty;
        if e.cause == EntryCause::Confirmed {
            let c = v.points[&format!("{}:confirmed", e.order_id)].ts;
            assert!(e.ts >= c);
            waited += usize::from(e.ts > c);
        }
        assert!(e.ts <= as_of);
    }
    assert!(units.values().all(|&q| q >= 0));
    assert!(waited > 0, "no settlement entry waited for the catalog");
    let rates: std::collections::BTreeSet<u32> =
        v.settlements.values().map(|e| e.commission_bp).collect();
    assert!(rates.len() > 30, "commission rates: {rates:?}");

    // Payouts and invoices add up the entries.
    let total: i128 = v.settlements.values().map(|e| e.payout as i128).sum();
    assert_eq!(v.payouts.values().map(|p| p.amount).sum::<i128>(), total);
    let n = v.settlements.len() as u64;
    assert_eq!(v.payouts.values().map(|p| p.entries).sum::<u64>(), n);
    assert_eq!(v.invoices.values().map(|i| i.entries).sum::<u64>(), n);
    assert!(v.sellers.len() > 50);
}
