//! One pipeline across several processes: timely's own cluster mode (processes × worker
//! threads, exchanging over TCP).
//!
//! Every process runs the same dataflow; worker `i` of process `p` is worker
//! `p × threads + i` of the cluster, and reads the streams
//! [`shopflow_ingest::source::assign`] gives it among all workers. What the workers of one
//! process share through memory (each one's input time and end, see [`crate::ends`]) is
//! mirrored to the other processes by a small dataflow of its own: each worker broadcasts
//! its entries when they change, and every process merges what it receives. Every entry
//! moves one way only, so a signal that arrives late only makes a worker wait a little
//! longer, never lets it pass a time it must not.
//!
//! Timely has no partial failure: a process that dies breaks its peers' connections, their
//! workers stop with an error, and the supervisor restarts every process (recovery is that
//! of one process: replay from the sinks' guards).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::vec::Input;
use timely::dataflow::operators::{Inspect, Probe};

use crate::ends::{Ends, Signal};

/// Where this process stands in a cluster of processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This process's index, `0..addresses.len()`.
    pub process: usize,
    /// `host:port` of every process, in process order (this one's included: it listens
    /// there for the others).
    pub addresses: Vec<String>,
    /// Every process writes the rows it owns (see [`shopflow_model::Writers`]), each with its
    /// own progress records; otherwise the last process writes every row. Only for stores
    /// every process reaches (Redis, MySQL, ClickHouse).
    pub writer_per_process: bool,
}

/// Why a cluster configuration cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClusterError {
    /// The process index is not among the addresses.
    #[error("process {process} is not one of the {processes} processes (indexes start at 0)")]
    Index {
        /// The index given.
        process: usize,
        /// How many processes the peer list names.
        processes: usize,
    },
    /// An address is not `host:port`.
    #[error("peer address {0:?} is not host:port")]
    Address(String),
    /// Two processes were given the same address.
    #[error("peer address {0} is given twice")]
    Repeated(String),
}

