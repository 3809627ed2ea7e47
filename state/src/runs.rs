//! [`SortedRuns`]: a priority queue (smallest first) whose saved items stay in sorted runs
//! of checkpoint pages, read a page at a time as the queue reaches them.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::buckets::BucketError;
use crate::paged::{append, page_encoding, read_page, write_page, PAGE_BYTES};
use crate::side::{self, Side};

/// Runs kept apart in a checkpoint at most: a checkpoint that would write more merges
/// them all into one (each restart adds one run: the items queued since).
const MAX_RUNS: usize = 4;

/// Where a page of a run is in the side data.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct RunPage {
    at: u64,
    len: u32,
    count: u32,
}

/// A saved run being consumed: its pages not read yet and the items of the page read.
struct Run<T> {
    side: Side,
    pages: VecDeque<RunPage>,
    head: VecDeque<T>,
}

impl<T: DeserializeOwned> Run<T> {
    /// Reads the next page if the current one is used up; whether an item is at the head.
    fn fill(&mut self) -> bool {
        while self.head.is_empty() {
            let Some(p) = self.pages.pop_front() else {
                return false;
            };
            read_page(&self.side, p.at, p.len, p.count, |item| {
                self.head.push_back(item);
            });
        }
        true
    }

    fn remaining(&self) -> usize {
        self.head.len() + self.pages.iter().map(|p| p.count as usize).sum::<usize>()
    }
}

/// A min-priority queue that a checkpoint saves as sorted runs of pages and a restart reads
/// back one page at a time, as the smallest items are taken.
///
/// Made for records scheduled far ahead (a basket leaving its 90-day window, a spend
/// leaving its 183-day window): most of them wait for months, and a restart needs only
/// the earliest. Items pushed since the restore wait in a heap in memory.
///
/// Saved inside [`side::writing`] (a checkpoint), the queue writes each run's rest (pages
/// not read yet copied as they are) and its heap as one more sorted run; past
/// [`MAX_RUNS`] runs everything is merged into one. Saved elsewhere, it is an ordinary
/// sorted sequence.
pub struct SortedRuns<T> {
    heap: BinaryHeap<Reverse<T>>,
    runs: Vec<Run<T>>,
}

impl<T: Ord> Default for SortedRuns<T> {
    fn default() -> Self {
        SortedRuns {
            heap: BinaryHeap::new(),
            runs: Vec::new(),
        }
    }
}

impl<T> fmt::Debug for SortedRuns<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SortedRuns")
            .field("heap", &self.heap.len())
            .field("runs", &self.runs.len())
            .finish()
    }
}

/// Where the smallest item is.
enum Top {
    Heap,
    Run(usize),
}

