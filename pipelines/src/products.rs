//! Product views: the co-purchase graph ("frequently bought together", SPEC §5.4) and
//! ratings (SPEC §5.6).

use differential_dataflow::{AsCollection, VecCollection};
use shopflow_ingest::lifecycle::OrderState;
use shopflow_model::{AlsoBought, Millis, RatingView};
use timely::dataflow::operators::vec::Map;

/// One accepted review event: (dataflow time, partition, offset, the review after it:
/// `Some((sku, rating))` when posted, `None` when deleted). The latest by this tuple wins.
pub type ReviewEvent = (Millis, i32, i64, Option<(u64, u64)>);

/// Ratings per SKU over current reviews. A review is current when its latest event is a
/// post; re-posting under another SKU moves it.
pub fn ratings<'s>(
    reviews: VecCollection<'s, Millis, (u64, ReviewEvent), isize>,
) -> VecCollection<'s, Millis, (u64, RatingView), isize> {
    reviews
        .reduce_named("CurrentReview", |_id, input, output| {
            // Values arrive sorted: the last is the latest event.
            let ((_, _, _, latest), _) = input[input.len() - 1];
            if let Some((sku, rating)) = latest {
                output.push(((*sku, *rating), 1));
            }
        })
        .map(|(_id, sku_rating)| sku_rating)
        .reduce_named("Ratings", |sku, input, output| {
            let mut view = RatingView {
                sku: *sku,
                ..RatingView::default()
            };
            for (rating, n) in input {
                let n = *n as u64;
                view.count += n;
                view.sum += *rating * n;
                view.histogram[(*rating - 1) as usize] += n;
            }
            output.push((view, 1));
        })
}

/// Baskets (SPEC §5.4, §8): each qualifying order's distinct unrefunded SKUs, present while
/// p ≤ T < p + `window` (p = payment time). Each version of a basket is retracted at
/// p + `window` by an update scheduled at that future time, so baskets expire on time
/// even when no event arrives.
pub fn baskets<'s>(
    states: VecCollection<'s, Millis, (u64, OrderState), isize>,
    max_skus: usize,
    window: Millis,
) -> VecCollection<'s, Millis, (u64, Vec<u64>), isize> {
    states
        .flat_map(move |(order_id, state)| {
            state
                .basket(max_skus)
                .map(|(paid_at, skus)| (order_id, paid_at, skus))
        })
        .inner
        .flat_map(move |((order_id, paid_at, skus), t, d)| {
            let end = paid_at.saturating_add(window).max(t);
            [
                ((order_id, skus.clone()), t, d),
                ((order_id, skus), end, -d),
            ]
        })
        .as_collection()
}

/// The top `k` co-purchased SKUs per SKU: pair weights counted over current baskets,
/// ordered by weight descending, then SKU ascending.
///
/// A basket of n SKUs contributes n·(n−1) ordered pairs; the basket cap keeps that under
/// 2,450 per basket.
pub fn also_bought<'s>(
    baskets: VecCollection<'s, Millis, (u64, Vec<u64>), isize>,
    k: usize,
) -> VecCollection<'s, Millis, (u64, AlsoBought), isize> {
    baskets
        .flat_map(|(_order, skus)| {
            let mut pairs = Vec::with_capacity(skus.len() * skus.len().saturating_sub(1));
            for &a in &skus {
                for &b in &skus {
                    if a != b {
                        pairs.push((a, b));
                    }
                }
            }
            pairs
        })
        .count()
        .map(|((a, b), weight)| (a, (std::cmp::Reverse(weight as u64), b)))
        .reduce_named("TopK", move |sku, input, output| {
            // Values are sorted by (weight desc, sku asc): the first k are the answer.
            let items = input
                .iter()
                .take(k)
                .map(|((std::cmp::Reverse(w), b), _)| (*b, *w))
                .collect();
            output.push((AlsoBought { sku: *sku, items }, 1));
        })
}
