//! Kafka partitions, read with rdkafka.
//!
//! Each worker assigns itself (no consumer-group rebalancing) the partitions that
//! [`super::assign`] gives it, so the split is deterministic and several processes can
//! share the topics. Reading starts at the beginning of each partition: the dataflow state
//! is rebuilt by replay, and the sinks skip what they already hold.
//!
//! When the broker goes away (a restart, a network cut), librdkafka reconnects by itself
//! and resumes fetching at its position; the source notices the outage from the client's
//! error callbacks, confirms it with a watermark request, and returns a transient
//! [`SourceError::Kafka`] from [`Source::poll`] until the broker answers again (the worker
//! loop retries with backoff and reports it). Offsets are checked per partition: a message
//! delivered again (at or below the last offset read) is skipped, so nothing is read twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use super::{assign, Message, Source, SourceError, StreamId};

const META_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a watermark request that confirms (or clears) a suspected outage may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Most KiB librdkafka prefetches per partition (`queued.max.messages.kbytes`; its default
/// is 64 MiB), or the fetch size if larger. While the pipeline waits for a failing sink it
/// does not poll, and this is all the input that piles up in memory meanwhile.
pub const PREFETCH_KB_PER_PARTITION: usize = 1024;

/// The consumer's context: keeps the latest global error librdkafka reports (e.g. the
/// broker refusing connections) for the source to act on, instead of logging each one.
#[derive(Clone, Default)]
pub struct SourceContext {
    error: Arc<Mutex<Option<(KafkaError, String)>>>,
}

impl SourceContext {
    fn take(&self) -> Option<(KafkaError, String)> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "librdkafka reported an error");
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some((error, reason.to_string()));
    }
}

impl ConsumerContext for SourceContext {}

/// How to reach Kafka and what to read.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// Bootstrap servers, e.g. `127.0.0.1:19092`.
    pub brokers: String,
    /// Input topics.
    pub topics: Vec<String>,
    /// Bounded: stop at the high watermarks found at start (a replay, a test, a backfill).
    /// Live otherwise.
    pub bounded: bool,
    /// Most bytes fetched per partition per request (`max.partition.fetch.bytes`). Smaller
    /// fetches read the partitions more evenly, so the frontier (a minimum over them)
    /// advances in smaller steps; larger ones read faster.
    pub fetch_bytes_per_partition: usize,
    /// Where to start each (topic, partition): a restart from a checkpoint resumes at the
    /// checkpoint's next offsets. Partitions not listed start at their beginning.
    pub start_offsets: std::collections::BTreeMap<(String, i32), i64>,
}

/// A source over this worker's share of the partitions of some topics.
pub struct KafkaSource {
    brokers: String,
    /// Each stream's own queue. Declared before `consumer`: fields drop in order, and
    /// librdkafka requires the partition queues to be released before the consumer.
    queues: Vec<PartitionQueue<SourceContext>>,
    consumer: Arc<BaseConsumer<SourceContext>>,
    /// Stream number of each (topic, partition), for messages that arrive on the
    /// consumer's own queue (fetched before the partition queues were split off).
    index: HashMap<(String, i32), usize>,
    /// Streams the worker paused.
    paused: Vec<bool>,
    /// The stream the next poll reads first (turns rotate).
    next: usize,
    context: SourceContext,
    /// An error was reported and not yet cleared by a successful request to the broker.
    suspect: bool,
    streams: Vec<StreamId>,
    /// Next offset to read, per stream.
    position: Vec<i64>,
    /// Offset one past the last message known to exist, per stream.
    end: Vec<i64>,
    bounded: bool,
    last_refresh: Instant,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("brokers", &self.brokers)
            .field("streams", &self.streams)
            .finish()
    }
}

