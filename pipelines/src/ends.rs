//! How the workers end a run and take checkpoints together: each worker's input time,
//! end and checkpoint progress, shared by the workers of this process through atomics and,
//! in a cluster, mirrored to the other processes through a small dataflow of their own
//! (see [`crate::cluster`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use shopflow_model::Millis;

use crate::dataflow::Inputs;

/// How the workers of this process end a run together. A bounded run's views end as of
/// the largest event time any worker saw (SPEC §8), so every worker must drive the
/// frontier past that time before any of them closes its inputs; a worker that runs out of
/// input first must meanwhile not hold the frontier back (the others wait on it). Each
/// worker publishes its input time; a finished worker follows the slowest unfinished one.
pub(crate) struct Ends {
    /// Each worker's input time.
    pub(crate) caps: Vec<AtomicU64>,
    /// 0 while the worker reads; then 1 + the last time its views need.
    pub(crate) finals: Vec<AtomicU64>,
    /// Whether some worker accepted an event.
    pub(crate) any_event: AtomicBool,
    /// Whether some worker stopped with an error (the others then stop too).
    pub(crate) aborted: AtomicBool,
    /// Whether each worker has streams to read (workers without any never send records
    /// and do not hold the input time back).
    pub(crate) reads: Vec<AtomicBool>,
    /// The time each worker's dataflow inputs are at.
    pub(crate) timely: Vec<AtomicU64>,
    /// For each worker, 1 + the latest input time it sent records at (0 = none).
    pub(crate) sent: Vec<AtomicU64>,
    /// Whether each worker has read its bounded input to the end (kept only when
    /// checkpoints are on, see the end of `worker_main`).
    pub(crate) at_end: Vec<AtomicBool>,
    /// How far each worker is in taking the checkpoints asked for.
    pub(crate) votes: Votes,
    /// Whether each worker of this process has left its loop (its entries change no more;
    /// not sent to other processes).
    pub(crate) retired: Vec<AtomicBool>,
}

/// The checkpoint entries of [`Ends`] (see `runtime::Coordinator`): the checkpoint asked
/// for, each worker's progress in it, and worker 0's decision. Each process takes its own
/// workers' part, so what a process has finished is not among them.
pub(crate) struct Votes {
    /// The latest checkpoint asked for (1, 2, …; 0 = none yet).
    pub(crate) requested: AtomicU64,
    /// The checkpoint each worker has joined.
    pub(crate) joined: Vec<AtomicU64>,
    /// The checkpoint for which each worker's probe has passed its time.
    pub(crate) ready: Vec<AtomicU64>,
    /// The checkpoint whose part each worker has saved.
    pub(crate) saved: Vec<AtomicU64>,
    /// Worker 0's latest decision: (checkpoint, 1 + its time, or 0 if it is skipped).
    pub(crate) decision: Mutex<(u64, u64)>,
    /// The checkpoint at the end of a bounded input (0 = not asked for yet).
    pub(crate) final_epoch: AtomicU64,
}

impl Votes {
    fn new(workers: usize) -> Self {
        Votes {
            requested: AtomicU64::new(0),
            joined: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            ready: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            saved: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            decision: Mutex::new((0, 0)),
            final_epoch: AtomicU64::new(0),
        }
    }

    /// Records worker 0's decision for checkpoint `epoch` (a later one replaces an
    /// earlier one, never the reverse).
    pub(crate) fn decide(&self, epoch: u64, value: u64) {
        let mut d = self.decision.lock().unwrap_or_else(|e| e.into_inner());
        if epoch > d.0 {
            *d = (epoch, value);
        }
    }

    /// The decision for checkpoint `epoch`, once made.
    pub(crate) fn decided(&self, epoch: u64) -> Option<u64> {
        let d = *self.decision.lock().unwrap_or_else(|e| e.into_inner());
        (d.0 == epoch).then_some(d.1)
    }
}

