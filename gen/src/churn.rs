//! A churn workload: many updates to a fixed set of keys, for checking that the pipeline's
//! memory stays flat when the number of keys does (compaction, superseded events dropped).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::{GenMessage, TopicKind};

/// Shape of a churn workload.
#[derive(Clone, Debug)]
pub struct ChurnConfig {
    /// Seed: the same seed gives the same log.
    pub seed: u64,
    /// Messages to generate.
    pub events: usize,
    /// SKUs (each re-listed, restocked and reviewed over and over).
    pub skus: u64,
    /// Members (each joining again and toggling WOW over and over).
    pub members: u64,
    /// Review ids (each replaced or deleted over and over).
    pub reviews: u64,
    /// Event time of the first message (ms).
    pub start_ms: u64,
    /// Event time between consecutive messages (ms).
    pub gap_ms: u64,
}

impl Default for ChurnConfig {
    fn default() -> Self {
        ChurnConfig {
            seed: 7,
            events: 100_000,
            skus: 500,
            members: 1_000,
            reviews: 2_000,
            start_ms: 1_790_000_000_000,
            gap_ms: 60_000,
        }
    }
}

/// Generates a churn log: product and category upserts, stock movements, member joins,
/// WOW toggles and review posts/deletes, all over the same keys. Every message is valid,
/// and no order is placed, so the number of keys the views hold never grows.
pub fn churn(cfg: &ChurnConfig) -> Vec<GenMessage> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let categories = 20u64;
    let mut out = Vec::with_capacity(cfg.events);
    let mut wow = vec![false; cfg.members as usize + 1];
    for i in 0..cfg.events {
        let ts = cfg.start_ms + i as u64 * cfg.gap_ms;
        let id = format!("churn-{}-{i}", cfg.seed);
        let (topic, key, v) = match rng.random_range(0..10u32) {
            0 => {
                let c = rng.random_range(1..=categories);
                let v = json!({"event_id": id, "type": "category.upserted", "ts": ts,
                    "category_id": c, "name": format!("category {c}"),
                    "commission_bp": rng.random_range(500..=1500u32)});
                (TopicKind::Catalog, c, v)
            }
            1 | 2 => {
                let sku = rng.random_range(1..=cfg.skus);
                let v = json!({"event_id": id, "type": "product.upserted", "ts": ts,
                    "sku": sku, "seller_id": rng.random_range(1..=50u64),
                    "category_id": rng.random_range(1..=categories), "name": format!("item {sku}"),
                    "price": rng.random_range(1_000..100_000u64)});
                (TopicKind::Catalog, sku, v)
            }
            3 => {
                let sku = rng.random_range(1..=cfg.skus);
                let v = json!({"event_id": id, "type": "stock.received", "ts": ts,
                    "sku": sku, "qty": rng.random_range(1..100u64)});
                (TopicKind::Inventory, sku, v)
            }
            4 => {
                let sku = rng.random_range(1..=cfg.skus);
                let delta = if rng.random_bool(0.5) { -1 } else { 1 } * rng.random_range(1..5i64);
                let v = json!({"event_id": id, "type": "stock.adjusted", "ts": ts,
                    "sku": sku, "delta": delta});
                (TopicKind::Inventory, sku, v)
            }
            5 | 6 => {
                let m = rng.random_range(1..=cfg.members);
                let ty = match rng.random_range(0..3u32) {
                    0 => "member.joined",
                    _ if wow[m as usize] => "wow.cancelled",
                    _ => "wow.subscribed",
                };
                if ty != "member.joined" {
                    wow[m as usize] = !wow[m as usize];
                }
                let v = json!({"event_id": id, "type": ty, "ts": ts, "member_id": m});
                (TopicKind::Members, m, v)
            }
            _ => {
                let r = rng.random_range(1..=cfg.reviews);
                let sku = (r * 7) % cfg.skus + 1;
                let v = if rng.random_bool(0.2) {
                    json!({"event_id": id, "type": "review.deleted", "ts": ts, "review_id": r})
                } else {
                    json!({"event_id": id, "type": "review.posted", "ts": ts, "review_id": r,
                        "sku": sku, "member_id": rng.random_range(1..=cfg.members),
                        "rating": rng.random_range(1..=5u64)})
                };
                (TopicKind::Reviews, sku, v)
            }
        };
        out.push(GenMessage {
            topic,
            key,
            payload: serde_json::to_vec(&v).expect("json"),
        });
    }
    out
}
