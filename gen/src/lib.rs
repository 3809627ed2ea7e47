//! A seeded, realistic workload generator for shopflow.
//!
//! It plays a small marketplace: a catalog with skewed (Zipf-like) SKU popularity, stock
//! deliveries and corrections, members joining and (un)subscribing to Rocket WOW, and many
//! orders in flight at once going through full life cycles — payment failures, cancels,
//! delivery updates, confirmations, returns, rejected returns, partial and full refunds
//! with and without restock — plus reviews posted, replaced, moved and deleted. At chosen
//! rates it also sends bad events (every dead-letter reason), exact duplicates, and events
//! that arrive late. The same seed always gives the same log.
#![forbid(missing_docs)]
#![forbid(unsafe_code)]

mod churn;

pub use churn::{churn, ChurnConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

/// Which input topic a message belongs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TopicKind {
    /// `shop.catalog`
    Catalog,
    /// `shop.inventory`
    Inventory,
    /// `shop.members`
    Members,
    /// `shop.orders`
    Orders,
    /// `shop.reviews`
    Reviews,
}

/// One generated message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenMessage {
    /// Its topic.
    pub topic: TopicKind,
    /// The partitioning key (sku, category, member or order id).
    pub key: u64,
    /// The message bytes (usually JSON; bad events may be anything).
    pub payload: Vec<u8>,
}

/// Shape of the workload.
#[derive(Clone, Debug)]
pub struct GenConfig {
    /// Seed: the same seed gives the same log.
    pub seed: u64,
    /// Number of messages to produce (approximately: the catalog comes first).
    pub events: usize,
    /// Number of SKUs.
    pub skus: u64,
    /// Number of members.
    pub members: u64,
    /// Number of sellers.
    pub sellers: u64,
    /// Number of categories.
    pub categories: u64,
    /// Event time of the first event (ms since the epoch).
    pub start_ts: u64,
    /// Mean gap between consecutive events, in ms.
    pub mean_gap_ms: u64,
    /// Fraction of messages that are bad (each dead-letter reason in turn).
    pub bad_rate: f64,
    /// Fraction of messages that re-send an earlier message unchanged.
    pub duplicate_rate: f64,
    /// Fraction of events whose time lags behind the clock (some beyond the lateness).
    pub late_rate: f64,
    /// Orders in flight at once.
    pub concurrency: usize,
    /// Fraction of SKUs whose first `product.upserted` is withheld from the initial
    /// catalog and sent later, after roughly 1–3 % of `events`: orders for them can be
    /// confirmed before the SKU is known (SPEC §8, settlement entries wait for it).
    pub late_catalog_rate: f64,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            seed: 42,
            events: 100_000,
            skus: 2_000,
            members: 5_000,
            sellers: 100,
            categories: 30,
            // 2026-11-02T00:00:00Z
            start_ts: 1_793_577_600_000,
            mean_gap_ms: 200,
            bad_rate: 0.01,
            duplicate_rate: 0.005,
            late_rate: 0.02,
            concurrency: 500,
            late_catalog_rate: 0.0,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    Placed,
    Paid,
    Shipped,
    Delivered,
    Confirmed,
}

#[derive(Clone, Debug)]
struct Order {
    id: u64,
    stage: Stage,
    lines: Vec<(u64, u64, u64, u64)>, // line_no, sku, qty, unit_price
    refunded: Vec<u64>,
    paid: u64,
    refunded_amount: u64,
    open_return: bool,
    updates: u32,
}

impl Order {
    fn unrefunded(&self) -> bool {
        self.lines.iter().zip(&self.refunded).any(|(l, r)| *r < l.2)
    }
}

struct Gen {
    cfg: GenConfig,
    rng: ChaCha8Rng,
    out: Vec<GenMessage>,
    /// Clock time when each message of `out` was made.
    made_at: Vec<u64>,
    clock: u64,
    next_event: u64,
    next_order: u64,
    next_review: u64,
    zipf_cdf: Vec<f64>,
    prices: Vec<u64>,
    active: Vec<Order>,
    reviews: Vec<u64>,
    wow: Vec<bool>,
    /// (message count after which to send it, SKU) of withheld first product upserts,
    /// latest first.
    late_catalog: Vec<(usize, u64)>,
}

