//! The reference model: a plain, sequential batch computation of shopflow's views from an
//! event log, written to be obviously correct rather than fast. Tests compare the
//! dataflow's sinks with it.
//!
//! It shares only the schema decoder with the pipeline (`shopflow_ingest::decode`, tested
//! on its own); dedup, the order life cycle, times and every view are computed here
//! independently, straight from SPEC §2–§5.
#![forbid(missing_docs)]
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use shopflow_ingest::decode;
use shopflow_model::{
    Alert, AlsoBought, DeadLetterReason, Event, EventBody, MemberOrders, MemberView, Millis,
    OrderStatus, OrderView, Payout, PointsEntry, RatingView, SalesFact, SalesMinute,
    SettlementEntry, StatusChange, StockLevel, TaxInvoice,
};

#[cfg(test)]
mod ledger_tests;
mod ledgers;
mod sales;
#[cfg(test)]
mod sales_tests;

/// Settings that change the views.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Allowed lateness.
    pub lateness_ms: Millis,
    /// Dedup horizon.
    pub dedup_horizon_ms: Millis,
    /// Low-stock threshold.
    pub low_stock_threshold: i64,
    /// Baskets with more distinct SKUs are skipped.
    pub basket_max_skus: usize,
    /// How long a basket counts after payment.
    pub basket_window_ms: Millis,
    /// Recommendations per SKU.
    pub also_bought_top: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            lateness_ms: 5_000,
            dedup_horizon_ms: 7 * 24 * 3600 * 1000,
            low_stock_threshold: 10,
            basket_max_skus: 50,
            basket_window_ms: 90 * 24 * 3600 * 1000,
            also_bought_top: 20,
        }
    }
}

/// A dead letter as the reference sees it: (stream, offset, reason).
pub type DeadLetterKey = (usize, i64, DeadLetterReason);

/// Every view the reference computes, as of the end of the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Views {
    /// Stock per known SKU.
    pub stock: BTreeMap<u64, StockLevel>,
    /// Orders.
    pub orders: BTreeMap<u64, OrderView>,
    /// Alerts (stock and grade changes) in (time, id) order.
    pub alerts: Vec<Alert>,
    /// Ratings of SKUs with at least one current review.
    pub ratings: BTreeMap<u64, RatingView>,
    /// Recommendations of SKUs bought together with at least one other.
    pub also_bought: BTreeMap<u64, AlsoBought>,
    /// Every known member as of the final `as_of`.
    pub members: BTreeMap<u64, MemberView>,
    /// The 20 most recent orders (by placement) of every member with orders.
    pub member_orders: BTreeMap<u64, MemberOrders>,
    /// The points ledger, by entry id.
    pub points: BTreeMap<String, PointsEntry>,
    /// Settlement entries, by entry id.
    pub settlements: BTreeMap<String, SettlementEntry>,
    /// Weekly payouts, by (seller, week start).
    pub payouts: BTreeMap<(u64, Millis), Payout>,
    /// Monthly tax invoices, by (seller, month start).
    pub invoices: BTreeMap<(u64, Millis), TaxInvoice>,
    /// Sales facts (SPEC §5.5), by id: one per order line and effect, dated by the applied
    /// time of the effect's event, for lines whose SKU is known by the final `as_of`.
    pub sales_facts: BTreeMap<String, SalesFact>,
    /// Sales rollups, by (seller, minute start): only minutes with a paid, refunded or
    /// cancelled-after-payment fact of the seller.
    pub sales_minutes: BTreeMap<(u64, Millis), SalesMinute>,
    /// Known sellers: every seller an accepted `product.upserted` names.
    pub sellers: BTreeSet<u64>,
    /// Dead letters in (stream, offset) order.
    pub dead_letters: Vec<DeadLetterKey>,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Events accepted.
    pub accepted: u64,
    /// The final `as_of`: the largest effective time accepted.
    pub as_of: Option<Millis>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    Placed,
    Paid,
    Failed,
    Cancelled,
    Shipped,
    Delivered,
    Confirmed,
}

#[derive(Clone, Debug)]
struct Line {
    sku: u64,
    qty: u64,
    refunded: u64,
    restocked: u64,
}

