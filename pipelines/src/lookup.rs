//! Point-in-time lookups: "the value of key k as of time c", frozen once read.
//!
//! A differential `join` revises its output whenever either side changes; ledgers need
//! the opposite. The points rate is the grade *at confirmation* and a settlement uses the
//! seller and commission *at confirmation*; later changes must not rewrite entries
//! (SPEC §5.2, §5.3). [`lookup_when_known`] reads the table once per query, at the
//! query's time, and never revisits the answer.

use std::collections::{BTreeMap, HashMap};

use differential_dataflow::{AsCollection, VecCollection};
use shopflow_model::Millis;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::progress::frontier::AntichainRef;
use timely::ExchangeData;

/// Updates held until the frontier passes their time, with a capability to answer at it.
type Queued<D> = BTreeMap<Millis, (Capability<Millis>, Vec<(u64, D, isize)>)>;

/// For each query `(k, q)` added at time c, emits `(q, v, t)` at time t, where t is the
/// first time ≥ c at which `table` holds a value `v` for `k` (c itself when it already
/// does), and `v` is the table's value for `k` as of t (every table update with time ≤ t
/// applied).
///
/// Queries are facts that are only ever added: a query retracted and re-added at the same
/// time (a new version of the record it comes from) cancels out; a net retraction is
/// ignored. `table` must hold at most one value per key at any time.
///
/// A query waiting for an unknown key holds no capability, so it does not hold back the
/// output frontier; it is answered at the time of the table update that makes the key
/// known.
pub fn lookup_when_known<'s, Q, V>(
    queries: VecCollection<'s, Millis, (u64, Q), isize>,
    table: VecCollection<'s, Millis, (u64, V), isize>,
    name: &str,
) -> VecCollection<'s, Millis, (Q, V, Millis), isize>
where
    Q: ExchangeData + Ord + Clone,
    V: ExchangeData + Ord + Clone,
{
    let by_key_q = Exchange::new(|x: &((u64, Q), Millis, isize)| (x.0).0);
    let by_key_t = Exchange::new(|x: &((u64, V), Millis, isize)| (x.0).0);
    queries
        .inner
        .binary_frontier(table.inner, by_key_q, by_key_t, name, |_cap, _info| {
            // Updates not yet processed, by time.
            let mut queued_q: Queued<Q> = BTreeMap::new();
            let mut queued_t: Queued<V> = BTreeMap::new();
            // The table as of the last processed time: per key, its (value, count) updates.
            let mut values: HashMap<u64, Vec<(V, isize)>> = HashMap::new();
            // Queries whose key was unknown at their time.
            let mut waiting: HashMap<u64, Vec<Q>> = HashMap::new();

            move |(q_in, q_frontier), (t_in, t_frontier), output| {
                q_in.for_each(|cap, data| {
                    for ((k, q), t, d) in data.drain(..) {
                        queued_q
                            .entry(t)
                            .or_insert_with(|| (cap.delayed(&t, 0), Vec::new()))
                            .1
                            .push((k, q, d));
                    }
                });
                t_in.for_each(|cap, data| {
                    for ((k, v), t, d) in data.drain(..) {
                        queued_t
                            .entry(t)
                            .or_insert_with(|| (cap.delayed(&t, 0), Vec::new()))
                            .1
                            .push((k, v, d));
                    }
                });
                let ready = |t: &Millis, f1: AntichainRef<Millis>, f2: AntichainRef<Millis>| {
                    !f1.less_equal(t) && !f2.less_equal(t)
                };
                loop {
                    let next_q = queued_q.keys().next().copied();
                    let next_t = queued_t.keys().next().copied();
                    let time = match (next_q, next_t) {
                        (None, None) => break,
                        (Some(a), None) | (None, Some(a)) => a,
                        (Some(a), Some(b)) => a.min(b),
                    };
                    if !ready(&time, q_frontier.frontier(), t_frontier.frontier()) {
                        break;
                    }
                    // Table updates at `time` first: a lookup at t sees updates at t.
                    if let Some((cap, updates)) = queued_t.remove(&time) {
                        let mut touched: Vec<u64> = Vec::new();
                        for (k, v, d) in updates {
                            let entry = values.entry(k).or_default();
                            entry.push((v, d));
                            if entry.len() > 8 {
                                consolidate(entry);
                            }
                            touched.push(k);
                        }
                        touched.sort_unstable();
                        touched.dedup();
                        let mut session = output.session(&cap);
                        for k in touched {
                            let Some(v) = current(&mut values, k) else {
                                continue;
                            };
                            if let Some(qs) = waiting.remove(&k) {
                                for q in qs {
                                    session.give(((q, v.clone(), time), time, 1));
                                }
                            }
                        }
                    }
                    if let Some((cap, mut updates)) = queued_q.remove(&time) {
                        updates.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
                        let mut session = output.session(&cap);
                        let mut i = 0;
                        while i < updates.len() {
                            let (k, q, mut d) = updates[i].clone();
                            i += 1;
                            while i < updates.len() && updates[i].0 == k && updates[i].1 == q {
                                d += updates[i].2;
                                i += 1;
                            }
                            if d <= 0 {
                                continue;
                            }
                            match current(&mut values, k) {
                                Some(v) => {
                                    for _ in 0..d {
                                        session.give(((q.clone(), v.clone(), time), time, 1));
                                    }
                                }
                                None => waiting.entry(k).or_default().push(q),
                            }
                        }
                    }
                }
            }
        })
        .as_collection()
}

