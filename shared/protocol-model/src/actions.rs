//! The steps the system can take, and which of them a state allows. Each
//! step is atomic in the real system (one transaction, one broker call), so
//! a crash falls between two of them.

use crate::config::ModelConfig;
use crate::state::{PublishFailure, Relay, RelayId, SystemState};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// A service commits a business write and its outbox row together.
    BusinessWrite { order: u8 },
    /// A relay begins a transaction, takes the lane's advisory lock and reads
    /// the lane's unsent rows in id order.
    ClaimLane { relay: RelayId, lane: u8 },
    /// The relay publishes its next row and waits for the confirm.
    Publish { relay: RelayId, outcome: PublishOutcome },
    /// After a failed publish, the relay's next row, already sent without
    /// waiting (sends are pipelined), does or does not reach the broker; its
    /// confirm is not awaited.
    SendAfterFailure { relay: RelayId, reaches_broker: bool },
    /// The relay's publishing channel (or Kafka producer) is replaced in the
    /// middle of its batch: it died, or another lane's failure reset it.
    ReplaceChannel { relay: RelayId },
    /// The relay's next send finds its batch's channel replaced and is not
    /// made (`AmqpError::ChannelChanged`, `KafkaPublishError::ProducerChanged`):
    /// the rest of the batch waits for the next pass.
    HoldBack { relay: RelayId },
    /// The relay marks the confirmed prefix sent and commits, which ends its
    /// transaction and with it the lane lock.
    MarkSentAndCommit { relay: RelayId },
    /// The relay process dies: its transaction rolls back, its lock goes.
    RelayCrash { relay: RelayId },
    /// The broker hands the consumer its next delivery.
    Receive,
    /// The consumer's transaction: inbox row, effect, commit.
    Apply,
    /// The consumer acknowledges the delivery (commits the offset).
    Acknowledge,
    /// The consumer process dies; the broker redelivers what it had not
    /// acknowledged.
    ConsumerCrash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PublishOutcome {
    Confirmed,
    Failed(PublishFailure),
}

/// Every step `state` allows, in a fixed order (stateright rebuilds
/// counterexample paths from action indices).
pub fn enabled(config: &ModelConfig, state: &SystemState, actions: &mut Vec<Action>) {
    business_writes(config, state, actions);
    for relay in 0..config.relays {
        relay_steps(config, state, relay, actions);
    }
    consumer_steps(config, state, actions);
}

fn business_writes(config: &ModelConfig, state: &SystemState, actions: &mut Vec<Action>) {
    for (order, &writes) in state.producer.writes.iter().enumerate() {
        if writes < config.writes_per_order {
            actions.push(Action::BusinessWrite { order: order as u8 });
        }
    }
}

fn relay_steps(config: &ModelConfig, state: &SystemState, relay: RelayId, actions: &mut Vec<Action>) {
    let failures_left = state.faults.publish_failures < config.max_publish_failures;
    match &state.relays[usize::from(relay)] {
        Relay::Idle => {
            for lane in 0..config.lanes() as u8 {
                let free = state.producer.lane_holders[usize::from(lane)].is_none() || !config.variant.locks_lanes();
                if free && lane_has_unsent_rows(config, state, lane) {
                    actions.push(Action::ClaimLane { relay, lane });
                }
            }
        }
        Relay::Publishing(pass) if pass.is_done() => actions.push(Action::MarkSentAndCommit { relay }),
        Relay::Publishing(pass) if pass.replaced_after.is_some() && config.variant.pins_batches() => {
            // Every send after the replacement would use the new channel.
            actions.push(Action::HoldBack { relay });
        }
        Relay::Publishing(pass) => {
            match pass.failure {
                None => {
                    actions.push(Action::Publish { relay, outcome: PublishOutcome::Confirmed });
                    if failures_left {
                        for failure in [PublishFailure::ConfirmLost, PublishFailure::Dropped] {
                            actions.push(Action::Publish { relay, outcome: PublishOutcome::Failed(failure) });
                        }
                    }
                }
                Some(_) => {
                    if pass.channel_alive() {
                        actions.push(Action::SendAfterFailure { relay, reaches_broker: true });
                    }
                    actions.push(Action::SendAfterFailure { relay, reaches_broker: false });
                }
            }
            // Before the first send there is no channel to replace, as far
            // as the batch is concerned: it takes whichever is current.
            let replacements_left = state.faults.channel_replacements < config.max_channel_replacements;
            if replacements_left && pass.sent > 0 && pass.replaced_after.is_none() {
                actions.push(Action::ReplaceChannel { relay });
            }
        }
    }
    let publishing = matches!(state.relays[usize::from(relay)], Relay::Publishing(_));
    if publishing && state.faults.relay_crashes < config.max_relay_crashes {
        actions.push(Action::RelayCrash { relay });
    }
}

pub fn lane_has_unsent_rows(config: &ModelConfig, state: &SystemState, lane: u8) -> bool {
    state.producer.outbox.iter().any(|row| !row.sent && config.lane_of_order[usize::from(row.order)] == lane)
}

fn consumer_steps(config: &ModelConfig, state: &SystemState, actions: &mut Vec<Action>) {
    let consumer = &state.consumer;
    match consumer.in_hand {
        None if usize::from(consumer.next_delivery) < state.broker.log.len() => actions.push(Action::Receive),
        None => {}
        Some(in_hand) if in_hand.committed => actions.push(Action::Acknowledge),
        Some(_) => actions.push(Action::Apply),
    }
    // A crash with nothing in hand and nothing to redeliver changes nothing.
    let has_volatile_state = consumer.in_hand.is_some() || consumer.next_delivery != consumer.acknowledged;
    if has_volatile_state && state.faults.consumer_crashes < config.max_consumer_crashes {
        actions.push(Action::ConsumerCrash);
    }
}
