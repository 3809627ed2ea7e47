//! Helpers shared by shopflow's integration and end-to-end tests: turning a generated
//! workload into partitioned streams, running the pipeline on them, and comparing what
//! the sinks hold with the reference model, with messages that say exactly what differs.
#![forbid(missing_docs)]
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;

use shopflow_gen::GenMessage;
use shopflow_ingest::source::MemorySource;
use shopflow_ingest::{Source, StreamId, Topics};
use shopflow_model::time::{kst_next_month_start, kst_next_week_start};
use shopflow_model::{
    Alert, AlsoBought, DeadLetter, DeadLetterReason, MemberOrders, MemberView, Millis, OrderView,
    Payout, PointsEntry, RatingView, SettlementEntry, StockLevel, TaxInvoice,
};
use shopflow_model::{SalesFact, SalesMinute};
use shopflow_pipelines::{PipelineConfig, RunSummary, Stats};
use shopflow_reference::Views;
use shopflow_sinks::clickhouse::ClickHouseSales;
use shopflow_sinks::kafka::{ensure_topics, produce, read_all, RawRecord};
use shopflow_sinks::mysql::MysqlLedger;
use shopflow_sinks::redis::RedisViews;
use shopflow_sinks::writer::SinkStats;
use shopflow_sinks::{spawn_writer, EventLog, MemoryStore, SinkSet, ViewStore};

/// A ledger as a map by entry id; panics if two stored entries share an id (the store keys
/// entries by owner and time too, so one written twice with different times would show
/// here as two).
fn by_id<V>(what: &str, entries: impl Iterator<Item = (String, V)>) -> BTreeMap<String, V> {
    let mut out = BTreeMap::new();
    for (id, v) in entries {
        if out.insert(id.clone(), v).is_some() {
            panic!("{what}: the store holds entry {id} twice (with different owners or times)");
        }
    }
    out
}

/// One stream of raw messages: its id and (key, payload) pairs in log order.
pub type Stream = (StreamId, Vec<(Option<Vec<u8>>, Vec<u8>)>);

/// Splits a generated log the way Kafka would hold it (see [`shopflow_gen::split`]), in
/// the order a Kafka source lists the partitions.
pub fn partition(messages: &[GenMessage], topics: &Topics, partitions: i32) -> Vec<Stream> {
    shopflow_gen::split(messages, topics.inputs(), partitions)
        .into_iter()
        .map(|s| {
            (
                StreamId {
                    topic: s.topic,
                    partition: s.partition,
                },
                s.messages,
            )
        })
        .collect()
}

/// The value of the environment variable `name` (a test's size or seed), or `default`
/// when it is unset; panics, naming it, when it does not parse.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

/// An environment variable the service tests need; panics with what to do when unset.
pub fn service_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the services with deploy/local/up.sh and source .shopflow/env (./test.sh does both)")
    })
}

/// A fresh MySQL database for one test, named after `unique`, with the ledger schema:
/// returns the ledger and the admin URL to drop it with
/// [`MysqlLedger::drop_database`].
pub fn fresh_ledger(rt: &tokio::runtime::Runtime, unique: &str) -> (MysqlLedger, String, String) {
    let admin = service_env("SHOPFLOW_MYSQL_URL");
    let name = format!(
        "shopflow_{}",
        unique.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    let url = rt
        .block_on(MysqlLedger::create_database(&admin, &name))
        .expect("create test database");
    let ledger = rt
        .block_on(MysqlLedger::connect(&url))
        .expect("connect ledger");
    (ledger, admin, name)
}

/// A fresh ClickHouse database for one test, named after `unique`: returns the sink, the
/// server URL and the database name (drop it with [`ClickHouseSales::drop_database`]).
pub fn fresh_sales(
    rt: &tokio::runtime::Runtime,
    unique: &str,
) -> (ClickHouseSales, String, String) {
    let url = service_env("SHOPFLOW_CLICKHOUSE_URL");
    let name = format!(
        "shopflow_{}",
        unique.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    let sales = rt
        .block_on(ClickHouseSales::connect(&url, &name, false))
        .expect("create ClickHouse test database");
    (sales, url, name)
}

/// The earliest `ts` of a generated log's events (bad events without one are left out).
pub fn first_event_time(log: &[GenMessage]) -> u64 {
    log.iter()
        .filter_map(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).ok())
        .filter_map(|v| v["ts"].as_u64())
        .min()
        .expect("timestamps")
}

/// A name no earlier run used, for topics and key prefixes.
pub fn unique_name(stem: &str) -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    format!("{stem}{}x{millis}", std::process::id())
}

