//! The polling relay's lane pass (`OutboxRelay::relay_lanes_on`, per lane
//! of the group it claims): claim the lane, publish its unsent rows in id
//! order, mark the confirmed prefix sent, commit. Marks and lock live in
//! one transaction, so a crash undoes the marks and frees the lane.

use crate::actions::PublishOutcome;
use crate::config::ModelConfig;
use crate::state::{LanePass, PublishFailure, Relay, RelayId, SystemState};

pub fn claim_lane(config: &ModelConfig, state: &mut SystemState, relay: RelayId, lane: u8) {
    if config.variant.locks_lanes() {
        state.producer.lane_holders[usize::from(lane)] = Some(relay);
    }
    let batch = (0..state.producer.outbox.len() as u8)
        .filter(|&id| {
            let row = state.producer.outbox[usize::from(id)];
            !row.sent && config.lane_of_order[usize::from(row.order)] == lane
        })
        .collect();
    state.relays[usize::from(relay)] = Relay::Publishing(LanePass {
        lane,
        batch,
        handled: 0,
        sent: 0,
        confirmed: 0,
        failure: None,
        replaced_after: None,
    });
}

pub fn publish(state: &mut SystemState, relay: RelayId, outcome: PublishOutcome) {
    let Relay::Publishing(pass) = &mut state.relays[usize::from(relay)] else { return };
    let Some(row) = pass.next_row() else { return };
    pass.handled += 1;
    pass.sent += 1;
    match outcome {
        PublishOutcome::Confirmed => {
            pass.confirmed += 1;
            state.broker.log.push(row);
        }
        PublishOutcome::Failed(failure) => {
            pass.failure = Some(failure);
            state.faults.publish_failures += 1;
            if failure == PublishFailure::ConfirmLost {
                state.broker.log.push(row);
            }
        }
    }
}

pub fn send_after_failure(state: &mut SystemState, relay: RelayId, reaches_broker: bool) {
    let Relay::Publishing(pass) = &mut state.relays[usize::from(relay)] else { return };
    let Some(row) = pass.next_row() else { return };
    if reaches_broker {
        pass.handled += 1;
        pass.sent += 1;
        state.broker.log.push(row);
    } else {
        // The channel delivers nothing after this: the rest of the batch
        // never reaches the broker (or, for the relay, was never sent).
        pass.handled = pass.batch.len() as u8;
        pass.sent += 1;
    }
}

/// The channel's messages already sent keep whatever outcome their step
/// gave them; what changes is the channel the next send would use.
pub fn replace_channel(state: &mut SystemState, relay: RelayId) {
    let Relay::Publishing(pass) = &mut state.relays[usize::from(relay)] else { return };
    pass.replaced_after = Some(pass.sent);
    state.faults.channel_replacements += 1;
}

/// The send is not made: the batch ends here, its confirmed prefix to be
/// marked, the rest left for the next pass.
pub fn hold_back(state: &mut SystemState, relay: RelayId) {
    let Relay::Publishing(pass) = &mut state.relays[usize::from(relay)] else { return };
    pass.handled = pass.batch.len() as u8;
}

pub fn mark_sent_and_commit(config: &ModelConfig, state: &mut SystemState, relay: RelayId) {
    let Relay::Publishing(pass) = std::mem::replace(&mut state.relays[usize::from(relay)], Relay::Idle) else {
        return;
    };
    // Only the confirmed prefix: a failed row is never overtaken.
    let marked = if config.variant.marks_unconfirmed_rows() { pass.sent } else { pass.confirmed };
    for &id in &pass.batch[..usize::from(marked)] {
        state.producer.outbox[usize::from(id)].sent = true;
    }
    release_lane(state, relay, pass.lane);
}

pub fn crash(state: &mut SystemState, relay: RelayId) {
    let Relay::Publishing(pass) = std::mem::replace(&mut state.relays[usize::from(relay)], Relay::Idle) else {
        return;
    };
    state.faults.relay_crashes += 1;
    // The transaction rolls back: no marks, and the session's lock is gone.
    // What reached the broker stays there.
    release_lane(state, relay, pass.lane);
}

fn release_lane(state: &mut SystemState, relay: RelayId, lane: u8) {
    let holder = &mut state.producer.lane_holders[usize::from(lane)];
    if *holder == Some(relay) {
        *holder = None;
    }
}