/// Marks a worker finished (and the run aborted) if it leaves before finishing normally.
pub(crate) struct EndGuard<'a> {
    pub(crate) ends: &'a Ends,
    pub(crate) index: usize,
}

impl Drop for EndGuard<'_> {
    fn drop(&mut self) {
        let f = &self.ends.finals[self.index];
        if f.load(Ordering::Acquire) == 0 {
            self.ends.aborted.store(true, Ordering::Release);
            f.store(1, Ordering::Release);
        }
        self.ends.retired[self.index].store(true, Ordering::Release);
    }
}

impl Ends {
    pub(crate) fn new(workers: usize) -> Self {
        Ends {
            caps: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            finals: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            any_event: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
            reads: (0..workers).map(|_| AtomicBool::new(true)).collect(),
            timely: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            sent: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            at_end: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            votes: Votes::new(workers),
            retired: (0..workers).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// The smallest input frontier of a worker holding at the end of its bounded input.
    pub(crate) fn at_end_floor(&self) -> Option<Millis> {
        self.at_end
            .iter()
            .zip(&self.caps)
            .filter(|(e, _)| e.load(Ordering::Acquire))
            .map(|(_, c)| c.load(Ordering::Acquire))
            .min()
    }

    /// Whether every worker with streams has read its bounded input to the end.
    pub(crate) fn all_readers_at_end(&self) -> bool {
        self.reads
            .iter()
            .zip(&self.at_end)
            .all(|(r, e)| !r.load(Ordering::Acquire) || e.load(Ordering::Acquire))
    }

    /// The smallest input frontier of a worker with streams, finished or not: the only
    /// time a checkpoint can describe (no reading worker dates a record before its own
    /// frontier, after a restart either).
    pub(crate) fn min_reading_cap(&self) -> Option<Millis> {
        self.reads
            .iter()
            .zip(&self.caps)
            .filter(|(r, _)| r.load(Ordering::Acquire))
            .map(|(_, c)| c.load(Ordering::Acquire))
            .min()
    }

    /// Moves worker `index`'s dataflow inputs up to one millisecond before the input
    /// frontier of the slowest worker still reading (`strict`: of any worker with streams,
    /// while a checkpoint is being agreed on). Records are dated no earlier than their
    /// worker's frontier, so they are never before the inputs' time; and a checkpoint at
    /// the slowest frontier T finds every record sent before it at a time before T, hence
    /// applied once the dataflow's frontier reaches T, with nothing left in flight.
    pub(crate) fn follow(
        &self,
        index: usize,
        inputs: &mut Inputs,
        timely: &mut Millis,
        strict: bool,
    ) {
        let slowest = if strict {
            self.min_reading_cap()
        } else {
            self.slowest_reader()
        };
        if let Some(t) = slowest.map(|t| t.saturating_sub(1)) {
            if t > *timely {
                *timely = t;
                inputs.advance_to(t);
                self.timely[index].store(t, Ordering::Release);
            }
        }
    }

    /// The input time of the slowest worker still reading, if any.
    pub(crate) fn slowest_reader(&self) -> Option<Millis> {
        self.finals
            .iter()
            .zip(&self.caps)
            .filter(|(f, _)| f.load(Ordering::Acquire) == 0)
            .map(|(_, c)| c.load(Ordering::Acquire))
            .min()
    }

    /// Once every worker finished: the last time of the run, if any event was accepted.
    pub(crate) fn last_time(&self) -> Option<Option<Millis>> {
        let mut last = 0;
        for f in &self.finals {
            match f.load(Ordering::Acquire) {
                0 => return None,
                v => last = last.max(v - 1),
            }
        }
        Some(self.any_event.load(Ordering::Acquire).then_some(last))
    }
}

/// One worker's entries of [`Ends`], as sent to the other processes of a cluster. Every
/// entry only ever moves one way (times up, flags on, `reads` off), so a process applies
/// what it receives as a merge: a late or repeated signal changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Signal {
    worker: usize,
    cap: Millis,
    last: u64,
    timely: Millis,
    sent: u64,
    reads: bool,
    at_end: bool,
    any_event: bool,
    aborted: bool,
    requested: u64,
    joined: u64,
    ready: u64,
    saved: u64,
    decision: (u64, u64),
    final_epoch: u64,
}

impl Signal {
    /// The worker it is from.
    pub(crate) fn worker(&self) -> usize {
        self.worker
    }
}

impl Ends {
    /// Worker `index`'s entries as they are now.
    pub(crate) fn signal(&self, index: usize) -> Signal {
        let load = |v: &[AtomicU64]| v[index].load(Ordering::Acquire);
        Signal {
            worker: index,
            cap: load(&self.caps),
            last: load(&self.finals),
            timely: load(&self.timely),
            sent: load(&self.sent),
            reads: self.reads[index].load(Ordering::Acquire),
            at_end: self.at_end[index].load(Ordering::Acquire),
            any_event: self.any_event.load(Ordering::Acquire),
            aborted: self.aborted.load(Ordering::Acquire),
            requested: self.votes.requested.load(Ordering::Acquire),
            joined: load(&self.votes.joined),
            ready: load(&self.votes.ready),
            saved: load(&self.votes.saved),
            decision: *self
                .votes
                .decision
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
            final_epoch: self.votes.final_epoch.load(Ordering::Acquire),
        }
    }