/// Creates the topics (inputs, alerts, dead letters) and publishes `streams` to their
/// partitions.
pub fn publish(
    rt: &tokio::runtime::Runtime,
    brokers: &str,
    topics: &Topics,
    streams: &[Stream],
    partitions: i32,
) {
    let mut names: Vec<&str> = topics.inputs().to_vec();
    names.extend([topics.alerts.as_str(), topics.dlq.as_str()]);
    rt.block_on(ensure_topics(brokers, &names, partitions))
        .expect("create topics");
    let records: Vec<RawRecord> = streams
        .iter()
        .flat_map(|(id, msgs)| {
            msgs.iter().map(|(key, payload)| RawRecord {
                topic: id.topic.clone(),
                partition: id.partition,
                key: key.clone(),
                payload: payload.clone(),
            })
        })
        .collect();
    rt.block_on(produce(brokers, &records)).expect("produce");
}

/// The payloads of each stream, for the reference model.
pub fn payloads(streams: &[Stream]) -> Vec<Vec<Vec<u8>>> {
    streams
        .iter()
        .map(|(_, msgs)| msgs.iter().map(|(_, p)| p.clone()).collect())
        .collect()
}

/// Every sink of a run in one in-process store (the embedded default).
fn memory_sinks(store: &MemoryStore) -> SinkSet {
    SinkSet {
        views: ViewStore::Memory(store.clone()),
        ledger: shopflow_sinks::LedgerStore::Memory(store.clone()),
        sales: shopflow_sinks::SalesStore::Memory(store.clone()),
        alerts: EventLog::Memory(store.clone()),
        dead_letters: EventLog::Memory(store.clone()),
    }
}

/// Runs the pipeline in process over `streams` into a fresh memory store.
pub fn run_in_memory(streams: Vec<Stream>, config: PipelineConfig) -> (MemoryStore, RunSummary) {
    run_in_memory_metered(streams, config, &shopflow_api::metrics::Registry::new())
}

/// [`run_in_memory`], with the pipeline's and the sink writer's metrics in `registry`.
pub fn run_in_memory_metered(
    streams: Vec<Stream>,
    config: PipelineConfig,
    registry: &shopflow_api::metrics::Registry,
) -> (MemoryStore, RunSummary) {
    let store = MemoryStore::new();
    let (tx, rx) = sync_channel(64);
    let sinks = memory_sinks(&store);
    let rt = shopflow_sinks::io_runtime();
    let sink_stats = SinkStats::default();
    sink_stats.metrics.register(registry).expect("sink metrics");
    let writer = spawn_writer(rx, sinks, Arc::new(sink_stats), rt.handle().clone());
    let stats = Stats::default();
    stats.metrics.register(registry).expect("pipeline metrics");
    let streams = Arc::new(streams);
    let make = move |w: usize, peers: usize| -> Result<Box<dyn Source>, _> {
        Ok(Box::new(MemorySource::share(&streams, w, peers)) as Box<dyn Source>)
    };
    let summary = shopflow_pipelines::run(config, make, tx, Arc::new(stats)).expect("pipeline run");
    writer.join().expect("writer thread").expect("writer");
    (store, summary)
}

/// Runs the pipeline in process over `streams` into `store` (which may hold a restored
/// checkpoint's image), each stream starting at its offset in `offsets` (a restart from
/// a checkpoint; empty: from the start). The writer continues the store as a restart does.
pub fn run_into(
    store: &MemoryStore,
    streams: Vec<Stream>,
    config: PipelineConfig,
    offsets: BTreeMap<(String, i32), i64>,
) -> RunSummary {
    let (tx, rx) = sync_channel(64);
    let sinks = memory_sinks(store);
    let rt = shopflow_sinks::io_runtime();
    let writer_config = shopflow_sinks::writer::WriterConfig {
        resumed: config.restore.is_some(),
        ..Default::default()
    };
    let writer = shopflow_sinks::writer::spawn_writer_with(
        rx,
        sinks,
        Arc::new(SinkStats::default()),
        rt.handle().clone(),
        writer_config,
    );
    let streams = Arc::new(streams);
    let make = move |w: usize, peers: usize| -> Result<Box<dyn Source>, _> {
        Ok(
            Box::new(MemorySource::share(&streams, w, peers).starting_at(&offsets))
                as Box<dyn Source>,
        )
    };
    let summary = shopflow_pipelines::run(config, make, tx, Arc::new(Stats::default()))
        .expect("pipeline run");
    writer.join().expect("writer thread").expect("writer");
    summary
}