#[derive(Clone, Debug)]
struct Order {
    id: u64,
    member: u64,
    stage: Stage,
    open_return: bool,
    lines: BTreeMap<u64, Line>,
    paid: u64,
    paid_at: Option<Millis>,
    refunded: u64,
    last: Millis,
    location: Option<String>,
    history: Vec<StatusChange>,
}

impl Order {
    fn all_refunded(&self) -> bool {
        self.lines.values().all(|l| l.refunded == l.qty)
    }

    fn status(&self) -> OrderStatus {
        if self.open_return {
            return OrderStatus::ReturnRequested;
        }
        if self.all_refunded() {
            return OrderStatus::Refunded;
        }
        match self.stage {
            Stage::Placed => OrderStatus::Placed,
            Stage::Paid => OrderStatus::Paid,
            Stage::Failed => OrderStatus::Failed,
            Stage::Cancelled => OrderStatus::Cancelled,
            Stage::Shipped => OrderStatus::Shipped,
            Stage::Delivered => OrderStatus::Delivered,
            Stage::Confirmed => OrderStatus::Confirmed,
        }
    }

    /// Applies `body`; returns the reason when it is not allowed (state untouched then).
    fn step(&mut self, body: &EventBody, t: Millis) -> Result<(), DeadLetterReason> {
        use DeadLetterReason::{Lifecycle, OutOfRange};
        let old_status = self.status();
        let mut next = self.clone();
        match body {
            EventBody::PaymentApproved { amount, .. } if self.stage == Stage::Placed => {
                next.stage = Stage::Paid;
                next.paid = *amount;
                next.paid_at = Some(t);
            }
            EventBody::PaymentFailed { .. } if self.stage == Stage::Placed => {
                next.stage = Stage::Failed
            }
            EventBody::OrderCancelled { .. }
                if self.stage == Stage::Placed || self.stage == Stage::Paid =>
            {
                next.stage = Stage::Cancelled
            }
            EventBody::OrderShipped { .. } if self.stage == Stage::Paid => {
                next.stage = Stage::Shipped
            }
            EventBody::DeliveryUpdated { location, .. } if self.stage == Stage::Shipped => {
                next.location = Some(location.clone())
            }
            EventBody::OrderDelivered { .. } if self.stage == Stage::Shipped => {
                next.stage = Stage::Delivered
            }
            EventBody::OrderConfirmed { .. }
                if self.stage == Stage::Delivered && !self.open_return && !self.all_refunded() =>
            {
                next.stage = Stage::Confirmed
            }
            EventBody::ReturnRequested { .. }
                if (self.stage == Stage::Delivered || self.stage == Stage::Confirmed)
                    && !self.open_return
                    && !self.all_refunded() =>
            {
                next.open_return = true
            }
            EventBody::ReturnRejected { .. } if self.open_return => next.open_return = false,
            EventBody::RefundCompleted {
                amount,
                restock,
                lines,
                ..
            } => {
                if lines.iter().any(|l| !self.lines.contains_key(&l.line_no)) {
                    return Err(OutOfRange);
                }
                if !self.open_return {
                    return Err(Lifecycle);
                }
                for rl in lines {
                    let l = next.lines.get_mut(&rl.line_no).expect("checked");
                    if l.refunded + rl.qty > l.qty {
                        return Err(Lifecycle);
                    }
                    l.refunded += rl.qty;
                    if *restock {
                        l.restocked += rl.qty;
                    }
                }
                if self.refunded + amount > self.paid {
                    return Err(Lifecycle);
                }
                next.refunded += amount;
                next.open_return = false;
            }
            _ => return Err(Lifecycle),
        }
        next.last = t;
        let new_status = next.status();
        if new_status != old_status {
            next.history.push(StatusChange {
                status: new_status,
                ts: t,
            });
        }
        *self = next;
        Ok(())
    }

    fn view(&self) -> OrderView {
        OrderView {
            order_id: self.id,
            member_id: self.member,
            status: self.status(),
            location: self.location.clone(),
            history: self.history.clone(),
        }
    }
}