impl<T> SortedRuns<T>
where
    T: Ord + Serialize + DeserializeOwned,
{
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an item.
    pub fn push(&mut self, item: T) {
        self.heap.push(Reverse(item));
    }

    /// Where the smallest item is, reading the next page of a run whose page is used up.
    fn top(&mut self) -> Option<Top> {
        self.runs.retain_mut(Run::fill);
        let mut best: Option<(Top, &T)> = self.heap.peek().map(|Reverse(t)| (Top::Heap, t));
        for (i, run) in self.runs.iter().enumerate() {
            let head = run.head.front().expect("filled");
            if best.as_ref().is_none_or(|(_, b)| head < *b) {
                best = Some((Top::Run(i), head));
            }
        }
        best.map(|(top, _)| top)
    }

    /// The smallest item.
    pub fn peek(&mut self) -> Option<&T> {
        match self.top()? {
            Top::Heap => self.heap.peek().map(|Reverse(t)| t),
            Top::Run(i) => self.runs[i].head.front(),
        }
    }

    /// Takes the smallest item.
    pub fn pop(&mut self) -> Option<T> {
        match self.top()? {
            Top::Heap => self.heap.pop().map(|Reverse(t)| t),
            Top::Run(i) => self.runs[i].head.pop_front(),
        }
    }

    /// Removes every item.
    pub fn clear(&mut self) {
        self.heap.clear();
        self.runs.clear();
    }

    /// Number of items (in memory and on saved pages).
    pub fn len(&self) -> usize {
        self.heap.len() + self.runs.iter().map(Run::remaining).sum::<usize>()
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Items on saved pages not read yet.
    pub fn on_pages(&self) -> usize {
        self.runs
            .iter()
            .flat_map(|r| &r.pages)
            .map(|p| p.count as usize)
            .sum()
    }

    /// Every item, smallest first (reads every page; for saving).
    fn all_sorted(&self) -> Vec<&T> {
        let mut all: Vec<&T> = self.heap.iter().map(|Reverse(t)| t).collect();
        all.sort_unstable();
        all
    }
}

/// Cuts items into pages appended to the running [`side::writing`].
#[derive(Default)]
struct RunWriter {
    cur: Vec<u8>,
    count: u32,
    pages: Vec<RunPage>,
}

impl RunWriter {
    fn push<T: Serialize>(&mut self, item: &T) -> Result<(), BucketError> {
        page_encoding().serialize_into(&mut self.cur, item)?;
        self.count += 1;
        if self.cur.len() >= PAGE_BYTES {
            self.cut()?;
        }
        Ok(())
    }

    fn cut(&mut self) -> Result<(), BucketError> {
        if self.count == 0 {
            return Ok(());
        }
        let (at, len) = write_page(&self.cur)?;
        self.pages.push(RunPage {
            at,
            len,
            count: std::mem::take(&mut self.count),
        });
        self.cur.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<RunPage>, BucketError> {
        self.cut()?;
        Ok(self.pages)
    }
}

impl<T> SortedRuns<T>
where
    T: Ord + Serialize + DeserializeOwned,
{
    /// Every item, smallest first: the heap's, the runs' heads, and `decoded` (the runs'
    /// pages not read yet, see [`SortedRuns::decoded_runs`]).
    fn merged<'a>(&'a self, decoded: &'a [Vec<T>]) -> Vec<&'a T> {
        let mut all: Vec<&T> = self.heap.iter().map(|Reverse(t)| t).collect();
        all.extend(self.runs.iter().flat_map(|r| &r.head));
        all.extend(decoded.iter().flatten());
        all.sort_unstable();
        all
    }

    /// Decodes the pages not read yet of every run (for a merge or an inline save).
    fn decoded_runs(&self) -> Vec<Vec<T>> {
        self.runs
            .iter()
            .map(|run| {
                let mut rest = Run {
                    side: run.side.clone(),
                    pages: run.pages.clone(),
                    head: VecDeque::new(),
                };
                let mut items = Vec::with_capacity(rest.remaining());
                while rest.fill() {
                    items.extend(rest.head.drain(..));
                }
                items
            })
            .collect()
    }

    /// Writes the runs of a checkpoint.
    fn write_runs(&self) -> Result<Vec<Vec<RunPage>>, BucketError> {
        let mut out = Vec::new();
        if self.runs.len() + 1 > MAX_RUNS {
            // One merged run: every saved item and the heap's, in order.
            let decoded = self.decoded_runs();
            let mut w = RunWriter::default();
            for item in self.merged(&decoded) {
                w.push(item)?;
            }
            out.push(w.finish()?);
            return Ok(out);
        }
        let mut buf = Vec::new();
        for run in &self.runs {
            let mut w = RunWriter::default();
            // The page being consumed, re-encoded; the pages after it copied as they are.
            for item in &run.head {
                w.push(item)?;
            }
            w.cut()?;
            for p in &run.pages {
                run.side.read_into(p.at, u64::from(p.len), &mut buf)?;
                let at = append(&buf)?;
                w.pages.push(RunPage { at, ..*p });
            }
            out.push(w.pages);
        }
        let mut w = RunWriter::default();
        for item in self.all_sorted() {
            w.push(item)?;
        }
        out.push(w.finish()?);
        out.retain(|pages| !pages.is_empty());
        Ok(out)
    }
}

/// The serialized form: the items themselves, or (in a checkpoint) their runs' pages.
#[derive(Deserialize)]
enum Form<T> {
    Inline(Vec<T>),
    Runs(Vec<Vec<RunPage>>),
}

struct Items<'a, T>(Vec<&'a T>);

impl<T: Serialize> Serialize for Items<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for item in &self.0 {
            seq.serialize_element(item)?;
        }
        seq.end()
    }
}