/// What a run left in the sinks, in the reference model's shapes.
#[derive(Debug, Default)]
pub struct SinkContents {
    /// Stock rows.
    pub stock: BTreeMap<u64, StockLevel>,
    /// Order rows.
    pub orders: BTreeMap<u64, OrderView>,
    /// Alerts, sorted by (ts, id).
    pub alerts: Vec<Alert>,
    /// Rating rows.
    pub ratings: BTreeMap<u64, RatingView>,
    /// Recommendation rows.
    pub also_bought: BTreeMap<u64, AlsoBought>,
    /// Dead letters as (stream index, offset, reason), sorted.
    pub dead_letters: Vec<(usize, i64, DeadLetterReason)>,
    /// The final `as_of`.
    pub as_of: Option<u64>,
    /// Member rows.
    pub members: BTreeMap<u64, MemberView>,
    /// Recent orders per member.
    pub member_orders: BTreeMap<u64, MemberOrders>,
    /// Points ledger by id.
    pub points: BTreeMap<String, PointsEntry>,
    /// Settlement ledger by id.
    pub settlements: BTreeMap<String, SettlementEntry>,
    /// Payouts by (seller, week start).
    pub payouts: BTreeMap<(u64, Millis), Payout>,
    /// Tax invoices by (seller, month start).
    pub invoices: BTreeMap<(u64, Millis), TaxInvoice>,
    /// Known sellers.
    pub sellers: std::collections::BTreeSet<u64>,
    /// The ledger's own `as_of` (MySQL progress), when read from MySQL.
    pub ledger_as_of: Option<u64>,
    /// Sales facts by id.
    pub sales_facts: BTreeMap<String, SalesFact>,
    /// Sales minute rollups by (seller, minute).
    pub sales_minutes: BTreeMap<(u64, Millis), SalesMinute>,
    /// The sales store's own `as_of` (ClickHouse progress), when read from ClickHouse.
    pub sales_as_of: Option<u64>,
}

impl SinkContents {
    /// Reads a memory store; `streams` maps dead letters back to stream indexes.
    pub fn from_memory(store: &MemoryStore, streams: &[StreamId]) -> Self {
        store.read(|s| {
            let mut c = SinkContents {
                stock: s.stock.values().map(|(r, _)| (r.sku, *r)).collect(),
                orders: s
                    .orders
                    .entries()
                    .into_iter()
                    .map(|(id, (r, _))| (id, r))
                    .collect(),
                alerts: s.alerts.clone(),
                ratings: s.ratings.iter().map(|(k, v)| (*k, *v)).collect(),
                also_bought: s.also_bought.iter().map(|(k, v)| (*k, v.clone())).collect(),
                dead_letters: s
                    .dead_letters
                    .iter()
                    .map(|d| {
                        (
                            stream_index(streams, &d.topic, d.partition),
                            d.offset,
                            d.reason,
                        )
                    })
                    .collect(),
                as_of: s.as_of,
                members: s.members.iter().map(|(k, v)| (*k, *v)).collect(),
                member_orders: s
                    .member_orders
                    .iter()
                    .map(|(k, v)| (*k, v.clone()))
                    .collect(),
                points: by_id(
                    "points",
                    s.points
                        .entries()
                        .iter()
                        .filter_map(|(d, ())| d.entry())
                        .map(|e| (e.id.clone(), e.clone())),
                ),
                settlements: by_id(
                    "settlements",
                    s.settlements
                        .entries()
                        .iter()
                        .filter_map(|(d, ())| d.entry())
                        .map(|e| (e.id.clone(), e.clone())),
                ),
                payouts: s.payouts.clone(),
                invoices: s.invoices.clone(),
                sellers: s.sellers.clone(),
                ledger_as_of: s.as_of,
                sales_facts: s.facts().into_iter().map(|f| (f.id.clone(), f)).collect(),
                sales_minutes: s.sales_minutes.entries().into_iter().collect(),
                sales_as_of: s.as_of,
            };
            c.normalize();
            c
        })
    }

