//! Rows of the materialized views, derived alert events and dead-letter records.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::ledger::{
    Grade, MemberOrders, MemberView, Payout, PointsEntry, SettlementEntry, TaxInvoice,
};
use crate::sales::{SalesFact, SalesMinute};
use crate::Millis;

/// Stock of one SKU (SPEC §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StockLevel {
    /// Product.
    pub sku: u64,
    /// Units physically on hand.
    pub on_hand: i64,
    /// Units held by orders in PLACED or PAID.
    pub reserved: i64,
    /// `on_hand − reserved`; negative when orders raced.
    pub available: i64,
}

/// The status of an order shown to the storefront (SPEC §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// Placed, not paid.
    Placed,
    /// Payment approved.
    Paid,
    /// Payment failed (terminal).
    Failed,
    /// Cancelled before shipping (terminal).
    Cancelled,
    /// Handed to delivery.
    Shipped,
    /// Delivered to the buyer.
    Delivered,
    /// Purchase confirmed (구매확정).
    Confirmed,
    /// A return is open.
    ReturnRequested,
    /// Every line fully refunded.
    Refunded,
}

impl OrderStatus {
    /// The contract's spelling, e.g. `RETURN_REQUESTED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Placed => "PLACED",
            Self::Paid => "PAID",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
            Self::Shipped => "SHIPPED",
            Self::Delivered => "DELIVERED",
            Self::Confirmed => "CONFIRMED",
            Self::ReturnRequested => "RETURN_REQUESTED",
            Self::Refunded => "REFUNDED",
        }
    }
}

/// One change of an order's shown status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StatusChange {
    /// The new status.
    pub status: OrderStatus,
    /// Effective time of the event that changed it.
    pub ts: Millis,
}

/// The tracking view of one order (SPEC §5.6).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrderView {
    /// Order.
    pub order_id: u64,
    /// Buyer.
    pub member_id: u64,
    /// Current shown status.
    pub status: OrderStatus,
    /// Last `delivery.updated` location; `None` before the first.
    pub location: Option<String>,
    /// Every change of the shown status, oldest first.
    pub history: Vec<StatusChange>,
}

/// Ratings of one SKU over its current reviews (SPEC §5.6).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct RatingView {
    /// Product.
    pub sku: u64,
    /// Number of current reviews.
    pub count: u64,
    /// Sum of their ratings.
    pub sum: u64,
    /// Reviews per rating 1..=5 (index 0 = rating 1).
    pub histogram: [u64; 5],
}

impl RatingView {
    /// Mean rating, `None` with no reviews.
    pub fn average(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }
}

/// Products frequently bought with one SKU (SPEC §5.4): at most 20, by weight descending,
/// then SKU ascending.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AlsoBought {
    /// Product.
    pub sku: u64,
    /// (other SKU, number of current baskets holding both).
    pub items: Vec<(u64, u64)>,
}

/// A derived event written to `shop.alerts`. As JSON: `{event_id, ts, type, …}` (the
/// body's fields inline); in binary formats (checkpoints) a plain tuple, since those
/// cannot read an inlined, internally tagged body back.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Alert {
    /// Deterministic id: the same alert always has the same id, across replays.
    pub event_id: String,
    /// The dataflow time at which the condition arose.
    pub ts: Millis,
    /// What happened.
    pub body: AlertBody,
}

/// [`Alert`] as JSON.
#[derive(Serialize, Deserialize)]
struct AlertJson {
    event_id: String,
    ts: Millis,
    #[serde(flatten)]
    body: AlertBody,
}

/// [`AlertBody`] in binary formats (externally tagged).
#[derive(Serialize, Deserialize)]
enum AlertBinary {
    StockLow(u64, i64, i64),
    StockRestored(u64, i64, i64),
    GradeChanged(u64, Grade, Grade),
}

