//! Wires the input collections to the views and the output.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use differential_dataflow::input::{Input, InputSession};
use differential_dataflow::AsCollection;
use shopflow_model::{Millis, Output};
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::{Concat, Probe};
use timely::dataflow::Scope;

use crate::members::{members, MemberEvent};
use crate::orders::{order_states, placements, stock_effects, OrderEvent, StockDelta};
use crate::output::{send_batches, Row};
use crate::products::{also_bought, baskets, ratings, ReviewEvent};
use crate::sales::sales;
use crate::settlements::{listings, settlements, CategoryEvent, ProductEvent};
use crate::stock::{low_stock_alerts, stock_levels};

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

/// The dataflow's inputs, one set per worker.
pub struct Inputs {
    /// Accepted order events keyed by order.
    pub orders: InputSession<Millis, (u64, OrderEvent), isize>,
    /// Direct stock effects of non-order events, keyed by SKU (the diff carries the
    /// amounts: on_hand, reserved, mentions).
    pub stock: InputSession<Millis, u64, StockDelta>,
    /// Accepted review events keyed by review.
    pub reviews: InputSession<Millis, (u64, ReviewEvent), isize>,
    /// Accepted member events keyed by member.
    pub members: InputSession<Millis, (u64, MemberEvent), isize>,
    /// Accepted `product.upserted` events keyed by SKU.
    pub products: InputSession<Millis, (u64, ProductEvent), isize>,
    /// Accepted `category.upserted` events keyed by category.
    pub categories: InputSession<Millis, (u64, CategoryEvent), isize>,
    /// Sellers, each at the earliest time a `product.upserted` named it.
    pub sellers: InputSession<Millis, u64, isize>,
    /// Time markers (see [`Row::Tick`]).
    pub ticks: InputSession<Millis, (), isize>,
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
        self.sellers.advance_to(time);
        self.ticks.advance_to(time);
    }

    /// Sends buffered updates into the dataflow.
    pub fn flush(&mut self) {
        self.orders.flush();
        self.stock.flush();
        self.reviews.flush();
        self.members.flush();
        self.products.flush();
        self.categories.flush();
        self.sellers.flush();
        self.ticks.flush();
    }

    /// The time the inputs are at.
    pub fn time(&self) -> Millis {
        *self.orders.time()
    }
}

/// Builds the views in `scope`; returns the inputs and a probe on everything that feeds the
/// output, so `probe.less_than(t)` means "the sinks have not yet been handed time t".
pub fn build<'s>(
    scope: Scope<'s, Millis>,
    config: ViewConfig,
    out: SyncSender<Output>,
    failed: Arc<AtomicBool>,
) -> (Inputs, ProbeHandle<Millis>) {
    let (orders_in, orders) = scope.new_collection::<(u64, OrderEvent), isize>();
    let (stock_in, direct_stock) = scope.new_collection::<u64, StockDelta>();
    let (reviews_in, reviews) = scope.new_collection::<(u64, ReviewEvent), isize>();
    let (members_in, member_events) = scope.new_collection::<(u64, MemberEvent), isize>();
    let (products_in, products) = scope.new_collection::<(u64, ProductEvent), isize>();
    let (categories_in, categories) = scope.new_collection::<(u64, CategoryEvent), isize>();
    let (sellers_in, sellers) = scope.new_collection::<u64, isize>();
    let (ticks_in, ticks) = scope.new_collection::<(), isize>();

    let owned = placements(orders.clone());
    let member_placements = owned
        .clone()
        .flat_map(|(order_id, (effective, body))| match body {
            shopflow_model::EventBody::OrderPlaced { member_id, .. } => {
                Some((member_id, (effective, order_id)))
            }
            _ => None,
        });
    let states = order_states(orders);
    let order_rows = states.clone().map(|(_, state)| Row::Order(state.view()));
    let recommendations = also_bought(
        baskets(
            states.clone(),
            config.basket_max_skus,
            config.basket_window_ms,
        ),
        config.also_bought_top,
    )
    .map(|(_, row)| Row::AlsoBought(row));
    let rating_rows = ratings(reviews).map(|(_, row)| Row::Rating(row));
    let order_stock = states
        .clone()
        .explode(|(_, state)| stock_effects(&state).collect::<Vec<_>>());
    let levels = stock_levels(direct_stock.concat(order_stock));
    let alerts = low_stock_alerts(levels.clone(), config.low_stock_threshold)
        .as_collection()
        .map(Row::Alert);

    let member_views = members(
        states.clone(),
        member_events,
        member_placements,
        config.spend_window_ms,
    );
    let listing = listings(products);
    let settled = settlements(states.clone(), sellers, listing.clone(), categories);
    let sold = sales(owned, states.clone(), listing);

    let rows = levels
        .map(Row::Stock)
        .inner
        .concat(order_rows.inner)
        .concat(alerts.inner)
        .concat(recommendations.inner)
        .concat(rating_rows.inner)
        .concat(member_views.views.map(Row::Member).inner)
        .concat(member_views.recent_orders.map(Row::MemberOrders).inner)
        .concat(member_views.points.map(Row::Points).inner)
        .concat(member_views.alerts.as_collection().map(Row::Alert).inner)
        .concat(settled.entries.map(Row::Settlement).inner)
        .concat(settled.payouts.map(Row::Payout).inner)
        .concat(settled.invoices.map(Row::Invoice).inner)
        .concat(settled.sellers.map(Row::Seller).inner)
        .concat(sold.facts.map(Row::SalesFact).inner)
        .concat(sold.minutes.map(Row::SalesMinute).inner)
        .concat(ticks.map(|()| Row::Tick).inner);
    let probe = ProbeHandle::new();
    let rows = rows.probe_with(&probe);
    send_batches(rows, out, failed);
    (
        Inputs {
            orders: orders_in,
            stock: stock_in,
            reviews: reviews_in,
            members: members_in,
            products: products_in,
            categories: categories_in,
            sellers: sellers_in,
            ticks: ticks_in,
        },
        probe,
    )
}
