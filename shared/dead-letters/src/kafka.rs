//! Kafka dead-letter topics (`<topic>.<group>.dlq`).
//!
//! Records stay in the topic; what is still pending is tracked by the admin
//! group `<dlq>.admin`: pending records are those from its committed offset
//! (or the start of the partition) to the high watermark. Reading never joins
//! the group (partitions are assigned by hand) and never commits, so listing
//! changes nothing; replay and purge commit, after the copies are delivered.
//!
//! Two replays of the same topic at the same time can both send a record:
//! a duplicate, which the inbox absorbs.

use crate::{
    DeadLetter, DeadLetterError, Destination, KafkaPosition, Limits, MAX_REPLAY_PER_CALL, ReplayReport,
    ReplaySelection, Replayed, Result, is_dead_letter_header,
};
use contracts::envelope::header;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// A record of a dead-letter topic, owned.
#[derive(Debug, Clone)]
struct Record {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    fn header_text(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_ref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    fn message_id(&self) -> Option<String> {
        self.header_text(header::MESSAGE_ID)
    }

    fn position(&self) -> KafkaPosition {
        KafkaPosition { partition: self.partition, offset: self.offset }
    }

    fn letter(&self) -> DeadLetter {
        // Repeated headers: the last one wins, as for the consumers.
        let headers: BTreeMap<String, Value> = self
            .headers
            .iter()
            .map(|(k, v)| {
                let value = v.as_ref().map_or(Value::Null, |v| Value::from(String::from_utf8_lossy(v).into_owned()));
                (k.clone(), value)
            })
            .collect();
        let mut letter = DeadLetter {
            message_id: self.message_id(),
            message_type: self.header_text(header::MESSAGE_TYPE),
            correlation_id: self.header_text(header::CORRELATION_ID),
            reason: None,
            attempts: None,
            original_destination: None,
            dead_lettered_by: None,
            dead_lettered_at: None,
            headers,
            properties: BTreeMap::new(),
            key: self.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
            position: Some(self.position()),
            payload: String::from_utf8_lossy(&self.payload).into_owned(),
            payload_bytes: self.payload.len(),
        };
        letter.decode_headers();
        letter
    }
}

/// The pending part of one partition: offsets `start..end`.
#[derive(Debug, Clone, Copy)]
struct Range {
    partition: i32,
    start: i64,
    end: i64,
}

impl Range {
    fn pending(&self) -> u64 {
        u64::try_from(self.end - self.start).unwrap_or(0)
    }
}

fn total(ranges: &[Range]) -> u64 {
    ranges.iter().map(Range::pending).sum()
}

/// A consumer in the admin group that never joins it: partitions are
/// assigned by hand and offsets committed explicitly.
fn admin_consumer(brokers: &str, dlq: &Destination) -> Result<BaseConsumer> {
    group_reader(brokers, &dlq.admin_group())
}

/// A consumer in `group` that never joins it, so reading its offsets
/// disturbs no member of the group.
fn group_reader(brokers: &str, group: &str) -> Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("client.id", "dead-letters")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create()?)
}

/// Per partition, from the consumer's group's committed offset (or the low
/// watermark) to the high watermark. A topic that does not exist has none.
fn pending_ranges(consumer: &BaseConsumer, topic: &str, limits: Limits) -> Result<Vec<Range>> {
    let metadata = consumer.fetch_metadata(Some(topic), limits.wait("reading topic metadata")?)?;
    let Some(described) = metadata.topics().iter().find(|t| t.name() == topic && t.error().is_none()) else {
        return Ok(Vec::new());
    };
    let mut partitions: Vec<i32> = described.partitions().iter().map(|p| p.id()).collect();
    partitions.sort_unstable();
    if partitions.is_empty() {
        return Ok(Vec::new());
    }
    let mut wanted = TopicPartitionList::new();
    for p in &partitions {
        wanted.add_partition(topic, *p);
    }
    let committed = consumer.committed_offsets(wanted, limits.wait("reading the group's committed offsets")?)?;
    let mut ranges = Vec::with_capacity(partitions.len());
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, limits.wait("reading watermarks")?)?;
        let start = match committed.find_partition(topic, partition).map(|e| e.offset()) {
            // Below the low watermark: those records are gone (retention).
            Some(Offset::Offset(o)) => o.clamp(low, high.max(low)),
            _ => low,
        };
        ranges.push(Range { partition, start, end: high.max(start) });
    }
    Ok(ranges)
}

