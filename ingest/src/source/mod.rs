//! Sources: where input messages come from.
//!
//! A source reads one or more *streams* (a Kafka topic-partition, or one file), each in log
//! order. The timely workers split the streams among themselves; see [`assign`].

mod file;
mod kafka;
mod memory;

pub use file::{FileSource, FILE_TOPIC};
pub use kafka::{KafkaConfig, KafkaSource};
pub use memory::MemorySource;

/// One input stream: a topic-partition, or a file as partition 0.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    /// Topic name (or file path).
    pub topic: String,
    /// Partition (0 for a file).
    pub partition: i32,
}

/// Messages of one stream as (key, payload) pairs in log order.
pub type KeyedPayloads = Vec<(Option<Vec<u8>>, Vec<u8>)>;

/// One raw input message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Index of its stream in [`Source::streams`].
    pub stream: usize,
    /// Offset within the stream (line index for a file).
    pub offset: i64,
    /// The message key.
    pub key: Option<Vec<u8>>,
    /// The message bytes.
    pub payload: Vec<u8>,
}

/// A source failed in a way that needs an operator (unreachable broker, unreadable file).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Kafka could not be reached or refused a request.
    #[error("Kafka at {brokers}: {what}: {source}")]
    Kafka {
        /// Bootstrap servers.
        brokers: String,
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: Box<rdkafka::error::KafkaError>,
    },
    /// A topic has no partitions or does not exist.
    #[error("Kafka topic {topic} does not exist on {brokers}")]
    NoTopic {
        /// Bootstrap servers.
        brokers: String,
        /// The topic.
        topic: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Reading kept failing with transient errors for longer than the configured limit.
    #[error("reading the input failed for {:.0} s; giving up. Last error: {last}", after.as_secs_f64())]
    GaveUp {
        /// How long it had been failing.
        after: std::time::Duration,
        /// The last error.
        last: String,
    },
}

impl SourceError {
    /// Whether retrying may help: the broker could not be reached or refused a request
    /// (it may be restarting). A missing topic, an unreadable file or a run that already
    /// gave up are not.
    pub fn is_transient(&self) -> bool {
        matches!(self, SourceError::Kafka { .. })
    }
}

/// A source of input messages, read by one timely worker.
pub trait Source: Send {
    /// The streams this source reads; [`Message::stream`] indexes this list.
    fn streams(&self) -> &[StreamId];

    /// Appends up to `max` messages to `out`, waiting at most briefly when none is ready.
    fn poll(&mut self, out: &mut Vec<Message>, max: usize) -> Result<(), SourceError>;

    /// Whether stream `stream` has nothing waiting: it has been read up to its end (for a
    /// bounded source) or up to the latest offset known to exist (for a live one).
    fn caught_up(&self, stream: usize) -> bool;

    /// Whether the source is bounded and every stream has been read to its end.
    fn finished(&self) -> bool;

    /// Messages of stream `stream` known to exist but not read yet (a Kafka partition's
    /// high watermark minus the next offset), or `None` when the source cannot tell.
    fn lag(&self, _stream: usize) -> Option<u64> {
        None
    }

    /// Stops (`true`) or resumes reading stream `stream`: the worker pauses a stream whose
    /// event time runs too far ahead of the others, so that what waits in memory for the
    /// frontier stays bounded. Sources that hold their input in memory anyway, or have one
    /// stream, may ignore it (the default).
    fn set_paused(&mut self, _stream: usize, _paused: bool) {}

    /// The name a checkpoint knows stream `stream` by: its (topic, partition). A file is
    /// `("file", 0)` whatever its path, so that a longer file continues the checkpoint of
    /// a shorter one.
    fn stream_key(&self, stream: usize) -> (String, i32) {
        let s = &self.streams()[stream];
        (s.topic.clone(), s.partition)
    }

    /// Where message `offset` of stream `stream` starts in a file, if this source reads a
    /// file and knows it (see [`FilePosition`]): a checkpoint keeps it, so that a restart
    /// opens the file there instead of reading every line before. `None` (the default) for
    /// other sources, or for an offset the source did not pass recently.
    fn position(&self, _stream: usize, _offset: i64) -> Option<FilePosition> {
        None
    }
}

/// Where a line of a file starts, and the bytes just before it: a restart from a checkpoint
/// seeks there and checks that the file still has those bytes (the input is the same one)
/// rather than counting every line before it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FilePosition {
    /// The line (its offset).
    pub line: i64,
    /// The byte it starts at.
    pub byte: u64,
    /// Up to [`FilePosition::BEFORE`] bytes that precede it (the end of the line before,
    /// newline included); empty at the start of the file.
    pub before: Vec<u8>,
}

impl FilePosition {
    /// How many preceding bytes a position keeps to recognize the file.
    pub const BEFORE: usize = 256;
}

/// Whether stream number `index` (in a list every worker sees the same) belongs to worker
/// `worker` of `peers`: streams are dealt round-robin, so several processes sharing a topic
/// each take a disjoint share.
pub fn assign(index: usize, worker: usize, peers: usize) -> bool {
    index % peers.max(1) == worker
}