    /// Fills the ledger views from MySQL, checking on the way that every `final` flag
    /// agrees with the stored `as_of` and that no entry is stored twice.
    pub fn read_ledger(&mut self, ledger: &MysqlLedger, rt: &tokio::runtime::Runtime) {
        let as_of = rt.block_on(ledger.as_of()).expect("read ledger as_of");
        let t = as_of.unwrap_or(0);
        let points = rt.block_on(ledger.all_points()).expect("read points");
        let settlements = rt
            .block_on(ledger.all_settlements())
            .expect("read settlements");
        let n_points = points.len();
        let n_settlements = settlements.len();
        self.points = points.into_iter().map(|e| (e.id.clone(), e)).collect();
        self.settlements = settlements.into_iter().map(|e| (e.id.clone(), e)).collect();
        assert_eq!(
            self.points.len(),
            n_points,
            "a points entry id is stored twice"
        );
        assert_eq!(
            self.settlements.len(),
            n_settlements,
            "a settlement entry id is stored twice"
        );
        for (p, fin) in rt.block_on(ledger.all_payouts()).expect("read payouts") {
            assert_eq!(
                fin,
                t >= kst_next_week_start(p.week_start),
                "payout {p:?}: final flag disagrees with as_of {t}"
            );
            self.payouts.insert((p.seller_id, p.week_start), p);
        }
        for (i, fin) in rt.block_on(ledger.all_invoices()).expect("read invoices") {
            assert_eq!(
                fin,
                t >= kst_next_month_start(i.month_start),
                "invoice {i:?}: final flag disagrees with as_of {t}"
            );
            self.invoices.insert((i.seller_id, i.month_start), i);
        }
        self.sellers = rt
            .block_on(ledger.all_sellers())
            .expect("read sellers")
            .into_iter()
            .collect();
        self.ledger_as_of = as_of;
    }

    /// Fills the sales views from ClickHouse, checking that no fact is stored twice, even
    /// physically (before any merge).
    pub fn read_sales(&mut self, sales: &ClickHouseSales, rt: &tokio::runtime::Runtime) {
        let facts = rt.block_on(sales.all_facts()).expect("read facts");
        let stored = rt.block_on(sales.stored_fact_rows()).expect("count facts");
        assert_eq!(
            stored,
            facts.len() as u64,
            "sales_facts holds {stored} rows for {} distinct facts: a fact was written twice",
            facts.len()
        );
        self.sales_facts = facts.into_iter().map(|f| (f.id.clone(), f)).collect();
        self.sales_minutes = rt
            .block_on(sales.all_minutes())
            .expect("read rollups")
            .into_iter()
            .map(|m| ((m.seller_id, m.minute), m))
            .collect();
        self.sales_as_of = rt.block_on(sales.as_of()).expect("read sales as_of");
    }

    /// Reads the member rows and recent-order lists from Redis.
    pub fn read_members(&mut self, redis: &RedisViews, rt: &tokio::runtime::Runtime) {
        self.members = rt
            .block_on(redis.all_members())
            .expect("read members")
            .into_iter()
            .map(|m| (m.member_id, m))
            .collect();
        self.member_orders = rt
            .block_on(redis.all_member_orders())
            .expect("read member orders")
            .into_iter()
            .map(|m| (m.member_id, m))
            .collect();
    }

