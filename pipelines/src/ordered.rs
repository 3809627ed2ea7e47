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
use std::cmp::Ordering;
use std::rc::Rc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shopflow_model::Millis;
use shopflow_state::SortedRuns;

use crate::state::States;
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

/// What every operator of one worker shares: the end of a bounded input and the registry
/// of operator states that checkpoints save and restarts restore.
#[derive(Clone, Default)]
pub struct Ctx {
    /// See [`End`].
    pub end: End,
    /// See [`States`].
    pub states: States,
}

/// An `ordered` operator's whole state: the records waiting for the frontier and the
/// state of its logic. This is what a checkpoint saves of it.
#[derive(Serialize, Deserialize)]
#[serde(bound(
    serialize = "D: Serialize + DeserializeOwned, S: Serialize",
    deserialize = "D: Serialize + DeserializeOwned, S: DeserializeOwned"
))]
struct Waiting<D, S> {
    /// Records due soon, in time order once sorted (see [`ordered`]).
    near: Vec<(D, Millis)>,
    /// Records dated far ahead, earliest (then first arrived) first. A checkpoint saves
    /// them as sorted runs that a restart reads back a page at a time, as their times come.
    future: SortedRuns<Later<D>>,
    /// Arrival number of the next record put in `future`.
    arrivals: u64,
    /// The operator's own state.
    logic: S,
}

impl<D, S: Default> Default for Waiting<D, S> {
    fn default() -> Self {
        Waiting {
            near: Vec::new(),
            future: SortedRuns::default(),
            arrivals: 0,
            logic: S::default(),
        }
    }
}

/// A record dated far ahead, ordered by (time, arrival): one heap entry per record, with
/// no per-time allocation (these are most of what an operator holds: every basket and
/// every spend waits here for the end of its window).
#[derive(Serialize, Deserialize)]
struct Later<D> {
    time: Millis,
    arrival: u64,
    record: D,
}

impl<D> PartialEq for Later<D> {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.arrival) == (other.time, other.arrival)
    }
}

impl<D> Eq for Later<D> {}

impl<D> PartialOrd for Later<D> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<D> Ord for Later<D> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.time, self.arrival).cmp(&(other.time, other.arrival))
    }
}

