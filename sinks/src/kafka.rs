//! Derived events and dead letters to Kafka, each written once.
//!
//! Kafka transactions are not available on every broker (and not on the one the tests
//! run), so exactly-once rests on ids: every record has a deterministic id (an alert's
//! `event_id`; a dead letter's source topic/partition/offset). On start the writer reads
//! its topic back to the end and remembers the ids already there; a replay after a
//! restart then skips them. The producer is idempotent, so retries inside the client do
//! not duplicate either.

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::SinkError;

const TIMEOUT: Duration = Duration::from_secs(30);

/// The error of doing `what` with `topic` at `brokers`.
fn kafka_error(brokers: &str, topic: &str, what: &str, source: KafkaError) -> SinkError {
    SinkError::Kafka {
        brokers: brokers.to_string(),
        topic: topic.to_string(),
        what: what.to_string(),
        source: Box::new(source),
    }
}

/// A record to write: (id, key, payload).
pub type IdRecord = (String, Option<Vec<u8>>, Vec<u8>);

/// A message read back: (partition, offset, key, payload).
pub type ReadMessage = (i32, i64, Option<Vec<u8>>, Vec<u8>);

/// Pulls a record's id out of its payload.
pub type IdOf = fn(&[u8]) -> Option<String>;

/// The id of an alert record: its `event_id`.
pub fn alert_id(payload: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    Some(v.get("event_id")?.as_str()?.to_string())
}

/// The id of a dead-letter record: `topic/partition/offset` of the source message.
pub fn dead_letter_id(payload: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    Some(format!(
        "{}/{}/{}",
        v.get("topic")?.as_str()?,
        v.get("partition")?.as_i64()?,
        v.get("offset")?.as_i64()?
    ))
}

/// Writes JSON records to one topic, skipping ids the topic already holds.
pub struct KafkaWriter {
    brokers: String,
    topic: String,
    producer: FutureProducer,
    written: HashSet<String>,
}

impl std::fmt::Debug for KafkaWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaWriter")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("written", &self.written.len())
            .finish()
    }
}

impl KafkaWriter {
    /// Connects, and reads `topic` back to learn which ids it holds.
    pub fn open(brokers: &str, topic: &str, id_of: IdOf) -> Result<Self, SinkError> {
        let err = |what: &str, source| kafka_error(brokers, topic, what, source);
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("message.timeout.ms", "300000")
            // Reconnect within a second of the broker coming back (the default backs off
            // to 10 s during a long outage).
            .set("reconnect.backoff.max.ms", "1000")
            .create()
            .map_err(|e| err("creating a producer", e))?;
        let written =
            read_ids(brokers, topic, id_of).map_err(|e| err("reading the topic back", e))?;
        Ok(KafkaWriter {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            producer,
            written,
        })
    }

    /// The bootstrap servers.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// Ids already in the topic or written by this writer.
    pub fn known(&self) -> usize {
        self.written.len()
    }

    /// Writes `(id, key, payload)` records not written before, waiting until the broker
    /// has acknowledged every one.
    pub async fn write(&mut self, records: &[IdRecord]) -> Result<usize, SinkError> {
        let err = |what: &str, source| kafka_error(&self.brokers, &self.topic, what, source);
        // Everything is queued first and awaited after, so the client sends the records
        // in a few batches rather than one request per record.
        let mut pending = Vec::new();
        for (id, key, payload) in records {
            if self.written.contains(id) {
                continue;
            }
            let mut rec: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).payload(payload.as_slice());
            if let Some(k) = key {
                rec = rec.key(k.as_slice());
            }
            let delivery = enqueue(&self.producer, rec)
                .await
                .map_err(|e| err("queueing", e))?;
            pending.push((id, delivery));
        }
        let n = pending.len();
        for (id, delivery) in pending {
            delivered(delivery).await.map_err(|e| err("producing", e))?;
            self.written.insert(id.clone());
        }
        Ok(n)
    }
}

/// Hands `record` to the producer's queue now, waiting while the queue is full, and returns
/// the future of its acknowledgement. (`FutureProducer::send` queues only when it is
/// awaited, so sending a list of records and awaiting them in turn sends one record per
/// request: a few thousand per second, and one stored batch per record on the broker.)
async fn enqueue(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, [u8], [u8]>,
) -> Result<DeliveryFuture, KafkaError> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                if tokio::time::Instant::now() < deadline =>
            {
                record = back;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Waits for the broker's acknowledgement of one queued record.
async fn delivered(delivery: DeliveryFuture) -> Result<(), KafkaError> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e),
        // The producer was dropped with the record still queued.
        Err(_) => Err(KafkaError::Canceled),
    }
}

/// Every id held by `topic`, reading each partition up to its current end.
fn read_ids(
    brokers: &str,
    topic: &str,
    id_of: IdOf,
) -> rdkafka::error::KafkaResult<HashSet<String>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "shopflow-sink-resume")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let mut ends = Vec::new();
    let mut tpl = TopicPartitionList::new();
    for t in md.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            let (_low, high) = consumer.fetch_watermarks(topic, p.id(), TIMEOUT)?;
            if high > 0 {
                ends.push((p.id(), high));
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            }
        }
    }
    let mut ids = HashSet::new();
    if ends.is_empty() {
        return Ok(ids);
    }
    consumer.assign(&tpl)?;
    let mut remaining: std::collections::HashMap<i32, i64> = ends.into_iter().collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while !remaining.is_empty() && std::time::Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m?;
        if let Some(id) = m.payload().and_then(id_of) {
            ids.insert(id);
        }
        if let Some(&end) = remaining.get(&m.partition()) {
            if m.offset() + 1 >= end {
                remaining.remove(&m.partition());
            }
        }
    }
    Ok(ids)
}

