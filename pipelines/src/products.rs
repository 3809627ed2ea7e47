//! Product views: the co-purchase graph ("frequently bought together", SPEC §5.4) and
//! ratings (SPEC §5.6).

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use shopflow_model::{AlsoBought, Millis, RatingView};
use shopflow_state::LazyMap;
use timely::dataflow::channels::pact::{Exchange, Pipeline};

use crate::ordered::{ordered, Ctx, Timed};
use crate::output::Row;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One accepted review event: the review after it (`Some((sku, rating))` when posted,
/// `None` when deleted), with the partition and offset it was read at. Of a review's
/// events the latest by (dataflow time, partition, offset) wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReviewMsg {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// The review after the event.
    pub review: Option<(u64, u64)>,
}

/// Ratings per SKU over current reviews. A review is current when its latest event is a
/// post; re-posting under another SKU moves it. A SKU whose last review goes loses its row.
pub fn ratings<'s>(reviews: Timed<'s, (u64, ReviewMsg)>, ctx: &Ctx) -> Timed<'s, Row> {
    let by_review = Exchange::new(|((id, _), _): &((u64, ReviewMsg), Millis)| *id);
    // Per review: the key of its latest event and what it says.
    type Latest = ((Millis, i32, i64), Option<(u64, u64)>);
    let changes = ordered(
        reviews,
        by_review,
        "CurrentReview",
        ctx,
        move |current: &mut FastMap<u64, Latest>, time, events, out| {
            for (id, ev) in events.drain(..) {
                let key = (time, ev.partition, ev.offset);
                let old = match current.get(&id) {
                    Some((latest, _)) if *latest > key => continue,
                    Some((_, review)) => *review,
                    None => None,
                };
                current.insert(id, (key, ev.review));
                if old != ev.review {
                    if let Some((sku, rating)) = old {
                        out.push(((sku, rating, -1i64), time));
                    }
                    if let Some((sku, rating)) = ev.review {
                        out.push(((sku, rating, 1i64), time));
                    }
                }
            }
        },
    );
    let by_sku = Exchange::new(|((sku, _, _), _): &((u64, u64, i64), Millis)| *sku);
    ordered(
        changes,
        by_sku,
        "Ratings",
        ctx,
        move |views: &mut FastMap<u64, RatingView>, time, changes, out| {
            changes.sort_unstable();
            for group in changes.chunk_by(|a, b| a.0 == b.0) {
                let sku = group[0].0;
                let view = views.entry(sku).or_insert_with(|| RatingView {
                    sku,
                    ..RatingView::default()
                });
                let before = *view;
                for &(_, rating, n) in group {
                    view.count = view.count.wrapping_add_signed(n);
                    view.sum = view.sum.wrapping_add_signed(rating as i64 * n);
                    let slot = &mut view.histogram[(rating - 1) as usize];
                    *slot = slot.wrapping_add_signed(n);
                }
                if *view == before {
                    continue;
                }
                if view.count == 0 {
                    views.remove(&sku);
                    out.push((Row::Rating(sku, None), time));
                } else {
                    out.push((Row::Rating(sku, Some(*view)), time));
                }
            }
        },
    )
}

/// A set saved in order, read back in one bulk build (serde's own reading inserts each
/// element in turn: the larger part of reading a popular SKU's partners back).
fn sorted_set<'de, D, T>(d: D) -> Result<BTreeSet<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Ord + serde::Deserialize<'de>,
{
    let items: Vec<T> = serde::Deserialize::deserialize(d)?;
    Ok(items.into_iter().collect())
}

/// The top `k` co-purchased SKUs per SKU over the current baskets: pair weights ordered
/// by weight descending, then SKU ascending.
///
/// A basket of n SKUs changes n·(n−1) ordered pairs (the basket cap keeps that under
/// 2,450). Each worker keeps, per SKU it owns, every partner's weight both by partner and
/// in rank order, so a change costs O(log partners) and reading the top k costs O(k),
/// whatever the SKU's popularity; a row is written only when the top k changed.
pub fn also_bought<'s>(baskets: Timed<'s, (Vec<u64>, i64)>, k: usize, ctx: &Ctx) -> Timed<'s, Row> {
    let pairs = ordered(
        baskets,
        Pipeline,
        "BasketPairs",
        ctx,
        |_: &mut (), time, baskets, out| {
            for (skus, d) in baskets.drain(..) {
                for &a in &skus {
                    for &b in &skus {
                        if a != b {
                            out.push(((a, b, d), time));
                        }
                    }
                }
            }
        },
    );
    #[derive(Default, serde::Serialize, serde::Deserialize)]
    struct Partners {
        weight: FastMap<u64, u64>,
        #[serde(deserialize_with = "sorted_set")]
        ranked: BTreeSet<(Reverse<u64>, u64)>,
        shown: Vec<(u64, u64)>,
    }
    let by_sku = Exchange::new(|((a, _, _), _): &((u64, u64, i64), Millis)| *a);
    ordered(
        pairs,
        by_sku,
        "TopK",
        ctx,
        move |graph: &mut LazyMap<u64, Partners>, time, pairs, out| {
            pairs.sort_unstable();
            for group in pairs.chunk_by(|x, y| x.0 == y.0) {
                let a = group[0].0;
                let p = graph.get_or_default(a);
                for run in group.chunk_by(|x, y| x.1 == y.1) {
                    let b = run[0].1;
                    let d: i64 = run.iter().map(|x| x.2).sum();
                    if d == 0 {
                        continue;
                    }
                    let w = p.weight.entry(b).or_insert(0);
                    if *w > 0 {
                        p.ranked.remove(&(Reverse(*w), b));
                    }
                    *w = w.wrapping_add_signed(d);
                    if *w > 0 {
                        p.ranked.insert((Reverse(*w), b));
                    } else {
                        p.weight.remove(&b);
                    }
                }
                let top: Vec<(u64, u64)> = p
                    .ranked
                    .iter()
                    .take(k)
                    .map(|(Reverse(w), b)| (*b, *w))
                    .collect();
                if top == p.shown {
                    continue;
                }
                if top.is_empty() {
                    graph.remove(&a);
                    out.push((Row::AlsoBought(a, None), time));
                } else {
                    p.shown = top.clone();
                    out.push((
                        Row::AlsoBought(a, Some(AlsoBought { sku: a, items: top })),
                        time,
                    ));
                }
            }
        },
    )
}
