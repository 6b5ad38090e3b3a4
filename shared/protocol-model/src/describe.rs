//! Counterexamples in words: each step, and the state it leads to on one
//! line. A message is named by its order and sequence: `A2` is order A's
//! second event.

use crate::actions::{Action, PublishOutcome};
use crate::state::{PublishFailure, Relay, RowId, SystemState};
use std::fmt::Write;

pub fn row_name(state: &SystemState, id: RowId) -> String {
    match state.producer.outbox.get(usize::from(id)) {
        Some(row) => format!("{}{}", order_name(row.order), row.sequence),
        None => format!("#{id}"),
    }
}

fn order_name(order: u8) -> char {
    char::from(b'A' + order)
}

fn names(state: &SystemState, ids: &[RowId]) -> String {
    ids.iter().map(|&id| row_name(state, id)).collect::<Vec<_>>().join(" ")
}

/// What `action` does, in the terms of the real system.
pub fn step(state: &SystemState, action: Action) -> String {
    let next_row = |relay: u8| match &state.relays[usize::from(relay)] {
        Relay::Publishing(pass) => pass.next_row().map(|id| row_name(state, id)).unwrap_or_default(),
        Relay::Idle => String::new(),
    };
    match action {
        Action::BusinessWrite { order } => {
            let sequence = state.producer.writes[usize::from(order)] + 1;
            format!("order {}: business write and outbox row {}{sequence} commit", order_name(order), order_name(order))
        }
        Action::ClaimLane { relay, lane } => format!("relay {relay} locks lane {lane} and reads its unsent rows"),
        Action::Publish { relay, outcome } => {
            let row = next_row(relay);
            match outcome {
                PublishOutcome::Confirmed => format!("relay {relay} publishes {row}: broker stores it and confirms"),
                PublishOutcome::Failed(PublishFailure::ConfirmLost) => {
                    format!("relay {relay} publishes {row}: broker stores it, the confirm is lost")
                }
                PublishOutcome::Failed(PublishFailure::Dropped) => {
                    format!("relay {relay} publishes {row}: it never reaches the broker")
                }
            }
        }
        Action::SendAfterFailure { relay, reaches_broker: true } => {
            format!("relay {relay}'s pipelined send of {} reaches the broker (confirm not awaited)", next_row(relay))
        }
        Action::SendAfterFailure { relay, reaches_broker: false } => {
            format!("relay {relay}'s pipelined send of {} and the rest of the batch get lost", next_row(relay))
        }
        Action::ReplaceChannel { relay } => format!(
            "relay {relay}'s channel is replaced mid-batch (it died, or another lane's failure reset it): \
             sends now go out on a new one"
        ),
        Action::HoldBack { relay } => format!(
            "relay {relay}'s send of {} is held back: its batch is pinned to the replaced channel \
             (the rest waits for the next pass)",
            next_row(relay)
        ),
        Action::MarkSentAndCommit { relay } => format!("relay {relay} marks rows sent and commits (lane unlocked)"),
        Action::RelayCrash { relay } => format!("relay {relay} crashes: transaction rolled back, lane unlocked"),
        Action::Receive => {
            let delivery = usize::from(state.consumer.next_delivery);
            let row = state.broker.log.get(delivery).map(|&id| row_name(state, id)).unwrap_or_default();
            format!("consumer receives delivery {delivery} ({row})")
        }
        Action::Apply => "consumer's transaction: inbox row, effect, commit".to_owned(),
        Action::Acknowledge => "consumer acknowledges the delivery".to_owned(),
        Action::ConsumerCrash => "consumer crashes: the broker will redeliver what was not acknowledged".to_owned(),
    }
}

/// The state on one line.
pub fn summary(state: &SystemState) -> String {
    let mut line = String::from("outbox [");
    let outbox: Vec<String> = (0..state.producer.outbox.len() as u8)
        .map(|id| {
            let sent = if state.producer.outbox[usize::from(id)].sent { " sent" } else { "" };
            format!("{}{sent}", row_name(state, id))
        })
        .collect();
    line.push_str(&outbox.join(", "));
    let _ = write!(line, "] broker [{}]", names(state, &state.broker.log));
    for (relay, r) in state.relays.iter().enumerate() {
        match r {
            Relay::Idle => {}
            Relay::Publishing(pass) => {
                let _ = write!(
                    line,
                    " relay {relay}: lane {} batch [{}] {} done, {} confirmed",
                    pass.lane,
                    names(state, &pass.batch),
                    pass.handled,
                    pass.confirmed
                );
                if let Some(sends) = pass.replaced_after {
                    let _ = write!(line, ", channel replaced after {sends} sent");
                }
            }
        }
    }
    let consumer = &state.consumer;
    let _ = write!(
        line,
        " consumer: acked {}, next {}, effects [{}]",
        consumer.acknowledged,
        consumer.next_delivery,
        names(state, &consumer.effects)
    );
    line
}