/// A consumer for `brokers` with shopflow's settings: no group offsets (the source assigns
/// and positions itself), a bounded prefetch, and a context that keeps the client's errors.
fn source_consumer(
    brokers: &str,
    fetch_bytes_per_partition: usize,
    context: SourceContext,
) -> Result<BaseConsumer<SourceContext>, SourceError> {
    let prefetch_kb = PREFETCH_KB_PER_PARTITION.max(fetch_bytes_per_partition.div_ceil(1024));
    ClientConfig::new()
        .set(
            "max.partition.fetch.bytes",
            fetch_bytes_per_partition.to_string(),
        )
        .set("queued.max.messages.kbytes", prefetch_kb.to_string())
        .set("bootstrap.servers", brokers)
        .set("group.id", "shopflow")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "50")
        // When a partition's prefetch queue is full, librdkafka (2.1 and later) postpones
        // that partition's next fetch by this long, 1,000 ms by default: with the bounded
        // prefetch above, a consumer behind the log (a replay, a restart, a backfill) then
        // read about one queue a second per partition. Raw consume of a 300,000-message
        // replay over 15 partitions: 41-56K msg/s with the default, 470-570K msg/s with
        // 10 ms; the whole pipeline through Kafka 35-46K -> 208-236K msg/s.
        .set("fetch.queue.backoff.ms", "10")
        // Reconnect within a second of the broker coming back (the default backs off to
        // 10 s during a long outage, and reading would wait that long after it).
        .set("reconnect.backoff.max.ms", "1000")
        .create_with_context(context)
        .map_err(|source| SourceError::Kafka {
            brokers: brokers.to_string(),
            what: "creating a consumer".into(),
            source: Box::new(source),
        })
}

/// Every partition of `topics`, in a fixed order (topics as given, partitions ascending).
pub fn partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    brokers: &str,
    topics: &[String],
) -> Result<Vec<StreamId>, SourceError> {
    let mut out = Vec::new();
    for topic in topics {
        let md = consumer
            .fetch_metadata(Some(topic), META_TIMEOUT)
            .map_err(|source| SourceError::Kafka {
                brokers: brokers.to_string(),
                what: format!("reading metadata of {topic}"),
                source: Box::new(source),
            })?;
        let t = md.topics().iter().find(|t| t.name() == topic);
        let mut ps: Vec<i32> = t
            .map(|t| t.partitions().iter().map(|p| p.id()).collect())
            .unwrap_or_default();
        if ps.is_empty() {
            return Err(SourceError::NoTopic {
                brokers: brokers.to_string(),
                topic: topic.clone(),
            });
        }
        ps.sort_unstable();
        out.extend(ps.into_iter().map(|partition| StreamId {
            topic: topic.clone(),
            partition,
        }));
    }
    Ok(out)
}