fn new_order(body: &EventBody, t: Millis) -> Option<Order> {
    let EventBody::OrderPlaced {
        order_id,
        member_id,
        lines,
        ..
    } = body
    else {
        return None;
    };
    Some(Order {
        id: *order_id,
        member: *member_id,
        stage: Stage::Placed,
        open_return: false,
        lines: lines
            .iter()
            .map(|l| {
                (
                    l.line_no,
                    Line {
                        sku: l.sku,
                        qty: l.qty,
                        refunded: 0,
                        restocked: 0,
                    },
                )
            })
            .collect(),
        paid: 0,
        paid_at: None,
        refunded: 0,
        last: t,
        location: None,
        history: vec![StatusChange {
            status: OrderStatus::Placed,
            ts: t,
        }],
    })
}

/// An accepted event with its effective and applied times.
#[derive(Clone, Debug)]
struct Applied {
    event: Event,
    effective: Millis,
    time: Millis,
    stream: usize,
    offset: i64,
}

/// Computes every view from `streams` (each a list of raw messages in log order).
pub fn compute(streams: &[Vec<Vec<u8>>], config: Config) -> Views {
    let mut views = Views::default();
    let mut applied: Vec<Applied> = Vec::new();

    // Pass 1: validation, stream by stream. Dedup and order state are per stream (SPEC keys
    // every order's events to one partition; see docs/architecture.md).
    for (s, messages) in streams.iter().enumerate() {
        let mut seen: HashMap<String, Millis> = HashMap::new();
        let mut orders: HashMap<u64, Order> = HashMap::new();
        let mut max_effective: Option<Millis> = None;
        for (offset, bytes) in messages.iter().enumerate() {
            let offset = offset as i64;
            let event = match decode(bytes) {
                Ok(e) => e,
                Err(r) => {
                    views.dead_letters.push((s, offset, r.reason));
                    continue;
                }
            };
            match seen.get(&event.event_id) {
                Some(&first) if event.ts <= first + config.dedup_horizon_ms => {
                    views.duplicates += 1;
                    continue;
                }
                _ => {
                    seen.insert(event.event_id.clone(), event.ts);
                }
            }
            let effective = match event.body.order_id() {
                None => event.ts,
                Some(id) => {
                    if matches!(event.body, EventBody::OrderPlaced { .. }) {
                        if orders.contains_key(&id) {
                            views
                                .dead_letters
                                .push((s, offset, DeadLetterReason::Lifecycle));
                            continue;
                        }
                        orders.insert(id, new_order(&event.body, event.ts).expect("placed"));
                        event.ts
                    } else {
                        let Some(order) = orders.get_mut(&id) else {
                            views
                                .dead_letters
                                .push((s, offset, DeadLetterReason::UnknownOrder));
                            continue;
                        };
                        let t = event.ts.max(order.last);
                        if let Err(reason) = order.step(&event.body, t) {
                            views.dead_letters.push((s, offset, reason));
                            continue;
                        }
                        t
                    }
                }
            };
            let floor = max_effective.map_or(0, |m| m.saturating_sub(config.lateness_ms));
            let time = effective.max(floor);
            max_effective = Some(max_effective.map_or(effective, |m| m.max(effective)));
            views.accepted += 1;
            views.as_of = Some(views.as_of.map_or(effective, |a| a.max(effective)));
            applied.push(Applied {
                event,
                effective,
                time,
                stream: s,
                offset,
            });
        }
    }

    // An order id placed in several streams (hostile input) belongs to the placement
    // applied first (ties: the smaller placement body); the other streams' events of that id
    // are left out.
    let mut owner: HashMap<u64, (Millis, &EventBody, usize)> = HashMap::new();
    for a in &applied {
        if let (EventBody::OrderPlaced { .. }, Some(id)) = (&a.event.body, a.event.body.order_id())
        {
            let candidate = (a.time, &a.event.body, a.stream);
            let best = owner.entry(id).or_insert(candidate);
            if (candidate.0, candidate.1) < (best.0, best.1) {
                *best = candidate;
            }
        }
    }
    let owner: HashMap<u64, usize> = owner.into_iter().map(|(id, o)| (id, o.2)).collect();
    applied.retain(|a| {
        a.event
            .body
            .order_id()
            .is_none_or(|id| owner.get(&id) == Some(&a.stream))
    });

    // Pass 2: replay accepted events in time order, reading the stock after each time.
    applied.sort_by_key(|a| a.time); // stable: keeps log order within a time
    let mut direct: BTreeMap<u64, (i64, i64)> = BTreeMap::new(); // sku → (on_hand, known)
    let mut replay: HashMap<u64, Order> = HashMap::new();
    let mut last_available: HashMap<u64, i64> = HashMap::new();
    // The orders' share of each SKU's stock, (on_hand, reserved), kept up to date as orders
    // change, so the stock after each time is not summed over every order again (that is
    // quadratic in the log); checked against the full sum at the end.
    let mut from_orders: HashMap<u64, (i64, i64)> = HashMap::new();
    let mut i = 0;
    while i < applied.len() {
        let t = applied[i].time;
        let mut touched: BTreeSet<u64> = BTreeSet::new();
        while i < applied.len() && applied[i].time == t {
            let a = &applied[i];
            match &a.event.body {
                EventBody::StockReceived { sku, qty } => {
                    direct.entry(*sku).or_default().0 += *qty as i64;
                    touched.insert(*sku);
                }
                EventBody::StockAdjusted { sku, delta } => {
                    direct.entry(*sku).or_default().0 += delta;
                    touched.insert(*sku);
                }
                EventBody::ProductUpserted { sku, .. } | EventBody::ReviewPosted { sku, .. } => {
                    direct.entry(*sku).or_default().1 = 1;
                    touched.insert(*sku);
                }
                body => {
                    if let Some(id) = body.order_id() {
                        if let Some(o) = replay.get(&id) {
                            shift_stock(&mut from_orders, o, -1);
                        }
                        match replay.get_mut(&id) {
                            None => {
                                replay.insert(id, new_order(body, a.effective).expect("placed"));
                            }
                            Some(o) => o
                                .step(body, a.effective)
                                .expect("accepted events replay cleanly"),
                        }
                        shift_stock(&mut from_orders, &replay[&id], 1);
                        touched.extend(replay[&id].lines.values().map(|l| l.sku));
                    }
                }
            }
            i += 1;
        }
        for sku in touched {
            let (on_hand, reserved) = from_orders.get(&sku).copied().unwrap_or_default();
            let now = direct.get(&sku).map_or(0, |d| d.0) + on_hand - reserved;
            let before = last_available.insert(sku, now).unwrap_or(0);
            let th = config.low_stock_threshold;
            if (before >= th) != (now >= th) {
                views.alerts.push(Alert::stock(sku, t, now, th, now < th));
            }
        }
    }
    views.stock = stock_levels(&direct, &replay);
    for (sku, level) in &views.stock {
        let (on_hand, reserved) = from_orders.get(sku).copied().unwrap_or_default();
        assert_eq!(
            (direct.get(sku).map_or(0, |d| d.0) + on_hand, reserved),
            (level.on_hand, level.reserved),
            "reference: the running stock of SKU {sku} differs from the full sum"
        );
    }
    views.orders = replay.values().map(|o| (o.id, o.view())).collect();
    views.ratings = ratings(&applied);
    if let Some(t) = views.as_of {
        views.also_bought = also_bought(&replay, t, &config);
        let l = ledgers::ledgers(&applied, t);
        views.members = l.members;
        views.member_orders = l.member_orders;
        views.points = l.points;
        views.settlements = l.settlements;
        views.payouts = l.payouts;
        views.invoices = l.invoices;
        views.sellers = l.sellers;
        views.alerts.extend(l.grade_alerts);
        let s = sales::sales(&applied, t);
        views.sales_facts = s.facts;
        views.sales_minutes = s.minutes;
    }
    views
        .alerts
        .sort_by(|a, b| (a.ts, &a.event_id).cmp(&(b.ts, &b.event_id)));
    views
}