impl Serialize for Alert {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return AlertJson {
                event_id: self.event_id.clone(),
                ts: self.ts,
                body: self.body.clone(),
            }
            .serialize(s);
        }
        let body = match self.body {
            AlertBody::StockLow {
                sku,
                available,
                threshold,
            } => AlertBinary::StockLow(sku, available, threshold),
            AlertBody::StockRestored {
                sku,
                available,
                threshold,
            } => AlertBinary::StockRestored(sku, available, threshold),
            AlertBody::GradeChanged {
                member_id,
                from,
                to,
            } => AlertBinary::GradeChanged(member_id, from, to),
        };
        (&self.event_id, self.ts, body).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Alert {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let a = AlertJson::deserialize(d)?;
            return Ok(Alert {
                event_id: a.event_id,
                ts: a.ts,
                body: a.body,
            });
        }
        let (event_id, ts, body) = <(String, Millis, AlertBinary)>::deserialize(d)?;
        let body = match body {
            AlertBinary::StockLow(sku, available, threshold) => AlertBody::StockLow {
                sku,
                available,
                threshold,
            },
            AlertBinary::StockRestored(sku, available, threshold) => AlertBody::StockRestored {
                sku,
                available,
                threshold,
            },
            AlertBinary::GradeChanged(member_id, from, to) => AlertBody::GradeChanged {
                member_id,
                from,
                to,
            },
        };
        Ok(Alert { event_id, ts, body })
    }
}

/// The kinds of alert.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AlertBody {
    /// Available stock fell from ≥ threshold to < threshold.
    #[serde(rename = "stock.low")]
    StockLow {
        /// Product.
        sku: u64,
        /// Available units after the change.
        available: i64,
        /// The configured threshold.
        threshold: i64,
    },
    /// Available stock rose from < threshold to ≥ threshold.
    #[serde(rename = "stock.restored")]
    StockRestored {
        /// Product.
        sku: u64,
        /// Available units after the change.
        available: i64,
        /// The configured threshold.
        threshold: i64,
    },
    /// A member's grade changed (SPEC §5.2).
    #[serde(rename = "member.grade_changed")]
    GradeChanged {
        /// Member.
        member_id: u64,
        /// Grade before.
        from: Grade,
        /// Grade after.
        to: Grade,
    },
}

impl Alert {
    /// The partitioning key of the alert (the SKU or member as a decimal string).
    pub fn key(&self) -> String {
        match &self.body {
            AlertBody::StockLow { sku, .. } | AlertBody::StockRestored { sku, .. } => {
                sku.to_string()
            }
            AlertBody::GradeChanged { member_id, .. } => member_id.to_string(),
        }
    }

    /// A grade change with its deterministic id `member.grade_changed:{member}:{ts}`.
    pub fn grade(member_id: u64, ts: Millis, from: Grade, to: Grade) -> Self {
        Alert {
            event_id: format!("member.grade_changed:{member_id}:{ts}"),
            ts,
            body: AlertBody::GradeChanged {
                member_id,
                from,
                to,
            },
        }
    }

    /// A low-stock alert with its deterministic id.
    pub fn stock(sku: u64, ts: Millis, available: i64, threshold: i64, low: bool) -> Self {
        let (body, kind) = if low {
            (
                AlertBody::StockLow {
                    sku,
                    available,
                    threshold,
                },
                "stock.low",
            )
        } else {
            (
                AlertBody::StockRestored {
                    sku,
                    available,
                    threshold,
                },
                "stock.restored",
            )
        };
        Alert {
            event_id: format!("{kind}:{sku}:{ts}"),
            ts,
            body,
        }
    }
}

/// Why an input message was not applied (SPEC §8, in the order the checks run).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// Not one UTF-8 JSON object.
    MalformedJson,
    /// `type` is not one of the contract's.
    UnknownType,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong JSON type (`null` included).
    MistypedField,
    /// A field breaks a bound.
    OutOfRange,
    /// An order event names an order never placed.
    UnknownOrder,
    /// The event is not allowed in the order's current state.
    Lifecycle,
}

impl DeadLetterReason {
    /// Every reason, in check order.
    pub const ALL: [DeadLetterReason; 7] = [
        Self::MalformedJson,
        Self::UnknownType,
        Self::MissingField,
        Self::MistypedField,
        Self::OutOfRange,
        Self::UnknownOrder,
        Self::Lifecycle,
    ];