impl KafkaSource {
    /// Connects and assigns worker `worker` of `peers` its share of the partitions.
    pub fn new(config: &KafkaConfig, worker: usize, peers: usize) -> Result<Self, SourceError> {
        let context = SourceContext::default();
        let consumer = source_consumer(
            &config.brokers,
            config.fetch_bytes_per_partition,
            context.clone(),
        )?;
        let all = partitions(&consumer, &config.brokers, &config.topics)?;
        let streams: Vec<StreamId> = all
            .into_iter()
            .enumerate()
            .filter(|(i, _)| assign(*i, worker, peers))
            .map(|(_, s)| s)
            .collect();
        let mut tpl = TopicPartitionList::new();
        let start = |s: &StreamId| {
            config
                .start_offsets
                .get(&(s.topic.clone(), s.partition))
                .copied()
        };
        for s in &streams {
            let offset = start(s).map_or(Offset::Beginning, Offset::Offset);
            tpl.add_partition_offset(&s.topic, s.partition, offset)
                .map_err(|source| SourceError::Kafka {
                    brokers: config.brokers.clone(),
                    what: "building the assignment".into(),
                    source: Box::new(source),
                })?;
        }
        consumer.assign(&tpl).map_err(|source| SourceError::Kafka {
            brokers: config.brokers.clone(),
            what: "assigning partitions".into(),
            source: Box::new(source),
        })?;
        let consumer = Arc::new(consumer);
        let queues = streams
            .iter()
            .map(|s| {
                consumer
                    .split_partition_queue(&s.topic, s.partition)
                    .ok_or_else(|| SourceError::Kafka {
                        brokers: config.brokers.clone(),
                        what: format!("opening the queue of {}/{}", s.topic, s.partition),
                        source: Box::new(KafkaError::Subscription("no partition queue".into())),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let index = streams
            .iter()
            .enumerate()
            .map(|(i, s)| ((s.topic.clone(), s.partition), i))
            .collect();
        let mut me = KafkaSource {
            index,
            brokers: config.brokers.clone(),
            consumer,
            queues,
            paused: vec![false; streams.len()],
            next: 0,
            context,
            suspect: false,
            position: streams.iter().map(|s| start(s).unwrap_or(0)).collect(),
            end: vec![0; streams.len()],
            streams,
            bounded: config.bounded,
            last_refresh: Instant::now(),
        };
        me.refresh_ends()?;
        Ok(me)
    }

    fn refresh_ends(&mut self) -> Result<(), SourceError> {
        for (i, s) in self.streams.iter().enumerate() {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&s.topic, s.partition, META_TIMEOUT)
                .map_err(|source| SourceError::Kafka {
                    brokers: self.brokers.clone(),
                    what: format!("reading watermarks of {}/{}", s.topic, s.partition),
                    source: Box::new(source),
                })?;
            self.end[i] = high;
            if self.position[i] < low {
                // Retention deleted messages this source had not read: the views will
                // miss them. Worth a line every time (it needs longer retention).
                tracing::warn!(
                    topic = %s.topic,
                    partition = s.partition,
                    from = self.position[i],
                    to = low,
                    "{}/{}: offsets {}..{} were deleted (retention) before they were read; \
                     reading resumes at {low}. Keep the topic's history from the oldest \
                     checkpoint's offsets on (docs/operations.md, Retention)",
                    s.topic,
                    s.partition,
                    self.position[i],
                    low
                );
                self.position[i] = low;
            }
        }
        self.last_refresh = Instant::now();
        Ok(())
    }

    /// Whether the broker answers: a watermark request for the first partition.
    fn probe(&self) -> Result<(), SourceError> {
        let Some(s) = self.streams.first() else {
            return Ok(());
        };
        self.consumer
            .fetch_watermarks(&s.topic, s.partition, PROBE_TIMEOUT)
            .map(|_| ())
            .map_err(|source| SourceError::Kafka {
                brokers: self.brokers.clone(),
                what: "reaching the broker".into(),
                source: Box::new(source),
            })
    }

    /// Messages known to exist but not yet read, over this source's partitions.
    pub fn lag(&self) -> i64 {
        self.end
            .iter()
            .zip(&self.position)
            .map(|(e, p)| (e - p).max(0))
            .sum()
    }
}

/// Where one stream's reading stands: its next offset and its end.
struct Cursor<'a> {
    bounded: bool,
    position: &'a mut i64,
    end: &'a mut i64,
}

impl Cursor<'_> {
    /// Appends message `m` of stream `stream` to `out` unless it is past a bounded end or
    /// was read before; whether it was appended.
    fn take(&mut self, stream: usize, m: &BorrowedMessage<'_>, out: &mut Vec<Message>) -> bool {
        let offset = m.offset();
        if self.bounded && offset >= *self.end {
            return false;
        }
        // Delivered again (a fetch restarted after the broker came back): already read.
        if offset < *self.position {
            tracing::debug!(stream, offset, "skipping a message read before");
            return false;
        }
        *self.position = offset + 1;
        if !self.bounded && *self.position > *self.end {
            *self.end = *self.position;
        }
        out.push(Message {
            stream,
            offset,
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().unwrap_or_default().to_vec(),
        });
        true
    }
}

impl Source for KafkaSource {
    fn streams(&self) -> &[StreamId] {
        &self.streams
    }