/// Hands the pending records of `ranges` to `visit`, partition by partition
/// in offset order (partitions interleaved), until every partition is read
/// or `visit` returns false; a timeout once `reserve` is all that is left of
/// the budget. Commits nothing.
fn read(
    consumer: &BaseConsumer,
    topic: &str,
    ranges: &[Range],
    limits: Limits,
    reserve: Duration,
    mut visit: impl FnMut(Record) -> bool,
) -> Result<()> {
    let ends: HashMap<i32, i64> = ranges.iter().filter(|r| r.pending() > 0).map(|r| (r.partition, r.end)).collect();
    if ends.is_empty() {
        return Ok(());
    }
    let mut assignment = TopicPartitionList::new();
    for r in ranges.iter().filter(|r| r.pending() > 0) {
        assignment.add_partition_offset(topic, r.partition, Offset::Offset(r.start))?;
    }
    consumer.assign(&assignment)?;
    let mut done: HashMap<i32, bool> = ends.keys().map(|p| (*p, false)).collect();
    // Reading to the end takes longer than one round trip.
    let started = Instant::now();
    let deadline = limits.until(limits.round_trip() * 2, reserve);
    let mut last_error: Option<KafkaError> = None;
    while done.values().any(|d| !d) {
        if Instant::now() > deadline {
            let why = last_error.map(|e| format!(" (last error: {e})")).unwrap_or_default();
            let doing = format!("reading {topic} to its end{why}");
            return Err(DeadLetterError::Timeout { after: started.elapsed(), doing });
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                done.insert(p, true);
            }
            // Fetch errors are usually passing (leader moves, reconnects):
            // keep polling until the deadline, then report the last one.
            Some(Err(e)) => last_error = Some(e),
            Some(Ok(m)) => {
                let partition = m.partition();
                let Some(end) = ends.get(&partition).copied() else { continue };
                if done.get(&partition).copied().unwrap_or(true) || m.offset() >= end {
                    done.insert(partition, true);
                    continue;
                }
                if m.offset() + 1 >= end {
                    done.insert(partition, true);
                }
                let headers = m
                    .headers()
                    .map(|h| h.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect())
                    .unwrap_or_default();
                let record = Record {
                    partition,
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers,
                };
                if !visit(record) {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// Up to `limit` pending records of `ranges`, in partition and offset order;
/// each partition's share starts at its first pending record, so committing
/// past the last one skips nothing that was not read.
fn collect(
    consumer: &BaseConsumer,
    topic: &str,
    ranges: &[Range],
    limit: usize,
    limits: Limits,
) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    if limit > 0 {
        read(consumer, topic, ranges, limits, Duration::ZERO, |record| {
            records.push(record);
            records.len() < limit
        })?;
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    Ok(records)
}

/// Like [`collect`], for a replay: stops reading in time to send what it
/// read (each partition's share is still a prefix), and is a timeout only
/// if it read nothing.
fn collect_to_replay(consumer: &BaseConsumer, topic: &str, ranges: &[Range], limits: Limits) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    let reserve = sending_reserve(limits);
    let read = read(consumer, topic, ranges, limits, reserve, |record| {
        records.push(record);
        records.len() < MAX_REPLAY_PER_CALL
    });
    match read {
        Err(DeadLetterError::Timeout { .. }) if !records.is_empty() => {}
        other => other?,
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    Ok(records)
}

/// Left of the budget, after a replay's reading, for sending and committing.
fn sending_reserve(limits: Limits) -> Duration {
    limits.round_trip() * 2
}

/// Runs blocking librdkafka calls off the async workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| DeadLetterError::Task(e.to_string()))?
}

/// Records of `topic` that consumer group `group` has not committed past
/// (all of them if it never committed); the live counterpart of [`count`].
pub async fn unconsumed(brokers: &str, group: &str, topic: &str, limits: Limits) -> Result<u64> {
    let (brokers, group, topic) = (brokers.to_owned(), group.to_owned(), topic.to_owned());
    blocking(move || Ok(total(&pending_ranges(&group_reader(&brokers, &group)?, &topic, limits)?))).await
}

pub async fn count(brokers: &str, dlq: &Destination, limits: Limits) -> Result<u64> {
    let (brokers, dlq) = (brokers.to_owned(), dlq.clone());
    blocking(move || {
        let consumer = admin_consumer(&brokers, &dlq)?;
        Ok(total(&pending_ranges(&consumer, &dlq.name, limits)?))
    })
    .await
}

pub async fn list(brokers: &str, dlq: &Destination, limit: usize, limits: Limits) -> Result<Vec<DeadLetter>> {
    let (brokers, dlq) = (brokers.to_owned(), dlq.clone());
    let records = blocking(move || {
        let consumer = admin_consumer(&brokers, &dlq)?;
        let ranges = pending_ranges(&consumer, &dlq.name, limits)?;
        collect(&consumer, &dlq.name, &ranges, limit, limits)
    })
    .await?;
    Ok(records.iter().map(Record::letter).collect())
}

pub async fn show(brokers: &str, dlq: &Destination, message_id: &str, limits: Limits) -> Result<DeadLetter> {
    let (brokers, dlq, id) = (brokers.to_owned(), dlq.clone(), message_id.to_owned());
    blocking(move || {
        let consumer = admin_consumer(&brokers, &dlq)?;
        let ranges = pending_ranges(&consumer, &dlq.name, limits)?;
        // One record kept at a time, however large the topic.
        let mut found = None;
        read(&consumer, &dlq.name, &ranges, limits, Duration::ZERO, |record| {
            if record.message_id().as_deref() == Some(id.as_str()) {
                found = Some(record.letter());
            }
            found.is_none()
        })?;
        found.ok_or(DeadLetterError::MessageNotFound { destination: dlq.name.clone(), message_id: id })
    })
    .await
}

/// Looks for one message id among the pending records as they are read,
/// counting those ahead of it in its partition: a Kafka dead-letter topic
/// keeps one position per partition, so only the oldest pending record of a
/// partition can be replayed alone.
struct Finder {
    id: String,
    seen: HashMap<i32, u64>,
    found: Option<(Record, u64)>,
}

impl Finder {
    fn new(id: &str) -> Self {
        Self { id: id.to_owned(), seen: HashMap::new(), found: None }
    }

    /// Takes the next record; false once the message is found.
    fn visit(&mut self, record: Record) -> bool {
        let older = self.seen.entry(record.partition).or_default();
        if record.message_id().as_deref() == Some(self.id.as_str()) {
            self.found = Some((record, *older));
            return false;
        }
        *older += 1;
        true
    }

    fn result(self, dlq: &Destination) -> Result<Record> {
        let id = self.id;
        match self.found {
            None => Err(DeadLetterError::MessageNotFound { destination: dlq.name.clone(), message_id: id }),
            Some((record, 0)) => Ok(record),
            Some((found, older)) => Err(DeadLetterError::Unsupported(format!(
                "message {id} is at partition {} offset {}, behind {older} older pending record(s): a Kafka \
                 dead-letter topic keeps one position per partition, so replay them all, or up to {}:{}",
                found.partition, found.offset, found.partition, found.offset
            ))),
        }
    }
}

/// The records `selection` names (at most [`MAX_REPLAY_PER_CALL`]), in
/// partition and offset order, each partition's share starting at its first
/// pending record; and how many the selection holds in all.
fn select(
    consumer: &BaseConsumer,
    dlq: &Destination,
    selection: &ReplaySelection,
    limits: Limits,
) -> Result<(Vec<Record>, u64)> {
    let ranges = pending_ranges(consumer, &dlq.name, limits)?;
    match selection {
        ReplaySelection::All => Ok((collect_to_replay(consumer, &dlq.name, &ranges, limits)?, total(&ranges))),
        ReplaySelection::UpTo(position) => {
            let ranges = up_to(&ranges, *position);
            Ok((collect_to_replay(consumer, &dlq.name, &ranges, limits)?, total(&ranges)))
        }
        ReplaySelection::Message(id) => {
            let mut finder = Finder::new(id);
            read(consumer, &dlq.name, &ranges, limits, sending_reserve(limits), |record| finder.visit(record))?;
            Ok((vec![finder.result(dlq)?], 1))
        }
    }
}

/// The pending records of one partition up to `position`, inclusive.
fn up_to(ranges: &[Range], position: KafkaPosition) -> Vec<Range> {
    ranges
        .iter()
        .filter(|r| r.partition == position.partition)
        .map(|r| Range { end: r.end.min(position.offset.saturating_add(1)).max(r.start), ..*r })
        .collect()
}

/// Left for the admin group's commit after the deliveries.
fn commit_reserve(limits: Limits) -> Duration {
    limits.round_trip()
}

pub async fn replay(
    brokers: &str,
    dlq: &Destination,
    selection: &ReplaySelection,
    limits: Limits,
) -> Result<ReplayReport> {
    let started = Instant::now();
    let (owned_brokers, owned_dlq, owned_selection) = (brokers.to_owned(), dlq.clone(), selection.clone());
    let (selected, in_selection) = blocking(move || {
        let consumer = admin_consumer(&owned_brokers, &owned_dlq)?;
        select(&consumer, &owned_dlq, &owned_selection, limits)
    })
    .await?;
    let mut report = ReplayReport::new(dlq);
    report.remaining = in_selection;
    if selected.is_empty() {
        return Ok(report);
    }
    // Every delivery settled by then, with the commit's time still left: the
    // producer gives up on a record itself a little earlier, so that each
    // outcome is known rather than cut off.
    let deliver_by = limits.until(limits.round_trip() * 2, commit_reserve(limits));
    let settle = deliver_by.saturating_duration_since(Instant::now());
    if settle < MIN_DELIVERY_TIME {
        return Err(DeadLetterError::Timeout {
            after: started.elapsed(),
            doing: format!("reading {}, with no time left to send the letters back", dlq.name),
        });
    }
    let message_timeout = settle - DELIVERY_GRACE;
    let producer: FutureProducer = messaging::kafka::producer_config(brokers, "dead-letters-replay")
        .set("message.timeout.ms", message_timeout.as_millis().to_string())
        .create()?;
    // Per partition, the offset just past the last record whose copy is
    // delivered with every record before it.
    let mut commit_to: BTreeMap<i32, i64> = BTreeMap::new();
    let mut delivered: Vec<&Record> = Vec::new();
    let mut failed: Option<(Option<String>, String)> = None;
    let mut broken_partitions = Vec::new();
    // Chunk by chunk, so that a replay running out of time stops between
    // chunks, with an exact report, rather than sees its last copies time out.
    let mut last_chunk = Duration::ZERO;
    for chunk in selected.chunks(REPLAY_CHUNK) {
        let left = deliver_by.saturating_duration_since(Instant::now());
        if failed.is_some() || left < (last_chunk * 2).max(MIN_DELIVERY_TIME) {
            break;
        }
        let chunk_started = Instant::now();
        let mut deliveries = Vec::with_capacity(chunk.len());
        let mut not_enqueued = None;
        for record in chunk {
            if let Some(left_at) = record.header_text(messaging::dead_letter::PAYLOAD_LEFT_AT) {
                // Headers only: sending it back would deliver an empty body.
                let reason = format!(
                    "this dead letter carries no payload (its copy was refused: {left_at}); the original is still \
                     in {} at that partition:offset; replay it from there or purge this letter",
                    dlq.source
                );
                not_enqueued = Some((record, reason));
                break;
            }
            match enqueue(&producer, &dlq.source, record, deliver_by).await {
                Ok(delivery) => deliveries.push(delivery),
                Err(e) => {
                    // What was handed over before it still counts.
                    not_enqueued = Some((record, e.to_string()));
                    break;
                }
            }
        }
        for (record, delivery) in chunk.iter().zip(deliveries) {
            let outcome = match tokio::time::timeout_at(deliver_by.into(), delivery).await {
                Ok(Ok(Ok(_))) => Ok(()),
                Ok(Ok(Err((e, _)))) => Err(e.to_string()),
                Ok(Err(_)) => Err("the producer closed before delivery".to_owned()),
                Err(_) => Err(format!("not delivered within {settle:?}")),
            };
            match outcome {
                Ok(()) if !broken_partitions.contains(&record.partition) => {
                    commit_to.insert(record.partition, record.offset + 1);
                    delivered.push(record);
                }
                // Delivered, but behind a failure: it will be sent again next time.
                Ok(()) => {}
                Err(reason) => {
                    broken_partitions.push(record.partition);
                    failed.get_or_insert((record.message_id(), reason));
                }
            }
        }
        if let Some((record, reason)) = not_enqueued {
            failed.get_or_insert((record.message_id(), reason));
        }
        last_chunk = chunk_started.elapsed();
    }
    if !commit_to.is_empty() {
        let sent = delivered.len();
        if let Err(e) = commit_within(brokers, dlq, commit_to, limits).await {
            // Sent but still pending: a later replay sends them again, and
            // their consumer's inbox drops the copies it already has.
            return Err(DeadLetterError::ReplayFailed {
                destination: dlq.source.clone(),
                message_id: None,
                replayed: 0,
                reason: format!(
                    "{sent} message(s) were sent, but marking them replayed in {} failed ({e}): they are still \
                     pending, and a later replay sends them again (their consumer drops the duplicates)",
                    dlq.name
                ),
            });
        }
    }
    for record in delivered {
        report.replayed += 1;
        report.messages.push(Replayed { message_id: record.message_id(), position: Some(record.position()) });
    }
    report.remaining = in_selection.saturating_sub(report.replayed);
    match failed {
        None => Ok(report),
        Some((message_id, reason)) => Err(DeadLetterError::ReplayFailed {
            destination: dlq.source.clone(),
            message_id,
            replayed: report.replayed,
            reason,
        }),
    }
}

/// Copies handed to the producer at a time (see [`replay`]).
const REPLAY_CHUNK: usize = 100;
/// The least time worth starting deliveries with.
const MIN_DELIVERY_TIME: Duration = Duration::from_millis(500);
/// How much earlier than our own wait the producer gives up on a record
/// (librdkafka checks its message timeouts periodically, not to the millisecond).
const DELIVERY_GRACE: Duration = Duration::from_millis(250);

/// Hands one copy to the producer: same key (or none), same payload, the
/// headers minus the dead-letter ones, in their order.
async fn enqueue(
    producer: &FutureProducer,
    topic: &str,
    record: &Record,
    deliver_by: Instant,
) -> Result<DeliveryFuture> {
    let headers = record
        .headers
        .iter()
        .filter(|(k, _)| !is_dead_letter_header(k))
        .fold(OwnedHeaders::new(), |h, (key, value)| h.insert(Header { key, value: value.as_deref() }));
    let mut copy = FutureRecord::<[u8], [u8]>::to(topic).payload(&record.payload).headers(headers);
    if let Some(key) = &record.key {
        copy = copy.key(key.as_slice());
    }
    loop {
        match producer.send_result(copy) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned))
                if Instant::now() < deliver_by =>
            {
                // Local queue full: wait for deliveries to drain it.
                copy = returned;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// Moves the admin group's position in each partition to the given offset.
fn commit(brokers: &str, dlq: &Destination, offsets: &BTreeMap<i32, i64>) -> Result<()> {
    let consumer = admin_consumer(brokers, dlq)?;
    let mut list = TopicPartitionList::new();
    for (partition, offset) in offsets {
        list.add_partition_offset(&dlq.name, *partition, Offset::Offset(*offset))?;
    }
    consumer.commit(&list, CommitMode::Sync)?;
    Ok(())
}

/// [`commit`], waited for at most a round trip (or what is left of the
/// budget): a synchronous commit has no timeout of its own. One not
/// confirmed in time may still land; either way the caller reports it as
/// not done, which at worst sends a letter twice.
async fn commit_within(brokers: &str, dlq: &Destination, offsets: BTreeMap<i32, i64>, limits: Limits) -> Result<()> {
    let doing = format!("committing the admin group's offsets in {}", dlq.name);
    let wait = limits.wait(&doing)?;
    let (brokers, dlq) = (brokers.to_owned(), dlq.clone());
    match tokio::time::timeout(wait, blocking(move || commit(&brokers, &dlq, &offsets))).await {
        Ok(result) => result,
        Err(_) => Err(DeadLetterError::Timeout { after: wait, doing }),
    }
}

pub async fn purge(brokers: &str, dlq: &Destination, limits: Limits) -> Result<u64> {
    let (owned_brokers, owned_dlq) = (brokers.to_owned(), dlq.clone());
    let ranges =
        blocking(move || pending_ranges(&admin_consumer(&owned_brokers, &owned_dlq)?, &owned_dlq.name, limits)).await?;
    let to_skip: BTreeMap<i32, i64> = ranges.iter().filter(|r| r.pending() > 0).map(|r| (r.partition, r.end)).collect();
    if !to_skip.is_empty() {
        commit_within(brokers, dlq, to_skip, limits).await?;
    }
    Ok(total(&ranges))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Broker;

    fn dlq() -> Destination {
        Destination {
            name: "orders.g.dlq".into(),
            broker: Broker::Kafka,
            source: "orders".into(),
            group: Some("g".into()),
        }
    }

    fn record(partition: i32, offset: i64, id: &str) -> Record {
        Record {
            partition,
            offset,
            key: Some(b"k".to_vec()),
            payload: b"{}".to_vec(),
            headers: vec![
                (header::MESSAGE_ID.into(), Some(id.as_bytes().to_vec())),
                (messaging::dead_letter::REASON.into(), Some(b"bad".to_vec())),
                (messaging::dead_letter::ATTEMPTS.into(), Some(b"5".to_vec())),
            ],
        }
    }

    fn find(records: &[Record], id: &str) -> Result<Record> {
        let mut finder = Finder::new(id);
        for record in records {
            if !finder.visit(record.clone()) {
                break;
            }
        }
        finder.result(&dlq())
    }

    #[test]
    fn a_single_record_is_replayed_only_from_the_head_of_its_partition() {
        // Partitions interleaved, as they arrive.
        let records = vec![record(0, 3, "a"), record(1, 7, "c"), record(0, 4, "b")];
        let one = find(&records, "c").unwrap();
        assert_eq!(one.position(), KafkaPosition { partition: 1, offset: 7 });
        let behind = find(&records, "b");
        assert!(matches!(&behind, Err(DeadLetterError::Unsupported(m)) if m.contains("behind 1 older")), "{behind:?}");
        let missing = find(&records, "z");
        assert!(matches!(missing, Err(DeadLetterError::MessageNotFound { .. })));
    }

    #[test]
    fn up_to_keeps_one_partition_up_to_the_offset() {
        let ranges = [Range { partition: 0, start: 3, end: 10 }, Range { partition: 1, start: 0, end: 5 }];
        let kept = up_to(&ranges, KafkaPosition { partition: 0, offset: 3 });
        assert_eq!(kept.len(), 1);
        assert_eq!((kept[0].start, kept[0].end, kept[0].pending()), (3, 4, 1));
        let before_start = up_to(&ranges, KafkaPosition { partition: 0, offset: 1 });
        assert_eq!(before_start[0].pending(), 0);
        let past_end = up_to(&ranges, KafkaPosition { partition: 1, offset: i64::MAX });
        assert_eq!(past_end[0].pending(), 5);
        assert!(up_to(&ranges, KafkaPosition { partition: 7, offset: 1 }).is_empty());
    }

    #[test]
    fn a_record_decodes_its_dead_letter_headers() {
        let letter = record(2, 9, "m-1").letter();
        assert_eq!(letter.message_id.as_deref(), Some("m-1"));
        assert_eq!(letter.reason.as_deref(), Some("bad"));
        assert_eq!(letter.attempts, Some(5));
        assert_eq!(letter.position, Some(KafkaPosition { partition: 2, offset: 9 }));
        assert_eq!(letter.key.as_deref(), Some("k"));
    }
}