    /// The contract's spelling, e.g. `out_of_range`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::UnknownType => "unknown_type",
            Self::MissingField => "missing_field",
            Self::MistypedField => "mistyped_field",
            Self::OutOfRange => "out_of_range",
            Self::UnknownOrder => "unknown_order",
            Self::Lifecycle => "lifecycle",
        }
    }
}

impl std::fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected input message, kept losslessly for the dead-letter topic.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Why it was rejected.
    pub reason: DeadLetterReason,
    /// A human-readable explanation (which field, which bound).
    pub detail: String,
    /// Source topic (or file name).
    pub topic: String,
    /// Source partition (0 for a file).
    pub partition: i32,
    /// Source offset (the line index for a file).
    pub offset: i64,
    /// The original message key, if any.
    pub key: Option<Vec<u8>>,
    /// The original message bytes.
    pub payload: Vec<u8>,
}

impl DeadLetter {
    /// The dead-letter record as JSON: `{reason, detail, topic, partition, offset, payload}`.
    ///
    /// `payload` is the original message as a string when it is valid UTF-8 (a JSON string
    /// holds any UTF-8 text losslessly); otherwise `payload` is absent and
    /// `payload_base64` holds the bytes in standard base64.
    pub fn to_json(&self) -> serde_json::Value {
        let mut obj = serde_json::Map::new();
        obj.insert("reason".into(), self.reason.as_str().into());
        obj.insert("detail".into(), self.detail.clone().into());
        obj.insert("topic".into(), self.topic.clone().into());
        obj.insert("partition".into(), self.partition.into());
        obj.insert("offset".into(), self.offset.into());
        match std::str::from_utf8(&self.payload) {
            Ok(text) => {
                obj.insert("payload".into(), text.into());
            }
            Err(_) => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(&self.payload);
                obj.insert("payload_base64".into(), b64.into());
            }
        }
        serde_json::Value::Object(obj)
    }

    /// Reads back the original bytes of a record made by [`DeadLetter::to_json`].
    pub fn payload_from_json(record: &serde_json::Value) -> Option<Vec<u8>> {
        if let Some(text) = record.get("payload").and_then(|v| v.as_str()) {
            return Some(text.as_bytes().to_vec());
        }
        let b64 = record.get("payload_base64")?.as_str()?;
        base64::engine::general_purpose::STANDARD.decode(b64).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_payload_round_trips_text_and_bytes() {
        for payload in [b"{\"a\":1}".to_vec(), vec![0xff, 0x00, b'{', 0xc3]] {
            let dl = DeadLetter {
                reason: DeadLetterReason::MalformedJson,
                detail: "x".into(),
                topic: "shop.orders".into(),
                partition: 3,
                offset: 42,
                key: None,
                payload: payload.clone(),
            };
            let json = dl.to_json();
            assert_eq!(json["reason"], "malformed_json");
            assert_eq!(json["offset"], 42);
            assert_eq!(DeadLetter::payload_from_json(&json), Some(payload));
        }
    }

    #[test]
    fn alert_serializes_flat_with_type() {
        let a = Alert::stock(7, 1000, 9, 10, true);
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"event_id": "stock.low:7:1000", "ts": 1000, "type": "stock.low",
                "sku": 7, "available": 9, "threshold": 10})
        );
    }
}

/// The changes to the serving views between two frontiers: every changed row with its
/// value as of `as_of`, and the alerts that arose up to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ViewBatch {
    /// The time T the rows are as of: every event with time ≤ T is reflected, none later.
    pub as_of: Millis,
    /// The input is bounded and fully processed: this is the last batch.
    pub complete: bool,
    /// Stock rows that changed.
    pub stock: Vec<StockLevel>,
    /// Order rows that changed.
    pub orders: Vec<OrderView>,
    /// Alerts with time ≤ `as_of` not sent in an earlier batch, in time order.
    pub alerts: Vec<Alert>,
    /// Rating rows that changed.
    pub ratings: Vec<RatingView>,
    /// SKUs whose rating row is gone (every review deleted or moved).
    pub ratings_removed: Vec<u64>,
    /// Recommendation rows that changed.
    pub also_bought: Vec<AlsoBought>,
    /// SKUs whose recommendation row is gone (no current basket pairs them).
    pub also_bought_removed: Vec<u64>,
    /// Member rows that changed.
    pub members: Vec<MemberView>,
    /// Recent-order lists that changed.
    pub member_orders: Vec<MemberOrders>,
    /// New points ledger entries.
    pub points: Vec<PointsEntry>,
    /// New settlement entries.
    pub settlements: Vec<SettlementEntry>,
    /// Weekly payout rows that changed (`final` follows from `as_of`).
    pub payouts: Vec<Payout>,
    /// Monthly tax invoice rows that changed (`final` follows from `as_of`).
    pub invoices: Vec<TaxInvoice>,
    /// Sellers that became known.
    pub sellers: Vec<u64>,
    /// New sales facts.
    pub sales_facts: Vec<SalesFact>,
    /// Per-seller minute rollups that changed.
    pub sales_minutes: Vec<SalesMinute>,
}