/// Generates a workload.
pub fn generate(cfg: &GenConfig) -> Vec<GenMessage> {
    let mut g = Gen::new(cfg.clone());
    g.run();
    g.out
}

impl Gen {
    fn new(cfg: GenConfig) -> Gen {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        // Zipf(1.1) popularity over SKUs.
        let mut cdf = Vec::with_capacity(cfg.skus as usize);
        let mut acc = 0.0;
        for k in 1..=cfg.skus {
            acc += 1.0 / (k as f64).powf(1.1);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        let prices = (0..cfg.skus)
            .map(|_| rng.random_range(10..2_000u64) * 100)
            .collect();
        Gen {
            clock: cfg.start_ts,
            wow: vec![false; cfg.members as usize + 1],
            cfg,
            rng,
            out: Vec::new(),
            made_at: Vec::new(),
            next_event: 1,
            next_order: 1,
            next_review: 1,
            zipf_cdf: cdf,
            prices,
            active: Vec::new(),
            reviews: Vec::new(),
            late_catalog: Vec::new(),
        }
    }

    fn sku(&mut self) -> u64 {
        let u: f64 = self.rng.random();
        let i = self.zipf_cdf.partition_point(|&c| c < u);
        (i as u64).min(self.cfg.skus - 1) + 1
    }

    fn tick(&mut self) -> u64 {
        let gap = self.rng.random_range(0..=2 * self.cfg.mean_gap_ms);
        self.clock += gap;
        if self.rng.random_bool(self.cfg.late_rate) {
            // Late: up to 20 s behind, so some fall beyond the 5 s lateness.
            self.clock.saturating_sub(self.rng.random_range(0..20_000))
        } else {
            self.clock
        }
    }

    fn emit(&mut self, topic: TopicKind, key: u64, ty: &str, fields: Value) {
        let ts = self.tick();
        let mut obj = json!({"event_id": format!("e{}", self.next_event), "type": ty, "ts": ts});
        self.next_event += 1;
        if let (Value::Object(o), Value::Object(f)) = (&mut obj, fields) {
            o.extend(f);
        }
        self.push(topic, key, serde_json::to_vec(&obj).expect("json"));
    }

    fn push(&mut self, topic: TopicKind, key: u64, payload: Vec<u8>) {
        self.made_at.push(self.clock);
        self.out.push(GenMessage {
            topic,
            key,
            payload,
        });
    }

    fn run(&mut self) {
        for c in 1..=self.cfg.categories {
            let bp = self.rng.random_range(500..=1500u64);
            self.emit(
                TopicKind::Catalog,
                c,
                "category.upserted",
                json!({"category_id": c, "name": format!("category {c}"), "commission_bp": bp}),
            );
        }
        let mut late = Vec::new();
        for sku in 1..=self.cfg.skus {
            // No draw at rate 0, so existing seeds keep their logs.
            if self.cfg.late_catalog_rate > 0.0 && self.rng.random_bool(self.cfg.late_catalog_rate)
            {
                late.push(sku);
            } else {
                self.upsert_product(sku);
            }
            let qty = self.rng.random_range(5..200u64);
            self.emit(
                TopicKind::Inventory,
                sku,
                "stock.received",
                json!({"sku": sku, "qty": qty}),
            );
        }
        let events = self.cfg.events as f64;
        for sku in late {
            let after = self.out.len() + (events * self.rng.random_range(0.01..0.03)) as usize;
            self.late_catalog.push((after, sku));
        }
        self.late_catalog.sort_by(|a, b| b.cmp(a));
        while self.out.len() < self.cfg.events {
            if let Some(&(after, sku)) = self.late_catalog.last() {
                if self.out.len() >= after {
                    self.late_catalog.pop();
                    self.upsert_product(sku);
                    continue;
                }
            }
            let r: f64 = self.rng.random();
            if r < self.cfg.bad_rate {
                self.bad();
            } else if r < self.cfg.bad_rate + self.cfg.duplicate_rate {
                self.duplicate();
            } else {
                self.good();
            }
        }
        // Withheld SKUs not sent yet (a short log) are sent at the end.
        while let Some((_, sku)) = self.late_catalog.pop() {
            self.upsert_product(sku);
        }
    }

    fn upsert_product(&mut self, sku: u64) {
        let seller = self.rng.random_range(1..=self.cfg.sellers);
        let category = self.rng.random_range(1..=self.cfg.categories);
        let price = self.prices[(sku - 1) as usize];
        self.emit(
            TopicKind::Catalog,
            sku,
            "product.upserted",
            json!({"sku": sku, "seller_id": seller, "category_id": category,
                   "name": format!("product {sku}"), "price": price}),
        );
    }

    fn good(&mut self) {
        let r = self.rng.random_range(0..100u32);
        match r {
            0..=2 => {
                let sku = self.sku();
                let qty = self.rng.random_range(20..300u64);
                self.emit(
                    TopicKind::Inventory,
                    sku,
                    "stock.received",
                    json!({"sku": sku, "qty": qty}),
                );
            }
            3 => {
                let sku = self.sku();
                let mut delta = self.rng.random_range(-5..=5i64);
                if delta == 0 {
                    delta = -1;
                }
                self.emit(
                    TopicKind::Inventory,
                    sku,
                    "stock.adjusted",
                    json!({"sku": sku, "delta": delta}),
                );
            }
            4 => {
                let m = self.rng.random_range(1..=self.cfg.members);
                self.emit(
                    TopicKind::Members,
                    m,
                    "member.joined",
                    json!({"member_id": m}),
                );
            }
            5 => {
                let m = self.rng.random_range(1..=self.cfg.members);
                let ty = if self.wow[m as usize] {
                    "wow.cancelled"
                } else {
                    "wow.subscribed"
                };
                self.wow[m as usize] = !self.wow[m as usize];
                self.emit(TopicKind::Members, m, ty, json!({"member_id": m}));
            }
            6..=7 => self.review(),
            8 => {
                let sku = self.sku();
                self.upsert_product(sku);
            }
            9 => {
                // A category's commission changes.
                let c = self.rng.random_range(1..=self.cfg.categories);
                let bp = self.rng.random_range(500..=1500u64);
                self.emit(
                    TopicKind::Catalog,
                    c,
                    "category.upserted",
                    json!({"category_id": c, "name": format!("category {c}"), "commission_bp": bp}),
                );
            }
            _ => {
                if self.active.len() < self.cfg.concurrency && (r < 40 || self.active.is_empty()) {
                    self.place();
                } else {
                    let i = self.rng.random_range(0..self.active.len());
                    self.advance(i);
                }
            }
        }
    }

    fn review(&mut self) {
        let r = self.rng.random_range(0..10u32);
        if r < 7 || self.reviews.is_empty() {
            let id = if r < 5 || self.reviews.is_empty() {
                let id = self.next_review;
                self.next_review += 1;
                self.reviews.push(id);
                id
            } else {
                // Replace an existing review, possibly under another SKU.
                self.reviews[self.rng.random_range(0..self.reviews.len())]
            };
            let sku = self.sku();
            let member = self.rng.random_range(1..=self.cfg.members);
            let rating = self.rng.random_range(1..=5u64);
            self.emit(
                TopicKind::Reviews,
                sku,
                "review.posted",
                json!({"review_id": id, "sku": sku, "member_id": member, "rating": rating}),
            );
        } else {
            let i = self.rng.random_range(0..self.reviews.len());
            let id = self.reviews.swap_remove(i);
            self.emit(
                TopicKind::Reviews,
                id,
                "review.deleted",
                json!({"review_id": id}),
            );
        }
    }

    fn place(&mut self) {
        let id = self.next_order;
        self.next_order += 1;
        let n = match self.rng.random_range(0..100u32) {
            0 => self.rng.random_range(20..70usize),
            1..=20 => self.rng.random_range(3..8usize),
            _ => self.rng.random_range(1..3usize),
        };
        let mut lines = Vec::new();
        let mut used = std::collections::HashSet::new();
        for no in 1..=n as u64 {
            let sku = self.sku();
            if !used.insert(sku) && self.rng.random_bool(0.8) {
                continue;
            }
            let qty = self.rng.random_range(1..=3u64);
            let price = self.prices[(sku - 1) as usize];
            lines.push((no, sku, qty, price));
        }
        let member = self.rng.random_range(1..=self.cfg.members);
        let shipping = ["rocket", "fresh", "dawn", "standard"][self.rng.random_range(0..4)];
        let json_lines: Vec<Value> = lines
            .iter()
            .map(|&(no, sku, qty, price)| {
                json!({"line_no": no, "sku": sku, "qty": qty, "unit_price": price})
            })
            .collect();
        self.emit(
            TopicKind::Orders,
            id,
            "order.placed",
            json!({"order_id": id, "member_id": member, "shipping": shipping, "lines": json_lines}),
        );
        let refunded = vec![0; lines.len()];
        self.active.push(Order {
            id,
            stage: Stage::Placed,
            lines,
            refunded,
            paid: 0,
            refunded_amount: 0,
            open_return: false,
            updates: 0,
        });
    }

    fn order_event(&mut self, id: u64, ty: &str, mut fields: Value) {
        fields["order_id"] = json!(id);
        self.emit(TopicKind::Orders, id, ty, fields);
    }

    fn advance(&mut self, i: usize) {
        let mut o = self.active[i].clone();
        let p: f64 = self.rng.random();
        let mut done = false;
        if o.open_return {
            if p < 0.3 {
                self.order_event(o.id, "return.rejected", json!({}));
                o.open_return = false;
            } else {
                self.refund(&mut o);
            }
            done = !o.unrefunded() || o.stage == Stage::Confirmed && p < 0.5;
        } else {
            match o.stage {
                Stage::Placed => {
                    if p < 0.9 {
                        let total: u64 = o.lines.iter().map(|l| l.2 * l.3).sum();
                        // Coupons and shipping fees make the charge differ from the total.
                        let amount = (total as f64 * self.rng.random_range(0.85..1.02)) as u64;
                        o.paid = amount.max(1);
                        self.order_event(o.id, "payment.approved", json!({"amount": o.paid}));
                        o.stage = Stage::Paid;
                    } else if p < 0.95 {
                        self.order_event(o.id, "payment.failed", json!({}));
                        done = true;
                    } else {
                        self.order_event(o.id, "order.cancelled", json!({}));
                        done = true;
                    }
                }
                Stage::Paid => {
                    if p < 0.93 {
                        self.order_event(o.id, "order.shipped", json!({}));
                        o.stage = Stage::Shipped;
                    } else {
                        self.order_event(o.id, "order.cancelled", json!({}));
                        done = true;
                    }
                }
                Stage::Shipped => {
                    if p < 0.5 && o.updates < 3 {
                        o.updates += 1;
                        let hub = [
                            "곤지암 센터",
                            "Daegu hub",
                            "서울 송파 캠프",
                            "out for delivery",
                        ][self.rng.random_range(0..4)];
                        self.order_event(o.id, "delivery.updated", json!({"location": hub}));
                    } else {
                        self.order_event(o.id, "order.delivered", json!({}));
                        o.stage = Stage::Delivered;
                    }
                }
                Stage::Delivered => {
                    if p < 0.75 && o.unrefunded() {
                        self.order_event(o.id, "order.confirmed", json!({}));
                        o.stage = Stage::Confirmed;
                    } else if o.unrefunded() {
                        self.order_event(
                            o.id,
                            "return.requested",
                            json!({"reason": "changed mind"}),
                        );
                        o.open_return = true;
                    } else {
                        done = true;
                    }
                }
                Stage::Confirmed => {
                    if p < 0.1 && o.unrefunded() {
                        self.order_event(o.id, "return.requested", json!({"reason": "defective"}));
                        o.open_return = true;
                    } else {
                        done = true;
                    }
                }
            }
        }
        if done {
            self.active.swap_remove(i);
        } else {
            self.active[i] = o;
        }
    }

    fn refund(&mut self, o: &mut Order) {
        let mut lines = Vec::new();
        let mut value = 0u64;
        let full = self.rng.random_bool(0.4);
        for (k, l) in o.lines.iter().enumerate() {
            let left = l.2 - o.refunded[k];
            if left == 0 || (!full && self.rng.random_bool(0.5)) {
                continue;
            }
            let q = if full {
                left
            } else {
                self.rng.random_range(1..=left)
            };
            o.refunded[k] += q;
            value += q * l.3;
            lines.push(json!({"line_no": l.0, "qty": q}));
        }
        let left_money = o.paid - o.refunded_amount;
        let amount = value.min(left_money);
        o.refunded_amount += amount;
        o.open_return = false;
        let restock = self.rng.random_bool(0.7);
        self.order_event(
            o.id,
            "refund.completed",
            json!({"amount": amount, "restock": restock, "lines": lines}),
        );
    }

    fn duplicate(&mut self) {
        if self.out.is_empty() {
            return;
        }
        // Re-send one of the last few hundred messages unchanged, as a producer retry
        // would: only messages made within the last hour of the clock.
        let back = self.rng.random_range(1..=self.out.len().min(300));
        let i = self.out.len() - back;
        if self.made_at[i] + 3_600_000 < self.clock {
            return;
        }
        let m = self.out[i].clone();
        self.push(m.topic, m.key, m.payload);
    }

    fn bad(&mut self) {
        let id = self.next_event;
        self.next_event += 1;
        let ts = self.clock;
        let order = self.rng.random_range(1..=self.next_order);
        let kind = self.rng.random_range(0..8u32);
        let payload: Vec<u8> = match kind {
            0 => format!(r#"{{"event_id":"e{id}","type":"order.shipped","ts":{ts},"order_id":"#)
                .into_bytes(),
            1 => vec![0xff, 0xfe, b'{', 0x80],
            2 => format!(r#"{{"event_id":"e{id}","type":"order.teleported","ts":{ts},"order_id":{order}}}"#)
                .into_bytes(),
            3 => format!(r#"{{"event_id":"e{id}","type":"stock.received","ts":{ts},"qty":5}}"#)
                .into_bytes(),
            4 => format!(r#"{{"event_id":"e{id}","type":"stock.received","ts":{ts},"sku":"7","qty":5}}"#)
                .into_bytes(),
            5 => format!(r#"{{"event_id":"e{id}","type":"review.posted","ts":{ts},"review_id":1,"sku":1,"member_id":1,"rating":9}}"#)
                .into_bytes(),
            6 => {
                let unknown = self.next_order + 1_000_000;
                format!(r#"{{"event_id":"e{id}","type":"order.confirmed","ts":{ts},"order_id":{unknown}}}"#)
                    .into_bytes()
            }
            _ => {
                // A life cycle violation on a real order: confirm before delivery, or ship
                // an order that is not paid. (Valid by chance now and then: that is fine.)
                let ty = if self.rng.random_bool(0.5) {
                    "order.confirmed"
                } else {
                    "order.shipped"
                };
                format!(r#"{{"event_id":"e{id}","type":"{ty}","ts":{ts},"order_id":{order}}}"#)
                    .into_bytes()
            }
        };
        let topic = if matches!(kind, 3 | 4) {
            TopicKind::Inventory
        } else if kind == 5 {
            TopicKind::Reviews
        } else {
            TopicKind::Orders
        };
        self.push(topic, order, payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_log_and_size() {
        let cfg = GenConfig {
            events: 5_000,
            ..GenConfig::default()
        };
        let a = generate(&cfg);
        assert_eq!(a, generate(&cfg));
        assert!(a.len() >= 5_000 && a.len() < 5_100, "{}", a.len());
        let other = generate(&GenConfig { seed: 7, ..cfg });
        assert_ne!(a, other);
    }

    fn json(m: &GenMessage) -> Option<Value> {
        serde_json::from_slice(&m.payload).ok()
    }

    #[test]
    fn late_catalog_confirms_orders_before_their_skus_are_known() {
        let cfg = GenConfig {
            events: 20_000,
            skus: 200,
            late_catalog_rate: 0.2,
            ..GenConfig::default()
        };
        let log = generate(&cfg);
        assert_eq!(log, generate(&cfg));
        let mut known = std::collections::HashSet::new();
        let mut first_upsert_at = std::collections::HashMap::new();
        let mut lines: std::collections::HashMap<u64, Vec<u64>> = Default::default();
        let mut confirmed_unknown = 0;
        for (i, m) in log.iter().enumerate() {
            let Some(v) = json(m) else { continue };
            match v["type"].as_str() {
                Some("product.upserted") => {
                    let sku = v["sku"].as_u64().unwrap();
                    known.insert(sku);
                    first_upsert_at.entry(sku).or_insert(i);
                }
                Some("order.placed") => {
                    let skus = v["lines"].as_array().unwrap().iter();
                    let skus = skus.map(|l| l["sku"].as_u64().unwrap()).collect();
                    lines.insert(v["order_id"].as_u64().unwrap(), skus);
                }
                Some("order.confirmed") => {
                    let id = v["order_id"].as_u64().unwrap();
                    if lines
                        .get(&id)
                        .is_some_and(|s| s.iter().any(|s| !known.contains(s)))
                    {
                        confirmed_unknown += 1;
                    }
                }
                _ => {}
            }
        }
        // Every SKU becomes known; about a fifth of them late, within ~3 % of the log.
        assert_eq!(known.len(), 200);
        let catalog_end = cfg.categories as usize + 2 * 200;
        let late: Vec<usize> = first_upsert_at
            .values()
            .copied()
            .filter(|&i| i > catalog_end)
            .collect();
        assert!((20..=60).contains(&late.len()), "{} late SKUs", late.len());
        assert!(late.iter().all(|&i| i < catalog_end + 700), "{late:?}");
        assert!(
            confirmed_unknown > 0,
            "no order confirmed before its SKU was known"
        );
    }

    #[test]
    fn categories_change_commission() {
        let log = generate(&GenConfig {
            events: 5_000,
            skus: 200,
            ..GenConfig::default()
        });
        let upserts = log
            .iter()
            .filter_map(json)
            .filter(|v| v["type"] == "category.upserted")
            .count();
        assert!(upserts > 30 + 10, "{upserts} category upserts");
    }
}

/// One partition of one topic, as Kafka would hold a generated log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// Topic name.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// (key, payload) in log order.
    pub messages: Vec<(Option<Vec<u8>>, Vec<u8>)>,
}

/// Splits a log the way a producer keyed by id would: by topic, and within a topic by
/// partition = key mod `partitions`. `names` gives the topic names in the order catalog,
/// inventory, members, orders, reviews; the result is in that order, then by partition,
/// and has every partition (maybe empty).
pub fn split(messages: &[GenMessage], names: [&str; 5], partitions: i32) -> Vec<Split> {
    let partitions = partitions.max(1);
    let index = |k: TopicKind| match k {
        TopicKind::Catalog => 0,
        TopicKind::Inventory => 1,
        TopicKind::Members => 2,
        TopicKind::Orders => 3,
        TopicKind::Reviews => 4,
    };
    let mut out: Vec<Split> = names
        .iter()
        .flat_map(|t| {
            (0..partitions).map(move |p| Split {
                topic: t.to_string(),
                partition: p,
                messages: Vec::new(),
            })
        })
        .collect();
    for m in messages {
        let p = (m.key % partitions as u64) as usize;
        out[index(m.topic) * partitions as usize + p]
            .messages
            .push((Some(m.key.to_string().into_bytes()), m.payload.clone()));
    }
    out
}
