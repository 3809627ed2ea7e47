//! Which external services are failing right now, shared by the source, the sink writer and
//! the API's `/readyz`.
//!
//! A component (`kafka`, `redis`, `mysql`, …) is failing from the first failed attempt
//! until the next successful one. Several members (e.g. the timely workers, each with its
//! own Kafka consumer) may report for one component: it starts failing when the first
//! member fails and recovers when the last failing member succeeds, so one outage gives
//! one "failing" and one "recovered" transition however many members notice it.
//!
//! Readiness follows the failure at once, but saying it in the log is the caller's choice:
//! [`Health::announce`] marks an outage as reported (once), and [`Outage::announced`] tells
//! the caller whether its end is worth a line. The sink writer announces a failure at once;
//! the Kafka source only once reading has failed for a few seconds, so the brief blip of a
//! client reconnecting after a broker restart is counted and makes `/readyz` answer 503 while
//! it lasts, without a second warning about an outage that already ended.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The shared failure state. Cheap to clone; clones share it.
#[derive(Clone, Debug, Default)]
pub struct Health {
    inner: Arc<Mutex<BTreeMap<String, Failure>>>,
    placement: Arc<Mutex<Option<Placement>>>,
}

/// Where this process stands in a cluster of processes, as `/readyz` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Placement {
    /// This process's index.
    pub process: usize,
    /// How many processes the cluster has.
    pub processes: usize,
    /// The streams (`topic/partition`) this process's workers read.
    pub streams: BTreeSet<String>,
}

/// One component's ongoing failure.
#[derive(Clone, Debug)]
pub struct Failure {
    /// When its first member started failing.
    pub since: Instant,
    /// Failed attempts so far.
    pub attempts: u64,
    /// The latest error.
    pub error: String,
    /// Members failing now.
    members: BTreeSet<usize>,
    /// Whether a caller has reported this outage ([`Health::announce`]).
    announced: bool,
}

/// What a [`Health::recovered`] call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outage {
    /// How long the component was failing.
    pub lasted: Duration,
    /// Failed attempts during the outage.
    pub attempts: u64,
    /// Whether the outage was reported ([`Health::announce`]): only then is its end.
    pub announced: bool,
}

impl Health {
    /// A state with nothing failing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that this process is process `process` of a cluster of `processes`.
    pub fn place(&self, process: usize, processes: usize) {
        let mut p = self.placement.lock().unwrap_or_else(|e| e.into_inner());
        let p = p.get_or_insert_with(Placement::default);
        p.process = process;
        p.processes = processes;
    }

    /// Records that a worker of this process reads `stream` (only in a cluster: see
    /// [`Health::place`]).
    pub fn reads(&self, stream: String) {
        if let Some(p) = self
            .placement
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            p.streams.insert(stream);
        }
    }

    /// Where this process stands, if it is part of a cluster.
    pub fn placement(&self) -> Option<Placement> {
        self.placement
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Failure>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a failed attempt of `member` at `component`. Returns true when this starts
    /// the component's outage (nothing of it was failing): the moment to log it once.
    pub fn failed(&self, component: &str, member: usize, error: &str) -> bool {
        let mut map = self.lock();
        match map.get_mut(component) {
            Some(f) => {
                f.attempts += 1;
                f.error = error.to_string();
                f.members.insert(member);
                false
            }
            None => {
                map.insert(
                    component.to_string(),
                    Failure {
                        since: Instant::now(),
                        attempts: 1,
                        error: error.to_string(),
                        members: BTreeSet::from([member]),
                        announced: false,
                    },
                );
                true
            }
        }
    }

    /// Records a successful attempt of `member` at `component`. Returns the outage it ends
    /// when it was the last failing member (the moment to log the recovery once).
    pub fn recovered(&self, component: &str, member: usize) -> Option<Outage> {
        let mut map = self.lock();
        let f = map.get_mut(component)?;
        f.members.remove(&member);
        if !f.members.is_empty() {
            return None;
        }
        let f = map.remove(component)?;
        Some(Outage {
            lasted: f.since.elapsed(),
            attempts: f.attempts,
            announced: f.announced,
        })
    }

    /// Marks `component`'s ongoing outage as reported. Returns true the first time for this
    /// outage (the moment to log it, once); false when it was already reported or nothing of
    /// `component` is failing.
    pub fn announce(&self, component: &str) -> bool {
        match self.lock().get_mut(component) {
            Some(f) if !f.announced => {
                f.announced = true;
                true
            }
            _ => false,
        }
    }

    /// How long `component` has been failing, if it is.
    pub fn failing_for(&self, component: &str) -> Option<Duration> {
        self.lock().get(component).map(|f| f.since.elapsed())
    }

    /// Whether nothing is failing.
    pub fn is_healthy(&self) -> bool {
        self.lock().is_empty()
    }

    /// One line per failing component: what, for how long, how many attempts, the error.
    pub fn problems(&self) -> Vec<String> {
        self.lock()
            .iter()
            .map(|(name, f)| {
                format!(
                    "{name} failing for {:.0} s ({} failed attempts, retrying): {}",
                    f.since.elapsed().as_secs_f64(),
                    f.attempts,
                    f.error
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_outage_is_one_transition_each_way_whatever_the_members() {
        let h = Health::new();
        assert!(h.is_healthy());
        assert!(h.failed("kafka", 0, "refused"));
        assert!(!h.failed("kafka", 1, "refused"));
        assert!(!h.failed("kafka", 0, "refused again"));
        assert!(!h.is_healthy());
        assert_eq!(h.problems().len(), 1);
        assert!(
            h.problems()[0].contains("refused again"),
            "{:?}",
            h.problems()
        );
        assert_eq!(h.recovered("kafka", 0), None, "member 1 still fails");
        let o = h.recovered("kafka", 1).expect("last member recovered");
        assert_eq!(o.attempts, 3);
        assert!(!o.announced, "nobody reported it");
        assert!(h.is_healthy());
        assert_eq!(h.recovered("kafka", 1), None, "nothing to recover from");
        // A new failure after recovering is a new outage.
        assert!(h.failed("kafka", 1, "down"));
        assert!(h.failed("redis", 0, "down"));
        assert_eq!(h.problems().len(), 2);
        assert!(h.failing_for("redis").is_some());
        assert!(h.failing_for("mysql").is_none());
    }

    #[test]
    fn an_outage_is_announced_once_and_its_end_says_so() {
        let h = Health::new();
        assert!(!h.announce("kafka"), "nothing fails: nothing to announce");
        h.failed("kafka", 0, "timed out");
        assert!(!h.is_healthy(), "not ready before it is announced");
        assert!(h.announce("kafka"));
        h.failed("kafka", 1, "timed out");
        assert!(!h.announce("kafka"), "already announced");
        assert_eq!(h.recovered("kafka", 0), None);
        let o = h.recovered("kafka", 1).expect("last member recovered");
        assert!(o.announced);
        // The next outage starts unannounced.
        h.failed("kafka", 0, "timed out");
        assert!(!h.recovered("kafka", 0).expect("recovered").announced);
    }
}
