//! Offsets of handled records, committed together (see the module docs of
//! [`super`]): never past a record that was not handled.

use super::LagConsumer;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The next offset to commit per partition, for records handled since the
/// last commit. Only ever offsets of handled records, so a commit never
/// skips one that was not; a lost or stale commit only means redelivery.
///
/// The offsets already committed are committed again every
/// `reassert_every` while nothing new comes: the group's offset at the
/// broker is then this consumer's within that time whatever happened to
/// an earlier commit. Seen in CI: a consumer replaced as stuck left a
/// commit in flight on a dead connection; librdkafka timed it out after
/// 60 s, sent it again, and it landed after its successor's newer one. The
/// partitions were quiet, so nothing new was committed, and the groups
/// stayed behind with every record handled (invariant 7d: 33 records two
/// minutes after a silent partition; 821 in a chaos run).
pub(super) struct HandledOffsets {
    next: BTreeMap<(String, i32), i64>,
    /// The last offset a commit was asked for, per partition.
    requested: BTreeMap<(String, i32), i64>,
    reassert_every: Option<Duration>,
    last_commit: Instant,
}

impl HandledOffsets {
    /// `reassert_every: None` never commits an unchanged offset again (the
    /// negative control of the test that shows why it must).
    pub(super) fn new(reassert_every: Option<Duration>) -> Self {
        Self { next: BTreeMap::new(), requested: BTreeMap::new(), reassert_every, last_commit: Instant::now() }
    }

    pub(super) fn record(&mut self, record: &BorrowedMessage<'_>) {
        self.next.insert((record.topic().to_owned(), record.partition()), record.offset() + 1);
    }

    /// The offsets to commit, emptying the set; `None` if there are none.
    /// Offsets whose asynchronous commit the broker refused are committed
    /// again, unless a later one was asked for since (it covers them):
    /// otherwise a partition that went quiet would keep an old offset and
    /// redeliver, after a restart, records handled long ago.
    fn take(&mut self, consumer: &LagConsumer) -> Option<TopicPartitionList> {
        self.retry_refused(consumer.context().take_failed_commits());
        if self.next.is_empty() && self.reassert_due(Instant::now()) {
            self.reassert(&assigned(consumer));
        }
        if self.next.is_empty() {
            return None;
        }
        self.last_commit = Instant::now();
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), next) in std::mem::take(&mut self.next) {
            if let Err(e) = offsets.add_partition_offset(&topic, partition, Offset::Offset(next)) {
                tracing::warn!(error = %e, %topic, partition, "cannot add offset to commit");
            }
            self.requested.insert((topic, partition), next);
        }
        Some(offsets)
    }

    fn retry_refused(&mut self, refused: Vec<((String, i32), i64)>) {
        for (partition, offset) in refused {
            if self.requested.get(&partition) == Some(&offset) {
                self.next.entry(partition).or_insert(offset);
            }
        }
    }

    fn reassert_due(&self, now: Instant) -> bool {
        self.reassert_every.is_some_and(|every| now.saturating_duration_since(self.last_commit) >= every)
    }

    /// Queues the offsets asked for before, of the partitions still
    /// assigned, to be committed again. A partition taken away is
    /// forgotten: its new owner may be ahead, and an old offset would
    /// rewind it.
    fn reassert(&mut self, assigned: &[(String, i32)]) {
        self.requested.retain(|partition, _| assigned.contains(partition));
        self.next.extend(self.requested.iter().map(|(partition, offset)| (partition.clone(), *offset)));
        // Nothing to commit is not a commit, but it is not due again at once either.
        self.last_commit = Instant::now();
    }

    pub(super) fn commit(&mut self, consumer: &LagConsumer) {
        if let Some(offsets) = self.take(consumer)
            && let Err(e) = consumer.commit(&offsets, CommitMode::Async)
        {
            tracing::warn!(error = %e, "offset commit failed; the records may be redelivered");
        }
    }

    /// The last commit, waited for (bounded: the broker may be down, and
    /// shutdown has a deadline).
    pub(super) async fn commit_and_wait(&mut self, consumer: &Arc<LagConsumer>) {
        let Some(offsets) = self.take(consumer) else { return };
        let consumer = consumer.clone();
        let commit = tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync));
        match tokio::time::timeout(Duration::from_secs(3), commit).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "final offset commit failed; the records may be redelivered"),
            Ok(Err(e)) => tracing::warn!(error = %e, "final offset commit panicked"),
            Err(_) => tracing::warn!("final offset commit not confirmed in time; the records may be redelivered"),
        }
    }
}

/// The partitions assigned to `consumer` now (none if it cannot tell).
fn assigned(consumer: &LagConsumer) -> Vec<(String, i32)> {
    match consumer.assignment() {
        Ok(list) => list.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect(),
        Err(e) => {
            tracing::debug!(error = %e, "assignment unknown: no offset committed again");
            Vec::new()
        }
    }
}

/// The unsafe early commit of one record.
pub(super) fn commit(consumer: &LagConsumer, record: &BorrowedMessage<'_>) {
    if let Err(e) = consumer.commit_message(record, CommitMode::Async) {
        tracing::warn!(error = %e, "offset commit failed; the record may be redelivered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_commit_is_retried_unless_a_later_one_was_asked_for() {
        let p0 = ("orders".to_owned(), 0);
        let p1 = ("orders".to_owned(), 1);
        let mut handled = HandledOffsets::new(None);
        handled.requested.insert(p0.clone(), 10);
        handled.requested.insert(p1.clone(), 25);
        // p0's commit of 10 was refused and nothing newer asked for: again.
        // p1's refused 20 is covered by the 25 asked for since.
        handled.retry_refused(vec![(p0.clone(), 10), (p1.clone(), 20)]);
        assert_eq!(handled.next, BTreeMap::from([(p0.clone(), 10)]));
        // A record handled meanwhile wins over the refused offset.
        handled.next.insert(p0.clone(), 12);
        handled.retry_refused(vec![(p0.clone(), 10)]);
        assert_eq!(handled.next, BTreeMap::from([(p0, 12)]));
    }

    #[test]
    fn unchanged_offsets_of_assigned_partitions_are_committed_again_when_due() {
        let p0 = ("orders".to_owned(), 0);
        let p1 = ("orders".to_owned(), 1);
        let mut handled = HandledOffsets::new(Some(Duration::from_secs(10)));
        handled.requested.insert(p0.clone(), 10);
        handled.requested.insert(p1.clone(), 25);
        let now = handled.last_commit;
        assert!(!handled.reassert_due(now + Duration::from_secs(9)));
        assert!(handled.reassert_due(now + Duration::from_secs(10)));
        // p1 was taken away: forgotten, not committed again.
        handled.reassert(std::slice::from_ref(&p0));
        assert_eq!(handled.next, BTreeMap::from([(p0.clone(), 10)]));
        assert_eq!(handled.requested, BTreeMap::from([(p0, 10)]));
        assert!(!handled.reassert_due(handled.last_commit));
    }

    #[test]
    fn without_reassertion_nothing_is_ever_due() {
        let handled = HandledOffsets::new(None);
        assert!(!handled.reassert_due(handled.last_commit + Duration::from_secs(3600)));
    }
}