/// Sums the counts of equal values and drops those that cancel.
fn consolidate<V: Ord>(updates: &mut Vec<(V, isize)>) {
    updates.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<(V, isize)> = Vec::with_capacity(updates.len());
    for (v, d) in updates.drain(..) {
        match out.last_mut() {
            Some((last, n)) if *last == v => *n += d,
            _ => out.push((v, d)),
        }
    }
    out.retain(|(_, n)| *n != 0);
    *updates = out;
}

/// The value `k` holds now, if any.
fn current<V: Ord + Clone>(values: &mut HashMap<u64, Vec<(V, isize)>>, k: u64) -> Option<V> {
    let entry = values.get_mut(&k)?;
    consolidate(entry);
    if entry.is_empty() {
        values.remove(&k);
        return None;
    }
    entry.iter().find(|(_, n)| *n > 0).map(|(v, _)| v.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use differential_dataflow::input::Input;
    use std::sync::{Arc, Mutex};
    use timely::dataflow::operators::probe::Handle;
    use timely::dataflow::operators::{Inspect, Probe};

    /// Answers: (query, value, dated) with the time they were emitted.
    fn run(
        queries: Vec<(u64, u32, Millis)>,
        table: Vec<(u64, char, Millis, isize)>,
    ) -> Vec<((u32, char, Millis), Millis)> {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        timely::execute_directly(move |worker| {
            let probe = Handle::new();
            let (mut q_in, mut t_in) = worker.dataflow::<Millis, _, _>(|scope| {
                let (q_in, q) = scope.new_collection::<(u64, u32), isize>();
                let (t_in, t) = scope.new_collection::<(u64, char), isize>();
                lookup_when_known(q, t, "Test")
                    .inner
                    .inspect(move |(x, t, d)| {
                        assert_eq!(*d, 1);
                        sink.lock().unwrap().push((*x, *t));
                    })
                    .probe_with(&probe);
                (q_in, t_in)
            });
            let end = 100;
            for time in 0..end {
                q_in.advance_to(time);
                t_in.advance_to(time);
                for &(k, q, at) in &queries {
                    if at == time {
                        q_in.insert((k, q));
                        // A new version of the source record: retract and re-add.
                        q_in.remove((k, q));
                        q_in.insert((k, q));
                    }
                }
                for &(k, v, at, d) in &table {
                    if at == time {
                        t_in.update((k, v), d);
                    }
                }
            }
            q_in.advance_to(end);
            t_in.advance_to(end);
            q_in.flush();
            t_in.flush();
            while probe.less_than(&end) {
                worker.step();
            }
        });
        let mut got = got.lock().unwrap().clone();
        got.sort();
        got
    }

    #[test]
    fn reads_the_value_at_the_query_time_and_freezes_it() {
        let got = run(
            vec![(1, 10, 5), (1, 11, 20)],
            vec![
                (1, 'a', 3, 1),
                (1, 'a', 5, -1),
                (1, 'b', 5, 1),
                (1, 'b', 9, -1),
                (1, 'c', 9, 1),
            ],
        );
        // The query at 5 sees the update at 5; the later change to 'c' does not revisit it.
        assert_eq!(got, vec![((10, 'b', 5), 5), ((11, 'c', 20), 20)]);
    }

    #[test]
    fn waits_for_an_unknown_key_without_holding_time_back() {
        let got = run(
            vec![(7, 1, 4), (8, 2, 6)],
            vec![(8, 'x', 2, 1), (7, 'y', 30, 1)],
        );
        assert_eq!(got, vec![((1, 'y', 30), 30), ((2, 'x', 6), 6)]);
    }
}
