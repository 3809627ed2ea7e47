//! Topic names (SPEC §1), all configurable.

use serde::{Deserialize, Serialize};

/// The Kafka topics shopflow reads and writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Topics {
    /// Categories and products.
    pub catalog: String,
    /// Stock receipts and adjustments.
    pub inventory: String,
    /// Members and Rocket WOW.
    pub members: String,
    /// Every event in the life of an order.
    pub orders: String,
    /// Product reviews.
    pub reviews: String,
    /// Derived events written by shopflow.
    pub alerts: String,
    /// Dead letters written by shopflow.
    pub dlq: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            catalog: "shop.catalog".into(),
            inventory: "shop.inventory".into(),
            members: "shop.members".into(),
            orders: "shop.orders".into(),
            reviews: "shop.reviews".into(),
            alerts: "shop.alerts".into(),
            dlq: "shop.dlq".into(),
        }
    }
}

impl Topics {
    /// Every topic with a `prefix` before its name (tests use a fresh prefix per run).
    pub fn with_prefix(prefix: &str) -> Self {
        let d = Topics::default();
        let p = |s: String| format!("{prefix}{s}");
        Topics {
            catalog: p(d.catalog),
            inventory: p(d.inventory),
            members: p(d.members),
            orders: p(d.orders),
            reviews: p(d.reviews),
            alerts: p(d.alerts),
            dlq: p(d.dlq),
        }
    }

    /// The input topics, in a fixed order.
    pub fn inputs(&self) -> [&str; 5] {
        [
            &self.catalog,
            &self.inventory,
            &self.members,
            &self.orders,
            &self.reviews,
        ]
    }

    /// The input topic an event type belongs on, by its `type` string.
    pub fn for_type(&self, ty: &str) -> &str {
        match ty.split('.').next().unwrap_or("") {
            "category" | "product" => &self.catalog,
            "stock" => &self.inventory,
            "member" | "wow" => &self.members,
            "review" => &self.reviews,
            _ => &self.orders,
        }
    }
}