/// Ratings straight from SPEC §5.6: replay review events in time order (ties by stream,
/// then offset); a post sets the review, a delete removes it.
fn ratings(applied: &[Applied]) -> BTreeMap<u64, RatingView> {
    let mut events: Vec<&Applied> = applied
        .iter()
        .filter(|a| {
            matches!(
                a.event.body,
                EventBody::ReviewPosted { .. } | EventBody::ReviewDeleted { .. }
            )
        })
        .collect();
    events.sort_by_key(|a| (a.time, a.stream, a.offset));
    let mut current: HashMap<u64, (u64, u64)> = HashMap::new();
    for a in events {
        match a.event.body {
            EventBody::ReviewPosted {
                review_id,
                sku,
                rating,
                ..
            } => {
                current.insert(review_id, (sku, rating));
            }
            EventBody::ReviewDeleted { review_id } => {
                current.remove(&review_id);
            }
            _ => {}
        }
    }
    let mut out: BTreeMap<u64, RatingView> = BTreeMap::new();
    for (sku, rating) in current.into_values() {
        let v = out.entry(sku).or_insert(RatingView {
            sku,
            ..RatingView::default()
        });
        v.count += 1;
        v.sum += rating;
        v.histogram[(rating - 1) as usize] += 1;
    }
    out
}

