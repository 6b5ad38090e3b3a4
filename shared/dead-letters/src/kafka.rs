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
    DeadLetter, DeadLetterError, Destination, KafkaPosition, ReplayReport, ReplaySelection, Replayed, Result,
    is_dead_letter_header,
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

/// A consumer in the admin group that never joins it: partitions are
/// assigned by hand and offsets committed explicitly.
fn admin_consumer(brokers: &str, dlq: &Destination) -> Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", dlq.admin_group())
        .set("client.id", "dead-letters")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create()?)
}

/// Per partition, from the admin group's committed offset (or the low
/// watermark) to the high watermark. A topic that does not exist has none.
fn pending_ranges(consumer: &BaseConsumer, topic: &str, timeout: Duration) -> Result<Vec<Range>> {
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
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
    let committed = consumer.committed_offsets(wanted, timeout)?;
    let mut ranges = Vec::with_capacity(partitions.len());
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
        let start = match committed.find_partition(topic, partition).map(|e| e.offset()) {
            // Below the low watermark: those records are gone (retention).
            Some(Offset::Offset(o)) => o.clamp(low, high.max(low)),
            _ => low,
        };
        ranges.push(Range { partition, start, end: high.max(start) });
    }
    Ok(ranges)
}

/// Reads the pending records of `ranges` (up to `limit`), in partition and
/// offset order, without committing anything.
fn read(
    consumer: &BaseConsumer,
    topic: &str,
    ranges: &[Range],
    limit: usize,
    timeout: Duration,
) -> Result<Vec<Record>> {
    let ends: HashMap<i32, i64> = ranges.iter().filter(|r| r.pending() > 0).map(|r| (r.partition, r.end)).collect();
    if ends.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let mut assignment = TopicPartitionList::new();
    for r in ranges.iter().filter(|r| r.pending() > 0) {
        assignment.add_partition_offset(topic, r.partition, Offset::Offset(r.start))?;
    }
    consumer.assign(&assignment)?;
    let mut done: HashMap<i32, bool> = ends.keys().map(|p| (*p, false)).collect();
    let mut records = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut last_error: Option<KafkaError> = None;
    while done.values().any(|d| !d) && records.len() < limit {
        if Instant::now() > deadline {
            let why = last_error.map(|e| format!(" (last error: {e})")).unwrap_or_default();
            return Err(DeadLetterError::Timeout { after: timeout, doing: format!("reading {topic} to its end{why}") });
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
                if m.offset() >= end {
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
                records.push(Record {
                    partition,
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
        }
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    records.truncate(limit);
    Ok(records)
}

/// Runs blocking librdkafka calls off the async workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| DeadLetterError::Task(e.to_string()))?
}

/// Up to `limit` pending records of `dlq`.
async fn pending(brokers: &str, dlq: &Destination, limit: usize, timeout: Duration) -> Result<Vec<Record>> {
    let (brokers, dlq) = (brokers.to_owned(), dlq.clone());
    blocking(move || {
        let consumer = admin_consumer(&brokers, &dlq)?;
        let ranges = pending_ranges(&consumer, &dlq.name, timeout)?;
        // Reading to the end takes longer than one round trip.
        read(&consumer, &dlq.name, &ranges, limit, timeout * 2)
    })
    .await
}

pub async fn count(brokers: &str, dlq: &Destination, timeout: Duration) -> Result<u64> {
    let (brokers, dlq) = (brokers.to_owned(), dlq.clone());
    blocking(move || {
        let consumer = admin_consumer(&brokers, &dlq)?;
        Ok(pending_ranges(&consumer, &dlq.name, timeout)?.iter().map(Range::pending).sum())
    })
    .await
}

pub async fn list(brokers: &str, dlq: &Destination, limit: usize, timeout: Duration) -> Result<Vec<DeadLetter>> {
    let records = pending(brokers, dlq, limit, timeout).await?;
    Ok(records.iter().map(Record::letter).collect())
}

pub async fn show(brokers: &str, dlq: &Destination, message_id: &str, timeout: Duration) -> Result<DeadLetter> {
    let records = pending(brokers, dlq, usize::MAX, timeout).await?;
    records.iter().find(|r| r.message_id().as_deref() == Some(message_id)).map(Record::letter).ok_or_else(|| {
        DeadLetterError::MessageNotFound { destination: dlq.name.clone(), message_id: message_id.to_owned() }
    })
}

/// The records `selection` names, in partition and offset order; each
/// partition's share starts at its first pending record, so committing past
/// the last one skips nothing that was not sent.
fn select(dlq: &Destination, records: Vec<Record>, selection: &ReplaySelection) -> Result<Vec<Record>> {
    match selection {
        ReplaySelection::All => Ok(records),
        ReplaySelection::UpTo(position) => Ok(records
            .into_iter()
            .filter(|r| r.partition == position.partition && r.offset <= position.offset)
            .collect()),
        ReplaySelection::Message(id) => {
            let Some(found) = records.iter().find(|r| r.message_id().as_deref() == Some(id.as_str())) else {
                return Err(DeadLetterError::MessageNotFound { destination: dlq.name.clone(), message_id: id.clone() });
            };
            let older = records.iter().filter(|r| r.partition == found.partition && r.offset < found.offset).count();
            if older > 0 {
                return Err(DeadLetterError::Unsupported(format!(
                    "message {id} is at partition {} offset {}, behind {older} older pending record(s): a Kafka \
                     dead-letter topic keeps one position per partition, so replay them all, or up to {}:{}",
                    found.partition, found.offset, found.partition, found.offset
                )));
            }
            Ok(vec![found.clone()])
        }
    }
}

pub async fn replay(
    brokers: &str,
    dlq: &Destination,
    selection: &ReplaySelection,
    timeout: Duration,
) -> Result<ReplayReport> {
    let records = pending(brokers, dlq, usize::MAX, timeout).await?;
    let selected = select(dlq, records, selection)?;
    let mut report = ReplayReport {
        dead_letter_destination: dlq.name.clone(),
        sent_to: dlq.source.clone(),
        replayed: 0,
        messages: Vec::new(),
    };
    if selected.is_empty() {
        return Ok(report);
    }
    let producer: FutureProducer = messaging::kafka::producer_config(brokers, "dead-letters-replay").create()?;
    let mut deliveries = Vec::with_capacity(selected.len());
    for record in &selected {
        deliveries.push(enqueue(&producer, &dlq.source, record).await?);
    }
    // Per partition, the offset just past the last record whose copy is
    // delivered with every record before it.
    let mut commit_to: BTreeMap<i32, i64> = BTreeMap::new();
    let mut failed: Option<(Option<String>, String)> = None;
    let mut broken_partitions = Vec::new();
    for (record, delivery) in selected.iter().zip(deliveries) {
        let outcome = match tokio::time::timeout(timeout * 2, delivery).await {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err((e, _)))) => Err(e.to_string()),
            Ok(Err(_)) => Err("the producer closed before delivery".to_owned()),
            Err(_) => Err(format!("not delivered within {:?}", timeout * 2)),
        };
        match outcome {
            Ok(()) if !broken_partitions.contains(&record.partition) => {
                commit_to.insert(record.partition, record.offset + 1);
                report.replayed += 1;
                report.messages.push(Replayed { message_id: record.message_id(), position: Some(record.position()) });
            }
            // Delivered, but behind a failure: it will be sent again next time.
            Ok(()) => {}
            Err(reason) => {
                broken_partitions.push(record.partition);
                failed.get_or_insert((record.message_id(), reason));
            }
        }
    }
    if !commit_to.is_empty() {
        let (brokers, dlq, offsets) = (brokers.to_owned(), dlq.clone(), commit_to);
        blocking(move || commit(&brokers, &dlq, &offsets)).await?;
    }
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

/// Hands one copy to the producer: same key (or none), same payload, the
/// headers minus the dead-letter ones, in their order.
async fn enqueue(producer: &FutureProducer, topic: &str, record: &Record) -> Result<DeliveryFuture> {
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
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
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

pub async fn purge(brokers: &str, dlq: &Destination, timeout: Duration) -> Result<u64> {
    let (brokers, dlq) = (brokers.to_owned(), dlq.clone());
    blocking(move || {
        let consumer = admin_consumer(&brokers, &dlq)?;
        let ranges = pending_ranges(&consumer, &dlq.name, timeout)?;
        let to_skip: BTreeMap<i32, i64> =
            ranges.iter().filter(|r| r.pending() > 0).map(|r| (r.partition, r.end)).collect();
        if !to_skip.is_empty() {
            commit(&brokers, &dlq, &to_skip)?;
        }
        Ok(ranges.iter().map(Range::pending).sum())
    })
    .await
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

    #[test]
    fn a_single_record_is_replayed_only_from_the_head_of_its_partition() {
        let records = vec![record(0, 3, "a"), record(0, 4, "b"), record(1, 7, "c")];
        let one = select(&dlq(), records.clone(), &ReplaySelection::Message("c".into())).unwrap();
        assert_eq!(one[0].position(), KafkaPosition { partition: 1, offset: 7 });
        let behind = select(&dlq(), records.clone(), &ReplaySelection::Message("b".into()));
        assert!(matches!(behind, Err(DeadLetterError::Unsupported(_))), "{behind:?}");
        let missing = select(&dlq(), records.clone(), &ReplaySelection::Message("z".into()));
        assert!(matches!(missing, Err(DeadLetterError::MessageNotFound { .. })));
        let up_to = select(&dlq(), records, &ReplaySelection::UpTo(KafkaPosition { partition: 0, offset: 3 })).unwrap();
        assert_eq!(up_to.len(), 1);
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
