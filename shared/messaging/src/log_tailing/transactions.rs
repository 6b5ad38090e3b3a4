//! The outbox rows read from the log and not yet all confirmed, by
//! transaction, in commit order; and the log position that may be reported
//! to the slot as flushed: the end of the last transaction whose rows were
//! all confirmed by the broker, never a position merely received.

use crate::outbox_publisher::OutboxRow;
use chrono::{DateTime, Utc};
use pgwire_replication::Lsn;
use std::collections::VecDeque;

struct Committed {
    end_lsn: Lsn,
    committed_at: DateTime<Utc>,
    /// Rows not yet confirmed (confirmed ones are removed from the front).
    rows: VecDeque<OutboxRow>,
}

#[derive(Default)]
pub(crate) struct ReceivedTransactions {
    /// Rows of the transaction being received (between Begin and Commit).
    open: Option<Vec<OutboxRow>>,
    committed: VecDeque<Committed>,
}

impl ReceivedTransactions {
    pub(crate) fn begin(&mut self) {
        self.open = Some(Vec::new());
    }

    pub(crate) fn insert(&mut self, row: OutboxRow) {
        self.open.get_or_insert_with(Vec::new).push(row);
    }

    pub(crate) fn commit(&mut self, end_lsn: Lsn, committed_at: DateTime<Utc>) {
        let rows = self.open.take().unwrap_or_default();
        self.committed.push_back(Committed { end_lsn, committed_at, rows: rows.into() });
    }

    /// Nothing received is waiting for the broker, and no transaction is
    /// half received: a position the server says it has sent up to may be
    /// reported as it is.
    pub(crate) fn is_idle(&self) -> bool {
        self.open.is_none() && self.committed.is_empty()
    }

    /// Rows waiting, across committed transactions.
    pub(crate) fn waiting_rows(&self) -> usize {
        self.committed.iter().map(|t| t.rows.len()).sum()
    }

    /// The first `max_rows` waiting rows, in commit order (copies: the
    /// originals stay until confirmed).
    pub(crate) fn next_batch(&self, max_rows: usize) -> Vec<OutboxRow> {
        self.committed.iter().flat_map(|t| t.rows.iter()).take(max_rows).cloned().collect()
    }

    /// Takes `rows` rows off the front as done (confirmed, or parked), then
    /// every transaction left with none; returns the end of the last
    /// transaction so finished, the position that may now be reported.
    pub(crate) fn finish(&mut self, mut rows: usize) -> Option<Lsn> {
        let mut position = None;
        while let Some(front) = self.committed.front_mut() {
            let taken = rows.min(front.rows.len());
            front.rows.drain(..taken);
            rows -= taken;
            if !front.rows.is_empty() {
                break;
            }
            position = self.committed.pop_front().map(|t| t.end_lsn);
        }
        position
    }

    /// When the oldest transaction still waiting committed.
    pub(crate) fn oldest_commit(&self) -> Option<DateTime<Utc>> {
        self.committed.front().map(|t| t.committed_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64) -> OutboxRow {
        OutboxRow {
            id,
            transport: "amqp".into(),
            destination: "q".into(),
            partition_key: "k".into(),
            envelope: serde_json::Value::Null,
            payload: serde_json::Value::Null,
            created_at: Utc::now(),
            refusals: 0,
            lane: 0,
        }
    }

    fn received(transactions: &[(u64, &[i64])]) -> ReceivedTransactions {
        let mut received = ReceivedTransactions::default();
        for (end, ids) in transactions {
            received.begin();
            ids.iter().for_each(|id| received.insert(row(*id)));
            received.commit(Lsn(*end), Utc::now());
        }
        received
    }

    #[test]
    fn only_the_end_of_a_wholly_confirmed_transaction_is_reported() {
        let mut received = received(&[(100, &[1, 2]), (200, &[3]), (300, &[4, 5])]);
        assert_eq!(received.next_batch(10).iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        // Half of the first transaction confirmed: nothing may be reported.
        assert_eq!(received.finish(1), None);
        assert_eq!(received.next_batch(10)[0].id, 2);
        // Its second row and the next transaction: up to the latter's end.
        assert_eq!(received.finish(2), Some(Lsn(200)));
        assert_eq!(received.finish(1), None);
        assert_eq!(received.finish(1), Some(Lsn(300)));
        assert!(received.is_idle());
    }

    #[test]
    fn a_transaction_without_outbox_rows_is_passed_once_the_ones_before_it_are() {
        let mut received = received(&[(100, &[1]), (150, &[]), (200, &[])]);
        assert_eq!(received.finish(0), None);
        assert_eq!(received.finish(1), Some(Lsn(200)));
    }

    #[test]
    fn a_half_received_transaction_is_not_idle_and_a_batch_stops_at_its_bound() {
        let mut received = received(&[(100, &[1, 2, 3])]);
        assert_eq!(received.next_batch(2).len(), 2);
        assert_eq!(received.waiting_rows(), 3);
        received.finish(3);
        received.begin();
        assert!(!received.is_idle());
    }
}