impl<D: Serialize + DeserializeOwned, S> Waiting<D, S> {
    /// The earliest time of a waiting record.
    fn earliest(&mut self) -> Option<Millis> {
        let near = self.near.iter().map(|(_, t)| *t).min();
        let future = self.future.peek().map(|l| l.time);
        match (near, future) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Handles the records of `stream` (partitioned by `pact`) time by time: when the frontier
/// passes a time t, `logic(state, t, records, out)` gets every record dated t, in arrival
/// order (in a buffer it may reorder or drain; it is cleared after), and may push output
/// records dated t or later into `out`.
///
/// `state` is the operator's own state (its maps of SKUs, members…). It and the records
/// waiting for the frontier are registered in `ctx.states` under `name`, so a checkpoint
/// saves them and a restart starts from them.
///
/// Records dated after `end` (once set) are never handed over; when the input ends (an
/// empty frontier) records still waiting are dropped. The worker loop drives the frontier
/// past `end` before it closes the inputs, so what is dropped is only work scheduled after
/// the end of a bounded input (windows that would close later).
pub fn ordered<'s, D, O, P, S, L>(
    stream: Timed<'s, D>,
    pact: P,
    name: &str,
    ctx: &Ctx,
    mut logic: L,
) -> Timed<'s, O>
where
    D: Clone + Serialize + DeserializeOwned + 'static,
    O: Clone + 'static,
    S: Default + Serialize + DeserializeOwned + 'static,
    P: ParallelizationContract<Millis, Vec<(D, Millis)>>,
    L: FnMut(&mut S, Millis, &mut Vec<D>, &mut Vec<(O, Millis)>) + 'static,
{
    let end = ctx.end.clone();
    // Records not handled yet, in two places: `near`, in time order (stable: arrival
    // order within a time), holds those due soon; `future` holds those dated at least
    // NEAR past the frontier when they arrived (windows that close months later), so
    // that they are not sorted again at every activation. For one time, `future`'s
    // records arrived before `near`'s (see `handle`).
    let waiting = ctx.states.register::<Waiting<D, S>>(name);
    stream.unary_frontier(pact, name, move |cap, _info| {
        // One capability no later than any waiting record: restored records keep the
        // initial one, moved to the earliest of them.
        let mut held: Option<Capability<Millis>> = waiting.borrow_mut().earliest().map(|t| {
            let mut cap = cap;
            cap.downgrade(&t);
            cap
        });
        let mut out: Vec<(O, Millis)> = Vec::new();
        // The records of one time, handed to `logic` (reused).
        let mut group: Vec<D> = Vec::new();
        // How many records `near` held at most lately (decays by 1/16 each activation):
        // its capacity is given back only when far above that.
        let mut high: usize = 0;
        // The frontier and end of the last pass over the waiting records, and whether
        // `near` is still sorted (restored records may not be).
        let mut passed: Option<(Millis, Option<Millis>)> = None;
        let mut sorted = waiting.borrow().near.is_empty();
        move |(input, frontier), output| {
            let mut guard = waiting.borrow_mut();
            let Waiting {
                near,
                future,
                arrivals,
                logic: state,
            } = &mut *guard;
            let before = near.len();
            input.for_each(|cap, data| {
                let at = *cap.least().expect("a message has a time");
                if held.as_ref().is_none_or(|h| at < *h.time()) {
                    held = cap.retain_least(0);
                }
                debug_assert!(
                    data.iter().all(|(_, t)| *t >= at),
                    "a record before its message"
                );
                near.append(data);
            });
            let Some(&f) = frontier.frontier().first() else {
                near.clear();
                future.clear();
                held = None;
                return;
            };
            sorted &= near.len() == before;
            let e = end.get();
            // A record arrives no earlier than the frontier: unless the frontier (or the
            // end) moved, nothing new is ready.
            if passed == Some((f, e)) {
                return;
            }
            passed = Some((f, e));
            if !sorted {
                // The sorted part and the new arrivals (mostly in time order): merging runs.
                near.sort_by_key(|(_, t)| *t);
                sorted = true;
            }
            let ready = |t: Millis| t < f && e.is_none_or(|e| t <= e);
            high = near.len().max(high - high / 16);
            let mut step =
                |t: Millis, d: &mut Vec<D>, o: &mut Vec<(O, Millis)>| logic(state, t, d, o);
            handle(near, future, ready, &mut step, &mut group, &mut out);
            // What stays in `near` and is dated far ahead moves to `future`.
            let far = near.partition_point(|(_, t)| *t < f.saturating_add(NEAR));
            for (record, time) in near.drain(far..) {
                future.push(Later {
                    time,
                    arrival: *arrivals,
                    record,
                });
                *arrivals += 1;
            }
            // A burst leaves `near` with room it will not need again for long.
            if near.capacity() > 4 * high + 4096 {
                near.shrink_to(2 * high);
            }
            if group.capacity() > 4096 && group.capacity() > 4 * high {
                group.shrink_to(high);
            }
            if !out.is_empty() {
                let cap = held.as_ref().expect("output without a capability");
                output.session(cap).give_iterator(out.drain(..));
            }
            let earliest = match (near.first(), future.peek()) {
                (Some((_, a)), Some(b)) => Some((*a).min(b.time)),
                (Some((_, a)), None) => Some(*a),
                (None, b) => b.map(|l| l.time),
            };
            match earliest {
                Some(t) => {
                    if let Some(h) = held.as_mut() {
                        h.downgrade(&t);
                    }
                }
                None => held = None,
            }
        }
    })
}

/// Records dated this far (ms) past the frontier when they arrive wait in a heap by time
/// rather than in the sorted vector.
const NEAR: Millis = 3_600_000;

/// Hands every ready time's records to `logic`, in time order: for one time, the records
/// waiting in `future` first, then those of `near` (sorted by time), all in arrival order.
/// A record went to `future` only if it was dated NEAR or more past the frontier when it
/// arrived; a later record of the same time arrives at a frontier no earlier, so it is in
/// `future` too or after it in arrival order — never before.
fn handle<D, O, L>(
    near: &mut Vec<(D, Millis)>,
    future: &mut SortedRuns<Later<D>>,
    ready: impl Fn(Millis) -> bool,
    logic: &mut L,
    group: &mut Vec<D>,
    out: &mut Vec<(O, Millis)>,
) where
    D: Serialize + DeserializeOwned,
    L: FnMut(Millis, &mut Vec<D>, &mut Vec<(O, Millis)>),
{
    let k = near.partition_point(|(_, t)| ready(*t));
    let mut now = near.drain(..k).peekable();
    loop {
        let from_future = future.peek().map(|l| l.time).filter(|t| ready(*t));
        let from_near = now.peek().map(|(_, t)| *t);
        let t = match (from_future, from_near) {
            (None, None) => break,
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
        };
        group.clear();
        while future.peek().is_some_and(|l| l.time == t) {
            if let Some(l) = future.pop() {
                group.push(l.record);
            }
        }
        while let Some((d, _)) = now.next_if(|(_, u)| *u == t) {
            group.push(d);
        }
        logic(t, group, out);
    }
    group.clear();
}
