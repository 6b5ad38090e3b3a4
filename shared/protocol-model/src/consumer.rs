//! The consumer (`MessageProcessor::apply_in_transaction`, `Inbox::record`
//! and the broker loops that acknowledge after it returns): one delivery
//! at a time, as the Kafka consumer handles records.

use crate::config::ModelConfig;
use crate::state::{InHand, SystemState};

pub fn receive(config: &ModelConfig, state: &mut SystemState) {
    let consumer = &mut state.consumer;
    let delivery = consumer.next_delivery;
    consumer.in_hand = Some(InHand { delivery, committed: false });
    consumer.next_delivery += 1;
    if config.variant.acks_before_commit() {
        consumer.acknowledged = consumer.acknowledged.max(delivery + 1);
    }
}

/// Inbox row and effect in one transaction, then commit: a crash before the
/// commit leaves neither, so it is no state of its own.
pub fn apply(config: &ModelConfig, state: &mut SystemState) {
    let Some(in_hand) = state.consumer.in_hand else { return };
    let row_id = state.broker.log[usize::from(in_hand.delivery)];
    let row = state.producer.outbox[usize::from(row_id)];
    let consumer = &mut state.consumer;
    consumer.in_hand = Some(InHand { committed: true, ..in_hand });
    if !config.variant.uses_inbox() {
        // `UNSAFE_SKIP_INBOX`: `Inbox::record` answers `New` at once.
        consumer.effects.push(row_id);
        return;
    }
    if consumer.inbox.contains(&row_id) {
        return; // Duplicate: no effect.
    }
    consumer.inbox.push(row_id);
    let applied = &mut consumer.applied_sequence[usize::from(row.order)];
    if row.sequence > *applied {
        *applied = row.sequence;
        consumer.effects.push(row_id);
    }
    // Otherwise stale: an event of the order newer than this one was
    // applied, so this one is recorded and skipped.
}

pub fn acknowledge(state: &mut SystemState) {
    let consumer = &mut state.consumer;
    if let Some(in_hand) = consumer.in_hand.take() {
        consumer.acknowledged = consumer.acknowledged.max(in_hand.delivery + 1);
    }
}

/// Volatile state goes; the broker redelivers from the acknowledged point.
pub fn crash(state: &mut SystemState) {
    let consumer = &mut state.consumer;
    consumer.in_hand = None;
    consumer.next_delivery = consumer.acknowledged;
    state.faults.consumer_crashes += 1;
}