    fn poll(&mut self, out: &mut Vec<Message>, max: usize) -> Result<(), SourceError> {
        if self.streams.is_empty() || self.finished() {
            return Ok(());
        }
        // librdkafka reported an error (it reconnects by itself): it is an outage only if
        // the broker does not answer a request either. Connections closed while idle, for
        // one, report an error but answer at once.
        if let Some((error, reason)) = self.context.take() {
            tracing::debug!(%error, reason, "checking the broker after a client error");
            self.suspect = true;
        }
        if self.suspect {
            self.probe()?;
            self.suspect = false;
        }
        if !self.bounded && self.last_refresh.elapsed() > Duration::from_millis(500) {
            self.refresh_ends()?;
        }
        // The consumer's own queue carries events and errors (and messages fetched before
        // the partition queues were split off): serving it runs the client's callbacks.
        let mut got = 0;
        while got < max {
            match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(m)) => {
                    let Some(&s) = self.index.get(&(m.topic().to_string(), m.partition())) else {
                        continue;
                    };
                    let mut cursor = Cursor {
                        bounded: self.bounded,
                        position: &mut self.position[s],
                        end: &mut self.end[s],
                    };
                    if cursor.take(s, &m, out) {
                        got += 1;
                    }
                }
                Some(Err(error)) => {
                    tracing::debug!(%error, "consumer error; checking the broker");
                    self.suspect = true;
                }
            }
        }
        if self.suspect {
            // The next poll asks the broker first.
            return Ok(());
        }
        let n = self.streams.len();
        let turn: Vec<usize> = (0..n)
            .map(|i| (self.next + i) % n)
            .filter(|&s| {
                let done = self.bounded && self.position[s] >= self.end[s];
                !self.paused[s] && !done
            })
            .collect();
        self.next = (self.next + 1) % n;
        if turn.is_empty() {
            // Everything left is paused (the worker waits for the frontier) or read.
            std::thread::sleep(Duration::from_millis(2));
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_millis(20);
        loop {
            // Passes over the readable streams, each taking an equal share of what is left,
            // until the batch is full or a pass finds nothing.
            let before = got;
            let share = ((max - got) / turn.len()).max(1);
            for &s in &turn {
                let mut taken = 0;
                let mut cursor = Cursor {
                    bounded: self.bounded,
                    position: &mut self.position[s],
                    end: &mut self.end[s],
                };
                while taken < share && got < max {
                    match self.queues[s].poll(Duration::ZERO) {
                        None => break,
                        Some(Ok(m)) => {
                            if cursor.take(s, &m, out) {
                                taken += 1;
                                got += 1;
                            }
                        }
                        Some(Err(error)) => {
                            // A fetch failed: keep what was read and let the next poll's
                            // watermark request tell whether the broker is down.
                            tracing::debug!(%error, "consumer error; checking the broker");
                            self.suspect = true;
                            return Ok(());
                        }
                    }
                }
            }
            if got >= max || (got == before && (got > 0 || Instant::now() >= deadline)) {
                break;
            }
            if got == before {
                // Nothing anywhere yet: wait a little (not a spin; at most four times).
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(())
    }

    fn caught_up(&self, stream: usize) -> bool {
        self.position[stream] >= self.end[stream]
    }

    fn set_paused(&mut self, stream: usize, paused: bool) {
        self.paused[stream] = paused;
    }

    fn finished(&self) -> bool {
        self.bounded && (0..self.streams.len()).all(|s| self.caught_up(s))
    }

    /// The high watermark last fetched (refreshed every 0.5 s when live; fixed at start
    /// when bounded) minus the next offset.
    fn lag(&self, stream: usize) -> Option<u64> {
        Some((self.end[stream] - self.position[stream]).max(0) as u64)
    }
}