    /// Checks the ledgers reconcile with themselves: Σ payouts = Σ entry payouts and
    /// Σ invoice supply = Σ entry fees, per seller.
    pub fn reconcile(&self) -> Result<(), String> {
        let mut entry_payout: BTreeMap<u64, i128> = BTreeMap::new();
        let mut entry_fees: BTreeMap<u64, i128> = BTreeMap::new();
        for e in self.settlements.values() {
            *entry_payout.entry(e.seller_id).or_default() += e.payout as i128;
            *entry_fees.entry(e.seller_id).or_default() +=
                e.commission as i128 + e.payment_fee as i128;
        }
        let mut payouts: BTreeMap<u64, i128> = BTreeMap::new();
        for p in self.payouts.values() {
            *payouts.entry(p.seller_id).or_default() += p.amount;
        }
        let mut supply: BTreeMap<u64, i128> = BTreeMap::new();
        for i in self.invoices.values() {
            *supply.entry(i.seller_id).or_default() += i.supply;
            if i.vat != i.supply / 10 || i.total != i.supply + i.vat {
                return Err(format!("invoice {i:?}: vat or total is not from supply"));
            }
        }
        entry_payout.retain(|_, v| *v != 0);
        payouts.retain(|_, v| *v != 0);
        entry_fees.retain(|_, v| *v != 0);
        supply.retain(|_, v| *v != 0);
        if entry_payout != payouts {
            return Err(format!(
                "Σ payouts per seller {payouts:?} != Σ entry payouts {entry_payout:?}"
            ));
        }
        if entry_fees != supply {
            return Err(format!(
                "Σ invoice supply per seller {supply:?} != Σ entry fees {entry_fees:?}"
            ));
        }
        Ok(())
    }

    /// Sorts the lists so runs can be compared.
    pub fn normalize(&mut self) {
        self.alerts
            .sort_by(|a, b| (a.ts, &a.event_id).cmp(&(b.ts, &b.event_id)));
        self.dead_letters.sort();
    }

    /// Compares with the reference; `Err` lists the first differences of each view.
    pub fn compare(&self, want: &Views) -> Result<(), String> {
        let mut errors = Vec::new();
        diff_maps("stock", &self.stock, &want.stock, &mut errors);
        diff_maps("orders", &self.orders, &want.orders, &mut errors);
        diff_maps("ratings", &self.ratings, &want.ratings, &mut errors);
        diff_maps(
            "also_bought",
            &self.also_bought,
            &want.also_bought,
            &mut errors,
        );
        if self.alerts != want.alerts {
            let i = self
                .alerts
                .iter()
                .zip(&want.alerts)
                .position(|(a, b)| a != b)
                .unwrap_or(self.alerts.len().min(want.alerts.len()));
            errors.push(format!(
                "alerts: {} written, {} expected; first difference at #{i}: got {:?}, want {:?}",
                self.alerts.len(),
                want.alerts.len(),
                self.alerts.get(i),
                want.alerts.get(i)
            ));
        }
        if self.dead_letters != want.dead_letters {
            let i = self
                .dead_letters
                .iter()
                .zip(&want.dead_letters)
                .position(|(a, b)| a != b)
                .unwrap_or(self.dead_letters.len().min(want.dead_letters.len()));
            errors.push(format!(
                "dead letters: {} written, {} expected; first difference at #{i}: got {:?}, want {:?}",
                self.dead_letters.len(),
                want.dead_letters.len(),
                self.dead_letters.get(i),
                want.dead_letters.get(i)
            ));
        }
        diff_maps("members", &self.members, &want.members, &mut errors);
        diff_maps(
            "member_orders",
            &self.member_orders,
            &want.member_orders,
            &mut errors,
        );
        diff_maps("points", &self.points, &want.points, &mut errors);
        diff_maps(
            "settlements",
            &self.settlements,
            &want.settlements,
            &mut errors,
        );
        diff_maps("payouts", &self.payouts, &want.payouts, &mut errors);
        diff_maps("invoices", &self.invoices, &want.invoices, &mut errors);
        if self.sellers != want.sellers {
            errors.push(format!(
                "sellers: {} known, {} expected",
                self.sellers.len(),
                want.sellers.len()
            ));
        }
        diff_maps(
            "sales_facts",
            &self.sales_facts,
            &want.sales_facts,
            &mut errors,
        );
        diff_maps(
            "sales_minutes",
            &self.sales_minutes,
            &want.sales_minutes,
            &mut errors,
        );
        if self.sales_as_of.is_some() && self.sales_as_of != want.as_of {
            errors.push(format!(
                "sales as_of: got {:?}, want {:?}",
                self.sales_as_of, want.as_of
            ));
        }
        if let Err(e) = self.reconcile() {
            errors.push(e);
        }
        if self.ledger_as_of.is_some() && self.ledger_as_of != want.as_of {
            errors.push(format!(
                "ledger as_of: got {:?}, want {:?}",
                self.ledger_as_of, want.as_of
            ));
        }
        if self.as_of != want.as_of {
            errors.push(format!(
                "as_of: got {:?}, want {:?}",
                self.as_of, want.as_of
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("\n"))
        }
    }
}

/// Index of `topic`/`partition` in `streams`.
pub fn stream_index(streams: &[StreamId], topic: &str, partition: i32) -> usize {
    streams
        .iter()
        .position(|s| s.topic == topic && s.partition == partition)
        .unwrap_or_else(|| panic!("dead letter from unknown stream {topic}/{partition}"))
}

fn diff_maps<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
    what: &str,
    got: &BTreeMap<K, V>,
    want: &BTreeMap<K, V>,
    errors: &mut Vec<String>,
) {
    let mut n = 0;
    let mut first = Vec::new();
    for (k, w) in want {
        match got.get(k) {
            Some(g) if g == w => {}
            g => {
                n += 1;
                if first.len() < 3 {
                    first.push(format!("  {what}[{k:?}]: got {g:?}, want {w:?}"));
                }
            }
        }
    }
    for (k, g) in got {
        if !want.contains_key(k) {
            n += 1;
            if first.len() < 3 {
                first.push(format!("  {what}[{k:?}]: got {g:?}, want nothing"));
            }
        }
    }
    if n > 0 {
        errors.push(format!(
            "{what}: {n} of {} rows differ\n{}",
            want.len(),
            first.join("\n")
        ));
    }
}