impl ViewBatch {
    /// Folds a later batch into this one: rows of `later` replace rows of the same key.
    pub fn merge(&mut self, later: ViewBatch) {
        self.as_of = self.as_of.max(later.as_of);
        self.complete |= later.complete;
        self.stock.extend(later.stock);
        self.orders.extend(later.orders);
        self.alerts.extend(later.alerts);
        // A later upsert cancels an earlier removal and the other way round.
        let up: std::collections::HashSet<u64> = later.ratings.iter().map(|r| r.sku).collect();
        self.ratings_removed.retain(|s| !up.contains(s));
        let gone: std::collections::HashSet<u64> = later.ratings_removed.iter().copied().collect();
        self.ratings.retain(|r| !gone.contains(&r.sku));
        self.ratings.extend(later.ratings);
        self.ratings_removed.extend(later.ratings_removed);
        let up: std::collections::HashSet<u64> = later.also_bought.iter().map(|r| r.sku).collect();
        self.also_bought_removed.retain(|s| !up.contains(s));
        let gone: std::collections::HashSet<u64> =
            later.also_bought_removed.iter().copied().collect();
        self.also_bought.retain(|r| !gone.contains(&r.sku));
        self.also_bought.extend(later.also_bought);
        self.also_bought_removed.extend(later.also_bought_removed);
        self.members.extend(later.members);
        self.member_orders.extend(later.member_orders);
        self.points.extend(later.points);
        self.settlements.extend(later.settlements);
        self.payouts.extend(later.payouts);
        self.invoices.extend(later.invoices);
        self.sellers.extend(later.sellers);
        self.sales_facts.extend(later.sales_facts);
        self.sales_minutes.extend(later.sales_minutes);
    }

    /// Keeps only the last row per key (rows later in the vectors win).
    pub fn dedup_keys(&mut self) {
        /// Which rows are the last of their key (keys may borrow from the rows).
        fn last_of_key<'a, T, K: std::hash::Hash + Eq>(
            rows: &'a [T],
            key: impl Fn(&'a T) -> K,
        ) -> Vec<bool> {
            let mut seen: std::collections::HashSet<K, foldhash::fast::RandomState> =
                std::collections::HashSet::with_capacity_and_hasher(rows.len(), Default::default());
            let mut keep: Vec<bool> = rows.iter().rev().map(|r| seen.insert(key(r))).collect();
            keep.reverse();
            keep
        }
        /// Keeps the last row of every key, in order.
        fn keep_last<T, K: std::hash::Hash + Eq>(rows: &mut Vec<T>, key: impl Fn(&T) -> K) {
            let keep = last_of_key(rows, &key);
            retain_flagged(rows, keep);
        }
        /// [`keep_last`] for rows keyed by their string id (borrowed, not cloned).
        fn keep_last_id<T>(rows: &mut Vec<T>, id: impl Fn(&T) -> &str) {
            let keep = last_of_key(rows, id);
            retain_flagged(rows, keep);
        }
        fn retain_flagged<T>(rows: &mut Vec<T>, keep: Vec<bool>) {
            if keep.iter().all(|k| *k) {
                return;
            }
            let mut flags = keep.into_iter();
            rows.retain(|_| flags.next().unwrap_or(true));
        }
        keep_last(&mut self.stock, |s| s.sku);
        keep_last(&mut self.orders, |o| o.order_id);
        keep_last(&mut self.ratings, |r| r.sku);
        keep_last(&mut self.also_bought, |r| r.sku);
        keep_last(&mut self.members, |m| m.member_id);
        keep_last(&mut self.member_orders, |m| m.member_id);
        keep_last_id(&mut self.points, |e| e.id.as_str());
        keep_last_id(&mut self.settlements, |e| e.id.as_str());
        keep_last(&mut self.payouts, |p| (p.seller_id, p.week_start));
        keep_last(&mut self.invoices, |i| (i.seller_id, i.month_start));
        self.sellers.sort_unstable();
        self.sellers.dedup();
        keep_last_id(&mut self.sales_facts, |f| f.id.as_str());
        keep_last(&mut self.sales_minutes, |m| (m.seller_id, m.minute));
        self.ratings_removed.sort_unstable();
        self.ratings_removed.dedup();
        self.also_bought_removed.sort_unstable();
        self.also_bought_removed.dedup();
    }
}

