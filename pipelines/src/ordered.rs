//! The one kind of stateful operator the views are built from: records carry their exact
//! event time, and an operator handles them time by time, in time order, once the frontier
//! has passed.
//!
//! Timely's capabilities stay coarse: an operator holds at most one, at the earliest time
//! it still has work for, however many distinct milliseconds its records carry. (Giving
//! every millisecond its own capability, as differential's arrangements do, made progress
//! tracking the largest single cost of the pipeline.) Records may carry times later than the
//! capability of the message they travel in: an operator's output records are never
//! earlier than the time it is working on, and work scheduled for the future (a basket that
//! leaves its 90-day window) is simply a record dated in the future.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;

use shopflow_model::Millis;
use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

/// A stream of records, each with the exact time it takes effect.
pub type Timed<'s, D> = StreamVec<'s, Millis, (D, Millis)>;

/// The last time a run's views show, once the worker loop knows it (the end of a bounded
/// input): operators do no work for later times, and the output's last batch is as of it.
/// Shared by the operators of one worker.
pub type End = Rc<Cell<Option<Millis>>>;

/// Handles the records of `stream` (partitioned by `pact`) time by time: when the frontier
/// passes a time t, `logic(t, records, out)` gets every record dated t, in arrival order,
/// and may push output records dated t or later into `out`.
///
/// Records dated after `end` (once set) are never handed over; when the input ends (an
/// empty frontier) records still waiting are dropped. The worker loop drives the frontier
/// past `end` before it closes the inputs, so what is dropped is only work scheduled after
/// the end of a bounded input (windows that would close later).
pub fn ordered<'s, D, O, P, L>(
    stream: Timed<'s, D>,
    pact: P,
    name: &str,
    end: &End,
    mut logic: L,
) -> Timed<'s, O>
where
    D: Clone + 'static,
    O: Clone + 'static,
    P: ParallelizationContract<Millis, Vec<(D, Millis)>>,
    L: FnMut(Millis, Vec<D>, &mut Vec<(O, Millis)>) + 'static,
{
    let end = end.clone();
    stream.unary_frontier(pact, name, move |_cap, _info| {
        // Records by time, and one capability no later than any of them.
        let mut pending: BTreeMap<Millis, Vec<D>> = BTreeMap::new();
        let mut held: Option<Capability<Millis>> = None;
        let mut out: Vec<(O, Millis)> = Vec::new();
        move |(input, frontier), output| {
            input.for_each(|cap, data| {
                let at = *cap.least().expect("a message has a time");
                if held.as_ref().is_none_or(|h| at < *h.time()) {
                    held = cap.retain_least(0);
                }
                for (d, t) in data.drain(..) {
                    debug_assert!(t >= at, "a record earlier than its message");
                    pending.entry(t).or_default().push(d);
                }
            });
            if frontier.is_empty() {
                pending.clear();
                held = None;
                return;
            }
            while let Some(entry) = pending.first_entry() {
                let t = *entry.key();
                if frontier.less_equal(&t) || end.get().is_some_and(|e| t > e) {
                    break;
                }
                logic(t, entry.remove(), &mut out);
            }
            if !out.is_empty() {
                let cap = held.as_ref().expect("output without a capability");
                output.session(cap).give_iterator(out.drain(..));
            }
            match pending.keys().next() {
                Some(&t) => {
                    if let Some(h) = held.as_mut() {
                        h.downgrade(&t);
                    }
                }
                None => held = None,
            }
        }
    })
}