/// Co-purchase straight from SPEC §5.4: baskets as of `t`, pair counts, top k per SKU.
fn also_bought(
    orders: &HashMap<u64, Order>,
    t: Millis,
    config: &Config,
) -> BTreeMap<u64, AlsoBought> {
    let mut weight: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for o in orders.values() {
        let Some(p) = o.paid_at else { continue };
        let paid_or_later = matches!(
            o.stage,
            Stage::Paid | Stage::Shipped | Stage::Delivered | Stage::Confirmed
        );
        if !paid_or_later || o.all_refunded() || !(p <= t && t < p + config.basket_window_ms) {
            continue;
        }
        let skus: BTreeSet<u64> = o
            .lines
            .values()
            .filter(|l| l.refunded < l.qty)
            .map(|l| l.sku)
            .collect();
        if skus.len() > config.basket_max_skus {
            continue;
        }
        for &a in &skus {
            for &b in &skus {
                if a != b {
                    *weight.entry((a, b)).or_default() += 1;
                }
            }
        }
    }
    let mut per_sku: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    for ((a, b), w) in weight {
        per_sku.entry(a).or_default().push((b, w));
    }
    per_sku
        .into_iter()
        .map(|(sku, mut items)| {
            items.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
            items.truncate(config.also_bought_top);
            (sku, AlsoBought { sku, items })
        })
        .collect()
}

/// What one order contributes to the stock of its SKUs (SPEC §5.1):
/// `(sku, on_hand, reserved)` per line. A placed or paid order reserves its quantities; a
/// shipped, delivered or confirmed one has taken them off the shelf; restocked returns are
/// back on it.
fn order_stock(o: &Order) -> impl Iterator<Item = (u64, i64, i64)> + '_ {
    let reserving = matches!(o.stage, Stage::Placed | Stage::Paid);
    let shipped = matches!(
        o.stage,
        Stage::Shipped | Stage::Delivered | Stage::Confirmed
    );
    o.lines.values().map(move |l| {
        let qty = l.qty as i64;
        let on_hand = l.restocked as i64 - if shipped { qty } else { 0 };
        (l.sku, on_hand, if reserving { qty } else { 0 })
    })
}

/// Adds `sign` × what `o` contributes (see [`order_stock`]) to the orders' share of each
/// SKU's stock, `(on_hand, reserved)`.
fn shift_stock(shares: &mut HashMap<u64, (i64, i64)>, o: &Order, sign: i64) {
    for (sku, on_hand, reserved) in order_stock(o) {
        let share = shares.entry(sku).or_default();
        share.0 += sign * on_hand;
        share.1 += sign * reserved;
    }
}

/// Stock per SKU straight from SPEC §5.1: direct stock events plus every order's
/// contribution.
fn stock_levels(
    direct: &BTreeMap<u64, (i64, i64)>,
    orders: &HashMap<u64, Order>,
) -> BTreeMap<u64, StockLevel> {
    let mut out: BTreeMap<u64, StockLevel> = direct
        .iter()
        .map(|(&sku, &(on_hand, _))| {
            (
                sku,
                StockLevel {
                    sku,
                    on_hand,
                    reserved: 0,
                    available: 0,
                },
            )
        })
        .collect();
    for o in orders.values() {
        for (sku, on_hand, reserved) in order_stock(o) {
            let row = out.entry(sku).or_insert(StockLevel {
                sku,
                on_hand: 0,
                reserved: 0,
                available: 0,
            });
            row.on_hand += on_hand;
            row.reserved += reserved;
        }
    }
    for row in out.values_mut() {
        row.available = row.on_hand - row.reserved;
    }
    out
}