impl<T> Serialize for SortedRuns<T>
where
    T: Ord + Serialize + DeserializeOwned,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        if !side::is_writing() {
            let decoded = self.decoded_runs();
            let all = self.merged(&decoded);
            return s.serialize_newtype_variant("Form", 0, "Inline", &Items(all));
        }
        let runs = self.write_runs().map_err(S::Error::custom)?;
        s.serialize_newtype_variant("Form", 1, "Runs", &runs)
    }
}

impl<'de, T> Deserialize<'de> for SortedRuns<T>
where
    T: Ord + Serialize + DeserializeOwned,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Form::<T>::deserialize(d)? {
            Form::Inline(items) => Ok(SortedRuns {
                heap: items.into_iter().map(Reverse).collect(),
                runs: Vec::new(),
            }),
            Form::Runs(runs) => {
                let side = side::current()
                    .ok_or_else(|| D::Error::custom("a queue's runs outside a checkpoint"))?;
                let fits = runs
                    .iter()
                    .flatten()
                    .all(|p| p.at.saturating_add(u64::from(p.len)) <= side.len());
                if !fits {
                    return Err(D::Error::custom(BucketError::Layout(
                        "a queue's runs do not fit their side data",
                    )));
                }
                Ok(SortedRuns {
                    heap: BinaryHeap::new(),
                    runs: runs
                        .into_iter()
                        .map(|pages| Run {
                            side: side.clone(),
                            pages: pages.into(),
                            head: VecDeque::new(),
                        })
                        .collect(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Part;
    use proptest::prelude::*;

    type Queue = SortedRuns<(u64, u64, String)>;

    fn checkpoint(q: &Queue) -> Queue {
        Part::save(q).expect("saves").restore().expect("restores")
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push(u64, String),
        Pop,
        Checkpoint,
        Inline,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u64..500, "[a-z]{0,60}").prop_map(|(t, s)| Op::Push(t, s)),
            3 => Just(Op::Pop),
            1 => Just(Op::Checkpoint),
            1 => Just(Op::Inline),
        ]
    }

    proptest! {
        #[test]
        fn pops_like_a_heap(ops in prop::collection::vec(op(), 1..1500)) {
            let mut q = Queue::new();
            let mut model = BinaryHeap::new();
            let mut arrival = 0u64;
            for op in ops {
                match op {
                    Op::Push(t, s) => {
                        q.push((t, arrival, s.clone()));
                        model.push(Reverse((t, arrival, s)));
                        arrival += 1;
                    }
                    Op::Pop => {
                        let want = model.pop().map(|Reverse(x)| x);
                        prop_assert_eq!(q.peek().cloned(), want.clone());
                        prop_assert_eq!(q.pop(), want);
                    }
                    Op::Checkpoint => q = checkpoint(&q),
                    Op::Inline => {
                        let bytes = bincode::serialize(&q).expect("serializes");
                        q = bincode::deserialize(&bytes).expect("deserializes");
                    }
                }
                prop_assert_eq!(q.len(), model.len());
            }
            while let Some(Reverse(want)) = model.pop() {
                prop_assert_eq!(q.pop(), Some(want));
            }
            prop_assert_eq!(q.pop(), None);
        }
    }

    #[test]
    fn a_restore_reads_only_the_pages_it_reaches() {
        let mut q = Queue::new();
        for i in 0..50_000u64 {
            q.push((i * 7 % 50_000, i, "x".repeat(20)));
        }
        let mut back = checkpoint(&q);
        assert_eq!(back.on_pages(), 50_000);
        for want in 0..10u64 {
            assert_eq!(back.pop().map(|(t, _, _)| t), Some(want));
        }
        assert!(
            back.on_pages() > 45_000,
            "{} items still on pages after ten pops",
            back.on_pages()
        );
        // Runs pile up over restarts until they are merged; the order never changes.
        for round in 0..6u64 {
            back.push((3, 1_000_000 + round, "new".into()));
            back = checkpoint(&back);
            assert!(back.runs.len() <= MAX_RUNS, "{} runs", back.runs.len());
        }
        assert_eq!(back.len(), 50_000 - 10 + 6);
        let mut last = None;
        while let Some((t, a, _)) = back.pop() {
            assert!(last < Some((t, a)), "{:?} after {last:?}", (t, a));
            last = Some((t, a));
        }
    }
}
