//! Offsets of handled records, committed together (see the module docs of
//! [`super`]): never past a record that was not handled.

use super::LagConsumer;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The next offset to commit per partition, for records handled since the
/// last commit. Only ever offsets of handled records, so a commit never
/// skips one that was not; a lost or stale commit only means redelivery.
#[derive(Default)]
pub(super) struct HandledOffsets {
    next: BTreeMap<(String, i32), i64>,
    /// The last offset a commit was asked for, per partition.
    requested: BTreeMap<(String, i32), i64>,
}

impl HandledOffsets {
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
        if self.next.is_empty() {
            return None;
        }
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
        let mut handled = HandledOffsets::default();
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
}