impl ClusterConfig {
    /// A checked cluster configuration.
    pub fn new(process: usize, addresses: Vec<String>) -> Result<Self, ClusterError> {
        if process >= addresses.len() {
            return Err(ClusterError::Index {
                process,
                processes: addresses.len(),
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        for a in &addresses {
            let port_ok = a
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return Err(ClusterError::Address(a.clone()));
            }
            if !seen.insert(a.as_str()) {
                return Err(ClusterError::Repeated(a.clone()));
            }
        }
        Ok(ClusterConfig {
            process,
            addresses,
            writer_per_process: false,
        })
    }

    /// How many processes the cluster has.
    pub fn processes(&self) -> usize {
        self.addresses.len()
    }

    /// Whether this process writes the sinks: every process with a writer per process,
    /// else the last one, which holds the cluster's last worker (where
    /// `output::send_batches` then puts every row).
    pub fn writes_sinks(&self) -> bool {
        self.writer_per_process || self.process + 1 == self.processes()
    }

    /// Whether this process writes the logs (alerts, dead letters): the last one.
    pub fn writes_logs(&self) -> bool {
        self.process + 1 == self.processes()
    }

    /// This process's writer among the cluster's (one for all without a writer per process).
    pub fn writers(&self) -> shopflow_model::Writers {
        match self.writer_per_process {
            true => shopflow_model::Writers::new(self.process, self.processes()),
            false => shopflow_model::Writers::ONE,
        }
    }

    /// Timely's configuration for this process with `threads` workers.
    pub(crate) fn timely(&self, threads: usize) -> timely::Config {
        timely::Config {
            communication: timely::CommunicationConfig::Cluster {
                threads,
                process: self.process,
                addresses: self.addresses.clone(),
                report: false,
                zerocopy: false,
            },
            worker: timely::WorkerConfig::default(),
        }
    }
}

impl ClusterConfig {
    /// Agrees with the other processes on the checkpoint to continue from. Each process
    /// offers the sequence numbers of the usable checkpoints in its own state directory;
    /// the answer, the same in every process, is the newest one all of them offer (`None`:
    /// every process replays from the start). A process that died while the others wrote
    /// their part of a checkpoint lacks it, so the cluster goes back to the one before.
    /// Runs a short timely computation over the same addresses before the pipeline's.
    pub fn agree_on_checkpoint(&self, offer: Vec<u64>) -> Result<Option<u64>, String> {
        let guards = timely::execute(self.timely(1), move |worker| {
            let offers: Rc<RefCell<Vec<Vec<u64>>>> = Rc::default();
            let seen = offers.clone();
            let probe = ProbeHandle::new();
            let mut input = worker.dataflow::<u64, _, _>(|scope| {
                let (input, stream) = scope.new_input::<Vec<u64>>();
                stream
                    .broadcast()
                    .inspect(move |o: &Vec<u64>| seen.borrow_mut().push(o.clone()))
                    .probe_with(&probe);
                input
            });
            input.send(offer.clone());
            drop(input);
            while !probe.done() {
                worker.step_or_park(Some(Duration::from_millis(1)));
            }
            let offers = offers.borrow();
            let common = offers
                .iter()
                .skip(1)
                .fold(offers.first().cloned().unwrap_or_default(), |acc, o| {
                    acc.into_iter().filter(|s| o.contains(s)).collect()
                });
            common.into_iter().max()
        })?;
        guards
            .join()
            .into_iter()
            .next()
            .unwrap_or_else(|| Err("no worker".into()))
    }
}

/// How often a worker looks whether its entries changed (and sends them if so).
const MIRROR_PERIOD: Duration = Duration::from_millis(1);

/// Builds, in `worker`, the dataflow that mirrors [`Ends`] between the processes: the
/// worker's own entries go to every worker whenever they change, and those of workers in
/// other processes are merged into `ends` (those of this process are there already). The
/// worker stops sending once it has left its loop (nothing of it changes after that),
/// which lets the dataflow finish.
pub(crate) fn mirror(worker: &mut timely::worker::Worker, ends: Arc<Ends>, threads: usize) {
    let index = worker.index();
    let process = index / threads.max(1);
    worker.dataflow::<u64, _, _>(move |scope| {
        let mine = ends.clone();
        source::<_, CapacityContainerBuilder<Vec<Signal>>, _, _>(
            scope,
            "MirrorEnds",
            move |cap, info| {
                let activator = scope.activator_for(info.address);
                let mut cap = Some(cap);
                let mut sent: Option<Signal> = None;
                move |output| {
                    let Some(c) = cap.as_ref() else {
                        return;
                    };
                    // Read before the entries: the last signal sent holds the final ones.
                    let finished = mine.retired[index].load(Ordering::Acquire);
                    let now = mine.signal(index);
                    if sent.as_ref() != Some(&now) {
                        output.session(c).give(now.clone());
                        sent = Some(now);
                    }
                    if finished {
                        cap = None;
                    } else {
                        activator.activate_after(MIRROR_PERIOD);
                    }
                }
            },
        )
        .broadcast()
        .inspect(move |s: &Signal| {
            if s.worker() / threads.max(1) != process {
                ends.apply(s);
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_configuration_is_checked() {
        let two = vec!["a:1".to_string(), "b:2".to_string()];
        assert!(ClusterConfig::new(1, two.clone()).is_ok());
        assert_eq!(
            ClusterConfig::new(2, two),
            Err(ClusterError::Index {
                process: 2,
                processes: 2
            })
        );
        assert_eq!(
            ClusterConfig::new(0, vec!["a".into()]),
            Err(ClusterError::Address("a".into()))
        );
        assert_eq!(
            ClusterConfig::new(0, vec!["a:1".into(), "a:1".into()]),
            Err(ClusterError::Repeated("a:1".into()))
        );
    }
}
