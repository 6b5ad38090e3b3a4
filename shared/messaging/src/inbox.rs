//! Idempotent inbox: a consumer records each message id in the same
//! transaction as the message's effect. A redelivered message finds its row
//! and has no second effect; an event older than one already applied for the
//! same aggregate is recorded as stale and skipped.

use crate::safety;
use contracts::Envelope;
use sqlx::PgConnection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxOutcome {
    /// First time: apply the effect in this transaction.
    New,
    /// Already recorded by this consumer: do nothing.
    Duplicate,
    /// An event whose sequence is not above the last one applied for its
    /// aggregate: recorded, not applied.
    Stale { last_applied: i64 },
}

#[derive(Debug, Clone)]
pub struct Inbox {
    consumer: String,
}

impl Inbox {
    /// `consumer` names the receiving endpoint (`stock`, `email`, …); one
    /// database may hold several consumers' rows.
    pub fn new(consumer: impl Into<String>) -> Self {
        Self { consumer: consumer.into() }
    }

    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Records `envelope` in the caller's transaction and says whether its
    /// effect should be applied. Concurrent deliveries of one message
    /// serialize on the primary key: the second waits for the first to commit
    /// and then sees a duplicate.
    pub async fn record(&self, conn: &mut PgConnection, envelope: &Envelope) -> Result<InboxOutcome, sqlx::Error> {
        if safety::unsafe_modes().skip_inbox {
            return Ok(InboxOutcome::New);
        }
        let inserted = sqlx::query!(
            "INSERT INTO inbox (consumer, message_id, message_type, outcome) VALUES ($1, $2, $3, 'applied')
             ON CONFLICT DO NOTHING",
            self.consumer,
            envelope.message_id,
            envelope.message_type,
        )
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(InboxOutcome::Duplicate);
        }
        let (Some(aggregate_id), Some(sequence)) = (&envelope.aggregate_id, envelope.sequence) else {
            return Ok(InboxOutcome::New);
        };
        // Advance the high-water mark only forwards; no row back means the
        // mark is already at or above this event.
        let advanced: Option<i64> = sqlx::query_scalar!(
            "INSERT INTO inbox_sequence (consumer, producer, aggregate_id, last_sequence) VALUES ($1, $2, $3, $4)
             ON CONFLICT (consumer, producer, aggregate_id) DO UPDATE
                SET last_sequence = EXCLUDED.last_sequence, updated_at = now()
                WHERE inbox_sequence.last_sequence < EXCLUDED.last_sequence
             RETURNING last_sequence",
            self.consumer,
            envelope.producer,
            aggregate_id,
            sequence,
        )
        .fetch_optional(&mut *conn)
        .await?;
        if advanced.is_some() {
            return Ok(InboxOutcome::New);
        }
        let last_applied: i64 = sqlx::query_scalar!(
            "SELECT last_sequence FROM inbox_sequence WHERE consumer = $1 AND producer = $2 AND aggregate_id = $3",
            self.consumer,
            envelope.producer,
            aggregate_id,
        )
        .fetch_one(&mut *conn)
        .await?;
        sqlx::query!(
            "UPDATE inbox SET outcome = 'stale' WHERE consumer = $1 AND message_id = $2",
            self.consumer,
            envelope.message_id,
        )
        .execute(&mut *conn)
        .await?;
        Ok(InboxOutcome::Stale { last_applied })
    }
}
