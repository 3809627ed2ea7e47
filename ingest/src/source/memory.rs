//! An in-memory log (the embedded demo's generator output, tests).

use std::collections::VecDeque;

use super::{KeyedPayloads, Message, Source, SourceError, StreamId};

/// A bounded source over messages held in memory, one stream per list.
#[derive(Debug)]
pub struct MemorySource {
    streams: Vec<StreamId>,
    queues: Vec<VecDeque<Message>>,
}

impl MemorySource {
    /// A source over `streams`, each with its payloads in log order (offsets from 0).
    pub fn new(streams: Vec<(StreamId, KeyedPayloads)>) -> Self {
        let mut ids = Vec::new();
        let mut queues = Vec::new();
        for (i, (id, msgs)) in streams.into_iter().enumerate() {
            ids.push(id);
            queues.push(
                msgs.into_iter()
                    .enumerate()
                    .map(|(offset, (key, payload))| Message {
                        stream: i,
                        offset: offset as i64,
                        key,
                        payload,
                    })
                    .collect(),
            );
        }
        MemorySource {
            streams: ids,
            queues,
        }
    }

    /// The source of worker `worker` of `peers`: its share of `streams` (see
    /// [`super::assign`]), copied.
    pub fn share(streams: &[(StreamId, KeyedPayloads)], worker: usize, peers: usize) -> Self {
        MemorySource::new(
            streams
                .iter()
                .enumerate()
                .filter(|(i, _)| super::assign(*i, worker, peers))
                .map(|(_, s)| s.clone())
                .collect(),
        )
    }

    /// The same source continuing a checkpoint: each stream starts at its offset in
    /// `offsets` (by (topic, partition); streams not listed start at 0).
    pub fn starting_at(mut self, offsets: &std::collections::BTreeMap<(String, i32), i64>) -> Self {
        for (id, q) in self.streams.iter().zip(&mut self.queues) {
            if let Some(&from) = offsets.get(&(id.topic.clone(), id.partition)) {
                q.retain(|m| m.offset >= from);
            }
        }
        self
    }

    /// An empty source (for workers that own no stream).
    pub fn empty() -> Self {
        MemorySource {
            streams: Vec::new(),
            queues: Vec::new(),
        }
    }
}

impl Source for MemorySource {
    fn streams(&self) -> &[StreamId] {
        &self.streams
    }

    /// Reads the streams in turn, an equal share of `max` from each that has messages
    /// left (as a consumer fetching several partitions does).
    fn poll(&mut self, out: &mut Vec<Message>, max: usize) -> Result<(), SourceError> {
        let mut budget = max;
        while budget > 0 {
            let open = self.queues.iter().filter(|q| !q.is_empty()).count();
            if open == 0 {
                break;
            }
            let share = (budget / open).max(1);
            for q in self.queues.iter_mut().filter(|q| !q.is_empty()) {
                let n = share.min(q.len()).min(budget);
                out.extend(q.drain(..n));
                budget -= n;
            }
        }
        Ok(())
    }

    fn caught_up(&self, stream: usize) -> bool {
        self.queues[stream].is_empty()
    }

    fn finished(&self) -> bool {
        self.queues.iter().all(VecDeque::is_empty)
    }

    fn lag(&self, stream: usize) -> Option<u64> {
        Some(self.queues[stream].len() as u64)
    }
}