/// What the pipeline hands to the sink writer.
// One value per batch moves through a channel: the size difference costs nothing, a box
// would cost an allocation per batch.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// View changes as of a frontier.
    Views(ViewBatch),
    /// Rejected messages, in the order they were read within each stream.
    DeadLetters(Vec<DeadLetter>),
    /// Everything before this in the channel makes up a checkpoint's moment: once it is
    /// written, the writer commits the checkpoint (with the in-process stores' images).
    Checkpoint(CheckpointCommit),
}

/// What the sink writer adds to a checkpoint: the state of the sinks that a restart cannot
/// ask for themselves.
#[derive(Clone, Debug, Default)]
pub struct StoreImages {
    /// An image of each in-process store (see `MemoryStore::image`): its serialized form
    /// and the side data of its paged tables.
    pub memory: Vec<shopflow_state::Part>,
    /// The length of each JSON-lines file written (alerts, dead letters), by path: a
    /// restart cuts each back to it and appends.
    pub files: Vec<(String, u64)>,
    /// The `as_of` of the last view batch written before the checkpoint: every store must
    /// hold at least that for a restart to continue it.
    pub as_of: Option<Millis>,
}

/// What commits a checkpoint: called by the sink writer once every output sent before it
/// has been written, with the sinks' images. It returns a one-line description of what it
/// wrote, or why it could not.
type CommitFn = dyn FnOnce(StoreImages) -> Result<Committed, String> + Send;

/// A checkpoint committed (see [`CheckpointCommit::commit`]).
#[derive(Debug)]
pub struct Committed {
    /// One line saying what was written.
    pub line: String,
    /// The store images as the checkpoint file holds them (their side data in the file),
    /// in the order given: an in-process store may continue from its image there, so that
    /// what the checkpoint holds stays on disk instead of in memory.
    pub memory: Vec<shopflow_state::Part>,
}

/// A checkpoint waiting for the writer to reach it (see [`Output::Checkpoint`]). Clones
/// share the one commit; the first [`CheckpointCommit::commit`] runs it.
#[derive(Clone)]
pub struct CheckpointCommit {
    /// The checkpoint's sequence number (for logs).
    pub seq: u64,
    commit: std::sync::Arc<std::sync::Mutex<Option<Box<CommitFn>>>>,
}

impl CheckpointCommit {
    /// A checkpoint numbered `seq` committed by `commit`.
    pub fn new(
        seq: u64,
        commit: impl FnOnce(StoreImages) -> Result<Committed, String> + Send + 'static,
    ) -> Self {
        CheckpointCommit {
            seq,
            commit: std::sync::Arc::new(std::sync::Mutex::new(Some(Box::new(commit)))),
        }
    }

    /// Writes the checkpoint with the stores' images; `None` if it was committed already.
    pub fn commit(&self, stores: StoreImages) -> Option<Result<Committed, String>> {
        let f = self.commit.lock().ok()?.take()?;
        Some(f(stores))
    }
}

impl std::fmt::Debug for CheckpointCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointCommit")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl PartialEq for CheckpointCommit {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.commit, &other.commit)
    }
}

impl Eq for CheckpointCommit {}
