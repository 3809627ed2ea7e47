//! Wires the inputs to the views and the output.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use shopflow_model::{DeadLetter, Millis, Output};
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::vec::{Input, Map, Partition};
use timely::dataflow::operators::{Concat, Probe};
use timely::dataflow::{InputHandleVec, Scope};

use crate::catalog::catalog;
use crate::effects::{Effect, MemberMsg, SkuMsg, StockDelta};
use crate::members::members;
use crate::ordered::{Ctx, End};
use crate::orders::{owned_effects, OrderMsg};
use crate::output::{send_batches, Row};
use crate::products::{also_bought, ratings, ReviewMsg};
use crate::settlements::{sellers, SellerMsg};
use crate::state::States;
use crate::stock::stock_levels;

/// Settings of the views.
#[derive(Clone, Copy, Debug)]
pub struct ViewConfig {
    /// Low-stock alert threshold (SPEC §5.1, default 10).
    pub low_stock_threshold: i64,
    /// Baskets with more distinct SKUs are skipped (SPEC §5.4, default 50).
    pub basket_max_skus: usize,
    /// How long a basket counts after its payment (default 90 days).
    pub basket_window_ms: Millis,
    /// Recommendations kept per SKU (default 20).
    pub also_bought_top: usize,
    /// How long a payment counts toward the member's spend (default 183 days).
    pub spend_window_ms: Millis,
}

impl Default for ViewConfig {
    fn default() -> Self {
        ViewConfig {
            low_stock_threshold: 10,
            basket_max_skus: 50,
            basket_window_ms: 90 * 24 * 3600 * 1000,
            also_bought_top: 20,
            spend_window_ms: 183 * 24 * 3600 * 1000,
        }
    }
}

/// A timely input of timed records.
pub type TimedInput<D> = InputHandleVec<Millis, (D, Millis)>;

/// The dataflow's inputs, one set per worker. Every record carries the exact time it
/// takes effect, never earlier than the input's time (see [`crate::ordered`]).
pub struct Inputs {
    /// Accepted order events: their effects (see [`crate::effects`]).
    pub orders: TimedInput<OrderMsg>,
    /// Stock effects of non-order events, keyed by SKU.
    pub stock: TimedInput<(u64, StockDelta)>,
    /// Accepted review events keyed by review.
    pub reviews: TimedInput<(u64, ReviewMsg)>,
    /// Accepted member events keyed by member.
    pub members: TimedInput<(u64, MemberMsg)>,
    /// Accepted `product.upserted` events: (sku, seller, listing record).
    pub products: TimedInput<(u64, u64, SkuMsg)>,
    /// Accepted `category.upserted` events.
    pub categories: TimedInput<(u64, SkuMsg)>,
    /// Rejected messages, on their way to the worker that writes.
    pub dead: TimedInput<DeadLetter>,
    /// The last time the views show, set by the worker loop at the end of a bounded input.
    pub end: End,
}

impl Inputs {
    /// Advances every input to `time`.
    pub fn advance_to(&mut self, time: Millis) {
        self.orders.advance_to(time);
        self.stock.advance_to(time);
        self.reviews.advance_to(time);
        self.members.advance_to(time);
        self.products.advance_to(time);
        self.categories.advance_to(time);
        self.dead.advance_to(time);
    }

    /// Sends buffered records into the dataflow.
    pub fn flush(&mut self) {
        self.orders.flush();
        self.stock.flush();
        self.reviews.flush();
        self.members.flush();
        self.products.flush();
        self.categories.flush();
        self.dead.flush();
    }

    /// The time the inputs are at.
    pub fn time(&self) -> Millis {
        *self.orders.time()
    }
}

/// Builds the views in `scope`; returns the inputs and a probe after the output, so
/// `probe.less_than(t)` means "the sinks have not yet been handed time t". Every operator
/// registers its state in `states` (and starts from the part saved there, on a restart).
/// With `writing` processes writing, each process's last worker sends the rows its process
/// owns (see [`crate::output::send_batches`]).
pub fn build<'s>(
    scope: Scope<'s, Millis>,
    config: ViewConfig,
    out: SyncSender<Output>,
    failed: Arc<AtomicBool>,
    states: States,
    writing: usize,
) -> (Inputs, ProbeHandle<Millis>) {
    let ctx = Ctx {
        end: End::default(),
        states,
    };
    let (orders_in, orders) = scope.new_input::<(OrderMsg, Millis)>();
    let (stock_in, direct_stock) = scope.new_input::<((u64, StockDelta), Millis)>();
    let (reviews_in, reviews) = scope.new_input::<((u64, ReviewMsg), Millis)>();
    let (members_in, member_events) = scope.new_input::<((u64, MemberMsg), Millis)>();
    let (products_in, products) = scope.new_input::<((u64, u64, SkuMsg), Millis)>();
    let (categories_in, categories) = scope.new_input::<((u64, SkuMsg), Millis)>();
    let (dead_in, dead) = scope.new_input::<(DeadLetter, Millis)>();

    // The owner's effects of every order event, split by the view they feed.
    let mut parts = owned_effects(orders, &ctx)
        .partition(5, |(e, t)| {
            let part = match &e {
                Effect::View(_) => 0,
                Effect::Stock(..) => 1,
                Effect::Basket(..) => 2,
                Effect::Member(..) => 3,
                Effect::Sku(..) => 4,
            };
            (part, (e, t))
        })
        .into_iter();
    let mut next = || parts.next().expect("five parts");
    let order_rows = next().flat_map(|(e, t)| match e {
        Effect::View(v) => Some((Row::Order(v), t)),
        _ => None,
    });
    let order_stock = next().flat_map(|(e, t)| match e {
        Effect::Stock(sku, d) => Some(((sku, d), t)),
        _ => None,
    });
    let baskets = next().flat_map(|(e, t)| match e {
        Effect::Basket(skus, d) => Some(((skus, d), t)),
        _ => None,
    });
    let order_members = next().flat_map(|(e, t)| match e {
        Effect::Member(m, msg) => Some(((m, msg), t)),
        _ => None,
    });
    let order_skus = next().flat_map(|(e, t)| match e {
        Effect::Sku(sku, msg) => Some(((sku, msg), t)),
        _ => None,
    });

    let stock_rows = stock_levels(
        direct_stock.concat(order_stock),
        config.low_stock_threshold,
        &ctx,
    );
    let recommendations = also_bought(baskets, config.also_bought_top, &ctx);
    let rating_rows = ratings(reviews, &ctx);
    let member_rows = members(member_events.concat(order_members), &ctx);
    let listings = products
        .clone()
        .map(|((sku, _seller, listing), t)| ((sku, listing), t));
    let named = products.map(|((_sku, seller, _), t)| ((seller, SellerMsg::Named), t));
    let seller_records = catalog(order_skus.concat(listings), categories, &ctx);
    let seller_rows = sellers(seller_records.concat(named), &ctx);

    let rows = order_rows
        .concat(stock_rows)
        .concat(recommendations)
        .concat(rating_rows)
        .concat(member_rows)
        .concat(seller_rows)
        .concat(dead.map(|(d, t)| (Row::DeadLetter(d), t)));
    let probe = ProbeHandle::new();
    send_batches(rows, out, failed, &ctx, writing).probe_with(&probe);
    (
        Inputs {
            orders: orders_in,
            stock: stock_in,
            reviews: reviews_in,
            members: members_in,
            products: products_in,
            categories: categories_in,
            dead: dead_in,
            end: ctx.end.clone(),
        },
        probe,
    )
}