/// Reads Redis, the alerts topic and the dead-letter topic; checks each dead letter keeps
/// the original bytes, and that no record appears twice.
pub fn read_sinks(
    brokers: &str,
    redis: &RedisViews,
    topics: &Topics,
    ids: &[StreamId],
    streams: &[Stream],
    rt: &tokio::runtime::Runtime,
) -> SinkContents {
    let stock = rt.block_on(redis.all_stock()).expect("read stock");
    let orders = rt.block_on(redis.all_orders()).expect("read orders");
    let as_of = rt.block_on(redis.as_of()).expect("read as_of");
    let ratings = rt.block_on(redis.all_ratings()).expect("read ratings");
    let also_bought = rt
        .block_on(redis.all_also_bought())
        .expect("read also-bought");
    let alerts: Vec<Alert> = read_all(brokers, &topics.alerts)
        .expect("read alerts")
        .into_iter()
        .map(|(_, _, _, payload)| serde_json::from_slice(&payload).expect("alert json"))
        .collect();
    let mut seen = std::collections::HashSet::new();
    for a in &alerts {
        assert!(
            seen.insert(a.event_id.clone()),
            "alert {} written twice",
            a.event_id
        );
    }
    let mut dead = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (_, _, _, payload) in read_all(brokers, &topics.dlq).expect("read dlq") {
        let v: serde_json::Value = serde_json::from_slice(&payload).expect("dead letter json");
        let topic = v["topic"].as_str().expect("topic");
        let partition = v["partition"].as_i64().expect("partition") as i32;
        let offset = v["offset"].as_i64().expect("offset");
        assert!(
            seen.insert((topic.to_string(), partition, offset)),
            "dead letter {topic}/{partition}/{offset} written twice"
        );
        let reason: DeadLetterReason = serde_json::from_value(v["reason"].clone()).expect("reason");
        let s = stream_index(ids, topic, partition);
        let original = &streams[s].1[offset as usize].1;
        assert_eq!(
            DeadLetter::payload_from_json(&v).as_ref(),
            Some(original),
            "dead letter {topic}/{partition}/{offset} does not hold the original bytes"
        );
        dead.push((s, offset, reason));
    }
    let mut c = SinkContents {
        stock: stock
            .into_iter()
            .map(|r| (r.sku, r))
            .collect::<BTreeMap<_, _>>(),
        orders: orders.into_iter().map(|r| (r.order_id, r)).collect(),
        alerts,
        ratings: ratings.into_iter().map(|r| (r.sku, r)).collect(),
        also_bought: also_bought.into_iter().map(|r| (r.sku, r)).collect(),
        dead_letters: dead,
        as_of,
        ..SinkContents::default()
    };
    c.normalize();
    c
}
