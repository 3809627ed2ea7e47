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

    fn poll(&mut self, out: &mut Vec<Message>, max: usize) -> Result<(), SourceError> {
        let mut budget = max;
        for q in &mut self.queues {
            let n = budget.min(q.len());
            out.extend(q.drain(..n));
            budget -= n;
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