/// Creates `topics` with `partitions` partitions each; topics that exist are left alone.
pub async fn ensure_topics(
    brokers: &str,
    topics: &[&str],
    partitions: i32,
) -> Result<(), SinkError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let err = |topic: &str, what: &str, source| kafka_error(brokers, topic, what, source);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| err("*", "creating an admin client", e))?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let results = admin
        .create_topics(&new, &AdminOptions::new().operation_timeout(Some(TIMEOUT)))
        .await
        .map_err(|e| err("*", "creating topics", e))?;
    for r in results {
        if let Err((topic, code)) = r {
            if code != RDKafkaErrorCode::TopicAlreadyExists {
                return Err(err(&topic, "creating the topic", KafkaError::AdminOp(code)));
            }
        }
    }
    Ok(())
}

/// One message to produce to an explicit partition.
#[derive(Clone, Debug)]
pub struct RawRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Payload.
    pub payload: Vec<u8>,
}

/// Produces `records` in order (per partition) and waits for every acknowledgement.
pub async fn produce(brokers: &str, records: &[RawRecord]) -> Result<(), SinkError> {
    Publisher::connect(brokers)?.publish(records).await
}

/// A producer for publishing logs (tests, demos, benches): [`Publisher::publish`] may be
/// called many times on one connection (a paced publisher sends a batch per tick).
pub struct Publisher {
    brokers: String,
    producer: FutureProducer,
}

impl Publisher {
    /// A producer for `brokers`.
    pub fn connect(brokers: &str) -> Result<Publisher, SinkError> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            // Not idempotent: with several idempotent producers starting at once, Nisshi
            // 0.8.1 sometimes answers OutOfOrderSequenceNumber to a fresh producer's first
            // batch, which fails the whole publish (seen in 1 of 6 concurrent publishers).
            // One request in flight keeps the order on a retry; a retry after a lost
            // acknowledgement could still duplicate a record, which loopback publishing of
            // test and demo logs accepts.
            .set("enable.idempotence", "false")
            .set("max.in.flight.requests.per.connection", "1")
            .set("acks", "all")
            // Records are queued faster than one request's round trip, so batches fill
            // without waiting.
            .set("linger.ms", "0")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "1000000")
            .set("message.timeout.ms", "300000")
            .create()
            .map_err(|e| kafka_error(brokers, "*", "creating a producer", e))?;
        Ok(Publisher {
            brokers: brokers.to_string(),
            producer,
        })
    }

    /// Produces `records` in order (per partition) and waits for every acknowledgement.
    pub async fn publish(&self, records: &[RawRecord]) -> Result<(), SinkError> {
        let brokers = self.brokers.as_str();
        // Queued first and awaited after (see `enqueue`), in chunks so that the futures of
        // a huge log are not all alive at once.
        for chunk in records.chunks(50_000) {
            let mut pending = Vec::with_capacity(chunk.len());
            for r in chunk {
                let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&r.topic)
                    .partition(r.partition)
                    .payload(r.payload.as_slice());
                if let Some(k) = &r.key {
                    rec = rec.key(k.as_slice());
                }
                let delivery = enqueue(&self.producer, rec)
                    .await
                    .map_err(|e| kafka_error(brokers, &r.topic, "queueing", e))?;
                pending.push((&r.topic, delivery));
            }
            for (topic, delivery) in pending {
                delivered(delivery)
                    .await
                    .map_err(|e| kafka_error(brokers, topic, "producing", e))?;
            }
        }
        Ok(())
    }
}

/// Reads every message of `topic` up to its current end: (partition, offset, key, payload).
pub fn read_all(brokers: &str, topic: &str) -> Result<Vec<ReadMessage>, SinkError> {
    let err = |source| kafka_error(brokers, topic, "reading the topic", source);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "shopflow-read-all")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(err)?;
    let md = consumer.fetch_metadata(Some(topic), TIMEOUT).map_err(err)?;
    let mut tpl = TopicPartitionList::new();
    let mut remaining = std::collections::HashMap::new();
    for t in md.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            let (_, high) = consumer
                .fetch_watermarks(topic, p.id(), TIMEOUT)
                .map_err(err)?;
            if high > 0 {
                remaining.insert(p.id(), high);
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                    .map_err(err)?;
            }
        }
    }
    let mut out = Vec::new();
    if remaining.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl).map_err(err)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !remaining.is_empty() && std::time::Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.map_err(err)?;
        if let Some(&end) = remaining.get(&m.partition()) {
            if m.offset() < end {
                out.push((
                    m.partition(),
                    m.offset(),
                    m.key().map(<[u8]>::to_vec),
                    m.payload().unwrap_or_default().to_vec(),
                ));
            }
            if m.offset() + 1 >= end {
                remaining.remove(&m.partition());
            }
        }
    }
    Ok(out)
}