    /// Merges a worker's entries received from another process.
    pub(crate) fn apply(&self, s: &Signal) {
        let i = s.worker;
        self.caps[i].fetch_max(s.cap, Ordering::AcqRel);
        self.finals[i].fetch_max(s.last, Ordering::AcqRel);
        self.timely[i].fetch_max(s.timely, Ordering::AcqRel);
        self.sent[i].fetch_max(s.sent, Ordering::AcqRel);
        if !s.reads {
            self.reads[i].store(false, Ordering::Release);
        }
        if s.at_end {
            self.at_end[i].store(true, Ordering::Release);
        }
        if s.any_event {
            self.any_event.store(true, Ordering::Release);
        }
        if s.aborted {
            self.aborted.store(true, Ordering::Release);
        }
        let v = &self.votes;
        v.decide(s.decision.0, s.decision.1);
        v.requested.fetch_max(s.requested, Ordering::AcqRel);
        v.final_epoch.fetch_max(s.final_epoch, Ordering::AcqRel);
        v.ready[i].fetch_max(s.ready, Ordering::AcqRel);
        v.saved[i].fetch_max(s.saved, Ordering::AcqRel);
        // Last: a worker seen to have joined a checkpoint is seen with the input time and
        // the records it had when it joined (it sends none after).
        v.joined[i].fetch_max(s.joined, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_merge_whatever_their_order() {
        let here = Ends::new(2);
        here.caps[1].store(50, Ordering::Release);
        here.finals[1].store(71, Ordering::Release);
        here.reads[1].store(false, Ordering::Release);
        here.any_event.store(true, Ordering::Release);
        let newer = here.signal(1);
        here.caps[1].store(40, Ordering::Release);
        let older = here.signal(1);
        let there = Ends::new(2);
        there.apply(&newer);
        there.apply(&older);
        assert_eq!(
            there.signal(1),
            newer,
            "an older signal arriving late moved a time back"
        );
        let untouched = |v: &[AtomicU64]| v[0].load(Ordering::Acquire) == 0;
        assert!(
            untouched(&there.caps)
                && untouched(&there.finals)
                && there.reads[0].load(Ordering::Acquire),
            "worker 0's entries were touched"
        );
        assert_eq!(
            there.slowest_reader(),
            Some(0),
            "worker 0 still reads at time 0"
        );
        assert_eq!(there.last_time(), None, "worker 0 has not finished");
        there.finals[0].store(31, Ordering::Release);
        assert_eq!(there.last_time(), Some(Some(70)));
    }
}
